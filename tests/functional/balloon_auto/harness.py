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


def host_steps(cgroup, mib=720):
    """Host pressure that raises the level, next to a 1 GiB guest in a
    1400 MiB cgroup: a host process taking @mib MiB in three bursts 8 s
    apart.  Smooth growth is foreseen and kept under the setpoint, so the
    level never rises; each burst is more than the controller foresees
    plus the half band it leaves under the setpoint (the first one, from
    a guest that has touched 700 MiB, by about 60 MiB).  The guest cannot
    go below about 300 MiB (its kernel, the watermarks its MemAvailable
    leaves out, the margin over its reserve): with 720 MiB the host is
    back about 90 MiB under its setpoint with QEMU there."""
    return MemoryHog(cgroup, mib, step=mib // 3, delay=8)


def main():
    """Run the calling module's tests, reporting TAP on stdout."""
    import unittest
    import pycotap
    unittest.main(module='__main__', testRunner=pycotap.TAPTestRunner(
        message_log=pycotap.LogMode.LogToError,
        test_output_log=pycotap.LogMode.LogToError))
