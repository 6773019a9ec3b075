#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
The automatic balloon on a pure cgroup v2 host.  The machines here bind the
memory controller to cgroup v1, so the host is the bundled 6.12 test guest
booted with cgroup v1 off (build-v2-host.sh): inside it, the fork's own
unit test of the v2 source runs against the real kernel, and the fork
itself runs a nested guest (TCG inside TCG) in libvirt's layout (the VM's
cgroup with its limit, QEMU's threads in a threaded 'emulator' child)
while a host process allocates next to it.
"""

import time
import unittest

import harness
from harness import MiB
from qemu_balloon_auto.testing.nested import CG, NestedHost

SCOPE = CG + '/machine.slice/machine-qemu-1-vm.scope'
VMCG = SCOPE + '/libvirt'           # where libvirt writes the limits
VM_EVENTS = VMCG + '/memory.events'
LIMIT = 800 * MiB
NESTED_MEM = '512M'


class CgroupV2Test(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.host = NestedHost('v2host').launch()

    @classmethod
    def tearDownClass(cls):
        cls.host.shutdown()

    def test_1_kernel_is_a_v2_host(self):
        h = self.host
        self.assertIn('memory', h.read(CG + '/cgroup.controllers'))
        self.assertEqual(h.sh('grep -c "^cgroup " /proc/mounts || true'),
                         ['0'])
        self.assertTrue(h.read('/proc/pressure/memory').startswith('some'))

    def test_2_source_unit_test(self):
        """The fork's test of its v2 source, against this kernel."""
        out = self.host.sh('/opt/tests/test-balloon-pressure --tap', 300)
        oks = [l for l in out if l.startswith('ok ')]
        for line in out:
            if line.startswith('#') and ('events' in line or
                                         'usage' in line or
                                         'source' in line):
                print('# v2 host unit test: ' + line.lstrip('# '))
        self.assertFalse([l for l in out if l.startswith('not ok')])
        self.assertTrue(any('/balloon-pressure/v2-source' in l and
                            'SKIP' not in l for l in oks), out)

    def layout(self):
        """libvirt's cgroup v2 layout for a domain, the limit on its
        libvirt/ cgroup, QEMU's threads to go in a threaded emulator/."""
        h = self.host
        h.sh('mkdir -p %s && echo +memory > %s/machine.slice/'
             'cgroup.subtree_control && echo +memory > %s/'
             'cgroup.subtree_control' % (SCOPE, CG, SCOPE))
        h.sh('mkdir %s %s/emulator && echo threaded > %s/emulator/cgroup.type'
             ' && echo %d > %s/memory.max' % (VMCG, VMCG, VMCG, LIMIT, VMCG))

    def remove_layout(self):
        self.host.sh('for d in %s/emulator %s %s %s/machine.slice; do '
                     'while [ -d $d ] && ! rmdir $d 2>/dev/null; do sleep 0.2;'
                     ' done; done' % (VMCG, VMCG, SCOPE, CG), 60)

    def start_nested(self, name, balloon, user=None, guest=True, args=''):
        """The fork in the layout, QEMU's threads in emulator/ as libvirt
        puts them, as @user (a uid) if given, with more QEMU arguments
        @args; returns (qmp socket, console socket, pid) once the guest is
        up (with @guest False, once QMP answers)."""
        return self.host.start_qemu(name, VMCG[len(CG) + 1:], balloon,
                                    mem=NESTED_MEM, user=user,
                                    threads='emulator', guest=guest,
                                    args=args)

    def hog(self, mib):
        """A host process in the VM's cgroup, 20 MiB/s; returns its log."""
        log = '/tmp/hog-%d.log' % mib
        self.host.sh("sh -c 'echo $$ > %s/cgroup.procs && exec bgt alloc %d "
                     "--step 20 --delay-ms 1000 --hold 3600' > %s 2>&1 & "
                     "echo $! > /tmp/hog.pid" % (VMCG, mib, log))
        return log

    def kill_all(self):
        """The hog and QEMU, if still there (busybox has no pkill)."""
        self.host.sh('kill -9 $(cat /tmp/hog.pid 2>/dev/null) '
                     '$(pidof qemu-system-x86_64) 2>/dev/null; '
                     'rm -f /tmp/hog.pid; true')

    def hog_done(self, log):
        out = self.host.sh('cat %s' % log)
        return any('alloc ok' in l for l in out)

    def test_3_host_and_guest_pressure(self):
        """The balloon auto-detects the VM's cgroup (libvirt/, not the
        threaded emulator/ QEMU sits in), inflates when a host process
        allocates next to it, and the VM survives; then deflates when the
        guest needs memory."""
        h = self.host
        self.layout()
        try:
            qmp, con, pid = self.start_nested('auto', 'automatic=on')
            self.assertIn('%s/emulator' % VMCG[len(CG):],
                          h.read('/proc/%d/cgroup' % pid))
            info = h.qmp(qmp, 'query-balloon-auto')
            src = info['source']
            print('# v2 source: %s %s (%s)' % (src['kind'], src['path'],
                                                 src['detail']))
            self.assertEqual(src['kind'], 'cgroup-v2')
            self.assertEqual(src['path'], VMCG)
            self.assertIn('headroom against the %d MiB limit' %
                          (LIMIT // MiB), src['detail'])
            self.assertEqual(info['status'], 'active')

            # the guest used and freed 400 MiB: QEMU holds it
            rc, out = h.nested(con, 'bgt alloc 400', 600)
            self.assertEqual(rc, 0, out)
            start = time.monotonic()
            log = self.hog(450)
            harness.wait_until(lambda: self.hog_done(log) or
                               h.pid_of('qemu-system-x86_64') is None, 600,
                               interval=3, what='the hog')
            elapsed = time.monotonic() - start
            if h.pid_of('qemu-system-x86_64') is None:
                self.fail('QEMU was killed; hog: %s; memory.events: %s; '
                          'decisions: %s' % (
                              h.read(log), h.keyed(VM_EVENTS),
                              h.sh('tail -n 30 /tmp/auto.log')))
            self.assertTrue(self.hog_done(log), h.read(log))
            events = h.keyed(VM_EVENTS)
            self.assertEqual(events['oom_kill'], 0)
            info = h.qmp(qmp, 'query-balloon-auto')
            counts = harness.decision_counts(info)
            self.assertGreater(counts['host-pressure'], 0)
            self.assertLess(info['target'], 512 * MiB)
            print('# v2 host pressure: hog of 450 MiB at 20 MiB/s next to'
                  ' the VM in %d MiB: VM alive, %d inflate decisions,'
                  ' balloon 512 -> %d MiB in %.0f s, memory.events %s' % (
                      LIMIT // MiB, counts['host-pressure'],
                      info['actual'] // MiB, elapsed, events))

            # guest pressure: resting at 256 MiB, the guest takes 350 MiB
            h.sh('kill $(cat /tmp/hog.pid)')
            h.qmp(qmp, 'balloon', value=256 * MiB)
            harness.wait_until(lambda: h.qmp(qmp, 'query-balloon')[
                'actual'] == 256 * MiB, 300, interval=3,
                what='the balloon at 256 MiB')
            rc, out = h.nested(con, 'bgt alloc 350 --step 8 --delay-ms 250'
                               ' && bgt vmstat oom_kill', 900)
            info = h.qmp(qmp, 'query-balloon-auto')
            counts = harness.decision_counts(info)
            print('# v2 guest pressure: %s, decisions %s, actual %d MiB' % (
                out, counts, info['actual'] // MiB))
            self.assertEqual(rc, 0, out)
            self.assertIn('oom_kill 0', out)
            self.assertGreater(counts['guest-pressure'] +
                               counts['guest-deflated'], 0)
            print('# v2 guest pressure: 350 MiB from 256 MiB, %d deflate'
                  ' decisions, actual %d MiB' % (
                      counts['guest-pressure'] + counts['guest-deflated'],
                      info['actual'] // MiB))
            h.qmp(qmp, 'quit')
        finally:
            self.kill_all()
            self.remove_layout()

    def test_4_without_automatic_oom(self):
        """The same host pressure without the automatic balloon: the
        cgroup OOM-kills.  QEMU holds all its guest's memory from the
        start (-mem-prealloc), as much as test 3's guest left it holding
        and more: with nothing ballooning, the test need not wait for
        the guest."""
        h = self.host
        self.layout()
        try:
            self.start_nested('manual', 'automatic=off', guest=False,
                              args='-mem-prealloc')
            log = self.hog(450)
            harness.wait_until(lambda: self.hog_done(log) or
                               h.keyed(VM_EVENTS)['oom_kill'] > 0, 600,
                               interval=3, what='the hog or an OOM kill')
            events = h.keyed(VM_EVENTS)
            self.assertGreater(events['oom_kill'], 0)
            qemu_alive = h.pid_of('qemu-system-x86_64') is not None
            print('# v2 without automatic: memory.events %s, QEMU %s' % (
                events, 'alive' if qemu_alive else 'OOM-killed'))
        finally:
            self.kill_all()
            self.remove_layout()


    def test_5_least_privilege(self):
        """QEMU as an unprivileged user, as libvirt runs it: it cannot arm
        PSI on the VM's cgroup (root's memory.pressure), so it runs on the
        headroom files (world-readable) and says so; management, as root,
        hands it the PSI triggers with the fork's helper."""
        h = self.host
        self.layout()
        try:
            # what the device and the helper do needs no guest
            qmp, con, pid = self.start_nested('lp', 'automatic=on', 65534,
                                              guest=False)
            status = h.read('/proc/%d/status' % pid)
            self.assertRegex(status, r'Uid:\s+65534\s')
            info = h.qmp(qmp, 'query-balloon-auto')
            detail = info['source']['detail']
            self.assertEqual(info['source']['kind'], 'cgroup-v2')
            self.assertIn('no PSI triggers', detail)
            self.assertIn('Permission denied', detail)
            self.assertIn('headroom against the %d MiB limit' %
                          (LIMIT // MiB), detail)
            out = h.sh('qemu-balloon-auto-pressure --qmp %s --pid %d' %
                       (qmp, pid))
            print('# v2 least privilege, helper: ' + ' '.join(out))
            info = h.qmp(qmp, 'query-balloon-auto')
            for level in ('low', 'medium', 'critical'):
                self.assertRegex(info['source']['detail'],
                                 r'pressure-%s \([^)]*memory.pressure\) at '
                                 r'level %s' % (level, level))
            self.assertIn('plus descriptors handed over by management',
                          info['source']['detail'])
            print('# v2 least privilege: %s' % info['source']['detail'])
            h.qmp(qmp, 'quit')
        finally:
            self.kill_all()
            self.remove_layout()


if __name__ == '__main__':
    harness.main()
