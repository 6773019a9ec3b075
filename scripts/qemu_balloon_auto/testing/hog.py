#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
A host process that takes memory inside a cgroup.  MemoryHog runs this
file as a program in the cgroup:

  hog.py MIB [--chunk MIB] [--first MIB] [--rate MIB/S|max] [--delay SECS]
         [--hold SECS]

It allocates and touches MIB MiB of private anonymous memory, --chunk MiB
(default 4) at a time, the first --first MiB at once if given, then holds
it until killed (or for --hold seconds).  Its pace:

  --rate R    a nominal rate of R MiB/s: each chunk is due on a schedule
              from the start and the hog sleeps only while it is ahead of
              it, so R is what it asks for and the rate it achieves is
              what the cgroup lets it have (direct reclaim near the limit
              slows every page fault);
  --rate max  (or 0, the default) no pacing: as fast as the kernel lets it;
  --delay S   a fixed pause of S seconds after each chunk (a steady
              trickle whatever the touching costs).

It prints "start", then "hog <MiB done> <seconds>" after each chunk and
"done <MiB> <seconds>" at the end.
"""

import argparse
import mmap
import subprocess
import sys
import threading
import time

MiB = 1024 * 1024


def parse_rate(text):
    """MiB/s from 'max' (no pacing: 0) or a number >= 0."""
    if text == 'max':
        return 0.0
    rate = float(text)
    if rate < 0:
        raise ValueError('a rate is >= 0')
    return rate


class MemoryHog:
    """This program in @cgroup (anything with a wrapper() command prefix,
    like Cgroup), taking @mib MiB in @step MiB chunks with a pause of
    @delay s after each (the first chunk @first MiB if given), or on a
    schedule at @rate MiB/s (None, 0 or 'max': unpaced); then holding
    them (for @hold s, default until stopped).  .allocated (MiB),
    .elapsed (s) and .done follow its progress."""

    def __init__(self, cgroup, mib, step=32, delay=0.05, rate=None,
                 hold=None, first=None):
        rate = parse_rate(str(rate)) if rate not in (None, 'max') else 0
        command = [sys.executable, __file__, str(mib), '--chunk', str(step),
                   '--rate', repr(rate), '--delay', repr(delay)]
        if first is not None:
            command += ['--first', str(first)]
        if hold is not None:
            command += ['--hold', repr(hold)]
        self.mib = mib
        self.proc = subprocess.Popen(cgroup.wrapper() + command,
                                     stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid        # the wrapper execs: the same pid
        self.allocated = 0
        self.elapsed = None
        self.done = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.proc.stdout:
            parts = line.split()
            if parts and parts[0] in ('hog', 'done'):
                self.allocated = int(parts[1])
                self.elapsed = float(parts[2])
                if parts[0] == 'done':
                    self.done = True

    def alive(self):
        return self.proc.poll() is None

    def wait_allocated(self, timeout=240, what='hog allocation'):
        """Wait until it has taken all its MiB; AssertionError if it died
        first (OOM-killed, typically)."""
        from qemu_balloon_auto.testing import wait_until
        wait_until(lambda: self.allocated >= self.mib or not self.alive(),
                   timeout, what=what)
        if not self.alive():
            raise AssertionError('the hog was killed')

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('mib', type=int)
    ap.add_argument('--chunk', type=int, default=4, help='MiB per step')
    ap.add_argument('--first', type=int, default=0,
                    help='MiB of the first step (0: --chunk)')
    ap.add_argument('--rate', type=parse_rate, default=0.0,
                    help='nominal MiB/s, or max (0): no pacing')
    ap.add_argument('--delay', type=float, default=0.0,
                    help='seconds to pause after each chunk')
    ap.add_argument('--hold', type=float, default=-1,
                    help='seconds to hold at the end (-1: until killed)')
    args = ap.parse_args()

    chunks = []
    done = 0
    # every byte written at C speed, a MiB at a time: unpaced means as
    # fast as the kernel gives pages, not as fast as a Python loop touches
    # them; and the pattern is one MiB, not a chunk, so the hog takes its
    # chunks and no more
    one_mib = b'\1' * MiB
    print('start', flush=True)
    t0 = time.monotonic()
    while done < args.mib:
        n = min(args.first if args.first and not done else args.chunk,
                args.mib - done)
        m = mmap.mmap(-1, n * MiB, flags=mmap.MAP_PRIVATE |
                      mmap.MAP_ANONYMOUS)
        for offset in range(0, n * MiB, MiB):
            m[offset:offset + MiB] = one_mib
        chunks.append(m)
        done += n
        now = time.monotonic() - t0
        print('hog %d %.3f' % (done, now), flush=True)
        if done < args.mib:
            pause = args.delay
            if args.rate:
                pause = max(pause, done / args.rate - now)
            if pause > 0:
                time.sleep(pause)
    print('done %d %.3f' % (done, time.monotonic() - t0), flush=True)
    if args.hold < 0:
        while True:
            time.sleep(3600)
    time.sleep(args.hold)
    return 0


if __name__ == '__main__':
    sys.exit(main())
