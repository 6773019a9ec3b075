#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
The Prometheus exporter (scripts/qemu-balloon-auto-exporter), the alerting
rules and the Grafana dashboard (contrib/balloon-auto/).

Against a real Prometheus (Debian's, run here on loopback with a scrape
interval of 1 s): a guest in a memory-limited cgroup under real host
pressure, read through the exporter; Prometheus' query API shows the
balloon falling, host-pressure decisions rising and the pressure level
going up and back down, and the rules loaded next to it.  promtool checks
a real scrape, the rules and the rules' unit tests.  Against fake monitors
and a fake virsh: the exporter sends nothing but queries, and a monitor
that never answers, a domain destroyed between listing and query and a
libvirt that is down leave the other VMs served within the deadline.
Performance (scrape time and exporter CPU for 1 and 20 QEMUs under
-accel qtest) is measured and printed, not asserted.
"""

import glob
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import harness
from harness import MiB
import fakes
from qemu_balloon_auto.testing import terminate

EXPORTER = os.path.join(harness.TOP, 'scripts', 'qemu-balloon-auto-exporter')
CONTRIB = os.path.join(harness.TOP, 'contrib', 'balloon-auto')
RULES = os.path.join(CONTRIB, 'qemu-balloon-auto.rules.yml')
RULES_TEST = os.path.join(CONTRIB, 'qemu-balloon-auto.rules.test.yml')
DASHBOARD = os.path.join(CONTRIB, 'qemu-balloon-auto-dashboard.json')
RENDER = os.path.join(CONTRIB, 'render-dashboard.py')
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
LOOPBACK = '127.0.0.1'


def free_port():
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def http_get(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def parse_metrics(text):
    """{(name, frozenset(labels.items())): value} of an exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        m = re.match(r'^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$', line)
        if not m:
            raise AssertionError('not an exposition line: %r' % line)
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"',
                                 m.group(3) or ''))
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(4))
    return out


def value(metrics, name, **labels):
    """The one sample of @name whose labels include @labels."""
    found = [v for (n, ls), v in metrics.items() if n == name and
             set(labels.items()) <= set(ls)]
    if len(found) != 1:
        raise AssertionError('%d samples of %s%s' % (len(found), name,
                                                      labels))
    return found[0]


class Exporter:
    """The exporter serving on a loopback port."""

    def __init__(self, *args, env=None):
        self.port = free_port()
        self.url = 'http://%s:%d/metrics' % (LOOPBACK, self.port)
        self.log = tempfile.TemporaryFile(mode='w+')
        # a session of its own: stop() ends it with the virsh processes
        # it may still be waiting for
        self.proc = subprocess.Popen(
            [sys.executable, EXPORTER, '--listen',
             '%s:%d' % (LOOPBACK, self.port)] + list(args),
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        try:
            harness.wait_until(self._listening, 30, interval=0.1,
                               what='exporter listening')
        except BaseException:
            self.stop()
            raise

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError('the exporter exited: ' + self.output())
        with socket.socket() as s:
            return s.connect_ex((LOOPBACK, self.port)) == 0

    def scrape(self, timeout=30):
        """(seconds, text) of one GET /metrics."""
        start = time.monotonic()
        text = http_get(self.url, timeout)
        return time.monotonic() - start, text

    def metrics(self):
        return parse_metrics(self.scrape()[1])

    def cpu_seconds(self):
        """CPU time of the exporter and of the children it waited for
        (virsh)."""
        with open('/proc/%d/stat' % self.proc.pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / os.sysconf('SC_CLK_TCK')

    def output(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        terminate(self.proc)
        try:
            # its process group (its pid: a session of its own)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


class Prometheus:
    """Debian's Prometheus server on a loopback port, scraping @targets
    every second with the fork's alerting rules loaded, its storage in
    @root."""

    def __init__(self, root, targets):
        self.root = root
        self.port = free_port()
        self.url = 'http://%s:%d' % (LOOPBACK, self.port)
        config = os.path.join(root, 'prometheus.yml')
        with open(config, 'w') as f:
            f.write('global:\n  scrape_interval: 1s\n'
                    '  scrape_timeout: 1s\n  evaluation_interval: 1s\n'
                    'rule_files:\n  - %s\n'
                    'scrape_configs:\n  - job_name: balloon-auto\n'
                    '    static_configs:\n      - targets: [%s]\n' % (
                        RULES, ', '.join("'%s'" % t for t in targets)))
        self.log = open(os.path.join(root, 'prometheus.log'), 'w')
        self.proc = subprocess.Popen(
            ['prometheus', '--config.file=' + config,
             '--storage.tsdb.path=' + os.path.join(root, 'data'),
             '--web.listen-address=%s:%d' % (LOOPBACK, self.port),
             '--log.level=warn'],
            stdout=self.log, stderr=subprocess.STDOUT)
        try:
            harness.wait_until(self._ready, 60, what='prometheus ready')
        except BaseException:
            self.stop()
            raise

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError('prometheus exited; log in ' + self.root)
        try:
            http_get(self.url + '/-/ready', 2)
            return True
        except (OSError, urllib.error.URLError):
            return False

    def api(self, path, **params):
        reply = json.loads(http_get('%s/api/v1/%s?%s' % (
            self.url, path, urllib.parse.urlencode(params))))
        if reply['status'] != 'success':
            raise AssertionError('%s: %s' % (path, reply))
        return reply['data']

    def query(self, expr):
        return self.api('query', query=expr)['result']

    def series(self, expr, start, end, step=1):
        """[(t, value)] of the one series @expr returns over the range."""
        result = self.api('query_range', query=expr, start=start, end=end,
                          step=step)['result']
        if len(result) != 1:
            raise AssertionError('%s: %d series' % (expr, len(result)))
        return [(float(t), float(v)) for t, v in result[0]['values']]

    def stop(self):
        terminate(self.proc, 30)
        self.log.close()


def promtool(*args):
    proc = subprocess.run(['promtool'] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120,
                          check=False)
    return proc.returncode, proc.stdout


def check_metrics(text):
    proc = subprocess.run(['promtool', 'check', 'metrics'], input=text,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=60, check=False)
    return proc.returncode, proc.stdout


class PressureTest(unittest.TestCase):
    """A real guest under real host pressure, through the exporter into a
    real Prometheus."""

    DOMAIN = 'exporter'

    @classmethod
    def setUpClass(cls):
        cls.workdir = harness.work_dir()
        cls.root = tempfile.mkdtemp(prefix='prometheus-', dir=cls.workdir)
        cls.sock = os.path.join(cls.workdir, cls.DOMAIN + '.qmp')
        if os.path.exists(cls.sock):
            os.unlink(cls.sock)
        cls.cg = harness.Cgroup(limit=1400 * MiB)
        cls.vm = cls.exporter = cls.prometheus = None
        try:
            cls.vm = harness.TestVM(
                cls.DOMAIN, mem='1G', cgroup=cls.cg,
                balloon='automatic=on,pressure-source=cgroup-v1,'
                        'pressure-cgroup=' + cls.cg.v1,
                args=('-name', 'exporter-test', '-uuid',
                      '6a1e4d2c-5b0f-4e8a-9c3d-7f2b1a0e9d84', '-qmp',
                      'unix:%s,server=on,wait=off' % cls.sock))
            cls.vm.launch()
            cls.vm.wait_guest_stats()
            cls.exporter = Exporter(cls.sock)
            cls.prometheus = Prometheus(cls.root, ['%s:%d' % (
                LOOPBACK, cls.exporter.port)])
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for part in (cls.prometheus, cls.exporter, cls.vm):
            if part:
                (part.shutdown if part is cls.vm else part.stop)()
        cls.cg.remove()
        shutil.rmtree(cls.root, ignore_errors=True)

    def sel(self, name, **labels):
        labels['domain'] = self.DOMAIN
        return '%s{%s}' % (name, ','.join('%s="%s"' % kv
                                          for kv in sorted(labels.items())))

    def test_1_scrape_checks_and_matches_qmp(self):
        """A real scrape passes promtool check metrics and says what QMP
        says."""
        _, text = self.exporter.scrape()
        rc, out = check_metrics(text)
        self.assertEqual(rc, 0, out)
        self.assertEqual(out.strip(), '')
        m = parse_metrics(text)
        info = self.vm.cmd('query-balloon-auto')
        vm = {'domain': self.DOMAIN,
              'uuid': '6a1e4d2c-5b0f-4e8a-9c3d-7f2b1a0e9d84'}
        self.assertEqual(value(m, 'qemu_balloon_auto_up', **vm), 1)
        for key in ('actual', 'target', 'baseline', 'floor', 'max',
                    'reserve', 'burst-reserve'):
            self.assertEqual(value(m, 'qemu_balloon_auto_%s_bytes' %
                                   key.replace('-', '_'), **vm),
                             info[key], key)
        self.assertEqual(value(m, 'qemu_balloon_auto_source_info',
                               kind='cgroup-v1', path=self.cg.v1, **vm), 1)
        self.assertEqual(value(m, 'qemu_balloon_auto_host_limit_bytes',
                               **vm), 1400 * MiB)
        self.assertEqual(value(m, 'qemu_balloon_auto_status',
                               status='active', **vm), 1)
        self.assertEqual(value(m, 'qemu_balloon_auto_status',
                               status='paused', **vm), 0)
        self.assertEqual(value(m, 'qemu_balloon_auto_driver_responding',
                               **vm), 1)
        self.assertAlmostEqual(
            value(m, 'qemu_balloon_auto_guest_available_bytes', **vm),
            info['guest-stats']['available'], delta=32 * MiB)
        names = sorted({n for n, _ in m if n.startswith('qemu_balloon')})
        print('# %d metric names: %s' % (len(names), ' '.join(names)))

    def explain_level(self):
        """The device's view, when the level stays up: whether the host
        is still above its setpoint and what keeps the guest from
        giving."""
        try:
            info = self.vm.cmd('query-balloon-auto')
        except Exception as e:  # pylint: disable=broad-except
            return 'QEMU does not answer (%r); oom_kill %d' % (
                e, self.cg.oom_kills())
        return 'cgroup usage %d MiB, oom_kill %d; %s' % (
            self.cg.usage() // MiB, self.cg.oom_kills(),
            harness.balloon_view(info))

    def history(self, start, end):
        """(seconds, level, balloon MiB, host usage MiB) where the level
        or the balloon changed, from Prometheus."""
        series = [dict(values) for values in (
            self.prometheus.series(self.sel(name), start, end) for name in (
                'qemu_balloon_auto_pressure_level',
                'qemu_balloon_auto_actual_bytes',
                'qemu_balloon_auto_host_usage_bytes'))]
        rows, last = [], None
        for t in sorted(series[0]):
            row = (series[0][t], series[1].get(t, 0) // MiB,
                   series[2].get(t, 0) // MiB)
            if last is None or row[:2] != last[:2]:
                rows.append((round(t - start),) + row)
            last = row
        return rows

    def test_2_pressure_through_prometheus(self):
        """Host pressure seen through Prometheus: the balloon size falls
        while it lasts, host-pressure decisions rise, the level goes up
        and back down, and the rules are loaded and evaluated."""
        vm, prom = self.vm, self.prometheus
        vm.console.check('bgt alloc 700', timeout=300)
        harness.wait_until(lambda: prom.query(self.sel(
            'qemu_balloon_auto_up')), 30, what='first sample in prometheus')
        time.sleep(5)
        start = time.time()
        pending_seen = set()

        def note_alerts():
            for a in prom.api('alerts')['alerts']:
                pending_seen.add((a['labels']['alertname'], a['state']))
        usage_before = self.cg.usage()
        hog = harness.host_steps(self.cg, vm)
        try:
            def allocated():
                note_alerts()
                return hog.allocated >= hog.mib or hog.proc.poll() is not None
            harness.wait_until(allocated, 240, what='hog allocation')
            self.assertIsNone(hog.proc.poll(), 'the hog was killed')
            pressure_end = time.time()
            # the level decays 5 s after the last event
            up = prom.query('max_over_time(%s[10m])' % self.sel(
                'qemu_balloon_auto_pressure_level'))
            self.assertGreaterEqual(
                float(up[0]['value'][1]), 1,
                'cgroup usage %d MiB before the hog; level, balloon MiB,'
                ' host MiB: %s; %s' % (
                    usage_before // MiB, self.history(start, time.time()),
                    self.explain_level()))
            print('# cgroup usage %d MiB before the hog' % (
                usage_before // MiB))

            def calm():
                note_alerts()
                info = vm.cmd('query-balloon-auto')
                return info['level'] == 'none' and \
                    info['host']['usage'] < info['host']['setpoint']
            harness.wait_until(calm, 120, what='pressure level back to none',
                               explain=self.explain_level)
            # a scrape after that: the last one may predate the last burst
            calm_at = time.time()
            harness.wait_until(lambda: note_alerts() or prom.query(
                'timestamp(%s == 0) > %f' % (
                    self.sel('qemu_balloon_auto_pressure_level'), calm_at)),
                30, what='pressure level back to none in prometheus')
        finally:
            hog.stop()
        time.sleep(2)
        end = time.time()
        self.assertEqual(self.cg.oom_kills(), 0)

        actual = prom.series(self.sel('qemu_balloon_auto_actual_bytes'),
                             start, end)
        decided = prom.series(self.sel('qemu_balloon_auto_decisions_total',
                                       reason='host-pressure'), start, end)
        level = prom.series(self.sel('qemu_balloon_auto_pressure_level'),
                            start, end)
        before = actual[0][1]
        lowest = min(v for t, v in actual if t <= pressure_end + 5)
        self.assertGreater(before - lowest, 150 * MiB,
                           'the balloon size did not fall')
        self.assertGreater(decided[-1][1], decided[0][1])
        self.assertEqual(level[0][1], 0)
        self.assertGreaterEqual(max(v for _, v in level), 1)
        self.assertEqual(level[-1][1], 0, 'level, balloon MiB, host MiB: %s'
                         % self.history(start, end))
        info = vm.cmd('query-balloon-auto')
        self.assertEqual(decided[-1][1],
                         harness.decision_counts(info)['host-pressure'])
        # the rules run in this Prometheus
        groups = prom.api('rules')['groups']
        rules = {r['name']: r for g in groups for r in g['rules']}
        self.assertEqual(len(rules), 6)
        for name, rule in rules.items():
            self.assertEqual(rule['health'], 'ok', name)
        print('# prometheus: balloon %d -> %d MiB, host-pressure decisions'
              ' %d -> %d, level max %d and back to 0; %d samples; alerts'
              ' seen: %s' % (
                  before // MiB, lowest // MiB, decided[0][1],
                  decided[-1][1], max(v for _, v in level), len(actual),
                  sorted(pending_seen)))

        # the dashboard, drawn from this data (the picture in the docs)
        png = os.environ.get('QEMU_FORK_DASHBOARD_PNG') or os.path.join(
            self.workdir, 'exporter-dashboard.png')
        subprocess.run([sys.executable, RENDER, '--prometheus', prom.url,
                        '--start', str(start - 20), '--end', str(end),
                        '--rate-interval', '10s', '--out', png],
                       check=True, stdout=subprocess.PIPE, timeout=120)
        with open(png, 'rb') as f:
            self.assertEqual(f.read(len(PNG_MAGIC)), PNG_MAGIC)
        print('# dashboard drawn to %s (%d bytes)' % (
            png, os.path.getsize(png)))

    def test_3_deficit_the_balloon_cannot_close(self):
        """A deficit the balloon cannot close (its floor raised to the
        VM's size, a service taking the cgroup past its setpoint): the
        host stays above its setpoint, and the alert for that goes
        pending in this Prometheus."""
        vm, prom = self.vm, self.prometheus
        info = vm.cmd('query-balloon-auto')
        vm.cmd('balloon-auto-set', floor=info['max'])
        hog = None
        try:
            # past the setpoint by 100 MiB, short of the limit
            need = (info['host']['setpoint'] - self.cg.usage()) // MiB + 100
            hog = harness.MemoryHog(self.cg, need, step=16, delay=0.1)
            hog.wait_allocated(120)
            self.assertTrue(hog.alive(), 'the hog was killed')
            harness.wait_until(lambda: prom.query(
                'ALERTS{alertname="QemuBalloonAutoHostAboveSetpoint",'
                'alertstate="pending",domain="%s"}' % self.DOMAIN), 60,
                what='the host-above-setpoint alert pending',
                explain=self.explain_level)
            after = vm.cmd('query-balloon-auto')
            print('# a deficit it cannot close: %s' %
                  harness.balloon_view(after))
            self.assertEqual(harness.decision_counts(after)['host-pressure'],
                             harness.decision_counts(info)['host-pressure'])
            self.assertEqual(self.cg.oom_kills(), 0)
        finally:
            if hog:
                hog.stop()
            vm.cmd('balloon-auto-set', floor=0)


class RulesAndDashboardTest(unittest.TestCase):

    def test_rules(self):
        rc, out = promtool('check', 'rules', RULES)
        self.assertEqual(rc, 0, out)
        self.assertIn('SUCCESS: 6 rules found', out)
        rc, out = promtool('test', 'rules', RULES_TEST)
        self.assertEqual(rc, 0, out)
        self.assertIn('SUCCESS', out)

    def test_dashboard_queries_name_exported_metrics(self):
        """Every metric the dashboard and the rules query is one the
        exporter exports (from a fake VM that has every member)."""
        workdir = tempfile.mkdtemp(prefix='exporter-names-')
        self.addCleanup(shutil.rmtree, workdir)
        replies = fakes.qemu_like_replies()
        auto = replies['query-balloon-auto']
        auto['host'] = {'usage': 1, 'limit': 2, 'setpoint': 1,
                        'growth-rate': 0, 'age-ms': 1}
        auto['blocked-by'] = 'guest-driver'
        mon = fakes.FakeMonitor(os.path.join(workdir, 'vm.qmp'),
                                replies=replies)
        self.addCleanup(mon.stop)
        exporter = Exporter(mon.path, '--connect', 'test:///nowhere')
        self.addCleanup(exporter.stop)
        exported = {n for n, _ in exporter.metrics()}
        with open(DASHBOARD) as f:
            dashboard = json.load(f)
        exprs = [t['expr'] for p in dashboard['panels']
                 for t in p['targets']]
        exprs += [v['definition'] for v in dashboard['templating']['list']
                  if 'definition' in v]
        with open(RULES) as f:
            exprs += re.findall(r'qemu_balloon_auto_\w+', f.read())
        used = {n for e in exprs for n in re.findall(r'qemu_balloon_auto_\w+',
                                                     e)}
        self.assertTrue(used)
        self.assertEqual(used - exported, set())
        ids = [p['id'] for p in dashboard['panels']]
        self.assertEqual(len(ids), len(set(ids)))
        print('# the dashboard and the rules use %d of the %d exported'
              ' qemu_balloon_auto metrics' % (len(used), len(
                  {n for n in exported if n.startswith('qemu_balloon')})))


class FakeTest(unittest.TestCase):
    """The exporter against fake monitors and a fake virsh."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='exporter-fake-')
        self.addCleanup(shutil.rmtree, self.dir)

    def monitor(self, name, mode='ok', **kwargs):
        mon = fakes.FakeMonitor(os.path.join(self.dir, name + '.qmp'),
                                mode=mode, **kwargs)
        self.addCleanup(mon.stop)
        return mon

    def virsh(self, domains, **state):
        self.state = dict(state, domains=domains,
                          log=os.path.join(self.dir, 'virsh.log'))
        self.state_path = os.path.join(self.dir, 'virsh.json')
        return fakes.install_virsh(os.path.join(self.dir, 'bin'),
                                   self.state, self.state_path)

    def set_virsh(self, **changes):
        self.state.update(changes)
        with open(self.state_path, 'w') as f:
            json.dump(self.state, f)

    def test_only_queries(self):
        """Whatever it reads, the exporter sends qmp_capabilities and
        query-* only, on sockets and through virsh; and its guard refuses
        anything else before it reaches a monitor."""
        auto = self.monitor('auto', replies={'query-uuid': {
            'UUID': '11111111-2222-3333-4444-555555555555'}})
        off = self.monitor('off', replies={'query-balloon-auto': dict(
            fakes.qemu_like_replies()['query-balloon-auto'],
            enabled=False, status='disabled')})
        old = self.monitor('old')
        old.replies.pop('query-balloon-auto')      # CommandNotFound
        none = self.monitor('none', fail={
            'query-balloon-auto': ('DeviceNotActive',
                                   'No balloon device has been activated')})
        viadom = self.monitor('viadom')
        env = self.virsh([{'id': 1, 'name': 'dom1', 'uuid':
                           'aaaaaaaa-0000-0000-0000-000000000001',
                           'qmp': viadom.path}], uri='test:///fake')
        exporter = Exporter(auto.path, 'renamed=' + off.path, old.path,
                            none.path, '--connect', 'test:///fake',
                            env=env)
        self.addCleanup(exporter.stop)
        for _ in range(3):
            m = exporter.metrics()
        uuid = '11111111-2222-3333-4444-555555555555'
        self.assertEqual(value(m, 'qemu_balloon_auto_up', domain='auto',
                               uuid=uuid), 1)
        self.assertEqual(value(m, 'qemu_balloon_auto_enabled',
                               domain='renamed'), 0)
        self.assertEqual(value(m, 'qemu_balloon_auto_status',
                               domain='renamed', status='disabled'), 1)
        self.assertEqual(value(m, 'qemu_balloon_auto_actual_bytes',
                               domain='old'), 512 * MiB)
        self.assertEqual(value(m, 'qemu_balloon_auto_enabled',
                               domain='old'), 0)
        self.assertEqual(value(m, 'qemu_balloon_auto_up', domain='dom1',
                               uuid='aaaaaaaa-0000-0000-0000-000000000001'),
                         1)
        self.assertEqual(value(m, 'qemu_balloon_auto_libvirt_up',
                               uri='test:///fake'), 1)

        sent = set()
        for mon in (auto, off, old, none, viadom):
            sent |= set(mon.commands())
        for entry in fakes.read_log(self.state['log']):
            if entry['command'] == 'qemu-monitor-command':
                sent.add('virsh qemu-monitor-command ' +
                         json.loads(entry['args'][-1])['execute'])
            else:
                sent.add('virsh ' + entry['command'])
        allowed = re.compile(r'^(virsh (list|qemu-monitor-command '
                             r'(query-[a-z-]+)))$|^(qmp_capabilities|'
                             r'query-[a-z-]+)$')
        self.assertEqual({c for c in sent if not allowed.match(c)}, set())
        self.assertIn('query-balloon-auto', sent)
        self.assertIn('virsh qemu-monitor-command query-balloon-auto', sent)
        print('# commands the exporter sent: %s' % ', '.join(sorted(sent)))

        # the guard itself, on a monitor that would accept anything
        from importlib.machinery import SourceFileLoader
        module = SourceFileLoader('exporter', EXPORTER).load_module()
        from qemu_balloon_auto.qmp import QmpClient
        with QmpClient(auto.path, timeout=5) as session:
            guarded = module.ReadOnlyMonitor(session)
            for command in ('balloon', 'balloon-auto-set', 'quit', 'stop',
                            'human-monitor-command', 'qom-set'):
                with self.assertRaises(ValueError):
                    guarded.command(command)
            self.assertEqual(guarded.command('query-balloon')['actual'],
                             512 * MiB)
        self.assertNotIn('balloon', auto.commands())

    def test_faults(self):
        """A monitor that never answers, one that never greets, a socket
        with nobody behind it, a domain destroyed between listing and
        query, a domain whose monitor hangs, then libvirt down and back:
        the healthy VMs are served within the deadline every time, the
        others are up 0 with their errors counted."""
        ok = self.monitor('ok')
        self.monitor('mute', mode='mute')
        self.monitor('silent', mode='silent')
        dom_ok = self.monitor('dom-ok')
        dom_hang = self.monitor('dom-hang', mode='mute')
        domains = [
            {'id': 1, 'name': 'dom-ok', 'uuid':
             'aaaaaaaa-0000-0000-0000-000000000001', 'qmp': dom_ok.path},
            {'id': 2, 'name': 'dom-gone', 'uuid':
             'aaaaaaaa-0000-0000-0000-000000000002', 'qmp': dom_ok.path,
             'gone': True},
            {'id': 3, 'name': 'dom-hang', 'uuid':
             'aaaaaaaa-0000-0000-0000-000000000003', 'qmp': dom_hang.path},
        ]
        env = self.virsh(domains, uri='test:///fake')
        deadline = 4
        exporter = Exporter(
            ok.path, os.path.join(self.dir, 'mute.qmp'),
            os.path.join(self.dir, 'silent.qmp'),
            os.path.join(self.dir, 'nobody.qmp'), '--connect',
            'test:///fake', '--timeout', '2', '--deadline', str(deadline),
            env=env)
        self.addCleanup(exporter.stop)

        took, text = exporter.scrape()
        m = parse_metrics(text)
        self.assertLess(took, deadline + 1.5)
        up = {dict(ls)['domain']: v for (n, ls), v in m.items()
              if n == 'qemu_balloon_auto_up'}
        self.assertEqual(up, {'ok': 1, 'mute': 0, 'silent': 0, 'nobody': 0,
                              'dom-ok': 1, 'dom-gone': 0, 'dom-hang': 0})
        for domain, reason in (('mute', 'timeout'), ('silent', 'timeout'),
                               ('nobody', 'unreachable'),
                               ('dom-gone', 'unreachable'),
                               ('dom-hang', 'timeout')):
            self.assertEqual(value(m, 'qemu_balloon_auto_scrape_errors_total',
                                   domain=domain, reason=reason), 1, domain)
        self.assertEqual(value(m, 'qemu_balloon_auto_actual_bytes',
                               domain='dom-ok'), 512 * MiB)
        self.assertEqual(value(m, 'qemu_balloon_auto_exporter_vms'), 7)
        rc, out = check_metrics(text)
        self.assertEqual(rc, 0, out)
        print('# a scrape with 5 of 7 VMs failing: %.2f s (deadline %d s)' %
              (took, deadline))

        # the gone domain is no longer listed: its series go
        self.set_virsh(domains=[d for d in domains if not d.get('gone')])
        m = exporter.metrics()
        self.assertFalse([ls for (n, ls) in m if
                          ('domain', 'dom-gone') in ls])

        # libvirtd down: listed domains seen last are reported down, the
        # QMP sockets are still read
        self.set_virsh(down=True)
        took, text = exporter.scrape()
        m = parse_metrics(text)
        self.assertLess(took, deadline + 1.5)
        self.assertEqual(value(m, 'qemu_balloon_auto_libvirt_up',
                               uri='test:///fake'), 0)
        self.assertEqual(value(m, 'qemu_balloon_auto_libvirt_errors_total',
                               uri='test:///fake'), 1)
        self.assertEqual(value(m, 'qemu_balloon_auto_up', domain='dom-ok'),
                         0)
        self.assertEqual(value(m, 'qemu_balloon_auto_up', domain='ok'), 1)
        # back
        self.set_virsh(down=False)
        m = exporter.metrics()
        self.assertEqual(value(m, 'qemu_balloon_auto_libvirt_up',
                               uri='test:///fake'), 1)
        self.assertEqual(value(m, 'qemu_balloon_auto_up', domain='dom-ok'),
                         1)
        self.assertGreaterEqual(value(
            m, 'qemu_balloon_auto_scrape_errors_total', domain='dom-ok',
            reason='unreachable'), 1)
        log = exporter.output()
        self.assertIn('libvirt test:///fake: reachable again', log)
        self.assertIn('dom-ok: readable again', log)

        # libvirtd hanging: virsh list does not return either
        self.set_virsh(hang=True)
        took, text = exporter.scrape()
        m = parse_metrics(text)
        self.assertLess(took, deadline + 1.5)
        self.assertEqual(value(m, 'qemu_balloon_auto_libvirt_up',
                               uri='test:///fake'), 0)
        self.assertEqual(value(m, 'qemu_balloon_auto_up', domain='ok'), 1)
        print('# libvirt hanging: scrape %.2f s, QMP VMs still served' %
              took)

    def test_deadline_and_busy(self):
        """With one worker and a monitor slower than the deadline, each
        scrape ends at the deadline, and the next one does not pile a
        second read onto the one still waiting (a hung VM takes at most
        one worker)."""
        mute = self.monitor('mute', mode='mute')
        ok = self.monitor('ok')
        exporter = Exporter(mute.path, ok.path, '--timeout', '6',
                            '--deadline', '2', '--workers', '1')
        self.addCleanup(exporter.stop)
        for scrape in (1, 2):
            took, text = exporter.scrape()
            m = parse_metrics(text)
            self.assertLess(took, 3.5)
            # the one worker waits for 'mute': 'ok' is not read in time
            for domain in ('mute', 'ok'):
                self.assertEqual(value(
                    m, 'qemu_balloon_auto_scrape_errors_total',
                    domain=domain, reason='deadline'), scrape)
        self.assertEqual(len(mute._conns), 1)

    def test_textfile(self):
        """--textfile writes the node_exporter textfile atomically (a
        rename over the old file, nothing left behind)."""
        ok = self.monitor('ok')
        out = os.path.join(self.dir, 'balloon.prom')
        proc = subprocess.run([sys.executable, EXPORTER, ok.path,
                               '--textfile', out, '--once'],
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              timeout=60, check=False)
        self.assertEqual(proc.returncode, 0, proc.stdout)
        with open(out) as f:
            text = f.read()
        self.assertEqual(value(parse_metrics(text), 'qemu_balloon_auto_up',
                               domain='ok'), 1)
        rc, lint = check_metrics(text)
        self.assertEqual(rc, 0, lint)
        self.assertEqual(sorted(os.listdir(self.dir)),
                         ['balloon.prom', 'ok.qmp'])
        # a loop: the inode changes at every write (rename)
        loop = subprocess.Popen([sys.executable, EXPORTER, ok.path,
                                 '--textfile', out, '--interval', '0.3'])
        try:
            inodes = set()
            deadline = time.monotonic() + 20
            while len(inodes) < 3 and time.monotonic() < deadline:
                try:
                    inodes.add(os.stat(out).st_ino)
                    with open(out) as f:
                        self.assertIn('qemu_balloon_auto_up{', f.read())
                except FileNotFoundError:
                    self.fail('the textfile was missing for a moment')
                time.sleep(0.05)
            self.assertGreaterEqual(len(inodes), 3)
        finally:
            loop.terminate()
            loop.wait(10)
        self.assertEqual(loop.returncode, 0)
        self.assertEqual(sorted(os.listdir(self.dir)),
                         ['balloon.prom', 'ok.qmp'])


PERF_DOMAIN_XML = '''\
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <emulator>{emulator}</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='virtio'><alias name='balloon0'/></memballoon>
  </devices>
  <qemu:override>
    <qemu:device alias='balloon0'>
      <qemu:frontend>
        <qemu:property name='automatic' type='bool' value='true'/>
        <qemu:property name='pressure-source' type='string' value='none'/>
      </qemu:frontend>
    </qemu:device>
  </qemu:override>
</domain>
'''


class PerformanceTest(unittest.TestCase):
    """Scrape time and exporter CPU for 1 and 20 QEMUs (-accel qtest, a
    balloon with automatic=on, no guest) over QMP, and for 1 and 20
    paused domains of a private libvirtd: measured and printed."""

    SCRAPES = 20

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='exporter-perf-',
                                    dir=harness.work_dir())
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.qemus = []
        self.addCleanup(self.stop_qemus)

    def stop_qemus(self):
        for proc in self.qemus:
            proc.kill()
            proc.wait()

    def start_qemus(self, count):
        socks = []
        for i in range(len(self.qemus), count):
            sock = os.path.join(self.dir, 'vm%02d.qmp' % i)
            self.qemus.append(subprocess.Popen(
                [harness.qemu_binary(), '-accel', 'qtest', '-qtest', 'null',
                 '-M', 'q35', '-m', '256M', '-nodefaults', '-display', 'none',
                 '-device', 'virtio-balloon-pci,automatic=on,'
                 'pressure-source=none', '-qmp',
                 'unix:%s,server=on,wait=off' % sock],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            socks.append(sock)
        harness.wait_until(lambda: all(os.path.exists(s) for s in socks),
                           60, what='QMP sockets')
        return sorted(glob.glob(os.path.join(self.dir, 'vm*.qmp')))

    def measure(self, count, *args):
        exporter = Exporter(*args)
        try:
            m = exporter.metrics()
            self.assertEqual(sum(v for (n, _), v in m.items()
                                 if n == 'qemu_balloon_auto_up'), count)
            cpu = exporter.cpu_seconds()
            times = []
            for _ in range(self.SCRAPES):
                took, _ = exporter.scrape()
                times.append(took)
            cpu = exporter.cpu_seconds() - cpu
        finally:
            exporter.stop()
        return statistics.median(times), max(times), cpu / self.SCRAPES

    def test_scrape_cost(self):
        results = {}
        for count in (1, 20):
            socks = self.start_qemus(count)
            results[count] = self.measure(count, *socks)
        self.report('over QMP', results)

    @staticmethod
    def report(how, results):
        for count, (median, worst, cpu) in results.items():
            print('# %2d VM%s %s: scrape %.1f ms median, %.1f ms max;'
                  ' exporter CPU %.1f ms per scrape' % (
                      count, 's' if count > 1 else ' ', how, median * 1000,
                      worst * 1000, cpu * 1000))

    def test_libvirt_scrape_cost(self):
        """The same through a private libvirtd (Debian's 9.0): one 'virsh
        list' and one 'virsh qemu-monitor-command' per domain and scrape.
        The domains stay paused (no guest runs)."""
        import test_libvirt
        lv = test_libvirt.PrivateLibvirtd(os.path.join(self.dir, 'libvirt'))
        self.addCleanup(lv.stop)
        results = {}
        started = 0
        for count in (1, 20):
            while started < count:
                xml = os.path.join(self.dir, 'perf%02d.xml' % started)
                with open(xml, 'w') as f:
                    f.write(PERF_DOMAIN_XML.format(
                        name='perf%02d' % started,
                        emulator=harness.qemu_binary()))
                lv.virsh('create', xml, '--paused')
                started += 1
            results[count] = self.measure(count, '--connect', lv.uri)
        self.report('through libvirt', results)


if __name__ == '__main__':
    harness.main()
