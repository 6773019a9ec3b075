#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The shared QMP clients (scripts/qemu_balloon_auto/qmp.py) against a
fake monitor and a fake virsh: replies and errors, events, descriptors,
the listener's credentials, and that no wait is unbounded, whatever the
monitor does.  No QEMU needed."""

import os
import shutil
import socket
import tempfile
import threading
import time
import unittest

import harness
import fakes
from qemu_balloon_auto import qmp

TIMEOUT = 1.0
# how late a timeout may fire on a busy machine
SLACK = 2.0


class QmpClientTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='qmp-test-')
        self.addCleanup(shutil.rmtree, self.dir)
        self.sock = os.path.join(self.dir, 'qmp')

    def monitor(self, **kwargs):
        mon = fakes.FakeMonitor(self.sock, **kwargs)
        self.addCleanup(mon.stop)
        return mon

    def assertTimesOut(self, what, func):
        start = time.monotonic()
        with self.assertRaises(qmp.MonitorTimeout) as cm:
            func()
        elapsed = time.monotonic() - start
        self.assertLess(elapsed, TIMEOUT + SLACK, what)
        print('# %s: %s after %.1f s' % (what, cm.exception, elapsed))

    def test_command_and_error(self):
        mon = self.monitor()
        with qmp.QmpClient(self.sock, timeout=TIMEOUT) as client:
            self.assertEqual(client.greeting['version']['package'], 'fake')
            self.assertEqual(client.command('query-balloon'),
                             {'actual': 512 * harness.MiB})
            with self.assertRaises(qmp.QmpError) as cm:
                client.command('nosuch', value=1)
            self.assertEqual(cm.exception.error_class, 'CommandNotFound')
            self.assertEqual(str(cm.exception),
                             'The command nosuch has not been found')
            self.assertEqual(cm.exception.command, 'nosuch')
            # the connection is still usable after an error reply
            self.assertEqual(client.command('query-name'), {'name': 'fake'})
        self.assertEqual(mon.commands(), ['qmp_capabilities',
                                          'query-balloon', 'nosuch',
                                          'query-name'])

    def test_events_skipped_or_kept(self):
        self.monitor(events=2)
        with qmp.QmpClient(self.sock, timeout=TIMEOUT) as client:
            self.assertEqual(client.command('query-name'), {'name': 'fake'})
            self.assertEqual(client.pop_events(), [])
        with qmp.QmpClient(self.sock, timeout=TIMEOUT,
                           keep_events=True) as client:
            client.command('query-name')
            events = client.pop_events()
            # two before the capabilities' reply, two before query-name's
            self.assertEqual([e['event'] for e in events], ['FAKE'] * 4)
            self.assertEqual(client.pop_events(), [])

    def test_descriptor_and_credentials(self):
        mon = self.monitor()
        efd = os.eventfd(0)
        try:
            with qmp.QmpClient(self.sock, timeout=TIMEOUT) as client:
                client.command_fd('getfd', efd, fdname='x')
                cred = client.peer_credentials()
                self.assertEqual(mon.fds.keys(), {'x'})
                client.command('closefd', fdname='x')
        finally:
            os.close(efd)
        self.assertEqual(mon.log[1], ('getfd', {'fdname': 'x'},
                                      'anon_inode:[eventfd]'))
        self.assertEqual(mon.fds, {})
        # the fake listens in this process
        self.assertEqual((cred.pid, cred.uid, cred.gid),
                         (os.getpid(), os.getuid(), os.getgid()))

    def test_unreachable(self):
        with self.assertRaises(qmp.MonitorError) as cm:
            qmp.QmpClient(self.sock, timeout=TIMEOUT).connect()
        self.assertIn('No such file', str(cm.exception))
        # a socket that is not a QMP monitor
        server = socket.socket(socket.AF_UNIX)
        self.addCleanup(server.close)
        server.bind(self.sock)
        server.listen(1)

        def junk():
            conn, _ = server.accept()
            conn.sendall(b'{"hello": 1}\n')
            conn.close()
        t = threading.Thread(target=junk)
        t.start()
        with self.assertRaises(qmp.MonitorError) as cm:
            qmp.QmpClient(self.sock, timeout=TIMEOUT).connect()
        t.join()
        self.assertIn('not a QMP monitor', str(cm.exception))

    def test_silent_monitor_times_out(self):
        """A socket that accepts and never greets."""
        self.monitor(mode='silent')
        self.assertTimesOut('no greeting', qmp.QmpClient(
            self.sock, timeout=TIMEOUT).connect)

    def test_mute_monitor_times_out(self):
        """A monitor that greets and never answers."""
        self.monitor(mode='mute')
        self.assertTimesOut('no reply', qmp.QmpClient(
            self.sock, timeout=TIMEOUT).connect)

    def test_trickling_monitor_times_out(self):
        """Events every 0.2 s and never a reply: the deadline is the
        command's, not each read's."""
        self.monitor(mode='trickle')
        self.assertTimesOut('only events', qmp.QmpClient(
            self.sock, timeout=TIMEOUT, keep_events=True).connect)


class LibvirtMonitorTest(unittest.TestCase):

    UUID = '0b7e2a42-5d1c-4c3e-9d8f-1a2b3c4d5e6f'

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='virsh-test-')
        self.addCleanup(shutil.rmtree, self.dir)
        self.sock = os.path.join(self.dir, 'qmp')
        self.mon = fakes.FakeMonitor(self.sock)
        self.addCleanup(self.mon.stop)
        self.state = {'uri': 'test:///fake',
                      'log': os.path.join(self.dir, 'virsh.log'),
                      'domains': [{'id': 3, 'name': 'web', 'uuid': self.UUID,
                                   'qmp': self.sock}]}
        self.env_vars = fakes.install_virsh(
            os.path.join(self.dir, 'bin'), self.state,
            os.path.join(self.dir, 'virsh.json'))
        saved = dict(os.environ)
        self.addCleanup(lambda: (os.environ.clear(),
                                 os.environ.update(saved)))
        os.environ.update(self.env_vars)

    def test_commands_through_virsh(self):
        mon = qmp.LibvirtMonitor('web', 'test:///fake', timeout=20)
        self.assertEqual(mon.command('query-name'), {'name': 'fake'})
        with self.assertRaises(qmp.QmpError) as cm:
            mon.command('nosuch')
        self.assertEqual(cm.exception.error_class, 'CommandNotFound')
        efd = os.eventfd(0)
        try:
            mon.command_fd('getfd', efd, fdname='x')
        finally:
            os.close(efd)
        self.assertEqual(self.mon.fds.keys(), {'x'})
        self.assertIn(('getfd', {'fdname': 'x'}, 'anon_inode:[eventfd]'),
                      self.mon.log)
        calls = fakes.read_log(self.state['log'])
        self.assertEqual([c['uri'] for c in calls], ['test:///fake'] * 3)
        self.assertEqual(calls[2]['argv'][-4:-1], ['web', '--pass-fds',
                                                   str(efd)])

    def test_virsh_failure(self):
        with self.assertRaises(qmp.MonitorError) as cm:
            qmp.LibvirtMonitor('nosuch', 'test:///fake',
                               timeout=20).command('query-name')
        self.assertIn("failed to get domain 'nosuch'", str(cm.exception))
        with self.assertRaises(qmp.MonitorError) as cm:
            qmp.LibvirtMonitor('web', 'test:///other',
                               timeout=20).command('query-name')
        self.assertIn('failed to connect', str(cm.exception))

    def test_hanging_virsh_times_out(self):
        self.state['hang'] = True
        os.environ.update(fakes.install_virsh(
            os.path.join(self.dir, 'bin'), self.state,
            os.path.join(self.dir, 'virsh.json')))
        start = time.monotonic()
        with self.assertRaises(qmp.MonitorTimeout):
            qmp.LibvirtMonitor('web', 'test:///fake',
                               timeout=TIMEOUT).command('query-name')
        self.assertLess(time.monotonic() - start, TIMEOUT + SLACK)


if __name__ == '__main__':
    harness.main()
