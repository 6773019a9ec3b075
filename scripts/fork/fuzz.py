#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Run libFuzzer on the automatic balloon: the structure-aware target
(virtio-balloon-auto-fuzz: a hostile guest driver and management, with
host pressure events) and upstream's generic-fuzz with the automatic
balloon's configuration.  The corpus is kept between runs (outside the
repository); crashes (and timeouts) are written there too and make the
run fail.  Inputs slower than 10 s are kept there as well, and reported,
but do not fail it.

The targets run side by side, each a single process: with two cores
the run takes the time of one target.  Prints, per target: executions,
coverage (edges), features, corpus size, crashes and slow inputs, and a
last line 'fuzz: N failing targets'.
"""

import argparse
import concurrent.futures
import glob
import os
import re
import signal
import subprocess
import sys
import time

from qemu_balloon_auto.testing.guest import cache_dir

TARGETS = ['virtio-balloon-auto-fuzz', 'generic-fuzz-virtio-balloon-auto']
UNIT_TIMEOUT = 20           # seconds one input may take
STATS = re.compile(r'^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/')


def run(binary, target, seconds, jobs_dir):
    corpus = os.path.join(jobs_dir, target, 'corpus')
    crashes = os.path.join(jobs_dir, target, 'crashes')
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(crashes, exist_ok=True)
    before = set(glob.glob(os.path.join(crashes, '*')))
    env = dict(os.environ,
               ASAN_OPTIONS='detect_leaks=0:abort_on_error=1:'
                            'allocator_may_return_null=1')
    start = time.monotonic()
    proc = subprocess.Popen(
        [binary, '--fuzz-target=' + target,
         '-max_total_time=%d' % seconds, '-print_final_stats=1',
         '-artifact_prefix=' + crashes + '/', '-timeout=%d' % UNIT_TIMEOUT,
         '-rss_limit_mb=4096', corpus],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        errors='replace', env=env)
    hung = False
    try:
        out, _ = proc.communicate(timeout=seconds + UNIT_TIMEOUT + 60)
    except subprocess.TimeoutExpired:
        # QEMU takes SIGALRM for its main loop, so libFuzzer's -timeout
        # never fires; a deadly signal makes it write the input it is on
        hung = True
        proc.send_signal(signal.SIGSEGV)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    elapsed = time.monotonic() - start
    last = None
    for line in out.splitlines():
        m = STATS.match(line)
        if m:
            last = m
    artifacts = sorted(set(glob.glob(os.path.join(crashes, '*'))) - before)
    # libFuzzer keeps inputs slower than 10 s too: findings, not failures
    slow = [a for a in artifacts
            if os.path.basename(a).startswith('slow-unit-')]
    new_crashes = [a for a in artifacts if a not in slow]
    result = {
        'target': target, 'seconds': round(elapsed),
        'execs': int(last.group(1)) if last else 0,
        'cov': int(last.group(2)) if last else 0,
        'ft': int(last.group(3)) if last else 0,
        'corpus': int(last.group(4)) if last else 0,
        'crashes': new_crashes,
        'slow': slow,
        'exit': proc.returncode,
        'hung': hung,
    }
    if new_crashes or proc.returncode != 0:
        sys.stdout.write(out[-8000:])
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--build', required=True,
                    help='build directory with qemu-fuzz-x86_64')
    ap.add_argument('--time', type=int, default=1800,
                    help='seconds per target')
    ap.add_argument('--target', action='append',
                    help='only this target (repeatable)')
    ap.add_argument('--dir', default=cache_dir('fuzz'),
                    help='corpus and crashes (default: %(default)s)')
    args = ap.parse_args()

    binary = os.path.join(args.build, 'qemu-fuzz-x86_64')
    targets = args.target or TARGETS
    with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
        results = list(pool.map(
            lambda t: run(binary, t, args.time, args.dir), targets))
    failed = 0
    for r in results:
        print('fuzz %s: %d s, %d executions (%d/s), coverage %d edges, '
              '%d features, corpus %d, %d crashes, exit %d, %d slow '
              'inputs' % (
                  r['target'], r['seconds'], r['execs'],
                  r['execs'] // max(1, r['seconds']), r['cov'], r['ft'],
                  r['corpus'], len(r['crashes']), r['exit'],
                  len(r['slow'])), flush=True)
        if r['hung']:
            print('  hung: one input ran past the run\'s end by %d s; its '
                  'input is the crash input' % (UNIT_TIMEOUT + 60))
        for c in r['crashes']:
            print('  crash input: ' + c)
        for c in r['slow']:
            print('  slow input: ' + c)
        failed += bool(r['crashes']) or r['exit'] != 0
    print('fuzz: %d failing targets' % failed)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
