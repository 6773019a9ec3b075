#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The host process the tests and the benchmark use as host pressure takes
what it is asked for, and no more: the margins of every host-pressure
scenario are computed from its size."""

import time
import unittest

import harness
from harness import MiB


class HogTest(unittest.TestCase):

    def test_takes_what_it_is_asked_for(self):
        # one large step, as harness.host_steps() takes them
        mib = 192
        with harness.Cgroup(limit=1400 * MiB) as cg:
            hog = harness.MemoryHog(cg, mib, step=mib, delay=0)
            try:
                hog.wait_allocated(60)
                rss = harness.proc_rss(hog.pid)
                usage = cg.usage()
                print('# a %d MiB hog: RSS %d MiB, cgroup usage %d MiB' % (
                    mib, rss // MiB, usage // MiB))
                self.assertGreaterEqual(rss, mib * MiB)
                # the interpreter, and nothing the size of a step
                self.assertLess(usage, (mib + 32) * MiB)
                time.sleep(1)
                self.assertTrue(hog.alive())
            finally:
                hog.stop()

    def test_first_step(self):
        # harness.host_steps()'s first burst: --first MiB at once, then
        # --chunk MiB steps
        with harness.Cgroup(limit=1400 * MiB) as cg:
            hog = harness.MemoryHog(cg, 160, first=96, step=32, delay=5)
            try:
                harness.wait_until(lambda: hog.allocated or not hog.alive(),
                                   60, what='first step')
                usage = cg.usage()
                self.assertEqual(hog.allocated, 96)
                self.assertGreaterEqual(usage, 96 * MiB)
                self.assertLess(usage, (96 + 32) * MiB)
                hog.wait_allocated(60)
                self.assertEqual(hog.allocated, 160)
            finally:
                hog.stop()


if __name__ == '__main__':
    harness.main()
