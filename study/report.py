"""
The numbers of README.md and docs/ that come from assets/, written from the data by the study's own functions.

Each table or sentence drawn from a CSV or JSON in assets/ sits between `<!-- report:NAME -->` and
`<!-- /report -->`, and BLOCKS below says how NAME is computed. This command rewrites every block; with
--check it rewrites nothing and exits 1, naming each block that differs from what the data gives (a CPU test
runs it on the committed files). Nothing trains: a block reads the CSVs and JSONs as they are.

    python -m study.report            # rewrite the blocks of README.md and docs/*.md
    python -m study.report --check    # exit 1 where a committed block differs from its data

One method per quantity (docs/transfer.md says it for the reader): an optimum is the fitted optimum of
study/optima.py (a parabola in log2 x near the lowest point, each seed's level removed), with its seed-bootstrap
interval; a best loss is the fitted loss at it; μP − SP is the difference of the two fitted best losses at the
widest width; a sweep's rows are those `python -m study.sweep ARGS --plot` summarises (study.grid.select). A
coordinate-check exponent is the least-squares slope coord_check.py wrote to its JSON.
"""
import contextlib
import functools
import glob
import io
import json
import math
import os
import re
import shlex
import sys

from prepare_data import atomic_write
from study.grid import load_results, select
from study.optima import LABELS, at_lr, cells, curve_label, panel_seeds, panel_title, summarize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = re.compile(r'(<!-- report:(\w+) -->\n)(.*?)(<!-- /report -->)', re.S)

DEFAULTS = dict(
    check=False,                 # compare only: exit 1, naming each block that differs from its data
    files='README.md,docs/*.md',  # comma list of the files (globs, from the repository's root) whose blocks are written
)


# ------------------------------------------------------------------------------------------------
# numbers and sweeps

def num(x, digits=2, plus=False):
    """x for a table: a true minus sign, '+' on request, 'n/a' where it is not finite."""
    if x is None or not math.isfinite(x):
        return 'n/a'
    text = f"{x:+.{digits}f}" if plus else f"{x:.{digits}f}"
    return text.replace('-', '−')


@functools.lru_cache(maxsize=None)
def sweep(args):
    """(cfg, rows, summary, cells by panel) of `python -m study.sweep ARGS --plot`: the rows its summary holds,
    and the summary itself (study.optima.summarize, its print silenced)."""
    from configurator import apply_config
    from study.sweep import DEFAULTS as SWEEP
    cfg = dict(SWEEP)
    argv = [a if a.startswith('--') else os.path.join(ROOT, a) for a in shlex.split(args)]
    assigned = apply_config(argv, cfg, verbose=False)
    rows = select(load_results(os.path.join(ROOT, cfg['out']), cfg['at_step']), cfg, assigned)
    with contextlib.redirect_stdout(io.StringIO()):
        summary = summarize(rows, cfg['axis'], cfg['learning_rate'])
    return cfg, rows, summary, cells(rows, cfg['axis'])


def lr_text(x, edge=False):
    return num(x) + (' (edge)' if edge else '')


def interval_text(iv, digits=2):
    return f" [{num(iv[0], digits)}, {num(iv[1], digits)}]" if iv and math.isfinite(iv[0]) else ''


def moves(p, edge=False):
    """An optimum's move across a panel's curves, ×2^shift, with its seed interval; edge: say where an optimum lies
    at its grid's edge."""
    lo, hi = p['shift_interval']
    return (f"×{2 ** p['shift']:.2f}" + (f" [{2 ** lo:.2f}, {2 ** hi:.2f}]" if math.isfinite(lo) else '')
            + (' (edge)' if edge and any(b[2] for b in p['best'].values()) else ''))


def diverged_at(xs):
    """log2 of the grid points of one curve where every run diverged."""
    return [math.log2(x) for x, st in sorted(xs.items()) if all(d for bs in st.values() for _, d in bs.values())]


def dims(keys):
    """'width 256 / 512 / 1024' for a panel's curves (width, n_layer)."""
    labels = [curve_label(k, keys) for k in keys]
    word = labels[0].split(' ')[0]
    return (word + ' ' if word in ('width', 'depth') else '') + ' / '.join(label.split(' ', 1)[-1] if word in (
        'width', 'depth') else label for label in labels)


# ------------------------------------------------------------------------------------------------
# the kinds of block

def fits(args, diverged=False):
    """One row per panel: the fitted optimum of each curve (interval at the last), its move across the curves with
    its interval, the fitted best losses, whether larger is better; then μP − SP at the last curve."""
    cfg, rows, summary, data = sweep(args)
    first = next(iter(summary.values()))
    keys = sorted(first['best'])
    steps = '/'.join(str(n) for n in sorted({r['steps'] for r in rows}))
    head = (f"| {steps} steps | log2 LR at the optimum, {dims(keys)} | moves [seed interval] | best val loss, "
            f"{dims(keys)} | larger better |" + (' diverged at the last (log2 LR) |' if diverged else ''))
    lines = [head, '|---' * (head.count('|') - 1) + '|']
    for key, p in summary.items():
        ks = sorted(p['best'])
        opt = ' / '.join(lr_text(p['best'][k][0], p['best'][k][2]) for k in ks) + interval_text(p['interval'][ks[-1]])
        loss = ' / '.join(num(p['best'][k][1], 3) for k in ks) + interval_text(p['loss_interval'][ks[-1]], 3)
        cells_ = [panel_title(key), opt, moves(p) if 'shift' in p else '—', loss,
                  p['order'] if 'shift' in p else '—']
        if diverged:
            cells_.append(', '.join(num(x, 0) for x in diverged_at(data[key][ks[-1]])) or 'none')
        lines.append('| ' + ' | '.join(cells_) + ' |')
    return '\n'.join(lines + ([mup_minus_sp(summary)] if mup_minus_sp(summary) else []))


def mup_minus_sp(summary):
    """μP − SP at the widest curve of each optimizer, the difference of the fitted best losses."""
    parts = []
    for (opt, param, depth, wd), p in summary.items():
        sp = summary.get((opt, 'sp', depth, wd))
        if param == 'sp' or not sp:
            continue
        k = max(set(p['best']) & set(sp['best']))
        parts.append(f"{LABELS[opt]} {LABELS[param]} {num(p['best'][k][1] - sp['best'][k][1], 3, plus=True)}")
    if not parts:
        return ''
    keys = sorted(next(iter(summary.values()))['best'])
    return f"\nμP − SP at {curve_label(keys[-1], keys)}: " + '; '.join(parts) + '.'


def carried(specs, fit=True):
    """One row per panel of each sweep (args, lr): the last curve's fitted optimum and best loss with their
    intervals (fit=False: stated elsewhere), and the run at `lr` (carried from elsewhere) against them: its loss
    above the fitted best, and where it lies against the best run's seed interval (study.optima.at_lr, as the
    sweep's summary judges a tuned LR)."""
    head = ['sweep, curve'] + (['log2 LR at the optimum', 'best val loss'] if fit else []) + [
        'the carried LR: val loss, above the best', "the best run's seed interval"]
    lines = ['| ' + ' | '.join(head) + ' |', '|---' * len(head) + '|']
    for args, lr in specs:
        cfg, rows, summary, data = sweep(args)
        for key, p in summary.items():
            k = max(p['best'])
            if lr not in data[key][k]:
                continue
            x, y, edge = p['best'][k]
            loss, best, hi = at_lr(data[key][k], panel_seeds(data[key]), lr)
            where = 'the best run' if best else 'the best run has one seed' if hi is None else \
                f"reaches {hi:.4f}: {'inside' if loss <= hi else 'outside'}"
            cells_ = [f"{panel_title(key)}, {shape(k, p['best'])}"] + ([
                lr_text(x, edge) + interval_text(p['interval'][k]),
                num(y, 4) + interval_text(p['loss_interval'][k], 4)] if fit else []) + [
                f"2^{num(math.log2(lr))}: {loss:.4f}, {num(loss - y, 4, plus=True)}", where]
            lines.append('| ' + ' | '.join(cells_) + ' |')
    return '\n'.join(lines)


def shape(k, keys):
    """A curve's name among `keys`: 'width 1024' in a width sweep, '1024 x 16' alone."""
    return curve_label(k, keys) if len(keys) > 1 else f"{k[0]} x {k[1]}"


def at_steps(args, steps):
    """The fitted optima by the val loss each run recorded at each of `steps` (the runs' own paths)."""
    cfg, _, summary, _ = sweep(args)
    keys = list(summary)
    lines = ['| step | ' + ' | '.join(f"{panel_title(k)}: log2 LR at the optimum, moves" for k in keys)
             + ' | larger better |', '|---' * (len(keys) + 2) + '|']
    for n in steps:
        s = sweep(f"{args} --at_step={n}")[2]
        parts, better = [], []
        for key in keys:
            p = s[key]
            ks = sorted(p['best'])
            optima = ' / '.join(lr_text(p['best'][k][0], p['best'][k][2]) for k in ks)
            parts.append(f"{optima}, ×{2 ** p['shift']:.2f}")
            better.append(f"{LABELS[key[1]]} {p['order']}")
        lines.append(f"| {n} | " + ' | '.join(parts) + f" | {'; '.join(better)} |")
    return '\n'.join(lines)


def values(args, key, vals):
    """Per panel and curve, the fitted best loss (its log2 LR) of the sweep restricted to each value of `key`,
    as `python -m study.sweep ARGS --KEY=v --plot` gives it; rows that are one model (SP and μP at the base
    width) are one row."""
    table = {}
    for v in vals:
        for pk, p in sweep(f"{args} --{key}={v}")[2].items():
            for k, (x, y, edge) in p['best'].items():
                row = table.setdefault((pk, k), {})
                row[v] = f"{num(y, 3)} ({num(x)}{', edge' if edge else ''})"
    merged, keys = {}, [k for _, k in table]
    several = len({pk[0] for pk, _ in table}) > 1
    for (pk, k), row in table.items():
        label = (curve_label(k, keys), LABELS[pk[0]].split(' ')[0] if several else '')
        merged.setdefault((k, label, tuple(row.get(v, '—') for v in vals)), []).append(LABELS[pk[1]])
    head = f"| {LABELS[key]} | " + ' | '.join(f"{v:g}" for v in vals) + ' |'
    lines = [head, '|---' * (len(vals) + 1) + '|']
    for (k, label, cells_), params in sorted(merged.items(), key=lambda kv: (kv[0][1][1], kv[0][0], len(kv[1]))):
        lines.append(f"| {', '.join(x for x in label if x)}, {' = '.join(params)} | " + ' | '.join(cells_) + ' |')
    return '\n'.join(lines)


def compare(specs, optimizer):
    """One row per sweep (label, args): μP's and SP's moves, μP − SP at the widest width, μP larger better."""
    lines = ["| setting | μP (paper) moves | SP moves | μP − SP, widest | μP larger better |", '|---' * 5 + '|']
    for label, args in specs:
        s = sweep(args)[2]
        mu, sp = (next(p for k, p in s.items() if k[:2] == (optimizer, q)) for q in ('mup', 'sp'))
        k = max(set(mu['best']) & set(sp['best']))
        lines.append(f"| {label} | {moves(mu, True)} | {moves(sp, True)} | "
                     f"{num(mu['best'][k][1] - sp['best'][k][1], 3, plus=True)}"
                     f" | {mu['order']} |")
    return '\n'.join(lines)


def grad_norms(specs):
    """The median pre-clip gradient norm (fraction of steps clipped) of seed 1337's run at one LR, per width."""
    lines = ["| SGD, seed 1337 | SP: median gradient norm (steps clipped), by width | μP (paper) |", '|---' * 3 + '|']
    for label, args, lr_exp in specs:
        rows = [r for r in sweep(args)[1] if r['seed'] == 1337 and math.isclose(math.log2(r['lr']), lr_exp)]
        parts = []
        for param in ('sp', 'mup'):
            got = sorted((r['width'], r['grad_norm'], r['clip_frac']) for r in rows if r['parametrization'] == param)
            clipped = any(c > 0 for _, _, c in got)
            parts.append(' / '.join(f"{g:.3g}" + (f" ({c:.0%})" if clipped else '') for _, g, c in got))
        lines.append(f"| {label}, at 2^{num(lr_exp, 0)} | {parts[0]} | {parts[1]} |")
    return '\n'.join(lines)


def tune_stages(args):
    """study.tune's stages as the CSV gives them: each candidate's fitted optimum and loss, and the value kept."""
    from configurator import apply_config
    from study import tune
    cfg = dict(tune.DEFAULTS)
    apply_config([os.path.join(ROOT, a) for a in shlex.split(args)], cfg, verbose=False)
    cfg['out'] = os.path.join(ROOT, cfg['out'])
    lines = ["| stage (the keys not yet tuned at their list's middle) | log2 LR at the optimum, best val loss | kept |",
             '|---' * 3 + '|']
    for h, found, chosen in tune.stages(cfg, train=False):
        best = min(found, key=lambda v: found[v][1])
        cells_ = ' / '.join(f"{v:g}: {num(x)}, " + (f"**{num(y, 4)}**" if v == best else num(y, 4))
                            for v, (x, y, _) in found.items())
        lines.append(f"| `{h}` | {cells_} | {chosen[h]:g} |")
    return '\n'.join(lines)


# ------------------------------------------------------------------------------------------------
# the coordinate check's JSON

@functools.lru_cache(maxsize=None)
def coord(path):
    with open(os.path.join(ROOT, path)) as f:
        return json.load(f)


RUN_LABELS = {'sp-adamw': 'SP-AdamW', 'mup-adamw': 'μP-AdamW', 'sp-sgd': 'SP-SGD', 'mup-sgd': 'μP-SGD `mup`',
              'mup_fixed_fanout-sgd': '`mup_fixed_fanout`', 'mup_nogdn-sgd': '`mup_nogdn`'}


def run_label(run):
    if run in RUN_LABELS:
        return RUN_LABELS[run]
    param, opt, rule = run.split('-')
    return f"{LABELS[opt].split(' ')[0]} `{rule}`"


def coord_table(path, kind, step, loss=False, quantities=None):
    """Quantities x runs: the exponent of each quantity's size (kind 'value') or change since init ('delta') at
    `step`; bold where it is past the check's flat tolerance; with loss, the loss at that step per size."""
    d = coord(path)
    tol, runs = d['config']['flat_tol'], d['runs']
    lines = ['| quantity | ' + ' | '.join(run_label(r) for r in runs) + ' |', '|---' * (len(runs) + 1) + '|']
    for q in quantities or d['slope'][runs[0]][kind]:
        xs = [d['slope'][r][kind][q][step] for r in runs]
        lines.append(f"| {q} | " + ' | '.join(f"**{num(x, plus=True)}**" if abs(x) > tol else num(x, plus=True)
                                              for x in xs) + ' |')
    if loss:
        sizes = d['widths']
        lines.append(f"| loss at step {step}, {d.get('dim', 'width')} {' / '.join(map(str, sizes))} | " + ' | '.join(
            ' / '.join(f"{curve[step - 1]:.2f}" for curve in d['loss'][r]) for r in runs) + ' |')
    return '\n'.join(lines)


def coord_caption(path):
    d, c = coord(path), coord(path)['config']
    sizes = d['widths']
    return (f"`{path}`: {d['device']}, {d.get('dim', 'width')}s {sizes[0]}…{sizes[-1]}, {c['seeds']} seeds, "
            f"{c['steps']} steps, SGD lr {c['lr_sgd']:g}; |exponent| > {c['flat_tol']:g} in bold.")


def coord_summary(path):
    """Per run, the quantities whose change since init at the last step grows or shrinks with width."""
    d = coord(path)
    tol, step = d['config']['flat_tol'], d['config']['steps']
    lines = [f"| run | grows with width (exponent > +{tol:g}) | shrinks (< −{tol:g}) |", '|---' * 3 + '|']
    for r in d['runs']:
        sl = d['slope'][r]['delta']
        grow = [q for q in sl if sl[q][step] > tol]
        shrink = [q for q in sl if sl[q][step] < -tol]
        lines.append(f"| {run_label(r)} | {', '.join(grow) or 'nothing'} | {', '.join(shrink) or 'nothing'} |")
    return '\n'.join(lines) + '\n\n' + coord_caption(path).replace('; |exponent| > 0.15 in bold.', '.')


def coord_rows(specs, quantities, step=10):
    """Selected quantities' change exponents at `step` from several JSONs: rows (label, path, run)."""
    lines = ['| file, run | card | ' + ' | '.join(quantities) + ' |', '|---' * (len(quantities) + 2) + '|']
    for label, path, run in specs:
        d = coord(path)
        sl = d['slope'][run]['delta']
        lines.append(f"| `{os.path.basename(path)}` {label} | {d['device'].replace('NVIDIA ', '').split(' ')[0]} | "
                     + ' | '.join(num(sl[q][step], plus=True) for q in quantities) + ' |')
    return '\n'.join(lines)


# ------------------------------------------------------------------------------------------------
# the blocks: NAME -> the text between its markers

PAPER = 'config/sweep_paper.py --out=assets/lr_sweep_paper.csv'
LONG = 'config/sweep_paper.py config/sweep_long.py --out=assets/lr_sweep_long.csv'
WD = ('config/sweep_paper.py config/sweep_long.py config/sweep_weight_decay.py --out=assets/lr_sweep_long.csv '
      '--weight_decay_rule=paper --seeds=1337,1338')
QUICK = '--out=assets/lr_sweep.csv'
DEPTH = 'config/sweep_depth.py --out=assets/lr_sweep_depth.csv'
JOINT = 'config/sweep_depth.py config/sweep_joint.py'
NOCLIP = 'config/sweep_paper.py --grad_clip=0 --out=assets/lr_sweep_paper_noclip.csv'
BATCH = 'config/sweep_paper.py config/sweep_sgd_batch.py --out=assets/lr_sweep_sgd_batch.csv'
CC, CC_DEPTH = 'assets/coord_check.json', 'assets/depth/coord_check.json'
QUANTITIES_GPU = ['readout', 'mixer_out', 'residual', 'norm_gain', 'A_log']

BLOCKS = {
    'lr_paper': lambda: fits(PAPER, diverged=True),
    'coord_summary': lambda: coord_summary(CC),
    'coord_delta_10': lambda: coord_table(CC, 'delta', 10) + '\n\n' + coord_caption(CC),
    'coord_delta_1': lambda: coord_table(CC, 'delta', 1, quantities=('embed', 'readout', 'mixer_out', 'residual',
                                                                       'logits', 'A_log', 'dt_bias')),
    'coord_gpu': lambda: coord_rows([
        ('μP-AdamW', 'assets/v1/coord_check.json', 'mup-adamw'),
        ('μP-SGD, lr 0.025, `mup-sgd` (now `mup_fixed_fanout`)', 'assets/v1/coord_check.json', 'mup-sgd'),
        ('`mup_nogdn`-SGD, lr 0.025', 'assets/v1/coord_check.json', 'mup_nogdn-sgd'),
        ('μP-SGD, lr 0.05, `mup-sgd` (now `mup_fixed_fanout`)', 'assets/v1/coord_check_sgd_lr05.json', 'mup-sgd'),
        ('μP-AdamW, readout ×m', 'assets/v1/coord_check_readout_x_m.json', 'mup-adamw'),
        ('μP-SGD, lr 0.05, readout ×m', 'assets/v1/coord_check_readout_x_m.json', 'mup-sgd')], QUANTITIES_GPU),
    'coord_depth': lambda: coord_table(CC_DEPTH, 'delta', 10, loss=True) + '\n\n' + coord_caption(CC_DEPTH),
    'lr_long': lambda: fits(LONG),
    'lr_long_at_step': lambda: at_steps(LONG, (250, 500, 750, 1000, 1250)),
    'lr_long_carried': lambda: carried([(LONG, 2 ** -8)], fit=False),
    'tune': lambda: tune_stages('config/tune_base.py'),
    'tuned_check': lambda: carried([('config/tune_base.py config/tuned_gutenberg.py --widths=1024 --adamw_params=mup '
                                     '--seeds=1337,1338 --out=assets/tuned_check_gutenberg.csv', 0.00445)]),
    'sgd_noclip': lambda: fits(f"{NOCLIP} --optimizers=sgd --sgd_params=sp,mup,mup_fixed_fanout,mup_nogdn",
                               diverged=True),
    'adamw_noclip': lambda: fits(f"{NOCLIP} --optimizers=adamw --output_mult=4"),
    'sgd_batch': lambda: fits(BATCH),
    'quick': lambda: fits(QUICK, diverged=True),
    'momentum': lambda: compare([
        ('quick, 0.9, clip 1.0', 'config/sweep_quick_momentum09.py --out=assets/lr_sweep_momentum09.csv '
                                 '--optimizers=sgd --sgd_params=sp,mup'),
        ('quick, 0.98, no clipping', '--out=assets/lr_sweep_noclip.csv --optimizers=sgd --sgd_params=sp,mup'),
        ('quick, 0.9, no clipping', '--out=assets/lr_sweep_noclip09.csv --optimizers=sgd --sgd_params=sp,mup'),
        ('quick at 4 layers, 600 steps, 0.98, clip 1.0', '--out=assets/lr_sweep_quick_deep.csv --optimizers=sgd'),
        ('the same, no clipping', '--out=assets/lr_sweep_quick_deep_noclip.csv --optimizers=sgd'),
        ('paper architecture, 0.9, clip 1.0', 'config/sweep_paper.py --out=assets/lr_sweep_paper_momentum.csv '
                                              '--optimizers=sgd --sgd_params=sp,mup')], 'sgd'),
    'grad_norms': lambda: grad_norms([
        ('paper architecture, 0.98, clip 1.0', PAPER, -4),
        ('the same, 6× the batch', BATCH, -4),
        ('quick, 0.9, no clipping', '--out=assets/lr_sweep_noclip09.csv', -9)]),
    'output_mult': lambda: values('config/sweep_paper.py --out=assets/lr_sweep_paper_output_mult.csv '
                                  '--optimizers=adamw', 'output_mult', (1, 2, 4, 8, 16)),
    'init_std': lambda: values('config/sweep_paper.py --out=assets/lr_sweep_paper_init_std.csv '
                               '--optimizers=adamw', 'init_std', (0.005, 0.01, 0.02, 0.04)),
    'gate_lr': lambda: values(f"{NOCLIP.replace('noclip', 'gate_lr')} --optimizers=sgd --sgd_params=sp,mup",
                              'gate_lr_mult', (0.25, 1, 2, 4, 16)),
    'wd_grid': lambda: values(WD, 'weight_decay', (0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)),
    'wd_drift': lambda: compare([(f"λ = {v}", f"{WD} --weight_decay={v}") for v in (0, 0.1)], 'adamw'),
    'lr_depth': lambda: fits(DEPTH),
    'joint': lambda: carried([(f"{JOINT} --out=assets/lr_sweep_joint.csv", 0.00577),
                              (f"{JOINT} --n_layer=4 --out=assets/lr_sweep_joint_width.csv", 0.00469)]),
    'depth_sgd': lambda: fits(f"{DEPTH} --optimizers=sgd --sgd_params=mup --depth_rule=depth_mup,completep "
                              "--seeds=1337 --out=assets/lr_sweep_depth_sgd.csv"),
}


# ------------------------------------------------------------------------------------------------
# the files

def render(text, path='text'):
    """text with every block rewritten from its data; an unknown block name stops with one line."""
    def block(m):
        if m[2] not in BLOCKS:
            raise SystemExit(f"error: {path}: no block named {m[2]!r} (study/report.py BLOCKS)")
        return m[1] + BLOCKS[m[2]]().strip() + '\n' + m[4]
    return BLOCK.sub(block, text)


def differences(path):
    """The names of the blocks of the file at path whose committed text differs from what the data gives."""
    with open(path) as f:
        text = f.read()
    now = {m[2]: m[3] for m in BLOCK.finditer(text)}
    want = {m[2]: m[3] for m in BLOCK.finditer(render(text, path))}
    return [name for name in now if now[name] != want[name]]


def files(spec):
    return sorted({p for g in spec.split(',') if g.strip() for p in glob.glob(os.path.join(ROOT, g.strip()))})


def main(argv=None):
    from configurator import configure
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = dict(DEFAULTS)
    configure(cfg, argv)
    stale = []
    for path in files(cfg['files']):
        if cfg['check']:
            stale += [f"{os.path.relpath(path, ROOT)}: {name}" for name in differences(path)]
            continue
        with open(path) as f:
            text = f.read()
        new = render(text, path)
        if new != text:
            atomic_write(path, new)
            print(f"rewrote {os.path.relpath(path, ROOT)}")
    if stale:
        raise SystemExit("these blocks differ from what assets/ gives (python -m study.report rewrites them):\n  "
                         + '\n  '.join(stale))
    if cfg['check']:
        print("every block agrees with its data")


if __name__ == '__main__':
    main()
