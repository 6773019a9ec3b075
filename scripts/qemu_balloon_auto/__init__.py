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

MiB = 1024 * 1024
