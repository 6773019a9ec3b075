#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Regenerate docs/system/devices/virtio-balloon-auto-dashboard.png, the
# documentation's picture of the Grafana dashboard: run the exporter
# test's host-pressure scenario (a guest in a memory-limited cgroup, a
# host process allocating next to it, the exporter and a Prometheus on
# loopback) and draw the dashboard from that Prometheus's data with
# render-dashboard.py.  As root (cgroups), after 'make', from anywhere:
#
#     contrib/balloon-auto/regenerate-dashboard-png.sh
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
png="$top/docs/system/devices/virtio-balloon-auto-dashboard.png"
cd "$top"
QEMU_FORK_DASHBOARD_PNG="$png" PYTHONPATH="$top/scripts" \
    /usr/bin/python3 tests/functional/balloon_auto/test_exporter.py PressureTest
echo "regenerated $png"
