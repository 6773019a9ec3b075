#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
The management helper scripts/qemu-balloon-auto-pressure, which runs as
root, against fake QEMU processes and a fake virsh (fakes.py): no guest
and no libvirtd, but real descriptors armed on a real memory cgroup of
the test's own, in which the fake QEMUs run.

It must hand the descriptors to the QEMU whose cgroup they watch and to
no other, end when a monitor stops answering, and leave nothing behind
in QEMU when it fails.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import harness
from harness import MiB
import fakes
from qemu_balloon_auto.qmp import QmpClient

HELPER = os.path.join(harness.TOP, 'scripts', 'qemu-balloon-auto-pressure')
# the helper's default timeout for a monitor, and how late it may end
HELPER_TIMEOUT = 10
SLACK = 10
# low, so that no cgroup above the test's has a lower one: the helper arms
# the cgroup whose limit is in force
LIMIT = 256 * MiB
LEVELS = ('low', 'medium', 'critical')
SYSTEM_PSI = '/proc/pressure/memory'
# memory.limit_in_bytes of a v1 memcg without a limit is about 2^63
V1_UNLIMITED = 1 << 62
URI = 'test:///fake'
# libvirt's pid files, in a mount namespace of the helper's own: a tmpfs on
# /run with /run/libvirt/qemu/NAME.pid for each NAME=PID argument
PID_FILES = '''\
mount -t tmpfs tmpfs /run && mkdir -p /run/libvirt/qemu || exit 1
while [ "$1" != -- ]; do
    echo "${1#*=}" > "/run/libvirt/qemu/${1%%=*}.pid"; shift
done
shift
exec "$@"
'''


def lowest_limit_above(cgroup_dir):
    """The lowest memory.limit_in_bytes of @cgroup_dir's ancestors."""
    lowest = None
    d = os.path.dirname(cgroup_dir)
    while os.path.relpath(d, harness.V1_ROOT) != '..':
        try:
            with open(os.path.join(d, 'memory.limit_in_bytes')) as f:
                limit = int(f.read())
        except OSError:
            break
        lowest = limit if lowest is None else min(lowest, limit)
        if os.path.samefile(d, harness.V1_ROOT):
            break
        d = os.path.dirname(d)
    return lowest


class FakeQemu:
    """fakes.py qemu in @cgroup: a QMP socket served by a process whose
    command line carries @cmdline, as QEMU's carries -name and -uuid."""

    def __init__(self, cgroup, sock, *cmdline):
        self.sock = sock
        self.proc = subprocess.Popen(
            cgroup.wrapper() + [sys.executable, fakes.__file__, 'qemu',
                                sock] + list(cmdline))
        self.pid = self.proc.pid        # the wrapper execs
        harness.wait_until(lambda: os.path.exists(sock) or
                           self.proc.poll() is not None, 20, interval=0.05,
                           what='fake QEMU socket')
        if self.proc.poll() is not None:
            raise RuntimeError('the fake QEMU exited')

    def state(self):
        with QmpClient(self.sock, timeout=10) as mon:
            return mon.command('x-fake-state')

    def commands(self):
        return [entry[0] for entry in self.state()['log']]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class HelperTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.cg = harness.Cgroup(limit=LIMIT)
        lowest = lowest_limit_above(cls.cg.v1)
        if lowest is not None and lowest <= LIMIT:
            cls.cg.remove()
            raise unittest.SkipTest('a cgroup above the test\'s has a limit'
                                    ' of %d MiB: the helper would arm that'
                                    ' one' % (lowest // MiB))

        cls.unshare = subprocess.run(
            ['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
             'mount -t tmpfs tmpfs /run'], stderr=subprocess.DEVNULL,
            check=False).returncode == 0

    @classmethod
    def tearDownClass(cls):
        cls.cg.remove()

    def pid_files(self, **pids):
        """A command prefix that runs the rest in a mount namespace where
        libvirt's pid files name @pids ({domain name: pid})."""
        if not self.unshare:
            self.skipTest('no mount namespace (unshare --mount) here')
        return ['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
                PID_FILES, 'sh'] + ['%s=%d' % (name, pid)
                                    for name, pid in pids.items()] + ['--']

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='helper-test-')
        self.addCleanup(shutil.rmtree, self.dir)

    def qemu(self, name, *cmdline):
        q = FakeQemu(self.cg, os.path.join(self.dir, name + '.qmp'),
                     *cmdline)
        self.addCleanup(q.stop)
        return q

    def virsh(self, *domains):
        """The environment to run the helper with a fake virsh on PATH that
        knows @domains (dicts: id, name, uuid, qmp) at URI; and the
        path of its log."""
        log = os.path.join(self.dir, 'virsh.log')
        env = fakes.install_virsh(os.path.join(self.dir, 'bin'),
                                  {'uri': URI, 'log': log,
                                   'domains': list(domains)},
                                  os.path.join(self.dir, 'virsh.json'))
        return env, log

    def helper(self, *args, env=None, wrapper=(), timeout=60):
        """Run the helper; (exit code, stdout, stderr, seconds)."""
        start = time.monotonic()
        proc = subprocess.run(list(wrapper) + [HELPER] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, timeout=timeout)
        return (proc.returncode, proc.stdout, proc.stderr,
                time.monotonic() - start)

    def assertHandedOver(self, qemu, out):
        """@qemu got one eventfd per level (last) and uses them."""
        state = qemu.state()
        self.assertEqual(state['fds'], {})
        self.assertEqual(state['taken'], {level: 'anon_inode:[eventfd]'
                                          for level in LEVELS})
        getfd = [e for e in state['log'] if e[0] == 'getfd'][-3:]
        self.assertEqual([(e[1]['fdname'], e[2]) for e in getfd],
                         [('pressure-' + level, 'anon_inode:[eventfd]')
                          for level in LEVELS])
        self.assertTrue(out.startswith('v1 cgroup %s:' % self.cg.v1), out)

    def assertUntouched(self, qemu):
        """@qemu got no descriptor and no balloon-auto-set."""
        self.assertFalse({'getfd', 'balloon-auto-set'} &
                         set(qemu.commands()))

    def test_qmp_hands_over(self):
        """--qmp: one eventfd per level on the cgroup with the limit."""
        qemu = self.qemu('vm')
        rc, out, err, _ = self.helper('--qmp', qemu.sock, '--pid',
                                      str(qemu.pid))
        self.assertEqual(rc, 0, err)
        self.assertHandedOver(qemu, out)
        print('# helper: ' + out.strip())

    def test_qmp_socket_of_another_process(self):
        """--qmp naming a socket that another process than --pid serves:
        the descriptors of --pid's cgroup must not go to it."""
        vm = self.qemu('vm')
        other = self.qemu('other')
        rc, _, err, _ = self.helper('--qmp', other.sock, '--pid', str(vm.pid))
        self.assertNotEqual(rc, 0)
        self.assertUntouched(other)
        self.assertUntouched(vm)
        self.assertIn('served by pid %d' % other.pid, err)
        print('# ' + err.strip())

    def test_failed_set_leaves_no_descriptor(self):
        """QEMU refuses balloon-auto-set after getfd took the descriptor:
        the helper closes it again in QEMU (closefd) before it fails, over
        QMP and through libvirt."""
        uuid = '7d5a1c2e-0f3b-4c8d-9e6a-5b4c3d2e1f00'
        vm = self.qemu('vm', '--fail', 'balloon-auto-set', '-name', 'web',
                       '-uuid', uuid)
        env, _ = self.virsh({'id': 3, 'name': 'web', 'uuid': uuid,
                             'qmp': vm.sock})
        for route in (('--qmp', vm.sock), ('--domain', 'web', '--connect',
                                           URI)):
            rc, _, err, _ = self.helper(*route, '--pid', str(vm.pid),
                                        env=env)
            self.assertNotEqual(rc, 0)
            self.assertIn('balloon-auto-set: fake failure of'
                          ' balloon-auto-set', err)
            state = vm.state()
            self.assertEqual(state['fds'], {}, route[0])
            self.assertEqual(state['taken'], {}, route[0])
            self.assertEqual([e[0] for e in state['log'] if e[0] not in
                              ('qmp_capabilities', 'x-fake-state')][-3:],
                             ['getfd', 'balloon-auto-set', 'closefd'],
                             route[0])
            print('# %s: %s' % (route[0], err.strip()))

    def domains(self):
        """Three domains of three tenants, as a fake virsh sees them: '5'
        (ID 7), 'other' (ID 5) and one named like other's UUID (ID 9);
        their fake QEMUs, and the environment with that virsh."""
        uuids = {'5': '11111111-2222-4333-8444-555555555555',
                 'other': '66666666-7777-4888-8999-aaaaaaaaaaaa',
                 'uuid-named': 'bbbbbbbb-cccc-4ddd-8eee-ffffffffffff'}
        names = {'5': '5', 'other': 'other',
                 'uuid-named': uuids['other']}
        ids = {'5': 7, 'other': 5, 'uuid-named': 9}
        qemus = {key: self.qemu(key, '-name', 'guest=%s,debug-threads=on' %
                                names[key], '-uuid', uuids[key])
                 for key in uuids}
        env, log = self.virsh(*({'id': ids[key], 'name': names[key],
                                 'uuid': uuids[key], 'qmp': qemus[key].sock}
                                for key in uuids))
        pids = {names[key]: qemus[key].pid for key in uuids}
        return qemus, uuids, pids, env, log

    def test_domain_named_like_another_domains_id(self):
        """--domain 5 where a domain is named '5' and another has ID 5:
        virsh takes the string as the ID, the pid file as the name.  The
        helper must not arm one domain's cgroup for another; it refuses
        the ambiguous string."""
        qemus, _, pids, env, _ = self.domains()
        rc, _, err, _ = self.helper('--domain', '5', '--connect', URI,
                                    env=env, wrapper=self.pid_files(**pids))
        self.assertNotEqual(rc, 0, 'the helper accepted --domain 5')
        for qemu in qemus.values():
            self.assertUntouched(qemu)
        self.assertIn("'5'", err)
        print('# ' + err.strip())

    def test_domain_named_like_another_domains_uuid(self):
        """--domain UUID where a domain is named like another domain's
        UUID: the same refusal."""
        qemus, uuids, pids, env, _ = self.domains()
        rc, _, err, _ = self.helper('--domain', uuids['other'], '--connect',
                                    URI, env=env,
                                    wrapper=self.pid_files(**pids))
        self.assertNotEqual(rc, 0, 'the helper accepted a name that is'
                            ' another domain\'s UUID')
        for qemu in qemus.values():
            self.assertUntouched(qemu)
        print('# ' + err.strip())

    def test_pid_of_another_domain(self):
        """--pid of a QEMU that is not the domain's: refused (its command
        line does not carry the domain's -uuid)."""
        qemus, _, _, env, _ = self.domains()
        rc, _, err, _ = self.helper('--domain', 'other', '--connect', URI,
                                    '--pid', str(qemus['5'].pid), env=env)
        self.assertNotEqual(rc, 0, 'the helper accepted the pid of domain'
                            ' 5 for domain other')
        for qemu in qemus.values():
            self.assertUntouched(qemu)
        print('# ' + err.strip())

    def test_domain_by_name_id_and_uuid(self):
        """A domain named by its name, its ID or its UUID: resolved once
        (through --connect's libvirt), its own pid file, and every
        monitor command addressed by the UUID."""
        qemus, uuids, pids, env, log = self.domains()
        for given, key in (('other', 'other'), ('7', '5'),
                           (uuids['5'], '5')):
            if os.path.exists(log):
                os.unlink(log)
            rc, out, err, _ = self.helper('--domain', given, '--connect',
                                          URI, env=env,
                                          wrapper=self.pid_files(**pids))
            self.assertEqual(rc, 0, err)
            self.assertHandedOver(qemus[key], out)
            calls = fakes.read_log(log)
            self.assertEqual({c['uri'] for c in calls}, {URI})
            monitor = [c['args'][0] for c in calls
                       if c['command'] == 'qemu-monitor-command']
            self.assertTrue(monitor)
            self.assertEqual(set(monitor), {uuids[key]}, given)
        self.assertUntouched(qemus['uuid-named'])
        print('# --domain other, 7 and %s: each to its own QEMU' % uuids['5'])

    def test_qmp_monitor_that_never_answers(self):
        """A monitor that never greets, and one that greets and never
        answers: the helper gives up after its timeout instead of
        blocking for ever."""
        for mode, said in (('silent', 'no QMP greeting'),
                           ('mute', 'no reply to qmp_capabilities')):
            qemu = self.qemu('vm-' + mode, '--mode', mode)
            try:
                rc, _, err, took = self.helper(
                    '--qmp', qemu.sock, '--pid', str(qemu.pid),
                    timeout=HELPER_TIMEOUT + SLACK)
            except subprocess.TimeoutExpired:
                self.fail('the helper still waits for a %s monitor after'
                          ' %d s' % (mode, HELPER_TIMEOUT + SLACK))
            self.assertNotEqual(rc, 0)
            self.assertIn(said, err)
            print('# %s monitor: the helper gave up after %.1f s: %s' % (
                mode, took, err.strip()))

    def unlimited_qemu(self, name, *cmdline):
        """A fake QEMU in a memcg with no limit on its path, as libvirt's
        machine.slice scopes are by default."""
        cg = harness.Cgroup(limit=None)
        self.addCleanup(cg.remove)
        lowest = lowest_limit_above(cg.v1)
        if lowest is not None and lowest < V1_UNLIMITED:
            self.skipTest('a cgroup above the test\'s has a limit of %d MiB'
                          % (lowest // MiB))
        q = FakeQemu(cg, os.path.join(self.dir, name + '.qmp'), *cmdline)
        self.addCleanup(q.stop)
        return q

    def test_no_limit_arms_system_wide_psi(self):
        """No limit on the VM's path: the stall is the host's, not the VM
        cgroup's; the helper hands over system-wide PSI triggers."""
        if not os.path.exists(SYSTEM_PSI):
            self.skipTest('no %s on this kernel' % SYSTEM_PSI)
        qemu = self.unlimited_qemu('vm', '--source', 'cgroup-v1')
        rc, out, err, _ = self.helper('--qmp', qemu.sock, '--pid',
                                      str(qemu.pid))
        self.assertEqual(rc, 0, err)
        self.assertEqual(qemu.state()['taken'], {level: SYSTEM_PSI
                                                 for level in LEVELS})
        self.assertTrue(out.startswith('system %s:' % SYSTEM_PSI), out)
        print('# no limit: ' + out.strip())

    def test_no_limit_and_qemu_watches_host_memory(self):
        """No limit on the path and QEMU's own source is the host's memory:
        nothing to hand over.  Under a limit the same QEMU still gets the
        cgroup's descriptors (the host's memory does not see the limit)."""
        idle = self.unlimited_qemu('idle', '--source', 'host')
        rc, out, err, _ = self.helper('--qmp', idle.sock, '--pid',
                                      str(idle.pid))
        self.assertEqual(rc, 0, err)
        self.assertUntouched(idle)
        self.assertIn('nothing to hand over', out)
        print('# ' + out.strip())
        limited = self.qemu('limited', '--source', 'host')
        rc, out, err, _ = self.helper('--qmp', limited.sock, '--pid',
                                      str(limited.pid))
        self.assertEqual(rc, 0, err)
        self.assertHandedOver(limited, out)

    def test_automatic_off(self):
        """Automatic ballooning off: refused before anything is armed."""
        qemu = self.qemu('vm', '--disabled')
        rc, _, err, _ = self.helper('--qmp', qemu.sock, '--pid',
                                    str(qemu.pid))
        self.assertNotEqual(rc, 0)
        self.assertUntouched(qemu)
        self.assertIn('automatic ballooning is off', err)
        print('# ' + err.strip())


if __name__ == '__main__':
    harness.main()
