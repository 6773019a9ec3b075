# SPDX-License-Identifier: GPL-2.0-or-later
"""
Functional-test harness of the automatic-balloon fork.

Runs QEMU (through upstream's in-tree qemu.machine.QEMUMachine) with the
bundled test guest inside fresh child cgroups with a memory limit, talks to
the guest's command loop on the serial console, and always removes its
cgroups and processes, also when a test fails.  The implementation is
shared with the benchmark in scripts/qemu_balloon_auto/testing; this
module gives the tests its names and runs them with TAP output.

The tests find that package through PYTHONPATH: make check and
scripts/fork/check.py set it; by hand, from the checkout:

    PYTHONPATH=scripts python3 tests/functional/balloon_auto/test_X.py

(QEMU_FORK_TREE names the assembled tree to test when it is not this
checkout's build/qemu.)
"""

from qemu_balloon_auto import MiB
from qemu_balloon_auto.testing import (balloon_view, decision_counts,
                                       event_counts, proc_rss, wait_until)
from qemu_balloon_auto.testing.cgroup import V1_ROOT, V2_ROOT, Cgroup
from qemu_balloon_auto.testing.guest import (TOP, TREE, GuestConsole, TestVM,
                                             guest_paths, qemu_binary,
                                             work_dir)
from qemu_balloon_auto.testing.hog import MemoryHog

__all__ = ['MiB', 'balloon_view', 'decision_counts', 'event_counts', 'proc_rss',
           'wait_until', 'V1_ROOT', 'V2_ROOT', 'Cgroup', 'TOP', 'TREE',
           'GuestConsole', 'TestVM', 'guest_paths', 'qemu_binary',
           'work_dir', 'MemoryHog', 'host_steps', 'main']


# MiB past the setpoint host_steps()'s first burst takes the cgroup
HOST_STEPS_CROSSING = 100


def host_steps(cgroup, vm, mib=720):
    """Host pressure that raises the level, next to @vm, a 1 GiB guest in
    a 1400 MiB cgroup whose automatic balloon keeps it under a setpoint: a
    host process taking @mib MiB in three bursts 8 s apart.  Smooth
    growth is foreseen and kept under the setpoint, so the level never
    rises.  The first burst takes the cgroup HOST_STEPS_CROSSING past the
    setpoint from whatever QEMU holds now (its footprint varies from run
    to run by more than a fixed burst would cross by); the other two
    share the rest.  The VM is stopped during the first burst: a device
    polling near the setpoint starts inflating while a burst is still
    being allocated, and a driver inflating at some 350 MiB/s kept one
    run's cgroup under the setpoint all along, so no reading saw a level.
    Stopped, the balloon cannot move; the first reading after the VM runs
    again sees the crossing.  The guest cannot go below about 300 MiB (its
    kernel, the watermarks its MemAvailable leaves out, the margin over
    its reserve): with 720 MiB the host is back about 90 MiB under its
    setpoint with QEMU there."""
    setpoint = vm.cmd('query-balloon-auto')['host']['setpoint']
    first = (setpoint - cgroup.usage()) // MiB + HOST_STEPS_CROSSING
    if not 0 < first < mib:
        raise ValueError('a first burst of %d MiB out of %d' % (first, mib))
    vm.cmd('stop')
    hog = None
    try:
        hog = MemoryHog(cgroup, mib, first=first,
                        step=-(-(mib - first) // 2), delay=8)
        wait_until(lambda: hog.allocated >= first or
                   hog.proc.poll() is not None, 60, interval=0.1,
                   what='the first burst')
    except BaseException:
        if hog:
            hog.stop()
        raise
    finally:
        vm.cmd('cont')
    return hog


def main():
    """Run the calling module's tests, reporting TAP on stdout."""
    import unittest
    import pycotap
    unittest.main(module='__main__', testRunner=pycotap.TAPTestRunner(
        message_log=pycotap.LogMode.LogToError,
        test_output_log=pycotap.LogMode.LogToError))
