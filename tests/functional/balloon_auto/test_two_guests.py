#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Two guests in one memory cgroup whose sizes add up to more than its limit.
Guest A holds page cache, guest B then needs memory: A's cache must be given
back for B to proceed.  With automatic ballooning both survive; without it,
the same run ends in an OOM kill."""

import os
import threading
import unittest

import harness
from harness import MiB

LIMIT = 1400 * MiB
CACHE_MIB = 600
ALLOC_MIB = 700


def run_scenario(automatic):
    """Returns a dict describing the outcome."""
    # deflate-on-oom, as the docs recommend: a guest squeezed faster than
    # its statistics arrive deflates itself instead of OOM-killing
    balloon = ('automatic=on,deflate-on-oom=on,pressure-source=cgroup-v1,'
               'pressure-cgroup=%s' if automatic else '')
    tag = 'auto' if automatic else 'manual'
    with harness.Cgroup(limit=LIMIT) as cg:
        disk = os.path.join(harness.work_dir(), 'cache-disk-%s.raw' % tag)
        with open(disk, 'wb') as f:
            f.truncate((CACHE_MIB + 64) * MiB)
        # cache=none: the guest's cache must not become host page cache
        drive = ['-drive', 'file=%s,if=virtio,format=raw,cache=none' % disk]
        vm_a = harness.TestVM('two-%s-a' % tag, mem='1G', cgroup=cg,
                              balloon=balloon % cg.v1 if automatic else '',
                              args=drive)
        vm_b = harness.TestVM('two-%s-b' % tag, mem='1G', cgroup=cg,
                              balloon=balloon % cg.v1 if automatic else '')
        out = {'automatic': automatic}
        try:
            vm_a.launch()
            vm_b.launch()
            vm_a.console.check('bgt cache /dev/vda %d --hold 100000 &'
                               % CACHE_MIB)
            vm_a.console.wait_for(r'cache ok %d' % CACHE_MIB, 300)
            out['rss_a_cached'] = vm_a.rss() // MiB
            result = {}

            def work():
                try:
                    result['b'] = vm_b.console.run(
                        'bgt alloc %d --step 16 --delay-ms 500' % ALLOC_MIB,
                        timeout=400)
                except Exception as e:  # pylint: disable=broad-except
                    result['error'] = repr(e)
            t = threading.Thread(target=work)
            t.start()
            t.join(420)
            out['b_result'] = result
            out['oom_kills'] = cg.oom_kills()
            out['alive'] = [vm_a.machine.is_running(),
                            vm_b.machine.is_running()]
            if all(out['alive']):
                out['rss'] = [vm_a.rss() // MiB, vm_b.rss() // MiB]
                out['actual'] = [vm_a.balloon_actual() // MiB,
                                 vm_b.balloon_actual() // MiB]
        finally:
            vm_a.shutdown()
            vm_b.shutdown()
            os.unlink(disk)
    return out


class TwoGuestsTest(unittest.TestCase):

    def test_page_cache_given_back(self):
        auto = run_scenario(True)
        print('# automatic=on: %s' % auto)
        self.assertEqual(auto['oom_kills'], 0)
        self.assertEqual(auto['alive'], [True, True])
        rc, lines = auto['b_result']['b']
        self.assertEqual(rc, 0, lines)
        self.assertIn('alloc ok %d' % ALLOC_MIB, lines)
        # guest A, the one holding cache, gave memory back
        self.assertLess(auto['actual'][0], 1024)

        manual = run_scenario(False)
        print('# automatic=off: %s' % manual)
        b = manual['b_result'].get('b')
        oomed = (manual['oom_kills'] > 0 or not all(manual['alive']) or
                 b is None or b[0] != 0)
        self.assertTrue(oomed, 'without automatic ballooning the run was '
                        'expected to end in an OOM kill: %s' % manual)


if __name__ == '__main__':
    harness.main()
