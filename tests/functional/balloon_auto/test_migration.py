#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Live migration of the bundled guest with automatic ballooning: the
balloon is inflated by real host pressure in the source's cgroup, and the
VM moves to a destination in another cgroup while the driver is still
following the new target; the guest holds memory throughout, which the
destination must not read as growth."""

import os
import time
import unittest

import harness
from harness import MiB

LIMIT = 1400 * MiB
DST_LIMIT = 1800 * MiB


def query_if(vm, predicate):
    """query-balloon-auto's answer if it satisfies @predicate."""
    info = vm.cmd('query-balloon-auto')
    return info if predicate(info) else None


def decisions(vm):
    """The BALLOON_AUTO_DECISION events @vm sent since the last look."""
    return [e['data'] for e in vm.machine.get_qmp_events(wait=False)
            if e['event'] == 'BALLOON_AUTO_DECISION']


def balloon_props(cg, automatic='on'):
    return ('automatic=%s,deflate-on-oom=on,pressure-source=cgroup-v1,'
            'pressure-cgroup=%s' % (automatic, cg.v1))


class MigrationTest(unittest.TestCase):

    def test_migrate_while_inflating(self):
        sock = os.path.join(harness.work_dir(),
                            'migrate-%d.sock' % os.getpid())
        uri = 'unix:' + sock
        # The destination's QEMU reads each zero page it receives (the
        # kernel here backs such reads with real pages, see the docs), so
        # it holds the full guest size: room for that, below the band under
        # its setpoint, so that its host is calm and memory goes back.
        with harness.Cgroup(limit=LIMIT) as src_cg, \
                harness.Cgroup(limit=DST_LIMIT) as dst_cg:
            src = harness.TestVM('migrate-src', cgroup=src_cg,
                                 balloon=balloon_props(src_cg))
            # automatic off on the destination's command line: the
            # migrated state turns it on there (and its driver is ready
            # from the start: nothing resets what the policy measured)
            dst = harness.TestVM('migrate-dst', cgroup=dst_cg,
                                 balloon=balloon_props(dst_cg, 'off'),
                                 incoming=uri, args=['-S'])
            try:
                src.launch()
                src.console.check('bgt alloc 700', timeout=300)
                # memory in use that stays: the destination's first
                # samples must not read it as growth
                src.console.check('bgt alloc 300 --hold 100000 '
                                  '>/dev/null 2>&1 &')
                src.wait_guest_stats()
                # The guest's own memory takes the cgroup past its
                # setpoint first; the hog takes it past again until its
                # end, so that the balloon is still inflated when the VM
                # moves (memory goes back once the host is calm).
                hog = harness.MemoryHog(src_cg, 700, step=16, delay=0.5)
                try:
                    # No decisions are made while the VM is moved, so do
                    # not migrate while the host's need still grows; but
                    # right after it stops, while the driver may still be
                    # following the last decision and before the calm
                    # hold time gives memory back (the destination starts
                    # meanwhile).
                    dst.launch()
                    hog.wait_allocated()
                    self.assertGreater(harness.decision_counts(
                        src.cmd('query-balloon-auto'))['host-pressure'], 0)
                finally:
                    # Migration reads all of guest RAM on the source; this
                    # host's kernel backs reads of untouched memory with
                    # real pages, so the source needs the room (see docs).
                    hog.stop()
                start = src.cmd('query-balloon-auto')
                inflating = start['actual'] != start['target']
                t0 = time.monotonic()
                result = src.migrate(uri)
                took = time.monotonic() - t0
                self.assertEqual(result['status'], 'completed', result)
                before = src.cmd('query-balloon-auto')
                # -S, as management does: compare before the VM runs there
                harness.wait_until(
                    lambda: dst.cmd('query-migrate').get('status') ==
                    'completed', 60, what='incoming migration completed')
                after = dst.cmd('query-balloon-auto')
                print('# migrated in %.1f s, driver %s at the start; '
                      'target %d MiB, actual %d MiB'
                      % (took, 'moving' if inflating else 'at target',
                         after['target'] // MiB, after['actual'] // MiB))

                # Both sides stopped deciding, and say why.
                for info in (before, after):
                    self.assertEqual(info['status'], 'paused')
                    self.assertEqual(info['blocked-by'], 'vm-stopped')
                # The destination has the migrated state, and its own
                # host's pressure source.
                self.assertEqual(after['source']['kind'], 'cgroup-v1')
                self.assertEqual(after['source']['path'], dst_cg.v1)
                for member in ('target', 'actual', 'baseline', 'floor',
                               'decisions', 'pingpongs', 'last-decision'):
                    if member == 'last-decision':
                        del before[member]['age-ms']
                        del after[member]['age-ms']
                    self.assertEqual(after[member], before[member], member)
                # (Not the event counters: each side's source goes on
                # counting its own host's events after the state was sent,
                # the stopped source's cgroup above its threshold and the
                # destination's filling as guest memory arrives.)
                self.assertLess(after['target'], 1024 * MiB)
                self.assertEqual(dst.balloon_actual(), src.balloon_actual())

                dst.cmd('cont')
                dst.event_wait('RESUME', 60)
                self.assertEqual(dst.cmd('query-balloon-auto')['status'],
                                 'active')
                # The guest keeps running on the destination ...
                rc, out = dst.console.run('echo still-alive')
                self.assertEqual(rc, 0)
                self.assertIn('still-alive', out)
                # ... its first samples there read no growth: no guest
                # pressure, no ping-pong (the growth measured at the
                # source does not travel; compared with nothing, all the
                # memory the guest holds read as growth and deflated it
                # to its maximum at once) ...
                time.sleep(8)       # statistics come every 1-2 s
                now = dst.cmd('query-balloon-auto')
                self.assertLess(now['guest-stats']['age-ms'], 2500)
                decided = decisions(dst)
                for member in ('guest-pressure', 'guest-deflated'):
                    self.assertEqual(
                        harness.decision_counts(now)[member],
                        harness.decision_counts(after)[member],
                        '%s: %s; guest %s' % (member, decided,
                                             now['guest-stats']))
                self.assertEqual(now['pingpongs'], after['pingpongs'])
                # ... the driver reaches the target there ...
                harness.wait_until(
                    lambda: query_if(dst, lambda i: i['actual'] ==
                                     i['target']), 120,
                    what='driver at the target on the destination')
                # ... and automatic ballooning keeps working: no pressure
                # in the destination's cgroup, so memory is given back.
                calm = harness.decision_counts(after)['host-calm']
                try:
                    final = harness.wait_until(
                        lambda: query_if(dst, lambda i: harness.
                                         decision_counts(i)['host-calm'] >
                                         calm), 120,
                        what='memory returned on the destination')
                except TimeoutError as e:
                    self.fail('%s: %s' % (e, harness.balloon_view(
                        dst.cmd('query-balloon-auto'))))
                self.assertGreater(final['target'], after['target'])
                self.assertTrue(decided + decisions(dst))
                self.assertEqual(src_cg.oom_kills(), 0)
                self.assertEqual(dst_cg.oom_kills(), 0)
            finally:
                src.shutdown()
                dst.shutdown()
                if os.path.exists(sock):
                    os.unlink(sock)


if __name__ == '__main__':
    harness.main()
