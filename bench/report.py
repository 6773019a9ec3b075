# SPDX-License-Identifier: GPL-2.0-or-later
"""Results table and PNG plot of the benchmark with peers."""

import statistics


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
    return out


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
           ' relative: median time / the same allocation in a plain 3 GiB'
           ' guest (baseline)',
           '  %-18s %-26s %7s %8s %8s  %s' % (
               'setup', 'allocation', 'ok/runs', 'median s', 'relative',
               'failures')]
    for alloc in _setups(rows, 'seed', 'alloc'):
        ra = [r for r in rows if r['alloc'] == alloc]
        base = [r['seconds'] for r in ra
                if r['setup'] == 'baseline' and r.get('ok')]
        base_t = statistics.median(base) if base else None
        for s in _setups(ra, 'seed'):
            rs = [r for r in ra if r['setup'] == s]
            oks = [r for r in rs if r.get('ok')]
            t = statistics.median([r['seconds'] for r in oks]) if oks else None
            fails = sorted({r['verdict'] for r in rs if not r.get('ok')})
            out.append('  %-18s %-26s %7s %8s %8s  %s' % (
                s, alloc, '%d/%d' % (len(oks), len(rs)),
                '%.1f' % t if t else '-',
                '%.2fx' % (t / base_t) if t and base_t else '-',
                '; '.join(fails)))
    return out


def density_table(results):
    rows = [r for r in results if r['scenario'] == 'density']
    if not rows:
        return []
    out = ['density: N guests of 1 GiB (700 MiB page cache each, cache=none)'
           ' in a 2000 MiB memcg take turns allocating 600 MiB',
           '  stall: longest time a guest waited with its balloon inflated'
           ' while another held >= 128 MiB of page cache (+free: page cache'
           ' or free memory)',
           '  %-18s %2s %9s %7s %7s  %s' % ('setup', 'N', 'completed',
                                          'stall s', '+free s', 'outcome')]
    for r in rows:
        out.append('  %-18s %2d %9s %7s %7s  %s' % (
            r['setup'], r['n'], '%s/%d' % (r.get('completed', 0), r['n']),
            '%.1f' % r.get('max_stall', 0),
            '%.1f' % r.get('max_idle_stall', 0), r['verdict']))
    out.append('  largest N sustained (all complete, no OOM kill):')
    for s in _setups(rows, 'density'):
        best = largest_n(rows, s)
        out.append('    %-18s %s' % (s, best or 'none'))
    return out


def largest_n(rows, setup):
    by_n = {}
    for r in rows:
        if r['setup'] == setup:
            by_n.setdefault(r['n'], []).append(r['ok'])
    ok = [n for n, oks in by_n.items() if all(oks)]
    return max(ok) if ok else None


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
    return lines


def table(results):
    lines = []
    for part in (host_rate_table, seed_table, density_table):
        got = part(results)
        if got:
            lines += got + ['']
    return '\n'.join(lines)


def plot(results, path, extra_lines=()):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
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

    ax = axes[1][1]
    ax.axis('off')
    ax.text(0, 1, '\n'.join(extra_lines) or '', va='top', family='monospace',
            fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
