# SPDX-License-Identifier: GPL-2.0-or-later
"""
The no-limit scenario (see run.py's docstring): the host's own memory as
the limit, as on most KVM hosts (libvirt, Proxmox VE and OpenStack put VMs
in machine.slice scopes with no memory.max).  This machine must never run
out of memory itself, so the host is the nested cgroup v2 host of
qemu_balloon_auto.testing.nested (the bundled 6.12 guest with 1 GiB, the
fork's build on a read-only disk, `make v2host`), booted once and reused;
inside it the fork runs a 448 MiB nested guest (TCG inside TCG) in
machine.slice/vm.scope and a service in system.slice/svc.service takes
150 MiB more than the host has available next to a VM whose guest has
used and freed 300 MiB.  That need is measured once, with a VM without
free page reporting, and is the same for every setup: with free page
reporting the freed memory is back in the host before the service starts,
and a need measured there would ask the host for memory it never had.
Every setup runs the same binary, the fork's: the upstream and PVE setups
with automatic=off.  Each measurement starts a fresh nested QEMU (the
guest uses and frees 300 MiB, then the same settle time for every setup)
and ends with nothing of it left; the measuring itself runs inside the
host (bench/nolimit_probe.py).
"""

import json
import os
import statistics
import time

from qemu_balloon_auto.testing import wait_until
from qemu_balloon_auto.testing.nested import NestedHost

import peers

HERE = os.path.dirname(os.path.abspath(__file__))
HOST_MEM = '1G'
VM_MEM_MIB = 448
SCOPE = 'machine.slice/vm.scope'
SERVICE = 'system.slice/svc.service'
RATES = [20, 50, 100, 200, 'max']
STEP = 20                   # MiB per service step
EXTRA = 150                 # MiB the service takes beyond MemAvailable
GUEST_USED = 300            # MiB the guest uses and frees before each run
CACHE_DISK_MIB = 512        # the disk whose page cache a 'cache' guest holds
GUESTS = ('freed', 'cache')
SETTLE = 10                 # s after that, for every setup
AFTER = 10                  # s watched after the service is done
POLL = 0.2                  # s between the probe's samples
STAGE_RATE = 100            # the fork's stages are reported at this rate
PROBE = '/opt/bench/nolimit_probe.py'
DAEMON = '/opt/bench/pve_daemon.py'
QMP_PROBE = '/tmp/vm-probe.qmp'
QMP_DAEMON = '/tmp/vm-pve.qmp'
# the PVE daemon's reading of memory in use: pve-common's (MemFree +
# Buffers + Cached as free) would count the nested host's initramfs root,
# shmem that cannot be reclaimed, as free; on a host with its root on disk
# the two agree
PVE_MEMUSED = 'available'


def pacing(rate):
    """(--step, --delay-ms) of the service at nominal @rate MiB/s ('max':
    no delay)."""
    if rate == 'max':
        return STEP, 0
    return STEP, int(round(1000.0 * STEP / rate))


def balloon_options(setup):
    """The nested QEMU's balloon options for a peers.Setup: the fork's
    auto-detection with automatic=on, automatic=off and the setup's own
    options (deflate-on-oom, free-page-reporting) otherwise."""
    opts = ['automatic=on'] if setup.fork else ['automatic=off']
    for opt in setup.balloon.split(','):
        if opt and not opt.startswith(('automatic=', 'pressure-')):
            opts.append(opt)
    return ','.join(opts)


class NestedEnv:
    """The nested host, booted on first use and again only if it stops
    answering, and the one VM of a measurement."""

    def __init__(self, workdir, verbose=False, tree=None, guest='freed'):
        self.workdir = workdir
        self.tree = tree
        self.guest = guest
        self.verbose = verbose
        self.host = None
        self.boots = []
        self.facts = {}
        self.pids = []
        self.need = None

    def log(self, msg):
        if self.verbose:
            print('  ... ' + msg, flush=True)

    def responsive(self):
        try:
            return self.host.console.run('true', 30)[0] == 0
        except Exception:  # pylint: disable=broad-except
            return False

    def ensure(self):
        if self.host and self.responsive():
            return self.host
        if self.host:
            self.log('the nested host stopped answering: booting it again')
            self.host.shutdown()
            self.host = None
        t0 = time.monotonic()
        host = NestedHost('nolimit-host', mem=HOST_MEM, workdir=self.workdir,
                          tree=self.tree)
        host.launch()
        self.host = host
        # OOM reports on a TCG serial console cost time and would break
        # into the probe's output; the kernel log keeps them
        host.sh('dmesg -n 1')
        for name, dest in (('nolimit_probe.py', PROBE),
                           ('pve_daemon.py', DAEMON)):
            with open(os.path.join(HERE, name), 'rb') as f:
                host.push(f.read(), dest, 0o755)
        mem = host.keyed('/proc/meminfo')
        self.facts = {'mem_total': mem['MemTotal'] >> 20,
                      'mem_available': mem['MemAvailable'] >> 20,
                      'shmem': mem.get('Shmem', 0) >> 20,
                      'kernel': host.sh('uname -r')[-1]}
        self.boots.append(round(time.monotonic() - t0, 1))
        self.log('nested host up in %.0f s: %s' % (self.boots[-1],
                                                   self.facts))
        return host

    def start_vm(self, balloon):
        """The measurement's VM, in its scope, with the balloon options
        @balloon and the monitors of the probe and the daemon: (its
        console, its pid).  The service's cgroup is made too."""
        h = self.host
        h.mkcgroup(SCOPE)
        h.mkcgroup(SERVICE)
        _, con, qemu = h.start_qemu(
            'vm', SCOPE, balloon, mem='%dM' % VM_MEM_MIB,
            disk_mib=CACHE_DISK_MIB if self.guest == 'cache' else 0,
            args='-qmp unix:%s,server=on,wait=off -qmp unix:%s,server=on,'
                 'wait=off' % (QMP_PROBE, QMP_DAEMON))
        self.pids.append(qemu)
        return con, qemu

    def fill_guest(self, con):
        """The guest's GUEST_USED MiB: used and freed ('freed'), or read
        from its disk and held as page cache ('cache'); then the settle
        time passes.  None, or why that failed."""
        h = self.host
        if self.guest == 'freed':
            rc, out = h.nested(con, 'bgt alloc %d' % GUEST_USED, 600)
            if rc != 0:
                return 'setup failed: bgt alloc %d: %s' % (
                    GUEST_USED, ' '.join(out[-2:]))
        else:
            # closing the disk would drop its cache: bgt holds it open
            rc, out = h.nested(con, 'bgt cache /dev/vda %d --hold -1 > '
                               '/tmp/cache.log 2>&1 &' % GUEST_USED, 60)
            if rc != 0:
                return 'setup failed: bgt cache: %s' % ' '.join(out[-2:])
            done = 'cache ok %d' % GUEST_USED
            try:
                wait_until(lambda: done in ' '.join(
                    h.nested(con, 'cat /tmp/cache.log', 60)[1]), 600,
                    interval=2, what='"%s"' % done)
            except TimeoutError as e:
                return 'setup failed: %s' % e
        time.sleep(SETTLE)
        return None

    def service_need(self):
        """MiB the service takes, the same for every setup: the host's
        MemAvailable next to a settled VM without free page reporting,
        plus EXTRA.  Measured once, on first use."""
        if self.need is None:
            self.cleanup()
            con, _ = self.start_vm('automatic=off')
            failed = self.fill_guest(con)
            if failed:
                raise RuntimeError('measuring the need: ' + failed)
            available = self.host.keyed('/proc/meminfo')['MemAvailable']
            self.need = (available >> 20) + EXTRA
            self.facts['service_need'] = self.need
            self.log('the service takes %d MiB in every setup' % self.need)
            self.cleanup()
        return self.need

    def cleanup(self):
        """Nothing of a measurement left: its processes and cgroups."""
        h = self.host
        if not h:
            return
        h.sh('for f in /sys/fs/cgroup/%s/cgroup.procs '
             '/sys/fs/cgroup/%s/cgroup.procs; do [ -f $f ] && '
             'for p in $(cat $f); do kill -9 $p; done; done; true' % (
                 SCOPE, SERVICE), 60)
        h.kill(*self.pids)
        for pid in self.pids:
            h.wait_gone(pid)
        self.pids = []
        h.rmcgroups(SERVICE, SCOPE)
        h.sh('rm -f /tmp/vm.qmp /tmp/vm.con %s %s /tmp/probe.json '
             '/tmp/pve.jsonl' % (QMP_PROBE, QMP_DAEMON))

    def shutdown(self):
        if self.host:
            try:
                self.cleanup()
            except Exception:  # pylint: disable=broad-except
                pass
            self.host.shutdown()
            self.host = None


def no_limit(nenv, setup, rate, run=0):
    """One measurement: @setup, the service at nominal @rate MiB/s."""
    step, delay_ms = pacing(rate)
    res = {'scenario': 'no-limit', 'setup': setup.name, 'rate': rate,
           'run': run, 'step': step, 'delay_ms': delay_ms, 'extra': EXTRA,
           'guest': nenv.guest, 'guest_used': GUEST_USED,
           'vm_mib': VM_MEM_MIB,
           'settle': SETTLE, 'balloon': balloon_options(setup)}
    if rate == STAGE_RATE and setup.name == 'fork-auto' and run == 0:
        res['stage_run'] = True
    try:
        h = nenv.ensure()
        need = nenv.service_need()
        nenv.cleanup()
        res['host'] = dict(nenv.facts)
        res['load'] = round(os.getloadavg()[0], 2)  # this machine's
        t0 = time.monotonic()
        con, qemu = nenv.start_vm(res['balloon'])
        res['boot_seconds'] = round(time.monotonic() - t0, 1)
        daemon = None
        if setup.daemon:
            daemon = int(h.sh(
                'python3 %s --meminfo --memused %s --interval %g --vm '
                'vm:%s:%d:%d --log /tmp/pve.jsonl > /tmp/pve.out 2>&1 & '
                'echo $!' % (DAEMON, PVE_MEMUSED, setup.interval,
                             QMP_DAEMON, VM_MEM_MIB, VM_MEM_MIB // 4))[-1])
            nenv.pids.append(daemon)
            res['pve_memused'] = PVE_MEMUSED
        t1 = time.monotonic()
        failed = nenv.fill_guest(con)
        res['guest_alloc_seconds'] = round(time.monotonic() - t1, 1)
        if failed:
            res.update(ok=False, verdict=failed)
            return res
        nominal_s = 60 if rate == 'max' else 600.0 / rate
        timeout = max(120, 3 * nominal_s)
        pids = 'pve-daemon=%d' % daemon if daemon else ''
        nenv.log('%s at %s: probe' % (setup, rate))
        h.console.check(
            'echo -1000 > /proc/self/oom_score_adj && exec python3 %s '
            '--qmp %s --qemu-pid %d --service %s --extra %d --need %d '
            '--step %d --delay-ms %d --timeout %d --after %d --poll %g '
            '--trace /tmp/vm.log --out /tmp/probe.json %s %s' % (
                PROBE, QMP_PROBE, qemu, SERVICE, EXTRA, need, step,
                delay_ms, timeout, AFTER, POLL,
                '--fork' if setup.fork else
                '--bound' if setup.bound else '',
                '--pids ' + pids if pids else ''), timeout + AFTER + 300)
        probe = _read_json(h, '/tmp/probe.json')
        guest_oom = None
        if probe['qemu_alive']:
            rc, out = h.nested(con, 'bgt vmstat oom_kill', 60)
            for line in out:
                if line.startswith('oom_kill ') and \
                        line.split()[1].isdigit():
                    guest_oom = int(line.split()[1])
        cycles = []
        if daemon:
            res['daemon_alive'] = h.alive(daemon)
            h.sh('kill %d 2>/dev/null; true' % daemon)
            h.wait_gone(daemon, 30)
            cycles = [json.loads(line) for line in
                      h.sh('cat /tmp/pve.jsonl 2>/dev/null; true', 60)
                      if line.startswith('{')]
            res['daemon'] = peers.daemon_summary(cycles)
        _judge(res, probe, guest_oom)
    except Exception as e:  # pylint: disable=broad-except
        res.update(ok=False, verdict='error: %r' % e)
    finally:
        try:
            if nenv.host and nenv.responsive():
                nenv.cleanup()
        except Exception:  # pylint: disable=broad-except
            pass
    return res


def _read_json(host, path, tries=3):
    for i in range(tries):
        # the file has no final newline: the console's end mark would
        # share its line
        text = ''.join(host.sh('cat %s; echo' % path, 120))
        try:
            return json.loads(text)
        except ValueError:
            if i == tries - 1:
                raise
            time.sleep(1)
    return None


def _judge(res, probe, guest_oom):
    """Fill @res from the probe's findings: outcome, rates, sizes."""
    samples = probe.pop('samples')
    res['probe'] = probe
    done = probe['service_done']
    seconds = probe['service_seconds']
    res.update(
        need=probe['need'], qemu_alive=probe['qemu_alive'],
        # what the host lacked when the service started: free page
        # reporting gives the guest's freed memory back before it
        short=probe['need'] - probe['host']['available'],
        service_done=done, oom_kill=probe['oom_kill'],
        killed=probe['killed'], guest_oom_kill=guest_oom,
        before=probe['before'], after=probe['after'],
        service_seconds=seconds if done else None,
        service_end=probe['service_end'],
        # until it was done, or until it died or stuck
        achieved=round(probe['need'] / seconds, 1) if done and seconds
        else round(probe['service_mib'] / max(probe['service_end'], 1e-3),
                   1))
    acts = [s['actual'] for s in samples if s.get('actual') is not None]
    res['min_actual'] = round(min(acts)) if acts else None
    res['inflate'] = inflate_rate(samples, probe['before'])
    if probe.get('source'):
        res['source'] = probe['source']
    if probe.get('fork_after') and probe.get('fork_before'):
        def host_pressure(info):
            return {d['reason']: d['count'] for d in
                    info['decisions']}.get('host-pressure', 0)
        res['host_pressure_decisions'] = (host_pressure(probe['fork_after']) -
                                          host_pressure(probe['fork_before']))
    if res['setup'].startswith('fork'):
        res['stages'] = stages(samples, probe)
    # thinned for results.json: every second sample is enough for plots
    res['samples'] = samples[::2]
    ok = probe['qemu_alive'] and done and probe['oom_kill'] == 0
    res['ok'] = ok
    res['verdict'] = verdict(res, probe)


def verdict(res, probe):
    if res['ok']:
        extra = ''
        if res.get('guest_oom_kill'):
            extra = ' (guest OOM killer ran %d time(s))' % \
                res['guest_oom_kill']
        return 'survived' + extra
    what = []
    killed = probe['killed']
    for label in killed:
        what.append('%s OOM-killed' % label)
        if label == 'QEMU' and probe.get('qemu_gone') is not None:
            what[-1] += ' at %.1f s' % probe['qemu_gone']
    if not probe['qemu_alive'] and 'QEMU' not in killed:
        what.append('QEMU died')
    if not probe['service_done'] and 'service' not in killed:
        if probe['service_alive']:
            what.append('service stuck at %d of %d MiB' % (
                probe['service_mib'], probe['need']))
        else:
            what.append('service died at %d MiB' % probe['service_mib'])
    elif 'service' in killed:
        what[killed.index('service')] += ' at %d MiB' % probe['service_mib']
    if probe['oom_kill'] and not killed:
        what.append('oom_kill +%d' % probe['oom_kill'])
    if res.get('daemon_alive') is False and 'pve-daemon' not in killed:
        what.append('PVE daemon died')
    return '; '.join(what) or 'failed'


def inflate_rate(samples, before):
    """The driver's inflate rate while it follows, MiB/s: from the last
    sample before the balloon first moved to the first at its smallest;
    None if it never moved by 2 MiB."""
    pts = [(s['t'], s['actual']) for s in samples
           if s.get('actual') is not None]
    if not pts or before is None:
        return None
    low_t, low = min(pts, key=lambda p: (p[1], p[0]))
    if before - low < 2:
        return None
    start = 0
    for i, (t, a) in enumerate(pts):
        if a < before - 0.5:
            start = max(0, i - 1)
            break
    t_start = pts[start][0]
    if low_t <= t_start:
        return None
    return round((pts[start][1] - low) / (low_t - t_start), 1)


def stages(samples, probe):
    """The fork's reaction, seconds from the service's start: the host's
    memory in use over the setpoint (80 % of MemTotal, /proc/meminfo as
    the probe read it), the fork's first reading over its setpoint
    (query-balloon-auto's host, dated by its age), its first decision
    (trace), the driver's first progress (query-balloon's actual below
    where it was), and the inflate rate while following."""
    gaps = [b['t'] - a['t'] for a, b in zip(samples, samples[1:])]
    out = {'poll_s': POLL,
           'poll_median': round(statistics.median(gaps), 3) if gaps else None}
    total = probe['host']['total']
    setpoint = total * 0.8      # the fork: MemTotal // 1000 * 800
    for s in samples:
        if s['used'] > setpoint:
            out['host_over'] = s['t']
            break
    for s in samples:
        f = s.get('fork')
        if f and f[0] > f[1]:
            out['fork_reading'] = round(s['t'] - f[2] / 1000.0, 2)
            out['fork_reading_polled'] = s['t']
            out['setpoint'] = f[1]
            break
    for d in probe.get('decisions', []):
        if d[1] == 'host-pressure':
            out['decision'] = d[0]
            out['decision_target'] = [d[2] >> 20, d[3] >> 20]
            break
    decisions = probe.get('decisions', [])
    if decisions:
        out['first_decision_any'] = [decisions[0][0], decisions[0][1]]
    before = probe['before']
    for s in samples:
        if s.get('actual') is not None and s['actual'] < before - 0.5:
            out['progress'] = s['t']
            break
    out['inflate'] = inflate_rate(samples, before)
    out['service_end'] = probe['service_end']
    # what the balloon had given when the service was done (or died)
    at_end = [s['actual'] for s in samples
              if s['t'] <= probe['service_end'] and s.get('actual')
              is not None]
    if at_end and before is not None:
        out['given_by_end'] = round(before - at_end[-1], 1)
    return out
