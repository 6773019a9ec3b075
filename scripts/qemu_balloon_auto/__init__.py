# SPDX-License-Identifier: GPL-2.0-or-later
"""
Python support shared by the tools of the automatic-balloon fork: the
host-side view (scripts/balloon_auto_top.py), the management helper
(scripts/qemu-balloon-auto-pressure), the Prometheus exporter
(scripts/qemu-balloon-auto-exporter), the benchmark (bench/) and the
functional tests (tests/functional/balloon_auto/).

  qemu_balloon_auto.qmp      QMP on a unix socket or through libvirt
  qemu_balloon_auto.testing  guests, cgroups and memory hogs for the
                             tests and the benchmark (not installed)

Programs in scripts/ import it from their own directory; everything else
runs with PYTHONPATH naming the checkout's scripts/ directory (make and
scripts/fork/check.py set it).  The Debian package installs the
package without 'testing' where /usr/bin/python3 finds it.
"""

import signal

MiB = 1024 * 1024


def stop_on_signals():
    """Make SIGINT (Ctrl-C) and SIGTERM raise KeyboardInterrupt wherever
    the program waits (a monitor's reply, virsh, a pause, a guest), so
    that it ends at once and its cleanup runs, whatever it inherited: a
    background job of a non-interactive shell ('cmd &', as CI runners and
    scripts start commands) starts with SIGINT ignored, and then Python
    installs no KeyboardInterrupt handler at all; a parent may also pass
    SIGINT on blocked.  Python's default for SIGTERM ends the program
    with no cleanup at all."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    signal.pthread_sigmask(signal.SIG_UNBLOCK,
                           {signal.SIGINT, signal.SIGTERM})
