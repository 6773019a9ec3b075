#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Which host pressure source and which cgroup QEMU picks by itself, with
QEMU placed the way libvirt places it: its process in a threaded child
("emulator") of the VM's cgroup v2, its memory limit in a v1 memcg."""

import os
import sys
import unittest

import harness
from harness import MiB


class SourcesTest(unittest.TestCase):

    @staticmethod
    def source(cg, v2_dir, props):
        """The pressure source a QEMU in @cg's v1 memcg and in @v2_dir
        picks with balloon properties @props."""
        sys.path.insert(0, os.path.join(harness.TREE, 'python'))
        from qemu.machine import QEMUMachine  # pylint: disable=import-error
        vm = QEMUMachine(harness.qemu_binary(), wrapper=cg.wrapper(v2_dir),
                         base_temp_dir=harness.work_dir())
        vm.add_args('-M', 'q35', '-nodefaults', '-S', '-m', '512M',
                    '-device', 'virtio-balloon-pci,id=balloon0,' + props)
        vm.launch()
        try:
            return vm.cmd('query-balloon-auto')['source']
        finally:
            vm.shutdown()

    def test_threaded_emulator_cgroup(self):
        with harness.Cgroup(limit=1400 * MiB) as cg:
            emulator = os.path.join(cg.v2, 'emulator')
            os.mkdir(emulator)
            with open(os.path.join(emulator, 'cgroup.type'), 'w') as f:
                f.write('threaded')

            # v2 explicitly: the VM's cgroup, not the threaded child
            src = self.source(cg, emulator,
                              'automatic=on,pressure-source=cgroup-v2')
            print('# cgroup-v2: %s (%s)' % (src['path'], src['detail']))
            self.assertEqual(src['kind'], 'cgroup-v2')
            self.assertEqual(src['path'], cg.v2)

            # auto on a host whose memory controller is on v1: the v1
            # memcg, which has the limit and the usage thresholds
            src = self.source(cg, emulator, 'automatic=on')
            print('# auto: %s (%s)' % (src['path'], src['detail']))
            self.assertEqual(src['kind'], 'cgroup-v1')
            self.assertEqual(src['path'], cg.v1)
            self.assertIn('memory controller is on cgroup v1',
                          src['detail'])
            self.assertIn('thresholds', src['detail'])

if __name__ == '__main__':
    harness.main()
