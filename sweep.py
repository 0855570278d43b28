"""
Learning-rate transfer across widths: SP vs μP, AdamW vs SGD, on one GPU (the paper's central claim).

A grid of widths x learning rates x parametrizations x optimizers (x base hyper-parameters), each run a
short train.py run: the same batches, schedule, step and evaluation (training.py), the same seed
everywhere. Every finished run appends one row to the results CSV, flushed at once: a re-run skips what
is done, an interrupted sweep loses nothing. Several worker processes share the GPU; each keeps its
model (compiled once) and re-initialises it in place from one run to the next.

    python sweep.py                              # the quick default grid (character level, 2 layers)
    python sweep.py config/sweep_paper.py        # the paper's architecture (8 layers, GPT-2 BPE, T 512)
    python sweep.py --plot [--out=...]           # figure + per-panel optimum and its spread, from the CSV
                                                 # (all of it, seeds averaged, unless keys select a part)
    python sweep.py --widths=256,1024 --output_mult=1,4,16 --axis=output_mult --adamw_lrs=-8
    python sweep.py --help                       # every key and its value

Learning-rate grids are log2 exponents: '-12:-5' is 2^-12, 2^-11, ..., 2^-5; '-12:-5:0.5' adds half
steps; '-12,-9,-6' lists them. The LR is the base LR: mup.py's per-group multipliers apply on top, so
under μP (and at the base width under SP) it is the LR of the width-independent groups.

Base hyper-parameters (mup.BASE_HPARAMS: output_mult, init_std, embed_lr_mult, gate_lr_mult) take comma lists of plain
values; each list is an axis of the grid. `axis` says which one the figure and the summary put on x
(the best over the other axes is taken at each x); the optimum of that axis per width is the transfer test.

Parametrizations: 'sp', 'mup' (the paper's rules), 'mup_fixed_fanout' (SGD gates m^-1, scalars m^0), and
'mup_nogdn' (μP without the GDN gate/scalar rules). At the base width they are one model with one set of
LRs (tested), so only SP is trained there and its row stands for every μP variant too.

Each row also records the median pre-clip gradient norm, the fraction of steps clipped, and (with
eval_interval) the validation loss along the run, to tell when the ranking of widths settles.
"""
import csv
import math
import os
import sys
import time

import mup

HPARAMS = list(mup.BASE_HPARAMS)
CSV_COLUMNS = ['width', 'lr', 'parametrization', 'optimizer', 'seed', 'steps', *HPARAMS, 'tokens',
               'final_train_loss', 'final_val_loss', 'diverged', 'grad_norm_median', 'clip_frac',
               'val_curve', 'seconds']

DEFAULTS = dict(
    # output
    out='assets/lr_sweep.csv',   # results CSV; its run settings go to <out stem>_config.csv beside it
    plot=False,                  # --plot: draw <out stem>.png from the CSV and print the optima (no training)
    axis='lr',                   # x of the figure and the summary: 'lr' or a base hyper-parameter
    # data
    dataset='shakespeare_char',  # char level: vocab 84, so the width-scaled hidden layers dominate
    data_dir='data',
    # grid
    widths='128,256,512,1024',
    optimizers='adamw,sgd',
    adamw_params='sp,mup',
    sgd_params='sp,mup,mup_fixed_fanout',
    adamw_lrs='-12:-5',          # log2 of the base LR
    sgd_lrs='-6:1',
    seeds='1337',
    output_mult='2',             # base hyper-parameters at the base width (comma lists: grid axes); 2: the
                                 # base width's best for this grid (README, "The quick default")
    init_std='0.02',
    embed_lr_mult='1',
    gate_lr_mult='1',
    # model
    n_layer=2,                   # depth does not enter the width rules; 2 keeps the default grid short
    n_head=6,
    base_width=256,
    kernel_backend='',           # '' = best available (Triton on CUDA), 'torch' or 'triton'
    fused=True,                  # the fused projections, conv and cross-entropy (model.GDNConfig.fused), as
                                 # train.py; the CSVs in assets/ made before commit 9e1a1f0 ran with False
                                 # (same math within bf16 noise, as compiled vs eager: BENCH.md, run 6)
    # training (each run: train.py's keys and meaning)
    max_iters=200,
    batch_size=32,
    block_size=256,
    warmup_iters=20,             # linear warmup, then cosine to min_lr at max_iters (training.lr_at)
    min_lr=5e-5,
    weight_decay=0.1,            # AdamW only; the paper's SGD runs have none
    beta1=0.9,
    beta2=0.95,
    momentum=0.98,               # SGD, Nesterov: the paper's (made for 20k steps; on this 200-step grid the base
                                 # width prefers 0.9: config/sweep_quick_momentum09.py, README "The quick default")
    grad_clip=1.0,               # 0 = no clipping
    eval_iters=10,               # fixed batches for the final train and val loss
    eval_interval=0,             # also record the val loss every this many steps (0: only at the end)
    diverge_factor=1.5,          # diverged: loss not finite, or above this factor x the step-0 loss
    check_interval=10,           # how often (steps) the loss is read back to check for divergence
    # system
    workers=8,                   # processes sharing the device; 0 = run in this process
    gpu_mem_gb=0.0,              # the runs in flight together stay under this (0: 90% of the device's memory)
    device='',                   # '' = cuda if available, else cpu
    dtype='',                    # '' = bfloat16 on CUDA, float32 elsewhere
    compile=True,                # torch.compile each worker's model once (CUDA only), reused across runs
    max_runs=0,                  # stop after this many new runs (0 = all)
)
# what must agree between a results CSV and the settings that extend it (the CSV rows carry the rest)
RUN_KEYS = ['dataset', 'n_layer', 'n_head', 'base_width', 'batch_size', 'block_size', 'warmup_iters',
            'min_lr', 'weight_decay', 'beta1', 'beta2', 'momentum', 'grad_clip', 'eval_iters',
            'diverge_factor']
LABELS = {'sp': 'SP', 'mup': 'μP (paper)', 'mup_fixed_fanout': 'μP, fixed-fan-out gates',
          'mup_nogdn': 'μP w/o GDN corrections', 'adamw': 'AdamW', 'sgd': 'SGD (Nesterov)',
          'lr': 'learning rate', 'output_mult': 'output multiplier', 'init_std': 'init std',
          'embed_lr_mult': 'embedding LR multiplier', 'gate_lr_mult': 'gate LR multiplier'}


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


def grid(cfg):
    """Every run of the sweep as a dict, the most expensive (widest) first so the workers finish together."""
    runs = []
    hp_values = {h: csv_list(cfg[h], float) for h in HPARAMS}
    for width in sorted(csv_list(cfg['widths'], int), reverse=True):
        for opt in csv_list(cfg['optimizers']):
            if opt not in mup.OPTIMIZERS:
                raise SystemExit(f"error: optimizers: {opt!r} is not 'adamw' or 'sgd'")
            params = csv_list(cfg[f'{opt}_params'])
            for param in params:
                if param not in mup.PARAMETRIZATIONS:
                    raise SystemExit(f"error: {opt}_params: {param!r} is not one of {list(mup.PARAMETRIZATIONS)}")
            if width == cfg['base_width']:  # one model there: SP's row stands for every μP variant
                params = ['sp']
            for param in params:
                for e in parse_exponents(cfg[f'{opt}_lrs']):
                    for hp in hp_combinations(hp_values):
                        for seed in csv_list(cfg['seeds'], int):
                            runs.append(dict(width=width, lr=2.0 ** e, parametrization=param, optimizer=opt,
                                             seed=seed, steps=cfg['max_iters'], **hp))
    return runs


def hp_combinations(values):
    combos = [{}]
    for h in HPARAMS:
        combos = [dict(c, **{h: v}) for c in combos for v in values[h]]
    return combos


def run_key(r):
    return (int(r['width']), round(math.log2(float(r['lr'])), 6), r['parametrization'], r['optimizer'],
            int(r['seed']), int(r['steps']),
            *(round(float(r.get(h) or mup.BASE_HPARAMS[h]), 9) for h in HPARAMS))


def config_path(out):
    return os.path.splitext(out)[0] + '_config.csv'


def read_rows(out):
    if not os.path.exists(out):
        return []
    with open(out, newline='') as f:
        return [r for r in csv.DictReader(f) if r.get('diverged') in ('True', 'False')]  # skip a torn line


def check_run_config(cfg):
    """The CSV's rows only make sense together if they share these settings: keep them beside it."""
    path = config_path(cfg['out'])
    want = {k: str(cfg[k]) for k in RUN_KEYS}
    if os.path.exists(path):
        with open(path, newline='') as f:
            have = {r['key']: r['value'] for r in csv.DictReader(f)}
        differ = [f"{k}: {have.get(k)!r} there, {want[k]!r} now" for k in RUN_KEYS if have.get(k) != want[k]]
        if differ and read_rows(cfg['out']):
            raise SystemExit(f"error: {cfg['out']} was made with other settings ({path}):\n  "
                             + "\n  ".join(differ) + "\nuse those settings or another --out")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['key', 'value'])
        w.writerows(want.items())


def train_py_args(cfg, r):
    """The `python train.py` arguments that make the same run as sweep row r (tests/test_training.py)."""
    wd = 0.0 if r['optimizer'] == 'sgd' else cfg['weight_decay']
    keys = dict(dataset=cfg['dataset'], data_dir=cfg['data_dir'], n_layer=cfg['n_layer'], n_head=cfg['n_head'],
                base_width=cfg['base_width'], batch_size=cfg['batch_size'], block_size=cfg['block_size'],
                width=r['width'], parametrization=r['parametrization'], optimizer=r['optimizer'],
                learning_rate=r['lr'], seed=r['seed'], max_iters=r['steps'], lr_decay_iters=r['steps'],
                warmup_iters=cfg['warmup_iters'], min_lr=cfg['min_lr'], weight_decay=wd, beta1=cfg['beta1'],
                beta2=cfg['beta2'], momentum=cfg['momentum'], grad_clip=cfg['grad_clip'],
                eval_iters=cfg['eval_iters'], eval_interval=r['steps'], fused=cfg['fused'],
                **{h: r[h] for h in HPARAMS})
    return [f'--{k}={v}' for k, v in keys.items()]


# ------------------------------------------------------------------------------------------------
# one run (in a worker process, or in this one)

class Trainer:
    """Holds the device, the data (on the device) and the model of one worker; trains one run at a time
    through training.py, as train.py does."""

    def __init__(self, cfg):
        import json
        from contextlib import nullcontext

        import numpy as np
        import torch
        from model import padded_vocab
        from prepare_data import ensure_prepared, load_split
        self.cfg, self.torch = cfg, torch
        self.device = cfg['device'] or ('cuda' if torch.cuda.is_available() else 'cpu')
        self.device_type = 'cuda' if self.device.startswith('cuda') else self.device.split(':')[0]
        dtype = cfg['dtype'] or ('bfloat16' if self.device_type == 'cuda' else 'float32')
        ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
        self.autocast = nullcontext() if ptdtype == torch.float32 else torch.autocast(self.device_type, dtype=ptdtype)
        if ptdtype == torch.float16:
            raise SystemExit("error: sweep.py runs bfloat16 or float32 (float16 needs train.py's GradScaler)")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        data_dir = ensure_prepared(cfg['dataset'], cfg['data_dir'])
        with open(os.path.join(data_dir, 'meta.json')) as f:
            self.vocab_size = padded_vocab(json.load(f)['vocab_size'])
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
            # drop the old model's compiled graphs: they share GDN.forward's cache, and after 8 of them
            # (recompile_limit: 4 models x train/eval) dynamo silently runs every later model eagerly
            self.torch._dynamo.reset()
            c = self.cfg
            raw = GDN(GDNConfig(width=r['width'], n_layer=c['n_layer'], n_head=c['n_head'],
                                vocab_size=self.vocab_size, parametrization=r['parametrization'],
                                base_width=c['base_width'], output_mult=r['output_mult'],
                                kernel_backend=c['kernel_backend'], fused=c['fused'])).to(self.device)
            self.raw = raw
            self.fwd = self.torch.compile(raw) if c['compile'] and self.device_type == 'cuda' else raw
            self.model_key = key
        return self.raw, self.fwd

    def initialise(self, raw, r):
        """reset_parameters(seed), drawn once per model, seed, parametrization and base hyper-parameters
        (all the init depends on) and copied for the other LRs: the draws run on the CPU, 0.5 s at width
        1024 with GPT-2's vocabulary, an eighth of a 150-step run (BENCH.md run 9)."""
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
        # the μP variants are one network (same init, same forward); they differ in optimizer groups, and
        # the base hyper-parameters but output_mult (part of the model's key) only in the init and the
        # groups: set them all on the reused model
        raw.config.parametrization = r['parametrization']
        for h in HPARAMS:
            setattr(raw.config, h, r[h])
        self.initialise(raw, r)
        raw.train()
        sgd = r['optimizer'] == 'sgd'
        optim = raw.configure_optimizer(r['optimizer'], r['lr'], 0.0 if sgd else c['weight_decay'],
                                        (c['beta1'], c['beta2']), c['momentum'], self.device_type)
        batches = Batches(self.data, c['batch_size'], c['block_size'], r['seed'], self.device)
        steps, diverged, init_loss, last = r['steps'], False, None, float('nan')
        losses = torch.zeros(steps, device=self.device)
        norms = torch.zeros(steps, device=self.device)
        curve, done = [], 0
        for it in range(steps):
            lr = lr_at(it, r['lr'], c['warmup_iters'], steps, c['min_lr'])
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
        return dict(r, tokens=done * c['batch_size'] * c['block_size'], final_train_loss=train_loss,
                    final_val_loss=val_loss, diverged=diverged, grad_norm_median=n.median().item(),
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
    return (r['width'], r['parametrization'] == 'sp', float(r['output_mult']))


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
    """A worker process: runs the jobs the driver sends until it gets None; reports each result."""
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


def mem_estimate_gb(cfg, width, vocab_size):
    """Device memory of one run, from the model and batch it builds (bf16 autocast, Triton kernel):
    fp32 weights, grads and AdamW moments (16 bytes a parameter); activations kept for the backward,
    ~160 bytes per token, layer and unit of width (6.7 GB measured on an H100 for width 1024, 4 layers,
    32 x 256 tokens, with the heavier PyTorch kernel: an upper bound); the logits, ~14 bytes per token
    and vocabulary entry (bf16 logits, their fp32 copy, softmax and gradient), or with `fused` 2 (their
    bf16 gradient, kept for the backward) plus, on the torch path, one fp32 chunk of them (model.CE_CHUNK
    logits, ~12 bytes each; the Triton path writes the gradient in place); and the CUDA context and
    the compiler's workspace, ~1.5 GB. Measured peaks replace it once a run of that width has finished."""
    from model import CE_CHUNK, GDNConfig
    c = GDNConfig(width=width, n_head=cfg['n_head'])  # the model's own head and MLP sizes
    d, L = width, cfg['n_layer']
    params = vocab_size * d + L * d * (c.n_head * (2 * c.head_k + 3 * c.head_v) + 3 * c.mlp_hidden)
    tokens = cfg['batch_size'] * cfg['block_size']
    logits = tokens * vocab_size * (2 if cfg['fused'] else 14)
    logits += 12 * min(tokens * vocab_size, CE_CHUNK) if cfg['fused'] else 0
    return 1.5 + (16 * params + 160 * tokens * L * d + logits) / 2**30


# ------------------------------------------------------------------------------------------------
# the sweep driver: the only writer of the CSV

def fmt_lr(lr):
    return f"2^{math.log2(lr):g}"


def upgrade_csv(out):
    """Rewrite a results CSV in today's columns, a missing base hyper-parameter at its default (atomic)."""
    with open(out, newline='') as f:
        rows = list(csv.DictReader(f))
    with open(out + '.tmp', 'w', newline='') as f:
        w = csv.DictWriter(f, CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] if k in r else mup.BASE_HPARAMS[k] for k in CSV_COLUMNS})
    os.replace(out + '.tmp', out)


class ResultWriter:
    def __init__(self, out):
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        new = not os.path.exists(out) or os.path.getsize(out) == 0
        if not new:
            with open(out, newline='') as f:
                header = next(csv.reader(f), [])
            if header != CSV_COLUMNS and set(header) | set(HPARAMS) == set(CSV_COLUMNS):
                upgrade_csv(out)  # made before a base hyper-parameter existed: add its column (its default)
            elif header != CSV_COLUMNS:  # appended rows would not line up with its columns
                raise SystemExit(f"error: {out} has other columns (an older sweep.py made it): use another --out")
            with open(out, 'rb') as f:  # a torn last line (the process killed mid-write) would glue onto the next row
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b'\n'
            if torn:
                with open(out, 'a') as f:
                    f.write('\n')
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


def device_memory_gb(cfg):
    if cfg['gpu_mem_gb']:
        return cfg['gpu_mem_gb']
    import torch
    device = cfg['device'] or ('cuda' if torch.cuda.is_available() else 'cpu')
    if not device.startswith('cuda'):
        return float('inf')
    return 0.9 * torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30


def vocab_of(cfg):
    import json
    from model import padded_vocab
    from prepare_data import ensure_prepared
    with open(os.path.join(ensure_prepared(cfg['dataset'], cfg['data_dir']), 'meta.json')) as f:
        return padded_vocab(json.load(f)['vocab_size'])


def sweep(cfg):
    check_run_config(cfg)
    runs = grid(cfg)
    done = {run_key(r) for r in read_rows(cfg['out'])}
    todo = [r for r in runs if run_key(r) not in done]
    if cfg['max_runs']:
        todo = todo[:cfg['max_runs']]
    n_done = sum(run_key(r) in done for r in runs)
    print(f"sweep: {len(runs)} runs in the grid, {n_done} already in {cfg['out']}, {len(todo)} to run now; "
          f"{cfg['workers'] or 'no'} worker processes")
    if not todo:
        return 0
    vocab = vocab_of(cfg)  # prepares the data once, before the workers start
    budget = device_memory_gb(cfg)
    estimate = {w: mem_estimate_gb(cfg, w, vocab) for w in {r['width'] for r in todo}}
    writer = ResultWriter(cfg['out'])
    t_start, n, tokens = time.time(), 0, 0
    wave = {}  # time and tokens when the first wave of runs (one per worker: each compiles) had finished
    cost = {r['width']: r['width'] ** 2 + r['width'] * vocab / 8 for r in todo}  # ~ FLOPs per token
    total = left = sum(cost[r['width']] for r in todo)

    def report(row, secs):
        nonlocal n, left, tokens
        writer.write(row)
        n, tokens = n + 1, tokens + row['tokens']
        if n == nw:
            wave.update(t=time.time(), tokens=tokens)
        left -= cost[row['width']]
        el = time.time() - t_start
        eta = el / max(1e-9, 1 - left / total) - el if left > 0 else 0
        status = 'DIVERGED' if row['diverged'] else f"val {row['final_val_loss']:.4f}"
        hp = ''.join(f" {h} {row[h]:g}" for h in HPARAMS if float(row[h]) != mup.BASE_HPARAMS[h])
        print(f"[{n}/{len(todo)}] width {row['width']:5d} {row['parametrization']:16s} {row['optimizer']:5s} "
              f"lr {fmt_lr(row['lr']):>6s}{hp}: train {row['final_train_loss']:.4f} {status}, grad norm "
              f"{row['grad_norm_median']:.3g} ({secs:.1f}s) | {el / 60:.1f} min, ~{eta / 60:.1f} min left, "
              f"{tokens / el:,.0f} tok/s", flush=True)

    nw = min(cfg['workers'], len(todo)) if cfg['workers'] > 0 else 1
    pool = ProcessPool(cfg, nw) if cfg['workers'] > 0 else InlinePool(cfg)
    # The driver hands out the runs, widest first, keeping the sum of their memory estimates under the
    # budget (narrow runs fill in while a wide one waits for room). A worker gets a run for the model it
    # holds when there is one (no rebuild, no recompile). A run that runs out of memory goes back to the
    # queue, its width's estimate is raised, and it waits until it has the room.
    pending, idle, busy, held = list(todo), list(range(nw)), {}, {}
    oom_count, skipped = {}, []
    try:
        while pending or busy:
            while pending and idle:
                room = budget - sum(busy.values())
                fits = [j for j, r in enumerate(pending) if estimate[r['width']] <= room]
                if not fits:
                    if busy:
                        break
                    fits = [0]  # alone on the device and still too big by the estimate: try it
                wid = idle.pop(0)
                same = [j for j in fits if model_key(pending[j]) == held.get(wid)]
                r = pending.pop((same or fits)[0])
                busy[wid] = estimate[r['width']]
                held[wid] = model_key(r)
                pool.submit(wid, r)
            wid, kind, row, info = pool.result()
            alone = len(busy) == 1
            busy.pop(wid, None)
            idle.append(wid)
            if kind == 'ok':
                secs, peak = info
                if peak:  # measured: replaces the estimate (with a margin for fragmentation)
                    estimate[row['width']] = max(1.1 * peak, 0.5 * estimate[row['width']])
                report(row, secs)
            elif kind == 'oom':
                held[wid] = None
                k = run_key(row)
                oom_count[k] = oom_count.get(k, 0) + 1
                estimate[row['width']] = max(estimate[row['width']] * 1.5, 1.0)
                if (alone and oom_count[k] >= 2) or oom_count[k] >= 4:
                    skipped.append(row)
                    print(f"out of memory {'twice with nothing else on the device' if alone else 'four times'}: width "
                          f"{row['width']} {row['parametrization']} lr {fmt_lr(row['lr'])} skipped (lower "
                          f"batch_size or block_size for it); {info}", flush=True)
                else:
                    pending.insert(0, row)
                    print(f"out of memory: width {row['width']} lr {fmt_lr(row['lr'])} goes back to the queue, "
                          f"its estimate now {estimate[row['width']]:.1f} GB", flush=True)
            else:
                raise RuntimeError(f"a worker failed{' on ' + str(row) if row else ''}:\n{info}")
    except KeyboardInterrupt:
        print(f"interrupted: {n} runs written to {cfg['out']}; run the same command again to go on")
        raise
    finally:
        pool.close()
        writer.close()
    el = time.time() - t_start
    steady = ''
    if wave and n > nw:  # the rate once every worker has its model (built, compiled), to compare with train.py's;
        # it counts the later runs whole, a slight overestimate unless each worker does several runs
        steady = f", ~{(tokens - wave['tokens']) / max(time.time() - wave['t'], 1e-9):,.0f} after the first {nw} runs"
    print(f"sweep: {n} runs in {el / 60:.1f} min -> {cfg['out']} ({tokens / max(el, 1e-9):,.0f} tokens/s in all"
          + steady + ')' + (f"; {len(skipped)} skipped for memory" if skipped else ''))
    return n


# ------------------------------------------------------------------------------------------------
# summary and plot

def load_results(out):
    rows = []
    for r in read_rows(out):
        rows.append(dict(width=int(r['width']), lr=float(r['lr']), parametrization=r['parametrization'],
                         optimizer=r['optimizer'], seed=int(r['seed']), steps=int(r['steps']),
                         val=float(r['final_val_loss']), train=float(r['final_train_loss']),
                         diverged=r['diverged'] == 'True',
                         **{h: float(r.get(h) or mup.BASE_HPARAMS[h]) for h in HPARAMS},
                         grad_norm=float(r.get('grad_norm_median') or 'nan'),
                         clip_frac=float(r.get('clip_frac') or 'nan'), curve=r.get('val_curve') or ''))
    return rows


def select(rows, cfg, assigned=None):
    """The rows to summarise and draw. After a sweep (assigned=None): the grid cfg describes, i.e. its
    optimizers, run length, seeds and base hyper-parameter values (every value of the `axis` one). For
    --plot, only the keys the command line or config file set filter (assigned); otherwise a CSV is drawn
    whole (all seeds averaged), at its most common run length."""
    def given(k):
        return assigned is None or k in assigned
    if not given('max_iters') and rows:
        steps = [r['steps'] for r in rows]
        cfg = dict(cfg, max_iters=max(set(steps), key=steps.count))
    keep = {h: csv_list(cfg[h], float) for h in HPARAMS}
    seeds = csv_list(cfg['seeds'], int)
    return [r for r in rows if r['steps'] == cfg['max_iters']
            and (not given('optimizers') or r['optimizer'] in csv_list(cfg['optimizers']))
            and (not given('seeds') or r['seed'] in seeds)
            and all(h == cfg['axis'] or not given(h) or any(math.isclose(r[h], v) for v in keep[h])
                    for h in HPARAMS)]


def with_base_rows(rows, base_width):
    """At the base width every μP variant is SP (sweep.py trains SP only there): SP's rows stand for them."""
    params = {}
    for r in rows:
        params.setdefault(r['optimizer'], set()).add(r['parametrization'])
    extra = [dict(r, parametrization=p) for r in rows if r['width'] == base_width and r['parametrization'] == 'sp'
             for p in params[r['optimizer']] - {'sp'}]
    have = {(r['optimizer'], r['parametrization'], r['width']) for r in rows}
    return rows + [r for r in extra if (r['optimizer'], r['parametrization'], r['width']) not in have]


def panels(rows, axis='lr', base_width=None):
    """{(optimizer, parametrization): {width: {x: (val loss, diverged)}}}, x the value of `axis`. The loss
    of a setting is its mean over seeds (nan if any seed diverged: that setting is not usable there);
    at each x the best setting of the other axes is taken."""
    cells = {}
    for r in with_base_rows(rows, base_width):
        others = tuple(r[h] for h in ['lr', *HPARAMS] if h != axis)
        cells.setdefault((r['optimizer'], r['parametrization']), {}).setdefault(r['width'], {}) \
             .setdefault(r[axis], {}).setdefault(others, []).append(r)
    out = {}
    for key, widths in cells.items():
        for w, xs in widths.items():
            for x, settings in xs.items():
                vals = [(sum(r['val'] for r in rs) / len(rs) if not any(r['diverged'] for r in rs) else float('nan'),
                         any(r['diverged'] for r in rs)) for rs in settings.values()]
                finite = [v for v, _ in vals if math.isfinite(v)]
                out.setdefault(key, {}).setdefault(w, {})[x] = \
                    (min(finite), False) if finite else (float('nan'), any(d for _, d in vals))
    order = {(o, p): i for i, (o, p) in enumerate((o, p) for o in mup.OPTIMIZERS for p in mup.PARAMETRIZATIONS)}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], 99)))


def optimum(cells):
    """(best x, best loss, at grid edge) over the finite cells of one width, or None."""
    finite = {x: v for x, (v, _) in cells.items() if math.isfinite(v)}
    if not finite:
        return None
    x = min(finite, key=finite.get)
    return x, finite[x], len(cells) > 1 and x in (min(cells), max(cells))


def fmt_x(axis, x):
    return fmt_lr(x) if axis == 'lr' else f"{x:g}"


def run_settings(cfg):
    """The settings a results CSV was made with (its _config.csv), else cfg's."""
    run = {k: str(cfg[k]) for k in RUN_KEYS}
    if os.path.exists(config_path(cfg['out'])):
        with open(config_path(cfg['out']), newline='') as f:
            run.update({r['key']: r['value'] for r in csv.DictReader(f)})
    return run


def summarize(rows, axis='lr', base_width=None):
    """Print, per panel, the optimum of `axis` at each width, its spread and whether wider is better; return it."""
    summary = {}
    for (opt, param), widths in panels(rows, axis, base_width).items():
        print(f"\n{LABELS[opt]}, {LABELS[param]}:")
        best = {}
        for w in sorted(widths):
            o = optimum(widths[w])
            nd = sum(d for _, d in widths[w].values())
            if o is None:
                print(f"  width {w:5d}: every run diverged")
                continue
            best[w] = o
            print(f"  width {w:5d}: optimum {axis} {fmt_x(axis, o[0]):>7s}{f' = {o[0]:.3g}' if axis == 'lr' else ''}, "
                  f"val loss {o[1]:.4f}{'  (at the grid edge)' if o[2] else ''}{f', {nd} diverged' if nd else ''}")
        if len(best) >= 2:
            xs = [b[0] for b in best.values()]
            spread = max(xs) / min(xs)
            ws = sorted(best)
            trend = ' -> '.join(fmt_x(axis, best[w][0]) for w in ws)
            monotone = all(best[a][1] > best[b][1] for a, b in zip(ws, ws[1:]))
            print(f"  optimum across widths {ws[0]}..{ws[-1]}: {trend}; spread x{spread:g} "
                  f"({math.log2(spread):g} steps of x2); wider better at the optimum: "
                  f"{'yes' if monotone else 'no'} ({', '.join(f'{best[w][1]:.4f}' for w in ws)})")
            summary[(opt, param)] = dict(best=best, spread=spread, wider_better=monotone)
    return summary


def plot(cfg, rows):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    axis = cfg['axis']
    run = run_settings(cfg)
    data = panels(rows, axis, int(run['base_width']))
    if not data:
        raise SystemExit(f"error: no results in {cfg['out']} to plot")
    opts = [o for o in mup.OPTIMIZERS if any(k[0] == o for k in data)]
    ncol = max(sum(k[0] == o for k in data) for o in opts)
    fig, axes = plt.subplots(len(opts), ncol, figsize=(4.6 * ncol, 3.8 * len(opts)), squeeze=False)
    all_widths = sorted({w for ws in data.values() for w in ws})
    cmap = plt.get_cmap('viridis')
    color = {w: cmap(i / max(1, len(all_widths) - 1) * 0.9) for i, w in enumerate(all_widths)}
    for i, o in enumerate(opts):
        keys = [k for k in data if k[0] == o]
        for j in range(ncol):
            ax = axes[i][j]
            if j >= len(keys):
                ax.axis('off')
                continue
            widths = data[keys[j]]
            finite = [v for ws in widths.values() for v, _ in ws.values() if math.isfinite(v)]
            lo = min(finite, default=0)
            top = min(max(finite, default=lo + 1), lo + 1.0) + 0.05
            for w in sorted(widths):
                cells = widths[w]
                xs = sorted(cells)
                ax.plot([math.log2(x) for x in xs], [cells[x][0] for x in xs], '-o', ms=3, color=color[w], label=f'{w}')
                dx = [math.log2(x) for x in xs if cells[x][1]]
                ax.plot(dx, [top - 0.02] * len(dx), 'x', color=color[w], ms=6)
                b = optimum(cells)
                if b:
                    ax.plot([math.log2(b[0])], [b[1]], '*', ms=14, color=color[w], mec='k', mew=0.6, zorder=5)
            ax.set_ylim(lo - 0.03, top)
            ax.set_title(f'{LABELS[o]}, {LABELS[keys[j][1]]}', fontsize=10)
            ax.set_xlabel(f'log2 {LABELS[axis]}')
            ax.set_ylabel('final val loss')
            ax.grid(alpha=0.3)
            ax.legend(title='width', fontsize=8, title_fontsize=8)
    steps = sorted({r['steps'] for r in rows})
    clip = f"clip {run['grad_clip']}" if float(run['grad_clip']) else 'no clipping'
    if any(r['optimizer'] == 'sgd' for r in rows):
        clip += f", SGD momentum {run['momentum']}"
    fixed = [f"{h} {next(iter({r[h] for r in rows})):g}" for h in HPARAMS
             if h != axis and len({r[h] for r in rows}) == 1 and next(iter({r[h] for r in rows})) != mup.BASE_HPARAMS[h]]
    fig.suptitle(f"GDN, {run['n_layer']} layers, {run['dataset']}, {'/'.join(map(str, steps))} steps "
                 f"of {run['batch_size']}x{run['block_size']} tokens, {clip}, base width {run['base_width']}"
                 f"{', ' + ', '.join(fixed) if fixed else ''}  (* optimum, x diverged)", fontsize=10)
    fig.tight_layout()
    stem = os.path.splitext(cfg['out'])[0]
    png = stem + ('' if axis == 'lr' or stem.endswith(axis) else f'_{axis}') + '.png'
    fig.savefig(png, dpi=130)
    plt.close(fig)
    print(f"\nwrote {png}")
    return png


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
    if cfg['axis'] not in ('lr', *HPARAMS):
        raise SystemExit(f"error: axis={cfg['axis']!r}: use 'lr' or one of {', '.join(HPARAMS)}")
    if cfg['plot']:
        rows = select(load_results(cfg['out']), cfg, assigned)
        summarize(rows, cfg['axis'], int(run_settings(cfg)['base_width']))
        return plot(cfg, rows)
    t0 = time.time()
    sweep(cfg)
    summarize(select(load_results(cfg['out']), cfg), cfg['axis'], cfg['base_width'])
    print(f"\ntotal wall time {(time.time() - t0) / 60:.1f} min")


if __name__ == '__main__':
    main()
