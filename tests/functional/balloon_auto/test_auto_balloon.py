#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Automatic ballooning with the bundled Linux guest under TCG, inside a
real memory-limited cgroup under real memory pressure."""

import contextlib
import os
import re
import statistics
import time
import unittest

import harness
from harness import MiB

KERNEL = os.environ.get('QEMU_FORK_GUEST_KERNEL', 'stable')
# the log trace backend's lines: pid@seconds.micros:event args
STATS_TRACE = re.compile(r'^\d+@(\d+\.\d+):virtio_balloon_auto_stats ')


def stats_arrivals(path):
    """When the device got guest statistics (wall clock), from its trace."""
    with open(path, errors='replace') as f:
        return [float(m.group(1)) for m in map(STATS_TRACE.match, f) if m]


def median_spacing(arrivals, start, end):
    """The median time between statistics that came in [start, end), and
    how many intervals that is."""
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])
            if start <= a and b < end]
    return (statistics.median(gaps) if gaps else None), len(gaps)


@contextlib.contextmanager
def squeezed_by_service(name, service_mib, alloc='bgt alloc 700'):
    """A 1 GiB guest in a 1400 MiB memcg allocates 700 MiB (@alloc) and
    frees it; then a host service in the memcg takes @service_mib MiB.
    Yields (vm, cgroup, service, the burst reserve the guest learnt) once
    the driver is at the target host pressure set; the service ends
    with it."""
    with harness.Cgroup(limit=1400 * MiB) as cg:
        vm = harness.TestVM(
            name, mem='1G', cgroup=cg, kernel=KERNEL,
            balloon='automatic=on,pressure-source=cgroup-v1,'
                    'pressure-cgroup=' + cg.v1)
        with vm:
            vm.console.check(alloc, timeout=300)
            vm.wait_guest_stats()
            learnt = vm.cmd('query-balloon-auto')['burst-reserve']
            hog = harness.MemoryHog(cg, service_mib, step=16, delay=0.2)
            try:
                hog.wait_allocated()
                harness.wait_until(
                    lambda: vm.balloon_actual() ==
                    vm.cmd('query-balloon-auto')['target'], 60,
                    what='driver at the target')
                yield vm, cg, hog, learnt
            finally:
                hog.stop()


class AutoBalloonTest(unittest.TestCase):

    def test_host_pressure_inflates(self):
        """A host process needs memory in the VM's cgroup: the balloon
        inflates on the memcg's pressure events and QEMU's RSS falls,
        before anything is OOM-killed."""
        with harness.Cgroup(limit=1400 * MiB) as cg:
            vm = harness.TestVM(
                'hostpressure', mem='1G', cgroup=cg, kernel=KERNEL,
                balloon='automatic=on,pressure-source=cgroup-v1,'
                        'pressure-cgroup=' + cg.v1)
            with vm:
                info = vm.cmd('query-balloon-auto')
                self.assertEqual(info['source']['kind'], 'cgroup-v1')
                self.assertEqual(info['status'], 'active')
                # The guest used memory once; it is free in the guest but
                # still resident in QEMU.
                vm.console.check('bgt alloc 700', timeout=300)
                rss_before = vm.rss()
                self.assertGreater(rss_before, 700 * MiB)
                vm.wait_guest_stats()

                start = time.monotonic()
                hog = harness.MemoryHog(cg, 800, step=8, delay=0.5)
                try:
                    hog.wait_allocated()
                    rss_after = vm.rss()
                    # hold still, let throttled events drain, then compare
                    vm.cmd('balloon-auto-set', **{'hold-ms': 60000})
                    harness.wait_until(
                        lambda: vm.balloon_actual() ==
                        vm.cmd('query-balloon-auto')['target'], 60,
                        what='driver at the target')
                    time.sleep(2.5)
                    info = vm.cmd('query-balloon-auto')
                    events = vm.machine.get_qmp_events(wait=False)
                finally:
                    hog.stop()
                elapsed = time.monotonic() - start
                self.assertGreater(
                    harness.decision_counts(info)['host-pressure'], 0)
                self.assertLess(info['target'], 1024 * MiB)
                self.assertGreaterEqual(info['target'], info['floor'])
                self.assertLess(rss_after, rss_before - 200 * MiB)
                self.assertEqual(cg.oom_kills(), 0)
                # The events agree with the query and with BALLOON_CHANGE.
                decided = [e['data'] for e in events
                           if e['event'] == 'BALLOON_AUTO_DECISION']
                changes = [e['data'] for e in events
                           if e['event'] == 'BALLOON_CHANGE']
                self.assertTrue(decided)
                self.assertTrue(changes)
                last = info['last-decision']
                self.assertEqual(decided[-1]['new-target'],
                                 last['new-target'])
                self.assertEqual(decided[-1]['reason'], last['reason'])
                self.assertEqual(changes[-1]['actual'], info['actual'])
                self.assertEqual(info['actual'], info['target'])
                self.assertTrue(all(d['applied'] for d in decided))
                self.assertTrue(all(d['new-target'] < d['old-target']
                                    for d in decided
                                    if d['reason'] == 'host-pressure'))
                print('# host pressure: events %s, target %d MiB, QEMU RSS '
                      '%d -> %d MiB in %.1f s (%.1f MiB/s returned)' % (
                          harness.event_counts(info),
                          info['target'] // MiB, rss_before // MiB,
                          rss_after // MiB, elapsed,
                          (rss_before - rss_after) / MiB / elapsed))

    def test_host_not_sacrificed(self):
        """A host service holds the VM's cgroup near its setpoint and the
        balloon near its floor; then the guest wants 700 MiB, more than
        the cgroup has.  The guest gets what fits under 95% of the limit:
        its own allocation may fail, but the memcg OOM-kills nothing,
        neither QEMU nor the service.  The guest allocates at 80 MiB/s,
        so that its statistics (every second at most) see it short: at
        full speed, the 100 MiB a squeezed guest has left are gone in
        less than the 200 ms between two, and then nothing can be given
        in time (seen in 1 of 3 runs).  Its first 700 MiB, which make
        QEMU's footprint, come at 27 MiB/s, no burst: a burst would teach
        it a burst reserve, which host pressure leaves it, and the room
        it would be given when short it has then been given already."""
        with squeezed_by_service('hostfirst', 700,
                                 'bgt alloc 700 --step 8 --delay-ms 300'
                                 ) as (vm, cg, hog, _):
            before = vm.cmd('query-balloon-auto')
            _, out = vm.console.run(
                'bgt alloc 700 --step 8 --delay-ms 100; '
                'bgt vmstat oom_kill',
                timeout=300)
            after = vm.cmd('query-balloon-auto')
            self.assertTrue(hog.alive(), 'the service was killed')
            print('# guest wanted 700 MiB at %d MiB: %s; target %d -> '
                  '%d MiB at the end, memcg oom_kill %d' % (
                      before['actual'] // MiB,
                      ', '.join(line for line in out
                                if line.startswith(('alloc', 'oom'))),
                      before['target'] // MiB, after['target'] // MiB,
                      cg.oom_kills()))
            self.assertEqual(cg.oom_kills(), 0)
            # it was short and was given what fitted, not nothing (the
            # host takes it back once the guest's OOM killer ran)
            self.assertLess(before['burst-reserve'], 64 * MiB)
            self.assertLess(before['target'], 512 * MiB)
            self.assertGreater(
                harness.decision_counts(after)['guest-pressure'],
                harness.decision_counts(before)['guest-pressure'])

    def test_burst_reserve_kept(self):
        """A guest allocates 700 MiB at full speed and frees it; then a
        host service takes 600 MiB of its 1400 MiB cgroup.  Host pressure
        takes back what the guest freed, but leaves it what it would need
        to start that burst again: a reserve and a half, and the burst
        reserve its allocation taught it.  Nothing is OOM-killed."""
        with squeezed_by_service('burstreserve', 600) as (vm, cg, _, learnt):
            info = vm.cmd('query-balloon-auto')
            avail = vm.console.meminfo()['MemAvailable']
            print('# burst reserve %d MiB learnt; host at %d MiB of 1400 '
                  'took the guest to %d MiB with %d MiB available '
                  '(reserve %d MiB)' % (
                      learnt // MiB, cg.usage() // MiB,
                      info['target'] // MiB, avail // MiB,
                      info['reserve'] // MiB))
            self.assertEqual(cg.oom_kills(), 0)
            self.assertGreater(
                harness.decision_counts(info)['host-pressure'], 0)
            # 700 MiB at full speed: well over 142 MiB/s here
            self.assertGreaterEqual(learnt, 128 * MiB)
            self.assertLess(info['target'], 1024 * MiB)
            # kept, give or take a step of the driver's rounding
            self.assertGreaterEqual(
                avail, info['reserve'] * 3 // 2 +
                info['burst-reserve'] - 16 * MiB)

    def test_guest_pressure_deflates(self):
        """Seed experiment 2: a guest running at 1 GiB of 3 GiB allocates
        1.5 GiB; the balloon deflates in time and nothing is OOM-killed.
        While its use grows fast the device asks for its statistics five
        times a second; before, every second."""
        with harness.Cgroup(limit=4 * 1024 * MiB) as cg:
            trace = os.path.join(harness.work_dir(), 'seed-stats.trace')
            vm = harness.TestVM('seed', mem='3G', cgroup=cg, kernel=KERNEL,
                                balloon='automatic=on,deflate-on-oom=on',
                                args=('-trace',
                                      'enable=virtio_balloon_auto_stats',
                                      '-D', trace, '-msg', 'timestamp=on'))
            with vm:
                vm.cmd('balloon', value=1024 * MiB)
                harness.wait_until(lambda: vm.balloon_actual() == 1024 * MiB,
                                   300, what='balloon at 1 GiB')
                info = vm.cmd('query-balloon-auto')
                self.assertEqual(info['baseline'], 1024 * MiB)
                settled = time.time()
                time.sleep(6)
                burst = time.time()
                out = vm.console.check(
                    'bgt alloc 1536 --step 32 --delay-ms 300', timeout=600)
                done = time.time()
                self.assertIn('alloc ok 1536', out)
                self.assertEqual(vm.console.vmstat('oom_kill'),
                                 {'oom_kill': 0})
                info = vm.cmd('query-balloon-auto')
                stats = info['guest-stats']
                if KERNEL == 'backports':
                    # Linux >= 6.12 reports the stall counters
                    self.assertIn('alloc-stalls', stats)
                    self.assertIn('oom-kills', stats)
                else:
                    self.assertNotIn('alloc-stalls', stats)
                counts = harness.decision_counts(info)
                grown = counts['guest-pressure'] + counts['guest-deflated']
                self.assertGreater(grown, 0)
                self.assertGreater(info['actual'], 1536 * MiB)
                print('# guest pressure: %d deflate decisions, actual %d MiB'
                      ' (baseline %d MiB)' % (grown, info['actual'] // MiB,
                                              info['baseline'] // MiB))

                # 32 MiB every 0.3 s: use growing faster than half the
                # reserve a second, the policy's "grows fast"
                arrivals = stats_arrivals(trace)
                calm, n_calm = median_spacing(arrivals, settled, burst)
                fast, n_fast = median_spacing(arrivals, burst, done)
                self.assertGreaterEqual(n_calm, 3)
                self.assertGreaterEqual(n_fast, 10)
                print('# statistics every %.2f s before the allocation (%d),'
                      ' every %.2f s during it (%d)' % (calm, n_calm, fast,
                                                         n_fast))
                self.assertGreater(calm, 0.9)
                self.assertLess(fast, 0.4)


if __name__ == '__main__':
    harness.main()
