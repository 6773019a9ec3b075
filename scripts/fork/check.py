#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Run everything the fork tests: its unit tests and qtests, upstream's tests
for what it touches (run through upstream's meson test harness), and the
functional tests with the bundled Linux guest.  The last line is
'N passed, N failed, N skipped' over everything that ran.
"""

import argparse
import concurrent.futures
import glob
import json
import os
import re
import subprocess
import sys
import threading
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
# where the tests find the shared package qemu_balloon_auto
SCRIPTS = os.path.join(TOP, 'scripts')

# Upstream tests for what the fork touches, then the fork's own.
QTESTS = [
    'virtio-balloon-test', 'qom-test', 'device-introspect-test',
    'qmp-cmd-test', 'test-hmp',
    'virtio-balloon-auto-test',
]
QOS_BALLOON_FILTER = 'virtio-balloon'
# The series changes the virtio core too (how a split ring is popped):
# every virtio device's libqos cases run on the fork's binary.
QOS_VIRTIO_FILTER = 'virtio'
# The full migration-test takes 8 min under TCG here; these cover the
# stream format (analyze-migration.py) and a plain precopy migration.
MIGRATION_CASES = ['/x86_64/migration/analyze-script',
                   '/x86_64/migration/precopy/unix/plain']
UNIT_TESTS = ['test-balloon-auto-policy', 'test-balloon-pressure']
MESON_SUITES = ['qapi-schema', 'qapi-frontend']
FUNCTIONAL_GLOB = 'tests/functional/balloon_auto/test_*.py'
# Also run these with bookworm-backports' 6.12 guest kernel, which reports
# the stall counters (oom-kills, alloc-stalls...) through the stats queue.
BOTH_KERNELS = ['test_auto_balloon.py']
# test_package.py runs these in its fresh root against the installed
# emulator, the same build: on their own only when --only asks for them.
IN_PACKAGE_ROOT = ['test_libvirt.py']


class Tally:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.failures = []
        self.lock = threading.Lock()

    def add(self, name, result, detail=''):
        with self.lock:
            if result == 'pass':
                self.passed += 1
            elif result == 'skip':
                self.skipped += 1
            else:
                self.failed += 1
                self.failures.append(name)
            print('%-4s %s%s' % (result.upper(), name,
                                 ' (%s)' % detail if detail else ''),
                  flush=True)


def meson_test(bld, tally, names, suites=()):
    """Run meson tests by name and/or suite and tally testlog.json."""
    args = ['meson', 'test', '-C', bld, '--no-rebuild', '--print-errorlogs',
            '-t', '3']
    for s in suites:
        args += ['--suite', s]
    args += names
    start = time.monotonic()
    logfile = os.path.join(bld, 'meson-logs', 'testlog.json')
    if os.path.exists(logfile):
        os.unlink(logfile)
    proc = subprocess.run(args, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    seen = 0
    if os.path.exists(logfile):
        with open(logfile) as f:
            for line in f:
                t = json.loads(line)
                res = {'OK': 'pass', 'SKIP': 'skip',
                       'EXPECTEDFAIL': 'pass'}.get(t['result'], 'fail')
                tally.add(t['name'], res,
                          '%.1fs' % t.get('duration', 0))
                seen += 1
    if proc.returncode != 0 or seen == 0:
        sys.stdout.write(proc.stdout[-6000:])
        if seen == 0:
            tally.add('meson test ' + ' '.join(names + list(suites)),
                      'fail', 'no test ran')
    print('  (meson test: %.0fs)' % (time.monotonic() - start))


def qtest_cases(bld, tally, test, wanted):
    """Selected cases of one of upstream's big qtest binaries."""
    bld = os.path.abspath(bld)
    binary = os.path.join(bld, 'tests', 'qtest', test)
    env = dict(os.environ, PYTHON=sys.executable,
               QTEST_QEMU_BINARY=os.path.join(bld, 'qemu-system-x86_64'))
    paths = [p for p in subprocess.run(
        [binary, '-l'], stdout=subprocess.PIPE, text=True, env=env,
        check=True).stdout.split() if p.startswith('/') and wanted(p)]
    if not paths:
        tally.add(test, 'fail', 'none of the wanted cases exists')
        return
    for p in paths:
        start = time.monotonic()
        proc = subprocess.run([binary, '--tap', '-p', p], cwd=bld,
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env)
        m = re.search(r'^ok .*$', proc.stdout, re.M)
        if proc.returncode != 0 or not m:
            sys.stdout.write(proc.stdout[-3000:])
            result = 'fail'
        else:
            result = 'skip' if '# SKIP' in m.group(0).upper() else 'pass'
        tally.add('%s %s' % (test, p), result,
                  '%.1fs' % (time.monotonic() - start))


SANITIZER_ENV = {
    'ASAN_OPTIONS': 'detect_leaks=1:abort_on_error=1:fast_unwind_on_malloc=0',
    'UBSAN_OPTIONS': 'halt_on_error=1:print_stacktrace=1',
}
SANITIZER_REPORT = re.compile(r'ERROR: (Address|Leak)Sanitizer|'
                              r'runtime error:|SUMMARY: \w+Sanitizer')


def sanitized(tally, bld):
    """The unit test, our qtest and upstream's balloon qtests built with
    ASan and UBSan: any sanitizer report is a failure."""
    bld = os.path.abspath(bld)
    env = dict(os.environ, PYTHON=sys.executable,
               QTEST_QEMU_BINARY=os.path.join(bld, 'qemu-system-x86_64'),
               **SANITIZER_ENV)
    runs = [('tests/unit/test-balloon-auto-policy', None),
            ('tests/qtest/virtio-balloon-auto-test', None),
            ('tests/qtest/virtio-balloon-test', None),
            ('tests/qtest/qos-test', QOS_BALLOON_FILTER)]
    for test, only in runs:
        binary = os.path.join(bld, test)
        args = [binary, '--tap']
        if only:
            paths = [p for p in subprocess.run(
                [binary, '-l'], stdout=subprocess.PIPE, text=True, env=env,
                check=True).stdout.split() if only in p]
            args = [binary, '--tap'] + [a for p in paths for a in ('-p', p)]
        start = time.monotonic()
        proc = subprocess.run(args, cwd=bld, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env)
        oks = len(re.findall(r'^ok ', proc.stdout, re.M))
        bad = re.findall(r'^not ok .*$', proc.stdout, re.M)
        report = SANITIZER_REPORT.search(proc.stdout)
        name = 'sanitizers %s' % os.path.basename(test)
        if proc.returncode != 0 or bad or report or not oks:
            sys.stdout.write(proc.stdout[-6000:])
            tally.add(name, 'fail', '%d ok, %d not ok%s' %
                      (oks, len(bad), ', sanitizer report' if report else ''))
        else:
            tally.add(name, 'pass', '%d cases, %.1fs' %
                      (oks, time.monotonic() - start))


FUZZ_SMOKE_SECONDS = 60


def fuzz_smoke(tally, bld):
    """A minute of each fuzz target (make fuzz runs them for longer)."""
    proc = subprocess.run(
        [sys.executable, os.path.join(TOP, 'scripts', 'fork', 'fuzz.py'),
         '--build', bld, '--time', str(FUZZ_SMOKE_SECONDS)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith('fuzz ')]
    if proc.returncode != 0 or not lines:
        sys.stdout.write(proc.stdout[-6000:])
    for line in lines:
        name, _, detail = line.partition(': ')
        tally.add(name, 'fail' if ', 0 crashes, exit 0' not in detail
                  else 'pass', detail)
    if not lines:
        tally.add('fuzz', 'fail', 'no fuzz target ran')


def python_path(env):
    """@env's PYTHONPATH with the checkout's scripts/ first: how the
    tests and the benchmark find the package qemu_balloon_auto."""
    return os.pathsep.join([SCRIPTS] + [p for p in env.get(
        'PYTHONPATH', '').split(os.pathsep) if p and p != SCRIPTS])


def functional(tally, pristine, only=None):
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    env['PYTHONPATH'] = python_path(env)
    if pristine:
        env['QEMU_FORK_PRISTINE_TREE'] = os.path.abspath(pristine)
    runs = []
    for path in sorted(glob.glob(os.path.join(TOP, FUNCTIONAL_GLOB))):
        if not only and os.path.basename(path) in IN_PACKAGE_ROOT:
            continue
        runs.append((path, 'stable'))
        if os.path.basename(path) in BOTH_KERNELS:
            runs.append((path, 'backports'))
    for path, kernel in runs:
        name = os.path.relpath(path, TOP)
        if kernel != 'stable':
            name += '[%s]' % kernel
        if only and not re.search(only, name):
            continue
        start = time.monotonic()
        env['QEMU_FORK_GUEST_KERNEL'] = kernel
        proc = subprocess.run([sys.executable, path], env=env, cwd=TOP,
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        seen = failed = 0
        for line in proc.stdout.splitlines():
            m = re.match(r'^(not ok|ok) \d+ (\S+)(.*)$', line)
            if not m:
                continue
            seen += 1
            failed += m.group(1) == 'not ok'
            res = 'fail' if m.group(1) == 'not ok' else (
                'skip' if '# SKIP' in m.group(3).upper() else 'pass')
            tally.add('%s %s' % (name, m.group(2)), res,
                      m.group(3).strip(' #'))
        if proc.returncode != 0 or seen == 0:
            sys.stdout.write(proc.stdout[-8000:])
            if not failed:
                # crashed or ran nothing: that is a failure too
                tally.add(name, 'fail', 'exit %d after %d tests' %
                          (proc.returncode, seen))
        print('  (%s: %.0fs)' % (name, time.monotonic() - start))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--tree', default=os.path.join(TOP, 'build', 'qemu'))
    ap.add_argument('--pristine', default=None,
                    help='pristine tree for comparison tests')
    ap.add_argument('--quick', action='store_true',
                    help='skip the functional tests')
    ap.add_argument('--only', help='regexp: functional tests to run')
    ap.add_argument('--sanitized', help='build directory with ASan/UBSan')
    ap.add_argument('--fuzz', help='build directory with the fuzz targets')
    ap.add_argument('--build-only', action='store_true',
                    help='build the tree\'s tests that the runs need, and '
                    'stop there')
    args = ap.parse_args()

    bld = os.path.join(args.tree, 'build')
    targets = (['tests/qtest/' + t for t in
                QTESTS + ['qos-test', 'migration-test']] +
               ['tests/unit/' + t for t in UNIT_TESTS])
    subprocess.run(['ninja', '-C', bld] + targets, check=True)
    if args.build_only:
        return 0

    tally = Tally()
    # The sanitizer runs are one process at a time: next to the qtests,
    # which wait on their QEMUs much of the time, they take a core that
    # would idle.  Both step virtual clocks, so neither depends on speed.
    # result() raises here what the runs raised there.
    with concurrent.futures.ThreadPoolExecutor(1) as side:
        sanitizer_runs = side.submit(sanitized, tally, args.sanitized) \
            if args.sanitized else None
        meson_test(bld, tally, UNIT_TESTS)
        meson_test(bld, tally, [], MESON_SUITES)
        meson_test(bld, tally, ['qtest-x86_64/' + t for t in QTESTS], ())
        qtest_cases(bld, tally, 'qos-test',
                    lambda p: QOS_VIRTIO_FILTER in p)
        qtest_cases(bld, tally, 'migration-test',
                    lambda p: p in MIGRATION_CASES)
    if sanitizer_runs:
        sanitizer_runs.result()
    if args.fuzz:
        fuzz_smoke(tally, args.fuzz)
    if not args.quick:
        functional(tally, args.pristine, args.only)

    if tally.failures:
        print('failed: ' + ', '.join(tally.failures))
    print('%d passed, %d failed, %d skipped' %
          (tally.passed, tally.failed, tally.skipped))
    return 1 if tally.failed else 0


if __name__ == '__main__':
    sys.exit(main())
