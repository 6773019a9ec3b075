#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
A host daemon that balloons QEMU guests over QMP the way Proxmox VE's
pvestatd auto-ballooning does it; the peer the benchmark compares the
in-device controller with.

This is our own implementation of what pvestatd does (PVE::AutoBalloon in
pve-manager, read for its algorithm), not Proxmox code.  Every cycle (10 s
in PVE; the benchmark also runs it at 1 s):

- host usage: the memory cgroup's memory.usage_in_bytes against its
  memory.limit_in_bytes (--cgroup), or, as pvestatd itself does, the
  host's memory in use against MemTotal from /proc/meminfo (--meminfo,
  for hosts that set no limit); the goal is to keep usage at 80 % of the
  limit (PVE's ballooning-target);
- a dead band of +-10 MiB around the goal: nothing is done inside it;
- the VMs fall in two groups: those with enough free memory (more free
  memory than 25 % of their minimum, and not below the minimum) and the
  rest, which are under pressure (no statistics count as pressure);
- above the goal, the VMs with enough free memory shrink first; only if
  that moves nothing at all do all VMs shrink.  Below the goal, the VMs
  under pressure grow first; only if that moves nothing do all grow;
- a pass evens the VMs out by shares: each VM moves towards its minimum
  plus its share (shares / all shares) of what the pass's VMs hold above
  their minimums plus the amount to move, within [minimum, maximum],
  again while a VM was clamped and something moved.  In a pass that
  shrinks, the VMs above their share shrink; in one that grows, those
  below grow and those above shrink;
- no VM moves more than 100 MiB from its size in a cycle;
- shares default to 1000 per VM; the minimum is PVE's "balloon" setting
  (the benchmark uses 25 % of the VM's size unless told otherwise).

Like Proxmox VE's qemu-server (7.2 and later), the benchmark gives these
VMs free-page-reporting=on.

Free memory is the guest's stat-free-memory from the balloon's guest
statistics (the daemon turns stats polling on through qom-set), the current
size is query-balloon's actual.

In use with --meminfo: pvestatd reads it with pve-common's read_meminfo,
whose memused is MemTotal - MemFree - Buffers - Cached (--memused
cached); --memused available (the default) counts MemTotal - MemAvailable
instead, the reading the fork's host source takes.  The two differ by
what Cached holds that cannot be reclaimed: shared memory and tmpfs (in
the benchmark's nested host, the whole initramfs root), which the
classic reading counts as free.

Usage:
  pve_daemon.py (--cgroup V1DIR | --meminfo [--memused available|cached])
                [--interval 10] [--log FILE]
                --vm NAME:QMP-SOCKET:MAX-MIB:MIN-MIB[:SHARES] ...

One JSON line per cycle goes to --log (or stdout).  SIGTERM ends it.
It runs with the checkout's scripts/ on PYTHONPATH (make bench sets it).
"""

import argparse
import json
import os
import signal
import sys
import time

from qemu_balloon_auto import MiB
from qemu_balloon_auto.qmp import MonitorError, QmpClient, QmpError

GOAL_PERCENT = 80
DEAD_BAND = 10 * MiB
MAX_CHANGE = 100 * MiB
DEFAULT_SHARES = 1000
STATS_POLL_SECONDS = 2
QMP_TIMEOUT = 5.0
# what ends the daemon's use of a VM: QEMU went away or stopped answering
QMP_FAILURES = (MonitorError, QmpError, OSError, ValueError)


def even_out(vms, res, amount):
    """One pass: move @amount bytes (> 0: grow) over @vms, evened out by
    shares, each VM at most MAX_CHANGE from its size.  @res {name: target}
    holds what earlier passes decided and takes this one's.  Returns what
    is left of @amount."""
    rest = amount
    done = set()
    repeat = progress = True
    while rest and repeat and progress:
        repeat = progress = False
        todo = [vm for vm in vms if vm['name'] not in done]
        if not todo:
            break
        cur = {vm['name']: res.get(vm['name'], vm['actual']) for vm in todo}
        above = sum(cur[vm['name']] - vm['min'] for vm in todo)
        shares = sum(vm['shares'] for vm in todo)
        moved = 0
        for vm in todo:
            name = vm['name']
            desired = vm['min'] + int((above + rest) / shares * vm['shares'])
            if desired > vm['max'] or desired < vm['min']:
                desired = min(max(desired, vm['min']), vm['max'])
                repeat = True
            if amount > 0 and desired > vm['actual']:
                new = min(vm['actual'] + MAX_CHANGE, desired)
            elif desired < vm['actual']:
                new = max(vm['actual'] - MAX_CHANGE, desired)
            else:
                done.add(name)
                continue
            if new != cur[name]:
                moved += new - cur[name]
                repeat = True
                progress = progress or new != vm['actual']
            res[name] = new
        rest -= moved
    return rest


def plan(usage, limit, vms):
    """The targets of one cycle.  @vms: dicts with name, actual, free (bytes
    or None), min, max, shares.  Returns (usage over the goal, {name: new
    target})."""
    goal = int(limit * GOAL_PERCENT / 100 - usage)  # > 0: room to grow
    if abs(goal) <= DEAD_BAND:
        return -goal, {}
    enough = [vm for vm in vms if vm['free'] and
              vm['free'] > vm['min'] / 4 and vm['actual'] >= vm['min']]
    pressed = [vm for vm in vms if vm not in enough]
    res = {}
    first = pressed if goal > 0 else enough
    rest = even_out(first, res, goal)
    # no progress towards the goal: all VMs
    if (rest >= goal) if goal > 0 else (rest <= goal):
        even_out(vms, res, rest)
    targets = {}
    for vm in vms:
        target = int(res.get(vm['name'], vm['actual']))
        if target != int(vm['actual']):
            targets[vm['name']] = target
    return -goal, targets


def read_int(path):
    with open(path) as f:
        return int(f.read())


def read_meminfo(path='/proc/meminfo'):
    """/proc/meminfo as {key: bytes}."""
    vals = {}
    with open(path) as f:
        for line in f:
            key, _, rest = line.partition(':')
            parts = rest.split()
            if parts and parts[0].isdigit():
                vals[key] = int(parts[0]) * (1024 if parts[1:2] == ['kB']
                                             else 1)
    return vals


def meminfo_usage(info, memused='available'):
    """(usage, limit) of the host from /proc/meminfo values @info:
    memory in use against MemTotal.  @memused 'cached': pve-common's
    MemTotal - (MemFree + Buffers + Cached); 'available': MemTotal -
    MemAvailable."""
    total = info['MemTotal']
    if memused == 'cached':
        free = info['MemFree'] + info.get('Buffers', 0) + \
            info.get('Cached', 0)
    else:
        free = info['MemAvailable']
    return max(0, total - free), total


def host_usage(args):
    """(usage, limit) in bytes: the cgroup's or the host's."""
    if args.meminfo:
        return meminfo_usage(read_meminfo(), args.memused)
    return (read_int(os.path.join(args.cgroup, 'memory.usage_in_bytes')),
            read_int(os.path.join(args.cgroup, 'memory.limit_in_bytes')))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument('--cgroup',
                       help='v1 memory cgroup directory of the host')
    where.add_argument('--meminfo', action='store_true',
                       help='the host\'s own memory (/proc/meminfo)')
    ap.add_argument('--memused', choices=('available', 'cached'),
                    default='available',
                    help='--meminfo: memory in use is MemTotal - '
                    'MemAvailable (available) or MemTotal - MemFree - '
                    'Buffers - Cached (cached, pve-common\'s)')
    ap.add_argument('--interval', type=float, default=10.0)
    ap.add_argument('--vm', action='append', required=True,
                    help='NAME:QMP-SOCKET:MAX-MIB:MIN-MIB[:SHARES]')
    ap.add_argument('--log', help='JSON lines log (default: stdout)')
    args = ap.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    log = open(args.log, 'a') if args.log else sys.stdout

    vms = []
    for spec in args.vm:
        parts = spec.split(':')
        vms.append({'name': parts[0], 'sock': parts[1],
                    'max': int(parts[2]) * MiB, 'min': int(parts[3]) * MiB,
                    'shares': int(parts[4]) if len(parts) > 4
                    else DEFAULT_SHARES, 'qmp': None, 'dead': False})

    def connect(vm):
        if vm['qmp'] is None and not vm['dead']:
            try:
                vm['qmp'] = QmpClient(vm['sock'],
                                      timeout=QMP_TIMEOUT).connect()
                vm['qmp'].command('qom-set',
                                  path='/machine/peripheral/balloon0',
                                  property='guest-stats-polling-interval',
                                  value=STATS_POLL_SECONDS)
            except QMP_FAILURES:
                vm['qmp'] = None
        return vm['qmp']

    t0 = time.monotonic()
    next_cycle = t0
    while not stop:
        entry = {'t': round(time.monotonic() - t0, 3)}
        try:
            usage, limit = host_usage(args)
        except OSError:
            break                               # the cgroup is gone
        live = []
        for vm in vms:
            qmp = connect(vm)
            if not qmp:
                continue
            try:
                vm['actual'] = qmp.command('query-balloon')['actual']
                stats = qmp.command('qom-get',
                                    path='/machine/peripheral/balloon0',
                                    property='guest-stats')
                free = stats.get('stats', {}).get('stat-free-memory', -1)
                vm['free'] = free if free >= 0 else None
                live.append(vm)
            except QMP_FAILURES:
                vm['qmp'] = None
                vm['dead'] = True       # QEMU went away
        diff, targets = plan(usage, limit, live)
        for vm in live:
            if vm['name'] in targets:
                try:
                    vm['qmp'].command('balloon', value=targets[vm['name']])
                except QMP_FAILURES:
                    vm['qmp'] = None
                    vm['dead'] = True
        entry.update(usage=usage // MiB, limit=limit // MiB,
                     diff=diff // MiB,
                     vms={vm['name']: {'actual': vm['actual'] // MiB,
                                       'free': (vm['free'] // MiB
                                                if vm['free'] is not None
                                                else None),
                                       'target': targets.get(vm['name'],
                                                             vm['actual'])
                                       // MiB} for vm in live})
        log.write(json.dumps(entry) + '\n')
        log.flush()
        next_cycle += args.interval
        delay = next_cycle - time.monotonic()
        if delay < 0:
            next_cycle = time.monotonic()
            delay = 0
        end = time.monotonic() + delay
        while not stop and time.monotonic() < end:
            time.sleep(min(0.1, end - time.monotonic()))
    for vm in vms:
        if vm['qmp']:
            vm['qmp'].close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
