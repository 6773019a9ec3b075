#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
One measurement of the no-limit scenario, run inside the nested cgroup v2
host (bench/run.py copies it there; the host has /usr/bin/python3 and the
package qemu_balloon_auto): a service in the v2 cgroup --service takes
the host's MemAvailable and --extra MiB more with `bgt alloc`, in --step
MiB chunks every --delay-ms (0: as fast as it can), next to the nested
QEMU (--qemu-pid, its QMP monitor --qmp, a monitor of its own: nobody
else may hold it).

Polled every --poll seconds while the service allocates and --after
seconds after it is done: the balloon (query-balloon actual), the host's
memory in use (MemTotal - MemAvailable), the service's cgroup
memory.current and, with --fork, every other time, the fork's own host
reading (query-balloon-auto: usage, setpoint, age).  With --bound, a
`balloon` command asks for all the guest can give (down to the floor
query-balloon-auto reports) just before the service starts: the
mechanism's bound.  Then the kernel log since
the start (who the OOM killer took), /proc/vmstat oom_kill, the service's
output with times, and the decisions in the nested QEMU's trace log
(--trace: -trace enable=virtio_balloon_auto_* -msg timestamp=on).

Times are seconds since the service was started (wall clock, as the trace
stamps its lines).  The probe and the shell that runs it are exempt from
the OOM killer (oom_score_adj -1000: the measuring apparatus); the service
is not (it sets its own back to 0).  It kills the service when done.  The
result is one JSON object in --out.
"""

import argparse
import errno
import json
import os
import re
import signal
import subprocess
import threading
import time

from qemu_balloon_auto import MiB
from qemu_balloon_auto.qmp import MonitorError, QmpClient, QmpError

CG = '/sys/fs/cgroup'
TRACE = re.compile(r'^\d+@(\d+\.\d+):virtio_balloon_auto_(\w+) (.*)$')
DECISION = re.compile(r'(\S+): target (\d+) -> (\d+) actual (\d+) '
                      r'applied (\d)')
KILLED = re.compile(r'Killed process (\d+) \(([^)]*)\)')


def keyed(path):
    """'Key: value [kB]' or 'key value' lines as {key: int} (kB in
    bytes)."""
    vals = {}
    with open(path) as f:
        for line in f:
            p = line.replace(':', ' ').split()
            if len(p) >= 2 and p[1].isdigit():
                vals[p[0]] = int(p[1]) * (1024 if p[2:3] == ['kB'] else 1)
    return vals


def read_int(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid):
    """@pid exists and is no zombie."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


class Kmsg:
    """The kernel log from now on."""

    def __init__(self):
        self.fd = os.open('/dev/kmsg', os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)
        self.lines = []

    def read(self):
        while True:
            try:
                rec = os.read(self.fd, 8192).decode('utf-8', 'replace')
            except OSError as e:
                if e.errno == errno.EPIPE:      # overwritten: read on
                    continue
                break                           # EAGAIN: nothing more
            self.lines.append(rec.split(';', 1)[-1].split('\n')[0])
        return self.lines


class Service:
    """`bgt alloc` in the cgroup @cgroup; its output lines with their
    times (since @t0)."""

    def __init__(self, cgroup, mib, step, delay_ms, t0):
        self.t0 = t0
        self.lines = []
        self.done_at = None
        sh = ('echo 0 > /proc/self/oom_score_adj && '
              'echo $$ > %s/%s/cgroup.procs && exec bgt alloc %d --step %d '
              '--delay-ms %d --hold 3600' % (CG, cgroup, mib, step, delay_ms))
        self.proc = subprocess.Popen(['sh', '-c', sh], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.pid = self.proc.pid
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            t = time.time() - self.t0
            self.lines.append((round(t, 3), line.rstrip()))
            if line.startswith('alloc ok') and self.done_at is None:
                self.done_at = t

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def qmp_or_none(qmp, command, **args):
    try:
        return qmp.command(command, **args)
    except (MonitorError, QmpError, OSError, ValueError):
        return None


def trace_entries(path, t0):
    """The trace log's virtio_balloon_auto_* lines from @t0 on:
    [(t, event, text)], and the decisions [(t, reason, old, new, actual,
    applied)] (bytes)."""
    events, decisions = [], []
    try:
        with open(path, errors='replace') as f:
            for line in f:
                m = TRACE.match(line.strip())
                if not m or float(m.group(1)) < t0:
                    continue
                t = round(float(m.group(1)) - t0, 3)
                events.append((t, m.group(2), m.group(3)))
                d = DECISION.match(m.group(3))
                if m.group(2) == 'decision' and d:
                    decisions.append((t, d.group(1), int(d.group(2)),
                                      int(d.group(3)), int(d.group(4)),
                                      int(d.group(5))))
    except OSError:
        pass
    return events, decisions


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--qmp', required=True)
    ap.add_argument('--qemu-pid', type=int, required=True)
    ap.add_argument('--service', required=True,
                    help='the service\'s v2 cgroup, under %s' % CG)
    ap.add_argument('--extra', type=int, default=150,
                    help='MiB the service takes beyond MemAvailable')
    ap.add_argument('--need', type=int,
                    help='MiB the service takes (default: MemAvailable '
                         'and --extra)')
    ap.add_argument('--step', type=int, default=20)
    ap.add_argument('--delay-ms', type=int, default=0)
    ap.add_argument('--timeout', type=float, default=120)
    ap.add_argument('--after', type=float, default=10)
    ap.add_argument('--poll', type=float, default=0.2)
    ap.add_argument('--fork', action='store_true',
                    help='poll query-balloon-auto too')
    ap.add_argument('--bound', action='store_true',
                    help='balloon to the floor as the service starts')
    ap.add_argument('--trace', help='the nested QEMU\'s trace log')
    ap.add_argument('--pids', default='',
                    help='LABEL=PID,... to name OOM victims')
    ap.add_argument('--out', required=True)
    args = ap.parse_args()

    with open('/proc/self/oom_score_adj', 'w') as f:
        f.write('-1000')
    signal.signal(signal.SIGTERM, lambda *_: None)
    kmsg = Kmsg()
    qmp = QmpClient(args.qmp, timeout=5.0)
    qemu = args.qemu_pid
    res = {'extra': args.extra, 'step': args.step, 'delay_ms': args.delay_ms}
    mem = keyed('/proc/meminfo')
    res['host'] = {'total': mem['MemTotal'] // MiB,
                   'available': mem['MemAvailable'] // MiB,
                   'free': mem['MemFree'] // MiB,
                   'shmem': mem.get('Shmem', 0) // MiB,
                   'qemu_rss': keyed('/proc/%d/status' % qemu).get(
                       'VmRSS', 0) // MiB}
    b = qmp_or_none(qmp, 'query-balloon')
    res['before'] = b['actual'] // MiB if b else None
    fork_before = qmp_or_none(qmp, 'query-balloon-auto') if args.fork \
        else None
    if fork_before:
        res['source'] = fork_before.get('source')
    oom0 = keyed('/proc/vmstat').get('oom_kill', 0)
    need = args.need or mem['MemAvailable'] // MiB + args.extra
    res['need'] = need
    if args.bound:
        qmp.command('balloon',
                    value=qmp.command('query-balloon-auto')['floor'])

    t0 = time.time()
    svc = Service(args.service, need, args.step, args.delay_ms, t0)
    samples = []
    svc_end = None
    stop_at = None
    while True:
        t = time.time() - t0
        q_alive = alive(qemu)
        s_alive = svc.alive()
        if not q_alive and 'qemu_gone' not in res:
            res['qemu_gone'] = round(t, 3)
        # watched until the service is done, dead or timed out (a dead
        # QEMU leaves it room to finish), then --after seconds more
        if svc_end is None and (svc.done_at is not None or not s_alive or
                                t > args.timeout):
            svc_end = t
            stop_at = t + args.after
        if stop_at is not None and t >= stop_at:
            break
        m = keyed('/proc/meminfo')
        s = {'t': round(t, 3),
             'used': (m['MemTotal'] - m['MemAvailable']) // MiB,
             'svc': (read_int('%s/%s/memory.current' % (CG, args.service))
                     or 0) // MiB}
        b = qmp_or_none(qmp, 'query-balloon') if q_alive else None
        s['actual'] = b['actual'] / MiB if b else None
        # the fork's own reading every other sample: it is dated by its
        # age, and one QMP command less keeps the pace under load
        if args.fork and q_alive and len(samples) % 2 == 0:
            info = qmp_or_none(qmp, 'query-balloon-auto')
            host = (info or {}).get('host')
            if host:
                s['fork'] = [host['usage'] // MiB, host['setpoint'] // MiB,
                             host['age-ms']]
            if info:
                s['target'] = info.get('target', 0) // MiB
        samples.append(s)
        time.sleep(max(0.0, args.poll - (time.time() - t0 - t)))

    res['samples'] = samples
    res['service_end'] = round(svc_end, 3)
    res['service_done'] = svc.done_at is not None
    res['service_seconds'] = round(svc.done_at, 3) \
        if svc.done_at is not None else None
    res['service_alive'] = svc.alive()
    res['service_mib'] = max([s['svc'] for s in samples] or [0])
    res['qemu_alive'] = alive(qemu)
    b = qmp_or_none(qmp, 'query-balloon') if res['qemu_alive'] else None
    res['after'] = b['actual'] // MiB if b else None
    if args.fork and res['qemu_alive']:
        res['fork_after'] = qmp_or_none(qmp, 'query-balloon-auto')
        res['fork_before'] = fork_before
    res['oom_kill'] = keyed('/proc/vmstat').get('oom_kill', 0) - oom0
    labels = {svc.pid: 'service', qemu: 'QEMU'}
    for item in args.pids.split(','):
        if '=' in item:
            label, pid = item.split('=', 1)
            labels[int(pid)] = label
    res['killed'] = []
    res['kernel'] = []
    for line in kmsg.read():
        m = KILLED.search(line)
        if m:
            res['killed'].append(labels.get(int(m.group(1)),
                                            '%s (pid %s)' % (m.group(2),
                                                             m.group(1))))
        if 'oom' in line.lower() or 'Killed process' in line:
            res['kernel'].append(line[:200])
    res['kernel'] = res['kernel'][:20]
    svc.kill()
    res['service_output'] = svc.lines[:20]
    if args.trace:
        events, decisions = trace_entries(args.trace, t0)
        res['decisions'] = decisions[:50]
        res['trace_lines'] = len(events)
    qmp.close()
    with open(args.out + '.tmp', 'w') as f:
        json.dump(res, f)
    os.rename(args.out + '.tmp', args.out)
    return 0


if __name__ == '__main__':
    main()
