#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Automatic ballooning through a real libvirtd (Debian 12's libvirt 9.0): the
balloon is turned on and tuned in the domain XML with <qemu:override>, the
domain runs in a memory-limited cgroup partition under real host pressure,
and libvirt's own view (dommemstat, dominfo, setmem, save/restore) follows.

libvirtd and virtlogd run privately: in a mount namespace of their own
where /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and
/var/cache/libvirt are this test's directories, so a system libvirtd is
not disturbed; virsh reaches the private daemon through its socket.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import harness
from harness import MiB

sys.path.insert(0, os.path.join(harness.TOP, 'scripts'))
import balloon_auto_top  # noqa: E402  pylint: disable=wrong-import-position

KiB = 1024
DOMAIN = 'balloon-auto'
# one partition per test run; without systemd libvirt names a partition's
# directory <name>.partition
PARTITION = '/machine/balloon-auto-test-%d' % os.getpid()
PARTITION_DIR = os.path.join(harness.V1_ROOT, PARTITION.lstrip('/') +
                             '.partition')
LIMIT = 1400 * MiB
SOFT_LIMIT = 320 * MiB
SETMEM = 900 * MiB

LIBVIRT_DIRS = {'etc': '/etc/libvirt', 'run': '/run/libvirt',
                'lib': '/var/lib/libvirt', 'log': '/var/log/libvirt',
                'cache': '/var/cache/libvirt'}

LIBVIRTD_CONF = '''\
auth_unix_rw = "none"
auth_unix_ro = "none"
unix_sock_rw_perms = "0700"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
'''
VIRTLOGD_CONF = '''\
log_outputs = "3:file:/var/log/libvirt/virtlogd.log"
'''
QEMU_CONF = '''\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
'''
# Runs in the new mount namespace: the test's directories over libvirt's.
START = '''\
set -e
for d in etc:/etc/libvirt run:/run/libvirt lib:/var/lib/libvirt \
         log:/var/log/libvirt cache:/var/cache/libvirt; do
    mount --bind "$0/${d%%:*}" "${d#*:}"
done
virtlogd -f /etc/libvirt/virtlogd.conf -p /run/libvirt/virtlogd.pid &
exec libvirtd -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid
'''

DOMAIN_XML = '''\
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <memory unit='MiB'>1024</memory>
  <currentMemory unit='MiB'>1024</currentMemory>
  <memtune>
    <soft_limit unit='KiB'>{soft_limit_kib}</soft_limit>
  </memtune>
  <vcpu>1</vcpu>
  <resource><partition>{partition}</partition></resource>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1 loglevel=4</cmdline>
  </os>
  <features><acpi/></features>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{emulator}</emulator>
    <controller type='usb' model='none'/>
    <serial type='unix'>
      <source mode='bind' path='{console}'/>
      <target port='0'/>
    </serial>
    <memballoon model='virtio' autodeflate='on'>
      <alias name='balloon0'/>
      <stats period='2'/>
    </memballoon>
  </devices>
  <qemu:override>
    <qemu:device alias='balloon0'>
      <qemu:frontend>
        <qemu:property name='automatic' type='bool' value='true'/>
        <qemu:property name='pressure-source' type='string' value='cgroup-v1'/>
        <qemu:property name='pressure-cgroup' type='string'
                       value='{pressure_cgroup}'/>
        <qemu:property name='inflate-medium' type='unsigned' value='20'/>
        <qemu:property name='auto-calm-time-ms' type='unsigned'
                       value='600000'/>
      </qemu:frontend>
    </qemu:device>
  </qemu:override>
</domain>
'''


class PrivateLibvirtd:
    """libvirtd and virtlogd with the test's own configuration and state."""

    def __init__(self, root):
        self.root = root
        for sub in LIBVIRT_DIRS:
            os.makedirs(os.path.join(root, sub))
        for name, text in (('libvirtd.conf', LIBVIRTD_CONF),
                           ('virtlogd.conf', VIRTLOGD_CONF),
                           ('qemu.conf', QEMU_CONF)):
            with open(os.path.join(root, 'etc', name), 'w') as f:
                f.write(text)
        # bind-mount targets; made here only if missing, removed at stop
        self.made = [d for d in LIBVIRT_DIRS.values() if not os.path.isdir(d)]
        for d in self.made:
            os.mkdir(d)
        self.uri = 'qemu:///system?socket=%s' % self.path('run',
                                                          'libvirt-sock')
        with open(self.path('daemons.out'), 'w') as out:
            self.proc = subprocess.Popen(
                ['unshare', '--mount', '--propagation', 'private',
                 'sh', '-c', START, root],
                stdout=out, stderr=subprocess.STDOUT)
        try:
            harness.wait_until(lambda: self.proc.poll() is not None or
                               os.path.exists(self.path('run',
                                                        'libvirt-sock')),
                               30, what='libvirtd socket')
            if self.proc.poll() is not None:
                raise RuntimeError('libvirtd exited: ' + self.log_tail())
            self.virsh('list')
        except BaseException:
            self.stop()
            raise

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def log_tail(self, lines=15):
        try:
            with open(self.path('log', 'libvirtd.log')) as f:
                return ''.join(f.readlines()[-lines:])
        except OSError:
            return '(no libvirtd.log)'

    def virsh(self, *args):
        proc = subprocess.run(['virsh', '-q', '-c', self.uri] + list(args),
                              stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              timeout=300, check=False)
        if proc.returncode != 0:
            raise AssertionError('virsh %s failed: %s\nlibvirtd.log:\n%s' % (
                ' '.join(args), proc.stderr.strip(), self.log_tail()))
        return proc.stdout

    def stop(self):
        if self.proc.poll() is None:
            try:
                for name in self.virsh('list', '--name').split():
                    self.virsh('destroy', name)
            finally:
                self.proc.terminate()
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        try:
            with open(self.path('run', 'virtlogd.pid')) as f:
                os.kill(int(f.read()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        for d in self.made:
            os.rmdir(d)


class CgroupDir:
    """An existing v1 memory cgroup, as harness.MemoryHog wants it."""

    def __init__(self, path):
        self.path = path

    def wrapper(self):
        return ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"',
                self.path]

    def oom_kills(self):
        with open(os.path.join(self.path, 'memory.oom_control')) as f:
            return int(re.search(r'oom_kill (\d+)', f.read()).group(1))


def cgroup_mounts():
    with open('/proc/self/mounts') as f:
        return [fields[1] for fields in map(str.split, f)
                if fields[2] in ('cgroup', 'cgroup2')]


def make_partition():
    """The partition in every cgroup hierarchy, the memory one with its
    limit, before libvirt starts the domain in it: libvirt creates /machine
    itself but no partition below it.  Returns the directories made, to
    remove afterwards."""
    made = []
    rel = os.path.relpath(PARTITION_DIR, harness.V1_ROOT)
    for mount in cgroup_mounts():
        for d in (os.path.join(mount, os.path.dirname(rel)),
                  os.path.join(mount, rel)):
            if os.path.isdir(d):
                continue
            os.mkdir(d)
            made.append(d)
            # a new cpuset has no CPUs or memory nodes: inherit them
            for name in ('cpuset.cpus', 'cpuset.mems'):
                parent = os.path.join(os.path.dirname(d), name)
                if os.path.exists(parent):
                    with open(parent) as src, \
                            open(os.path.join(d, name), 'w') as dst:
                        dst.write(src.read())
    with open(os.path.join(PARTITION_DIR, 'memory.limit_in_bytes'), 'w') as f:
        f.write(str(LIMIT))
    return made


def remove_cgroups(dirs):
    for d in reversed(dirs):
        harness.wait_until(lambda d=d: not os.path.isdir(d) or
                           _try_rmdir(d), 20, what='removing ' + d)


def _try_rmdir(d):
    try:
        os.rmdir(d)
        return True
    except OSError:
        return False


def virsh_fields(text):
    """'key value' lines (dommemstat) or 'Key:   value' lines (dominfo)."""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(':' if ':' in line else ' ')
        fields[key.strip()] = value.strip()
    return fields


def connect_console(path, log):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    harness.wait_until(lambda: sock.connect_ex(path) == 0, 30,
                       interval=0.1, what='serial socket ' + path)
    return harness.GuestConsole(sock, log)


class LibvirtTest(unittest.TestCase):

    def setUp(self):
        workdir = os.environ.get('QEMU_FORK_TEST_DIR',
                                 os.path.join(harness.TOP, 'build', 'tests'))
        os.makedirs(workdir, exist_ok=True)
        self.root = tempfile.mkdtemp(prefix='libvirt-', dir=workdir)
        self.passed = False
        self.addCleanup(self.remove_root)
        self.cgroups = make_partition()
        self.addCleanup(remove_cgroups, self.cgroups)
        self.libvirt = PrivateLibvirtd(self.root)
        self.addCleanup(self.libvirt.stop)

    def remove_root(self):
        """The daemons' directory goes when the test passed; it holds the
        logs of a failure."""
        if self.passed:
            shutil.rmtree(self.root)
        else:
            print('# libvirt logs kept in', self.root)

    def qmp(self, command, **arguments):
        """A QMP command through virsh qemu-monitor-command."""
        return balloon_auto_top.LibvirtDomain(self.libvirt.uri,
                                              DOMAIN).query(command,
                                                            **arguments)

    def query(self):
        return self.qmp('query-balloon-auto')

    def pid(self):
        with open(self.libvirt.path('run', 'qemu', DOMAIN + '.pid')) as f:
            return int(f.read())

    def wait_settled(self):
        """Wait until the driver has reached the target; return the
        state."""
        def settled():
            info = self.query()
            return info if info['actual'] == info['target'] else None
        return harness.wait_until(settled, 60, what='balloon at target')

    def pressure(self, mib, what):
        """A host process takes @mib MiB in the partition; returns once it
        has them, and checks nobody was OOM-killed."""
        part = CgroupDir(PARTITION_DIR)
        hog = harness.MemoryHog(part, mib, step=8, delay=0.5)
        try:
            harness.wait_until(lambda: hog.allocated >= mib or
                               hog.proc.poll() is not None, 240,
                               what=what)
            self.assertIsNone(hog.proc.poll(), 'the hog was killed')
        finally:
            hog.stop()
        self.assertEqual(part.oom_kills(), 0)

    def test_domain_xml_passthrough_and_virsh(self):
        kernel, initrd = harness.guest_paths()
        console_path = self.libvirt.path('console.sock')
        xml = DOMAIN_XML.format(
            name=DOMAIN, soft_limit_kib=SOFT_LIMIT // KiB,
            partition=PARTITION, kernel=kernel, initrd=initrd,
            emulator=harness.qemu_binary(), console=console_path,
            pressure_cgroup=PARTITION_DIR)
        with open(self.libvirt.path('domain.xml'), 'w') as f:
            f.write(xml)
        lv = self.libvirt
        lv.virsh('define', self.libvirt.path('domain.xml'))
        lv.virsh('start', DOMAIN)
        console = connect_console(console_path,
                                  self.libvirt.path('console.log'))
        self.addCleanup(console.close)

        # 1. The command line libvirt generated carries our properties.
        with open('/proc/%d/cmdline' % self.pid(), 'rb') as f:
            argv = f.read().decode().split('\0')
        balloon = json.loads(next(a for a in argv
                                  if '"virtio-balloon-pci"' in a))
        for key, value in (('id', 'balloon0'), ('automatic', True),
                           ('pressure-source', 'cgroup-v1'),
                           ('pressure-cgroup', PARTITION_DIR),
                           ('inflate-medium', 20),
                           ('auto-calm-time-ms', 600000),
                           ('deflate-on-oom', True)):
            self.assertEqual(balloon.get(key), value, key)
        with open(lv.path('log', 'qemu', DOMAIN + '.log')) as f:
            self.assertIn('"automatic":true', f.read())
        with open('/proc/%d/cgroup' % self.pid()) as f:
            self.assertIn(':memory:%s.partition/' % PARTITION, f.read())

        # 2. virsh qemu-monitor-command returns the automatic state; the
        # floor honours <memtune><soft_limit>.
        info = self.query()
        self.assertTrue(info['enabled'])
        self.assertEqual(info['status'], 'active')
        self.assertEqual(info['source']['kind'], 'cgroup-v1')
        self.assertEqual(info['source']['path'], PARTITION_DIR)
        self.assertIn('1400 MiB limit', info['source']['detail'])
        self.assertEqual(info['floor'], SOFT_LIMIT)
        self.assertIn('memory.soft_limit_in_bytes', info['floor-origin'])
        self.assertEqual(self.qmp('qom-get',
                                  path='/machine/peripheral/balloon0',
                                  property='inflate-medium'), 20)
        console.wait_for(harness.GuestConsole.READY, 240)

        # 3. virsh setmem sets the baseline.
        lv.virsh('setmem', DOMAIN, '%dK' % (SETMEM // KiB), '--live')
        info = self.query()
        self.assertEqual(info['baseline'], SETMEM)
        self.assertEqual(info['target'], SETMEM)
        harness.wait_until(lambda: virsh_fields(lv.virsh(
            'dommemstat', DOMAIN)).get('actual') == str(SETMEM // KiB),
            120, what='dommemstat actual at the setmem size')

        # 4. Real host pressure in the partition: the balloon inflates and
        # libvirt follows it.
        console.check('bgt alloc 600', timeout=300)
        harness.wait_until(lambda: 'guest-stats' in self.query(), 30,
                           what='guest statistics')
        rss_before = harness.proc_rss(self.pid())
        start = time.monotonic()
        self.pressure(800, 'hog allocation')
        elapsed = time.monotonic() - start
        info = self.wait_settled()
        decisions = {d['reason']: d['count'] for d in info['decisions']}
        self.assertGreater(decisions['host-pressure'], 0)
        self.assertEqual(info['last-decision']['reason'], 'host-pressure')
        self.assertLess(info['actual'], SETMEM - 150 * MiB)
        self.assertGreaterEqual(info['actual'], info['floor'])
        self.assertEqual(info['baseline'], SETMEM)
        actual = info['actual']
        memstat = virsh_fields(lv.virsh('dommemstat', DOMAIN))
        self.assertEqual(int(memstat['actual']) * KiB, actual)
        self.assertAlmostEqual(int(memstat['usable']) * KiB,
                               info['guest-stats']['available'],
                               delta=32 * MiB)
        rss = harness.proc_rss(self.pid())
        self.assertAlmostEqual(int(memstat['rss']) * KiB, rss,
                               delta=max(rss // 20, 16 * MiB))
        self.assertLess(rss, rss_before - 150 * MiB)
        # dominfo's "Used memory" comes from BALLOON_CHANGE events, which
        # QEMU throttles to one a second
        harness.wait_until(lambda: virsh_fields(lv.virsh(
            'dominfo', DOMAIN))['Used memory'] == '%d KiB' % (actual // KiB),
            10, what='dominfo Used memory at the balloon size')
        # the host-side view reads the same through libvirt
        snap = json.loads(subprocess.run(
            [sys.executable, balloon_auto_top.__file__, '--libvirt', lv.uri,
             '--json'], check=True, stdout=subprocess.PIPE, text=True,
            timeout=60).stdout)
        self.assertEqual([(r['vm'], r['pid'], r['actual'], r['status'])
                          for r in snap['vms']],
                         [(DOMAIN, self.pid(), actual, 'active')])
        print('# host pressure: balloon %d -> %d MiB in %.0f s, QEMU RSS %d'
              ' -> %d MiB, events %s; dommemstat actual %s KiB usable %s KiB'
              ' rss %s KiB' % (
                  SETMEM // MiB, actual // MiB, elapsed, rss_before // MiB,
                  rss // MiB, {e['level']: e['events']
                               for e in info['events']},
                  memstat['actual'], memstat['usable'], memstat['rss']))

        # 5. save/restore keeps automatic ballooning and its state; the
        # saved XML carries the size libvirt followed.
        image = lv.path('domain.save')
        lv.virsh('save', DOMAIN, image)
        saved = lv.virsh('save-image-dumpxml', image)
        self.assertRegex(saved, r"<currentMemory unit='KiB'>%d<" %
                         (actual // KiB))
        start = time.monotonic()
        lv.virsh('restore', image)
        restore_s = time.monotonic() - start
        os.unlink(image)
        info = self.query()
        self.assertEqual(info['status'], 'active')
        self.assertEqual(info['source']['path'], PARTITION_DIR)
        self.assertEqual(info['baseline'], SETMEM)
        self.assertEqual(info['floor'], SOFT_LIMIT)
        # the counters came along (a late event may have added one)
        restored = {d['reason']: d['count'] for d in info['decisions']}
        self.assertGreaterEqual(restored['host-pressure'],
                                decisions['host-pressure'])
        rss_restored = harness.proc_rss(self.pid())
        with open('/proc/%d/smaps_rollup' % self.pid()) as f:
            thp_restored = int(re.search(r'AnonHugePages:\s+(\d+)',
                                         f.read()).group(1)) * KiB
        self.pressure(500, 'hog allocation after restore')
        info = self.wait_settled()
        after = {d['reason']: d['count'] for d in info['decisions']}
        self.assertGreater(after['host-pressure'],
                           restored['host-pressure'])
        print('# save/restore: restore %.1f s, QEMU RSS after restore %d MiB'
              ' (%d MiB in huge pages) with the balloon at %d MiB; new'
              ' pressure: balloon -> %d MiB, host-pressure decisions'
              ' %d -> %d' % (restore_s, rss_restored // MiB,
                             thp_restored // MiB, actual // MiB,
                             info['actual'] // MiB,
                             restored['host-pressure'],
                             after['host-pressure']))
        self.passed = True


if __name__ == '__main__':
    harness.main()
