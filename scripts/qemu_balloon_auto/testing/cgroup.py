# SPDX-License-Identifier: GPL-2.0-or-later
"""
Child memory cgroups for the tests and the benchmark: a v1 memcg with a
limit (the machines here bind the memory controller to cgroup v1) and a
v2 cgroup for PSI, holding the same processes; removed with everything in
them, also when a test fails.
"""

import os
import signal
import time
import uuid

V1_ROOT = '/sys/fs/cgroup/memory'
V2_ROOT = '/sys/fs/cgroup/unified'


def _own_v1_memcg():
    with open('/proc/self/cgroup') as f:
        for line in f:
            _, ctrl, path = line.rstrip('\n').split(':', 2)
            if 'memory' in ctrl.split(','):
                return V1_ROOT + path
    return V1_ROOT


def _write(path, value):
    with open(path, 'w') as f:
        f.write(str(value))


def _read(path):
    with open(path) as f:
        return f.read()


class Cgroup:
    """A child memory cgroup (v1 memcg for the limit) and a v2 cgroup (for
    PSI) holding the same processes."""

    def __init__(self, limit, name=None):
        """@limit: memory.limit_in_bytes of the v1 memcg; None for none."""
        self.name = name or 'qemu-balloon-auto-test-' + uuid.uuid4().hex[:8]
        self.v1 = os.path.join(_own_v1_memcg(), self.name)
        self.v2 = os.path.join(V2_ROOT, self.name)
        os.mkdir(self.v1)
        try:
            if limit is not None:
                _write(os.path.join(self.v1, 'memory.limit_in_bytes'), limit)
            os.mkdir(self.v2)
        except BaseException:
            self.remove()
            raise
        self.limit = limit

    def wrapper(self, v2=None):
        """A command prefix that moves itself into both cgroups (or into
        @v2 instead of the v2 cgroup, e.g. a child of it), then execs the
        rest of the command line."""
        return ['sh', '-c',
                'echo $$ > "$0/cgroup.procs" && echo $$ > "$1/cgroup.procs"'
                ' && shift && exec "$@"', self.v1, v2 or self.v2]

    def usage(self):
        return int(_read(os.path.join(self.v1, 'memory.usage_in_bytes')))

    def oom_kills(self):
        for line in _read(os.path.join(self.v1,
                                       'memory.oom_control')).splitlines():
            key, val = line.split()
            if key == 'oom_kill':
                return int(val)
        return 0

    def pids(self):
        pids = set()
        for d in (self.v1, self.v2):
            try:
                pids |= {int(p) for p in _read(os.path.join(
                    d, 'cgroup.procs')).split()}
            except OSError:
                pass
        return pids

    def remove(self):
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        children = [os.path.join(top, d) for root in (self.v1, self.v2)
                    if os.path.isdir(root)
                    for top, dirs, _ in os.walk(root, topdown=False)
                    for d in dirs]
        for d in children + [self.v1, self.v2]:
            while os.path.isdir(d):
                try:
                    os.rmdir(d)
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
