#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Stand-ins for QEMU's monitor and for virsh, for the tests of the Python
tools that need no guest.

FakeMonitor serves QMP on a unix socket from a thread: it answers like
QEMU (greeting, qmp_capabilities, getfd/closefd with descriptors passed
by SCM_RIGHTS, what the host-side view asks), records every command, and
can misbehave: 'silent' accepts and never greets, 'mute' greets and never
answers, 'trickle' greets and then sends an event every 0.2 s instead of
answering.

As a program it is a fake QEMU process or a fake virsh:

  fakes.py qemu SOCKET [--mode MODE] [--fail COMMAND]
                 [-name NAME -uuid UUID ...]
      serve SOCKET until killed; extra arguments only show in
      /proc/PID/cmdline, as QEMU's do.  'x-fake-state' returns what it
      recorded and the descriptors it holds.
  fakes.py virsh [-q] [-c URI] COMMAND ...
      the domains of the JSON file $FAKE_VIRSH: {"uri": URI, "log": FILE,
      "hang": false, "domains": [{"id": 5, "name": "web", "uuid": UUID,
      "qmp": SOCKET}, ...]}.  It resolves a domain string as virsh does
      (an ID, then a UUID, then a name), answers list, domuuid, domname
      and domid, forwards qemu-monitor-command (with --pass-fds) to the
      domain's SOCKET, and appends its argv and the domain it resolved to
      FILE.  An URI other than the file's fails as virsh does, and so
      does every command with "down": true (libvirtd not running).  A
      domain with "gone": true is listed but is not found by any other
      command (destroyed between the listing and the query).
"""

import argparse
import json
import os
import socket
import sys
import threading
import time

MiB = 1024 * 1024


def fd_description(fd):
    try:
        return os.readlink('/proc/self/fd/%d' % fd)
    except OSError:
        return '?'


def qemu_like_replies(name='fake', actual=512 * MiB,
                      uuid='00000000-0000-0000-0000-000000000000'):
    """Replies of a QEMU with an automatic balloon, enough for
    balloon_auto_top.py and the exporter."""
    return {
        'query-name': {'name': name},
        'query-uuid': {'UUID': uuid},
        'query-status': {'status': 'running', 'running': True},
        'query-cpus-fast': [{'cpu-index': 0, 'thread-id': os.getpid()}],
        'query-balloon': {'actual': actual},
        'query-balloon-auto': {
            'enabled': True, 'dry-run': False, 'status': 'active',
            'level': 'none', 'actual': actual,
            'target': actual, 'baseline': actual, 'floor': 128 * MiB,
            'floor-origin': 'fake', 'max': 1024 * MiB,
            'reserve': 64 * MiB,
            'guest-stats': {'age-ms': 500, 'available': 300 * MiB,
                            'total': 480 * MiB},
            'events': [{'level': level, 'events': 0}
                       for level in ('low', 'medium', 'critical')],
            'decisions': [{'reason': reason, 'count': 0, 'bytes': 0}
                          for reason in ('host-pressure', 'guest-pressure',
                                         'guest-deflated', 'host-calm',
                                         'guest-idle', 'driver-stuck')],
            'pingpongs': 0, 'driver-responding': True,
            'hold-remaining-ms': 0,
            'source': {'kind': 'none', 'path': '', 'detail': 'fake',
                       'lost': False},
        },
    }


class FakeMonitor:
    """A QMP monitor on unix socket @path, served by threads."""

    def __init__(self, path, mode='ok', replies=None, fail=None, events=0):
        """@replies: {command: return value}; @fail: {command: error desc}
        (class GenericError) or {command: (class, desc)}; @events:
        asynchronous events sent before each reply.  A command taken out
        of @replies is one this QEMU does not have (CommandNotFound)."""
        self.path = path
        self.mode = mode
        self.replies = dict(qemu_like_replies(), **(replies or {}))
        self.fail = dict(fail or {})
        self.events = events
        self.log = []               # (command, arguments, descriptor)
        self.fds = {}               # fdname -> fd, as getfd keeps them
        self.taken = {}             # fdname -> fd, taken by a command
        self._conns = []
        self._lock = threading.Lock()
        if os.path.exists(path):
            os.unlink(path)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        self._server.listen(8)
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self._stopped = True
        self._server.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        for fd in list(self.fds.values()) + list(self.taken.values()):
            os.close(fd)
        self.fds.clear()
        self.taken.clear()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def commands(self):
        with self._lock:
            return [entry[0] for entry in self.log]

    def _accept(self):
        while not self._stopped:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    @staticmethod
    def _send(conn, msg):
        conn.sendall(json.dumps(msg).encode() + b'\r\n')

    def _serve(self, conn):
        pending = []                # descriptors not yet taken by getfd
        try:
            if self.mode == 'silent':
                while conn.recv(4096):
                    pass
                return
            self._send(conn, {'QMP': {'version': {'qemu': {
                'major': 10, 'minor': 0, 'micro': 0}, 'package': 'fake'},
                'capabilities': ['oob']}})
            if self.mode == 'trickle':
                while True:
                    time.sleep(0.2)
                    self._send(conn, {'event': 'FAKE', 'data': {}})
            buf = b''
            while True:
                data, fds, _, _ = socket.recv_fds(conn, 65536, 16)
                pending += fds
                if not data:
                    return
                buf += data
                while b'\n' in buf:
                    line, buf = buf.split(b'\n', 1)
                    if self.mode == 'mute':
                        continue
                    for _ in range(self.events):
                        self._send(conn, {'event': 'FAKE', 'data': {},
                                          'timestamp': {'seconds': 0,
                                                        'microseconds': 0}})
                    self._send(conn, self._answer(json.loads(line), pending))
        except OSError:
            pass
        finally:
            for fd in pending:
                os.close(fd)

    def _answer(self, msg, pending):
        name = msg.get('execute')
        args = msg.get('arguments', {})
        fd = pending.pop(0) if name == 'getfd' and pending else None
        with self._lock:
            self.log.append((name, args, fd_description(fd)
                             if fd is not None else None))
        if name in self.fail:
            if fd is not None:
                os.close(fd)
            error = self.fail[name]
            if not isinstance(error, tuple):
                error = ('GenericError', error)
            return {'error': {'class': error[0], 'desc': error[1]}}
        if name == 'qmp_capabilities':
            return {'return': {}}
        if name == 'getfd':
            if fd is None:
                return {'error': {'class': 'GenericError', 'desc':
                                  'No file descriptor supplied via'
                                  ' SCM_RIGHTS'}}
            with self._lock:
                old = self.fds.pop(args['fdname'], None)
                if old is not None:
                    os.close(old)
                self.fds[args['fdname']] = fd
            return {'return': {}}
        if name == 'closefd':
            with self._lock:
                fd = self.fds.pop(args['fdname'], None)
            if fd is None:
                return {'error': {'class': 'GenericError', 'desc':
                                  "File descriptor named '%s' not found" %
                                  args['fdname']}}
            os.close(fd)
            return {'return': {}}
        if name == 'balloon-auto-set' and 'pressure-fd' in args:
            # QEMU takes the descriptor out of the monitor's list
            with self._lock:
                fd = self.fds.pop(args['pressure-fd'], None)
                if fd is None:
                    return {'error': {'class': 'GenericError', 'desc':
                                      "pressure-fd: no descriptor named"
                                      " '%s'" % args['pressure-fd']}}
                level = args.get('pressure-fd-level', 'critical')
                old = self.taken.pop(level, None)
                if old is not None:
                    os.close(old)
                self.taken[level] = fd
            return {'return': {}}
        if name == 'balloon-auto-set':
            return {'return': {}}
        if name == 'query-balloon-auto' and name in self.replies:
            info = dict(self.replies['query-balloon-auto'])
            own = info['source']['kind']
            with self._lock:
                info['source'] = {'kind': 'fd' if self.taken and own == 'none'
                                  else own,
                                  'path': '', 'lost': False,
                                  'detail': ', '.join(
                                      '%s (%s)' % (level, fd_description(f))
                                      for level, f in self.taken.items())
                                  or 'no descriptors'}
            return {'return': info}
        if name == 'x-fake-state':
            with self._lock:
                return {'return': {
                    'log': [list(e) for e in self.log],
                    'fds': {n: fd_description(f)
                            for n, f in self.fds.items()},
                    'taken': {n: fd_description(f)
                              for n, f in self.taken.items()}}}
        if name in self.replies:
            return {'return': self.replies[name]}
        return {'error': {'class': 'CommandNotFound',
                          'desc': "The command %s has not been found" % name}}


def fake_qemu(argv):
    ap = argparse.ArgumentParser(prog='fakes.py qemu')
    ap.add_argument('socket')
    ap.add_argument('--mode', default='ok',
                    choices=('ok', 'silent', 'mute', 'trickle'))
    ap.add_argument('--fail', action='append', default=[],
                    help='answer COMMAND with an error')
    ap.add_argument('--source', default='none',
                    help="the kind of QEMU's own pressure source")
    ap.add_argument('--disabled', action='store_true',
                    help='automatic ballooning is off')
    args, _ = ap.parse_known_args(argv)
    auto = qemu_like_replies()['query-balloon-auto']
    auto['source']['kind'] = args.source
    auto['enabled'] = not args.disabled
    FakeMonitor(args.socket, mode=args.mode,
                fail={c: 'fake failure of ' + c for c in args.fail},
                replies={'query-balloon-auto': auto})
    while True:
        time.sleep(3600)


def fake_virsh(argv):
    with open(os.environ['FAKE_VIRSH']) as f:
        state = json.load(f)
    uri = None
    while argv and argv[0].startswith('-'):
        opt = argv.pop(0)
        if opt in ('-c', '--connect'):
            uri = argv.pop(0)
    command, args = argv[0], argv[1:]
    domains = state['domains']

    def log(domain):
        with open(state['log'], 'a') as f:
            f.write(json.dumps({'argv': sys.argv[2:], 'uri': uri,
                                'command': command, 'args': args,
                                'domain': domain and domain['uuid']}) + '\n')

    def fail(msg):
        log(None)
        sys.stderr.write('error: %s\n' % msg)
        return 1

    def lookup(text):
        # virsh: an ID first, then a UUID, then a name
        domains = [d for d in state['domains'] if not d.get('gone')]
        if text.isdigit():
            for d in domains:
                if d.get('id') == int(text):
                    return d
        for d in domains:
            if d['uuid'] == text.lower():
                return d
        for d in domains:
            if d['name'] == text:
                return d
        return None

    if state.get('uri') and uri != state['uri'] or state.get('down'):
        return fail('failed to connect to the hypervisor')
    if state.get('hang'):
        time.sleep(3600)
    if command == 'list':
        log(None)
        shown = domains if '--all' in args else [d for d in domains
                                                 if d.get('id')]
        for d in shown:
            if '--uuid' in args and '--name' in args:
                print('%-36s %-30s' % (d['uuid'], d['name']))
            elif '--uuid' in args:
                print(d['uuid'])
            elif '--name' in args:
                print(d['name'])
            else:
                print(' %s    %s    running' % (d.get('id') or '-',
                                                d['name']))
        return 0
    domain = lookup(args[0]) if args else None
    if domain is None:
        return fail("failed to get domain '%s'" % (args[0] if args else ''))
    log(domain)
    if command == 'domuuid':
        print(domain['uuid'])
    elif command == 'domname':
        print(domain['name'])
    elif command == 'domid':
        print(domain.get('id') or '-')
    elif command == 'qemu-monitor-command':
        from qemu_balloon_auto import qmp  # pylint: disable=C0415
        rest = args[1:]
        fd = None
        if rest[0] == '--pass-fds':
            fd = int(rest[1])
            rest = rest[2:]
        msg = json.loads(rest[0])
        with qmp.QmpClient(domain['qmp'], timeout=10) as mon:
            try:
                if fd is None:
                    ret = mon.command(msg['execute'],
                                      **msg.get('arguments', {}))
                else:
                    ret = mon.command_fd(msg['execute'], fd,
                                         **msg.get('arguments', {}))
                print(json.dumps({'return': ret, 'id': 'libvirt-1'}))
            except qmp.QmpError as e:
                print(json.dumps({'error': {'class': e.error_class,
                                            'desc': e.desc},
                                  'id': 'libvirt-1'}))
    else:
        return fail('unknown command: %s' % command)
    return 0


def install_virsh(bindir, state, state_path):
    """A 'virsh' in @bindir running fake_virsh on @state (written to
    @state_path); returns the environment to run programs with."""
    from qemu_balloon_auto import qmp  # pylint: disable=C0415
    scripts = os.path.dirname(os.path.dirname(os.path.abspath(qmp.__file__)))
    os.makedirs(bindir, exist_ok=True)
    with open(state_path, 'w') as f:
        json.dump(state, f)
    path = os.path.join(bindir, 'virsh')
    with open(path, 'w') as f:
        f.write('#!/bin/sh\nPYTHONPATH=%s exec %s %s virsh "$@"\n' % (
            scripts, sys.executable, os.path.abspath(__file__)))
    os.chmod(path, 0o755)
    return dict(os.environ, FAKE_VIRSH=state_path,
                PATH=bindir + os.pathsep + os.environ['PATH'])


def read_log(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


if __name__ == '__main__':
    if len(sys.argv) < 2 or sys.argv[1] not in ('qemu', 'virsh'):
        sys.exit('usage: fakes.py qemu|virsh ...')
    sys.exit({'qemu': fake_qemu, 'virsh': fake_virsh}[sys.argv[1]](
        sys.argv[2:]))
