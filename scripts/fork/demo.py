#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Demo of the automatic balloon: boot the bundled guest with
-device virtio-balloon-pci,automatic=on inside a memory-limited cgroup,
then squeeze the host (a memory hog in the same cgroup) and the guest
(an allocation inside it) and show, live, what the balloon does, as the
host-side view scripts/balloon_auto_top.py sees it.  The run is recorded
to build/demo.jsonl and plotted to build/demo.png.  It runs with the
checkout's scripts/ on PYTHONPATH (make demo sets it).
"""

import argparse
import json
import os
import sys
import threading
import time

import balloon_auto_top as view
from qemu_balloon_auto import MiB
from qemu_balloon_auto.qmp import QmpClient
from qemu_balloon_auto.testing.cgroup import Cgroup
from qemu_balloon_auto.testing.guest import TOP, TestVM
from qemu_balloon_auto.testing.hog import MemoryHog

VIEW_SOCKET = os.path.join(TOP, 'build', 'tests', 'demo.qmp')
RECORDING = os.path.join(TOP, 'build', 'demo.jsonl')
PLOT = os.path.join(TOP, 'build', 'demo.png')


class DemoView:
    """The host-side view of the demo VM through its own QMP socket: each
    sample is printed as one line and recorded for the plot."""

    def __init__(self, cg):
        self.cg = cg
        self.target = QmpClient(VIEW_SOCKET, timeout=view.QMP_TIMEOUT)
        self.recording = open(RECORDING, 'w')

    def row(self, phase):
        snap = view.sample_all([self.target])
        self.recording.write(json.dumps(snap) + '\n')
        self.recording.flush()
        r = snap['vms'][0]
        if 'error' in r:
            print('%-14s %s' % (phase, r['error']), flush=True)
            return
        print('%-14s actual %5s MiB  target %5s  baseline %5s  guest-avail'
              ' %5s  QEMU-RSS %5s  cgroup %5d/%d  level %-8s  last %s' % (
                  phase, view.mib(r['actual']), view.mib(r.get('target')),
                  view.mib(r.get('baseline')), view.mib(r.get('available')),
                  view.mib(r['rss']), self.cg.usage() // MiB,
                  self.cg.limit // MiB, r.get('level', '-'),
                  view.why(r.get('decision'))), flush=True)

    def table(self):
        print('   host-side view (scripts/balloon_auto_top.py %s):' %
              os.path.relpath(VIEW_SOCKET, TOP))
        text = view.table(view.sample_all([self.target])['vms'])
        print('\n'.join('   ' + line for line in text.splitlines()))

    def watch(self, phase, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.row(phase)
            time.sleep(2)

    def plot(self):
        self.recording.close()
        view.plot(RECORDING, PLOT)
        print('\nRecorded %s; plot of balloon size, guest available memory,'
              ' QEMU RSS and host pressure events: %s' % (
                  os.path.relpath(RECORDING, TOP), os.path.relpath(PLOT, TOP)))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--qemu', help='unused; the tree of this checkout is used')
    ap.add_argument('--limit-mib', type=int, default=1400)
    args = ap.parse_args()

    print('Booting the bundled guest (TCG, ~45 s) with automatic=on in a'
          ' cgroup limited to %d MiB...' % args.limit_mib, flush=True)
    os.makedirs(os.path.dirname(VIEW_SOCKET), exist_ok=True)
    if os.path.exists(VIEW_SOCKET):
        os.unlink(VIEW_SOCKET)
    with Cgroup(limit=args.limit_mib * MiB) as cg:
        vm = TestVM('demo', mem='1G', cgroup=cg,
                    balloon='automatic=on,deflate-on-oom=on,'
                            'pressure-source=cgroup-v1,'
                            'pressure-cgroup=' + cg.v1,
                    args=('-name', 'demo', '-qmp',
                          'unix:%s,server=on,wait=off' % VIEW_SOCKET))
        with vm:
            demo = DemoView(cg)
            src = vm.cmd('query-balloon-auto')['source']
            print('pressure source: %s %s (%s)' % (src['kind'], src['path'],
                                                   src['detail']))
            print('\n1. The guest uses 700 MiB once, then frees it: the'
                  ' memory stays resident in QEMU.')
            vm.console.check('bgt alloc 700', timeout=300)
            demo.watch('guest-used', 6)
            demo.table()

            print('\n2. A host process in the same cgroup needs 800 MiB:'
                  ' host pressure inflates the balloon.')
            hog = MemoryHog(cg, 800, step=8, delay=0.5)
            try:
                demo.watch('host-pressure', 40)
            finally:
                hog.stop()
            print('   host hog got %d MiB; cgroup OOM kills: %d' % (
                hog.allocated, cg.oom_kills()))
            demo.table()

            print('\n3. The hog is gone and the guest needs 600 MiB:'
                  ' guest pressure deflates the balloon.')
            result = {}
            work = threading.Thread(target=lambda: result.update(
                out=vm.console.run('bgt alloc 600 --step 32 --delay-ms 300'
                                   ' && bgt vmstat oom_kill', timeout=600)))
            work.start()
            while work.is_alive():
                demo.row('guest-pressure')
                time.sleep(2)
            print('   guest:', ' / '.join(result.get('out', (1, []))[1]))
            demo.table()
            print('\n4. Calm: after the hold time the balloon returns to its'
                  ' baseline.')
            demo.watch('calm', 20)
            demo.table()
            print('\nHMP "info balloon":')
            print(vm.machine.cmd('human-monitor-command',
                                 command_line='info balloon'))
            demo.plot()
    return 0


if __name__ == '__main__':
    sys.exit(main())
