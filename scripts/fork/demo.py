#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Demo of the automatic balloon: boot the bundled guest with
-device virtio-balloon-pci,automatic=on inside a memory-limited cgroup,
then squeeze the host (a memory hog in the same cgroup) and the guest
(an allocation inside it) and show, live, what the balloon does.
"""

import argparse
import os
import sys
import threading
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
sys.path.insert(0, os.path.join(TOP, 'tests', 'functional', 'balloon_auto'))

import harness  # noqa: E402  pylint: disable=wrong-import-position
from harness import MiB  # noqa: E402  pylint: disable=wrong-import-position


def row(vm, cg, phase):
    info = vm.cmd('query-balloon-auto')
    last = info.get('last-decision')
    stats = info.get('guest-stats', {})
    print('%-14s actual %5d MiB  target %5d  baseline %5d  guest-avail %5s'
          '  QEMU-RSS %5d  cgroup %5d/%d  level %-8s  last %s' % (
              phase, info['actual'] // MiB, info['target'] // MiB,
              info['baseline'] // MiB,
              stats['available'] // MiB if 'available' in stats else '-',
              vm.rss() // MiB, cg.usage() // MiB, cg.limit // MiB,
              info['level'],
              '%s %+d MiB' % (last['reason'],
                              (last['new-target'] - last['old-target'])
                              // MiB) if last else '-'), flush=True)


def watch(vm, cg, phase, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        row(vm, cg, phase)
        time.sleep(2)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--qemu', help='unused; the tree of this checkout is used')
    ap.add_argument('--limit-mib', type=int, default=1400)
    args = ap.parse_args()

    print('Booting the bundled guest (TCG, ~45 s) with automatic=on in a'
          ' cgroup limited to %d MiB...' % args.limit_mib, flush=True)
    with harness.Cgroup(limit=args.limit_mib * MiB) as cg:
        vm = harness.TestVM('demo', mem='1G', cgroup=cg,
                            balloon='automatic=on,deflate-on-oom=on,'
                                    'pressure-source=cgroup-v1,'
                                    'pressure-cgroup=' + cg.v1)
        with vm:
            src = vm.cmd('query-balloon-auto')['source']
            print('pressure source: %s %s (%s)' % (src['kind'], src['path'],
                                                   src['detail']))
            print('\n1. The guest uses 700 MiB once, then frees it: the'
                  ' memory stays resident in QEMU.')
            vm.console.check('bgt alloc 700', timeout=300)
            watch(vm, cg, 'guest-used', 6)

            print('\n2. A host process in the same cgroup needs 800 MiB:'
                  ' host pressure inflates the balloon.')
            hog = harness.MemoryHog(cg, 800, step=8, delay=0.5)
            try:
                watch(vm, cg, 'host-pressure', 40)
            finally:
                hog.stop()
            print('   host hog got %d MiB; cgroup OOM kills: %d' % (
                hog.allocated, cg.oom_kills()))

            print('\n3. The hog is gone and the guest needs 600 MiB:'
                  ' guest pressure deflates the balloon.')
            result = {}
            work = threading.Thread(target=lambda: result.update(
                out=vm.console.run('bgt alloc 600 --step 32 --delay-ms 300'
                                   ' && bgt vmstat oom_kill', timeout=600)))
            work.start()
            while work.is_alive():
                row(vm, cg, 'guest-pressure')
                time.sleep(2)
            print('   guest:', ' / '.join(result.get('out', (1, []))[1]))
            print('\n4. Calm: after the hold time the balloon returns to its'
                  ' baseline.')
            watch(vm, cg, 'calm', 20)
            print('\nHMP "info balloon":')
            print(vm.machine.cmd('human-monitor-command',
                                 command_line='info balloon'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
