#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Benchmarks of the automatic balloon, measured side by side in one run.

1. reaction: time from a host pressure event (an eventfd handed to QEMU as
   pressure-fd, written by this script) to the BALLOON_AUTO_DECISION event
   that carries the new target (QEMU timestamps it when it decides).
   Goal: under 10 ms.
2. idle cost: CPU time and voluntary context switches of a booted, idle VM
   over the same interval, fork with automatic=on against the pristine
   build of the same base (no automatic ballooning), as a ratio.
"""

import argparse
import os
import statistics
import sys
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, os.path.join(TOP, 'tests', 'functional', 'balloon_auto'))

import harness  # noqa: E402  pylint: disable=wrong-import-position
from harness import MiB  # noqa: E402  pylint: disable=wrong-import-position


def proc_cost(pid):
    """(CPU seconds, voluntary context switches) of all threads of @pid."""
    ticks = os.sysconf('SC_CLK_TCK')
    cpu = ctx = 0
    for tid in os.listdir('/proc/%d/task' % pid):
        with open('/proc/%d/task/%s/stat' % (pid, tid)) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        cpu += (int(fields[11]) + int(fields[12])) / ticks
        with open('/proc/%d/task/%s/status' % (pid, tid)) as f:
            for line in f:
                if line.startswith('voluntary_ctxt_switches'):
                    ctx += int(line.split()[1])
    return cpu, ctx


def reaction(samples):
    efd = os.eventfd(0)
    vm = harness.TestVM('bench-reaction', mem='2G',
                        balloon='automatic=on,pressure-fd=/dev/fdset/1,'
                                'pressure-fd-level=critical')
    vm.machine.add_fd(efd, 1, 'bench pressure eventfd')
    lat = []
    with vm:
        harness.wait_until(lambda: 'guest-stats' in
                           vm.cmd('query-balloon-auto'), 60,
                           what='guest statistics')
        vm.machine.get_qmp_events(wait=False)
        for _ in range(samples):
            vm.cmd('balloon', value=2048 * MiB)     # back to the baseline
            time.sleep(1.5)                         # past cooldown/throttle
            vm.machine.get_qmp_events(wait=False)
            t0 = time.time()
            os.eventfd_write(efd, 1)
            ev = vm.machine.event_wait('BALLOON_AUTO_DECISION', timeout=10)
            ts = ev['timestamp']
            lat.append((ts['seconds'] + ts['microseconds'] / 1e6 - t0) * 1e3)
    os.close(efd)
    return lat


def idle_cost(tree, balloon, seconds):
    vm = harness.TestVM('bench-idle', mem='1G', tree=tree, balloon=balloon)
    with vm:
        time.sleep(5)                   # let boot-time activity settle
        cpu0, ctx0 = proc_cost(vm.pid)
        time.sleep(seconds)
        cpu1, ctx1 = proc_cost(vm.pid)
    return cpu1 - cpu0, ctx1 - ctx0


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--fork', help='unused: this checkout\'s build is used')
    ap.add_argument('--pristine', required=True,
                    help='qemu-system-x86_64 of the pristine build')
    ap.add_argument('--samples', type=int, default=10)
    ap.add_argument('--idle-seconds', type=int, default=60)
    args = ap.parse_args()
    pristine_tree = os.path.dirname(os.path.dirname(
        os.path.abspath(args.pristine)))

    lat = reaction(args.samples)
    print('reaction: pressure event -> new target: median %.2f ms, max %.2f '
          'ms over %d events (goal < 10 ms)' % (statistics.median(lat),
                                                max(lat), len(lat)))
    fork = idle_cost(None, 'automatic=on,pressure-source=none',
                     args.idle_seconds)
    base = idle_cost(pristine_tree, '', args.idle_seconds)
    print('idle %d s: fork automatic=on: %.2f s CPU, %d wake-ups; pristine: '
          '%.2f s CPU, %d wake-ups; ratio CPU %.2f, wake-ups %.2f' % (
              args.idle_seconds, fork[0], fork[1], base[0], base[1],
              fork[0] / max(base[0], 1e-9), fork[1] / max(base[1], 1)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
