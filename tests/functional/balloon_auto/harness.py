# SPDX-License-Identifier: GPL-2.0-or-later
"""
Functional-test harness of the automatic-balloon fork.

Runs QEMU (through upstream's in-tree qemu.machine.QEMUMachine) with the
bundled test guest inside fresh child cgroups with a memory limit, talks to
the guest's command loop on the serial console, and always removes its
cgroups and processes, also when a test fails.
"""

import os
import re
import signal
import subprocess
import threading
import time
import uuid

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
TREE = os.environ.get('QEMU_FORK_TREE', os.path.join(TOP, 'build', 'qemu'))

MiB = 1024 * 1024
V1_ROOT = '/sys/fs/cgroup/memory'
V2_ROOT = '/sys/fs/cgroup/unified'


def qemu_binary(tree=None):
    """The QEMU of @tree, else the one under test: QEMU_FORK_EMULATOR (an
    installed package's) or the fork's build."""
    if not tree and os.environ.get('QEMU_FORK_EMULATOR'):
        return os.environ['QEMU_FORK_EMULATOR']
    return os.path.join(tree or TREE, 'build', 'qemu-system-x86_64')


def guest_paths(kernel='stable'):
    """(kernel, initrd) of the bundled test guest, building it if needed;
    QEMU_FORK_GUEST=KERNEL:INITRD names them instead (where the guest
    cannot be built, e.g. in a root with only the packaged QEMU)."""
    if os.environ.get('QEMU_FORK_GUEST'):
        kernel_path, initrd = os.environ['QEMU_FORK_GUEST'].split(':')
        return kernel_path, initrd
    out = subprocess.run([os.path.join(TOP, 'scripts', 'fork',
                                       'build-test-guest.sh'),
                          '--kernel=' + kernel, '--print-paths'],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    vals = dict(line.split('=', 1) for line in out.splitlines() if '=' in line)
    return vals['KERNEL'], vals['INITRD']


def _own_v1_memcg():
    with open('/proc/self/cgroup') as f:
        for line in f:
            _, ctrl, path = line.rstrip('\n').split(':', 2)
            if 'memory' in ctrl.split(','):
                return V1_ROOT + path
    return V1_ROOT


def _write(path, value):
    with open(path, 'w') as f:
        f.write(str(value))


def _read(path):
    with open(path) as f:
        return f.read()


class Cgroup:
    """A child memory cgroup (v1 memcg for the limit) and a v2 cgroup (for
    PSI) holding the same processes."""

    def __init__(self, limit, name=None):
        self.name = name or 'qemu-balloon-auto-test-' + uuid.uuid4().hex[:8]
        self.v1 = os.path.join(_own_v1_memcg(), self.name)
        self.v2 = os.path.join(V2_ROOT, self.name)
        os.mkdir(self.v1)
        try:
            _write(os.path.join(self.v1, 'memory.limit_in_bytes'), limit)
            os.mkdir(self.v2)
        except BaseException:
            self.remove()
            raise
        self.limit = limit

    def wrapper(self, v2=None):
        """A command prefix that moves itself into both cgroups (or into
        @v2 instead of the v2 cgroup, e.g. a child of it), then execs the
        rest of the command line."""
        return ['sh', '-c',
                'echo $$ > "$0/cgroup.procs" && echo $$ > "$1/cgroup.procs"'
                ' && shift && exec "$@"', self.v1, v2 or self.v2]

    def usage(self):
        return int(_read(os.path.join(self.v1, 'memory.usage_in_bytes')))

    def oom_kills(self):
        for line in _read(os.path.join(self.v1,
                                       'memory.oom_control')).splitlines():
            key, val = line.split()
            if key == 'oom_kill':
                return int(val)
        return 0

    def pids(self):
        pids = set()
        for d in (self.v1, self.v2):
            try:
                pids |= {int(p) for p in _read(os.path.join(
                    d, 'cgroup.procs')).split()}
            except OSError:
                pass
        return pids

    def remove(self):
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        children = [os.path.join(top, d) for root in (self.v1, self.v2)
                    if os.path.isdir(root)
                    for top, dirs, _ in os.walk(root, topdown=False)
                    for d in dirs]
        for d in children + [self.v1, self.v2]:
            while os.path.isdir(d):
                try:
                    os.rmdir(d)
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class MemoryHog:
    """A host process that takes memory inside a cgroup: it allocates and
    touches @mib MiB in @step chunks, then holds it."""

    SCRIPT = ('import mmap, sys, time\n'
              'mib, step, delay = map(float, sys.argv[1:4])\n'
              'chunks = []\n'
              'done = 0\n'
              'while done < mib:\n'
              '    n = int(min(step, mib - done)) * 1048576\n'
              '    m = mmap.mmap(-1, n)\n'
              '    for i in range(0, n, 4096):\n'
              '        m[i] = 1\n'
              '    chunks.append(m)\n'
              '    done += n / 1048576\n'
              '    print("hog", int(done), flush=True)\n'
              '    time.sleep(delay)\n'
              'time.sleep(1e9)\n')

    def __init__(self, cgroup, mib, step=32, delay=0.05):
        self.proc = subprocess.Popen(
            cgroup.wrapper() + ['python3', '-c', self.SCRIPT, str(mib),
                                str(step), str(delay)],
            stdout=subprocess.PIPE, text=True)
        self.allocated = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith('hog '):
                self.allocated = int(line.split()[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class GuestConsole:
    """The bundled guest's command loop on the serial console: each command
    line is answered by its output and a line '@@DONE <rc>@@'."""

    READY = 'BGT-READY'
    DONE = re.compile(r'@@DONE (\d+)@@')

    def __init__(self, sock, log_path):
        self._sock = sock
        self._lines = []
        self._cond = threading.Condition()
        self._log = open(log_path, 'a', encoding='utf-8', errors='replace')
        self._closed = False
        self._thread = threading.Thread(target=self._reader, daemon=True)
        self._thread.start()

    def _reader(self):
        buf = b''
        while True:
            try:
                data = self._sock.recv(4096)
            except OSError:
                data = b''
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b'\n')
            with self._cond:
                for raw in lines:
                    line = raw.decode('utf-8', 'replace').rstrip('\r')
                    self._log.write(line + '\n')
                    self._lines.append(line)
                self._log.flush()
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait_for(self, pattern, timeout, start=0):
        """Index and match of the first line from @start matching @pattern."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            i = start
            while True:
                while i < len(self._lines):
                    m = rx.search(self._lines[i])
                    if m:
                        return i, m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise TimeoutError('no console line matching %r within'
                                       ' %ss (last: %r)' %
                                       (pattern, timeout, self._lines[-5:]))
                self._cond.wait(left)

    def mark(self):
        with self._cond:
            return len(self._lines)

    def run(self, command, timeout=120):
        """Run @command in the guest; return (exit code, output lines).
        Kernel messages are filtered out of the output."""
        start = self.mark()
        self._sock.sendall(command.encode() + b'\n')
        end, m = self.wait_for(self.DONE.pattern, timeout, start)
        with self._cond:
            out = [line for line in self._lines[start:end]
                   if not re.match(r'^\[\s*\d+\.\d+\]', line)]
        return int(m.group(1)), out

    def check(self, command, timeout=120):
        rc, out = self.run(command, timeout)
        if rc != 0:
            raise AssertionError('guest command %r failed (%d): %s' %
                                 (command, rc, out))
        return out

    def meminfo(self):
        vals = {}
        for line in self.check('bgt meminfo'):
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                vals[parts[0]] = int(parts[1]) * 1024
        return vals

    def close(self):
        self._log.close()


def decision_counts(info):
    """query-balloon-auto's decisions as {reason: count}."""
    return {d['reason']: d['count'] for d in info['decisions']}


def event_counts(info):
    """query-balloon-auto's host pressure events as {level: count}."""
    return {e['level']: e['events'] for e in info['events']}


def proc_rss(pid):
    """Resident set size of @pid in bytes."""
    for line in _read('/proc/%d/status' % pid).splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
    return 0


def wait_until(predicate, timeout, interval=0.5, what='condition'):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError('%s not reached within %ss' % (what, timeout))
        time.sleep(interval)


class TestVM:
    """A QEMU process booting the bundled guest, optionally in a cgroup."""

    def __init__(self, name, mem='1G', balloon='', cgroup=None,
                 kernel='stable', tree=None, args=(), workdir=None,
                 incoming=None, guest=None, append=''):
        """@guest: (kernel, initrd) instead of the bundled guest with
        @kernel; @append: more kernel command line."""
        import sys
        sys.path.insert(0, os.path.join(tree or TREE, 'python'))
        from qemu.machine import QEMUMachine  # pylint: disable=import-error

        self.name = name
        self.workdir = workdir or os.environ.get(
            'QEMU_FORK_TEST_DIR', os.path.join(TOP, 'build', 'tests'))
        os.makedirs(self.workdir, exist_ok=True)
        kernel_path, initrd = guest or guest_paths(kernel)
        self.machine = QEMUMachine(
            qemu_binary(tree), name=name,
            wrapper=cgroup.wrapper() if cgroup else (),
            base_temp_dir=self.workdir, log_dir=self.workdir)
        self.machine.set_machine('q35')
        self.machine.set_console()
        # -nodefaults: SeaBIOS otherwise waits ~30 s on q35's default
        # AHCI CD-ROM; the console is added explicitly by set_console().
        self.machine.add_args(
            '-nodefaults', '-m', mem, '-no-reboot', '-kernel', kernel_path,
            '-initrd', initrd,
            '-append', 'console=ttyS0 panic=-1 loglevel=4 ' + append,
            '-device', 'virtio-balloon-pci,id=balloon0' +
            (',' + balloon if balloon else ''), *args)
        # A migration destination: the guest is already booted.
        self.incoming = incoming
        if incoming:
            self.machine.add_args('-incoming', incoming)
        self.console = None

    def launch(self, boot_timeout=240):
        self.machine.launch()
        self.console = GuestConsole(
            self.machine.console_socket,
            os.path.join(self.workdir, self.name + '.console.log'))
        if not self.incoming:
            self.console.wait_for(GuestConsole.READY, boot_timeout)
        return self

    def migrate(self, uri, timeout=300):
        """Migrate to @uri; returns the final query-migrate answer
        (status 'completed' or 'failed')."""
        self.cmd('migrate', uri=uri)

        def finished():
            state = self.cmd('query-migrate')
            return state if state.get('status') in ('completed',
                                                    'failed') else None
        return wait_until(finished, timeout, interval=0.2,
                          what='end of migration')

    @property
    def pid(self):
        return self.machine.get_pid()

    def cmd(self, command, **args):
        return self.machine.cmd(command, **args)

    def balloon_actual(self):
        return self.cmd('query-balloon')['actual']

    def rss(self):
        return proc_rss(self.pid)

    def shutdown(self):
        if self.console:
            self.console.close()
        try:
            self.machine.shutdown(timeout=10)
        except Exception:  # pylint: disable=broad-except
            self.machine.kill()

    def __enter__(self):
        return self.launch()

    def __exit__(self, *exc):
        self.shutdown()


def main():
    """Run the calling module's tests, reporting TAP on stdout."""
    import unittest
    import pycotap
    unittest.main(module='__main__', testRunner=pycotap.TAPTestRunner(
        message_log=pycotap.LogMode.LogToError,
        test_output_log=pycotap.LogMode.LogToError))
