"""
Coordinate check: does every activation, and its change under training, keep a width-independent size?
And, with --dim=depth, a depth-independent one?

For each width (or depth) and each run in {SP, μP} x {AdamW, SGD} (under SGD the paper's μP 'mup', the
fixed-fan-out gate rule 'mup_fixed_fanout' and the ablation 'mup_nogdn', μP without the GDN gate/scalar
corrections), build the model, train `steps` steps at a constant LR on real batches (training.train_step, as
train.py), and after every step run one fixed batch through it, recording the RMS of each probed quantity
(model.py's probes, averaged over layers) and the RMS of its change since step 0. Under μP the curves against
width are flat; under SP the logits and the updates grow with width (Yang et al., Tensor Programs V, §D;
microsoft/mup's coord_check is the original). A run named 'mup-adamw-completep' adds a depth rule (mup.py).

Across depth (--dim=depth, at the base width) the mixer's own quantities (q, k, v, the gates, the
state, the readout, the branch outputs before their multiplier) and the residual stream are compared over
`depths`: under CompleteP their change is flat in depth (every layer learns, none lazily), under depth-μP the
layers' own change shrinks like depth^-1/2, and without a depth rule the residual stream's change grows.

    python coord_check.py --out=assets                       # the published check (widths to 2048: a GPU)
    python coord_check.py --dim=depth --out=assets/depth     # the depth check (depths 2..32 at width 256)
    python coord_check.py --widths=64,128,256,512 --steps=3 --device=cpu      # a quick one, -> out/coord_check

Outputs in `out`: coord_check.png (size of each quantity), coord_check_delta.png (size of its change
since step 0), coord_check.json (every value, per seed-average and per layer, and the fitted log-log
slope against width for each run, quantity and step). Reading the figures: one line per step, x =
width (log2), y = RMS (log); a flat line means the quantity does not depend on width.

Units. q and k are L2-normalised per head, so their coordinates are exactly 1/sqrt(d_k) by construction,
and the state S = sum beta v k^T inherits that 1/sqrt(d_k) from k (DESIGN §3). They are reported times
sqrt(d_k) ("per unit-norm coordinate"), so flat means right for them too; the JSON says so in 'units'.
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch

from model import GDN, GDNConfig
from training import Batches, train_step

# quantities, in forward order: (name, where the probe lives, whether it is reported times sqrt(d_k))
QUANTITIES = [
    ('embed', 'model', False), ('q', 'mixer', True), ('k', 'mixer', True), ('v', 'mixer', False),
    ('beta', 'mixer', False), ('alpha', 'mixer', False), ('state', 'mixer', True),
    ('readout', 'mixer', False), ('mixer_out', 'block', False), ('mlp_out', 'block', False),
    ('residual', 'block', False), ('logits', 'model', False),
    # width-independent parameters, whose own entries must move by Θ(1) (μP's rule for vector-like
    # and scalar parameters): RMSNorm gains, depthwise conv taps, the per-head decay and step scalars
    ('norm_gain', 'param', False), ('conv', 'param', False), ('A_log', 'param', False),
    ('dt_bias', 'param', False),
]
PARAM_KINDS = {'norm_gain': lambda n: 'norm' in n, 'conv': lambda n: 'conv' in n,
               'A_log': lambda n: n.endswith('A_log'), 'dt_bias': lambda n: n.endswith('dt_bias')}
RUNS = ('sp-adamw', 'mup-adamw', 'sp-sgd', 'mup-sgd', 'mup_fixed_fanout-sgd', 'mup_nogdn-sgd')
DEPTH_RUNS = ('mup-adamw-none', 'mup-adamw-depth_mup', 'mup-adamw-completep', 'mup-sgd-none', 'mup-sgd-completep')

DEFAULTS = dict(
    dim='width',             # the dimension that varies: 'width' (over widths) or 'depth' (over depths)
    widths='128,256,512,1024,2048',
    depths='2,4,8,16,32',    # --dim=depth: at base_width, against base_depth
    runs='',                 # '' = RUNS (width) or DEPTH_RUNS (depth); a run is param-optimizer[-depth rule]
    steps=10,                # training steps; measured after each one and at init
    seeds=3,                 # averaged (the RMS values are averaged over seeds, then fitted)
    n_layer=2,               # the smallest depth where a block reads another block's trained output
    base_depth=8,
    n_head=6,
    base_width=256,          # μP == SP here
    batch_size=8,
    block_size=128,
    lr_adamw=3e-3,           # constant, no warmup or schedule; the hidden LR at the base width
    lr_sgd=0.025,            # at 0.05 μP-SGD's mixer output starts to grow with width from step 3 (README)
    momentum=0.9,            # SGD (Nesterov)
    beta1=0.9,
    beta2=0.95,
    weight_decay=0.0,        # decoupled decay is immaterial over a few steps; off so only the rules act
    dataset='shakespeare_char',
    data_dir='data',
    device='auto',           # auto: cuda if available
    kernel_backend='torch',  # the exact PyTorch chunked kernel; '' = best available (Triton on CUDA)
    out='out/coord_check',
    flat_tol=0.15,           # |slope| at or below this counts as flat in the summary
    plot=True,
)


def rms(x):
    return x.double().pow(2).mean().sqrt().item()


def load_data(dataset, data_dir):
    """The prepared dataset's {'train', 'val'} tokens and its vocab size (prepares the embedded ones)."""
    from prepare_data import ensure_prepared, load_split
    path = ensure_prepared(dataset, data_dir=data_dir)
    with open(os.path.join(path, 'meta.json')) as f:
        vocab = json.load(f)['vocab_size']
    return {s: load_split(path, s) for s in ('train', 'val')}, vocab


def set_probes(model, on):
    for mod in [model, *model.blocks, *(b.mixer for b in model.blocks)]:
        mod.probes = {} if on else None


@torch.no_grad()
def probe_forward(model, x):
    """{quantity: [tensor per layer]} for one forward pass of x (probes on)."""
    set_probes(model, True)
    try:
        model(x)
        out = {}
        for name, where, unit in QUANTITIES:
            if where == 'param':
                out[name] = [p.detach().float().clone() for n, p in model.named_parameters()
                             if PARAM_KINDS[name](n)]
                continue
            mods = {'model': [model], 'block': list(model.blocks),
                    'mixer': [b.mixer for b in model.blocks]}[where]
            scale = math.sqrt(model.config.head_k) if unit else 1.0
            out[name] = [m.probes[name].float() * scale for m in mods]
        return out
    finally:
        set_probes(model, False)


def share_head_scalars(model, seed):
    """Give every width the same per-head A_log and dt_bias for a seed (drawn by model.py's own init in a
    width-8 twin). They are width-independent, but drawn after the width-sized matrices they would differ
    from width to width, and with 6 heads a layer that draw, not the width, would decide the size of the
    gate alpha and its change."""
    c = model.config
    twin = GDN(GDNConfig(vocab_size=c.vocab_size, width=8, n_layer=c.n_layer, n_head=c.n_head,
                         parametrization=c.parametrization, base_width=8))
    twin.reset_parameters(10_000 + seed)
    twin = dict(twin.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(('A_log', 'dt_bias')):
                p.copy_(twin[name])


def parse_run(run):
    """'mup-adamw' or 'mup-adamw-completep' -> (parametrization, optimizer, depth rule)."""
    param, optimizer, *rule = run.split('-')
    return param, optimizer, rule[0] if rule else 'none'


def run_one(run, width, n_layer, seed, cfg, batches, vocab, device):
    """Train one model; return {quantity: {'value': [steps+1][layers], 'delta': [...]}} and the losses."""
    param, optimizer, rule = parse_run(run)
    backend = cfg['kernel_backend']
    if backend != 'torch' and (width // 8) % 16:
        backend = 'torch'  # the Triton kernel needs head dims that are multiples of 16
    model = GDN(GDNConfig(vocab_size=vocab, width=width, n_layer=n_layer, n_head=cfg['n_head'],
                          parametrization=param, base_width=cfg['base_width'], depth_rule=rule,
                          base_depth=cfg['base_depth'], kernel_backend=backend))
    model.reset_parameters(seed)
    share_head_scalars(model, seed)
    model.to(device)
    lr = cfg['lr_adamw'] if optimizer == 'adamw' else cfg['lr_sgd']
    opt = model.configure_optimizer(optimizer, lr, cfg['weight_decay'], (cfg['beta1'], cfg['beta2']),
                                    cfg['momentum'], device.type)
    mx = batches.get('val', -1)[0]  # the fixed measurement batch
    stats = {name: {'value': [], 'delta': []} for name, _, _ in QUANTITIES}
    losses = []
    ref = None
    for step in range(cfg['steps'] + 1):
        probes = probe_forward(model, mx)
        if ref is None:
            ref = probes
        for name in probes:
            stats[name]['value'].append([rms(t) for t in probes[name]])
            stats[name]['delta'].append([rms(t - r) for t, r in zip(probes[name], ref[name])])
        if step == cfg['steps']:
            break
        loss, _ = train_step(model, opt, batches, step, lr)  # constant LR, no clipping: only the rules act
        losses.append(loss.item())
    return stats, losses


def slope(widths, values):
    """Least-squares slope of log(values) against log(widths): the width (or depth) exponent."""
    v = np.asarray(values, dtype=np.float64)
    if np.any(~np.isfinite(v)) or np.any(v <= 0):
        return float('nan')
    return float(np.polyfit(np.log(widths), np.log(v), 1)[0])


def coord_check(cfg, verbose=True):
    """Run the check described by cfg (DEFAULTS' keys); return the results dict (also what the JSON holds)."""
    import mup
    depth = cfg['dim'] == 'depth'
    if cfg['dim'] not in ('width', 'depth'):
        raise ValueError(f"dim={cfg['dim']!r}: use 'width' or 'depth'")
    sizes = [int(v) for v in str(cfg['depths' if depth else 'widths']).split(',')]
    runs = [r.strip() for r in (cfg['runs'] or ','.join(DEPTH_RUNS if depth else RUNS)).split(',')]
    for r in runs:
        param, optimizer, rule = parse_run(r)
        if param not in mup.PARAMETRIZATIONS or optimizer not in mup.OPTIMIZERS or rule not in mup.DEPTH_ALPHA:
            raise ValueError(f"unknown run {r!r}: param-optimizer[-depth rule], e.g. {', '.join(RUNS[:2])}, "
                             f"{DEPTH_RUNS[2]}")
    device = torch.device(('cuda' if torch.cuda.is_available() else 'cpu') if cfg['device'] == 'auto'
                          else cfg['device'])
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 throughout: measure the rules, not rounding
        torch.backends.cudnn.allow_tf32 = False
    data, vocab = load_data(cfg['dataset'], cfg['data_dir'])
    steps, seeds = cfg['steps'], cfg['seeds']
    res = {'config': dict(cfg), 'dim': cfg['dim'], 'widths': sizes, 'runs': runs, 'vocab_size': vocab,
           'device': torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
           'units': {n: ('RMS x sqrt(d_k)' if u else 'RMS') for n, _, u in QUANTITIES},
           'loss': {}, 'value': {}, 'delta': {}, 'per_layer': {}, 'slope': {}}
    t0 = time.time()
    for run in runs:
        acc = {}
        loss = np.zeros((len(sizes), steps))
        for seed in range(seeds):
            # the same batches for every width and run with this seed
            batches = Batches(data, cfg['batch_size'], cfg['block_size'], 1000 + seed, device)
            for i, size in enumerate(sizes):
                width, n_layer = (cfg['base_width'], size) if depth else (size, cfg['n_layer'])
                stats, losses = run_one(run, width, n_layer, seed, cfg, batches, vocab, device)
                for n in stats:
                    for kind in ('value', 'delta'):
                        v = np.asarray(stats[n][kind])  # [steps + 1, layers]: layers differ across depths
                        a = acc.setdefault(n, {}).setdefault(kind, [None] * len(sizes))
                        a[i] = v / seeds if a[i] is None else a[i] + v / seeds
                loss[i] += np.asarray(losses) / seeds
        res['loss'][run] = loss.tolist()
        res['per_layer'][run] = {n: {k: [a.tolist() for a in acc[n][k]] for k in acc[n]} for n in acc}
        res['value'][run] = {n: [a.mean(-1).tolist() for a in acc[n]['value']] for n in acc}
        res['delta'][run] = {n: [a.mean(-1).tolist() for a in acc[n]['delta']] for n in acc}
        res['slope'][run] = {
            kind: {n: [slope(sizes, [res[kind][run][n][i][s] for i in range(len(sizes))])
                       for s in range(steps + 1)] for n in acc}
            for kind in ('value', 'delta')}
        if verbose:
            print(f"{run}: done in {time.time() - t0:.0f}s; final loss by {cfg['dim']} "
                  + ' '.join(f'{w}:{l[-1]:.3f}' for w, l in zip(sizes, loss)), flush=True)
    res['seconds'] = time.time() - t0
    return res


def summary(res, tol):
    """Text table: per quantity, the width exponent of its size at the last step and of its change."""
    runs, steps = res['runs'], res['config']['steps']
    lines = [f"{res['dim']} exponents (fitted log-log slope over {res['dim']}s {res['widths']}) at step {steps}; "
             f"value / change since step 0; |slope| <= {tol} counts as flat",
             f"{'quantity':10s} " + ' '.join(f'{r:>15s}' for r in runs)]
    for n, _, _ in QUANTITIES:
        cells = [f"{res['slope'][r]['value'][n][steps]:+6.2f} /{res['slope'][r]['delta'][n][steps]:+6.2f}"
                 for r in runs]
        lines.append(f"{n:10s} " + ' '.join(f'{c:>15s}' for c in cells))
    for r in runs:
        sl = res['slope'][r]
        flat = [n for n, _, _ in QUANTITIES if abs(sl['delta'][n][steps]) <= tol
                and abs(sl['value'][n][steps]) <= tol]
        grow = [n for n, _, _ in QUANTITIES if sl['delta'][n][steps] > tol or sl['value'][n][steps] > tol]
        shrink = [n for n, _, _ in QUANTITIES if n not in flat and n not in grow]
        lines.append(f"{r}: flat: {', '.join(flat) or '-'}; grows: {', '.join(grow) or '-'}; "
                     f"shrinks: {', '.join(shrink) or '-'}")
    return '\n'.join(lines)


def plot(res, path, kind):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    runs, widths, steps = res['runs'], res['widths'], res['config']['steps']
    names = [n for n, _, _ in QUANTITIES]
    fig, axes = plt.subplots(len(names), len(runs), figsize=(3.0 * len(runs), 2.1 * len(names)),
                             squeeze=False)
    cmap = plt.get_cmap('viridis')
    first = 0 if kind == 'value' else 1
    for j, run in enumerate(runs):
        for i, n in enumerate(names):
            ax = axes[i][j]
            vals = np.asarray(res[kind][run][n])  # [width, step]
            for s in range(first, steps + 1):
                ax.plot(widths, vals[:, s], marker='o', ms=2.5, lw=1,
                        color=cmap(s / max(steps, 1)), label=f'step {s}')
            ax.set_xscale('log', base=2)
            ax.set_yscale('log')
            sl = res['slope'][run][kind][n][steps]
            ax.set_title(f"{n}{' ×√d_k' if res['units'][n] != 'RMS' else ''}  (slope {sl:+.2f})",
                         fontsize=8)
            ax.tick_params(labelsize=6)
            ax.grid(True, which='major', alpha=0.3)
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            if i == 0:
                ax.annotate(run, (0.5, 1.35), xycoords='axes fraction', ha='center', fontsize=11,
                            weight='bold')
            if i == len(names) - 1:
                ax.set_xlabel(res['dim'], fontsize=7)
    for i, n in enumerate(names):
        # one y range per row, spanning at least a factor 30, so flat looks flat and columns compare
        vals = np.concatenate([np.asarray(res[kind][r][n])[:, first:].ravel() for r in runs])
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if len(vals):
            lo, hi = vals.min() / 1.3, vals.max() * 1.3
            if hi / lo < 30:
                mid = math.sqrt(lo * hi)
                lo, hi = mid / math.sqrt(30), mid * math.sqrt(30)
            for ax in axes[i]:
                ax.set_ylim(lo, hi)
    axes[0][-1].legend(fontsize=5, loc='best')
    what = 'RMS' if kind == 'value' else 'RMS of the change since step 0'
    shape = f"width {res['config']['base_width']}" if res['dim'] == 'depth' else \
        f"{res['config']['n_layer']} layers"
    fig.suptitle(f"GDN coordinate check: {what} vs {res['dim']} ({shape}, {res['config']['seeds']} seeds, "
                 f"lines = steps {first}..{steps}); slope at step {steps}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def compact(x):
    """x with every float rounded to 5 significant digits (a smaller JSON; the fits are done already)."""
    if isinstance(x, float):
        return float(f'{x:.5g}')
    if isinstance(x, dict):
        return {k: compact(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [compact(v) for v in x]
    return x


def main(argv=None):
    from configurator import configure
    cfg = dict(DEFAULTS)
    configure(cfg, sys.argv[1:] if argv is None else argv)
    res = coord_check(cfg)
    os.makedirs(cfg['out'], exist_ok=True)
    with open(os.path.join(cfg['out'], 'coord_check.json'), 'w') as f:
        json.dump(compact(res), f)
    if cfg['plot']:
        plot(res, os.path.join(cfg['out'], 'coord_check.png'), 'value')
        plot(res, os.path.join(cfg['out'], 'coord_check_delta.png'), 'delta')
    print(summary(res, cfg['flat_tol']))
    print(f"wrote {cfg['out']}/coord_check.json" + (", coord_check.png, coord_check_delta.png"
                                                      if cfg['plot'] else '') + f" ({res['seconds']:.0f}s)")


if __name__ == '__main__':
    main()
