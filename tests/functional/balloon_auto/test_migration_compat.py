#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Compatibility with upstream QEMU built from the same base without our
patches (build/pristine, `make pristine`).  A VM without automatic
ballooning migrates from the fork to upstream and back as before; with
automatic ballooning on, migration to upstream fails cleanly and the
source keeps running; upstream's vmstate static checker sees no change."""

import json
import os
import subprocess
import sys
import unittest

import harness
from harness import MiB

PRISTINE = os.environ.get('QEMU_FORK_PRISTINE_TREE')
WORKDIR = harness.work_dir()


def socket_uri(name):
    return 'unix:%s/%s-%d.sock' % (WORKDIR, name, os.getpid())


class CompatTest(unittest.TestCase):

    def setUp(self):
        if not PRISTINE:
            self.fail('QEMU_FORK_PRISTINE_TREE is not set; `make check` '
                      'builds build/pristine and sets it')
        os.makedirs(WORKDIR, exist_ok=True)

    def dump_vmstate(self, name, tree):
        path = os.path.join(WORKDIR, 'vmstate-%s.json' % name)
        subprocess.run([harness.qemu_binary(tree), '-M', 'pc-q35-10.0',
                        '-nodefaults', '-display', 'none',
                        '-dump-vmstate', path], check=True)
        return path

    def test_vmstate_static_checker(self):
        dumps = {'pristine': self.dump_vmstate('pristine', PRISTINE),
                 'fork': self.dump_vmstate('fork', harness.TREE)}
        checker = os.path.join(harness.TREE, 'scripts',
                               'vmstate-static-checker.py')
        for src, dst in (('pristine', 'fork'), ('fork', 'pristine')):
            proc = subprocess.run([sys.executable, checker, '-s', dumps[src],
                                   '-d', dumps[dst]],
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
            self.assertEqual(proc.returncode, 0, proc.stdout)
            self.assertEqual(proc.stdout.strip(), '',
                             '%s -> %s: %s' % (src, dst, proc.stdout))
        # The dump stops at the opaque "virtio" field of virtio devices, so
        # the checker cannot see the balloon's subsections at all; the
        # migrations below test ours.  Should the dump learn to descend,
        # this fails and the test must be extended.
        with open(dumps['fork']) as f:
            desc = json.load(f)['virtio-balloon-device']['Description']
        self.assertEqual([f['field'] for f in desc['Fields']], ['virtio'])
        self.assertNotIn('Subsections', desc)

    def assert_alive(self, vm, word):
        rc, out = vm.console.run('echo %s' % word)
        self.assertEqual(rc, 0)
        self.assertIn(word, out)

    def test_round_trip_and_refusal(self):
        uris = [socket_uri(n) for n in ('to-pristine', 'back-to-fork',
                                        'refused')]
        fork = harness.TestVM('compat-fork')
        pristine = harness.TestVM('compat-pristine', tree=PRISTINE,
                                  incoming=uris[0])
        back = harness.TestVM('compat-fork-back', incoming=uris[1])
        refusing = harness.TestVM('compat-pristine-refusing', tree=PRISTINE,
                                  incoming=uris[2])
        vms = (fork, pristine, back, refusing)
        try:
            fork.launch()
            fork.cmd('balloon', value=768 * MiB)
            harness.wait_until(lambda: fork.balloon_actual() == 768 * MiB,
                               120, what='manual balloon at 768 MiB')

            # automatic=off: fork -> upstream -> fork, as before
            for src, dst, uri in ((fork, pristine, uris[0]),
                                  (pristine, back, uris[1])):
                dst.launch()
                result = src.migrate(uri)
                self.assertEqual(result['status'], 'completed', result)
                dst.event_wait('RESUME', 60)
                self.assert_alive(dst, 'alive-on-' + dst.name)
                self.assertEqual(dst.balloon_actual(), 768 * MiB)
            self.assertFalse(back.cmd('query-balloon-auto')['enabled'])

            # automatic on (here at run time): upstream cannot take the
            # state, so the migration fails and the source keeps running
            back.cmd('balloon-auto-set', enabled=True)
            info = back.cmd('query-balloon-auto')
            self.assertEqual(info['status'], 'active')
            self.assertEqual(info['baseline'], 768 * MiB)
            # With the return path (libvirt turns it on) the source learns
            # that the destination failed; without it, precopy cannot know
            # and leaves the source paused (see the docs).
            refusing.launch()
            for vm in (back, refusing):
                vm.cmd('migrate-set-capabilities', capabilities=[
                    {'capability': 'return-path', 'state': True}])
            result = back.migrate(uris[2])
            self.assertEqual(result['status'], 'failed', result)
            print('# refused: %s' % result.get('error-desc', ''))
            self.assertEqual(back.cmd('query-status')['status'], 'running')
            self.assert_alive(back, 'still-on-the-fork')
            info = back.cmd('query-balloon-auto')
            self.assertEqual(info['status'], 'active')
            self.assertEqual(info['baseline'], 768 * MiB)
            refusing.machine.wait(timeout=30)
            log = refusing.machine.get_log() or ''
            print('# upstream said: %s' % ' | '.join(log.splitlines()[-3:]))
            self.assertIn('virtio-balloon', log)
            self.assertNotEqual(refusing.machine.exitcode(), 0)
        finally:
            for vm in vms:
                vm.shutdown()
            for uri in uris:
                if os.path.exists(uri[len('unix:'):]):
                    os.unlink(uri[len('unix:'):])


if __name__ == '__main__':
    harness.main()
