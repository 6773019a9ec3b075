#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Host-side view of QEMU balloons: for every VM it can reach, the balloon
size, the guest's available memory, QEMU's resident memory, the state of
automatic ballooning, the host pressure level and the last decision with
its reason.

VMs are named by QMP unix socket paths (a monitor QEMU was started with,
e.g. -qmp unix:/run/vm1.qmp,server=on,wait=off; QMP serves one client at a
time, so use a socket nobody else holds) or by libvirt domain names, which
are queried through 'virsh qemu-monitor-command' (libvirt marks such
domains as tainted by custom monitor commands).

    balloon_auto_top.py /run/vm1.qmp /run/vm2.qmp     one-shot table
    balloon_auto_top.py --libvirt                     every running domain
    balloon_auto_top.py --libvirt qemu:///system web1 db1 --watch 2
    balloon_auto_top.py /run/vm1.qmp --record run.jsonl --duration 120 \\
        --plot run.png                                record, then plot
    balloon_auto_top.py --record run.jsonl --plot run.png   plot a recording

Ctrl-C (SIGINT) or SIGTERM ends --watch and --record at once, also while
a VM does not answer and also when the tool was started with SIGINT
ignored (as a background job of a script); the samples so far are kept
and --plot is drawn.
"""

import argparse
import json
import os
import sys
import time

from qemu_balloon_auto import MiB, stop_on_signals
from qemu_balloon_auto.qmp import (LibvirtMonitor, MonitorError, QmpClient,
                                   QmpError, virsh)

UNSET = 2 ** 64 - 1             # a guest statistic the guest did not supply
LEVEL_COLOURS = {'low': '#e6b800', 'medium': '#ff7f0e', 'critical': '#d62728'}
# seconds a VM may take to answer: one that does not is shown unreachable
QMP_TIMEOUT = 3.0
VIRSH_TIMEOUT = 10.0


def libvirt_running_domains(uri):
    try:
        out = virsh(uri, 'list', '--name', timeout=VIRSH_TIMEOUT)
    except MonitorError as e:
        raise SystemExit('balloon_auto_top: %s' % e) from e
    return [name for name in out.split() if name]


def qemu_pid(session):
    """QEMU's process id: the thread group of a vCPU thread."""
    for cpu in session.command('query-cpus-fast'):
        try:
            with open('/proc/%d/status' % cpu['thread-id']) as f:
                for line in f:
                    if line.startswith('Tgid:'):
                        return int(line.split()[1])
        except OSError:
            pass
    return None


def rss_of(pid):
    """VmRSS of @pid in bytes, or None."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) * 1024
    except (OSError, TypeError):
        pass
    return None


def manual_available(session):
    """The guest's available memory as a balloon without automatic mode
    reports it (only while statistics polling is on), or None."""
    for parent in ('/machine/peripheral', '/machine/peripheral-anon'):
        for child in session.command('qom-list', path=parent):
            if child['type'].startswith('child<virtio-balloon'):
                stats = session.command('qom-get',
                                      path=parent + '/' + child['name'],
                                      property='guest-stats')
                value = stats['stats'].get('stat-available-memory', UNSET)
                if stats['last-update'] and value != UNSET:
                    return value
                return None
    return None


def balloon_state(session):
    """The balloon part of a sample."""
    try:
        actual = session.command('query-balloon')['actual']
    except QmpError as e:
        if e.error_class != 'DeviceNotActive':
            raise
        return {'status': 'no balloon'}
    try:
        auto = session.command('query-balloon-auto')
    except QmpError as e:
        if e.error_class != 'CommandNotFound':
            raise
        auto = None
    if auto is None or not auto['enabled']:
        return {'actual': actual, 'available': manual_available(session),
                'status': 'manual' if auto else
                          'manual (QEMU without automatic)'}
    state = {key: auto[key] for key in ('status', 'level', 'target',
                                        'baseline', 'floor', 'max')}
    state.update({
        'actual': actual,
        'available': auto.get('guest-stats', {}).get('available'),
        'events': {e['level']: e['events'] for e in auto['events']},
        'decision': auto.get('last-decision'),
        'source': auto['source']['kind'],
    })
    return state


def sample(target):
    """One VM's state as a dict (see the table and the recording)."""
    row = {'vm': target.label}
    try:
        with target as session:
            if isinstance(target, QmpClient):
                row['vm'] = (session.command('query-name').get('name') or
                             os.path.basename(target.path))
            row['pid'] = qemu_pid(session)
            row.update(balloon_state(session))
    except (MonitorError, QmpError, OSError, ValueError) as e:
        row['error'] = str(e)
        return row
    row['rss'] = rss_of(row['pid'])
    return row


def mib(value):
    return '-' if value is None else '%d' % (value // MiB)


def why(decision):
    """The last decision, e.g. 'host-pressure/medium 1024->996 MiB 3s ago'."""
    if not decision:
        return '-'
    level = ('/' + decision['level']) if decision['level'] != 'none' else ''
    return '%s%s %d->%d MiB %ds ago%s' % (
        decision['reason'], level, decision['old-target'] // MiB,
        decision['new-target'] // MiB, decision['age-ms'] // 1000,
        '' if decision['applied'] else ' (not applied)')


COLUMNS = ('VM', 'PID', 'ACTUAL', 'TARGET', 'BASE', 'FLOOR', 'AVAIL', 'RSS',
           'STATUS', 'LEVEL', 'LAST DECISION')
LEFT_ALIGNED = ('VM', 'STATUS', 'LEVEL', 'LAST DECISION')


def table(rows):
    """The rows as a text table; sizes in MiB."""
    lines = [COLUMNS]
    for r in rows:
        if 'error' in r:
            lines.append((r['vm'], 'unreachable: ' + r['error']))
            continue
        lines.append((r['vm'], str(r.get('pid') or '-'),
                      mib(r.get('actual')), mib(r.get('target')),
                      mib(r.get('baseline')), mib(r.get('floor')),
                      mib(r.get('available')), mib(r.get('rss')),
                      r['status'], r.get('level', '-'),
                      why(r.get('decision'))))
    full = [line for line in lines if len(line) == len(COLUMNS)]
    widths = [max(len(line[i]) for line in full) for i in range(len(COLUMNS))]
    widths[0] = max(len(line[0]) for line in lines)
    out = []
    for line in lines:
        if len(line) != len(COLUMNS):
            out.append('%-*s  %s' % (widths[0], line[0], line[1]))
            continue
        out.append('  '.join(
            cell.ljust(width) if name in LEFT_ALIGNED else cell.rjust(width)
            for name, cell, width in zip(COLUMNS, line, widths)).rstrip())
    return '\n'.join(out)


def sample_all(targets):
    return {'time': time.time(), 'vms': [sample(t) for t in targets]}


def read_recording(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot(recording, png):
    """Draw balloon size, guest available memory, QEMU RSS and host
    pressure events over time, one panel per VM."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    samples = read_recording(recording)
    if not samples:
        raise SystemExit('balloon_auto_top: %s holds no samples' % recording)
    t0 = samples[0]['time']
    names = []
    for s in samples:
        for r in s['vms']:
            if r['vm'] not in names:
                names.append(r['vm'])
    fig, axes = plt.subplots(len(names), 1, sharex=True, squeeze=False,
                             figsize=(10, 3.5 * len(names)))
    for ax, name in zip(axes[:, 0], names):
        rows = [(s['time'] - t0, r) for s in samples for r in s['vms']
                if r['vm'] == name and 'error' not in r]
        for key, label, style in (('actual', 'balloon: guest size', 'C0-'),
                                  ('target', 'target', 'C0--'),
                                  ('available', 'guest available', 'C2-'),
                                  ('rss', 'QEMU RSS', 'C3-')):
            points = [(t, r[key] / MiB) for t, r in rows
                      if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), style, label=label)
        labelled = set()
        previous = {}
        for t, r in rows:
            for level, count in r.get('events', {}).items():
                if count > previous.get(level, count):
                    ax.axvline(t, color=LEVEL_COLOURS.get(level, 'grey'),
                               alpha=0.5, linewidth=1,
                               label=None if level in labelled else
                               'host pressure: ' + level)
                    labelled.add(level)
                previous[level] = count
        ax.set_title(name)
        ax.set_ylabel('MiB')
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc='lower left', fontsize='small')
    axes[-1, 0].set_xlabel('seconds')
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def targets_from(args):
    """QMP sockets for paths, libvirt domains for names."""
    targets = []
    domains = []
    for t in args.targets:
        if '/' in t or os.path.exists(t):
            targets.append(QmpClient(t, timeout=args.timeout or QMP_TIMEOUT))
        else:
            domains.append(t)
    uri = args.libvirt or None
    if args.libvirt is not None and not domains:
        domains = libvirt_running_domains(uri)
    targets += [LibvirtMonitor(d, uri, timeout=args.timeout or VIRSH_TIMEOUT)
                for d in domains]
    return targets


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('targets', nargs='*', metavar='SOCKET|DOMAIN',
                    help='QMP unix socket path, or libvirt domain name')
    ap.add_argument('--libvirt', nargs='?', const='', metavar='URI',
                    help='query libvirt domains (default URI: virsh\'s);'
                    ' all running ones unless domains are named')
    ap.add_argument('--watch', nargs='?', type=float, const=2.0,
                    metavar='SECONDS', help='refresh every SECONDS (2)')
    ap.add_argument('--record', metavar='FILE.jsonl',
                    help='append a sample every --interval to FILE')
    ap.add_argument('--interval', type=float, default=1.0,
                    help='seconds between recorded samples (1; with'
                    ' --watch, its SECONDS)')
    ap.add_argument('--duration', type=float,
                    help='stop watching/recording after SECONDS')
    ap.add_argument('--plot', metavar='FILE.png',
                    help='draw the --record file (after recording, if VMs'
                    ' are given)')
    ap.add_argument('--json', action='store_true',
                    help='print samples as JSON instead of a table')
    ap.add_argument('--timeout', type=float, metavar='SECONDS',
                    help='how long a VM may take to answer before it is'
                    ' shown unreachable (%g; through virsh %g)' % (
                        QMP_TIMEOUT, VIRSH_TIMEOUT))
    args = ap.parse_args()

    if args.plot and not args.record:
        ap.error('--plot draws the file given with --record')
    targets = targets_from(args)
    if not targets:
        if args.plot:
            plot(args.record, args.plot)
            print('plot written to', args.plot)
            return 0
        ap.error('no VM given (QMP socket paths, domain names or --libvirt)')

    loop = args.watch is not None or args.record
    if loop:
        # a watch or a recording ends at once, where it waits
        stop_on_signals()
    interval = args.watch if args.watch is not None else args.interval
    end = time.monotonic() + args.duration if args.duration else None
    recording = open(args.record, 'a') if args.record else None
    count = 0
    try:
        while True:
            snap = sample_all(targets)
            count += 1
            if recording:
                recording.write(json.dumps(snap) + '\n')
                recording.flush()
            if args.json:
                print(json.dumps(snap), flush=True)
            elif args.watch is not None:
                if sys.stdout.isatty():
                    sys.stdout.write('\033[H\033[2J')
                print(time.strftime('%H:%M:%S'), '(sizes in MiB)')
                print(table(snap['vms']), flush=True)
            elif not loop:
                print(table(snap['vms']))
            if not loop or (end and time.monotonic() + interval > end):
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        if recording:
            recording.close()
    if args.record and args.watch is None and not args.json:
        print('recorded %d samples of %d VMs to %s' % (
            count, len(targets), args.record))
    if args.plot:
        try:
            plot(args.record, args.plot)
        except KeyboardInterrupt:
            # a second signal: the recording is complete, the plot is not
            sys.stderr.write('balloon_auto_top: plot interrupted; draw it'
                             ' again with --record %s --plot %s\n' % (
                                 args.record, args.plot))
            return 130
        print('plot written to', args.plot)
    return 0


if __name__ == '__main__':
    sys.exit(main())
