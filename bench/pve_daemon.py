#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
A host daemon that balloons QEMU guests over QMP the way Proxmox VE's
pvestatd auto-ballooning is publicly documented to do it; the peer the
benchmark compares the in-device controller with.

This is our own implementation of the published description, not Proxmox
code.  Every cycle (10 s in PVE; the benchmark also runs it at 1 s):

- host usage: the memory cgroup's memory.usage_in_bytes against its
  memory.limit_in_bytes (--cgroup), or, as pvestatd itself does, the
  host's memory in use against MemTotal from /proc/meminfo (--meminfo,
  for hosts that set no limit); the goal is to keep usage at 80 % of the
  limit;
- a dead band of +-10 MiB around the goal: nothing is done inside it;
- above the goal, the VMs shrink toward their configured minimum (PVE's
  "balloon" setting; the benchmark uses 25 % of the VM's size unless told
  otherwise): the amount to give back is split over the VMs that can still
  shrink, weighted by free memory / shares (guests with the most free
  memory give first, a VM with more shares gives less); what a VM cannot
  give (its cap or its minimum) goes to the others in proportion to
  1 / shares;
- below the goal, the VMs grow toward their maximum (the VM's size), the
  room split in proportion to shares;
- no VM moves more than 100 MiB per cycle;
- shares default to 1000 per VM.

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


def distribute(amount, vms, weight, room):
    """Split @amount (bytes) over @vms: each gets a part in proportion to
    weight(vm), limited to room(vm); what is left over goes again to the
    VMs that still have room, in proportion to their weight.  Returns
    {name: bytes}."""
    out = {vm['name']: 0 for vm in vms}
    left = amount
    active = [vm for vm in vms if room(vm) > 0 and weight(vm) > 0]
    while left >= MiB and active:
        total = sum(weight(vm) for vm in active)
        given = 0
        for vm in active:
            part = min(left * weight(vm) / total,
                       room(vm) - out[vm['name']])
            out[vm['name']] += part
            given += part
        left -= given
        active = [vm for vm in active if room(vm) - out[vm['name']] >= MiB]
        if given < MiB:
            break
    return out


def plan(usage, limit, vms):
    """The targets of one cycle.  @vms: dicts with name, actual, free (bytes
    or None), min, max, shares.  Returns (diff, {name: new target})."""
    goal = limit * GOAL_PERCENT // 100
    diff = usage - goal
    if abs(diff) <= DEAD_BAND:
        return diff, {}
    if diff > 0:
        def room(vm):
            return max(0, min(MAX_CHANGE, vm['actual'] - vm['min']))
        # first pass: the guests with free memory give, in proportion to
        # free / shares; the rest of the amount in proportion to 1 / shares
        first = distribute(diff, vms,
                           lambda vm: (vm['free'] or 0) / vm['shares'], room)
        rest = diff - sum(first.values())
        second = distribute(rest, vms, lambda vm: 1.0 / vm['shares'],
                            lambda vm: room(vm) - first[vm['name']])
        change = {n: -(first[n] + second[n]) for n in first}
    else:
        def room(vm):
            return max(0, min(MAX_CHANGE, vm['max'] - vm['actual']))
        grow = distribute(-diff, vms, lambda vm: vm['shares'], room)
        change = grow
    targets = {}
    for vm in vms:
        delta = int(change[vm['name']]) // MiB * MiB
        if delta:
            targets[vm['name']] = vm['actual'] + delta
    return diff, targets


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
