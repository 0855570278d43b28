"""
Coordinate check: does every activation, and its change under training, keep a width-independent size? And, with
--dim=depth, a depth-independent one? docs/coordinate_check.md (docs/depth.md across depth) has the method, the figures,
how to read them and what they show.

For each width (or depth) and run (param-optimizer[-depth rule]; RUNS, DEPTH_RUNS), train `steps` steps at a constant
LR on real batches (training.train_step, as train.py) and, after every step, record on one fixed batch through the
training forward, model(x, y), the RMS of each probed quantity (GDN_PROBES: forward hooks that leave the forward as it
is; averaged over layers) and of its change since step 0. Under μP the curves against width are flat; under SP the
logits and the updates grow with width (Yang et al., Tensor Programs V, §D; microsoft/mup's coord_check is the
original). Across depth (at the base width), under CompleteP the layers' change is flat in depth (every layer learns,
none lazily), under depth-μP it shrinks like depth^-1/2, and without a depth rule the residual stream's change grows.

    python coord_check.py --out=assets                       # the full check, widths to 2048 (a GPU; CPU: to 512)
    python coord_check.py --dim=depth --out=assets/depth     # the depth check (depths 2..32 at width 256)
    python coord_check.py --widths=64,128,256,512 --steps=3 --device=cpu      # a quick one, -> out/coord_check

Outputs in `out`: coord_check.png (size of each quantity), coord_check_delta.png (size of its change since step 0),
coord_check.json (every value, per seed-average and per layer, and the fitted log-log slope against width for each
run, quantity and step). Ctrl-C stops after writing the widths that finished.

Units. q and k are L2-normalised per head, so their coordinates are exactly 1/sqrt(d_k) by construction, and so are
the state's S = sum beta v k^T, whose rows are weighted sums of those unit-norm keys. They are reported times sqrt(d_k)
("per unit-norm coordinate"), so flat means right for them too; the JSON says so in 'units'.
"""
import json
import math
import os
import re
import sys
import time
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

import mup
from kernel import chunk_gated_delta_rule, triton_takes
from model import GDN, GDNConfig
from prepare_data import atomic_write, replacing
from training import Batches, dataset_setup, device_setup, duration, load_splits, train_step

# ---- what is measured -----------------------------------------------------------------------------------
# A probe reads one quantity from the call of every module whose name (model.named_modules()) matches a pattern, through
# a forward hook: {quantity: (pattern, read)}. read(c) gets the call c: c.model, c.name, c.module, c.args (the module's
# positional inputs), c.out (its output) and c.seen (what this forward has recorded so far: {quantity: [a tensor per
# call, in forward order]}). Hooks that return nothing leave the forward as it is. Quantities named '_...' help later
# probes and are not reported. A model family is a table.
DELTA = r'blocks\.\d+\.mixer\.delta_rule'
GDN_PROBES = {
    'embed': (r'wte', lambda c: c.out),
    'q': (DELTA, lambda c: c.args[0]),  # after the conv, its SiLU and the L2 norm
    'k': (DELTA, lambda c: c.args[1]),
    'v': (DELTA, lambda c: c.args[2]),
    'beta': (DELTA, lambda c: c.args[4]),
    'alpha': (DELTA, lambda c: c.args[3].exp()),  # the kernel takes log alpha
    # the state after the sequence, which training does not ask for: the same call again, asking for it
    'state': (DELTA, lambda c: c.module.forward(*c.args[:6], output_final_state=True)[1]),
    'readout': (DELTA, lambda c: c.out[0]),  # o_t = S_t q_t times the readout multiplier, before the norm
    'mixer_out': (r'blocks\.\d+\.mixer', lambda c: c.out[0]),
    'mlp_out': (r'blocks\.\d+\.mlp', lambda c: c.out),
    'residual': (r'blocks\.\d+', lambda c: c.out[0]),
    'logits': (r'norm_f', lambda c: c.model.logits(c.out)),  # the loss path never forms them
}

# width-independent parameters, whose own entries must move by Θ(1) (μP's rule for vector-like and scalar
# parameters): RMSNorm gains, depthwise conv taps, the per-head decay and step scalars
PARAM_KINDS = {'norm_gain': lambda n: 'norm' in n, 'conv': lambda n: 'conv' in n,
               'A_log': lambda n: n.endswith('A_log'), 'dt_bias': lambda n: n.endswith('dt_bias')}
QUANTITIES = [*GDN_PROBES, *PARAM_KINDS]  # reported in this order
PER_UNIT_NORM = ('q', 'k', 'state')  # reported times sqrt(d_k) (the docstring's Units)
RUNS = ('sp-adamw', 'mup-adamw', 'sp-sgd', 'mup-sgd', 'mup_fixed_fanout-sgd', 'mup_nogdn-sgd')
DEPTH_RUNS = ('mup-adamw-none', 'mup-adamw-depth_mup', 'mup-adamw-completep', 'mup-sgd-none', 'mup-sgd-completep')
WIDTHS = {'cuda': '128,256,512,1024,2048', 'cpu': '128,256,512'}  # widths='' on a GPU / elsewhere
HEARTBEAT = 10  # seconds: a model that trains longer says which step it is at

DEFAULTS = dict(
    model='gdn',             # 'gdn' (model.py) or 'fla' (flash-linear-attention's GatedDeltaNetForCausalLM; CUDA)
    dim='width',             # the dimension that varies: 'width' (over widths) or 'depth' (over depths)
    widths='',               # '' = 128..2048 on a GPU (the full check), 128..512 elsewhere (minutes on a CPU)
    depths='2,4,8,16,32',    # --dim=depth: at base_width, against base_depth
    runs='',                 # '' = RUNS (width) or DEPTH_RUNS (depth); a run is param-optimizer[-depth rule]
    steps=10,                # training steps; measured after each one and at init
    seeds=3,                 # averaged (the RMS values are averaged over seeds, then fitted)
    n_layer=2,               # the smallest depth where a block reads another block's trained output
    base_depth=8,            # the depth rules' base depth (μP == SP there)
    n_head=6,                # fixed across widths, as in the paper; the head dims grow with the width
    base_width=256,          # μP == SP here
    batch_size=8,            # sequences a step
    block_size=128,          # tokens a sequence
    lr_adamw=3e-3,           # constant, no warmup or schedule; the hidden LR at the base width
    lr_sgd=0.025,            # at 0.05 μP-SGD's mixer output grows with width from step 3 (docs/coordinate_check.md)
    momentum=0.9,            # SGD (Nesterov)
    beta1=0.9,               # AdamW's beta1
    beta2=0.95,              # AdamW's beta2
    weight_decay=0.0,        # decoupled decay is immaterial over a few steps; off so only the rules act
    dataset='shakespeare_char',  # a prepared dataset (prepare_data.py) or an embedded one
    data_dir='data',         # where the datasets live
    device='',               # '' = cuda if available, else cpu; or cpu, cuda, cuda:N, mps
    kernel_backend='torch',  # the exact PyTorch chunked kernel; '' = best available (Triton on CUDA)
    out='out/coord_check',   # folder for the JSON and the figures
    flat_tol=0.15,           # |slope| at or below this counts as flat in the summary
    plot=True,               # write the figures
)


def rms(x):
    return x.double().pow(2).mean().sqrt().item()


@contextmanager
def probes(model, table):
    """Record `table`'s quantities during the forwards run inside the with-block: yields {quantity: [a
    detached tensor per matching call, in forward order]}. The hooks only read (under no_grad, returning
    nothing) and are removed on leaving the block."""
    seen = {q: [] for q in table}
    where = [(name, module, [(q, read) for q, (pattern, read) in table.items() if re.fullmatch(pattern, name)])
             for name, module in model.named_modules()]
    missing = set(table) - {q for _, _, entries in where for q, _ in entries}
    if missing:
        raise ValueError(f"no module of {type(model).__name__} matches the probes of {sorted(missing)}")

    def hook(name, entries):
        def record(module, args, out):
            with torch.no_grad():
                c = SimpleNamespace(model=model, name=name, module=module, args=args, out=out, seen=seen)
                for q, read in entries:
                    seen[q].append(read(c).detach())
        return record
    handles = [module.register_forward_hook(hook(name, entries)) for name, module, entries in where if entries]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def measure(model, x, y, family):
    """{quantity: [fp32 tensor per layer]} of one training forward model(x, y) (the loss path train_step runs,
    without the backward), in QUANTITIES' units, and the width-independent parameters by kind."""
    with probes(model, family.probes) as seen:
        model(x, y)
    unit = math.sqrt(model.config.head_k)
    out = {q: [t.float() * (unit if q in PER_UNIT_NORM else 1.0) for t in seen[q]]
           for q in family.probes if not q.startswith('_')}
    for kind, is_kind in PARAM_KINDS.items():
        out[kind] = [p.detach().float().clone() for n, p in model.named_parameters() if is_kind(n)]
    return out


def share_head_scalars(model, seed):
    """Give every width the same per-head A_log and dt_bias for a seed (drawn by model.py's own init in a width-8
    twin of model.config, matched by layer). They are width-independent, but drawn after the width-sized matrices
    they would differ from width to width, and with 6 heads a layer that draw, not the width, would decide the size
    of the gate alpha and its change."""
    shape = model.config
    twin = GDN(GDNConfig(vocab_size=shape.vocab_size, width=8, n_layer=shape.n_layer, n_head=shape.n_head,
                         parametrization=shape.parametrization, base_width=8))
    twin.reset_parameters(10_000 + seed)
    twin = dict(twin.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(('A_log', 'dt_bias')):
                layer = re.search(r'\d+', name).group()
                p.copy_(twin[f"blocks.{layer}.mixer.{name.rsplit('.', 1)[1]}"])


def parse_run(run):
    """'mup-adamw' or 'mup-adamw-completep' -> (parametrization, optimizer, depth rule)."""
    param, optimizer, *rule = run.split('-')
    return param, optimizer, rule[0] if rule else 'none'


def build(family, run, width, n_layer, seed, lr, cfg, vocab, device):
    """The family's model for a run (model.GDN, or fla_mup.FlaLM: fla's model behind the same interface),
    initialised by seed, and its optimizer."""
    param, optimizer, rule = parse_run(run)
    backend = cfg['kernel_backend'] if triton_takes(width // 8, width // 4) else 'torch'
    model = family.model(GDNConfig(vocab_size=vocab, width=width, n_layer=n_layer, n_head=cfg['n_head'],
                                   parametrization=param, base_width=cfg['base_width'], depth_rule=rule,
                                   base_depth=cfg['base_depth'], kernel_backend=backend))
    model.reset_parameters(seed)
    share_head_scalars(model, seed)
    model.to(device)
    return model, model.configure_optimizer(optimizer, lr, cfg['weight_decay'], (cfg['beta1'], cfg['beta2']),
                                            cfg['momentum'], torch.device(device).type)


# ---- another family: flash-linear-attention's GatedDeltaNetForCausalLM (model='fla'; its forward needs CUDA)
# Its delta rule is a function, not a module, so the probes read the rule's inputs from the projections (with the
# layer's conv, A_log and dt_bias) and recompute the state with kernel.py; the readout is the gated norm's input.
ATTN = r'fla\.model\.layers\.\d+\.attn'


def fla_layer(c):
    return c.model.get_submodule(c.name.rsplit('.', 1)[0])


def fla_conv(c, conv):
    """q, k or v of an fla layer from its projection's output c.out: fla runs the three short convs as one
    fused op that bypasses their modules, so redo it (SiLU of the causal depthwise conv with the layer's `conv`
    weights), per head, q and k L2-normalised as fla's kernel does."""
    layer, T = fla_layer(c), c.out.size(1)
    w = getattr(layer, conv).weight  # [C, 1, W]
    y = F.silu(F.conv1d(c.out.transpose(1, 2), w, padding=w.size(-1) - 1, groups=w.size(0))[..., :T])
    if conv == 'v_conv1d':
        return y.transpose(1, 2).unflatten(-1, (-1, layer.head_v_dim))
    return F.normalize(y.transpose(1, 2).unflatten(-1, (-1, layer.head_k_dim)), dim=-1)


FLA_PROBES = {
    'embed': (r'fla\.model\.embeddings', lambda c: c.out),
    'q': (ATTN + r'\.q_proj', lambda c: fla_conv(c, 'q_conv1d')),
    'k': (ATTN + r'\.k_proj', lambda c: fla_conv(c, 'k_conv1d')),
    'v': (ATTN + r'\.v_proj', lambda c: fla_conv(c, 'v_conv1d')),
    'beta': (ATTN + r'\.b_proj', lambda c: c.out.float().sigmoid()),
    '_g': (ATTN + r'\.a_proj', lambda c: -fla_layer(c).A_log.float().exp()
           * F.softplus(c.out.float() + fla_layer(c).dt_bias)),
    'alpha': (ATTN + r'\.a_proj', lambda c: c.seen['_g'][-1].exp()),
    'state': (ATTN + r'\.o_norm', lambda c: chunk_gated_delta_rule(
        *(c.seen[n][-1] for n in ('q', 'k', 'v', '_g', 'beta')), 1.0, output_final_state=True, backend='torch')[1]),
    'readout': (ATTN + r'\.o_norm', lambda c: c.args[0]),
    'mixer_out': (ATTN, lambda c: c.out[0]),
    'mlp_out': (r'fla\.model\.layers\.\d+\.mlp', lambda c: c.out),
    'residual': (r'fla\.model\.layers\.\d+', lambda c: c.out[0]),
    'logits': (r'fla\.model\.norm', lambda c: c.model.logits(c.out)),
}


def fla_model(config):
    from fla_mup import FlaLM
    return FlaLM(config)


FAMILIES = {'gdn': SimpleNamespace(name='gdn', probes=GDN_PROBES, model=GDN),
            'fla': SimpleNamespace(name='fla', probes=FLA_PROBES, model=fla_model)}


def run_one(family, run, width, n_layer, seed, cfg, batches, vocab, device, tick=lambda step: None):
    """Train one model; return {quantity: {'value': [steps+1][layers], 'delta': [...]}} and the losses."""
    lr = cfg['lr_adamw'] if parse_run(run)[1] == 'adamw' else cfg['lr_sgd']
    model, opt = build(family, run, width, n_layer, seed, lr, cfg, vocab, device)
    mx, my = batches.get('val', -1)  # the fixed measurement batch
    stats = {name: {'value': [], 'delta': []} for name in QUANTITIES}
    losses, ref = [], None
    for step in range(cfg['steps'] + 1):
        tick(step)
        now = measure(model, mx, my, family)
        ref = now if ref is None else ref
        for name in now:
            stats[name]['value'].append([rms(t) for t in now[name]])
            stats[name]['delta'].append([rms(t - r) for t, r in zip(now[name], ref[name])])
        if step == cfg['steps']:
            break
        loss, _ = train_step(model, opt, batches, step, lr)  # constant LR, no clipping: only the rules act
        losses.append(loss.item())
    return stats, losses


def step_seconds(family, run, shape, cfg, data, vocab, device):
    """Seconds of one forward and backward of a run's model of this (width, depth) (the second of two: the
    first pays for compiling kernels)."""
    model, _ = build(family, run, *shape, 0, 0.0, cfg, vocab, device)
    x, y = Batches(data, cfg['batch_size'], cfg['block_size'], 0, device).get('train', 0)
    for _ in range(2):
        t0 = time.time()
        model(x, y)[1].backward()
        if torch.device(device).type == 'cuda':
            torch.cuda.synchronize()
    return time.time() - t0


def slope(widths, values):
    """Least-squares slope of log(values) against log(widths): the width (or depth) exponent."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2 or np.any(~np.isfinite(v)) or np.any(v <= 0):
        return float('nan')
    return float(np.polyfit(np.log(widths), np.log(v), 1)[0])


def coord_check(cfg, verbose=True):
    """Run the check described by cfg (DEFAULTS' keys); return the results dict (also what the JSON holds).
    Ctrl-C (KeyboardInterrupt) ends it early: the result then holds the sizes that finished, for every run,
    and 'interrupted': True."""
    say = (lambda *a: print(*a, flush=True)) if verbose else (lambda *a: None)
    depth = cfg['dim'] == 'depth'
    if cfg['dim'] not in ('width', 'depth'):
        raise ValueError(f"dim={cfg['dim']!r}: use 'width' or 'depth'")
    if cfg['model'] not in FAMILIES:
        raise ValueError(f"model={cfg['model']!r}: use {' or '.join(map(repr, FAMILIES))}")
    family = FAMILIES[cfg['model']]
    runs = [r.strip() for r in (cfg['runs'] or ','.join(DEPTH_RUNS if depth else RUNS)).split(',')]
    for r in runs:
        param, optimizer, rule = parse_run(r) if r.count('-') in (1, 2) else ('', '', '')
        if param not in mup.PARAMETRIZATIONS or optimizer not in mup.OPTIMIZERS or rule not in mup.DEPTH_ALPHA:
            raise ValueError(f"unknown run {r!r}: param-optimizer[-depth rule], e.g. {', '.join(RUNS[:2])}, "
                             f"{DEPTH_RUNS[2]}")
    dev = device_setup(cfg['device'], 'float32')
    if cfg['model'] == 'fla' and dev.type != 'cuda':
        raise ValueError("model='fla': flash-linear-attention's kernels need a CUDA device")
    if dev.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 throughout: measure the rules, not rounding
        torch.backends.cudnn.allow_tf32 = False
    grid = cfg['depths'] if depth else cfg['widths'] or WIDTHS['cuda' if dev.type == 'cuda' else 'cpu']
    try:
        sizes = sorted({int(v) for v in str(grid).split(',')})
    except ValueError:
        raise ValueError(f"{cfg['dim']}s={grid!r}: give whole numbers, e.g. 128,256,512") from None
    steps, seeds = cfg['steps'], cfg['seeds']
    if len(sizes) < 2 or min(sizes) < 1 or steps < 1 or seeds < 1:
        raise ValueError(f"a slope needs two {cfg['dim']}s or more (got {grid}), steps >= 1 and seeds >= 1")
    shapes = [(cfg['base_width'], s) if depth else (s, cfg['n_layer']) for s in sizes]
    say(f"coord_check: {cfg['model']} over {cfg['dim']}s {grid}, runs {', '.join(runs)}; {steps} step"
        f"{'s' * (steps != 1)}, {seeds} seed{'s' * (seeds != 1)} each: {len(sizes) * len(runs) * seeds} models "
        f"on {dev.device}")
    if not depth and not cfg['widths'] and dev.type != 'cuda':
        say(f"  on a CPU the widths stop at {sizes[-1]} to finish in minutes; the full check (widths to 2048) "
            "needs a GPU, or give --widths")
    path, vocab = dataset_setup(cfg['dataset'], cfg['data_dir'])
    data = load_splits(path, dev.device)
    # the time of each (size, run): a step measured at the smallest and the largest size (when verbose), in
    # between linear in the matmul work width^2 * depth; the steps, and a measurement (a forward) after each
    work = [w * w * n for w, n in shapes]
    t_first, t_last = [step_seconds(family, runs[0], shapes[j], cfg, data, vocab, dev.device) if verbose else 1.0
                       for j in (0, -1)]
    cost = [(t_first + (t_last - t_first) * (x - work[0]) / ((work[-1] - work[0]) or 1)) * seeds
            * (steps + (steps + 1) / 3) for x in work]
    say(f"  estimated {duration(sum(cost) * len(runs))} (a step: {t_first:.2f} s at {cfg['dim']} {sizes[0]}, "
        f"{t_last:.2f} s at {sizes[-1]})")
    res = {'config': dict(cfg), 'dim': cfg['dim'], 'widths': sizes, 'runs': runs, 'vocab_size': vocab,
           'device': torch.cuda.get_device_name(dev.device) if dev.type == 'cuda' else dev.type,
           'units': {n: ('RMS x sqrt(d_k)' if n in PER_UNIT_NORM else 'RMS') for n in QUANTITIES},
           'loss': {r: [] for r in runs}, 'value': {}, 'delta': {}, 'per_layer': {}, 'slope': {}}
    acc = {r: {} for r in runs}  # run -> quantity -> kind -> [seed-averaged array per size]
    t0 = last = time.time()
    done, planned = 0.0, sum(cost) * len(runs)

    def beat(message, now=False):  # a line at least every HEARTBEAT seconds
        nonlocal last
        if now or time.time() - last >= HEARTBEAT:
            say(f"  {cfg['dim']} {message}; {duration(time.time() - t0)} in")
            last = time.time()
    try:
        for i, (size, (width, n_layer)) in enumerate(zip(sizes, shapes)):
            for run in runs:
                loss = np.zeros(steps)
                for seed in range(seeds):
                    # the same batches for every size and run with this seed
                    batches = Batches(data, cfg['batch_size'], cfg['block_size'], 1000 + seed, dev.device)
                    stats, losses = run_one(family, run, width, n_layer, seed, cfg, batches, vocab, dev.device,
                                            lambda step: beat(f"{size} {run} seed {seed}: step {step}/{steps}"))
                    for n in stats:
                        for kind in ('value', 'delta'):
                            v = np.asarray(stats[n][kind])  # [steps + 1, layers]: layers differ across depths
                            a = acc[run].setdefault(n, {}).setdefault(kind, [None] * len(sizes))
                            a[i] = v / seeds if a[i] is None else a[i] + v / seeds
                    loss += np.asarray(losses) / seeds
                res['loss'][run].append(loss.tolist())
                done += cost[i]
                left = (planned - done) * (time.time() - t0) / done  # the plan, corrected by the time so far
                beat(f"{size} {run}: final loss {loss[-1]:.3f}, ~{duration(left)} left", now=True)
    except KeyboardInterrupt:
        res['interrupted'] = True
    # a size is done when its last run is
    done_sizes = res['widths'] = sizes[:len(res['loss'][runs[-1]])]
    res['loss'] = {r: res['loss'][r][:len(done_sizes)] for r in runs}
    for run in runs:
        a = {n: {k: v[:len(done_sizes)] for k, v in kinds.items()} for n, kinds in acc[run].items()}
        res['per_layer'][run] = {n: {k: [x.tolist() for x in a[n][k]] for k in a[n]} for n in a}
        for kind in ('value', 'delta'):
            res[kind][run] = {n: [x.mean(-1).tolist() for x in a[n][kind]] for n in a}
        res['slope'][run] = {kind: {n: [slope(done_sizes, [v[s] for v in res[kind][run][n]]) for s in range(steps + 1)]
                                    for n in a} for kind in ('value', 'delta')}
    res['seconds'] = time.time() - t0
    return res


def summary(res, tol):
    """Text table: per quantity, the width exponent of its size at the last step and of its change."""
    runs, steps = res['runs'], res['config']['steps']
    lines = [f"{res['dim']} exponents (fitted log-log slope over {res['dim']}s {res['widths']}) at step {steps}; "
             f"value / change since step 0; |slope| <= {tol} counts as flat",
             f"{'quantity':10s} " + ' '.join(f'{r:>15s}' for r in runs)]
    for n in QUANTITIES:
        cells = [f"{res['slope'][r]['value'][n][steps]:+6.2f} /{res['slope'][r]['delta'][n][steps]:+6.2f}"
                 for r in runs]
        lines.append(f"{n:10s} " + ' '.join(f'{c:>15s}' for c in cells))
    for r in runs:
        sl = res['slope'][r]
        flat = [n for n in QUANTITIES if abs(sl['delta'][n][steps]) <= tol and abs(sl['value'][n][steps]) <= tol]
        grow = [n for n in QUANTITIES if sl['delta'][n][steps] > tol or sl['value'][n][steps] > tol]
        shrink = [n for n in QUANTITIES if n not in flat and n not in grow]
        lines.append(f"{r}: flat: {', '.join(flat) or '-'}; grows: {', '.join(grow) or '-'}; "
                     f"shrinks: {', '.join(shrink) or '-'}")
    return '\n'.join(lines)


def plot(res, path, kind):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    runs, widths, steps = res['runs'], res['widths'], res['config']['steps']
    fig, axes = plt.subplots(len(QUANTITIES), len(runs), figsize=(3.0 * len(runs), 2.1 * len(QUANTITIES)),
                             squeeze=False)
    cmap = plt.get_cmap('viridis')
    first = 0 if kind == 'value' else 1
    for j, run in enumerate(runs):
        for i, n in enumerate(QUANTITIES):
            ax = axes[i][j]
            vals = np.asarray(res[kind][run][n])  # [width, step]
            for s in range(first, steps + 1):
                ax.plot(widths, vals[:, s], marker='o', ms=2.5, lw=1, color=cmap(s / max(steps, 1)), label=f'step {s}')
            ax.set_xscale('log', base=2)
            ax.set_yscale('log')
            sl = res['slope'][run][kind][n][steps]
            ax.set_title(f"{n}{' ×√d_k' if res['units'][n] != 'RMS' else ''}  (slope {sl:+.2f})", fontsize=8)
            ax.tick_params(labelsize=6)
            ax.grid(True, which='major', alpha=0.3)
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            if i == 0:
                ax.annotate(run, (0.5, 1.35), xycoords='axes fraction', ha='center', fontsize=11, weight='bold')
            if i == len(QUANTITIES) - 1:
                ax.set_xlabel(res['dim'], fontsize=7)
    for i, n in enumerate(QUANTITIES):
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
    shape = f"width {res['config']['base_width']}" if res['dim'] == 'depth' else f"{res['config']['n_layer']} layers"
    fig.suptitle(f"GDN coordinate check: {what} vs {res['dim']} ({shape}, {res['config']['seeds']} seeds, "
                 f"lines = steps {first}..{steps}); slope at step {steps}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=90, format='png')
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


def write(res, cfg):
    """The JSON and, with cfg['plot'], the two figures, in cfg['out'] (each written whole or not at all)."""
    os.makedirs(cfg['out'], exist_ok=True)
    path = os.path.join(cfg['out'], 'coord_check.json')
    atomic_write(path, json.dumps(compact(res)))
    if cfg['plot']:
        plot(res, os.path.join(cfg['out'], 'coord_check.png'), 'value')
        plot(res, os.path.join(cfg['out'], 'coord_check_delta.png'), 'delta')
    return path + (", coord_check.png, coord_check_delta.png" if cfg['plot'] else '')


def interrupted(what):
    print(f"interrupted (Ctrl-C): {what}", file=sys.stderr)
    sys.exit(130)  # the shell's code for a program ended by SIGINT


def main(argv=None):
    from configurator import configure
    cfg = dict(DEFAULTS)
    configure(cfg, argv)
    try:
        res = coord_check(cfg)
    except ValueError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:  # in the setup, before the first size
        interrupted("nothing written")
    if not res['widths']:
        interrupted(f"before a {cfg['dim']} finished: nothing written")
    try:
        wrote = write(res, cfg)
    except KeyboardInterrupt:
        interrupted("while writing (each file is whole, or as it was)")
    if res.get('interrupted'):
        interrupted(f"wrote the {cfg['dim']}s that finished, {res['widths']}, to {wrote}")
    print(summary(res, cfg['flat_tol']))
    print(f"wrote {wrote} ({duration(res['seconds'])})")


if __name__ == '__main__':
    main()
