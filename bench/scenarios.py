# SPDX-License-Identifier: GPL-2.0-or-later
"""
The scenarios of the benchmark with peers (see run.py's docstring).  Each
function runs one setup once, in a fresh memory cgroup that is
removed afterwards with everything in it, and returns a dict of what
happened; nothing here asserts.
"""

import os
import re
import threading
import time

from qemu_balloon_auto import MiB
from qemu_balloon_auto.qmp import MonitorError, QmpClient, QmpError
from qemu_balloon_auto.testing import decision_counts, event_counts, wait_until
from qemu_balloon_auto.testing.cgroup import Cgroup
from qemu_balloon_auto.testing.hog import MemoryHog

from peers import (Setup, daemon_summary, kill_report, start_daemon,
                   NoDaemon)


def _alive(vm):
    return vm.machine.is_running()


def _qmp(vm, command, **args):
    """A QMP command, or None if QEMU is gone or does not answer."""
    if not _alive(vm):
        return None
    try:
        return vm.cmd(command, **args)
    except Exception:  # pylint: disable=broad-except
        return None


def _actual_mib(vm):
    r = _qmp(vm, 'query-balloon')
    return r['actual'] // MiB if r else None


def _sizes_mib(vm, setup):
    """(actual, target) in MiB; the target is the fork's own (None for
    other setups), which tells a slow driver from a slow decision."""
    if not setup.fork:
        return _actual_mib(vm), None
    info = _qmp(vm, 'query-balloon-auto')
    return (info['actual'] // MiB, info['target'] // MiB) if info else \
        (None, None)


def _fork_info(vm):
    info = _qmp(vm, 'query-balloon-auto')
    if not info:
        return None
    return {'decisions': decision_counts(info),
            'events': event_counts(info),
            'target': info.get('target', 0) // MiB,
            'floor': info.get('floor', 0) // MiB}


def _fill_cache(vm, mib, timeout=400):
    """Start `bgt cache /dev/vda MIB --hold -1` in the background and wait
    until the page cache is filled.  Returns None or an error string."""
    mark = vm.console.mark()
    vm.console.check('bgt cache /dev/vda %d --hold -1 &' % mib)
    try:
        _, m = vm.console.wait_for(r'cache (ok|failed|eof)', timeout, mark)
    except TimeoutError as e:
        return 'cache fill: %s' % e
    if m.group(1) != 'ok':
        return 'cache fill failed'
    return None


def _wait_stats(vm, setup, timeout=30):
    if setup.fork:
        try:
            wait_until(lambda: 'guest-stats' in
                       (_qmp(vm, 'query-balloon-auto') or {}),
                       timeout, what='guest statistics')
        except TimeoutError:
            pass


def _verdict(qemu_labels, hog, cg_oom, killed, extra=''):
    """A human-readable outcome."""
    dead = [label for label, alive in qemu_labels if not alive]
    what = []
    if dead:
        what.append('%s died' % '+'.join(dead))
    if hog is not None and not hog.alive():
        what.append('host process died at %d MiB' % hog.allocated)
    elif hog is not None and not hog.done:
        what.append('host process stuck at %d MiB' % hog.allocated)
    if killed:
        what.append('OOM-killed: %s' % ', '.join(killed))
    if cg_oom:
        what.append('memcg oom_kill %d' % cg_oom)
    if extra:
        what.append(extra)
    return 'survived' if not what else '; '.join(what)


# ---------------------------------------------------------------- host-rate

def host_rate(env, setup, rate, mib=700, limit=1400, cache=850,
              settle=8, after=10):
    """A 1 GiB guest holding @cache MiB of page cache in a @limit MiB
    memcg; a host process in the same memcg allocates @mib MiB at a
    nominal @rate MiB/s ('max': no pacing).  Survived: QEMU alive, the
    host process done and alive, memcg oom_kill 0, @after seconds after
    the allocation ended."""
    res = {'scenario': 'host-rate', 'setup': setup.name, 'rate': rate,
           'mib': mib}
    with Cgroup(limit=limit * MiB) as cg:
        disk = env.disk('hostrate', cache + 64)
        vm = env.vm(setup, 'hr-' + setup.name, cg, mem='1G', disk=disk)
        daemon, hog = NoDaemon(), None
        try:
            vm.launch()
            daemon = start_daemon(setup, cg, [vm], env.workdir)
            err = _fill_cache(vm, cache)
            if err:
                res.update(ok=False, verdict='setup failed: ' + err)
                return res
            _wait_stats(vm, setup)
            time.sleep(settle)
            res['before'] = {'usage': cg.usage() // MiB,
                             'rss': vm.rss() // MiB,
                             'actual': _actual_mib(vm)}
            qemu_pid = vm.pid
            env.log('%s: hog %d MiB at %s MiB/s (usage %d MiB, QEMU RSS %d'
                    ' MiB)' % (setup, mib, rate, res['before']['usage'],
                               res['before']['rss']))
            if setup.bound:
                # all the guest can give, from the first moment: only the
                # driver's speed limits it.  Asking for just the deficit is
                # no bound: a ballooned page frees less than its size while
                # the huge page around it waits to be split (396 MiB
                # ballooned freed 329).
                floor = _qmp(vm, 'query-balloon-auto')['floor']
                _qmp(vm, 'balloon', value=floor)
            hog = MemoryHog(cg, mib, step=4, delay=0, rate=rate)
            samples = []
            t0 = time.monotonic()
            timeout = 120 if rate == 'max' else max(120, 3 * mib / rate)
            min_actual = res['before']['actual']
            while time.monotonic() - t0 < timeout:
                if hog.done or not hog.alive() or not _alive(vm):
                    break
                a, target = _sizes_mib(vm, setup)
                if a is not None and min_actual is not None:
                    min_actual = min(min_actual, a)
                samples.append((round(time.monotonic() - t0, 2),
                                cg.usage() // MiB, hog.allocated, a, target))
                time.sleep(0.25)
            hog_seconds = time.monotonic() - t0
            # let pending reclaim and OOM kills happen before judging
            end = time.monotonic() + after
            while time.monotonic() < end and _alive(vm) and hog.alive():
                a = _actual_mib(vm)
                if a is not None and min_actual is not None:
                    min_actual = min(min_actual, a)
                time.sleep(1)
            qemu_alive = _alive(vm)
            hog_alive = hog.alive()
            cg_oom = cg.oom_kills()
            kills = kill_report(cg, {qemu_pid: 'QEMU', hog.pid: 'host process'})
            res.update(
                qemu_alive=qemu_alive, hog_alive=hog_alive,
                hog_done=hog.done, hog_mib=hog.allocated,
                hog_seconds=round(hog.elapsed or hog_seconds, 2),
                achieved=round(hog.allocated / max(hog.elapsed or
                                                   hog_seconds, 1e-3), 1),
                oom_kill=cg_oom, oom_control=kills['oom_control'],
                killed=kills['killed'], samples=samples,
                min_actual=min_actual,
                after={'usage': cg.usage() // MiB,
                       'rss': vm.rss() // MiB if qemu_alive else None,
                       'actual': _actual_mib(vm)})
            if setup.fork:
                res['fork'] = _fork_info(vm)
            res['ok'] = qemu_alive and hog_alive and hog.done and cg_oom == 0
            res['verdict'] = _verdict([('QEMU', qemu_alive)], hog, cg_oom,
                                      kills['killed'])
        except Exception as e:  # pylint: disable=broad-except
            res.update(ok=False, verdict='error: %r' % e)
        finally:
            res['daemon'] = daemon_summary(daemon.stop())
            if hog:
                hog.stop()
            vm.shutdown()
            os.unlink(disk)
    return res


# --------------------------------------------------------------------- seed

def seed(env, setup, baseline=False, step=None, mem='3G', start=1024,
         alloc=1536, limit=4096, settle=2):
    """A @mem guest set to @start MiB (`balloon`) allocates @alloc MiB as
    fast as it can: `bgt alloc`, no delay, in one mapping or in @step MiB
    mappings.  @baseline: the fork's binary with automatic=off and nothing
    ballooned at the allocation (set to @start and back first, as the
    memory of the others has been).  The bound (the mechanism's): the
    fork's binary with automatic=off, set as the allocation starts to
    exactly what the guest needs: the memory it has not available, @alloc
    and the fork's reserve.  Every setup settles alike before the
    allocation: its guest statistics where the fork has them, then
    @settle s.  With a daemon setup the daemon (minimum = @start) starts
    with the allocation, as a PVE VM configured with balloon=@start would
    be grown back."""
    command = 'bgt alloc %d' % alloc + (' --step %d' % step if step else '')
    res = {'scenario': 'seed', 'setup': 'baseline' if baseline else
           setup.name, 'alloc': command}
    if baseline:
        setup = Setup('bound')      # the fork's binary, automatic=off
    with Cgroup(limit=limit * MiB) as cg:
        vm = env.vm(setup, 'seed-' + res['setup'], cg, mem=mem)
        daemon = NoDaemon()
        try:
            vm.launch()
            vm.cmd('balloon', value=start * MiB)
            try:
                wait_until(lambda: (_actual_mib(vm) or 0) <= start + 1, 180,
                           what='balloon at %d MiB' % start)
                if baseline:
                    # back to its full size: memory the host backed and
                    # took back, as the others get it, not memory it never
                    # backed, which is slower to fault in (5.1-5.6 s
                    # against 3.1-3.3 for the same allocation)
                    vm.cmd('balloon', value=vm.mem_mib * MiB)
                    wait_until(
                        lambda: (_actual_mib(vm) or 0) >= vm.mem_mib - 1,
                        180, what='balloon back at %d MiB' % vm.mem_mib)
            except TimeoutError:
                res.update(ok=False, verdict='balloon stuck at %s MiB'
                           % _actual_mib(vm))
                return res
            _wait_stats(vm, setup)
            time.sleep(settle)
            need = None
            if setup.bound and not baseline:
                reserve = _qmp(vm, 'query-balloon-auto')['reserve'] // MiB
                unavailable = (_actual_mib(vm) -
                               vm.console.meminfo()['MemAvailable'] // MiB)
                need = min(vm.mem_mib, unavailable + alloc + reserve)
                res['bound_target'] = need
            res['start_actual'] = _actual_mib(vm)
            qemu_pid = vm.pid
            migrated = _guest_vmstat(vm, 'balloon_migrate')
            daemon = start_daemon(setup, cg, [vm], env.workdir,
                                  mins={vm: start})
            t0 = time.monotonic()
            if need:
                _qmp(vm, 'balloon', value=need * MiB)
            try:
                rc, out = vm.console.run(command, timeout=600)
            except TimeoutError:
                rc, out = None, ['timeout']
            res['seconds'] = round(time.monotonic() - t0, 2)
            res['daemon'] = daemon_summary(daemon.stop())
            qemu_alive = _alive(vm)
            after = (_guest_vmstat(vm, 'oom_kill', 'balloon_migrate')
                     if qemu_alive else {})
            guest_oom = after.get('oom_kill')
            if 'balloon_migrate' in after and 'balloon_migrate' in migrated:
                # balloon pages the guest's compaction moved meanwhile,
                # each a round trip to the host
                res['balloon_migrated'] = (after['balloon_migrate'] -
                                           migrated['balloon_migrate'])
            cg_oom = cg.oom_kills()
            kills = kill_report(cg, {qemu_pid: 'QEMU'})
            ok = (qemu_alive and rc == 0 and
                  any(line.startswith('alloc ok') for line in out) and
                  guest_oom == 0 and cg_oom == 0)
            res.update(ok=ok, rc=rc, guest_oom_kill=guest_oom,
                       oom_kill=cg_oom, killed=kills['killed'],
                       qemu_alive=qemu_alive, end_actual=_actual_mib(vm))
            if setup.fork:
                res['fork'] = _fork_info(vm)
            if ok:
                res['verdict'] = 'ok'
            else:
                why = []
                if not qemu_alive:
                    why.append('QEMU died')
                if guest_oom:
                    why.append('guest OOM killer ran %d time(s)' % guest_oom)
                if rc not in (0, None):
                    said = [line for line in out
                            if re.match(r'alloc (failed|stopped)', line)]
                    why.append('bgt alloc rc %d%s' % (
                        rc, ' (killed)' if rc >= 128 else
                        ': ' + said[0] if said else ''))
                if rc is None and qemu_alive:
                    why.append('bgt alloc timed out')
                if cg_oom:
                    why.append('memcg oom_kill %d' % cg_oom)
                res['verdict'] = '; '.join(why) or 'failed'
        except Exception as e:  # pylint: disable=broad-except
            res.update(ok=False, verdict='error: %r' % e)
        finally:
            if 'daemon' not in res:
                res['daemon'] = daemon_summary(daemon.stop())
            vm.shutdown()
    return res


def _guest_vmstat(vm, *keys):
    """The guest's /proc/vmstat @keys it has, as integers ({} if it does
    not answer)."""
    try:
        return vm.console.vmstat(*keys)
    except (TimeoutError, OSError):
        return {}


def _guest_counter(vm, key):
    """One of the guest's /proc/vmstat counters (None from a dead or
    silent guest)."""
    return _guest_vmstat(vm, key).get(key) if _alive(vm) else None


# ------------------------------------------------------------------ density

class DensityBound:
    """The mechanism's bound for density: the balloons driven by hand
    with what a perfect controller would know, only the guests' drivers
    limiting it.  Before the guests fill their caches each is set to an
    equal share of 95 % of the limit (less 100 MiB for its QEMU); at a
    turn's start the others are set to their floor (all they can give)
    and, every 100 ms, the allocating guest is given all that the other
    QEMUs' memory leaves under 95 % of the limit, less 100 MiB for its
    own QEMU (its whole size at most).  Own QMP monitors (the setup's
    second socket): the scenario's sampling keeps the first ones."""

    PERIOD = 0.1
    QEMU_MIB = 100

    def __init__(self, vms, limit_mib):
        self.vms = vms
        self.ceiling = limit_mib * 95 // 100
        self.qmp = [QmpClient(vm.daemon_sock, timeout=5) for vm in vms]
        # the floor the fork would stop at, as host-rate's bound asks it
        self.floor_mib = [q.command('query-balloon-auto')['floor'] // MiB
                          for q in self.qmp]
        self.active = None
        self.commands = 0
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        share = self.ceiling // len(vms) - self.QEMU_MIB
        for j in range(len(vms)):
            self._balloon(j, min(share, vms[j].mem_mib))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _balloon(self, j, mib):
        try:
            self.qmp[j].command('balloon', value=mib * MiB)
            self.commands += 1
        except (MonitorError, QmpError):
            pass

    def turn(self, i):
        """Guest @i starts allocating."""
        with self.lock:
            self.active = i
            for j in range(len(self.vms)):
                if j != i:
                    self._balloon(j, self.floor_mib[j])

    def _run(self):
        given = {}                  # per turn: the allocating guest's size
        while not self.stopping.wait(self.PERIOD):
            with self.lock:
                i = self.active
                if i is None or not _alive(self.vms[i]):
                    continue
                others = sum(vm.rss() // MiB for j, vm in enumerate(self.vms)
                             if j != i and _alive(vm))
                # never taken from while it allocates
                mib = max(given.get(i, 0),
                          min(self.vms[i].mem_mib,
                              self.ceiling - others - self.QEMU_MIB))
                if mib != given.get(i):
                    self._balloon(i, mib)
                    given[i] = mib

    def stop(self):
        """Stop; returns what daemon_summary() would for a daemon."""
        self.stopping.set()
        self.thread.join()
        for q in self.qmp:
            q.close()
        return {'cycles': 0, 'commands': self.commands, 'log': []}


def density(env, setup, n, limit=2000, cache=700, alloc=600, step=32,
            hold=5, stall_limit=3.0):
    """@n guests of 1 GiB in a @limit MiB memcg: each fills @cache MiB of
    page cache, then one after another each allocates @alloc MiB in @step
    MiB mappings with no delay (held @hold s, then freed; one mapping
    larger than a ballooned guest's MemTotal would be refused by the
    guest's overcommit heuristic before any pressure).  A guest is
    stalled while its allocation runs, its balloon is inflated (actual
    more than 32 MiB below its size) and another guest holds at least
    128 MiB of page cache it is not using; idle-stalled: the same with
    page cache plus free memory; short-stalled (the issue's fairness
    measure): stalled while the guest itself is short of memory (at most
    SHORT_RESERVES reserves available) and another holds at least
    CACHE_HELD_MIB of page cache.  Sampled about once a second, so a
    guest OOM-killed within a second shows as a failure, not as a
    stall."""
    res = {'scenario': 'density', 'setup': setup.name, 'n': n}
    with Cgroup(limit=limit * MiB) as cg:
        disks, vms = [], []
        daemon = NoDaemon()
        turns = []
        try:
            for i in range(n):
                disks.append(env.disk('density%d' % i, cache + 64))
                vms.append(env.vm(setup, 'dn%d-%s' % (i, setup.name), cg,
                                  mem='1G', disk=disks[-1]))
            pids = {}
            for i, vm in enumerate(vms):
                vm.launch()
                pids[vm.pid] = 'QEMU %d' % i
            if setup.bound:
                daemon = DensityBound(vms, limit)
            else:
                daemon = start_daemon(setup, cg, vms, env.workdir)
            res['fill'] = []
            for i, vm in enumerate(vms):
                if not _alive(vm):
                    res['fill'].append('dead')
                    continue
                try:
                    err = _fill_cache(vm, cache)
                except Exception as e:  # pylint: disable=broad-except
                    err = repr(e)
                res['fill'].append(err or 'ok')
                env.log('%s n=%d: guest %d cache %s, usage %d MiB' % (
                    setup, n, i, err or 'ok', cg.usage() // MiB))
            for vm in vms:
                if _alive(vm):
                    _wait_stats(vm, setup, timeout=10)
            for i, vm in enumerate(vms):
                if setup.bound:
                    daemon.turn(i)
                turns.append(_turn(vm, vms, i, alloc, step, hold, cg))
                env.log('%s n=%d: guest %d alloc %s, stall %.1f s' % (
                    setup, n, i, turns[-1]['result'],
                    turns[-1]['max_stall']))
            alive = [_alive(vm) for vm in vms]
            guest_oom = [_guest_counter(vm, 'oom_kill') for vm in vms]
            cg_oom = cg.oom_kills()
            kills = kill_report(cg, pids)
            completed = sum(1 for t, a, g in zip(turns, alive, guest_oom)
                            if t['result'] == 'ok' and a and g == 0)
            max_stall = max([t['max_stall'] for t in turns] or [0])
            res.update(turns=turns, alive=alive, guest_oom_kill=guest_oom,
                       oom_kill=cg_oom, killed=kills['killed'],
                       completed=completed, max_stall=max_stall,
                       max_idle_stall=max([t['max_idle_stall']
                                           for t in turns] or [0]),
                       max_short_stall=max([t['max_short_stall']
                                            for t in turns] or [0]),
                       stalled=max_stall > stall_limit,
                       ok=completed == n and cg_oom == 0)
            if setup.fork:
                res['fork'] = [_fork_info(vm) for vm in vms]
            extra = []
            if any(g for g in guest_oom):
                extra.append('guest OOM killer ran in guest %s' % ','.join(
                    str(j) for j, g in enumerate(guest_oom) if g))
            failed = [str(i) for i, t in enumerate(turns)
                      if t['result'] != 'ok']
            if failed:
                extra.append('alloc failed in guest %s' % ','.join(failed))
            res['verdict'] = _verdict(
                [('QEMU %d' % i, a) for i, a in enumerate(alive)], None,
                cg_oom, kills['killed'], '; '.join(extra))
        except Exception as e:  # pylint: disable=broad-except
            res.update(ok=False, verdict='error: %r' % e,
                       completed=sum(1 for t in turns if t['result'] == 'ok'),
                       max_stall=max([t['max_stall'] for t in turns] or [0]))
        finally:
            res['daemon'] = daemon.stop() if setup.bound else \
                daemon_summary(daemon.stop())
            for vm in vms:
                vm.shutdown()
            for d in disks:
                os.unlink(d)
    return res


# A guest is short of memory with at most two reserves available (the
# fork's reserve is 1/16 of the guest), and another guest's page cache
# counts from this much (the fairness figure).
SHORT_RESERVES = 2
CACHE_HELD_MIB = 200
TURN_TIMEOUT = 300


def _turn(vm, vms, i, alloc, step, hold, cg):
    """Guest @i allocates in the background; all guests are sampled
    meanwhile."""
    turn = {'guest': i, 'samples': [], 'max_stall': 0.0,
            'max_idle_stall': 0.0, 'max_short_stall': 0.0}
    if not _alive(vm):
        turn['result'] = 'dead'
        return turn
    moved = [_guest_counter(other, 'balloon_migrate') for other in vms]
    mark = vm.console.mark()
    t0 = time.monotonic()
    try:
        out = vm.console.check('bgt alloc %d --step %d --hold %d & '
                               'echo alloc-pid $!' % (alloc, step, hold))
        pid = int(re.search(r'alloc-pid (\d+)', '\n'.join(out)).group(1))
    except Exception as e:  # pylint: disable=broad-except
        turn['result'] = 'error: %r' % e
        return turn
    short_mib = vm.mem_mib // 16 * SHORT_RESERVES
    run = {'stall': 0.0, 'idle_stall': 0.0, 'short_stall': 0.0}
    last = None
    while True:
        now = time.monotonic()
        try:
            rc, _ = vm.console.run('kill -0 %d' % pid, timeout=60)
        except (TimeoutError, OSError):
            break                   # the console closed: QEMU died
        try:
            vm.console.wait_for(r'alloc (ok|failed|stopped)', 0, mark)
            allocating = False
        except TimeoutError:
            allocating = rc == 0
        actual = [_actual_mib(v) for v in vms]
        cached, free, avail = [], [], []
        for other in vms:
            c = f = a = None
            if _alive(other):
                try:
                    info = other.console.meminfo()
                    # a block device's page cache is Buffers, not Cached
                    c = (info.get('Cached', 0) +
                         info.get('Buffers', 0)) // MiB
                    f = info.get('MemFree', 0) // MiB
                    a = info.get('MemAvailable', 0) // MiB
                except Exception:  # pylint: disable=broad-except
                    pass
            cached.append(c)
            free.append(f)
            avail.append(a)
        cached[i] = free[i] = None     # the others' memory only
        me = actual[i]
        inflated = allocating and me is not None and me < vm.mem_mib - 32
        held = max(c or 0 for c in cached)
        stalled = inflated and held >= 128
        idle = inflated and max([(c or 0) + (f or 0) for c, f in
                                 zip(cached, free)]) >= 128
        short = (inflated and avail[i] is not None and
                 avail[i] <= short_mib and held >= CACHE_HELD_MIB)
        for key, flag in (('stall', stalled), ('idle_stall', idle),
                          ('short_stall', short)):
            if last is not None and flag:
                run[key] += now - last
                turn['max_' + key] = max(turn['max_' + key], run[key])
            elif not flag:
                run[key] = 0.0
        last = now
        turn['samples'].append({'t': round(now - t0, 2), 'actual': actual,
                                'cached': cached, 'free': free,
                                'available': avail[i], 'stalled': stalled,
                                'idle_stalled': idle, 'short': short,
                                'usage': cg.usage() // MiB})
        if rc != 0 or _turn_said(vm, mark, r'(free ok|alloc (failed|stop))'):
            break
        if now - t0 > TURN_TIMEOUT:
            try:
                vm.console.run('kill %d' % pid)
            except (TimeoutError, OSError):
                pass
            break
        time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
    for key in ('max_stall', 'max_idle_stall', 'max_short_stall'):
        turn[key] = round(turn[key], 1)
    turn['seconds'] = round(time.monotonic() - t0, 2)
    # balloon pages the guests' compaction moved during the turn, each a
    # round trip to the host on a vCPU the host's two cores share
    moved_after = [_guest_counter(other, 'balloon_migrate') for other in vms]
    turn['balloon_migrated'] = [
        after - before if None not in (before, after) else None
        for before, after in zip(moved, moved_after)]
    if not _alive(vm):
        turn['result'] = 'QEMU died'
    elif _turn_said(vm, mark, r'alloc ok') and _turn_said(vm, mark,
                                                          r'free ok'):
        turn['result'] = 'ok'
    else:
        turn['result'] = (_turn_said(vm, mark, r'alloc (failed|stop)') or
                          'no "free ok" within %d s (killed?)' %
                          turn['seconds'])
    return turn


def _turn_said(vm, mark, pattern):
    """The first console line since @mark that starts with @pattern."""
    return next((line for line in vm.console.since(mark)
                 if re.match(pattern, line)), None)
