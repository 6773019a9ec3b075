#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
The automatic balloon under the seccomp sandbox libvirt starts QEMU with:
host pressure inflates the balloon and guest pressure deflates it, and
nothing the automatic balloon does is refused by the filter.
"""

import time
import unittest

import harness
from harness import MiB

# what libvirt (qemu_command.c) passes when seccomp_sandbox is on
SANDBOX = ('on,obsolete=deny,elevateprivileges=deny,spawn=deny,'
           'resourcecontrol=deny')


class SandboxTest(unittest.TestCase):

    def test_pressure_both_ways_under_seccomp(self):
        with harness.Cgroup(limit=1400 * MiB) as cg:
            vm = harness.TestVM(
                'sandbox', mem='1G', cgroup=cg,
                balloon='automatic=on,pressure-source=cgroup-v1,'
                        'pressure-cgroup=' + cg.v1,
                args=('-sandbox', SANDBOX))
            with vm:
                # the filter is in force in every QEMU thread
                with open('/proc/%d/status' % vm.pid) as f:
                    self.assertRegex(f.read(), r'(?m)^Seccomp:\s+2$')
                harness.wait_until(
                    lambda: vm.cmd('query-balloon-auto')['status'] ==
                    'active', 30, what='automatic ballooning active')

                # Guest pressure: resting at 400 MiB, the guest allocates
                # 600 MiB and gets it.
                vm.cmd('balloon', value=400 * MiB)
                harness.wait_until(lambda: vm.balloon_actual() == 400 * MiB,
                                   120, what='balloon at 400 MiB')
                out = vm.console.check(
                    'bgt alloc 600 --step 8 --delay-ms 250', timeout=600)
                self.assertIn('alloc ok 600', out)
                self.assertEqual(vm.console.vmstat('oom_kill'),
                                 {'oom_kill': 0})
                info = vm.cmd('query-balloon-auto')
                counts = harness.decision_counts(info)
                self.assertGreater(counts['guest-pressure'] +
                                   counts['guest-deflated'], 0)
                self.assertGreater(info['actual'], 600 * MiB)

                # Host pressure: with the baseline back at the full size,
                # a hog in the cgroup makes the balloon inflate.
                vm.cmd('balloon', value=1024 * MiB)
                harness.wait_until(
                    lambda: vm.balloon_actual() == 1024 * MiB, 120,
                    what='balloon at 1 GiB')
                harness.wait_until(
                    lambda: vm.cmd('query-balloon-auto')['guest-stats'][
                        'age-ms'] < 3000, 30, what='fresh statistics')
                rss_before = vm.rss()
                start = time.monotonic()
                hog = harness.MemoryHog(cg, 800, step=8, delay=0.5)
                try:
                    hog.wait_allocated()
                    rss_after = vm.rss()
                    info = vm.cmd('query-balloon-auto')
                finally:
                    hog.stop()
                counts = harness.decision_counts(info)
                self.assertGreater(counts['host-pressure'], 0)
                self.assertLess(info['target'], 1024 * MiB)
                self.assertLess(rss_after, rss_before - 150 * MiB)
                self.assertEqual(cg.oom_kills(), 0)
                # QEMU is still there: the filter kills on a denied call
                self.assertEqual(vm.cmd('query-status')['status'], 'running')
                print('# under -sandbox %s: guest got 600 MiB from 400 MiB'
                      ' (%d deflate decisions); host pressure: %d inflate'
                      ' decisions, target %d MiB, QEMU RSS %d -> %d MiB in'
                      ' %.0f s' % (
                          SANDBOX, counts['guest-pressure'] +
                          counts['guest-deflated'], counts['host-pressure'],
                          info['target'] // MiB, rss_before // MiB,
                          rss_after // MiB, time.monotonic() - start))


if __name__ == '__main__':
    harness.main()
