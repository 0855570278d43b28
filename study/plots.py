"""
The figures of a sweep (python -m study.sweep --plot): per panel the final val loss against the axis, a curve
per width (or depth) with its fitted optimum and seed interval (study/optima.py), and for the LR also the
paper's style, each curve minus its own best. While a sweep runs, the same figure of the runs so far (live()).
"""
import math
import os
import textwrap

from prepare_data import replacing
from study.optima import LABELS, cells, curve, curve_label, in_log2, log2x, panel_optima, panel_seeds, panel_title


def pyplot():
    import matplotlib
    matplotlib.use('Agg')  # files only, no window
    import matplotlib.pyplot as plt
    return plt


def plot(rows, axis, out, run, note='', summary=None, tuned_lr=0.0):
    """The final val loss against the axis per panel, a curve per width (or depth) with its fitted optimum (star)
    and seed interval (bar), and a dashed line at `tuned_lr` where one is given; for the LR also the paper's style
    (<stem>_relative.png), each curve minus its own best on one shared y-range, beside the CSV `out` whose run
    settings are `run`; `note` goes under the title. Returns the first figure's path."""
    plt = pyplot()
    if not cells(rows, axis):
        raise SystemExit(f"error: no results in {out} to plot")
    stem = os.path.splitext(out)[0]
    stem += '' if axis == 'lr' or stem.endswith(axis) else f'_{axis}'
    paths = []
    for relative in (False, True) if axis == 'lr' else (False,):
        fig = figure(rows, axis, run, note, summary, tuned_lr, relative)
        path = stem + ('_relative' if relative else '') + '.png'
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    print(f"\nwrote {' and '.join(paths)}")
    return paths[0]


def live(rows, axis, out, run, tuned_lr=0.0):
    """The figure of the runs finished so far, redrawn as each run ends: <out stem>_live.png beside the CSV,
    written to a temporary file and renamed (a viewer never reads half a file). Returns its path, or None
    while no run has finished."""
    plt = pyplot()
    if not cells(rows, axis):
        return None
    path = os.path.splitext(out)[0] + '_live.png'
    fig = figure(rows, axis, run, f"live: {len(rows)} rows so far", None, tuned_lr, False)
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=80, format='png')
    plt.close(fig)
    return path


def figure(rows, axis, run, note, summary, tuned_lr, relative):
    """plot()'s figure: one panel per cell, a curve per width (or depth); relative: each curve minus its best."""
    plt = pyplot()
    data = cells(rows, axis)
    keys = list(data)
    ncol = min(3, len(keys))
    nrow = math.ceil(len(keys) / ncol)
    curves = sorted({k for pc in data.values() for k in pc})
    cmap = plt.get_cmap('viridis')
    color = {k: cmap(i / max(1, len(curves) - 1) * 0.9) for i, k in enumerate(curves)}
    steps = sorted({r['steps'] for r in rows})
    clip = f"clip {run['grad_clip']}" if float(run['grad_clip']) else 'no clipping'
    seqs = int(run['batch_size']) * int(run['gradient_accumulation_steps'])  # sequences a step, accumulated
    title = (f"GDN, {run['dataset']}, {'/'.join(map(str, steps))} steps of {seqs}x{run['block_size']} "
             f"tokens, {clip}, base width {run['base_width']}  (* fitted optimum with its seed interval)")
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.8 * nrow), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.axis('off')
    for ax, key in zip(axes.flat, keys):
        panel = data[key]
        seeds = panel_seeds(panel)
        s = (summary or {}).get(key, {})
        finite_all, fits = [], s.get('best') or panel_optima(panel, seeds)  # the summary's fits, where it has them
        log = in_log2(panel)  # drawn in the units it is fitted in: log2, or linear where an axis has a 0
        for k in sorted(panel):
            c = curve(panel[k], seeds)
            xs = sorted(c)
            lx = [log2x(x) for x in xs] if log else xs
            fit = fits.get(k)
            base = (fit[1] if fit else 0.0) if relative else 0.0
            ys = [c[x] - base for x in xs]
            finite_all += [y for y in ys if math.isfinite(y)]
            ax.plot(lx, ys, '-o', ms=3, color=color[k], label=curve_label(k, panel))
            if fit:
                ax.plot([fit[0]], [fit[1] - base], '*', ms=13, color=color[k], mec='k', mew=0.6, zorder=5)
                if k in s.get('interval', {}) and math.isfinite(s['interval'][k][0]):
                    lo, hi = s['interval'][k]
                    ax.plot([lo, hi], [fit[1] - base] * 2, '-', color=color[k], lw=2.5, alpha=0.6)
        if tuned_lr and axis == 'lr' and key[0] == 'adamw':  # the base width's LR, which μP carries unchanged
            ax.axvline(math.log2(tuned_lr), ls='--', lw=1, color='gray', label='the base LR, carried')
        if relative:
            ax.set_ylim(-0.01, 0.3)
            ax.set_ylabel('val loss - the curve\'s best')
        elif finite_all:
            ax.set_ylim(min(finite_all) - 0.03, min(max(finite_all), min(finite_all) + 1.0) + 0.05)
            ax.set_ylabel('final val loss')
        ax.set_title(panel_title(key), fontsize=10)
        ax.set_xlabel(f"{'log2 ' if log else ''}{LABELS.get(axis, axis)}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    lines = [title] + ([note] if note else [])  # wrapped to the figure: one panel is narrow
    fig.suptitle('\n'.join(textwrap.fill(t, 62 * ncol) for t in lines), fontsize=9)
    fig.tight_layout()
    return fig
