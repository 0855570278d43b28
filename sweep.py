"""
Learning-rate transfer: SP vs μP across widths (and depths), AdamW vs SGD, and the base values that μP carries.

A grid of widths x depths x learning rates x parametrizations x optimizers x base hyper-parameters x seeds,
each run a short train.py run: the same batches, schedule, step and evaluation (training.py). Every finished
run appends one row to the results CSV, flushed at once: a re-run skips what is done, an interrupted sweep
loses nothing. On a GPU several worker processes share the device; each keeps its model (compiled once) and
re-initialises it in place from one run to the next. On a CPU the runs go one by one in this process.

    python sweep.py                              # the quick default grid (character level, 2 layers) -> out/
    python sweep.py config/sweep_paper.py        # the paper's architecture (8 layers, GPT-2 BPE, T 512)
    python sweep.py config/tune_base.py          # tune the base values at the base width -> config/tuned_*.py
    python sweep.py --plot [--out=...]           # figures + fitted optima with seed intervals, from the CSV
    python sweep.py --plot --at_step=500 [...]   # the optima by the val loss at step 500 (where they settle)
    python sweep.py --help                       # every key and its value

Learning-rate grids are log2 exponents: '-12:-5' is 2^-12, 2^-11, ..., 2^-5; '-12:-5:0.5' adds half steps;
'-12,-9,-6' lists them. The LR is the base LR: mup.py's per-group multipliers apply on top. Every other grid
key takes a comma list, and each list is an axis: widths, n_layer, depth_rule, seeds, the base
hyper-parameters (output_mult, init_std, embed_lr_mult, gate_lr_mult), weight_decay and weight_decay_rule.
`axis` says which one the figure and the summary put on x (the best over the other axes is taken at each x).

Each curve's fitted optimum, its seed interval, the summary and the figures are optima.py's.

Runs that are one model with one set of LRs and decays are trained once, and the row stands for all of them
(tested): μP variants at the base width, depth rules at the base depth, and the weight-decay rules, which
only rescale λ (under μP-AdamW at width 4x base, λ under 'fixed_timescale' is the run 4λ under 'paper').
"""
import csv
import math
import os
import sys
import time
import types

import mup
from optima import cells, others, panel_optima, plot, summarize

HPARAMS = list(mup.BASE_HPARAMS)
AXES = ['width', 'n_layer', 'depth_rule', 'lr', 'parametrization', 'optimizer', 'seed', 'steps', *HPARAMS,
        'weight_decay', 'weight_decay_rule']
CSV_COLUMNS = AXES + ['tokens', 'final_train_loss', 'final_val_loss', 'diverged', 'grad_norm_median', 'clip_frac',
                      'val_curve', 'seconds']
COLUMN_DEFAULTS = dict(mup.BASE_HPARAMS, depth_rule='none', weight_decay_rule='paper')  # for older CSVs

DEFAULTS = dict(
    # output
    out='out/lr_sweep.csv',      # results CSV; its run settings go to <out stem>_config.csv beside it
    plot=False,                  # --plot: draw the figures from the CSV and print the optima (no training)
    axis='lr',                   # x of the figure and the summary: 'lr' or another grid key
    at_step=0,                   # with --plot, print the summary by the val loss each run recorded at this step
                                 # (eval_interval), not the final one: where along the runs the optima settle
    note='',                     # a line under the figure's title: what a panel cannot show, and why
    tune='',                     # comma list of base hyper-parameters to tune one at a time with the LR
    tuned_out='',                # with tune: the config file to write (e.g. config/tuned_gutenberg.py)
    # data
    dataset='shakespeare_char',  # char level: vocab 84, so the width-scaled hidden layers dominate
    data_dir='data',
    # grid
    widths='128,256,512,1024',
    n_layer='2',                 # depth does not enter the width rules; 2 keeps the default grid short
    depth_rule='none',           # mup.DEPTH_ALPHA: 'none', 'depth_mup', 'completep'
    optimizers='adamw,sgd',
    adamw_params='sp,mup',
    sgd_params='sp,mup,mup_fixed_fanout',
    adamw_lrs='-12:-5',          # log2 of the base LR
    sgd_lrs='-6:1',
    learning_rate=0.0,           # a tuned base LR (config/tuned_*.py): added to the AdamW grid, and the summary
                                 # says how far its loss is from the fitted best
    seeds='1337',
    output_mult='2',             # base hyper-parameters at the base width; 2: the base width's best for this
                                 # grid (docs/transfer.md)
    init_std='0.02',
    embed_lr_mult='1',
    gate_lr_mult='1',
    weight_decay='0.1',          # AdamW; the paper's SGD runs have none
    weight_decay_rule='paper',   # mup.WEIGHT_DECAY_RULES: 'paper', 'fixed_timescale', 'sqrt_width'
    # model
    n_head=6,
    base_width=256,
    base_depth=8,
    kernel_backend='',           # '' = best available (Triton on CUDA), 'torch' or 'triton'
    # training (each run: train.py's keys and meaning)
    max_iters=200,               # 0 = one epoch of the training split
    batch_size=32,
    block_size=256,
    gradient_accumulation_steps=1,
    warmup_iters=20,             # linear warmup, then cosine to min_lr at max_iters; -1 = a tenth of the run
    min_lr=5e-5,
    beta1=0.9,
    beta2=0.95,
    momentum=0.98,               # SGD, Nesterov: the paper's (made for 20k steps; on this 200-step grid the base
                                 # width prefers 0.9: config/sweep_quick_momentum09.py, docs/transfer.md)
    grad_clip=1.0,               # 0 = no clipping
    eval_iters=10,               # fixed batches for the final train and val loss
    eval_interval=0,             # also record the val loss every this many steps (0: only at the end)
    diverge_factor=1.5,          # diverged: loss not finite, or above this factor x the step-0 loss
    check_interval=10,           # how often (steps) the loss is read back to check for divergence
    # system
    workers=-1,                  # processes sharing the device; 0 = run in this process; -1 = 8 on a GPU, 0 on a CPU
    gpu_mem_gb=0.0,              # the runs in flight together stay under this (0: 90% of the device's memory)
    device='',                   # '' = cuda if available, else cpu
    dtype='',                    # '' = bfloat16 on CUDA, float32 elsewhere
    compile=True,                # torch.compile each worker's model once (CUDA only), reused across runs
    compile_mode='',             # '' or 'reduce-overhead' (CUDA graphs: for the small widths the host bounds)
    max_runs=0,                  # stop after this many new runs (0 = all)
)
# what must agree between a results CSV and the settings that extend it (the CSV rows carry the rest)
RUN_KEYS = ['dataset', 'n_head', 'base_width', 'base_depth', 'batch_size', 'block_size',
            'gradient_accumulation_steps', 'warmup_iters', 'min_lr', 'beta1', 'beta2', 'momentum', 'grad_clip',
            'eval_iters', 'diverge_factor']


def parse_exponents(spec):
    """'-12:-5' -> [-12, ..., -5]; '-12:-5:0.5' -> half steps; '-12,-9' -> a list."""
    spec = str(spec).strip()
    if ':' in spec:
        parts = [float(p) for p in spec.split(':')]
        lo, hi, step = parts[0], parts[1], parts[2] if len(parts) > 2 else 1.0
        n = int(round((hi - lo) / step))
        return [lo + i * step for i in range(n + 1)]
    return [float(p) for p in spec.split(',') if p.strip()]


def csv_list(spec, cast=str):
    return [cast(s.strip()) for s in str(spec).split(',') if s.strip()]


def check_grid(cfg):
    """Every grid value valid, or one line that says which is not."""
    def bad(msg):
        raise SystemExit(f"error: {msg}")
    for key in ('widths', 'n_layer', 'seeds'):
        try:
            vals = csv_list(cfg[key], int)
        except ValueError:
            bad(f"{key}={cfg[key]!r}: a comma list of whole numbers")
        if not vals or (key != 'seeds' and min(vals) <= 0):
            bad(f"{key}={cfg[key]!r}: positive whole numbers")
    for opt in csv_list(cfg['optimizers']):
        if opt not in mup.OPTIMIZERS:
            bad(f"optimizers: {opt!r} is not 'adamw' or 'sgd'")
        for p in csv_list(cfg[f'{opt}_params']):
            if p not in mup.PARAMETRIZATIONS:
                bad(f"{opt}_params: {p!r} is not one of {', '.join(mup.PARAMETRIZATIONS)}")
    for key, names in (('depth_rule', mup.DEPTH_ALPHA), ('weight_decay_rule', mup.WEIGHT_DECAY_RULES)):
        for v in csv_list(cfg[key]):
            if v not in names:
                bad(f"{key}: {v!r} is not one of {', '.join(names)}")
    for key in HPARAMS + ['weight_decay']:
        try:
            csv_list(cfg[key], float)
        except ValueError:
            bad(f"{key}={cfg[key]!r}: a comma list of numbers")
    for key in ('batch_size', 'block_size', 'gradient_accumulation_steps', 'eval_iters', 'check_interval'):
        if cfg[key] <= 0:
            bad(f"{key}={cfg[key]}: must be a positive whole number")
    if cfg['at_step'] < 0:
        bad(f"at_step={cfg['at_step']}: a step the runs recorded their val loss at (0: the final one)")
    if cfg['axis'] not in ('lr', 'width', 'n_layer', *HPARAMS, 'weight_decay'):
        bad(f"axis={cfg['axis']!r}: use 'lr', 'n_layer', 'weight_decay' or one of {', '.join(HPARAMS)}")


def canonical(r, base_width, base_depth):
    """The run that trains the same model with the same LRs and decay as run r (the one the sweep trains): μP
    variants are SP at the base width, depth rules nothing at the base depth, and a weight-decay rule is
    'paper' with the decay it amounts to (SGD runs take none)."""
    r = dict(r)
    if r['width'] == base_width:
        r['parametrization'] = 'sp'
    if r['n_layer'] == base_depth:
        r['depth_rule'] = 'none'
    f = 1.0 if r['optimizer'] == 'sgd' else decay_factor(r, base_width, base_depth, r['weight_decay_rule'])
    if f is not None:
        r['weight_decay'], r['weight_decay_rule'] = float(f"{r['weight_decay'] * f:.12g}"), 'paper'
    return r


def decay_factor(r, base_width, base_depth, rule):
    """What `rule` multiplies run r's decay coefficients by, relative to 'paper', where that is one number for
    every decayed group (the hidden and gate matrices, all inside the blocks, share their LR rule under AdamW);
    else None. Then λ under `rule` is the run λ·factor under 'paper': the rules are one grid of λ, relabelled."""
    c = types.SimpleNamespace(width=r['width'], base_width=base_width, n_layer=r['n_layer'], base_depth=base_depth,
                              parametrization=r['parametrization'], depth_rule=r['depth_rule'])
    f = {mup.decay(c, r['optimizer'], g, True, 1.0, rule) for g, on in mup.DECAY.items() if on}
    return f.pop() if len(f) == 1 else None


def grid(cfg, steps=None):
    """Every run of the sweep as a dict, the most expensive (widest, deepest) first so the workers finish
    together. steps: the run length (cfg['max_iters'], or one epoch where it is 0)."""
    check_grid(cfg)
    steps = steps or cfg['max_iters']
    runs, seen = [], set()
    values = {h: csv_list(cfg[h], float) for h in HPARAMS}
    for width in sorted(csv_list(cfg['widths'], int), reverse=True):
        for n_layer in sorted(csv_list(cfg['n_layer'], int), reverse=True):
            for opt in csv_list(cfg['optimizers']):
                lrs = [2.0 ** e for e in parse_exponents(cfg[f'{opt}_lrs'])]
                if opt == 'adamw' and cfg['learning_rate'] > 0 and not any(
                        math.isclose(cfg['learning_rate'], lr) for lr in lrs):
                    lrs.append(cfg['learning_rate'])
                decays = csv_list(cfg['weight_decay'], float) if opt == 'adamw' else [0.0]
                for param in csv_list(cfg[f'{opt}_params']):
                    for rule in csv_list(cfg['depth_rule']):
                        for wd_rule in csv_list(cfg['weight_decay_rule']):
                            for lr in lrs:
                                for hp in combinations(values):
                                    for wd in decays:
                                        for seed in csv_list(cfg['seeds'], int):
                                            r = canonical(dict(
                                                width=width, n_layer=n_layer, depth_rule=rule, lr=lr,
                                                parametrization=param, optimizer=opt, seed=seed, steps=steps,
                                                **hp, weight_decay=wd, weight_decay_rule=wd_rule),
                                                cfg['base_width'], cfg['base_depth'])
                                            if run_key(r) not in seen:
                                                seen.add(run_key(r))
                                                runs.append(r)
    return runs


def combinations(values):
    combos = [{}]
    for h in HPARAMS:
        combos = [dict(c, **{h: v}) for c in combos for v in values[h]]
    return combos


def run_key(r):
    """A run's identity: its axes, with numbers rounded so a CSV's text and a fresh grid compare equal."""
    def num(k):
        v = r.get(k)
        return round(float(COLUMN_DEFAULTS.get(k, 0.0) if v in (None, '') else v), 9)
    return (int(r['width']), int(r['n_layer']), r.get('depth_rule') or 'none', round(math.log2(float(r['lr'])), 6),
            r['parametrization'], r['optimizer'], int(r['seed']), int(r['steps']), *(num(h) for h in HPARAMS),
            num('weight_decay'), r.get('weight_decay_rule') or 'paper')


def config_path(out):
    return os.path.splitext(out)[0] + '_config.csv'


def read_settings(out):
    """{key: value} of the run settings kept beside a results CSV (its _config.csv); {} if it has none."""
    if not os.path.exists(config_path(out)):
        return {}
    with open(config_path(out), newline='') as f:
        return {r['key']: r['value'] for r in csv.DictReader(f)}


def run_settings(cfg):
    """The settings a results CSV was made with (its _config.csv), else cfg's."""
    return {**{k: str(cfg[k]) for k in RUN_KEYS}, **read_settings(cfg['out'])}


def read_rows(out):
    """The CSV's finished rows (a torn last line is skipped), with the columns an older sweep.py did not write
    filled in: from its _config.csv (n_layer, weight_decay were run settings once), else their defaults."""
    if not os.path.exists(out):
        return []
    settings = read_settings(out)
    rows = []
    with open(out, newline='') as f:
        for r in csv.DictReader(f):
            if r.get('diverged') not in ('True', 'False'):
                continue
            for k in AXES:
                if r.get(k) in (None, ''):
                    r[k] = settings.get(k, COLUMN_DEFAULTS.get(k, ''))
            if r['optimizer'] == 'sgd':
                r['weight_decay'] = '0.0'  # SGD runs never took the decay
            rows.append(r)
    return rows


def check_run_config(cfg):
    """The CSV's rows only make sense together if they share these settings: keep them beside it."""
    path = config_path(cfg['out'])
    want = {k: str(cfg[k]) for k in RUN_KEYS}
    if os.path.exists(path) and read_rows(cfg['out']):
        have = run_settings(cfg)
        differ = [f"{k}: {have.get(k)!r} there, {want[k]!r} now" for k in RUN_KEYS if have.get(k, want[k]) != want[k]]
        if differ:
            raise SystemExit(f"error: {cfg['out']} was made with other settings ({path}):\n  "
                             + "\n  ".join(differ) + "\nuse those settings or another --out")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + '.tmp', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['key', 'value'])
        w.writerows({**run_settings(cfg), **want}.items())  # an older sweep's keys stay: its rows need them
    os.replace(path + '.tmp', path)


def train_py_args(cfg, r):
    """The `python train.py` arguments that make the same run as sweep row r (tests/test_training.py)."""
    keys = dict(dataset=cfg['dataset'], data_dir=cfg['data_dir'], n_layer=r['n_layer'], n_head=cfg['n_head'],
                base_width=cfg['base_width'], base_depth=cfg['base_depth'], depth_rule=r['depth_rule'],
                batch_size=cfg['batch_size'], block_size=cfg['block_size'],
                gradient_accumulation_steps=cfg['gradient_accumulation_steps'], width=r['width'],
                parametrization=r['parametrization'], optimizer=r['optimizer'], learning_rate=r['lr'],
                seed=r['seed'], max_iters=r['steps'], lr_decay_iters=r['steps'],
                warmup_iters=warmup(cfg, r['steps']), min_lr=cfg['min_lr'], weight_decay=r['weight_decay'],
                weight_decay_rule=r['weight_decay_rule'], beta1=cfg['beta1'], beta2=cfg['beta2'],
                momentum=cfg['momentum'], grad_clip=cfg['grad_clip'], eval_iters=cfg['eval_iters'],
                eval_interval=r['steps'], **{h: r[h] for h in HPARAMS})
    return [f'--{k}={v}' for k, v in keys.items()]


def warmup(cfg, steps):
    return steps // 10 if cfg['warmup_iters'] < 0 else cfg['warmup_iters']


# ------------------------------------------------------------------------------------------------
# one run (in a worker process, or in this one)

class Trainer:
    """Holds the device, the data (on the device) and the model of one worker; trains one run at a time
    through training.py, as train.py does."""

    def __init__(self, cfg):
        from contextlib import nullcontext

        import numpy as np
        import torch
        from model import padded_vocab
        from prepare_data import ensure_prepared, load_split, read_meta
        self.cfg, self.torch = cfg, torch
        self.device = device_of(cfg)
        self.device_type = 'cuda' if self.device.startswith('cuda') else self.device.split(':')[0]
        dtype = cfg['dtype'] or ('bfloat16' if self.device_type == 'cuda' else 'float32')
        ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
        self.autocast = nullcontext() if ptdtype == torch.float32 else torch.autocast(self.device_type, dtype=ptdtype)
        if ptdtype == torch.float16:
            raise SystemExit("error: sweep.py runs bfloat16 or float32 (float16 needs train.py's GradScaler)")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        data_dir = ensure_prepared(cfg['dataset'], cfg['data_dir'])
        self.vocab_size = padded_vocab(read_meta(data_dir)['vocab_size'])
        # the whole split on the device: a batch is one gather, no host work per step
        self.data = {s: torch.from_numpy(load_split(data_dir, s)[:].astype(np.int32)).to(self.device)
                     for s in ('train', 'val')}
        self.model_key, self.raw, self.fwd = None, None, None
        self.init_key, self.init = None, None  # initialise()'s copy of the last init, on the host

    def model(self, r):
        """The worker's model for run r: built (and compiled) once per model_key, then reused."""
        from model import GDN, GDNConfig
        key = model_key(r)
        if key != self.model_key:
            self.raw = self.fwd = None  # one model per worker: the driver budgets device memory per run
            if self.device_type == 'cuda':
                self.torch.cuda.empty_cache()
            # drop the old model's compiled graphs: they share GDN.forward's cache, and once it is full
            # (recompile_limit) dynamo silently runs every later model eagerly
            self.torch._dynamo.reset()
            c = self.cfg
            raw = GDN(GDNConfig(width=r['width'], n_layer=r['n_layer'], n_head=c['n_head'], vocab_size=self.vocab_size,
                                parametrization=r['parametrization'], base_width=c['base_width'],
                                depth_rule=r['depth_rule'], base_depth=c['base_depth'], output_mult=r['output_mult'],
                                kernel_backend=c['kernel_backend'])).to(self.device)
            self.raw = raw
            compiled = c['compile'] and self.device_type == 'cuda'
            self.fwd = self.torch.compile(raw, mode=c['compile_mode'] or None) if compiled else raw
            self.model_key = key
        return self.raw, self.fwd

    def initialise(self, raw, r):
        """reset_parameters(seed), drawn once per model, seed, parametrization and base hyper-parameters (all the
        init depends on) and copied for the other LRs: the draws run on the CPU, a large part of a short run."""
        key = (self.model_key, r['seed'], r['parametrization']) + tuple(r[h] for h in HPARAMS)
        if key == self.init_key:
            with self.torch.no_grad():
                for p, t in zip(raw.parameters(), self.init):
                    p.copy_(t, non_blocking=True)
            return
        raw.reset_parameters(r['seed'])
        pin = self.device_type == 'cuda'
        self.init = [self.torch.empty(p.shape, dtype=p.dtype, pin_memory=pin).copy_(p) for p in raw.parameters()]
        self.init_key = key

    def run(self, r):
        from training import Batches, evaluate, lr_at, train_step
        torch, c = self.torch, self.cfg
        raw, model = self.model(r)
        # runs with one model key differ only in the init and the optimizer groups: set them on the model
        raw.config.parametrization = r['parametrization']
        for h in HPARAMS:
            setattr(raw.config, h, r[h])
        self.initialise(raw, r)
        raw.train()
        optim = raw.configure_optimizer(r['optimizer'], r['lr'], r['weight_decay'], (c['beta1'], c['beta2']),
                                        c['momentum'], self.device_type, r['weight_decay_rule'])
        batches = Batches(self.data, c['batch_size'], c['block_size'], r['seed'], self.device,
                          c['gradient_accumulation_steps'])
        steps, diverged, init_loss, last = r['steps'], False, None, float('nan')
        losses = torch.zeros(steps, device=self.device)
        norms = torch.zeros(steps, device=self.device)
        curve, done = [], 0
        for it in range(steps):
            lr = lr_at(it, r['lr'], warmup(c, steps), steps, c['min_lr'])
            losses[it], norms[it] = train_step(model, optim, batches, it, lr, c['grad_clip'], self.autocast)
            done = it + 1
            if it == 0 or done % c['check_interval'] == 0 or done == steps:
                last = losses[it].item()  # the only host sync in the loop
                if it == 0:
                    init_loss = last
                if not math.isfinite(last) or last > c['diverge_factor'] * init_loss:
                    diverged = True
                    break
            if c['eval_interval'] and done % c['eval_interval'] == 0 and done < steps:
                curve.append(f"{done}:{evaluate(model, batches, c['eval_iters'], self.autocast, ('val',))['val']:.4f}")
        train_loss = val_loss = float('nan')
        if not diverged:
            ev = evaluate(model, batches, c['eval_iters'], self.autocast)
            train_loss, val_loss = ev['train'], ev['val']
            diverged = not (math.isfinite(val_loss) and val_loss < c['diverge_factor'] * init_loss)
            curve.append(f"{done}:{val_loss:.4f}")
        else:
            train_loss = last
        n = norms[:done].float()
        tokens = done * c['batch_size'] * c['block_size'] * c['gradient_accumulation_steps']
        return dict(r, tokens=tokens, final_train_loss=train_loss, final_val_loss=val_loss, diverged=diverged,
                    grad_norm_median=n.median().item(),
                    clip_frac=(n > c['grad_clip']).float().mean().item() if c['grad_clip'] else 0.0,
                    val_curve=';'.join(curve))

    def release(self):
        """After an out-of-memory error: drop the model and the cached blocks."""
        self.raw = self.fwd = self.model_key = None
        if self.device_type == 'cuda':
            import gc
            gc.collect()
            self.torch.cuda.empty_cache()

    def peak_gb(self):
        if self.device_type != 'cuda':
            return 0.0
        peak = self.torch.cuda.max_memory_reserved() / 2**30
        self.torch.cuda.reset_peak_memory_stats()
        return peak


def model_key(r):
    """Runs with the same key share a worker's (compiled) model: the forward depends on these only."""
    return (r['width'], r['n_layer'], r['depth_rule'], r['parametrization'] == 'sp', float(r['output_mult']))


def is_oom(e):
    import torch
    return isinstance(e, torch.OutOfMemoryError) or 'out of memory' in str(e).lower()


def run_job(trainer, r):
    """('ok', row, (seconds, peak GB)) or ('oom', r, message) or ('error', r, traceback)."""
    import traceback
    t0 = time.time()
    try:
        row = trainer.run(r)
        secs = time.time() - t0
        return 'ok', dict(row, seconds=round(secs, 1)), (secs, trainer.peak_gb())
    except Exception as e:  # noqa: BLE001 - reported to the driver
        if is_oom(e):
            trainer.release()
            return 'oom', r, f"{type(e).__name__}: {str(e)[:200]}"
        return 'error', r, traceback.format_exc()


def worker_main(wid, cfg, jobs, results):
    """A worker process: runs the jobs the driver sends until it gets None; reports each result. It ends
    when the driver ends, however that happens (a kill -9 leaves nobody to send the None)."""
    import multiprocessing
    import threading
    parent = multiprocessing.parent_process()
    threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()
    try:
        trainer = Trainer(cfg)
    except BaseException as e:  # noqa: BLE001 - reported to the driver, which stops the sweep
        results.put((wid, 'error', None, f"{type(e).__name__}: {e}"))
        return
    while True:
        r = jobs.get()
        if r is None:
            return
        results.put((wid, *run_job(trainer, r)))


def mem_estimate_gb(cfg, width, vocab_size, n_layer=None):
    """Device memory of one run, from the model and batch it builds (bf16 autocast, Triton kernels): fp32
    weights, grads and AdamW moments (16 bytes a parameter); activations kept for the backward, ~160 bytes per
    token, layer and unit of width (measured with the heavier PyTorch kernel: an upper bound); the logits'
    bf16 gradient kept by the fused cross-entropy (2 bytes per token and vocabulary entry) plus one fp32 chunk
    of them on the PyTorch path; and the CUDA context and the compiler's workspace, ~1.5 GB. Measured peaks
    replace it once a run of that width has finished."""
    from fused_ops import CE_CHUNK
    from model import GDNConfig
    n_layer = n_layer or max(csv_list(cfg['n_layer'], int))
    c = GDNConfig(width=width, n_head=cfg['n_head'])  # the model's own head and MLP sizes
    params = vocab_size * width + n_layer * width * (c.n_head * (2 * c.head_k + 3 * c.head_v) + 3 * c.mlp_hidden)
    tokens = cfg['batch_size'] * cfg['block_size']
    logits = 2 * tokens * vocab_size + 12 * min(tokens * vocab_size, CE_CHUNK)
    return 1.5 + (16 * params + 160 * tokens * n_layer * width + logits) / 2**30


# ------------------------------------------------------------------------------------------------
# the sweep driver: the only writer of the CSV

def fmt_lr(lr):
    return f"2^{math.log2(lr):g}"


class ResultWriter:
    def __init__(self, out):
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        if os.path.exists(out) and os.path.getsize(out) > 0:
            with open(out, newline='') as f:
                header = next(csv.reader(f), [])
            if header != CSV_COLUMNS:  # an older sweep.py's columns: rewrite it in today's (atomic)
                rows = read_rows(out)
                with open(out + '.tmp', 'w', newline='') as f:
                    w = csv.DictWriter(f, CSV_COLUMNS, extrasaction='ignore')
                    w.writeheader()
                    w.writerows(rows)
                os.replace(out + '.tmp', out)
            with open(out, 'rb') as f:  # a torn last line (killed mid-write) would glue onto the next row
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b'\n'
            if torn:
                with open(out, 'a') as f:
                    f.write('\n')
        new = not os.path.exists(out) or os.path.getsize(out) == 0
        self.f = open(out, 'a', newline='')
        self.w = csv.DictWriter(self.f, CSV_COLUMNS)
        if new:
            self.w.writeheader()
            self.f.flush()

    def write(self, row):
        def fmt(k, v):
            return f"{v:.5f}" if isinstance(v, float) and (k.startswith('final') or k in ('grad_norm_median', 'clip_frac')) else v
        self.w.writerow({k: fmt(k, row[k]) for k in CSV_COLUMNS})
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self):
        self.f.close()


class InlinePool:
    """workers=0: the runs happen in this process, one at a time, through the same driver loop."""

    def __init__(self, cfg):
        self.trainer, self.done = Trainer(cfg), []

    def submit(self, wid, r):
        self.done.append((wid, *run_job(self.trainer, r)))

    def result(self):
        return self.done.pop(0)

    def close(self):
        pass


class ProcessPool:
    """Worker processes sharing the device; each has a job queue, all report to one result queue."""

    def __init__(self, cfg, n):
        import multiprocessing as mp
        ctx = mp.get_context('spawn')  # CUDA cannot be forked
        self.jobs, self.results = [ctx.Queue() for _ in range(n)], ctx.Queue()
        self.procs = [ctx.Process(target=worker_main, args=(i, cfg, self.jobs[i], self.results), daemon=True)
                      for i in range(n)]
        for p in self.procs:
            p.start()

    def submit(self, wid, r):
        self.jobs[wid].put(r)

    def result(self):
        return self.results.get()

    def close(self):
        for q in self.jobs:
            q.put(None)
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()


def device_of(cfg):
    import torch
    return cfg['device'] or ('cuda' if torch.cuda.is_available() else 'cpu')


def device_memory_gb(cfg):
    if cfg['gpu_mem_gb']:
        return cfg['gpu_mem_gb']
    import torch
    device = device_of(cfg)
    if not device.startswith('cuda'):
        return float('inf')
    return 0.9 * torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30


def data_facts(cfg):
    """(padded vocabulary, steps in one epoch) of the sweep's dataset, prepared first if it is embedded."""
    from model import padded_vocab
    from prepare_data import ensure_prepared, load_split, read_meta
    from training import Batches
    path = ensure_prepared(cfg['dataset'], cfg['data_dir'])
    split = load_split(path, 'train')
    epoch = Batches({'train': split}, cfg['batch_size'], cfg['block_size'], 0,
                    accum=cfg['gradient_accumulation_steps']).steps_per_epoch()
    return padded_vocab(read_meta(path)['vocab_size']), epoch


def sweep(cfg, runs=None):
    """Train the grid's runs that the CSV lacks (runs: a list of them instead of the whole grid)."""
    check_grid(cfg)
    check_run_config(cfg)
    vocab, epoch = data_facts(cfg)  # prepares the data once, before the workers start
    runs = grid(cfg, cfg['max_iters'] or epoch) if runs is None else runs
    done = {run_key(r) for r in read_rows(cfg['out'])}
    todo = [r for r in runs if run_key(r) not in done]
    if cfg['max_runs']:
        todo = todo[:cfg['max_runs']]
    on_gpu = device_of(cfg).startswith('cuda')
    workers = cfg['workers'] if cfg['workers'] >= 0 else (8 if on_gpu else 0)
    print(f"sweep: {len(runs)} runs in the grid, {len(runs) - len(todo)} already in {cfg['out']}, {len(todo)} "
          f"to run now ({'in this process' if not workers else f'{workers} worker processes'}, "
          f"{'GPU' if on_gpu else 'CPU'})", flush=True)
    if not todo:
        return 0
    budget = device_memory_gb(cfg)
    estimate = {(r['width'], r['n_layer']): mem_estimate_gb(cfg, r['width'], vocab, r['n_layer']) for r in todo}
    writer = ResultWriter(cfg['out'])
    t_start, n, tokens = time.time(), 0, 0
    cost = lambda r: r['n_layer'] * r['width'] ** 2 + r['width'] * vocab / 8  # noqa: E731  ~ FLOPs a token
    total = left = float(sum(cost(r) for r in todo))  # the ETA weighs the runs left by it

    def report(row, secs):
        nonlocal n, left, tokens
        writer.write(row)
        n, tokens = n + 1, tokens + row['tokens']
        left -= cost(row)
        el = time.time() - t_start
        eta = el / max(1e-9, 1 - left / total) - el if left > 1e-6 * total else 0
        status = 'DIVERGED' if row['diverged'] else f"val {row['final_val_loss']:.4f}"
        hp = ''.join(f" {h} {row[h]:g}" for h in HPARAMS if float(row[h]) != mup.BASE_HPARAMS[h])
        print(f"[{n}/{len(todo)}] width {row['width']} x {row['n_layer']} {row['parametrization']} "
              f"{row['depth_rule'] if row['depth_rule'] != 'none' else ''} {row['optimizer']} lr {fmt_lr(row['lr'])}"
              f"{hp} wd {row['weight_decay']:g} {row['weight_decay_rule']} seed {row['seed']}: train "
              f"{row['final_train_loss']:.4f} {status}, grad norm {row['grad_norm_median']:.3g} ({secs:.1f}s) | "
              f"{el / 60:.1f} min, ~{eta / 60:.1f} min left", flush=True)

    nw = min(workers, len(todo)) if workers > 0 else 1
    pool = ProcessPool(cfg, nw) if workers > 0 else InlinePool(cfg)
    # The driver hands out the runs, largest first, keeping the sum of their memory estimates under the budget
    # (small runs fill in while a large one waits for room). A worker gets a run for the model it holds when
    # there is one (no rebuild, no recompile). A run that runs out of memory goes back to the queue, its
    # shape's estimate is raised, and it waits until it has the room.
    pending, idle, busy, held = list(todo), list(range(nw)), {}, {}
    oom_count, skipped = {}, []
    shape = lambda r: (r['width'], r['n_layer'])  # noqa: E731
    try:
        while pending or busy:
            while pending and idle:
                room = budget - sum(busy.values())
                fits = [j for j, r in enumerate(pending) if estimate[shape(r)] <= room]
                if not fits:
                    if busy:
                        break
                    fits = [0]  # alone on the device and still too big by the estimate: try it
                wid = idle.pop(0)
                same = [j for j in fits if model_key(pending[j]) == held.get(wid)]
                r = pending.pop((same or fits)[0])
                busy[wid] = estimate[shape(r)]
                held[wid] = model_key(r)
                pool.submit(wid, r)
            wid, kind, row, info = pool.result()
            alone = len(busy) == 1
            busy.pop(wid, None)
            idle.append(wid)
            if kind == 'ok':
                secs, peak = info
                if peak:  # measured: replaces the estimate (with a margin for fragmentation)
                    estimate[shape(row)] = max(1.1 * peak, 0.5 * estimate[shape(row)])
                report(row, secs)
            elif kind == 'oom':
                held[wid] = None
                k = run_key(row)
                oom_count[k] = oom_count.get(k, 0) + 1
                estimate[shape(row)] = max(estimate[shape(row)] * 1.5, 1.0)
                if (alone and oom_count[k] >= 2) or oom_count[k] >= 4:
                    skipped.append(row)
                    print(f"out of memory {'twice with nothing else on the device' if alone else 'four times'}: "
                          f"width {row['width']} x {row['n_layer']} {row['parametrization']} lr {fmt_lr(row['lr'])} "
                          f"skipped (lower batch_size or block_size for it); {info}", flush=True)
                else:
                    pending.insert(0, row)
                    print(f"out of memory: width {row['width']} lr {fmt_lr(row['lr'])} goes back to the queue, "
                          f"its estimate now {estimate[shape(row)]:.1f} GB", flush=True)
            else:
                raise RuntimeError(f"a worker failed{' on ' + str(row) if row else ''}:\n{info}")
    except KeyboardInterrupt:
        raise SystemExit(f"interrupted: {n} runs written to {cfg['out']}; run the same command again to go on")
    finally:
        pool.close()
        writer.close()
    el = time.time() - t_start
    print(f"sweep: {n} runs in {el / 60:.1f} min -> {cfg['out']} ({tokens / max(el, 1e-9):,.0f} tokens/s in all)"
          + (f"; {len(skipped)} skipped for memory" if skipped else ''))
    return n


# ------------------------------------------------------------------------------------------------
# the results read back: which runs each curve of the summary and the figures holds

def load_results(out, at_step=0):
    """The CSV's rows, typed; with at_step, the val loss is the one recorded at that step (rows without one go)."""
    rows = []
    for r in read_rows(out):
        if at_step:
            at = dict(p.split(':') for p in (r.get('val_curve') or '').split(';') if p).get(str(at_step))
            if at is None:
                continue
            r = dict(r, final_val_loss=at, diverged=str(not math.isfinite(float(at))))
        rows.append(dict(width=int(r['width']), n_layer=int(r['n_layer']), depth_rule=r['depth_rule'],
                         lr=float(r['lr']), parametrization=r['parametrization'], optimizer=r['optimizer'],
                         seed=int(r['seed']), steps=int(r['steps']), weight_decay=float(r['weight_decay']),
                         weight_decay_rule=r['weight_decay_rule'], val=float(r['final_val_loss']),
                         train=float(r['final_train_loss']), diverged=r['diverged'] == 'True',
                         **{h: float(r[h]) for h in HPARAMS}, grad_norm=float(r.get('grad_norm_median') or 'nan'),
                         clip_frac=float(r.get('clip_frac') or 'nan'), curve=r.get('val_curve') or ''))
    return rows


def rule_free(r):
    """Under SP and under SGD every weight-decay rule is λ itself: such a run is one curve, not one per rule."""
    return r['optimizer'] == 'sgd' or r['parametrization'] == 'sp'


def expand(rows, base_width, base_depth, labels=None):
    """Each row once for every label it stands for (canonical()'s converse): at the base width for every
    parametrization of its optimizer, at the base depth for every depth rule, and for every weight-decay rule
    with the λ that rule gives the row's decay; the labels are those in the results and those in `labels`
    ({'adamw': params, 'sgd': params, 'depth_rule': rules, 'weight_decay_rule': rules}, the grid asked for: a
    sweep at the base width alone stores its μP runs as SP)."""
    labels = labels or {}
    present = {k: {r[k] for r in rows} | set(labels.get(k, ())) for k in ('depth_rule', 'weight_decay_rule')}
    params = {}
    for r in rows:
        params.setdefault(r['optimizer'], set(labels.get(r['optimizer'], ()))).add(r['parametrization'])
    out, seen = [], set()
    for r in rows:
        for p in (params[r['optimizer']] if r['width'] == base_width else [r['parametrization']]):
            for d in (present['depth_rule'] if r['n_layer'] == base_depth else [r['depth_rule']]):
                e = dict(r, parametrization=p, depth_rule=d)
                for w in (present['weight_decay_rule'] if not rule_free(e) else ['paper']):
                    # a row stands for its own rule; a canonical ('paper') row also for every other, λ rescaled
                    f = 1.0 if w == r['weight_decay_rule'] else \
                        decay_factor(e, base_width, base_depth, w) if r['weight_decay_rule'] == 'paper' else None
                    if f is None:
                        continue
                    x = dict(e, weight_decay_rule=w, weight_decay=float(f"{r['weight_decay'] / f:.12g}"))
                    if run_key(x) not in seen:
                        seen.add(run_key(x))
                        out.append(x)
    return out


def select(rows, cfg, assigned=None):
    """The rows to summarise and draw, expanded. After a sweep (assigned=None): the grid cfg describes. For
    --plot, only the keys the command line or config file set filter (assigned); otherwise a CSV is drawn
    whole, at its most common run length."""
    def given(k):
        return assigned is None or k in assigned
    run = run_settings(cfg)
    labels = {k: csv_list(cfg[c]) for k, c in [('adamw', 'adamw_params'), ('sgd', 'sgd_params'),
              ('depth_rule', 'depth_rule'), ('weight_decay_rule', 'weight_decay_rule')] if given(c)}
    rows = expand(rows, int(run['base_width']), int(run['base_depth']), labels)
    steps = [r['steps'] for r in rows]
    length = cfg['max_iters'] if given('max_iters') and cfg['max_iters'] else max(set(steps), key=steps.count, default=0)
    keep = {k: csv_list(cfg[k], float) for k in HPARAMS + ['weight_decay']}
    lists = {'width': csv_list(cfg['widths'], int), 'n_layer': csv_list(cfg['n_layer'], int),
             'seed': csv_list(cfg['seeds'], int), 'depth_rule': csv_list(cfg['depth_rule']),
             'weight_decay_rule': csv_list(cfg['weight_decay_rule']), 'optimizer': csv_list(cfg['optimizers'])}
    keys = {'width': 'widths', 'seed': 'seeds', 'optimizer': 'optimizers'}

    def ok(r):
        if r['steps'] != length:
            return False
        if given(f"{r['optimizer']}_params") and r['parametrization'] not in csv_list(cfg[f"{r['optimizer']}_params"]):
            return False
        if r['optimizer'] == 'adamw' and 'weight_decay' != cfg['axis'] and given('weight_decay') and \
                not any(math.isclose(r['weight_decay'], v) for v in keep['weight_decay']):
            return False
        if any(k != cfg['axis'] and given(keys.get(k, k)) and r[k] not in v
               and not (k == 'weight_decay_rule' and rule_free(r)) for k, v in lists.items()):
            return False
        return all(h == cfg['axis'] or not given(h) or any(math.isclose(r[h], v) for v in keep[h]) for h in HPARAMS)
    return [r for r in rows if ok(r)]


# ------------------------------------------------------------------------------------------------
# tuning the base values at the base width, one axis at a time with the LR

def tune(cfg):
    """For each key in cfg['tune'], in order: sweep the LR x that key's candidates, the keys not yet tuned at
    the middle of their lists, and keep the candidate whose fitted optimum has the lowest loss. Then write the
    values and the fitted LR as a config file that train.py and sweep.py take at any width."""
    axes = csv_list(cfg['tune'])
    for h in axes:
        if h not in HPARAMS + ['weight_decay']:
            raise SystemExit(f"error: tune: {h!r} is not one of {', '.join(HPARAMS + ['weight_decay'])}")
    chosen = {h: csv_list(cfg[h], float)[len(csv_list(cfg[h])) // 2] for h in axes}
    report = []
    for h in axes:
        stage = dict(cfg, axis='lr', **{k: str(v) for k, v in chosen.items() if k != h})
        sweep(stage)
        panel = next(iter(cells(select(load_results(cfg['out']), stage), 'lr').values()))
        fits, i = {}, others('lr').index(h)  # where h sits in each run's 'others' tuple
        for v in csv_list(cfg[h], float):
            sub = {k: {x: {o: bs for o, bs in st.items() if math.isclose(o[i], v)} for x, st in xs.items()}
                   for k, xs in panel.items()}
            seeds = csv_list(cfg['seeds'], int)
            fits[v] = next(iter(panel_optima(sub, seeds).values()), (float('nan'), float('inf'), True))
        chosen[h] = min(fits, key=lambda v: fits[v][1])
        report.append(f"{h}: {', '.join(f'{v:g} -> {fits[v][1]:.4f} at 2^{fits[v][0]:.2f}' for v in fits)}"
                      f"{list_edge(list(fits), chosen[h], h)}")
        print(f"\ntune {h}: {report[-1]}; keep {chosen[h]:g}", flush=True)
    lr_log2, loss, edge = fits[chosen[axes[-1]]]
    if edge:
        print("warning: the LR optimum is at the grid's edge: widen adamw_lrs and run again")
    values = dict(learning_rate=float(f"{2 ** lr_log2:.3g}"), **{h: chosen[h] for h in axes})
    if cfg['tuned_out']:
        write_tuned(cfg, values, report, loss)
    return values


def list_edge(values, best, h):
    """A note when the best of three or more candidates is the first or last: the optimum may lie beyond."""
    if len(values) < 3 or best not in (min(values), max(values)):
        return ''
    return f" (the best is the list's {'smallest' if best == min(values) else 'largest'}: extend {h} and tune again)"


def write_tuned(cfg, values, report, loss):
    lines = [f"# Base hyper-parameters tuned at the base width ({cfg['base_width']}) for data/{cfg['dataset']}; "
             "μP carries them unchanged to every width.",
             f"# Written by `python sweep.py {' '.join(sys.argv[1:])}` from {cfg['out']}: the LR and one key at a "
             f"time, {len(csv_list(cfg['seeds']))} seed(s), runs of {cfg['max_iters'] or 'one epoch of'} steps x "
             f"{cfg['batch_size']} x {cfg['block_size']} tokens; fitted best val loss {loss:.4f}.",
             *[f"#   {line}" for line in report],
             f"dataset = {cfg['dataset']!r}", f"base_width = {cfg['base_width']}",
             *[f"{k} = {v!r}" for k, v in values.items()]]
    os.makedirs(os.path.dirname(os.path.abspath(cfg['tuned_out'])), exist_ok=True)
    with open(cfg['tuned_out'] + '.tmp', 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.replace(cfg['tuned_out'] + '.tmp', cfg['tuned_out'])
    print(f"wrote {cfg['tuned_out']}: {values}")


def main(argv=None):
    from configurator import ConfigError, apply_config
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = dict(DEFAULTS)
    if '--plot' in argv:  # a bare flag, besides --plot=True
        argv.remove('--plot')
        cfg['plot'] = True
    try:
        assigned = apply_config(argv, cfg)
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    check_grid(cfg)
    if cfg['plot']:
        rows = select(load_results(cfg['out'], cfg['at_step']), cfg, assigned)
        if not rows and cfg['at_step']:
            raise SystemExit(f"error: no run in {cfg['out']} recorded its val loss at step {cfg['at_step']}")
        summary = summarize(rows, cfg['axis'], cfg['learning_rate'])
        return summary if cfg['at_step'] else plot(rows, cfg['axis'], cfg['out'], run_settings(cfg), cfg['note'], summary,
                                                   cfg['learning_rate'])
    t0 = time.time()
    if cfg['tune']:
        tune(cfg)
    else:
        sweep(cfg)
        summarize(select(load_results(cfg['out']), cfg), cfg['axis'], cfg['learning_rate'])
    print(f"\ntotal wall time {(time.time() - t0) / 60:.1f} min")


if __name__ == '__main__':
    main()
