# SPDX-License-Identifier: GPL-2.0-or-later
"""
What the functional tests (tests/functional/balloon_auto/) and the
benchmark (bench/) run their experiments with:

  qemu_balloon_auto.testing.guest   QEMU booting the bundled test guest
                                    (TestVM), its serial console
                                    (GuestConsole), the trees and builds
  qemu_balloon_auto.testing.cgroup  child memory cgroups (Cgroup)
  qemu_balloon_auto.testing.hog     a host process taking memory in a
                                    cgroup (MemoryHog)

and, here, the small helpers they share.  Part of the checkout only: the
Debian package installs qemu_balloon_auto without it.
"""

import subprocess
import time

from qemu_balloon_auto import MiB


def wait_until(predicate, timeout, interval=0.5, what='condition',
               explain=None):
    """The first true value of @predicate(), called every @interval
    seconds; TimeoutError naming @what after @timeout seconds, with what
    @explain() says about the state things were left in, if given."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            msg = '%s not reached within %ss' % (what, timeout)
            if explain:
                msg += ': ' + explain()
            raise TimeoutError(msg)
        time.sleep(interval)


def terminate(proc, timeout=10):
    """Stop the subprocess.Popen @proc: SIGTERM, and SIGKILL if it has
    not ended after @timeout seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def proc_rss(pid):
    """Resident set size of @pid in bytes."""
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    return 0


def decision_counts(info):
    """query-balloon-auto's decisions as {reason: count}."""
    return {d['reason']: d['count'] for d in info['decisions']}


def event_counts(info):
    """query-balloon-auto's host pressure events as {level: count}."""
    return {e['level']: e['events'] for e in info['events']}


def balloon_view(info):
    """query-balloon-auto in one line, for a failure message: what the
    balloon gave and what kept it from giving more."""
    host, stats = info.get('host', {}), info.get('guest-stats', {})
    return ('level %s; balloon %d MiB, target %d, floor %d; guest available '
            '%s MiB (%s ms old), reserve %d; host %d of %d MiB in use, '
            'setpoint %d; decisions %s; ping-pongs %s' % (
                info.get('level'), info['actual'] // MiB,
                info['target'] // MiB, info['floor'] // MiB,
                stats.get('available', 0) // MiB, stats.get('age-ms'),
                info['reserve'] // MiB, host.get('usage', 0) // MiB,
                host.get('limit', 0) // MiB, host.get('setpoint', 0) // MiB,
                decision_counts(info), info.get('pingpongs')))
