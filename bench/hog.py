#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
A host process that allocates and touches MIB MiB at a nominal RATE MiB/s,
then holds the memory.  harness.MemoryHog steps with a fixed delay; this one
paces chunks against a schedule, so the nominal rate is what it asks for
and the achieved rate is what the memory cgroup lets it have (direct
reclaim near the limit slows every page fault).

  hog.py MIB RATE [--chunk MIB] [--hold SECS]

Prints "hog <MiB done> <seconds>" after every chunk, "done <MiB>
<seconds>" at the end, then holds until killed (or --hold SECS).
"""

import argparse
import mmap
import sys
import time

MiB = 1024 * 1024
PAGE = mmap.PAGESIZE


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('mib', type=int)
    ap.add_argument('rate', type=float, help='nominal MiB/s')
    ap.add_argument('--chunk', type=int, default=4, help='MiB per step')
    ap.add_argument('--hold', type=float, default=-1,
                    help='seconds to hold at the end (-1: until killed)')
    args = ap.parse_args()

    chunks = []
    done = 0
    print('start', flush=True)
    t0 = time.monotonic()
    while done < args.mib:
        n = min(args.chunk, args.mib - done)
        m = mmap.mmap(-1, n * MiB, flags=mmap.MAP_PRIVATE |
                      mmap.MAP_ANONYMOUS)
        for off in range(0, n * MiB, PAGE):
            m[off] = 1
        chunks.append(m)
        done += n
        now = time.monotonic() - t0
        print('hog %d %.3f' % (done, now), flush=True)
        ahead = done / args.rate - now
        if ahead > 0 and done < args.mib:
            time.sleep(ahead)
    print('done %d %.3f' % (done, time.monotonic() - t0), flush=True)
    if args.hold < 0:
        while True:
            time.sleep(3600)
    time.sleep(args.hold)
    return 0


if __name__ == '__main__':
    sys.exit(main())
