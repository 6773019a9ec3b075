# SPDX-License-Identifier: GPL-2.0-or-later
"""Results table and PNG plot of the benchmark with peers."""

import re
import statistics

from peers import GUEST_MODIFIERS


def _setups(results, scenario, key='setup'):
    seen = []
    for r in results:
        if r['scenario'] == scenario and r[key] not in seen:
            seen.append(r[key])
    return seen


def host_rate_table(results):
    rows = [r for r in results if r['scenario'] == 'host-rate']
    if not rows:
        return []
    mib = rows[0].get('mib', 700)
    out = ['host-rate: 1 GiB guest with 850 MiB page cache (cache=none) in a '
           '1400 MiB memcg; a host process allocates %d MiB' % mib,
           '  %-18s %8s %9s %7s  %s' % ('setup', 'nominal', 'achieved',
                                        'seconds', 'outcome')]
    for r in rows:
        out.append('  %-18s %8s %9s %7s  %s' % (
            r['setup'], r['rate'],
            '%.0f' % r['achieved'] if 'achieved' in r else '-',
            '%.1f' % r['hog_seconds'] if 'hog_seconds' in r else '-',
            r['verdict']))
    out.append('  highest nominal rate survived (every run at that rate):')
    for s in _setups(rows, 'host-rate'):
        best = highest_survived(rows, s)
        out.append('    %-18s %s' % (s, rate_text(best) if best else
                                     'none'))
    # what the allocator got decides, more than what it was asked for:
    # near the limit the kernel throttles it, by how much varies by run
    out.append('  %-20s %16s %12s' % ('achieved MiB/s', 'fastest survived',
                                      'slowest died'))
    for s in _setups(rows, 'host-rate'):
        survived, died = achieved_edge(rows, s)
        out.append('    %-18s %16s %12s' % (
            s, '%.0f' % survived if survived else '-',
            '%.0f' % died if died else '-'))
    return out


def achieved_edge(rows, setup):
    """(fastest achieved rate of a run that survived, slowest achieved
    rate of a run that died) of @setup, None where there is none."""
    runs = [r for r in rows if r['setup'] == setup and 'achieved' in r]
    survived = [r['achieved'] for r in runs if r['ok']]
    died = [r['achieved'] for r in runs if not r['ok']]
    return (max(survived) if survived else None,
            min(died) if died else None)


def rate_value(rate):
    """A nominal host rate as a number: 'max' (no pacing) above all."""
    return float('inf') if rate == 'max' else rate


def rate_text(rate):
    return 'no pacing' if rate == 'max' else '%s MiB/s' % rate


def highest_survived(rows, setup):
    by_rate = {}
    for r in rows:
        if r['setup'] == setup:
            by_rate.setdefault(r['rate'], []).append(r['ok'])
    ok = [rate for rate, oks in by_rate.items() if all(oks)]
    return max(ok, key=rate_value) if ok else None


def seed_table(results):
    rows = [r for r in results if r['scenario'] == 'seed']
    if not rows:
        return []
    out = ['seed: 3 GiB guest set to 1 GiB allocates 1536 MiB at full speed;'
           ' time median [range] over the runs that succeeded; /bound and'
           ' /baseline: median [range] of the ratios within each run (the'
           ' bound: given exactly what it needs as it starts, the same'
           ' guest; baseline: nothing ballooned; both the fork\'s binary,'
           ' automatic=off)',
           '  migrated: MiB of balloon pages the guest\'s compaction moved'
           ' during the allocation, median [range]',
           '  %-18s %-26s %7s %18s %18s %18s %14s  %s' % (
               'setup', 'allocation', 'ok/runs', 'seconds', '/bound',
               '/baseline', 'migrated', 'failures')]
    for alloc in _setups(rows, 'seed', 'alloc'):
        ra = [r for r in rows if r['alloc'] == alloc]
        for s in _setups(ra, 'seed'):
            rs = [r for r in ra if r['setup'] == s]
            oks = [r for r in rs if r.get('ok')]
            fails = sorted({r['verdict'] for r in rs if not r.get('ok')})
            migrated = [_pages_mib(r['balloon_migrated']) for r in rs
                        if 'balloon_migrated' in r]
            out.append('  %-18s %-26s %7s %18s %18s %18s %14s  %s' % (
                s, alloc, '%d/%d' % (len(oks), len(rs)),
                _spread([r['seconds'] for r in oks], '%.1f'),
                _ratios(oks, ra, _same_guest_bound(s)),
                _ratios(oks, ra, 'baseline'), _spread(migrated),
                '; '.join(fails)))
    return out


def _same_guest_bound(setup):
    """The bound row with @setup's guest: its guest suffixes ("+nopc")."""
    return '+'.join(['bound'] + [m for m in setup.split('+')[1:]
                                 if m in GUEST_MODIFIERS])


def _ratios(oks, rows, ref):
    """Median [range] of each successful run's time over @ref's in the
    same run, or '-'."""
    ref_t = {r.get('run'): r['seconds'] for r in rows
             if r['setup'] == ref and r.get('ok')}
    ratios = [r['seconds'] / ref_t[r.get('run')] for r in oks
              if r.get('run') in ref_t]
    return _spread(ratios, '%.2f', 'x') if ratios else '-'


def density_table(results):
    rows = [r for r in results if r['scenario'] == 'density']
    if not rows:
        return []
    out = ['density: N guests of 1 GiB (700 MiB page cache each, cache=none)'
           ' in a 2000 MiB memcg take turns allocating 600 MiB',
           '  stall: longest time a guest waited with its balloon inflated'
           ' while another held >= 128 MiB of page cache (+free: page cache'
           ' or free memory); short: the same while the guest had at most'
           ' two reserves available and another held >= 200 MiB of page'
           ' cache',
           '  migrated: MiB of balloon pages the guests\' compaction moved'
           ' during the turns',
           '  %-18s %2s %9s %7s %7s %7s %8s  %s' % (
               'setup', 'N', 'completed', 'stall s', '+free s', 'short s',
               'migrated', 'outcome')]
    for r in rows:
        out.append('  %-18s %2d %9s %7s %7s %7s %8s  %s' % (
            r['setup'], r['n'], '%s/%d' % (r.get('completed', 0), r['n']),
            '%.1f' % r.get('max_stall', 0),
            '%.1f' % r.get('max_idle_stall', 0),
            '%.1f' % r.get('max_short_stall', 0),
            _spread([_density_migrated_mib(r)]), r['verdict']))
    out.append('  over the runs, median [range]: working sets completed,'
               ' the longest stall and short stall, MiB migrated; runs with'
               ' all complete and no OOM kill')
    for s in _setups(rows, 'density'):
        for n in sorted({r['n'] for r in rows if r['setup'] == s}):
            cell = [r for r in rows if r['setup'] == s and r['n'] == n]
            out.append('    %-18s %2d %12s of %d %14s s %14s s %12s MiB'
                       ' %4d/%d runs'
                       % (s, n, _spread([r.get('completed', 0)
                                         for r in cell]), n,
                          _spread([r.get('max_stall', 0) for r in cell],
                                  '%.1f'),
                          _spread([r.get('max_short_stall', 0)
                                   for r in cell], '%.1f'),
                          _spread([_density_migrated_mib(r) for r in cell]),
                          sum(1 for r in cell if r['ok']), len(cell)))
    out.append('  largest N sustained (all complete, no OOM kill):')
    for s in _setups(rows, 'density'):
        best = largest_n(rows, s)
        out.append('    %-18s %s' % (s, best or 'none'))
    return out


def _density_migrated_mib(row):
    """MiB of balloon pages all guests' compaction moved in a density
    run's turns (None if no turn could count them)."""
    pages = [p for t in row.get('turns', [])
             for p in t.get('balloon_migrated', []) if p is not None]
    return _pages_mib(sum(pages)) if pages else None


def _pages_mib(pages):
    """A count of the guest's 4 KiB pages (vmstat's unit) in MiB."""
    return pages * 4096 / (1 << 20)


def largest_n(rows, setup):
    by_n = {}
    for r in rows:
        if r['setup'] == setup:
            by_n.setdefault(r['n'], []).append(r['ok'])
    ok = [n for n, oks in by_n.items() if all(oks)]
    return max(ok) if ok else None


# ----------------------------------------------------------------- no-limit

def _spread(values, fmt='%.0f', unit=''):
    """Median and range of @values as text ('-' if none), @unit once
    after the median: '1.36x [1.00-1.70]'."""
    values = [v for v in values if v is not None]
    if not values:
        return '-'
    med = fmt % statistics.median(values) + unit
    if len(values) == 1 or min(values) == max(values):
        return med
    return '%s [%s-%s]' % (med, fmt % min(values), fmt % max(values))


def _outcome(verdict):
    """A verdict without the times and sizes that differ from run to
    run."""
    return re.sub(r' at [\d.]+ s| at \d+( of \d+)? MiB', '', verdict)


def _rates(rows):
    return sorted({r['rate'] for r in rows}, key=rate_value)


def nolimit_stage_result(results):
    """The measurement the fork's stages are reported from: the one
    marked stage_run (the first fork-auto run at 100 MiB/s), else the
    first with stages."""
    rows = [r for r in results if r['scenario'] == 'no-limit' and
            r.get('stages')]
    for r in rows:
        if r.get('stage_run'):
            return r
    return rows[0] if rows else None


def nolimit_summary(results):
    """What results.json keeps of the no-limit scenario: per setup the
    highest nominal rate survived in every run and what killed it where
    it died; the fork's stages."""
    rows = [r for r in results if r['scenario'] == 'no-limit']
    if not rows:
        return None
    out = {'highest': {}, 'died': {}}
    for s in _setups(rows, 'no-limit'):
        best = highest_survived(rows, s)
        out['highest'][s] = best
        died = {}
        for r in rows:
            if r['setup'] == s and not r.get('ok'):
                died.setdefault(str(r['rate']), []).append(r['verdict'])
        out['died'][s] = died
    st = nolimit_stage_result(results)
    if st:
        out['stages'] = dict(st['stages'], setup=st['setup'],
                             rate=st['rate'], run=st.get('run', 0))
    return out


def nolimit_table(results):
    rows = [r for r in results if r['scenario'] == 'no-limit']
    if not rows:
        return []
    r0 = rows[0]
    host = r0.get('host', {})
    runs = max(r.get('run', 0) for r in rows) + 1
    out = ['no-limit: a nested cgroup v2 host with %s MiB MemTotal (TCG);'
           ' one %d MiB VM in machine.slice/vm.scope, its guest %s %d MiB;'
           ' no memory limit anywhere; a service in'
           ' system.slice takes %s MiB in %d MiB steps, in every setup:'
           ' MemAvailable + %d MiB next to such a VM without free page'
           ' reporting ("short": what the host lacked at its start)' % (
               host.get('mem_total', '?'), r0.get('vm_mib', 448),
               'holds as page cache' if r0.get('guest') == 'cache' else
               'has used and freed', r0.get('guest_used', 300),
               host.get('service_need', '?'),
               r0.get('step', 20), r0.get('extra', 150)),
           '  every setup runs the fork\'s binary (upstream, pve-* and'
           ' bound: automatic=off; the PVE daemon counts MemTotal -'
           ' MemAvailable in use; bound: the mechanism\'s bound, a'
           ' `balloon` down to the floor as the service starts); %d'
           ' run(s): median [range]' % runs]
    table = [('setup', 'nominal', 'ok/runs', 'short MiB', 'achieved MiB/s',
              'service s', 'balloon MiB', 'inflate MiB/s', 'outcome')]
    for rate in _rates(rows):
        for s in _setups(rows, 'no-limit'):
            rs = [r for r in rows if r['setup'] == s and r['rate'] == rate]
            if not rs:
                continue
            outcomes = []
            for r in rs:
                o = _outcome(r['verdict'])
                if o not in outcomes:
                    outcomes.append(o)
            counted = ['%s (%d)' % (o, sum(1 for r in rs
                                           if _outcome(r['verdict']) == o))
                       if len(rs) > 1 else o for o in outcomes]
            after = [r.get('after') for r in rs]
            table.append((
                s, rate_text(rate).replace(' MiB/s', ''),
                '%d/%d' % (sum(1 for r in rs if r.get('ok')), len(rs)),
                _spread([r.get('short') for r in rs]),
                _spread([r.get('achieved') for r in rs]),
                _spread([r.get('service_seconds') for r in rs], '%.1f'),
                '%s->%s' % (_spread([r.get('before') for r in rs]),
                            _spread(after) if any(a is not None
                                                  for a in after)
                            else 'dead'),
                _spread([r.get('inflate') for r in rs]),
                '; '.join(counted)))
    widths = [max(len(str(row[i])) for row in table) for i in range(8)]
    for row in table:
        out.append('  ' + '  '.join(
            str(v).ljust(w) if i == 0 else str(v).rjust(w)
            for i, (v, w) in enumerate(zip(row[:8], widths))) +
            '  ' + row[8])
    out.append('  highest nominal rate survived (every run at that rate),'
               ' and what died where it did not:')
    summary = nolimit_summary(results)
    for s in _setups(rows, 'no-limit'):
        best = summary['highest'][s]
        # rates (MiB/s) with the same outcomes together: "100, 200: ..."
        by_rate = {}
        for rate, verdicts in summary['died'][s].items():
            by_rate[_rate_key(rate)] = ' / '.join(sorted(
                {_outcome(v) for v in verdicts}))
        kinds = {}
        for rate in sorted(by_rate, key=rate_value):
            kinds.setdefault(by_rate[rate], []).append(
                'no pacing' if rate == 'max' else str(rate))
        out.append('    %-10s %-11s %s' % (
            s, rate_text(best) if best else 'none',
            ' | '.join('%s: %s' % (', '.join(v), k)
                       for k, v in kinds.items())))
    out += nolimit_stage_lines(results)
    return out


def _rate_key(text):
    return 'max' if text == 'max' else int(text)


def nolimit_stage_lines(results):
    r = nolimit_stage_result(results)
    if not r:
        return []
    st = r['stages']

    def at(key):
        return '+%.2f s' % st[key] if st.get(key) is not None else 'never'
    items = [
        ('service start', '0'),
        ('host memory in use over 80 % of MemTotal (meminfo)',
         at('host_over')),
        ('the fork\'s first host reading over its setpoint',
         at('fork_reading') + (' (setpoint %s MiB)' % st['setpoint']
                               if st.get('setpoint') else '')),
        ('first decision (host-pressure)',
         at('decision') + (' (target %d -> %d MiB)' % tuple(
             st['decision_target']) if st.get('decision_target') else '')),
        ('the driver\'s first progress (query-balloon)', at('progress')),
        ('the driver\'s inflate rate while following',
         '%.0f MiB/s' % st['inflate'] if st.get('inflate') else '-'),
        ('service done (or dead)', at('service_end')),
        ('given by then', '%.0f MiB' % st['given_by_end']
         if st.get('given_by_end') is not None else '-')]
    out = ['  the fork\'s reaction, %s run %d at %s (its trace; polls every'
           ' %.1f s, %.2f s apart in the median): %s' % (
               r['setup'], r.get('run', 0) + 1, rate_text(r['rate']),
               st['poll_s'], st.get('poll_median') or 0, r['verdict'])]
    for name, value in items:
        out.append('    %-52s %s' % (name, value))
    return out


def headline(results):
    """Per setup: highest host rate survived, seed successes, largest N."""
    lines = []
    hr = [r for r in results if r['scenario'] == 'host-rate']
    for s in _setups(hr, 'host-rate'):
        best = highest_survived(hr, s)
        lines.append('host-rate %-17s highest survived: %s' % (
            s, rate_text(best) if best else 'none'))
    sd = [r for r in results if r['scenario'] == 'seed']
    for s in _setups(sd, 'seed'):
        rs = [r for r in sd if r['setup'] == s]
        lines.append('seed      %-17s ok %d/%d' % (
            s, sum(1 for r in rs if r.get('ok')), len(rs)))
    dn = [r for r in results if r['scenario'] == 'density']
    for s in _setups(dn, 'density'):
        lines.append('density   %-17s largest N: %s' % (
            s, largest_n(dn, s) or 'none'))
    nl = [r for r in results if r['scenario'] == 'no-limit']
    for s in _setups(nl, 'no-limit'):
        best = highest_survived(nl, s)
        lines.append('no-limit  %-17s highest survived: %s' % (
            s, rate_text(best) if best else 'none'))
    return lines


def table(results):
    lines = []
    for part in (host_rate_table, seed_table, density_table,
                 nolimit_table):
        got = part(results)
        if got:
            lines += got + ['']
    return '\n'.join(lines)


def plot(results, path, extra_lines=()):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(14, 15))
    ax = axes[0][0]
    rows = [r for r in results if r['scenario'] == 'host-rate']
    setups = _setups(rows, 'host-rate')
    paced = [r['rate'] for r in rows if r['rate'] != 'max']
    # no pacing: drawn right of the highest nominal rate
    unpaced_x = 2 * max(paced) if paced else 1000
    if any(r['rate'] == 'max' for r in rows):
        ax.axvline(unpaced_x, color='grey', linestyle=':')
        ax.annotate('no pacing', (unpaced_x, len(setups) - 1),
                    textcoords='offset points', xytext=(4, 20), ha='left',
                    fontsize=7)
    for y, s in enumerate(setups):
        for r in rows:
            if r['setup'] != s:
                continue
            x = unpaced_x if r['rate'] == 'max' else r['rate']
            ax.scatter(x, y, marker='o' if r['ok'] else 'x',
                       color='tab:green' if r['ok'] else 'tab:red', s=80)
            if 'achieved' in r:
                ax.annotate('%.0f' % r['achieved'], (x, y),
                            textcoords='offset points', xytext=(0, 8),
                            ha='center', fontsize=7)
    ax.set_yticks(range(len(setups)))
    ax.set_yticklabels(setups)
    ax.set_xscale('log')
    ax.set_xlabel('nominal host allocation rate, MiB/s (label: achieved)')
    ax.set_title('host-rate: o survived, x died')
    if not setups:
        ax.text(0.5, 0.5, 'not run', ha='center', transform=ax.transAxes)

    ax = axes[0][1]
    rows = [r for r in results if r['scenario'] == 'seed']
    labels, rate, rel = [], [], []
    for alloc in _setups(rows, 'seed', 'alloc'):
        ra = [r for r in rows if r['alloc'] == alloc]
        base = [r['seconds'] for r in ra
                if r['setup'] == 'baseline' and r.get('ok')]
        base_t = statistics.median(base) if base else None
        step = alloc.split('--step ')[1] if '--step' in alloc else None
        for s in _setups(ra, 'seed'):
            rs = [r for r in ra if r['setup'] == s]
            oks = [r['seconds'] for r in rs if r.get('ok')]
            labels.append(s + (' /%s MiB' % step if step else ' /1 map'))
            rate.append(len(oks) / len(rs))
            rel.append(statistics.median(oks) / base_t
                       if oks and base_t else 0)
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], rate, 0.4, color='tab:blue')
    ax2 = ax.twinx()
    ax2.bar([i + 0.2 for i in x], rel, 0.4, color='tab:orange')
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, rotation=35, ha='right', fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel('success rate (blue)')
    ax2.set_ylabel('time relative to baseline (orange)')
    ax.set_title('seed: 1 GiB of 3 GiB allocates 1.5 GiB')
    if not labels:
        ax.text(0.5, 0.5, 'not run', ha='center', transform=ax.transAxes)

    ax = axes[1][0]
    rows = [r for r in results if r['scenario'] == 'density']
    setups = _setups(rows, 'density')
    ns = sorted({r['n'] for r in rows})
    width = 0.8 / max(len(setups), 1)
    for k, s in enumerate(setups):
        for j, n in enumerate(ns):
            rs = [r for r in rows if r['setup'] == s and r['n'] == n]
            if not rs:
                continue
            share = statistics.mean(r.get('completed', 0) / n for r in rs)
            ok = all(r['ok'] for r in rs)
            ax.bar(j + k * width, share, width,
                   color='C%d' % k, hatch='' if ok else '//',
                   edgecolor='black', label=s if j == 0 else None)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(ns))])
    ax.set_xticklabels(['N=%d' % n for n in ns])
    ax.set_ylabel('share of guests completing their allocation')
    ax.set_ylim(0, 1.05)
    ax.set_title('density: hatched = OOM kill or failure')
    if setups:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, 'not run', ha='center', transform=ax.transAxes)

    _plot_nolimit(axes[1][1], results)
    _plot_stage_run(axes[2][0], results)

    ax = axes[2][1]
    ax.axis('off')
    ax.text(0, 1, '\n'.join(extra_lines) or '', va='top', family='monospace',
            fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_nolimit(ax, results):
    """Setups against rates: o survived, x died (labels: achieved
    MiB/s)."""
    rows = [r for r in results if r['scenario'] == 'no-limit']
    setups = _setups(rows, 'no-limit')
    rates = _rates(rows)
    xs = {rate: i for i, rate in enumerate(rates)}
    for y, s in enumerate(setups):
        for r in rows:
            if r['setup'] != s:
                continue
            x = xs[r['rate']] + 0.15 * r.get('run', 0)
            ax.scatter(x, y, marker='o' if r.get('ok') else 'x',
                       color='tab:green' if r.get('ok') else 'tab:red', s=80)
            if r.get('achieved') is not None:
                ax.annotate('%.0f' % r['achieved'], (x, y),
                            textcoords='offset points', xytext=(0, 8),
                            ha='center', fontsize=7)
    ax.set_xticks(range(len(rates)))
    ax.set_xticklabels([rate_text(r) for r in rates], fontsize=8)
    ax.set_yticks(range(len(setups)))
    ax.set_yticklabels(setups)
    ax.set_ylim(-0.5, len(setups) - 0.3)
    ax.set_xlabel('service rate, nominal (label: achieved MiB/s)')
    ax.set_title('no-limit, nested 1 GiB host: o survived, x died')
    if not rows:
        ax.text(0.5, 0.5, 'not run', ha='center', transform=ax.transAxes)


def _plot_stage_run(ax, results):
    """The stage run over time: the VM's size, the service's memory and
    the host's memory in use, with the stages marked."""
    r = nolimit_stage_result(results)
    if not r or not r.get('samples'):
        ax.axis('off')
        ax.text(0.5, 0.5, 'no-limit stage run: not run', ha='center',
                transform=ax.transAxes)
        return
    sm = r['samples']
    t = [x['t'] for x in sm]
    ax.plot(t, [x.get('actual') for x in sm], label='VM size (actual)')
    ax.plot(t, [x['svc'] for x in sm], label='service memory')
    ax.plot(t, [x['used'] for x in sm], label='host memory in use')
    st = r['stages']
    if st.get('setpoint'):
        ax.axhline(st['setpoint'], color='grey', linestyle=':',
                   label='setpoint')
    top = ax.get_ylim()[1]
    for i, (key, name) in enumerate((
            ('decision', 'first decision'), ('fork_reading', 'reading over'),
            ('progress', 'driver moves'), ('service_end', 'service done'))):
        if st.get(key) is not None:
            ax.axvline(st[key], color='black', linestyle='--', lw=0.7)
            # stages a fraction of a second apart: labels one under another
            ax.annotate(name, (st[key], top * (0.62 - 0.07 * i)),
                        xytext=(3, 0), textcoords='offset points',
                        fontsize=7)
    ax.set_xlabel('seconds since the service started')
    ax.set_ylabel('MiB')
    ax.set_title('no-limit: %s at %s, run %d (%s)' % (
        r['setup'], rate_text(r['rate']), r.get('run', 0) + 1,
        r['verdict']))
    ax.legend(fontsize=7)
