#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The foundation: the fork boots the bundled guest in a memory-limited
cgroup and a balloon driven through QMP returns guest memory to the host."""

import subprocess
import unittest

import harness
from harness import MiB


class ManualBalloonTest(unittest.TestCase):

    def test_version_names_fork_and_base(self):
        out = subprocess.run([harness.qemu_binary(), '--version'],
                             check=True, stdout=subprocess.PIPE,
                             text=True).stdout
        self.assertIn('qemu-balloon-auto fork', out)
        self.assertRegex(out, r'Debian 1:10\.0\.\d+')

    def test_qmp_balloon_returns_memory(self):
        with harness.Cgroup(limit=1536 * MiB) as cg, \
                harness.TestVM('manual', mem='1G', cgroup=cg) as vm:
            self.assertEqual(vm.balloon_actual(), 1024 * MiB)
            total_before = vm.console.meminfo()['MemTotal']
            # Touch guest memory so that QEMU's RSS really holds it.
            vm.console.check('bgt alloc 600', timeout=300)
            rss_full = vm.rss()
            self.assertGreater(rss_full, 600 * MiB)
            self.assertLessEqual(cg.usage(), cg.limit)

            vm.cmd('balloon', value=384 * MiB)
            harness.wait_until(lambda: vm.balloon_actual() == 384 * MiB,
                               300, what='balloon actual 384 MiB')
            total_small = vm.console.meminfo()['MemTotal']
            self.assertLess(total_small, total_before - 600 * MiB)
            rss_small = vm.rss()
            self.assertLess(rss_small, rss_full - 400 * MiB,
                            'RSS %d MiB -> %d MiB' % (rss_full // MiB,
                                                       rss_small // MiB))

            vm.cmd('balloon', value=1024 * MiB)
            harness.wait_until(lambda: vm.balloon_actual() == 1024 * MiB,
                               300, what='balloon actual back to 1 GiB')
            self.assertEqual(vm.console.meminfo()['MemTotal'], total_before)
            self.assertEqual(cg.oom_kills(), 0)
            print('# rss full %d MiB, ballooned to 384 MiB: %d MiB'
                  % (rss_full // MiB, rss_small // MiB))


if __name__ == '__main__':
    harness.main()
