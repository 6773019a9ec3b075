# SPDX-License-Identifier: GPL-2.0-or-later
"""
QEMU booting the bundled test guest (TestVM, through upstream's in-tree
qemu.machine.QEMUMachine) and the guest's command loop on the serial
console (GuestConsole).

TOP is the checkout; TREE the assembled QEMU tree under test
($QEMU_FORK_TREE, default TOP/build/qemu); QEMU_FORK_EMULATOR names an
installed emulator instead, QEMU_FORK_GUEST=KERNEL:INITRD a guest that
cannot be built here, QEMU_FORK_TEST_DIR the directory for sockets and
console logs (default TOP/build/tests).
"""

import functools
import os
import re
import subprocess
import sys
import threading
import time

from qemu_balloon_auto.testing import proc_rss, wait_until

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..',
                                   '..'))
TREE = os.environ.get('QEMU_FORK_TREE', os.path.join(TOP, 'build', 'qemu'))


def work_dir():
    """The directory for the tests' sockets, disks and console logs,
    made if needed: QEMU_FORK_TEST_DIR, default TOP/build/tests."""
    path = os.environ.get('QEMU_FORK_TEST_DIR',
                          os.path.join(TOP, 'build', 'tests'))
    os.makedirs(path, exist_ok=True)
    return path


def qemu_binary(tree=None):
    """The QEMU of @tree, else the one under test: QEMU_FORK_EMULATOR (an
    installed package's) or the fork's build."""
    if not tree and os.environ.get('QEMU_FORK_EMULATOR'):
        return os.environ['QEMU_FORK_EMULATOR']
    return os.path.join(tree or TREE, 'build', 'qemu-system-x86_64')


@functools.lru_cache(maxsize=None)
def _cache_root():
    """scripts/fork/common.sh defines where the cache is; asked from there
    once per process, so that the shell scripts and Python agree."""
    return subprocess.run(['sh', '-c', '. "$1" && cache_dir', 'sh',
                           os.path.join(TOP, 'scripts', 'fork', 'common.sh')],
                          check=True, stdout=subprocess.PIPE,
                          text=True).stdout.strip()


def cache_dir(*parts):
    """The fork's cache (guests, Debian roots, fuzz corpora), joined with
    @parts."""
    return os.path.join(_cache_root(), *parts)


@functools.lru_cache(maxsize=None)
def guest_paths(kernel='stable'):
    """(kernel, initrd) of the bundled test guest, building it if needed;
    QEMU_FORK_GUEST=KERNEL:INITRD names them instead (where the guest
    cannot be built, e.g. in a root with only the packaged QEMU).  Asked
    once per process: even when the guest is up to date, finding that
    out asks apt, about 2.5 s, and a test starts many VMs."""
    if os.environ.get('QEMU_FORK_GUEST'):
        kernel_path, initrd = os.environ['QEMU_FORK_GUEST'].split(':')
        return kernel_path, initrd
    out = subprocess.run([os.path.join(TOP, 'scripts', 'fork',
                                       'build-test-guest.sh'),
                          '--kernel=' + kernel, '--print-paths'],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    vals = dict(line.split('=', 1) for line in out.splitlines() if '=' in line)
    return vals['KERNEL'], vals['INITRD']


def guest_args(mem, kernel, initrd, append='', balloon=''):
    """The guest's -nodefaults machine with @mem of RAM, booting @kernel
    and @initrd (more kernel command line: @append), and its balloon
    device (options: @balloon): one definition for TestVM and for the
    nested QEMU that restores a guest TestVM booted (a migration stream
    loads only into the same devices).  -nodefaults: SeaBIOS otherwise
    waits ~30 s on q35's default AHCI CD-ROM."""
    return ['-nodefaults', '-m', mem, '-kernel', kernel, '-initrd', initrd,
            '-append', 'console=ttyS0 panic=-1 loglevel=4 ' + append,
            '-device', 'virtio-balloon-pci,id=balloon0' +
            (',' + balloon if balloon else '')]


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

    def since(self, mark):
        """The lines from @mark (see mark()) on."""
        with self._cond:
            return list(self._lines[mark:])

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

    def vmstat(self, *keys, timeout=60):
        """The guest's /proc/vmstat @keys that it has, as integers."""
        vals = {}
        for line in self.check('bgt vmstat ' + ' '.join(keys), timeout):
            parts = line.split()
            if len(parts) == 2 and parts[0] in keys and parts[1].isdigit():
                vals[parts[0]] = int(parts[1])
        return vals

    def close(self):
        self._log.close()


class TestVM:
    """A QEMU process booting the bundled guest, optionally in a cgroup."""

    def __init__(self, name, mem='1G', balloon='', cgroup=None,
                 kernel='stable', tree=None, args=(), workdir=None,
                 incoming=None, guest=None, append=''):
        """@guest: (kernel, initrd) instead of the bundled guest with
        @kernel; @append: more kernel command line."""
        # upstream's Python package of the tree under test
        sys.path.insert(0, os.path.join(tree or TREE, 'python'))
        from qemu.machine import QEMUMachine  # pylint: disable=import-error

        self.name = name
        self.workdir = workdir or work_dir()
        os.makedirs(self.workdir, exist_ok=True)
        kernel_path, initrd = guest or guest_paths(kernel)
        self.machine = QEMUMachine(
            qemu_binary(tree), name=name,
            wrapper=cgroup.wrapper() if cgroup else (),
            base_temp_dir=self.workdir, log_dir=self.workdir)
        self.machine.set_machine('q35')
        self.machine.set_console()
        # the console is added by set_console()
        self.machine.add_args(
            *guest_args(mem, kernel_path, initrd, append, balloon),
            '-no-reboot', *args)
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

    def event_wait(self, name, timeout):
        """The next event @name; TimeoutError after @timeout seconds.
        (qemu.qmp's legacy client takes only a float for a timeout: given
        an int, it waits for ever.)"""
        return self.machine.event_wait(name, timeout=float(timeout))

    def balloon_actual(self):
        return self.cmd('query-balloon')['actual']

    def wait_guest_stats(self, timeout=30):
        """Wait until the automatic balloon has guest statistics."""
        wait_until(lambda: 'guest-stats' in self.cmd('query-balloon-auto'),
                   timeout, what='guest statistics')

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
