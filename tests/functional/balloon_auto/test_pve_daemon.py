#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The benchmark's Proxmox-style peer decides as Proxmox VE's pvestatd
does for several VMs: with free memory first when shrinking, under
pressure first when growing, evened out by shares, 100 MiB per VM and
cycle, a 10 MiB dead band around 80 % of the limit."""

import os
import sys
import unittest

import harness
from harness import MiB

sys.path.insert(0, os.path.join(harness.TOP, 'bench'))
import pve_daemon  # noqa: E402  pylint: disable=wrong-import-position

GiB = 1024 * MiB
LIMIT = 10 * GiB
GOAL = LIMIT * 80 // 100


def vm(name, actual_mib, free_mib, min_mib=256, max_mib=2048, shares=1000):
    return {'name': name, 'actual': actual_mib * MiB,
            'free': None if free_mib is None else free_mib * MiB,
            'min': min_mib * MiB, 'max': max_mib * MiB, 'shares': shares}


def plan_mib(usage, vms):
    """The cycle's targets in MiB, for host usage @usage bytes."""
    _, targets = pve_daemon.plan(usage, LIMIT, vms)
    return {name: t // MiB for name, t in targets.items()}


class PlanTest(unittest.TestCase):

    def test_dead_band(self):
        vms = [vm('a', 1024, 600)]
        self.assertEqual(plan_mib(GOAL + 10 * MiB, vms), {})
        self.assertEqual(plan_mib(GOAL - 10 * MiB, vms), {})
        self.assertEqual(plan_mib(GOAL + 11 * MiB, vms), {'a': 1013})

    def test_shrink_those_with_free_memory_first(self):
        # 'busy' has less free memory than 25 % of its minimum: it keeps
        # its size while 'idle' gives, 100 MiB at most
        vms = [vm('idle', 1024, 600), vm('busy', 1024, 40)]
        self.assertEqual(plan_mib(GOAL + 50 * MiB, vms), {'idle': 974})
        self.assertEqual(plan_mib(GOAL + 500 * MiB, vms), {'idle': 924})

    def test_shrink_all_when_those_cannot(self):
        # the one with free memory is at its minimum: all VMs then, evened
        # out, so the one above its share gives
        vms = [vm('idle', 256, 200), vm('busy', 1024, 40)]
        self.assertEqual(plan_mib(GOAL + 50 * MiB, vms), {'busy': 974})

    def test_evened_out_by_shares(self):
        # 400 and 800 MiB above their minimum, shares 1:2: shrinking by
        # 60 MiB takes 20 and 40
        vms = [vm('one', 656, 300), vm('two', 1056, 600, shares=2000)]
        self.assertEqual(plan_mib(GOAL + 60 * MiB, vms),
                         {'one': 636, 'two': 1016})

    def test_share_caps_the_step_from_the_size(self):
        # equal sizes, shares 1:2: 'two' is under its share and keeps its
        # size; 'one' would go to its share but moves 100 MiB, and a
        # second round does not move it further
        vms = [vm('one', 1024, 600), vm('two', 1024, 600, shares=2000)]
        self.assertEqual(plan_mib(GOAL + 300 * MiB, vms), {'one': 924})

    def test_grow_those_under_pressure_first(self):
        vms = [vm('idle', 512, 300), vm('busy', 512, 20),
               vm('nostats', 512, None)]
        self.assertEqual(plan_mib(GOAL - 150 * MiB, vms),
                         {'busy': 587, 'nostats': 587})

    def test_grow_all_when_none_under_pressure(self):
        # evened out over all: the one below its share grows, and the one
        # above it shrinks, though the host has room
        vms = [vm('a', 512, 300), vm('b', 1024, 600)]
        self.assertEqual(plan_mib(GOAL - 150 * MiB, vms),
                         {'a': 612, 'b': 924})

    def test_at_most_100_mib_a_cycle(self):
        vms = [vm('a', 2048, 1500), vm('b', 2048, 1500)]
        self.assertEqual(plan_mib(GOAL + 4 * GiB, vms),
                         {'a': 1948, 'b': 1948})

    def test_no_vms(self):
        self.assertEqual(plan_mib(GOAL + GiB, []), {})


if __name__ == '__main__':
    harness.main()
