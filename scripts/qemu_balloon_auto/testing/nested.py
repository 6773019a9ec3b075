# SPDX-License-Identifier: GPL-2.0-or-later
"""
A host inside a test guest: the bundled 6.12 guest booted as a host of its
own (scripts/fork/build-v2-host.sh: the fork's build on a read-only disk,
the stable test guest to run nested, Python and the management helper),
with the memory controller on cgroup v2 (or, with v1=True, the stable 6.1
guest with the memory controller on a v1 hierarchy next to v2: a hybrid
host; the 6.12 kernel has no v1 memory controller).  The machines here
bind the memory controller to cgroup v1 and must never run out of memory
themselves, so scenarios without a cgroup limit, where the host's own RAM
is the limit, run only in such a host.

NestedHost runs shell commands on its console, starts the fork there
with a nested guest (TCG inside TCG) in a cgroup of its own, talks QMP to
it and to the nested guest's console through bgt, and runs host
processes that allocate memory.  The nested guest boots in this machine
and the fork in the host restores it (booted_guest()).
"""

import base64
import contextlib
import functools
import gzip
import json
import os
import re
import shlex
import shutil
import subprocess

from qemu_balloon_auto import MiB
from qemu_balloon_auto.testing import wait_until
from qemu_balloon_auto.testing.guest import TOP, TREE, TestVM, guest_args

CG = '/sys/fs/cgroup'


@functools.lru_cache(maxsize=None)
def v2host_paths(tree=None):
    """What build-v2-host.sh prints for the build of @tree (default
    TREE), as a dict."""
    build = os.path.join(tree or TREE, 'build')
    out = subprocess.run([os.path.join(TOP, 'scripts', 'fork',
                                       'build-v2-host.sh'), build,
                          '--print-paths'], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return dict(line.split('=', 1) for line in out.splitlines() if '=' in line)


def host_paths(v1=False, tree=None):
    """(kernel, initrd, kernel command line extras, image of the fork) of
    the v2 host with the build of @tree (default TREE), or with @v1 of the
    same host on the stable kernel, whose memory controller can be on
    cgroup v1."""
    vals = v2host_paths(tree)
    if v1:
        return (vals['V1_KERNEL'], vals['V1_INITRD'], 'psi=1',
                vals['FORK_IMAGE'])
    return (vals['KERNEL'], vals['INITRD'], vals['V2_APPEND'],
            vals['FORK_IMAGE'])


# The balloon's options that change what its driver negotiates at boot:
# a booted guest restored into a device without them would not use them.
FEATURES = ('deflate-on-oom', 'free-page-hint', 'free-page-reporting',
            'page-poison')
# Room for booted guests on the host's disk of them (about 75 MiB each)
GUESTS_DISK = 1024 * MiB
GUESTS_SERIAL = 'booted-guests'


def guest_disk_args(disk_mib):
    """The nested guest's disk of @disk_mib MiB of zeroes (none if 0), the
    same where it boots and where it is restored."""
    if not disk_mib:
        return []
    return ['-blockdev', 'driver=null-co,node-name=d0,size=%d,'
            'read-zeroes=on' % (disk_mib * MiB),
            '-device', 'virtio-blk-pci,drive=d0']


def features_of(balloon):
    """The options of the balloon device's @balloon string in FEATURES."""
    return ','.join(opt for opt in balloon.split(',')
                    if opt.split('=', 1)[0] in FEATURES)


@functools.lru_cache(maxsize=None)
def booted_guest(mem, features, disk_mib, tree, workdir):
    """A migration stream of the nested guest (@mem of RAM, the balloon
    with @features, a disk of @disk_mib MiB) booted in this machine under
    TCG until its console answers, with the build of @tree and the same
    firmware as in the host: a nested QEMU restores it in seconds, where
    its boot under TCG inside TCG takes a minute or two.  That QEMU holds
    less than one that booted the guest (measured after the guest used
    and freed 300 MiB: 462 against 566 MiB), almost all of it TCG's
    translations of the boot's code: the guest's RAM differs by 20 MiB."""
    vals = v2host_paths(tree)
    name = 'nested-%s-%s-%d' % (mem, features.replace(',', '-') or 'plain',
                                disk_mib)
    path = os.path.join(workdir, name + '.mig')
    vm = TestVM(name, mem=mem, balloon=features, tree=tree, workdir=workdir,
                guest=(vals['NESTED_KERNEL'], vals['NESTED_INITRD']),
                args=['-accel', 'tcg', '-L', vals['FIRMWARE']] +
                guest_disk_args(disk_mib))
    try:
        vm.launch()
        state = vm.migrate('file:' + path)
    finally:
        vm.shutdown()
    if state['status'] != 'completed':
        raise AssertionError('saving the booted nested guest: %s' % state)
    return path


class NestedHost:
    """The host guest with @mem of RAM: a cgroup v2 host, or with @v1 a
    hybrid one (memory controller on v1, mounted at CG/memory, v2 at
    CG/unified); the fork in it is @tree's build (default TREE's)."""

    def __init__(self, name, mem='3G', v1=False, workdir=None, tree=None):
        kernel, initrd, append, image = host_paths(v1, tree)
        self.v1 = v1
        self.tree = tree
        self.vm = TestVM(name, mem=mem, guest=(kernel, initrd),
                         append=append, workdir=workdir, args=(
                             '-smp', '2', '-blockdev',
                             'driver=file,filename=%s,node-name=fork,'
                             'read-only=on' % image,
                             '-device', 'virtio-blk-pci,drive=fork'))
        # Booted nested guests, written here as tests ask for them and
        # read by the host as a disk (QEMU reads a raw file as it is).
        self.guests_disk = os.path.join(self.vm.workdir, name + '-guests')
        with open(self.guests_disk, 'wb') as f:
            f.truncate(GUESTS_DISK)
        self.vm.machine.add_args(
            '-blockdev', 'driver=file,filename=%s,node-name=guests,'
            'read-only=on' % self.guests_disk,
            '-device', 'virtio-blk-pci,drive=guests,serial=' + GUESTS_SERIAL)
        self.guests = {}
        self.guests_dev = None
        self.console = None

    def launch(self):
        self.vm.launch(boot_timeout=600)
        self.console = self.vm.console
        self.sh('mount -t squashfs -o ro /dev/vda /opt/fork')
        dev = self.sh('grep -l %s /sys/block/vd*/serial' % GUESTS_SERIAL)
        self.guests_dev = '/dev/' + dev[-1].split('/')[3]
        # readable by an unprivileged QEMU too
        self.sh('chmod 444 ' + self.guests_dev)
        if self.v1:
            self.sh('mount -t tmpfs none %s && mkdir %s/memory %s/unified && '
                    'mount -t cgroup -o memory none %s/memory && '
                    'mount -t cgroup2 none %s/unified' % ((CG,) * 5))
        else:
            self.sh('mount -t cgroup2 none %s && echo +memory > '
                    '%s/cgroup.subtree_control' % (CG, CG))
        return self

    def shutdown(self):
        self.vm.shutdown()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.guests_disk)

    def sh(self, cmd, timeout=120):
        return self.console.check(cmd, timeout)

    def read(self, path):
        return '\n'.join(self.sh('cat ' + shlex.quote(path)))

    def keyed(self, path):
        """A file of 'key value' lines (memory.events, /proc/vmstat) or
        'Key: value kB' lines (/proc/meminfo, in bytes) as a dict."""
        vals = {}
        for line in self.sh('cat ' + shlex.quote(path)):
            f = line.replace(':', ' ').split()
            if len(f) >= 2 and f[1].isdigit():
                vals[f[0]] = int(f[1]) * (1024 if f[2:3] == ['kB'] else 1)
        return vals

    def oom_kills(self):
        return self.keyed('/proc/vmstat')['oom_kill']

    def mem_available(self):
        return self.keyed('/proc/meminfo')['MemAvailable']

    def available_after_reclaim(self):
        """MemAvailable once the kernel has freed what it frees only
        under pressure.  A page the balloon takes out of a transparent
        huge page leaves the rest of it mapped, and the page itself stays
        allocated, counted nowhere, until the deferred-split shrinker
        splits the huge page (a run here had 24 MiB of them): a need
        measured against MemAvailable alone fits partly without any
        ballooning.  Dropping the caches runs the shrinkers."""
        self.sh('echo 3 > /proc/sys/vm/drop_caches')
        return self.mem_available()

    def rss(self, pid):
        """Resident set size of the host's process @pid in bytes."""
        return self.keyed('/proc/%d/status' % pid)['VmRSS']

    def qmp(self, sock, command, **arguments):
        msg = {'execute': command}
        if arguments:
            msg['arguments'] = arguments
        out = self.sh('bgt qmp %s %s' % (sock, shlex.quote(json.dumps(msg))))
        reply = json.loads(out[-1])
        if 'error' in reply:
            raise AssertionError('%s: %s' % (command, reply['error']))
        return reply['return']

    def nested(self, sock, line, timeout=300):
        """Run @line in a nested guest; (rc, output)."""
        return self.console.run('bgt console %s %s %d' % (
            sock, shlex.quote(line), timeout), timeout + 60)

    def pid_of(self, name):
        out = self.sh('pidof %s || true' % name)
        return int(out[0].split()[0]) if out and out[0].strip() else None

    def alive(self, pid):
        state = self.sh('grep -s State: /proc/%d/status || true' % pid)
        return bool(state) and not re.match(r'State:\s+Z', state[-1])

    def mkcgroup(self, path, threaded_child=None):
        """Make the v2 cgroup @path (under CG) with the memory controller
        on the way down; with @threaded_child, a threaded child of it."""
        parts = path.strip('/').split('/')
        for i in range(len(parts)):
            d = '%s/%s' % (CG, '/'.join(parts[:i + 1]))
            self.sh('mkdir -p %s' % d)
            if i < len(parts) - 1 or threaded_child:
                self.sh('echo +memory > %s/cgroup.subtree_control' % d)
        if threaded_child:
            self.sh('mkdir %s/%s/%s && echo threaded > %s/%s/%s/cgroup.type'
                    % (CG, path, threaded_child, CG, path, threaded_child))

    def rmcgroups(self, *paths):
        """Remove the v2 cgroups @paths (deepest first), waiting for their
        processes to go."""
        for path in paths:
            self.sh('d=%s/%s; while [ -d $d ] && ! rmdir $d 2>/dev/null; do '
                    'sleep 0.2; done' % (CG, path), 60)

    def push(self, data, path, mode=0o644, chunk=1800):
        """Write @data (bytes) to @path in the host, over the console
        (gzip and base64 in lines the console takes)."""
        text = base64.b64encode(gzip.compress(data, mtime=0)).decode()
        tmp = shlex.quote(path + '.b64')
        self.sh('mkdir -p %s && : > %s' % (
            shlex.quote(os.path.dirname(path) or '.'), tmp))
        for i in range(0, len(text), chunk):
            self.sh('echo %s >> %s' % (text[i:i + chunk], tmp))
        self.sh('base64 -d %s | gunzip > %s && rm %s && chmod %o %s' % (
            tmp, shlex.quote(path), tmp, mode, shlex.quote(path)))

    def booted(self, mem, balloon, disk_mib):
        """The offset on the host's disk of booted guests of the nested
        guest (@mem, the balloon's FEATURES in @balloon, @disk_mib)
        booted in this machine, written there the first time."""
        key = (mem, features_of(balloon), disk_mib)
        if key not in self.guests:
            path = booted_guest(*key, self.tree, self.vm.workdir)
            offset = max([0] + [end for _, end in self.guests.values()])
            end = offset + (os.path.getsize(path) + MiB - 1) // MiB * MiB
            if end > GUESTS_DISK:
                raise AssertionError('no room for another booted guest')
            with open(path, 'rb') as src, \
                    open(self.guests_disk, 'r+b') as dst:
                dst.seek(offset)
                shutil.copyfileobj(src, dst)
            self.guests[key] = (offset, end)
        return self.guests[key][0]

    def start_qemu(self, name, cgroup, balloon, mem='512M', user=None,
                   threads=None, disk_mib=0, args='', guest=True):
        """The fork with the nested guest, in the cgroup @cgroup (a
        directory under CG; its threads in the threaded child @threads,
        as libvirt puts them), as @user (a uid) if given, with a disk of
        @disk_mib MiB of zeroes that take no host memory (/dev/vda in the
        guest) if given and more QEMU arguments @args (a string for the
        host's shell); returns (qmp socket, console socket, pid) once
        the nested guest answers, or with @guest False once QMP does (a
        test of the device alone need not wait for the guest, and guests
        started side by side take little longer than one: wait_guest()).

        The guest is not booted there: booting under TCG inside TCG takes
        a minute or two.  It is booted in this machine, with the same
        machine type and devices (booted_guest()), and the nested QEMU
        restores it from the migration stream, so the device starts as on
        a migration's destination."""
        qmp, con = '/tmp/%s.qmp' % name, '/tmp/%s.con' % name
        offset = self.booted(mem, balloon, disk_mib)
        # the host's cache of the disk may hold what was there before
        self.sh('blockdev --flushbufs ' + self.guests_dev)
        qemu = shlex.join(
            ['/opt/qemu/bin/qemu-system-x86_64', '-L', '/opt/fork/share',
             '-accel', 'tcg', '-M', 'q35', '-display', 'none',
             '-chardev', 'socket,id=con,path=%s,server=on,wait=off' % con,
             '-serial', 'chardev:con',
             '-qmp', 'unix:%s,server=on,wait=off' % qmp] +
            guest_args(mem, '/opt/nested/vmlinux', '/opt/nested/initrd.img',
                       balloon=balloon) +
            guest_disk_args(disk_mib) +
            ['-incoming', 'file:%s,offset=%d' % (self.guests_dev, offset),
             '-msg', 'timestamp=on',
             '-trace', 'enable=virtio_balloon_auto_*'])
        if args:
            qemu += ' ' + args
        if user is not None:
            qemu = 'bgt as %d %s' % (user, qemu)
        move = 'echo $$ > %s/%s/cgroup.procs' % (CG, cgroup)
        if threads:
            move += ' && echo $$ > %s/%s/%s/cgroup.threads' % (CG, cgroup,
                                                             threads)
        # the shell's pid is QEMU's once it execs (bgt as execs too)
        pid = int(self.sh('sh -c %s > /tmp/%s.log 2>&1 & echo $!' % (
            shlex.quote('%s && exec %s' % (move, qemu)), name))[-1])

        def restored():
            self.check_running(name, pid)
            out = self.sh('bgt qmp %s \'{"execute": "query-status"}\' '
                          '2>/dev/null || true' % qmp)
            try:
                return json.loads(out[-1])['return']['status'] == 'running'
            except (IndexError, KeyError, ValueError):
                return False
        wait_until(restored, 300, interval=1, what='the nested guest restored')
        # what the restore read is no page cache of the VM's cgroup
        self.sh('blockdev --flushbufs ' + self.guests_dev)
        if guest:
            self.wait_guest(name, con, pid)
        return qmp, con, pid

    def check_running(self, name, pid):
        """AssertionError with its log if the QEMU @pid of
        start_qemu(@name) has exited."""
        if not self.alive(pid):
            raise AssertionError('the nested QEMU exited: %s' %
                                 self.read('/tmp/%s.log' % name))

    def wait_guest(self, name, con, pid):
        """Until the nested guest of start_qemu(@name) answers on @con."""
        def up():
            if self.nested(con, 'true', 10)[0] == 0:
                return True
            self.check_running(name, pid)
            return False

        wait_until(up, 600, interval=2, what='the nested guest')

    def hog(self, cgroup, mib, step=20, delay_ms=1000, hold=3600,
            name='hog'):
        """A host process in the v2 cgroup @cgroup taking @mib MiB in @step
        MiB chunks every @delay_ms (0: as fast as it can); returns (pid,
        log file)."""
        log = '/tmp/%s.log' % name
        pid = int(self.sh("sh -c 'echo $$ > %s/%s/cgroup.procs && exec bgt "
                          "alloc %d --step %d --delay-ms %d --hold %d' > %s "
                          "2>&1 & echo $!" % (CG, cgroup, mib, step, delay_ms,
                                              hold, log))[-1])
        return pid, log

    def hog_done(self, log):
        return any('alloc ok' in line for line in self.sh('cat %s' % log))

    def kill(self, *pids):
        self.sh('kill -9 %s 2>/dev/null; true' % ' '.join(
            str(p) for p in pids if p))

    def wait_gone(self, pid, timeout=60):
        wait_until(lambda: not self.alive(pid), timeout, interval=1,
                   what='process %d gone' % pid)


def mib(nbytes):
    return nbytes // MiB
