#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
The fork as a Debian package, installed for real: into a fresh Debian 12
root (a cached debootstrap minbase), with apt resolving its dependencies
from the archive.  There the emulator names the fork and lists KVM, a
guest boots under TCG with automatic ballooning on, and the libvirt test
runs against the installed /usr/bin/qemu-system-x86_64 (not a path in
build/).  SeaBIOS from the root's seabios package boots a disk on q35's
AHCI controller (ich9-ahci) without stalling.
"""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import unittest

import harness
from qemu_balloon_auto.qmp import QmpClient
from qemu_balloon_auto.testing.guest import cache_dir

ROOT_TOOL = os.path.join(harness.TOP, 'scripts', 'fork', 'debian-root.sh')
ROOT = cache_dir('roots', 'work-test-package')
# a root with another Debian emulator, where apt is asked to install the
# package (simulated)
ROOT_ARM = cache_dir('roots', 'work-test-package-arm')
EMULATOR = '/usr/bin/qemu-system-x86_64'
# the package needs seabios >= 1.16.3, which Debian 12 has in
# bookworm-backports only; named as the README's install command names it
FIRMWARE = ['seabios/bookworm-backports']
# what the libvirt test needs besides the package (the exporter's
# library is only a Recommends, which the root does not install)
LIBVIRT_PACKAGES = ['libvirt-daemon', 'libvirt-daemon-driver-qemu',
                    'libvirt-clients', 'python3', 'python3-pycotap',
                    'procps', 'python3-prometheus-client']

# A boot sector for the AHCI test: it reads sector 1 of the boot drive
# with INT 13h (extended read, so through SeaBIOS's AHCI driver) and
# writes the NUL-terminated text found there to COM1, or
# "INT13-READ-FAILED" if the read fails.  From (GNU as, .code16, at 0x7c00):
#     cli; xor %ax,%ax; mov %ax,%ds; mov %ax,%es; mov %ax,%ss
#     mov $0x7c00,%sp; sti
#     mov $dap,%si; mov $0x42,%ah; int $0x13     (%dl: the BIOS's boot drive)
#     jc fail; mov $0x7e00,%si; jmp print
# fail: mov $failmsg,%si
# print: lodsb; test %al,%al; jz done; mov %al,%bl
#     mov $0x3fd,%dx; 1: in %dx,%al; test $0x20,%al; jz 1b   (THR empty)
#     mov %bl,%al; mov $0x3f8,%dx; out %al,%dx; jmp print
# done: cli; hlt; jmp done
# dap: .byte 0x10,0; .word 1, 0x7e00, 0; .quad 1
# failmsg: .asciz "INT13-READ-FAILED\n"
BOOT_SECTOR = bytes.fromhex(
    'fa31c08ed88ec08ed0bc007cfbbe397cb442cd137205be007eeb03be497cac84c074'
    '1288c3bafd03eca82074fb88d8baf803eeebe9faf4ebfc10000100007e0000010000'
    '0000000000494e5431332d524541442d4641494c45440a00')
AHCI_MARKER = b'AHCI-BOOT-OK'


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
        subprocess.run([ROOT_TOOL, 'new', ROOT, cls.deb] + FIRMWARE +
                       LIBVIRT_PACKAGES, check=True)
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
        balloon on, the balloon follows a manual request, and the
        installed exporter reports it."""
        qmp = os.path.join(ROOT, 'tmp', 'qmp.sock')
        console = os.path.join(ROOT, 'tmp', 'console.sock')
        for path in (qmp, console, os.path.join(ROOT, 'tmp', 'mon.sock')):
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
             '-qmp', 'unix:/tmp/mon.sock,server=on,wait=off',
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
                self.check_exporter('/tmp/mon.sock', info)
                q.command('quit')
            con.close()
        finally:
            if qemu.poll() is None:
                qemu.kill()
            qemu.wait()

    def check_exporter(self, sock, info):
        """The installed exporter, its unit (disabled) and its user, and
        one textfile write from the guest's second monitor."""
        unit = 'lib/systemd/system/qemu-balloon-auto-exporter.service'
        self.assertTrue(os.path.exists(os.path.join(ROOT, unit)))
        self.assertFalse(glob.glob(os.path.join(
            ROOT, 'etc/systemd/system/*.wants/qemu-balloon-auto-exporter*')))
        in_root('id', 'qemu-balloon-auto-exporter')
        out = in_root('/usr/bin/qemu-balloon-auto-exporter', sock,
                      '--textfile', '/tmp/balloon.prom', '--once').stdout
        with open(os.path.join(ROOT, 'tmp', 'balloon.prom')) as f:
            text = f.read()
        up = re.search(r'^qemu_balloon_auto_up\{[^}]*\} (\S+)$', text, re.M)
        actual = re.search(r'^qemu_balloon_auto_actual_bytes\{[^}]*\} (\S+)$',
                           text, re.M)
        self.assertIsNotNone(up, out + text)
        self.assertEqual(float(up.group(1)), 1.0)
        self.assertEqual(float(actual.group(1)), info['actual'])
        print('# installed exporter: up 1, actual %d MiB' %
              (info['actual'] // harness.MiB))

    def test_other_emulators_removed(self):
        """On a host with Debian's qemu-system-arm, installing the package
        removes qemu-system-arm with qemu-system-common and -data (arm
        needs them at its own version, the package conflicts with them),
        and the package's description says so."""
        start = time.monotonic()
        try:
            subprocess.run([ROOT_TOOL, 'new', ROOT_ARM, 'qemu-system-arm'],
                           check=True)
            shutil.copy(self.deb, os.path.join(ROOT_ARM, 'tmp'))
            sim = subprocess.run(
                [ROOT_TOOL, 'run', ROOT_ARM, 'apt-get', 'install', '-s',
                 '-q', '/tmp/' + os.path.basename(self.deb)] + FIRMWARE,
                check=True, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, timeout=600).stdout
        finally:
            # only a simulation ran there: nothing to look at later
            shutil.rmtree(ROOT_ARM, ignore_errors=True)
        removed = sorted(l.split()[1] for l in sim.splitlines()
                         if l.startswith('Remv '))
        print('# apt on a host with qemu-system-arm (%.0f s): installing'
              ' the package removes %s' % (time.monotonic() - start,
                                           ' '.join(removed)))
        self.assertEqual(removed, ['qemu-system-arm', 'qemu-system-common',
                                   'qemu-system-data'], sim)
        desc = ' '.join(in_root('dpkg-query', '-W', '-f', '${Description}',
                                'qemu-balloon-auto').stdout.split())
        for name in removed + ['qemu-system-gui', 'qemu-block-extra',
                               'qemu-utils', 'qemu-system-modules-spice',
                               'qemu-system-modules-opengl']:
            self.assertIn(name, desc)
        self.assertIn('removes every other Debian QEMU system emulator',
                      desc)

    def test_kvm_link(self):
        """/usr/bin/kvm, which the package promises by providing qemu-kvm
        (Debian's qemu-system-x86 links it to the native emulator; Ganeti,
        which recommends qemu-kvm, runs /usr/bin/kvm): the installed
        emulator, which under that name tries KVM before TCG."""
        link = os.path.join(ROOT, 'usr', 'bin', 'kvm')
        self.assertTrue(os.path.islink(link), '/usr/bin/kvm is missing')
        self.assertEqual(os.path.realpath(link),
                         os.path.join(ROOT, EMULATOR.lstrip('/')))
        self.assertIn('qemu-balloon-auto fork',
                      in_root('kvm', '--version').stdout)
        self.assertTrue(glob.glob(os.path.join(
            ROOT, 'usr/share/man/man1/kvm.1*')), 'no kvm(1) man page')
        qmp = ('{"execute": "qmp_capabilities"}\n'
               '{"execute": "query-kvm"}\n{"execute": "quit"}\n')

        def accel(name):
            """KVM's state and QEMU's complaints run as @name with no
            -accel."""
            out = in_root(name, '-M', 'none', '-nodefaults', '-display',
                          'none', '-qmp', 'stdio', input=qmp,
                          timeout=60).stdout
            for line in out.splitlines():
                if '"enabled"' in line:
                    return json.loads(line)['return']['enabled'], out
            self.fail('no query-kvm answer from %s: %s' % (name, out))
        kvm, kvm_out = accel('kvm')
        plain, plain_out = accel('qemu-system-x86_64')
        # "kvm" means accel kvm:tcg: KVM if the host has it, else a
        # fallback to TCG that QEMU reports; qemu-system-x86_64 alone
        # means tcg:kvm, so TCG without trying KVM
        self.assertTrue(kvm or 'falling back to tcg' in kvm_out, kvm_out)
        self.assertFalse(plain, plain_out)
        self.assertNotIn('initialize kvm', plain_out)
        print('# kvm -> %s: KVM %s' % (os.readlink(link), 'enabled' if kvm
                                       else 'tried, not usable here, '
                                       'fell back to TCG'))

    def test_ahci_boot(self):
        """The installed QEMU with the root's SeaBIOS boots from a disk on
        q35's AHCI controller, next to an empty AHCI CD-ROM, without
        SeaBIOS timing out on a command.

        QEMU >= 8.2 raises only the task file error interrupt (TFES) when
        an AHCI command fails; SeaBIOS before 1.16.3 waits for a D2H or
        PIO FIS interrupt instead and gives up after its 32 s command
        timeout.  Its disk probe starts with IDENTIFY PACKET DEVICE, which
        every ATA disk aborts, and an empty CD-ROM fails TEST UNIT READY,
        so every BIOS boot of a q35 guest with a SATA disk or an empty
        CD-ROM stalls 32 s ("WARNING - Timeout at ahci_command" in SeaBIOS's
        debug output).  Debian's qemu-system-x86 requires
        seabios >> 1.16.3-1~ for this."""
        seabios = in_root('dpkg-query', '-W', '-f', '${Version}',
                          'seabios').stdout.strip()
        image = os.path.join(ROOT, 'tmp', 'ahci-disk.img')
        serial = os.path.join(ROOT, 'tmp', 'ahci-serial.log')
        debug = os.path.join(ROOT, 'tmp', 'ahci-seabios.log')
        qmp = os.path.join(ROOT, 'tmp', 'ahci-qmp.sock')
        disk = bytearray(1 << 20)
        disk[:len(BOOT_SECTOR)] = BOOT_SECTOR
        disk[510:512] = b'\x55\xaa'
        text = AHCI_MARKER + b': sector 1 read through INT 13h\n\0'
        disk[512:512 + len(text)] = text
        with open(image, 'wb') as f:
            f.write(disk)
        for path in (serial, debug, qmp):
            if os.path.exists(path):
                os.unlink(path)

        def log(path):
            try:
                with open(path, 'rb') as f:
                    return f.read().decode('latin-1')
            except FileNotFoundError:
                return ''
        start = time.monotonic()
        # the firmware is the default one: /usr/share/seabios/bios-256k.bin
        # of the root (the emulator's --firmwarepath), no -bios or -L
        qemu = subprocess.Popen(
            [ROOT_TOOL, 'run', ROOT, EMULATOR, '-accel', 'tcg', '-M', 'q35',
             '-m', '256M', '-nodefaults', '-display', 'none',
             '-chardev', 'file,id=dbg,path=/tmp/ahci-seabios.log',
             '-device', 'isa-debugcon,iobase=0x402,chardev=dbg',
             '-chardev', 'file,id=ser,path=/tmp/ahci-serial.log',
             '-serial', 'chardev:ser',
             '-qmp', 'unix:/tmp/ahci-qmp.sock,server=on,wait=off',
             '-drive', 'if=none,id=disk,file=/tmp/ahci-disk.img,format=raw',
             '-device', 'ide-hd,drive=disk,bus=ide.0',
             '-drive', 'if=none,id=cd,media=cdrom',
             '-device', 'ide-cd,drive=cd,bus=ide.2'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        try:
            # long enough to see the end of a stall, to report it
            harness.wait_until(lambda: AHCI_MARKER.decode() in log(serial)
                               or 'INT13-READ-FAILED' in log(serial) or
                               qemu.poll() is not None, 120, interval=0.1,
                               what='the boot sector on the serial console')
            elapsed = time.monotonic() - start
            if qemu.poll() is not None:
                self.fail('QEMU exited: ' + qemu.stdout.read())
            with QmpClient(qmp) as q:
                q.command('quit')
            qemu.wait(30)
        finally:
            if qemu.poll() is None:
                os.killpg(qemu.pid, signal.SIGKILL)
            qemu.wait()
        firmware = re.search(r'SeaBIOS \(version ([^)]*)\)', log(debug))
        timeouts = re.findall(r'WARNING - Timeout at \S+', log(debug))
        print('# AHCI boot with seabios %s (%s): boot sector ran after'
              ' %.1f s; %d SeaBIOS command timeouts' % (
                  seabios, firmware.group(1) if firmware else '?',
                  elapsed, len(timeouts)))
        self.assertIn(AHCI_MARKER.decode(), log(serial))
        self.assertIn('Booting from Hard Disk', log(debug))
        self.assertIn('AHCI/0: registering', log(debug))
        self.assertEqual(timeouts, [], 'SeaBIOS %s timed out on AHCI'
                         ' commands' % seabios)
        # without a stall the boot sector runs within a few seconds (0.5 s
        # here); a stall is 32 s
        self.assertLess(elapsed, 20)

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
