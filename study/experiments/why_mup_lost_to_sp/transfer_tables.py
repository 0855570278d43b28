"""
The raw runs behind docs/transfer.md, cut per question: each cell the plain seed mean at a grid point, printed from
the CSVs in assets/ (each CSV's commands: docs/transfer.md, "Reproduce"). The docs state the fitted optima
(study/optima.py, written by study/report.py); these tables show the runs those fits stand on. CPU, seconds:

    python -m study.experiments.why_mup_lost_to_sp.transfer_tables                     # tables 1-7 (paper architecture)
    python -m study.experiments.why_mup_lost_to_sp.transfer_tables --tables=quick        # the quick default: seeds, optima
    python -m study.experiments.why_mup_lost_to_sp.transfer_tables --tables=momentum     # 8a-8d, 9a-9b: SGD momentum
    python -m study.experiments.why_mup_lost_to_sp.transfer_tables --tables=init_std     # 10: the base init std
    python -m study.experiments.why_mup_lost_to_sp.transfer_tables --tables=grad_norms   # 11: SGD's pre-clip grad norm

Tables: 1 output_mult at 256 and 1024; 2 seed spread; 3 LR optima per width; 4 val loss along the runs; 5 AdamW
unclipped; 6 SGD unclipped, all four parametrizations; 7 gate_lr_mult; 8 SGD momentum 0.9 vs 0.98; 9 the quick
grid at 4 layers, 600 steps; 10 init_std; 11 SGD's pre-clip gradient norm and clipped fraction per width.
A CSV has a row for every label (at the base width the μP rows are SP's run, their trained_as says so).
"""
import csv
import math
import os

from configurator import configure

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..')
LABELS = {'sp': 'SP', 'mup': 'μP (paper)', 'mup_fixed_fanout': 'μP, fixed-fan-out gates',
          'mup_nogdn': 'μP w/o GDN corrections', 'adamw': 'AdamW', 'sgd': 'SGD (Nesterov)'}


def load_results(path):
    """The rows of a results CSV (study/grid.py's columns), the columns these tables read."""
    with open(path, newline='') as f:
        return [dict(width=int(r['width']), lr=float(r['lr']), parametrization=r['parametrization'],
                     optimizer=r['optimizer'], seed=int(r['seed']), val=float(r['final_val_loss']),
                     diverged=r['diverged'] == 'True', output_mult=float(r['output_mult']),
                     init_std=float(r['init_std']), gate_lr_mult=float(r['gate_lr_mult']),
                     grad_norm=float(r['grad_norm_median'] or 'nan'), clip_frac=float(r['clip_frac'] or 'nan'),
                     curve=r['val_curve']) for r in csv.DictReader(f)]


def fmt_lr(lr):
    return f"2^{math.log2(lr):g}"


PAPER = os.path.join(ROOT, 'assets', 'lr_sweep_paper.csv')
OUTPUT_MULT = os.path.join(ROOT, 'assets', 'lr_sweep_paper_output_mult.csv')
NOCLIP = os.path.join(ROOT, 'assets', 'lr_sweep_paper_noclip.csv')
GATE_LR = os.path.join(ROOT, 'assets', 'lr_sweep_paper_gate_lr.csv')
QUICK = os.path.join(ROOT, 'assets', 'lr_sweep.csv')
QUICK_NOCLIP = os.path.join(ROOT, 'assets', 'lr_sweep_noclip.csv')
INIT_STD = os.path.join(ROOT, 'assets', 'lr_sweep_paper_init_std.csv')


def cells(rows):
    """{(optimizer, param, width, lr, output_mult): {seed: row}}."""
    out = {}
    for r in rows:
        out.setdefault((r['optimizer'], r['parametrization'], r['width'], r['lr'], r['output_mult']), {})[r['seed']] = r
    return out


def val(r):
    return float('nan') if r['diverged'] else r['val']


def fmt(v):
    return 'div.' if not math.isfinite(v) else f'{v:.3f}'


def output_mult_table(c):
    print("1. output_mult (logit multiplier at the base width), AdamW, seed 1337: best val loss over the LRs run")
    print("| width, parametrization | " + ' | '.join(f'c = {m:g}' for m in (1, 2, 4, 8, 16, 32)) + ' |')
    print('|---' * 7 + '|')
    for w, p in ((256, 'sp'), (1024, 'mup'), (1024, 'sp')):
        line = []
        for m in (1, 2, 4, 8, 16, 32):
            got = [(val(s[1337]), k[3]) for k, s in c.items() if k[0] == 'adamw' and k[1] == p and k[2] == w
                   and k[4] == m and 1337 in s]
            fin = [g for g in got if math.isfinite(g[0])]
            line.append(f"{min(fin)[0]:.3f} ({fmt_lr(min(fin)[1])}, {len(got)} LRs)" if fin else
                        ('div.' if got else '-'))
        name = 'SP = μP (base)' if w == 256 else LABELS[p]
        print(f"| {w}, {name} | " + ' | '.join(line) + ' |')


def seed_table(c, om=4, base=256, title='2. seed spread'):
    print(f"\n{title} (output_mult {om:g}): val loss with seeds 1337 / 1338, |difference|")
    print("| optimizer | width | parametrization | LR | seed 1337 | seed 1338 | diff |")
    print('|---' * 7 + '|')
    diffs = {}
    for k in sorted(c):
        s = c[k]
        if k[4] != om or 1337 not in s or 1338 not in s or (k[2] == base and k[1] != 'sp'):
            continue
        a, b = val(s[1337]), val(s[1338])
        d = abs(a - b) if math.isfinite(a) and math.isfinite(b) else float('nan')
        diffs.setdefault(k[0], []).append(d)
        print(f"| {k[0]} | {k[2]} | {LABELS[k[1]]} | {fmt_lr(k[3])} | {fmt(a)} | {fmt(b)} | {fmt(d)} |")
    for opt, ds in diffs.items():
        ds = [d for d in ds if math.isfinite(d)]
        print(f"{opt}: median |difference| {sorted(ds)[len(ds) // 2]:.3f}, max {max(ds):.3f} over {len(ds)} cells")


def optimum_table(c, om=4, widths=(256, 512, 1024), sgd_params=('sp', 'mup', 'mup_fixed_fanout'),
                  title='3. the LR sweep'):
    ws = ' / '.join(map(str, widths))
    print(f"\n{title} at output_mult {om:g}: optimum per width (mean over the seeds run in each cell; "
          "the cells near the optimum have 2 seeds)")
    print(f"| optimizer, parametrization | optimum LR {ws} | spread | best val loss {ws} |"
          f" diverged LRs at {widths[-1]} |")
    print('|---' * 5 + '|')
    summary = {}
    for opt, params in (('adamw', ('sp', 'mup')), ('sgd', sgd_params)):
        for p in params:
            best, div = {}, []
            for w in widths:
                got = {}
                for k, s in c.items():
                    if k[:3] == (opt, p, w) and k[4] == om:
                        vs = [val(r) for r in s.values()]
                        got[k[3]] = sum(vs) / len(vs) if all(map(math.isfinite, vs)) else float('nan')
                        if w == widths[-1] and not all(map(math.isfinite, vs)):
                            div.append(k[3])
                fin = {lr: v for lr, v in got.items() if math.isfinite(v)}
                if fin:
                    lr = min(fin, key=fin.get)
                    best[w] = (lr, fin[lr], len(c[(opt, p, w, lr, float(om))]))
            if not best:  # not in this CSV
                continue
            lrs = [b[0] for b in best.values()]
            summary[(opt, p)] = best
            print(f"| {LABELS[opt]}, {LABELS[p]} | "
                  + ' / '.join(fmt_lr(best[w][0]) if w in best else '-' for w in widths) + f" | ×{max(lrs) / min(lrs):g} | "
                  + ' / '.join(f"{best[w][1]:.3f}{'' if best[w][2] > 1 else '¹'}" if w in best else '-' for w in widths)
                  + f" | {', '.join(fmt_lr(lr) for lr in sorted(div)) or 'none'} |")
    print("¹ one seed")
    for opt in ('adamw', 'sgd'):
        if widths[-1] not in summary.get((opt, 'sp'), {}):
            continue
        sp = summary[(opt, 'sp')][widths[-1]][1]
        for p in sgd_params[1:] if opt == 'sgd' else ('mup',):
            if widths[-1] in summary.get((opt, p), {}):
                print(f"{opt}: {LABELS[p]} - SP at width {widths[-1]}: "
                      f"{summary[(opt, p)][widths[-1]][1] - sp:+.3f}")
    return summary


def curve_table(c, summary):
    print("\n4. when the ranking settles: val loss at steps 100 / 200 / 300 at each width's optimum (seed 1337)")
    print("| optimizer, parametrization | width 256 | width 512 | width 1024 |")
    print('|---' * 4 + '|')
    for (opt, p), best in summary.items():
        line = []
        for w in (256, 512, 1024):
            r = c[(opt, p, w, best[w][0], 4.0)].get(1337)
            line.append(' / '.join(x.split(':')[1] for x in r['curve'].split(';')) if r else '-')
        print(f"| {LABELS[opt]}, {LABELS[p]} | " + ' | '.join(line) + ' |')
    print("output_mult 1, AdamW, width 1024, μP 2^-8 vs SP 2^-10 (their best at c = 1):")
    for p, lr in (('mup', 2 ** -8), ('sp', 2 ** -10)):
        r = c[('adamw', p, 1024, lr, 1.0)][1337]
        print(f"  {LABELS[p]}: {r['curve']}")


def noclip_table(c, nc):
    print("\n5. gradient clipping: val loss with clip 1.0 / without clipping (AdamW, seed 1337), and the median "
          "pre-clip gradient norm and the fraction of steps clipped at 1.0")
    print("| width, parametrization, LR, output_mult | clip 1.0 | no clipping | grad norm (median) | clipped |")
    print('|---' * 5 + '|')
    for k, s in sorted(nc.items()):
        if 1337 not in s or (k[2] == 256 and k[1] != 'sp'):
            continue
        r = c.get(k, {}).get(1337)
        print(f"| {k[2]}, {LABELS[k[1]]}, {fmt_lr(k[3])}, {k[4]:g} | {fmt(val(r)) if r else '-'} | "
              f"{fmt(val(s[1337]))} | {r['grad_norm']:.2f} | {r['clip_frac']:.0%} |" if r else '')


def gate_lr_table(path):
    """7. SGD without clipping: the base width's gate LR (gate_lr_mult), and the paper's rule with a raised
    one at 512 and 1024 (seed 1337; the gate_lr_mult 1 cells are those of the unclipped sweep)."""
    print("\n7. gate_lr_mult (the gates' and scalars' LR at the base width), SGD without clipping, seed 1337: "
          "val loss")
    rows = load_results(path)
    mults = sorted({r['gate_lr_mult'] for r in rows})
    print("| width, parametrization, LR | " + ' | '.join(f'g = {g:g}' for g in mults) + ' |')
    print('|---' * (len(mults) + 1) + '|')
    got = {}
    for r in rows:
        got.setdefault((r['width'], r['parametrization'], r['lr']), {})[r['gate_lr_mult']] = val(r)
    for (w, p, lr) in sorted(got, key=lambda k: (k[0], k[1] != 'sp', k[2])):
        if w == 256 and p != 'sp':
            continue
        v = got[(w, p, lr)]
        print(f"| {w}, {LABELS[p]}, {fmt_lr(lr)} | "
              + ' | '.join(fmt(v[g]) if g in v else '-' for g in mults) + ' |')


def momentum_tables():
    """8. SGD's momentum: Nesterov 0.9 against the paper's 0.98 (clip 1.0), in the paper's architecture and
    the quick default; 9. the quick grid deeper and longer at 0.98 (4 layers, 600 steps), clipped and not."""
    load = lambda name: cells(load_results(os.path.join(ROOT, 'assets', name)))  # noqa: E731
    optimum_table(load('lr_sweep_paper_momentum.csv'), sgd_params=('sp', 'mup'),
                  title='8a. SGD, Nesterov 0.9 (the paper: 0.98, table 3), paper architecture, clip 1.0, seed 1337,')
    quick = dict(om=2, widths=(128, 256, 512, 1024))
    optimum_table(load('lr_sweep.csv'), **quick, title='8b. the quick default (the paper\'s momentum 0.98)')
    optimum_table(load('lr_sweep_momentum09.csv'), **quick,
                  title='8c. the quick grid at momentum 0.9 (config/sweep_quick_momentum09.py)')
    c = load('lr_sweep_noclip09.csv')
    optimum_table(c, om=2, sgd_params=('sp', 'mup'),
                  title='8d. the quick grid at momentum 0.9 without clipping, seed 1337,')
    edge_table(c, om=2)
    deep = dict(om=2, sgd_params=('sp', 'mup'))
    optimum_table(load('lr_sweep_quick_deep.csv'), **deep,
                  title='9a. the quick grid at 4 layers, 600 steps, momentum 0.98, clip 1.0, seed 1337,')
    optimum_table(load('lr_sweep_quick_deep_noclip.csv'), **deep, title='9b. the same without clipping,')


def per_width(c, opt, om, widths, params, seed, cell):
    """A table with a row per parametrization and a column per width, each cell cell(runs, finished runs),
    both {lr: row} of one seed."""
    print("| parametrization | " + ' | '.join(f'width {w}' for w in widths) + ' |')
    print('|---' * (len(widths) + 1) + '|')
    for p in params:
        line = []
        for w in widths:
            rs = {k[3]: s[seed] for k, s in c.items() if k[:3] == (opt, p, w) and k[4] == om and seed in s}
            line.append(cell(rs, {lr: r for lr, r in rs.items() if not r['diverged']}))
        print(f"| {LABELS[p]} | " + ' | '.join(line) + ' |')


def edge_table(c, om, widths=(256, 512, 1024), params=('sp', 'mup'), opt='sgd', seed=1337):
    """Per width: the largest LR that trains, and the median gradient norm at the smallest LR and at the
    width's optimum (one seed)."""
    print(f"   largest LR that trains; median grad norm at the smallest LR / at the optimum (seed {seed})")

    def cell(rs, ok):
        if not ok:
            return '-'
        best = min(ok, key=lambda lr: ok[lr]['val'])
        return f"{fmt_lr(max(ok))}; {rs[min(rs)]['grad_norm']:.2f} / {ok[best]['grad_norm']:.2f}"
    per_width(c, opt, om, widths, params, seed, cell)


def init_std_table(path=INIT_STD, base=256):
    """10. The base init std (init_std: SP's std of every matrix; μP's at the base width, init_std/sqrt(m)
    for the hidden and gate matrices above it), AdamW, paper architecture, seed 1337: val loss per cell."""
    rows = load_results(path)
    stds = sorted({r['init_std'] for r in rows})
    print("10. init_std x LR, AdamW, paper architecture (output_mult 4), seed 1337: val loss")
    print("| width, parametrization, LR | " + ' | '.join(f'init_std {s:g}' for s in stds) + ' |')
    print('|---' * (len(stds) + 1) + '|')
    got = {}
    for r in rows:
        got.setdefault((r['width'], r['parametrization']), {}).setdefault(r['lr'], {})[r['init_std']] = val(r)
    best = {}
    for (w, p) in sorted(got, key=lambda k: (k[0], k[1] != 'sp')):
        if w == base and p != 'sp':
            continue
        name = 'SP = μP (base)' if w == base else LABELS[p]
        for lr in sorted(got[(w, p)]):
            v = got[(w, p)][lr]
            print(f"| {w}, {name}, {fmt_lr(lr)} | " + ' | '.join(fmt(v[s]) if s in v else '-' for s in stds) + ' |')
        b = {s: min(v[s] for v in got[(w, p)].values() if s in v and math.isfinite(v[s])) for s in stds}
        print(f"| {w}, {name}, best of the LRs | " + ' | '.join(f'{b[s]:.3f}' for s in stds) + ' |')
        best[(w, p)] = min(b, key=b.get), min(b.values())
    w = max(w for w, _ in best)
    for p in ('sp', 'mup'):
        (s0, v0), (s1, v1) = best[(base, 'sp')], best[(w, p)]
        print(f"{LABELS[p]}: optimum init_std {s0:g} ({v0:.3f}) at {base} -> {s1:g} ({v1:.3f}) at {w}: "
              f"x{max(s0, s1) / min(s0, s1):g}")
    print(f"μP (paper) - SP at width {w} (each at its best init_std and LR): {best[(w, 'mup')][1] - best[(w, 'sp')][1]:+.3f}")


def grad_norm_table(name, lr_exp, om, widths, params=('sp', 'mup'), seed=1337):
    """11. Median pre-clip gradient norm and fraction of steps clipped at 1.0, SGD, at LR 2^lr_exp and at
    each width's optimum (one seed)."""
    c = cells(load_results(os.path.join(ROOT, 'assets', name)))
    print(f"\n11. {name}, SGD, seed {seed}: median grad norm (clipped fraction) at {fmt_lr(2.0 ** lr_exp)}"
          " / at the width's optimum")

    def cell(rs, ok):
        best = ok[min(ok, key=lambda lr: ok[lr]['val'])] if ok else None
        at = rs.get(2.0 ** lr_exp)
        return ' / '.join(f"{r['grad_norm']:.2f} ({r['clip_frac']:.0%})" if r else '-' for r in (at, best))
    per_width(c, 'sgd', om, widths, params, seed, cell)


DEFAULTS = dict(
    tables='paper',              # which: 'paper' (1-7), 'quick', 'momentum' (8-9), 'init_std' (10), 'grad_norms' (11)
)


def main():
    cfg = dict(DEFAULTS)
    configure(cfg)
    if cfg['tables'] == 'grad_norms':
        grad_norm_table('lr_sweep_paper.csv', -4, 4, (256, 512, 1024))
        grad_norm_table('lr_sweep_paper_momentum.csv', -4, 4, (256, 512, 1024))
        grad_norm_table('lr_sweep_momentum09.csv', -3, 2, (256, 512, 1024))
        grad_norm_table('lr_sweep_noclip09.csv', -9, 2, (256, 512, 1024))
        return
    if cfg['tables'] == 'quick':  # the quick default (assets/lr_sweep.csv, output_mult 2 from its probe)
        c = cells(load_results(QUICK))
        seed_table(c, om=2)
        optimum_table(c, om=2, widths=(128, 256, 512, 1024))
        return
    if cfg['tables'] == 'momentum':
        momentum_tables()
        return
    if cfg['tables'] == 'init_std':
        init_std_table()
        return
    if cfg['tables'] != 'paper':
        raise SystemExit(f"error: tables={cfg['tables']!r}: use 'paper', 'quick', 'momentum', 'init_std' or 'grad_norms'")
    c = cells(load_results(PAPER) + load_results(OUTPUT_MULT))
    nc = cells(load_results(NOCLIP))
    output_mult_table(c)
    seed_table(c)
    summary = optimum_table(c)
    curve_table(c, summary)
    noclip_table(c, nc)
    print("\n6. without clipping: the optima (SGD at 2^-9..2^0, the μP-SGD variants at 2^-9..2^-5; AdamW only "
          "at the cells of table 5)")
    optimum_table(nc, sgd_params=('sp', 'mup', 'mup_fixed_fanout', 'mup_nogdn'))
    seed_table(nc, title='6b. seed spread without clipping')
    gate_lr_table(GATE_LR)
    print("\n   the quick default without clipping (SGD, output_mult 2):")
    optimum_table(cells(load_results(QUICK_NOCLIP)), om=2, widths=(128, 256, 512, 1024), sgd_params=('sp', 'mup'))


if __name__ == '__main__':
    main()
