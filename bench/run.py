#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Benchmarks of the automatic balloon, measured side by side in one run.

1. reaction: time from a host pressure event (an eventfd handed to QEMU as
   pressure-fd, written by this script) to the BALLOON_AUTO_DECISION event
   that carries the new target (QEMU timestamps it when it decides).
   Goal: under 10 ms.
2. idle cost: CPU time and voluntary context switches of a booted, idle VM
   over the same interval after the same settle, the fork with
   automatic=on (with no host source, and with the host's memory, far
   below its setpoint here) against the pristine build of the same base,
   interleaved, --runs times: median and range, and the ratios of the
   medians; and how often the host-memory source read /proc/meminfo.

Benchmark with peers (bench/peers.py, bench/scenarios.py).  Setups, each a
real guest (the bundled test guest under TCG) in a real v1 memory cgroup:

  fork-auto         the fork: automatic=on,pressure-source=cgroup-v1,
                    pressure-cgroup=<the benchmark's cgroup>
  upstream          the pristine build, plain balloon, nobody drives it
  upstream-doo-fpr  the pristine build, deflate-on-oom=on,
                    free-page-reporting=on
  pve-10s, pve-1s   the pristine build, free-page-reporting=on (as Proxmox
                    VE gives it), driven over a second QMP monitor by
                    bench/pve_daemon.py, our implementation of Proxmox VE's
                    auto-ballooning (keep memcg usage at 80 % of the limit,
                    at most 100 MiB per VM per cycle, +-10 MiB dead band,
                    shares 1000, minimum 25 % of the VM's size; shrink the
                    VMs with free memory first, grow those under pressure
                    first, evened out by shares) at a 10 s and a 1 s cycle
  any of them with "+doo" adds deflate-on-oom=on (seed uses fork-auto+doo
  and pve-1s+doo), with "+fpr" free-page-reporting=on (fork-auto+fpr),
  with "+nopc" its guest boots with vm.compaction_proactiveness=0 (seed's
  /bound then compares with bound+nopc, when it runs); fork-auto and bound
  only: "+floorN" sets auto-floor to N MiB (the default floor is a
  quarter of the guest), "+reserveN" auto-reserve (default a sixteenth)
  bound             host-rate's, seed's, density's and no-limit's
                    reference row, always run there: the fork's binary with
                    automatic=off; as the host process or the service
                    starts, a `balloon` command asks for all the guest can
                    give (down to the floor the fork would stop at): what
                    a perfect controller gets from this device, limited
                    only by how fast the guest's driver inflates.  Just
                    the deficit is not enough: a ballooned page frees
                    less than its size while the huge page around it
                    waits to be split.  In density the guests start at
                    equal shares of the cgroup; as each turn starts the
                    others are asked for all they can give, and the
                    allocating guest gets, every 100 ms, all that their
                    QEMUs' memory leaves under 95 % of the limit.  In
                    seed the guest is given, as it starts allocating,
                    exactly what it needs: the memory it has not
                    available, the allocation and the fork's reserve
                    (giving it everything is slower: the guest's one vCPU
                    does the deflating).

Scenarios:

3. host-rate: a 1 GiB guest holds 850 MiB of page cache (`bgt cache` on a
   virtio-blk raw disk, cache=none) in a 1400 MiB memcg; a host process in
   the memcg (qemu_balloon_auto.testing.hog) allocates 700 MiB at a
   nominal 100, 300, 500, 1000, 2000 MiB/s (--rates; "max": no pacing at
   all).  Per setup and rate: survived (QEMU alive, host process done and
   alive, memcg oom_kill 0, 10 s after the allocation) or what died
   (memory.oom_control and the killed pid from the kernel log), the rate
   achieved, and the highest nominal rate survived.
4. seed: a 3 GiB guest set to 1 GiB (`balloon`) allocates 1536 MiB as fast
   as it can, no delay, in one mapping (`bgt alloc 1536`) and in 32 MiB
   mappings (`--step 32`; --seed-steps); success over --runs runs, the
   time, and per run its ratio to the bound's and to the baseline's: the
   same allocation in the same 3 GiB guest with nothing ballooned (the
   fork's binary, automatic=off; set to 1 GiB and back first: memory the
   host never backed is slower to fault in).  Every setup settles alike
   before the allocation.  "migrated": the balloon pages the guest's
   compaction moved meanwhile (vmstat balloon_migrate), each a round trip
   to the host.  Failures name the guest OOM killer (vmstat oom_kill),
   bgt's own error or a dead QEMU.  One mapping larger
   than the ballooned guest's MemTotal is refused at once by the guest's
   overcommit heuristic unless deflate-on-oom is on (the guest driver then
   leaves MemTotal alone).  A PVE daemon starts with the allocation, the
   guest's minimum at 1 GiB (a PVE VM with balloon=1024, memory=3072).
5. density: N = 2, 3, 4 guests of 1 GiB in a 2000 MiB memcg; each fills
   700 MiB of page cache, then one after another each allocates 600 MiB
   in 32 MiB mappings (held 5 s, then freed).  Per setup and N: guests
   completing with no OOM kill (host memcg or guest), the largest N
   sustained, and the longest time a guest was stalled: its allocation
   running, its balloon inflated, and another guest holding >= 128 MiB of
   page cache it was not using ("+free": page cache or free memory), from
   query-balloon and `bgt meminfo` on the consoles about once a second.

6. no-limit: the host's own memory as the limit, as on most KVM hosts
   (no memory.max on any cgroup), in a nested host, since this machine
   must never run out of memory itself (bench/nolimit.py): the bundled
   6.12 guest booted with 1 GiB as a cgroup v2 host with the fork built
   small (`make v2host`; qemu_balloon_auto.testing.nested), booted once
   for all measurements.  In it one 448 MiB nested guest (TCG inside TCG)
   in machine.slice/vm.scope, started afresh for every measurement, uses
   and frees 300 MiB (`bgt alloc 300`), then after the same 10 s for
   every setup a service in system.slice takes N MiB (`bgt alloc N
   --step 20 --delay-ms D`) at a nominal 20, 50, 100, 200 MiB/s and with
   no delay (--no-limit-rates).  N is the same for every setup: the
   host's MemAvailable + 150 MiB next to such a VM without free page
   reporting, measured once (the PVE setups' free page reporting gives
   the freed memory back before the service starts).  With
   --no-limit-guest cache the guest holds its 300 MiB as page cache of
   its disk instead, which free page reporting does not give back: only
   ballooning does.  Setups, all with
   the fork's binary: fork-auto (automatic=on: auto-detection takes the
   host's memory), upstream (automatic=off, nobody drives the balloon),
   pve-10s and pve-1s (automatic=off, bench/pve_daemon.py --meminfo in
   the nested host, host memory in use against 80 % of MemTotal), and
   the mechanism's bound as a reference row (automatic=off, a `balloon`
   command down to the fork's floor just before the service starts:
   only the guest's driver limits it).  Per
   setup and rate: survived (QEMU alive, the service done, /proc/vmstat
   oom_kill unchanged, 10 s after the service is done) or what the OOM
   killer took (kernel log), the achieved rate, the service's time, the
   balloon's size before and after; per setup the highest rate survived.
   Measured inside the nested host by bench/nolimit_probe.py, polling
   every 0.2 s.  From the first fork-auto run at 100 MiB/s, the stages
   of the fork's reaction (its trace: -trace enable=virtio_balloon_auto_*
   -msg timestamp=on): service start, host over the setpoint, the fork's
   first reading over it, its first decision, the driver's first
   progress and its inflate rate.

Usage:
  run.py [--pristine PRISTINE] [--fork FORK] [--scenario LIST]
         [--setups LIST] [--runs N] [--rates LIST] [--guests LIST]
         [--no-limit-rates LIST] [--no-limit-guest freed|cache]
         [--quick] [--out DIR]

--scenario takes a comma-separated subset of reaction, idle, host-rate,
seed, density, no-limit (default: all; every one but reaction and
no-limit needs --pristine).  --setups picks setups for the peer
scenarios (no-limit: fork-auto, upstream, pve-10s, pve-1s unless given),
--runs repeats each measurement (default 3), interleaved: for each run,
for each rate, each setup in turn.  --quick: one run, rates 300 and
1000, N = 2 and 3, setups fork-auto, upstream and pve-1s (seed adds
fork-auto+doo and pve-1s+doo; no-limit keeps its four), 5 reaction
samples, 20 s idle.  Results go to OUT/results.json (no-limit's summary
under "no_limit") and OUT/bench.png (default OUT: build/bench); -v prints
progress, --keep keeps console logs.  On a 2-core machine under TCG the
scenarios but no-limit take about 1.5 hours (about 30 minutes per run of
the peer scenarios), --quick about 11 minutes; no-limit about 38 minutes
per run (25 measurements of about 1.5 minutes, each with its nested guest
restored in about 20 s), so about 38 minutes with --quick and 1.9 hours
in full.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from qemu_balloon_auto import MiB, stop_on_signals
from qemu_balloon_auto.testing.guest import TOP, TREE, TestVM

import nolimit
import peers
import report
import scenarios as scenarios_mod


def proc_cost(pid):
    """(CPU seconds, voluntary context switches) of all threads of @pid."""
    ticks = os.sysconf('SC_CLK_TCK')
    cpu = ctx = 0
    for tid in os.listdir('/proc/%d/task' % pid):
        with open('/proc/%d/task/%s/stat' % (pid, tid)) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        cpu += (int(fields[11]) + int(fields[12])) / ticks
        with open('/proc/%d/task/%s/status' % (pid, tid)) as f:
            for line in f:
                if line.startswith('voluntary_ctxt_switches'):
                    ctx += int(line.split()[1])
    return cpu, ctx


def reaction(samples, tree=None, workdir=None):
    efd = os.eventfd(0)
    vm = TestVM('bench-reaction', mem='2G', tree=tree, workdir=workdir,
                balloon='automatic=on,pressure-fd=/dev/fdset/1,'
                        'pressure-fd-level=critical')
    vm.machine.add_fd(efd, 1, 'bench pressure eventfd')
    lat = []
    with vm:
        vm.wait_guest_stats(60)
        vm.machine.get_qmp_events(wait=False)
        for _ in range(samples):
            vm.cmd('balloon', value=2048 * MiB)     # back to the baseline
            time.sleep(1.5)                         # past cooldown/throttle
            vm.machine.get_qmp_events(wait=False)
            t0 = time.time()
            os.eventfd_write(efd, 1)
            ev = vm.event_wait('BALLOON_AUTO_DECISION', 10)
            ts = ev['timestamp']
            lat.append((ts['seconds'] + ts['microseconds'] / 1e6 - t0) * 1e3)
    os.close(efd)
    return lat


# idle cells: (label, build, balloon options); the host-memory source
# runs where it is meant to, far below its setpoint (this machine's RAM)
IDLE_CELLS = (('fork automatic=on, no source', 'fork',
               'automatic=on,pressure-source=none'),
              ('fork automatic=on, host memory', 'fork',
               'automatic=on,pressure-source=host'),
              ('pristine', 'pristine', ''))


# how often source_reads() samples: well under the statistics' second,
# so that a source reading with every statistics shows each reading (a
# sample a second missed all of them)
READS_SAMPLE_S = 0.2


def source_reads(vm, seconds):
    """How many times the source read the host's memory in @seconds, seen
    as the drops of query-balloon-auto's host age-ms, sampled every
    READS_SAMPLE_S (after the cost interval: the queries wake QEMU
    too)."""
    reads, last = 0, None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        age = vm.cmd('query-balloon-auto')['host']['age-ms']
        if last is not None and age < last:
            reads += 1
        last = age
        time.sleep(READS_SAMPLE_S)
    return reads


def idle_cost(tree, balloon, seconds, workdir=None):
    """(CPU seconds, wake-ups, host-memory reads or None) of an idle VM
    over @seconds, after the same 5 s settle for every cell."""
    vm = TestVM('bench-idle', mem='1G', tree=tree, balloon=balloon,
                workdir=workdir)
    with vm:
        time.sleep(5)                   # let boot-time activity settle
        cpu0, ctx0 = proc_cost(vm.pid)
        time.sleep(seconds)
        cpu1, ctx1 = proc_cost(vm.pid)
        reads = source_reads(vm, seconds) if 'host' in balloon else None
    return cpu1 - cpu0, ctx1 - ctx0, reads


def spread(values, fmt='%.2f'):
    """median [min-max] of @values."""
    return (fmt + ' [' + fmt + '-' + fmt + ']') % (
        statistics.median(values), min(values), max(values))


def idle_scenario(trees, seconds, runs, workdir, say):
    """The idle cells interleaved, @runs times each; medians and ranges,
    and ratios of the medians to pristine's."""
    cost = {label: [] for label, _, _ in IDLE_CELLS}
    reads = []
    for _ in range(runs):
        for label, build, balloon in IDLE_CELLS:
            cpu, ctx, n = idle_cost(trees[build], balloon, seconds, workdir)
            cost[label].append((cpu, ctx))
            if n is not None:
                reads.append(n)
    base = [statistics.median(c[i] for c in cost['pristine'])
            for i in (0, 1)]
    for label, _, _ in IDLE_CELLS:
        cpu = [c[0] for c in cost[label]]
        ctx = [c[1] for c in cost[label]]
        say('idle %d s, %d run(s), %s: CPU %s s, wake-ups %s; ratio to '
            'pristine CPU %.2f, wake-ups %.2f' % (
                seconds, runs, label, spread(cpu), spread(ctx, '%d'),
                statistics.median(cpu) / max(base[0], 1e-9),
                statistics.median(ctx) / max(base[1], 1)))
    say('idle: the host-memory source read /proc/meminfo %s times in %d s '
        '(target: at most one per 10 s far below the setpoint)' % (
            spread(reads, '%d'), seconds))


SCENARIOS = ['reaction', 'idle', 'host-rate', 'seed', 'density', 'no-limit']
# the scenarios that run the pristine build
PRISTINE_SCENARIOS = ['idle', 'host-rate', 'seed', 'density']
SEED_EXTRA = ['fork-auto+doo', 'pve-1s+doo']
NOLIMIT_SETUPS = ['fork-auto', 'upstream', 'pve-10s', 'pve-1s']


def with_bound(setups):
    """@setups with the mechanism's bound last, once: the reference row of
    host-rate, seed, density and no-limit."""
    return [s for s in setups if s != 'bound'] + ['bound']


def tree_of(binary):
    """The tree of a build's qemu-system-x86_64 (TREE/build/BINARY)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(binary)))


def csv(value, conv=str):
    return [conv(x) for x in value.split(',') if x]


def host_rate_arg(text):
    """A nominal host rate in MiB/s, or 'max': no pacing."""
    return text if text == 'max' else int(text)


def seed_setups(setups):
    """The seed scenario's setups: fork-auto and pve-1s also with
    deflate-on-oom where the list does not already say."""
    out = list(setups)
    for extra in SEED_EXTRA:
        base = extra.split('+')[0]
        if base in out and extra not in out:
            out.insert(out.index(base) + 1, extra)
    return out


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--fork', help='qemu-system-x86_64 of the fork (default:'
                    ' this checkout\'s build)')
    ap.add_argument('--pristine',
                    help='qemu-system-x86_64 of the pristine build (%s)'
                    % ', '.join(PRISTINE_SCENARIOS))
    ap.add_argument('--scenario', default=','.join(SCENARIOS),
                    help='comma-separated subset of %s' % ','.join(SCENARIOS))
    ap.add_argument('--setups', help='comma-separated setups for the peer '
                    'scenarios (default: %s; seed adds %s)' % (
                        ','.join(peers.DEFAULT_SETUPS), ','.join(SEED_EXTRA)))
    ap.add_argument('--runs', type=int, help='repetitions of each peer '
                    'measurement (default 3, --quick 1)')
    ap.add_argument('--rates', help='host-rate nominal MiB/s, max for no '
                    'pacing (default 100,300,500,1000,2000)')
    ap.add_argument('--seed-steps', default='0,32',
                    help='seed: bgt alloc --step values, 0 = one mapping '
                    '(default 0,32: both)')
    ap.add_argument('--guests', help='density guest counts (default 2,3,4)')
    ap.add_argument('--no-limit-rates',
                    help='no-limit service nominal MiB/s, max for no delay '
                    '(default %s)' % ','.join(str(r) for r in nolimit.RATES))
    ap.add_argument('--no-limit-guest', choices=nolimit.GUESTS,
                    default='freed',
                    help='no-limit: the guest used and freed its 300 MiB'
                         ' (freed, the default) or holds them as page'
                         ' cache of its disk (cache)')
    ap.add_argument('--quick', action='store_true',
                    help='a short run: see the description')
    ap.add_argument('--samples', type=int, help='reaction events (10)')
    ap.add_argument('--idle-seconds', type=int, help='idle interval (60)')
    ap.add_argument('--kernel', default='stable',
                    choices=('stable', 'backports'),
                    help='guest kernel: 6.1 (stable) or 6.12 (backports)')
    ap.add_argument('--out', default=os.path.join(TOP, 'build', 'bench'),
                    help='directory for results.json and bench.png')
    ap.add_argument('--workdir', help='scratch directory for disks, sockets'
                    ' and console logs (default: a new one under /tmp, '
                    'removed at the end unless --keep)')
    ap.add_argument('--keep', action='store_true',
                    help='keep the scratch directory (console logs)')
    ap.add_argument('--report', metavar='RESULTS',
                    help='run nothing: print the table of RESULTS (a '
                    'results.json) and draw its bench.png into --out')
    ap.add_argument('-v', '--verbose', action='store_true')
    args = ap.parse_args()
    if args.report:
        return render(args.report, args.out)

    q = args.quick
    scenarios = csv(args.scenario)
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error('unknown scenario %r (known: %s)' % (
                s, ', '.join(SCENARIOS)))
    setups = csv(args.setups) if args.setups else (
        ['fork-auto', 'upstream', 'pve-1s'] if q else peers.DEFAULT_SETUPS)
    nl_setups = with_bound(csv(args.setups) if args.setups else
                           NOLIMIT_SETUPS)
    try:
        for s in setups:
            peers.Setup(s)
    except ValueError as e:
        ap.error(str(e))
    setups = [s for s in setups if s != 'bound']
    setups_and_bound = with_bound(setups)
    runs = args.runs or (1 if q else 3)
    rates = csv(args.rates, host_rate_arg) if args.rates else (
        [300, 1000] if q else [100, 300, 500, 1000, 2000])
    guests = csv(args.guests, int) if args.guests else (
        [2, 3] if q else [2, 3, 4])
    nl_rates = csv(args.no_limit_rates, host_rate_arg) \
        if args.no_limit_rates else nolimit.RATES
    seed_steps = csv(args.seed_steps, int)
    samples = args.samples or (5 if q else 10)
    idle_seconds = args.idle_seconds or (20 if q else 60)
    if set(scenarios) & set(PRISTINE_SCENARIOS) and not args.pristine:
        ap.error('--pristine is needed by %s' % ', '.join(
            s for s in scenarios if s in PRISTINE_SCENARIOS))
    for binary in ([args.pristine] if args.pristine else []) + (
            [args.fork] if args.fork else []):
        if not os.access(binary, os.X_OK):
            ap.error('%s: no such executable (make pristine / make)' % binary)
    fork_tree = tree_of(args.fork) if args.fork else None
    pristine_tree = tree_of(args.pristine) if args.pristine else None
    os.makedirs(args.out, exist_ok=True)
    workdir = args.workdir or tempfile.mkdtemp(prefix='balloon-bench-')
    os.makedirs(workdir, exist_ok=True)

    started = time.monotonic()
    summary = []
    results = []

    def say(line):
        print(line, flush=True)
        summary.append(line)

    def save():
        data = {'summary': summary, 'results': results}
        nl_summary = report.nolimit_summary(results)
        if nl_summary:
            data['no_limit'] = nl_summary
        with open(os.path.join(args.out, 'results.json'), 'w') as f:
            json.dump(data, f, indent=1)

    def record(res):
        results.append(res)
        print('  ' + short(res), flush=True)
        save()

    # SIGTERM too shuts the guests down and removes their cgroups
    stop_on_signals()
    try:
        if 'reaction' in scenarios:
            lat = reaction(samples, fork_tree, workdir)
            say('reaction: pressure event -> new target: median %.2f ms, max '
                '%.2f ms over %d events (goal < 10 ms)' % (
                    statistics.median(lat), max(lat), len(lat)))
        if 'idle' in scenarios:
            idle_scenario({'fork': fork_tree, 'pristine': pristine_tree},
                          idle_seconds, runs, workdir, say)
        env = None
        if set(scenarios) & {'host-rate', 'seed', 'density'}:
            env = peers.Env(fork_tree or TREE, pristine_tree,
                            workdir, args.kernel, args.verbose)
        if 'host-rate' in scenarios:
            print('host-rate: setups %s, rates %s, %d run(s)' % (
                ','.join(setups_and_bound), rates, runs), flush=True)
            for _ in range(runs):
                for rate in rates:
                    for s in setups_and_bound:
                        record(scenarios_mod.host_rate(env, peers.Setup(s),
                                                       rate))
        if 'seed' in scenarios:
            sset = with_bound(seed_setups(setups))
            print('seed: baseline, setups %s, %d run(s)' % (
                ','.join(sset), runs), flush=True)
            for run in range(runs):
                for step in seed_steps:
                    res = scenarios_mod.seed(env, None, baseline=True,
                                             step=step)
                    res['run'] = run
                    record(res)
                    for s in sset:
                        res = scenarios_mod.seed(env, peers.Setup(s),
                                                 step=step)
                        res['run'] = run
                        record(res)
        if 'density' in scenarios:
            print('density: setups %s, N %s, %d run(s)' % (
                ','.join(setups_and_bound), guests, runs), flush=True)
            for _ in range(runs):
                for n in guests:
                    for s in setups_and_bound:
                        record(scenarios_mod.density(env, peers.Setup(s), n))
        if 'no-limit' in scenarios:
            print('no-limit: setups %s, rates %s, %d run(s), in a nested '
                  'host' % (','.join(nl_setups), nl_rates, runs), flush=True)
            nenv = nolimit.NestedEnv(workdir, args.verbose, fork_tree,
                                     args.no_limit_guest)
            t0 = time.monotonic()
            try:
                for run in range(runs):
                    for rate in nl_rates:
                        for s in nl_setups:
                            record(nolimit.no_limit(nenv, peers.Setup(s),
                                                    rate, run))
            finally:
                nenv.shutdown()
            say('no-limit: %d measurement(s) in %.0f min, nested host '
                'booted %d time(s) (%s s)' % (
                    runs * len(nl_rates) * len(nl_setups),
                    (time.monotonic() - t0) / 60, len(nenv.boots),
                    ', '.join('%.0f' % b for b in nenv.boots)))
    finally:
        save()
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    for line in summary:
        print(line)
    text = report.table(results)
    if text:
        print(text)
    png = os.path.join(args.out, 'bench.png')
    report.plot(results, png, summary + [''] + report.headline(results))
    print('results: %s, plot: %s (%.0f min)' % (
        os.path.join(args.out, 'results.json'), png,
        (time.monotonic() - started) / 60))
    return 0


def render(path, out):
    """The table and plot of an earlier run's results.json."""
    with open(path) as f:
        data = json.load(f)
    results = data['results']
    summary = data.get('summary', [])
    for line in summary:
        print(line)
    text = report.table(results)
    if text:
        print(text)
    os.makedirs(out, exist_ok=True)
    png = os.path.join(out, 'bench.png')
    report.plot(results, png, summary + [''] + report.headline(results))
    print('plot: %s' % png)
    return 0


def short(res):
    """One progress line per measurement."""
    what = {'host-rate': lambda r: report.rate_text(r['rate']),
            'no-limit': lambda r: 'run %d %s' % (
                r.get('run', 0) + 1, report.rate_text(r['rate'])),
            'seed': lambda r: '%s: %s s' % (r['alloc'],
                                            r.get('seconds', '-')),
            'density': lambda r: 'N=%d' % r['n']}[res['scenario']](res)
    return '%s %s %s: %s' % (res['scenario'], res['setup'], what,
                             res['verdict'])


if __name__ == '__main__':
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        sys.exit('bench: stopped by %s; results so far in results.json'
                 % (e.args[0] if e.args else 'SIGINT'))
