#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
The fork as a Debian package, installed for real: into a fresh Debian 12
root (a cached debootstrap minbase), with apt resolving its dependencies
from the archive.  There the emulator names the fork and lists KVM, a
guest boots under TCG with automatic ballooning on, and the libvirt test
runs against the installed /usr/bin/qemu-system-x86_64 (not a path in
build/).
"""

import glob
import os
import shutil
import socket
import subprocess
import time
import unittest

import harness
from qemu_balloon_auto.qmp import QmpClient

ROOT_TOOL = os.path.join(harness.TOP, 'scripts', 'fork', 'debian-root.sh')
CACHE = os.environ.get('QEMU_FORK_CACHE', os.path.join(
    os.path.expanduser('~'), '.cache', 'qemu-balloon-auto'))
ROOT = os.path.join(CACHE, 'roots', 'work-test-package')
EMULATOR = '/usr/bin/qemu-system-x86_64'
# what the libvirt test needs besides the package
LIBVIRT_PACKAGES = ['libvirt-daemon', 'libvirt-daemon-driver-qemu',
                    'libvirt-clients', 'python3', 'python3-pycotap',
                    'procps']


def in_root(*command, binds=(), check=True, timeout=600, **kwargs):
    args = [ROOT_TOOL, 'run'] + ['--bind=' + b for b in binds] + [ROOT]
    return subprocess.run(args + list(command), check=check, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, **kwargs)


class PackageTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        debs = sorted(glob.glob(os.path.join(harness.TOP, 'build',
                                             'qemu-balloon-auto_*.deb')),
                      key=os.path.getmtime)
        if not debs:
            raise AssertionError('no package in build/: run make deb')
        cls.deb = debs[-1]
        start = time.monotonic()
        subprocess.run([ROOT_TOOL, 'new', ROOT, cls.deb] + LIBVIRT_PACKAGES,
                       check=True)
        print('# fresh root with %s and its dependencies from the archive:'
              ' %.0f s' % (os.path.basename(cls.deb),
                           time.monotonic() - start))
        # libvirt's QEMU driver wants its user (libvirt-daemon-system,
        # which would start a system libvirtd, is not installed)
        in_root('sh', '-c', 'groupadd --system libvirt-qemu && useradd '
                '--system --no-create-home --gid libvirt-qemu libvirt-qemu')
        # the test guest, where the chrooted QEMU finds it
        kernel, initrd = harness.guest_paths()
        cls.guest = []
        for path in (kernel, initrd):
            dest = os.path.join(ROOT, 'opt', 'guest',
                                os.path.basename(path))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy(path, dest)
            cls.guest.append(dest[len(ROOT):])

    def test_emulator(self):
        out = in_root(EMULATOR, '--version').stdout
        self.assertIn('qemu-balloon-auto fork', out)
        self.assertIn('10.0.13', out)
        accels = in_root(EMULATOR, '-accel', 'help').stdout.split()
        self.assertIn('kvm', accels)
        self.assertIn('tcg', accels)
        status = in_root('dpkg-query', '-W', '-f', '${Status} ${Version} '
                         '${Provides}', 'qemu-balloon-auto').stdout
        self.assertIn('install ok installed', status)
        self.assertIn('+balloonauto', status)
        self.assertIn('qemu-system-x86 (=', status)
        # the manual and the man page came with it
        self.assertTrue(os.path.exists(os.path.join(
            ROOT, 'usr/share/doc/qemu/system/devices/'
            'virtio-balloon-auto.html')))
        self.assertTrue(glob.glob(os.path.join(
            ROOT, 'usr/share/man/man7/qemu-qmp-ref.7*')))
        print('# installed: %s' % out.splitlines()[0])

    def test_guest_with_automatic(self):
        """The installed QEMU boots the guest under TCG with the automatic
        balloon on, and the balloon follows a manual request."""
        qmp = os.path.join(ROOT, 'tmp', 'qmp.sock')
        console = os.path.join(ROOT, 'tmp', 'console.sock')
        for path in (qmp, console):
            if os.path.exists(path):
                os.unlink(path)
        qemu = subprocess.Popen(
            [ROOT_TOOL, 'run', ROOT, EMULATOR, '-accel', 'tcg', '-M', 'q35',
             '-m', '1G', '-nodefaults', '-display', 'none',
             '-kernel', self.guest[0], '-initrd', self.guest[1],
             '-append', 'console=ttyS0 panic=-1 loglevel=4',
             '-chardev', 'socket,id=con,path=/tmp/console.sock,server=on,'
             'wait=off', '-serial', 'chardev:con',
             '-qmp', 'unix:/tmp/qmp.sock,server=on,wait=off',
             '-device', 'virtio-balloon-pci,id=balloon0,automatic=on,'
             'pressure-source=none'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            harness.wait_until(lambda: os.path.exists(console) or
                               qemu.poll() is not None, 30,
                               what='the console socket')
            if qemu.poll() is not None:
                self.fail('QEMU exited: ' + qemu.stdout.read())
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(console)
            con = harness.GuestConsole(sock, os.path.join(ROOT, 'tmp',
                                                          'console.log'))
            con.wait_for(harness.GuestConsole.READY, 240)
            with QmpClient(qmp) as q:
                harness.wait_until(lambda: q.command('query-balloon-auto')[
                    'status'] == 'active', 60, what='automatic active')
                q.command('balloon', value=768 * harness.MiB)
                harness.wait_until(
                    lambda: q.command('query-balloon')['actual'] ==
                    768 * harness.MiB, 60, what='the guest at 768 MiB')
                info = q.command('query-balloon-auto')
                self.assertEqual(info['baseline'], 768 * harness.MiB)
                print('# installed QEMU: guest booted with automatic=on;'
                      ' balloon at %d MiB' % (info['actual'] //
                                              harness.MiB))
                q.command('quit')
            con.close()
        finally:
            if qemu.poll() is None:
                qemu.kill()
            qemu.wait()

    def test_libvirt_with_installed_emulator(self):
        """The libvirt test, in the fresh root, with the installed QEMU as
        the domains' emulator."""
        env = ['env', 'PYTHONUNBUFFERED=1', 'QEMU_FORK_EMULATOR=' + EMULATOR,
               'PYTHONPATH=' + os.path.join(harness.TOP, 'scripts'),
               'QEMU_FORK_GUEST=' + ':'.join(self.guest),
               'QEMU_FORK_TEST_DIR=/tmp/tests']
        proc = in_root(*env, 'python3', os.path.join(
            harness.TOP, 'tests', 'functional', 'balloon_auto',
            'test_libvirt.py'), binds=[harness.TOP], check=False,
            timeout=1200)
        oks = [l for l in proc.stdout.splitlines() if l.startswith('ok ')]
        bad = [l for l in proc.stdout.splitlines()
               if l.startswith('not ok ')]
        if proc.returncode != 0 or bad or len(oks) < 2:
            print(proc.stdout[-8000:])
        self.assertEqual(proc.returncode, 0)
        self.assertEqual(bad, [])
        self.assertGreaterEqual(len(oks), 2)
        for line in proc.stdout.splitlines():
            if line.startswith('#'):
                print('# libvirt in the fresh root: ' + line.lstrip('# '))


if __name__ == '__main__':
    harness.main()
