# SPDX-License-Identifier: GPL-2.0-or-later
"""
Synchronous QMP clients with bounded waits.

QmpClient talks to a QMP unix socket (a monitor QEMU serves with e.g.
-qmp unix:/run/vm1.qmp,server=on,wait=off); LibvirtMonitor reaches a
libvirt domain's monitor through 'virsh qemu-monitor-command'.  Both have
the same interface:

    with QmpClient('/run/vm1.qmp') as qmp:
        size = qmp.command('query-balloon')['actual']
        qmp.command_fd('getfd', fd, fdname='pressure-low')

command() returns the reply's 'return' value or raises QmpError (the
error's class and desc); a monitor that cannot be talked to raises
MonitorError, and MonitorTimeout when it does not answer in time.  No
wait is unbounded: connecting, the greeting and every reply have a
deadline of @timeout seconds (a peer that trickles bytes or events does
not extend it), and virsh runs with a timeout.  Asynchronous events are
skipped, or kept in .events with keep_events=True.
"""

import collections
import json
import socket
import struct
import subprocess
import time

DEFAULT_TIMEOUT = 10.0
# A line longer than this is no QMP reply we asked for
MAX_LINE = 16 * 1024 * 1024

Credentials = collections.namedtuple('Credentials', 'pid uid gid')


class QmpError(Exception):
    """QEMU answered @command with an error; str() is its description."""

    def __init__(self, command, error):
        self.command = command
        self.error_class = error.get('class', '')
        self.desc = error.get('desc', '')
        super().__init__(self.desc or self.error_class or str(error))


class MonitorError(Exception):
    """The monitor cannot be talked to (connection refused or closed, no
    QMP greeting, a reply that is not QMP, virsh failed)."""


class MonitorTimeout(MonitorError):
    """The monitor did not answer within the timeout."""


def _message(name, args):
    msg = {'execute': name}
    if args:
        msg['arguments'] = args
    return msg


class QmpClient:
    """A QMP unix socket.  connect() (or 'with', or the first command)
    connects, checks the greeting and negotiates capabilities."""

    def __init__(self, path, timeout=DEFAULT_TIMEOUT, keep_events=False,
                 label=None):
        self.path = path
        self.label = label or path
        self.timeout = timeout
        self.keep_events = keep_events
        self.events = []
        self.greeting = None
        self._sock = None
        self._buf = b''

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()

    def connect(self):
        if self._sock:
            return self
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._buf = b''
        try:
            self._sock.settimeout(self.timeout)
            try:
                self._sock.connect(self.path)
            except socket.timeout as e:
                raise MonitorTimeout('%s: connect timed out after %g s' %
                                     (self.label, self.timeout)) from e
            except OSError as e:
                raise MonitorError('%s: %s' % (self.label,
                                               e.strerror or e)) from e
            greeting = self._read(time.monotonic() + self.timeout,
                                  'no QMP greeting within %g s (another'
                                  ' client holds the monitor?)' %
                                  self.timeout)
            if not isinstance(greeting.get('QMP'), dict):
                raise MonitorError('%s: not a QMP monitor (greeting %.80s)' %
                                   (self.label, json.dumps(greeting)))
            self.greeting = greeting['QMP']
            self._execute('qmp_capabilities', {}, None)
        except BaseException:
            self.close()
            raise
        return self

    def close(self):
        if self._sock:
            self._sock.close()
            self._sock = None

    def peer_credentials(self):
        """Credentials(pid, uid, gid) of the process that listens on the
        socket (SO_PEERCRED: taken when it called listen())."""
        self.connect()
        raw = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize('3i'))
        return Credentials(*struct.unpack('3i', raw))

    def command(self, name, **args):
        """The 'return' value of command @name with arguments @args."""
        self.connect()
        return self._execute(name, args, None)

    def command_fd(self, name, fd, **args):
        """command(), sending descriptor @fd along (SCM_RIGHTS), as getfd
        and add-fd want it."""
        self.connect()
        return self._execute(name, args, fd)

    def pop_events(self):
        """The events kept so far (keep_events=True), oldest first."""
        events, self.events = self.events, []
        return events

    def _execute(self, name, args, fd):
        data = json.dumps(_message(name, args)).encode() + b'\n'
        deadline = time.monotonic() + self.timeout
        try:
            self._sock.settimeout(self.timeout)
            try:
                if fd is not None:
                    sent = socket.send_fds(self._sock, [data], [fd])
                    data = data[sent:]
                if data:
                    self._sock.sendall(data)
            except socket.timeout as e:
                raise MonitorTimeout('%s: cannot send %s within %g s' %
                                     (self.label, name, self.timeout)) from e
            except OSError as e:
                raise MonitorError('%s: %s' % (self.label,
                                               e.strerror or e)) from e
            while True:
                reply = self._read(deadline, 'no reply to %s within %g s' %
                                   (name, self.timeout))
                if 'return' in reply:
                    return reply['return']
                if 'error' in reply:
                    raise QmpError(name, reply['error'])
                if 'event' in reply:
                    if self.keep_events:
                        self.events.append(reply)
                    continue
                raise MonitorError('%s: unexpected message %.80s' %
                                   (self.label, json.dumps(reply)))
        except MonitorError:
            # what comes late would be taken for the next command's reply
            self.close()
            raise

    def _read(self, deadline, waiting_for):
        """The next JSON message, waiting until @deadline at most."""
        while b'\n' not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise MonitorTimeout('%s: %s' % (self.label, waiting_for))
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except socket.timeout as e:
                raise MonitorTimeout('%s: %s' % (self.label,
                                                 waiting_for)) from e
            except OSError as e:
                raise MonitorError('%s: %s' % (self.label,
                                               e.strerror or e)) from e
            if not data:
                raise MonitorError('%s: the monitor closed the connection' %
                                   self.label)
            self._buf += data
            if len(self._buf) > MAX_LINE:
                raise MonitorError('%s: a line longer than %d bytes' %
                                   (self.label, MAX_LINE))
        line, self._buf = self._buf.split(b'\n', 1)
        try:
            msg = json.loads(line)
        except ValueError as e:
            raise MonitorError('%s: not JSON: %.80r' % (self.label,
                                                        line)) from e
        if not isinstance(msg, dict):
            raise MonitorError('%s: not a QMP message: %.80r' % (self.label,
                                                                 line))
        return msg


def virsh(uri, *args, timeout=DEFAULT_TIMEOUT, pass_fds=()):
    """Run 'virsh [-c @uri] @args'; its output, or MonitorError with what
    virsh said (MonitorTimeout when it ran longer than @timeout)."""
    argv = ['virsh', '-q'] + (['-c', uri] if uri else []) + list(args)
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=timeout, pass_fds=pass_fds,
                              check=False)
    except subprocess.TimeoutExpired as e:
        raise MonitorTimeout('virsh %s: no answer within %g s' %
                             (args[0], timeout)) from e
    except OSError as e:
        raise MonitorError('virsh: %s' % (e.strerror or e)) from e
    if proc.returncode != 0:
        raise MonitorError('virsh %s: %s' % (
            args[0], proc.stderr.strip() or 'exit %d' % proc.returncode))
    return proc.stdout


class LibvirtMonitor:
    """A libvirt domain's monitor through 'virsh [-c URI]
    qemu-monitor-command' (libvirt marks such domains as tainted by custom
    monitor commands), with QmpClient's interface.  @domain is what virsh
    takes: an ID, a UUID or a name, tried in that order."""

    def __init__(self, domain, uri=None, timeout=DEFAULT_TIMEOUT,
                 label=None):
        self.domain = domain
        self.uri = uri
        self.label = label or domain
        self.timeout = timeout
        self.events = []        # virsh hands over no events

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()

    def connect(self):
        return self

    def close(self):
        pass

    def command(self, name, **args):
        return self._execute(name, args, None)

    def command_fd(self, name, fd, **args):
        return self._execute(name, args, fd)

    def pop_events(self):
        return []

    def _execute(self, name, args, fd):
        extra = ['--pass-fds', str(fd)] if fd is not None else []
        try:
            out = virsh(self.uri, 'qemu-monitor-command', self.domain,
                        *extra, json.dumps(_message(name, args)),
                        timeout=self.timeout,
                        pass_fds=(fd,) if fd is not None else ())
        except MonitorError as e:
            raise type(e)('%s: %s' % (self.label, e)) from e
        try:
            reply = json.loads(out)
        except ValueError as e:
            raise MonitorError('%s: virsh said %.80r' % (self.label,
                                                         out)) from e
        if isinstance(reply, dict) and 'error' in reply:
            raise QmpError(name, reply['error'])
        if not isinstance(reply, dict) or 'return' not in reply:
            raise MonitorError('%s: unexpected reply %.80s' % (
                self.label, json.dumps(reply)))
        return reply['return']
