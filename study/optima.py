"""
The fitted optimum of every curve of a sweep, its seed interval and the summary (the figures: study/plots.py).

A panel is one optimizer, parametrization, depth rule and weight-decay rule; a curve is one width and depth in
it, its loss against the axis (the LR, or a base hyper-parameter), the best over the other axes at each x.

Judging an optimum. At long horizons the loss is flat near its minimum and the argmin of single runs is noise,
so every curve's optimum is a fit: a parabola in log2(x) through the points within one octave of the lowest
(at least three), least squares where there are more. A seed also fixes which validation windows are scored,
so each seed's level is fitted and removed first (seed_offsets). Its seed interval comes from a bootstrap over
the seeds (resampled jointly for every curve, as a seed fixes the data order at every width), and so does the
interval of the optimum's shift across widths or depths. A fit whose window has one seed at each of its points
has no interval (seeds_near), however many seeds the sweep ran elsewhere.

Where rows of several labels are one trained run (μP and SP at the base width, the depth rules at the base
depth, weight-decay rules that rescale λ), the summary says so first (one_model).
"""
import math

import mup
from study.grid import TRAINED_AS, trained_key

LABELS = {'sp': 'SP', 'mup': 'μP (paper)', 'mup_fixed_fanout': 'μP, fixed-fan-out gates',
          'mup_nogdn': 'μP w/o GDN corrections', 'adamw': 'AdamW', 'sgd': 'SGD (Nesterov)',
          'lr': 'learning rate', 'output_mult': 'output multiplier', 'init_std': 'init std',
          'embed_lr_mult': 'embedding LR multiplier', 'gate_lr_mult': 'gate LR multiplier',
          'weight_decay': 'weight decay', 'n_layer': 'depth', 'width': 'width'}

PANEL = ('optimizer', 'parametrization', 'depth_rule', 'weight_decay_rule')


def others(axis):
    """The keys of cells()' 'others' tuple, in order: the swept keys besides `axis`."""
    return [k for k in ('lr', *mup.BASE_HPARAMS, 'weight_decay') if k != axis]


def cells(rows, axis):
    """{panel: {(width, n_layer): {x: {others: {seed: (val loss, diverged)}}}}}: x the axis' value, others the
    values of the remaining axes (the best of them is taken at each x)."""
    free = others(axis)
    out = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in PANEL), {}).setdefault((r['width'], r['n_layer']), {}) \
           .setdefault(r[axis], {}).setdefault(tuple(r[k] for k in free), {})[r['seed']] = (r['val'], r['diverged'])
    curves = [xs for panel in out.values() for xs in panel.values()]
    off = seed_offsets(curves)
    for by_seed in (bs for xs in curves for st in xs.values() for bs in st.values()):
        for s, (v, d) in by_seed.items():
            by_seed[s] = (v - off[s], d)
    order = {k: i for i, k in enumerate((o, p) for o in mup.OPTIMIZERS for p in mup.PARAMETRIZATIONS)}
    rank = lambda names, k: list(names).index(k) if k in names else 99  # noqa: E731
    return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0][:2], 99), rank(mup.DEPTH_ALPHA, kv[0][2]),
                                                    rank(mup.WEIGHT_DECAY_RULES, kv[0][3]))))


def seed_offsets(curves):
    """{seed: offset} over curves, a list of cells()' {x: {others: {seed: (val loss, diverged)}}}. A seed fixes
    the data order and which validation windows are scored, the same for every run of a sweep, so one seed's
    losses can sit 0.1 above another's everywhere while the curves' shapes agree. Grids add seeds only near the
    optima, and a plain mean over the seeds each point has would bend the curves by those levels. The fit is
    loss = f(curve, setting) + offset(seed), least squares over the finite runs (alternating means), offsets
    summing to 0: where every seed covers the grid, the curves are the plain means. The levels cancel in what
    the summary compares (runs and curves of one sweep), so the intervals keep the rest of the seed noise."""
    runs = [((i, x, o), s, v) for i, xs in enumerate(curves) for x, st in xs.items() for o, by_seed in st.items()
            for s, (v, d) in by_seed.items() if not d and math.isfinite(v)]
    off = {s: 0.0 for xs in curves for st in xs.values() for bs in st.values() for s in bs}
    if len({s for _, s, _ in runs}) < 2:
        return off
    for _ in range(1000):
        f = group_means((c, v - off[s]) for c, s, v in runs)
        new = group_means((s, v - f[c]) for c, s, v in runs)
        mean = sum(new.values()) / len(new)
        new = {s: new.get(s, mean) - mean for s in off}
        done = max(abs(new[s] - off[s]) for s in off) < 1e-10
        off = new
        if done:
            break
    return off


def group_means(pairs):
    """{key: the mean of its values} of (key, value) pairs."""
    groups = {}
    for k, v in pairs:
        groups.setdefault(k, []).append(v)
    return {k: sum(a) / len(a) for k, a in groups.items()}


def panel_seeds(panel_cells):
    """The seeds any run of a panel (cells()' {curve: {x: {others: {seed: ...}}}}) has."""
    return sorted({s for xs in panel_cells.values() for st in xs.values() for bs in st.values() for s in bs})


def curve(xs, seeds):
    """{x: mean val loss} of one curve (xs: cells()'s {x: {others: {seed: ...}}}), the best over the other axes
    at each x. The mean is over `seeds` (a bootstrap's resample, repeats counted) where a setting has them,
    else over the seeds it has: grids often add seeds only near the optima. A diverged seed makes it nan."""
    out = {}
    for x, settings in xs.items():
        vals = []
        for by_seed in settings.values():
            got = [by_seed[s] for s in seeds if s in by_seed] or list(by_seed.values())
            if not any(d or not math.isfinite(v) for v, d in got):
                vals.append(sum(v for v, _ in got) / len(got))
        out[x] = min(vals) if vals else float('nan')
    return out


def log2x(x):
    return math.log2(x) if x > 0 else float('-inf')


def fit_optimum(points):
    """The optimum of one curve, {x: loss} with x in log2 units: (x*, loss at x*, at the grid's edge). A parabola
    through the points within one octave of the lowest (at least its three nearest points; least squares where
    there are more): near its minimum the loss is quadratic in log LR, and farther out a curve turns
    asymmetric (it diverges on the right), which a wider fit would read as a shift. At the grid's edge, or with
    no curvature, the lowest point itself."""
    import numpy as np
    finite = {x: y for x, y in points.items() if math.isfinite(y) and math.isfinite(x)}
    if not finite:
        return None
    x0 = min(finite, key=finite.get)
    xs = sorted(points)
    if x0 in (xs[0], xs[-1]) or len(finite) < 3:
        return x0, finite[x0], x0 in (xs[0], xs[-1]) and len(xs) > 1
    near = sorted(finite, key=lambda x: abs(x - x0))
    near = [x for x in near if abs(x - x0) <= 1 + 1e-9] if sum(abs(x - x0) <= 1 + 1e-9 for x in near) >= 3 else near[:3]
    a, b, c = np.polyfit(near, [finite[x] for x in near], 2)
    if a <= 0:
        return x0, finite[x0], False
    xv = min(max(-b / (2 * a), min(near)), max(near))
    return float(xv), float(np.polyval([a, b, c], xv)), False


def in_log2(panel_cells):
    """A panel is fitted in log2 units unless some curve of it has a 0 on its axis (weight decay): one unit for
    every curve, so their optima compare."""
    return all(min(xs) > 0 for xs in panel_cells.values())


def panel_optima(panel_cells, seeds):
    """{curve: fit_optimum of its seed-mean curve} for one panel and one choice of seeds."""
    out, log = {}, in_log2(panel_cells)
    for key, xs in panel_cells.items():
        c = curve(xs, seeds)
        fit = fit_optimum({log2x(x): y for x, y in c.items()} if log else c)
        if fit:
            out[key] = fit
    return out


def resamples(seeds, n=1000):
    """n draws of the seeds with replacement, the same draws every time; [] with a single seed."""
    import random
    rng = random.Random(0)
    return [[rng.choice(seeds) for _ in seeds] for _ in range(n)] if len(seeds) >= 2 else []


def bootstrap(panel_cells, seeds, n=1000):
    """Seed-bootstrap replicates of panel_optima(): each resamples the seeds jointly for every curve (one seed is one
    data order at every width). [] with a single seed."""
    return [panel_optima(panel_cells, r) for r in resamples(seeds, n)]


def interval(values, lo=0.05, hi=0.95):
    v = sorted(x for x in values if math.isfinite(x))
    if not v:
        return float('nan'), float('nan')
    return v[int(lo * (len(v) - 1))], v[int(round(hi * (len(v) - 1)))]


def seeds_at(xs, x):
    """The seeds with a finite run at grid point x of one curve."""
    return {s for bs in xs[x].values() for s, (v, d) in bs.items() if not d and math.isfinite(v)}


def seeds_near(xs, x, log):
    """The most seeds at any of the three grid points of one curve nearest x (an optimum's fit window): where
    each has one seed, resampling the seeds cannot move the fit, so it has no seed interval, however many seeds
    the sweep ran elsewhere."""
    near = sorted(xs, key=lambda g: abs((log2x(g) if log else g) - x))[:3]
    return max(len(seeds_at(xs, g)) for g in near)


def curve_label(key, keys):
    widths, depths = {k[0] for k in keys}, {k[1] for k in keys}
    if len(depths) == 1:
        return f"width {key[0]}"
    if len(widths) == 1:
        return f"depth {key[1]}"
    return f"{key[0]} x {key[1]}"


def fmt_x(axis, x, log):
    """An optimum for print: x in log2 units (log) or the axis' own (a grid with a 0, e.g. weight decay)."""
    if not log:
        return f"{x:.3g}"
    return f"2^{x:.2f}" if axis == 'lr' else f"{2 ** x:.3g}"


def panel_title(key):
    opt, param, depth, wd = key
    extra = ([f"depth rule {depth}"] if depth != 'none' else []) + ([f"wd {wd}"] if wd != 'paper' and opt == 'adamw' else [])
    return f"{LABELS[opt]}, {LABELS[param]}" + (f" ({', '.join(extra)})" if extra else '')


def at_lr(xs, seeds, lr):
    """The run at one LR of a curve against the curve's best run: (its seed-mean loss, whether it is the best run,
    the upper end of the best run's seed interval or None where the best run has one seed)."""
    c = curve(xs, seeds)
    xb = min((x for x in c if math.isfinite(c[x])), key=c.get)
    hi = interval([curve(xs, r)[xb] for r in resamples(seeds)])[1] if len(seeds_at(xs, xb)) > 1 else None
    return c[lr], xb == lr, hi


def tuned_check(xs, seeds, tuned_lr, best_loss):
    """The promise of μTransfer on one curve: a run at the base width's tuned LR is as good, within seed noise,
    as the best run the sweep finds (the fitted minimum lies between grid points, where no run is)."""
    if tuned_lr not in xs:
        return ''
    ty, best, hi = at_lr(xs, seeds, tuned_lr)
    verdict = 'the best LR of the grid' if best else 'the best run has one seed' if hi is None else \
        f"the best run's seed interval reaches {hi:.4f}"
    return f"; at the tuned LR {ty:.4f} ({ty - best_loss:+.4f}; {verdict})"


def one_model(rows):
    """Lines naming the labels that share one trained run (the rows' trained_as), each with the number of
    runs it holds for: 'adamw at width 256 x 8: mup = sp (14 runs)'. A group's weight decays are given in
    units of its smallest: 'mup fixed_timescale λ = mup paper 4λ'."""
    groups, notes = {}, {}
    for r in rows:
        groups.setdefault(trained_key(r), []).append(r)
    for g in (g for g in groups.values() if len(g) > 1):
        t = dict(g[0], **dict(kv.split('=', 1) for kv in g[0]['trained_as'].split()), trained_as='')
        t['weight_decay'] = float(t['weight_decay'])
        keys = [k for k in TRAINED_AS if any(r[k] != t[k] for r in g) or len({r[k] for r in g}) > 1]
        lam = min(r['weight_decay'] for r in g + [t])

        def label(r):
            ratio = f"{r['weight_decay'] / lam:g}λ".replace('1λ', 'λ') if lam else ''
            return ' '.join(ratio if k == 'weight_decay' else str(r[k]) for k in keys)
        r = g[0]
        where = f"{r['optimizer']}{'' if 'parametrization' in keys else ' ' + r['parametrization']} at width " \
                f"{r['width']} x {r['n_layer']}" + (', λ 0' if 'weight_decay_rule' in keys and not lam else '')
        text = f"{where}: {' = '.join(sorted({label(x) for x in g}))}"
        text += '' if any(not x['trained_as'] for x in g) else f" (trained as {label(t)})"
        notes[text] = notes.get(text, 0) + 1
    return [f"{text} ({n} run{'s' if n > 1 else ''})" for text, n in notes.items()]


def summarize(rows, axis='lr', tuned_lr=0.0):
    """Print, per panel, every curve's fitted optimum of `axis` with its seed interval, and the optimum's shift
    across the curves with its interval; return {panel: {'best': {curve: (x*, loss, edge)}, 'interval':
    {curve: (lo, hi)}, 'loss_interval': {curve: (lo, hi)}}}, with 'shift' (log2 ratio), 'shift_interval' (lo, hi),
    'better' (bool) and 'order' (the verdict printed on it) added where a panel has two curves or more."""
    summary, shared = {}, one_model(rows)
    if shared:
        print("\none model, several labels (one run trained, a row for each):\n  " + '\n  '.join(shared))
    for key, panel_cells in cells(rows, axis).items():
        seeds = panel_seeds(panel_cells)
        best = panel_optima(panel_cells, seeds)
        reps = bootstrap(panel_cells, seeds)
        print(f"\n{panel_title(key)}  ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}):")
        intervals, loss_intervals, log, lone = {}, {}, in_log2(panel_cells), []
        for k in sorted(panel_cells):
            if k not in best:
                print(f"  {curve_label(k, panel_cells):12s}: every run diverged")
                continue
            x, y, edge = best[k]
            ok = bool(reps) and seeds_near(panel_cells[k], x, log) >= 2  # an interval the seeds can move
            if reps and not ok:
                lone.append(k)
            intervals[k] = interval([r[k][0] for r in reps if k in r]) if ok else (math.nan, math.nan)
            loss_iv = loss_intervals[k] = interval([r[k][1] for r in reps if k in r]) if ok else (math.nan, math.nan)
            iv = f" [{fmt_x(axis, intervals[k][0], log)}, {fmt_x(axis, intervals[k][1], log)}]" if ok else \
                ' (one seed there: no interval)' if reps else ''
            liv = f" [{loss_iv[0]:.4f}, {loss_iv[1]:.4f}]" if ok else ''
            nd = sum(all(d for _, d in bs.values()) for st in panel_cells[k].values() for bs in st.values())
            at = tuned_check(panel_cells[k], seeds, tuned_lr, y) if tuned_lr and axis == 'lr' else ''
            print(f"  {curve_label(k, panel_cells):12s}: optimum {axis} {fmt_x(axis, x, log)}{iv}, val loss {y:.4f}"
                  f"{liv}{'  (at the grid edge: no fit)' if edge else ''}{f', {nd} diverged' if nd else ''}{at}")
        summary[key] = dict(best=best, interval=intervals, loss_interval=loss_intervals)
        if len(best) >= 2:
            ks = sorted(best)
            shift = max(best[k][0] for k in ks) - min(best[k][0] for k in ks)
            shifts = [max(r[k][0] for k in ks) - min(r[k][0] for k in ks) for r in reps
                      if all(k in r for k in ks)] if not lone else []
            siv = interval(shifts) if shifts else (float('nan'), float('nan'))
            better = all(best[a][1] > best[b][1] for a, b in zip(ks, ks[1:]))
            # an order the seeds cannot confirm: some neighbour's best-loss interval overlaps the next one's, or
            # some curve has none
            unsure = better and reps and any(not loss_intervals[a][0] > loss_intervals[b][1]
                                             for a, b in zip(ks, ks[1:]))
            moves = f"x{2 ** shift:.2f}" + (f" [x{2 ** siv[0]:.2f}, x{2 ** siv[1]:.2f}]" if shifts else '') \
                if axis == 'lr' else f"{shift:.2f} octaves" if log else f"by {shift:.3g}"
            moves += f" (no interval: one seed at {', '.join(curve_label(k, ks) for k in lone)})" if lone else ''
            order = 'no' if not better else 'yes, within the seed intervals' if unsure else 'yes'
            print(f"  the optimum moves {moves} across {curve_label(ks[0], ks)} .. {curve_label(ks[-1], ks)}; "
                  f"larger better at the optimum: {order} ({', '.join(f'{best[k][1]:.4f}' for k in ks)})")
            summary[key].update(shift=shift, shift_interval=siv, better=better, order=order)
    return summary
