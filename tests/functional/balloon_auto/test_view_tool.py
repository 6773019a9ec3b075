#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The host-side view (scripts/balloon_auto_top.py) against live VMs: its
numbers agree with QMP and /proc, it tells VMs without automatic
ballooning and unreachable sockets apart, and a recording made under real
host pressure plots to a PNG.  And against fake monitors, some of which
never answer: SIGINT and SIGTERM end a recording within seconds, keep
what it recorded and draw the plot, also when the tool was started with
SIGINT ignored or blocked."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import harness
from harness import MiB
import fakes

TOOL = os.path.join(harness.TOP, 'scripts', 'balloon_auto_top.py')
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def run_tool(*args):
    proc = subprocess.run([sys.executable, TOOL] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise AssertionError('balloon_auto_top %s failed (%d): %s' % (
            ' '.join(args), proc.returncode, proc.stderr))
    return proc.stdout


def tool_rows(*targets):
    """One JSON sample of @targets, as {vm name or label: row}."""
    snap = json.loads(run_tool('--json', *targets))
    return {row['vm']: row for row in snap['vms']}


class ViewToolTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        workdir = harness.work_dir()
        cls.workdir = workdir
        cls.sock = os.path.join(workdir, 'viewtool.qmp')
        cls.manual_sock = os.path.join(workdir, 'viewtool-manual.qmp')
        cls.missing_sock = os.path.join(workdir, 'viewtool-missing.qmp')
        for path in (cls.sock, cls.manual_sock, cls.missing_sock):
            if os.path.exists(path):
                os.unlink(path)
        cls.cg = harness.Cgroup(limit=1400 * MiB)
        cls.manual = None
        try:
            cls.vm = harness.TestVM(
                'viewtool', mem='1G', cgroup=cls.cg,
                balloon='automatic=on,pressure-source=cgroup-v1,'
                        'pressure-cgroup=' + cls.cg.v1,
                args=('-name', 'viewtool', '-qmp',
                      'unix:%s,server=on,wait=off' % cls.sock))
            # A second QEMU with a plain balloon; it needs no guest.
            cls.manual = subprocess.Popen(
                [harness.qemu_binary(), '-S', '-nodefaults', '-display',
                 'none', '-M', 'q35', '-m', '256', '-name', 'plain',
                 '-device', 'virtio-balloon-pci', '-qmp',
                 'unix:%s,server=on,wait=off' % cls.manual_sock])
            cls.vm.launch()
            cls.vm.wait_guest_stats()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, 'vm', None):
            cls.vm.shutdown()
        if cls.manual:
            cls.manual.kill()
            cls.manual.wait()
        cls.cg.remove()

    def test_one_shot_matches_qmp_and_proc(self):
        """Every number of the table is what QMP and /proc say."""
        rows = tool_rows(self.sock, self.manual_sock, self.missing_sock)
        info = self.vm.cmd('query-balloon-auto')
        actual = self.vm.balloon_actual()
        rss = self.vm.rss()

        row = rows['viewtool']
        self.assertEqual(row['pid'], self.vm.pid)
        self.assertEqual(row['actual'], actual)
        for key in ('status', 'level', 'target', 'baseline', 'floor', 'max'):
            self.assertEqual(row[key], info[key], key)
        self.assertEqual(row['status'], 'active')
        self.assertEqual(row['source'], 'cgroup-v1')
        # the guest reports every 2 s: the two reads may be one report apart
        self.assertAlmostEqual(row['available'],
                               info['guest-stats']['available'],
                               delta=32 * MiB)
        self.assertAlmostEqual(row['rss'], rss, delta=max(rss // 20,
                                                          16 * MiB))
        self.assertEqual(row['events'], harness.event_counts(info))

        plain = rows['plain']
        self.assertEqual(plain['status'], 'manual')
        self.assertEqual(plain['actual'], 256 * MiB)
        self.assertEqual(plain['pid'], self.manual.pid)
        self.assertIsNone(plain['available'])   # no statistics polling
        self.assertNotIn('target', plain)

        missing = rows[self.missing_sock]
        self.assertIn('No such file', missing['error'])

        text = run_tool(self.sock, self.manual_sock, self.missing_sock)
        lines = text.splitlines()
        self.assertEqual(lines[0].split()[:3], ['VM', 'PID', 'ACTUAL'])
        auto_line = next(line for line in lines
                         if line.startswith('viewtool '))
        self.assertEqual(auto_line.split()[1:4],
                         [str(self.vm.pid), str(actual // MiB),
                          str(info['target'] // MiB)])
        self.assertIn(' active ', auto_line)
        self.assertRegex(text, r'(?m)^plain +%d +256 .* manual ' %
                         self.manual.pid)
        self.assertRegex(text, r'(?m)^%s +unreachable: .*No such file' %
                         self.missing_sock)
        print('# tool: actual %d MiB, available %d MiB (QMP %d), RSS %d MiB'
              ' (/proc %d)' % (row['actual'] // MiB, row['available'] // MiB,
                               info['guest-stats']['available'] // MiB,
                               row['rss'] // MiB, rss // MiB))

    def test_record_and_plot_under_pressure(self):
        """A recording across host pressure shows the balloon inflating,
        the RSS falling and the pressure events, and plots to a PNG."""
        vm = self.vm
        vm.console.check('bgt alloc 700', timeout=300)
        recording = os.path.join(self.workdir, 'viewtool.jsonl')
        png = os.path.join(self.workdir, 'viewtool.png')
        for path in (recording, png):
            if os.path.exists(path):
                os.unlink(path)
        tool = subprocess.Popen(
            [sys.executable, TOOL, self.sock, self.manual_sock, '--record',
             recording, '--interval', '1', '--plot', png],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(3)
            hog = harness.host_steps(self.cg, vm)
            try:
                hog.wait_allocated()
            finally:
                hog.stop()
            vm.cmd('balloon-auto-set', **{'hold-ms': 60000})
            harness.wait_until(lambda: vm.balloon_actual() ==
                               vm.cmd('query-balloon-auto')['target'], 60,
                               what='driver at the target')
            time.sleep(3)
        finally:
            tool.send_signal(signal.SIGINT)
            try:
                out, err = tool.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                tool.kill()             # leave no recorder behind
                tool.communicate()
                raise
        self.assertEqual(tool.returncode, 0, err)
        self.assertIn('plot written to ' + png, out)

        info = vm.cmd('query-balloon-auto')
        samples = [json.loads(line) for line in open(recording)]
        series = [next(r for r in s['vms'] if r['vm'] == 'viewtool')
                  for s in samples]
        self.assertGreater(len(series), 20)
        first, last = series[0], series[-1]
        self.assertGreater(first['actual'] - last['actual'], 200 * MiB)
        self.assertGreater(first['rss'] - last['rss'], 200 * MiB)
        self.assertEqual(last['actual'], info['actual'])
        self.assertEqual(last['events'], harness.event_counts(info))
        self.assertGreater(sum(last['events'].values()), 0)
        # the squeeze may end with the guest asking some memory back
        self.assertIn('host-pressure', {r['decision']['reason']
                                        for r in series if r['decision']})
        for key in ('reason', 'new-target'):
            self.assertEqual(last['decision'][key],
                             info['last-decision'][key], key)
        self.assertTrue(any(r['status'] == 'held' for r in series[-3:]))
        with open(png, 'rb') as f:
            head = f.read(len(PNG_MAGIC))
        self.assertEqual(head, PNG_MAGIC)
        self.assertGreater(os.path.getsize(png), 20000)
        print('# recorded %d samples: actual %d -> %d MiB, RSS %d -> %d MiB,'
              ' events %s; plot %s (%d bytes)' % (
                  len(series), first['actual'] // MiB, last['actual'] // MiB,
                  first['rss'] // MiB, last['rss'] // MiB, last['events'],
                  png, os.path.getsize(png)))


def ignore_sigint():
    """What a non-interactive shell gives a background job ('cmd &'):
    SIGINT (and SIGQUIT) ignored.  CI runners start commands like that."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def block_sigint():
    """A parent that spawns with SIGINT in its signal mask."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


class StopTest(unittest.TestCase):
    """Ending a recording, with VMs that do not answer (no QEMU needed)."""

    # how soon the tool must be gone after the signal (plot included)
    STOP_WITHIN = 8
    MONITOR_TIMEOUT = 1

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='view-stop-')
        self.addCleanup(shutil.rmtree, self.dir)
        self.socks = {}
        for mode in ('ok', 'silent', 'mute'):
            path = os.path.join(self.dir, mode + '.qmp')
            mon = fakes.FakeMonitor(path, mode=mode,
                                    replies={'query-name': {'name': mode}})
            self.addCleanup(mon.stop)
            self.socks[mode] = path

    def record_and_stop(self, sig, preexec=None):
        """Record the three monitors, send @sig once two samples are in;
        (seconds to exit, exit code, stdout, stderr, samples, png)."""
        recording = os.path.join(self.dir, 'run.jsonl')
        png = os.path.join(self.dir, 'run.png')
        for path in (recording, png):
            if os.path.exists(path):
                os.unlink(path)
        tool = subprocess.Popen(
            [sys.executable, TOOL] + list(self.socks.values()) +
            ['--record', recording, '--interval', '0.2', '--plot', png,
             '--timeout', str(self.MONITOR_TIMEOUT)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=preexec)
        try:
            harness.wait_until(lambda: tool.poll() is not None or (
                os.path.exists(recording) and
                len(open(recording).readlines()) >= 2), 60, interval=0.1,
                what='two samples recorded')
            # into a sample: the tool waits for a monitor that is silent
            time.sleep(0.3)
            start = time.monotonic()
            tool.send_signal(sig)
            out, err = tool.communicate(timeout=self.STOP_WITHIN)
            took = time.monotonic() - start
        except subprocess.TimeoutExpired:
            tool.kill()
            tool.communicate()
            self.fail('the tool did not end within %d s of %s' % (
                self.STOP_WITHIN, signal.Signals(sig).name))
        samples = [json.loads(line) for line in open(recording)]
        return took, tool.returncode, out, err, samples, png

    def check_stop(self, how, sig, preexec=None):
        took, rc, out, err, samples, png = self.record_and_stop(sig, preexec)
        self.assertEqual(rc, 0, err)
        self.assertIn('plot written to ' + png, out)
        self.assertGreaterEqual(len(samples), 2)
        rows = {r['vm']: r for r in samples[0]['vms']}
        self.assertEqual(rows['ok']['actual'], 512 * MiB)
        self.assertIn('no QMP greeting', rows[self.socks['silent']]['error'])
        self.assertIn('no reply', rows[self.socks['mute']]['error'])
        with open(png, 'rb') as f:
            self.assertEqual(f.read(len(PNG_MAGIC)), PNG_MAGIC)
        print('# %s: the tool ended %.1f s after the signal, with %d'
              ' samples and the plot' % (how, took, len(samples)))

    def test_sigint(self):
        self.check_stop('SIGINT', signal.SIGINT)

    def test_sigint_started_ignored(self):
        """Started as a background job of a non-interactive shell."""
        self.check_stop('SIGINT, started with SIGINT ignored',
                        signal.SIGINT, ignore_sigint)

    def test_sigint_started_blocked(self):
        self.check_stop('SIGINT, started with SIGINT blocked',
                        signal.SIGINT, block_sigint)

    def test_sigterm(self):
        self.check_stop('SIGTERM', signal.SIGTERM)

if __name__ == '__main__':
    harness.main()
