# SPDX-License-Identifier: GPL-2.0-or-later
"""A host process that takes memory inside a cgroup."""

import subprocess
import threading


class MemoryHog:
    """A host process that takes memory inside a cgroup: it allocates and
    touches @mib MiB in @step chunks, then holds it."""

    SCRIPT = ('import mmap, sys, time\n'
              'mib, step, delay = map(float, sys.argv[1:4])\n'
              'chunks = []\n'
              'done = 0\n'
              'while done < mib:\n'
              '    n = int(min(step, mib - done)) * 1048576\n'
              '    m = mmap.mmap(-1, n)\n'
              '    for i in range(0, n, 4096):\n'
              '        m[i] = 1\n'
              '    chunks.append(m)\n'
              '    done += n / 1048576\n'
              '    print("hog", int(done), flush=True)\n'
              '    time.sleep(delay)\n'
              'time.sleep(1e9)\n')

    def __init__(self, cgroup, mib, step=32, delay=0.05):
        self.proc = subprocess.Popen(
            cgroup.wrapper() + ['python3', '-c', self.SCRIPT, str(mib),
                                str(step), str(delay)],
            stdout=subprocess.PIPE, text=True)
        self.allocated = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith('hog '):
                self.allocated = int(line.split()[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
