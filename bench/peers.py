# SPDX-License-Identifier: GPL-2.0-or-later
"""
The setups the benchmark compares, each a real guest (the bundled test
guest under TCG) in a real v1 memory cgroup:

  fork-auto         the fork, automatic=on, pressure-source=cgroup-v1 on the
                    benchmark's cgroup
  upstream          the pristine build, a plain balloon nobody drives
  upstream-doo-fpr  the pristine build, deflate-on-oom=on,
                    free-page-reporting=on, nobody drives it
  pve-10s, pve-1s   the pristine build, a balloon with free-page-reporting=on
                    (as Proxmox VE gives it) driven over QMP by
                    bench/pve_daemon.py (Proxmox VE's auto-ballooning
                    algorithm) at a 10 s / 1 s cycle
  bound             the mechanism's bound, a reference: the fork's binary
                    with automatic=off, asked by hand for all the guest
                    can give the moment the host process or service
                    starts (host-rate, no-limit), in density for all
                    the others can give at each turn's start, in seed
                    for exactly what the allocation needs as it starts

A "+doo" suffix adds deflate-on-oom=on to any of them (fork-auto+doo,
pve-1s+doo, ...), a "+fpr" suffix free-page-reporting=on (fork-auto+fpr).
A "+nopc" suffix boots the guest with proactive compaction off
(vm.compaction_proactiveness=0): it migrates balloon pages one host round
trip at a time.  Any of them may be combined (fork-auto+doo+fpr).
"""

import json
import os
import re
import subprocess
import sys

from qemu_balloon_auto import MiB
from qemu_balloon_auto.testing import terminate
from qemu_balloon_auto.testing.guest import TestVM, guest_paths

HERE = os.path.dirname(os.path.abspath(__file__))

BASE_SETUPS = {
    'fork-auto': ('fork', 'automatic=on,pressure-source=cgroup-v1,'
                          'pressure-cgroup={cgroup}', None),
    'upstream': ('pristine', '', None),
    'upstream-doo-fpr': ('pristine', 'deflate-on-oom=on,free-page-reporting=on',
                         None),
    'pve-10s': ('pristine', 'free-page-reporting=on', 10.0),
    'pve-1s': ('pristine', 'free-page-reporting=on', 1.0),
    'bound': ('fork', '', None),
}
# suffixes that add a balloon property to any setup
MODIFIERS = {'doo': 'deflate-on-oom=on', 'fpr': 'free-page-reporting=on'}
# suffixes +floorN and +reserveN (fork-auto and bound only) set one of
# the fork's own properties to N MiB
SIZE_MODIFIERS = {'floor': 'auto-floor', 'reserve': 'auto-reserve'}
SIZE_MODIFIER = re.compile(r'(%s)([1-9]\d*)$' % '|'.join(SIZE_MODIFIERS))
# suffixes that add to any setup's guest kernel command line
GUEST_MODIFIERS = {'nopc': 'sysctl.vm.compaction_proactiveness=0'}
DEFAULT_SETUPS = ['fork-auto', 'upstream', 'upstream-doo-fpr', 'pve-10s',
                  'pve-1s']


class Setup:
    def __init__(self, name):
        base, *mods = name.split('+')
        known = {**MODIFIERS, **GUEST_MODIFIERS}
        sizes = {m: size for m in mods
                 if (size := SIZE_MODIFIER.match(m))}
        kinds = [m.group(1) for m in sizes.values()]
        if base not in BASE_SETUPS or \
                not set(mods) <= set(known) | set(sizes) or \
                len(set(mods)) != len(mods) or \
                len(set(kinds)) != len(kinds) or \
                (BASE_SETUPS[base][0] != 'fork' and sizes):
            raise ValueError('unknown setup %r (known: %s, each optionally '
                             'with %s; +floorN and +reserveN, N MiB, once '
                             'each, on the fork\'s setups only)' % (
                                 name, ', '.join(BASE_SETUPS),
                                 ', '.join('+' + m for m in known)))
        self.name = name
        self.base = base
        self.tree_kind, self.balloon, self.interval = BASE_SETUPS[base]
        self.append = ' '.join(GUEST_MODIFIERS[m] for m in mods
                               if m in GUEST_MODIFIERS)
        for mod in mods:
            size = sizes.get(mod)
            prop = MODIFIERS.get(mod) or (
                '%s=%sM' % (SIZE_MODIFIERS[size.group(1)], size.group(2))
                if size else None)
            if prop and prop.partition('=')[0] not in self.balloon:
                self.balloon = ','.join(x for x in (self.balloon, prop) if x)

    @property
    def daemon(self):
        return self.interval is not None

    @property
    def fork(self):
        """The fork's automatic balloon drives the guest."""
        return self.base == 'fork-auto'

    @property
    def bound(self):
        return self.base == 'bound'

    def __repr__(self):
        return self.name


class Env:
    """What every scenario needs: the two trees, a work directory, the
    guest kernel flavour."""

    def __init__(self, fork_tree, pristine_tree, workdir, kernel='stable',
                 verbose=False):
        self.fork_tree = fork_tree
        self.pristine_tree = pristine_tree
        self.workdir = workdir
        self.kernel = kernel
        self.verbose = verbose
        self.guest = guest_paths(kernel)
        self.seq = 0

    def log(self, msg):
        if self.verbose:
            print('  ... ' + msg, flush=True)

    def tree(self, setup):
        return self.fork_tree if setup.tree_kind == 'fork' else \
            self.pristine_tree

    def disk(self, name, mib):
        """A sparse raw disk of @mib MiB in the work directory."""
        path = os.path.join(self.workdir, name + '.raw')
        with open(path, 'wb') as f:
            f.truncate(mib * MiB)
        return path

    def vm(self, setup, name, cgroup, mem='1G', disk=None, balloon=None):
        """A TestVM of @setup in @cgroup; with a daemon or the bound it
        gets a second QMP monitor (vm.daemon_sock) for what drives it.
        @balloon overrides the setup's balloon options."""
        self.seq += 1
        name = '%s-%d' % (name, self.seq)
        args = []
        if disk:
            args += ['-drive', 'file=%s,format=raw,if=none,id=d0,cache=none'
                     % disk, '-device', 'virtio-blk-pci,drive=d0']
        sock = None
        if setup.daemon or setup.bound:
            sock = os.path.join(self.workdir, name + '.qmp')
            args += ['-qmp', 'unix:%s,server=on,wait=off' % sock]
        opts = setup.balloon if balloon is None else balloon
        vm = TestVM(name, mem=mem, cgroup=cgroup,
                    balloon=opts.format(cgroup=cgroup.v1),
                    tree=self.tree(setup), args=args,
                    workdir=self.workdir, guest=self.guest,
                    append=setup.append)
        vm.daemon_sock = sock
        vm.mem_mib = parse_mib(mem)
        return vm


def parse_mib(mem):
    mem = mem.upper()
    if mem.endswith('G'):
        return int(float(mem[:-1]) * 1024)
    if mem.endswith('M'):
        return int(mem[:-1])
    return int(mem) // MiB


class PveDaemon:
    """bench/pve_daemon.py run as a host process (outside the cgroup) for
    @vms; @mins: {vm: minimum MiB}, default 25 % of the VM's size."""

    def __init__(self, setup, cgroup, vms, workdir, mins=None):
        self.log_path = os.path.join(workdir, 'pve-%s-%d.jsonl' % (
            setup.name, os.getpid()))
        if os.path.exists(self.log_path):
            os.unlink(self.log_path)
        cmd = [sys.executable, os.path.join(HERE, 'pve_daemon.py'),
               '--cgroup', cgroup.v1, '--interval', str(setup.interval),
               '--log', self.log_path]
        for vm in vms:
            mn = (mins or {}).get(vm, vm.mem_mib // 4)
            cmd += ['--vm', '%s:%s:%d:%d' % (vm.name, vm.daemon_sock,
                                             vm.mem_mib, mn)]
        self.proc = subprocess.Popen(cmd)

    def stop(self):
        """Stop the daemon; returns its cycles (parsed log)."""
        terminate(self.proc)
        cycles = []
        try:
            with open(self.log_path) as f:
                cycles = [json.loads(line) for line in f if line.strip()]
            os.unlink(self.log_path)
        except OSError:
            pass
        return cycles


def daemon_summary(cycles):
    """Cycles and how many balloon commands the daemon sent."""
    sent = sum(1 for c in cycles for v in c.get('vms', {}).values()
               if v['target'] != v['actual'])
    return {'cycles': len(cycles), 'commands': sent, 'log': cycles}


class NoDaemon:
    def stop(self):
        return []


def start_daemon(setup, cgroup, vms, workdir, mins=None):
    if not setup.daemon:
        return NoDaemon()
    return PveDaemon(setup, cgroup, vms, workdir, mins)


def kill_report(cgroup, pids):
    """What the memory cgroup's OOM killer did: memory.oom_control and the
    kernel log lines naming one of @pids ({pid: label})."""
    out = {'oom_control': {}}
    try:
        with open(os.path.join(cgroup.v1, 'memory.oom_control')) as f:
            for line in f:
                k, v = line.split()
                out['oom_control'][k] = int(v)
    except OSError:
        pass
    try:
        log = subprocess.run(['dmesg'], stdout=subprocess.PIPE, text=True,
                             timeout=10).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        log = []
    killed = []
    for line in log:
        if 'Killed process' not in line:
            continue
        for pid, label in pids.items():
            if 'Killed process %d ' % pid in line:
                killed.append(label)
    out['killed'] = sorted(set(killed))
    return out
