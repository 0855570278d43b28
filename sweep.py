"""
Learning-rate transfer across widths: SP vs μP, AdamW vs SGD, on one GPU (the paper's central claim).

A grid of widths x learning rates x parametrizations x optimizers, each run short (warmup + cosine,
like train.py), the same seed and the same batches everywhere. Every finished run appends one row to
the results CSV, flushed at once: a re-run skips what is done, an interrupted sweep loses nothing.
Several worker processes share the GPU; each keeps its models and re-initialises them in place
(`model.reset_parameters()`) from one learning rate to the next.

    python sweep.py                         # the default grid: 160 runs, 7.2 min on one H100, then the summary
    python sweep.py --plot                  # panels + per-panel optimum LR and its spread, from the CSV
    python sweep.py --widths=128,256 --adamw_lrs=-10:-6 --optimizers=adamw --workers=4
    python sweep.py --help                  # every key and its value

Learning-rate grids are log2 exponents: '-12:-5' is 2^-12, 2^-11, ..., 2^-5; '-12:-5:0.5' adds half
steps; '-12,-9,-6' lists them. The LR is the base LR: mup.py's per-group multipliers apply on top, so
under μP (and at the base width under SP) it is the LR of the width-independent groups.

Parametrizations: 'sp', 'mup', and for the SGD ablation 'mup_nogdn' (μP without the paper's gate and
scalar LR corrections; the same model as 'mup', other optimizer groups).

Defaults (and why): character-level Shakespeare (vocab 84, so the width-scaled matrices, not the
embedding, hold the parameters even at width 128); 2 layers (the width rules do not depend on depth,
and 2 layers keep the 160-run grid near 7 minutes on one H100 with the PyTorch kernel); 200 steps of
32 x 256 tokens, 10% warmup then cosine to 10% of the peak, clipping at 1.0, AdamW (0.9, 0.95) with
weight decay 0.1, SGD with Nesterov momentum 0.98 and no weight decay (the paper's SGD setup).
Results and the figure: assets/lr_sweep.csv, assets/lr_sweep.png.
"""
import csv
import math
import os
import sys
import time

import mup

CSV_COLUMNS = ['width', 'lr', 'parametrization', 'optimizer', 'seed', 'steps', 'tokens',
               'final_train_loss', 'final_val_loss', 'diverged']

DEFAULTS = dict(
    # output
    out='assets/lr_sweep.csv',   # results CSV; its run settings go to <out stem>_config.csv beside it
    plot=False,                  # --plot: draw <out stem>.png from the CSV and print the optima (no training)
    # data
    dataset='shakespeare_char',  # char level: vocab 84, so the width-scaled hidden layers dominate
    data_dir='data',
    # grid
    widths='128,256,512,1024',
    optimizers='adamw,sgd',
    adamw_params='sp,mup',
    sgd_params='sp,mup,mup_nogdn',
    adamw_lrs='-12:-5',          # log2 of the base LR
    sgd_lrs='-6:1',
    seeds='1337',
    # model
    n_layer=2,                   # depth does not enter the width rules; 2 keeps the default grid ~10 min
    n_head=6,
    base_width=256,
    kernel_backend='torch',      # 'torch' (the chunked PyTorch kernel), 'triton', or '' = best available
    # training (each run)
    max_iters=200,
    batch_size=32,
    block_size=256,
    warmup_frac=0.1,             # linear warmup over this fraction of max_iters, then cosine
    min_lr_ratio=0.1,            # cosine down to this fraction of the run's peak LR
    weight_decay=0.1,            # AdamW only; the paper's SGD runs have none
    beta1=0.9,
    beta2=0.95,
    momentum=0.98,               # SGD, Nesterov
    grad_clip=1.0,               # 0 = no clipping
    eval_iters=10,               # fixed batches for the final train and val loss
    diverge_factor=1.5,          # diverged: loss not finite, or above this factor x the step-0 loss
    check_interval=10,           # how often (steps) the loss is read back to check for divergence
    # system
    workers=12,                  # processes sharing the device; 0 = run in this process
    gpu_mem_gb=60.0,             # the runs in flight together stay under this (sum of estimates)
    device='',                   # '' = cuda if available, else cpu
    dtype='',                    # '' = bfloat16 on CUDA, float32 elsewhere
    compile=False,               # torch.compile each model once per worker (worth it only for long runs)
    max_runs=0,                  # stop after this many new runs (0 = all)
)
# what must agree between a results CSV and the settings that extend it (the CSV rows carry the rest)
RUN_KEYS = ['dataset', 'n_layer', 'n_head', 'base_width', 'batch_size', 'block_size', 'warmup_frac',
            'min_lr_ratio', 'weight_decay', 'beta1', 'beta2', 'momentum', 'grad_clip', 'eval_iters',
            'diverge_factor']
LABELS = {'sp': 'SP', 'mup': 'μP', 'mup_nogdn': 'μP w/o GDN corrections', 'adamw': 'AdamW',
          'sgd': 'SGD (Nesterov)'}


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
    for width in sorted(csv_list(cfg['widths'], int), reverse=True):
        for opt in csv_list(cfg['optimizers']):
            if opt not in ('adamw', 'sgd'):
                raise SystemExit(f"error: optimizers: {opt!r} is not 'adamw' or 'sgd'")
            for param in csv_list(cfg[f'{opt}_params']):
                if param not in mup.SWITCHES:
                    raise SystemExit(f"error: {opt}_params: {param!r} is not one of {list(mup.SWITCHES)}")
                for e in parse_exponents(cfg[f'{opt}_lrs']):
                    for seed in csv_list(cfg['seeds'], int):
                        runs.append(dict(width=width, lr=2.0 ** e, parametrization=param, optimizer=opt,
                                         seed=seed, steps=cfg['max_iters']))
    return runs


def run_key(r):
    return (int(r['width']), round(math.log2(float(r['lr'])), 6), r['parametrization'], r['optimizer'],
            int(r['seed']), int(r['steps']))


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


# ------------------------------------------------------------------------------------------------
# one run (in a worker process, or in this one)

class Trainer:
    """Holds the device, the data (on the device) and the models of one worker; trains one run at a time."""

    def __init__(self, cfg):
        import numpy as np
        import torch
        from model import padded_vocab
        from prepare_data import ensure_prepared, load_split
        self.cfg, self.torch = cfg, torch
        self.device = cfg['device'] or ('cuda' if torch.cuda.is_available() else 'cpu')
        self.device_type = 'cuda' if self.device.startswith('cuda') else self.device.split(':')[0]
        dtype = cfg['dtype'] or ('bfloat16' if self.device_type == 'cuda' else 'float32')
        ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
        self.autocast = (lambda: torch.autocast(self.device_type, dtype=ptdtype)) if ptdtype != torch.float32 \
            else __import__('contextlib').nullcontext
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        data_dir = ensure_prepared(cfg['dataset'], cfg['data_dir'])
        import json
        with open(os.path.join(data_dir, 'meta.json')) as f:
            meta = json.load(f)
        self.vocab_size = padded_vocab(meta['vocab_size'])
        # the whole split on the device: a batch is one gather, no host work per step
        self.data = {s: torch.from_numpy(load_split(data_dir, s)[:].astype(np.int64)).to(self.device)
                     for s in ('train', 'val')}
        self.models = {}      # (width, mup) -> (model, compiled model), the last one used
        self.offsets = {}
        self.seed = 0

    def batch(self, split, it):
        """The batch of iteration `it` (negative: the fixed eval batches); train.py's seeding, so every
        run of the sweep, whatever its width or LR, sees the same tokens in the same order."""
        torch, cfg = self.torch, self.cfg
        key = (split, it, self.seed)
        if key not in self.offsets:
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + 2 * it + (split == 'val')) % 2**63)
            ix = torch.randint(len(self.data[split]) - cfg['block_size'] - 1, (cfg['batch_size'],), generator=gen)
            self.offsets[key] = ix.to(self.device)[:, None] + torch.arange(cfg['block_size'] + 1, device=self.device)
        w = self.data[split][self.offsets[key]]
        return w[:, :-1], w[:, 1:]

    def model(self, width, mup_on):
        from model import GDN, GDNConfig
        key = (width, mup_on)
        if key not in self.models:
            self.models.clear()  # one model per worker: the driver budgets device memory per run
            if self.device_type == 'cuda':
                self.torch.cuda.empty_cache()
            c = self.cfg
            m = GDN(GDNConfig(width=width, n_layer=c['n_layer'], n_head=c['n_head'], vocab_size=self.vocab_size,
                              mup=mup_on, base_width=c['base_width'], kernel_backend=c['kernel_backend']))
            m = m.to(self.device)
            fwd = self.torch.compile(m) if c['compile'] and self.device_type == 'cuda' else m
            self.models[key] = (m, fwd)
        return self.models[key]

    def lr_at(self, it, lr):
        c = self.cfg
        warmup = int(c['warmup_frac'] * c['max_iters'])
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        ratio = (it - warmup) / max(1, c['max_iters'] - warmup)
        min_lr = c['min_lr_ratio'] * lr
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    def run(self, r):
        torch, c = self.torch, self.cfg
        self.seed = r['seed']
        mup_on, gdn_corrections = mup.SWITCHES[r['parametrization']]
        raw, model = self.model(r['width'], mup_on)
        # 'mup' and 'mup_nogdn' are the same network; the switch only selects mup.py's optimizer groups
        raw.config.gdn_corrections = gdn_corrections
        assert raw.config.parametrization == r['parametrization']
        torch.manual_seed(r['seed'])
        raw.reset_parameters()
        raw.train()
        sgd = r['optimizer'] == 'sgd'
        optim = raw.configure_optimizer(r['optimizer'], r['lr'], 0.0 if sgd else c['weight_decay'],
                                        (c['beta1'], c['beta2']), c['momentum'], self.device_type)
        steps, diverged, init_loss, last = r['steps'], False, None, float('nan')
        losses = torch.zeros(steps, device=self.device)
        done = 0
        for it in range(steps):
            lr = self.lr_at(it, r['lr'])
            for group in optim.param_groups:
                group['lr'] = lr * group['lr_mult']
            x, y = self.batch('train', it)
            with self.autocast():
                _, loss = model(x, y)
            loss.backward()
            if c['grad_clip']:
                torch.nn.utils.clip_grad_norm_(raw.parameters(), c['grad_clip'])
            optim.step()
            optim.zero_grad(set_to_none=True)
            losses[it] = loss.detach()
            done = it + 1
            if it == 0 or done % c['check_interval'] == 0 or done == steps:
                last = losses[it].item()  # the only host sync in the loop
                if it == 0:
                    init_loss = last
                if not math.isfinite(last) or last > c['diverge_factor'] * init_loss:
                    diverged = True
                    break
        train_loss = val_loss = float('nan')
        if not diverged:
            train_loss, val_loss = self.evaluate(model)
            diverged = not (math.isfinite(val_loss) and val_loss < c['diverge_factor'] * init_loss)
        else:
            train_loss = last
        return dict(r, tokens=done * c['batch_size'] * c['block_size'], final_train_loss=train_loss,
                    final_val_loss=val_loss, diverged=diverged)

    def evaluate(self, model):
        torch = self.torch
        out = []
        model.eval()
        with torch.no_grad():
            for split in ('train', 'val'):
                tot = torch.zeros((), device=self.device)
                for k in range(self.cfg['eval_iters']):
                    x, y = self.batch(split, -1 - k)
                    with self.autocast():
                        tot += model(x, y)[1].float()
                out.append(tot.item() / self.cfg['eval_iters'])
        model.train()
        return out


def worker_main(wid, cfg, jobs, results):
    """A worker process: runs the jobs the driver sends until it gets None; reports each result (or error)."""
    try:
        trainer = Trainer(cfg)
    except BaseException as e:  # noqa: BLE001 - reported to the driver, which stops the sweep
        results.put((wid, 'error', None, f"{type(e).__name__}: {e}"))
        return
    while True:
        r = jobs.get()
        if r is None:
            return
        try:
            t0 = time.time()
            out = trainer.run(r)
            results.put((wid, 'ok', out, time.time() - t0))
        except BaseException:  # noqa: BLE001
            import traceback
            results.put((wid, 'error', r, traceback.format_exc()))
            return


def mem_estimate_gb(cfg, width):
    """Device memory of one run (measured on an H100, torch kernel, bf16 autocast: 6.7 GB for width 1024,
    4 layers, 32 x 256 tokens), scaled by width x depth x tokens, plus ~0.6 GB of CUDA context."""
    return 0.6 + 6.1 * (width / 1024) * (cfg['n_layer'] / 4) * (cfg['batch_size'] * cfg['block_size'] / 8192)


# ------------------------------------------------------------------------------------------------
# the sweep driver: the only writer of the CSV

def fmt_lr(lr):
    return f"2^{math.log2(lr):g}"


class ResultWriter:
    def __init__(self, out):
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        new = not os.path.exists(out) or os.path.getsize(out) == 0
        if not new:  # a torn last line (the process killed mid-write) would glue onto the next row
            with open(out, 'rb') as f:
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
        self.w.writerow({k: (f"{row[k]:.5f}" if isinstance(row[k], float) and k.startswith('final') else row[k])
                         for k in CSV_COLUMNS})
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self):
        self.f.close()


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
    writer = ResultWriter(cfg['out'])
    t_start, n = time.time(), 0
    cost = {r['width']: r['width'] ** 2 for r in todo}
    left = sum(cost[r['width']] for r in todo)

    def report(row, secs):
        nonlocal n, left
        writer.write(row)
        n += 1
        left -= cost[row['width']]
        el = time.time() - t_start
        eta = el / max(1e-9, 1 - left / sum(cost[r['width']] for r in todo)) - el if left else 0
        status = 'DIVERGED' if row['diverged'] else f"val {row['final_val_loss']:.4f}"
        print(f"[{n}/{len(todo)}] width {row['width']:5d} {row['parametrization']:9s} {row['optimizer']:5s} "
              f"lr {fmt_lr(row['lr']):>6s}: train {row['final_train_loss']:.4f} {status} ({secs:.1f}s) | "
              f"{el / 60:.1f} min, ~{eta / 60:.1f} min left", flush=True)

    try:
        if cfg['workers'] <= 0:
            trainer = Trainer(cfg)
            for r in todo:
                t0 = time.time()
                report(trainer.run(r), time.time() - t0)
        else:
            import multiprocessing as mp
            ctx = mp.get_context('spawn')  # CUDA cannot be forked
            nw = min(cfg['workers'], len(todo))
            jobs, results = [ctx.Queue() for _ in range(nw)], ctx.Queue()
            procs = [ctx.Process(target=worker_main, args=(i, cfg, jobs[i], results), daemon=True)
                     for i in range(nw)]
            for p in procs:
                p.start()
            # the driver hands out the runs, widest first, keeping the sum of their memory estimates under
            # gpu_mem_gb (narrow runs fill in while a wide one waits for room)
            pending, idle, busy = list(todo), list(range(nw)), {}
            try:
                while pending or busy:
                    while pending and idle:
                        room = cfg['gpu_mem_gb'] - sum(busy.values())
                        fits = [j for j, r in enumerate(pending) if mem_estimate_gb(cfg, r['width']) <= room]
                        if not fits and busy:
                            break
                        r = pending.pop(fits[0] if fits else 0)
                        wid = idle.pop(0)
                        busy[wid] = mem_estimate_gb(cfg, r['width'])
                        jobs[wid].put(r)
                    wid, kind, row, info = results.get()
                    if kind == 'error':
                        raise RuntimeError(f"a worker failed{' on ' + str(row) if row else ''}:\n{info}")
                    busy.pop(wid, None)
                    idle.append(wid)
                    report(row, info)
            finally:
                for q in jobs:
                    q.put(None)
                for p in procs:
                    p.join(timeout=5)
                    if p.is_alive():
                        p.terminate()
    except KeyboardInterrupt:
        print(f"interrupted: {n} runs written to {cfg['out']}; run the same command again to go on")
        raise
    finally:
        writer.close()
    print(f"sweep: {n} runs in {(time.time() - t_start) / 60:.1f} min -> {cfg['out']}")
    return n


# ------------------------------------------------------------------------------------------------
# summary and plot

def load_results(out):
    rows = []
    for r in read_rows(out):
        rows.append(dict(width=int(r['width']), lr=float(r['lr']), parametrization=r['parametrization'],
                         optimizer=r['optimizer'], seed=int(r['seed']), steps=int(r['steps']),
                         val=float(r['final_val_loss']), train=float(r['final_train_loss']),
                         diverged=r['diverged'] == 'True'))
    return rows


def panels(rows):
    """{(optimizer, parametrization): {width: {lr: (mean val loss over seeds or nan, all diverged)}}}"""
    acc = {}
    for r in rows:
        cell = acc.setdefault((r['optimizer'], r['parametrization']), {}).setdefault(r['width'], {}) \
                  .setdefault(r['lr'], [])
        cell.append(r)
    out = {}
    for key, widths in acc.items():
        for w, lrs in widths.items():
            for lr, rs in lrs.items():
                ok = [r['val'] for r in rs if not r['diverged']]
                # a cell counts as diverged if any seed diverged: that LR is not usable at that width
                out.setdefault(key, {}).setdefault(w, {})[lr] = (
                    sum(ok) / len(ok) if len(ok) == len(rs) else float('nan'), len(ok) < len(rs))
    order = {('adamw', 'sp'): 0, ('adamw', 'mup'): 1, ('adamw', 'mup_nogdn'): 2,
             ('sgd', 'sp'): 3, ('sgd', 'mup'): 4, ('sgd', 'mup_nogdn'): 5}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], 9)))


def optimum(cells):
    """(best lr, best loss, at grid edge) over the finite cells of one width, or None."""
    finite = {lr: v for lr, (v, _) in cells.items() if math.isfinite(v)}
    if not finite:
        return None
    lr = min(finite, key=finite.get)
    return lr, finite[lr], lr in (min(cells), max(cells))


def summarize(rows):
    """Print, per panel, the optimum LR at each width, its spread and whether wider is better; return it."""
    summary = {}
    for (opt, param), widths in panels(rows).items():
        print(f"\n{LABELS[opt]}, {LABELS[param]}:")
        best = {}
        for w in sorted(widths):
            o = optimum(widths[w])
            nd = sum(d for _, d in widths[w].values())
            if o is None:
                print(f"  width {w:5d}: every run diverged")
                continue
            best[w] = o
            print(f"  width {w:5d}: optimum lr {fmt_lr(o[0]):>6s} = {o[0]:.3g}, val loss {o[1]:.4f}"
                  f"{'  (at the grid edge)' if o[2] else ''}{f', {nd} diverged' if nd else ''}")
        if len(best) >= 2:
            lrs = [b[0] for b in best.values()]
            spread = max(lrs) / min(lrs)
            ws = sorted(best)
            trend = ' -> '.join(fmt_lr(best[w][0]) for w in ws)
            monotone = all(best[a][1] > best[b][1] for a, b in zip(ws, ws[1:]))
            print(f"  optimum across widths {ws[0]}..{ws[-1]}: {trend}; spread x{spread:g} "
                  f"({math.log2(spread):g} grid steps of x2); wider better at the optimum: "
                  f"{'yes' if monotone else 'no'} "
                  f"({', '.join(f'{best[w][1]:.4f}' for w in ws)})")
            summary[(opt, param)] = dict(best=best, spread=spread, wider_better=monotone)
    return summary


def plot(cfg, rows):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    data = panels(rows)
    if not data:
        raise SystemExit(f"error: no results in {cfg['out']} to plot")
    opts = [o for o in ('adamw', 'sgd') if any(k[0] == o for k in data)]
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
            lo = min((v for ws in widths.values() for v, _ in ws.values() if math.isfinite(v)), default=0)
            hi_all = [v for ws in widths.values() for v, _ in ws.values() if math.isfinite(v)]
            top = min(max(hi_all, default=lo + 1), lo + 1.0) + 0.05
            for w in sorted(widths):
                cells = widths[w]
                lrs = sorted(cells)
                x = [math.log2(lr) for lr in lrs]
                y = [cells[lr][0] for lr in lrs]
                ax.plot(x, y, '-o', ms=3, color=color[w], label=f'{w}')
                dx = [math.log2(lr) for lr in lrs if cells[lr][1]]
                ax.plot(dx, [top - 0.02] * len(dx), 'x', color=color[w], ms=6)
                b = optimum(cells)
                if b:
                    ax.plot([math.log2(b[0])], [b[1]], '*', ms=14, color=color[w], mec='k', mew=0.6, zorder=5)
            ax.set_ylim(lo - 0.03, top)
            ax.set_title(f'{LABELS[o]}, {LABELS[keys[j][1]]}', fontsize=10)
            ax.set_xlabel('log2 learning rate')
            ax.set_ylabel('final val loss')
            ax.grid(alpha=0.3)
            ax.legend(title='width', fontsize=8, title_fontsize=8)
    steps = sorted({r['steps'] for r in rows})
    run = {k: str(cfg[k]) for k in RUN_KEYS}
    if os.path.exists(config_path(cfg['out'])):  # the settings the results were made with
        with open(config_path(cfg['out']), newline='') as f:
            run.update({r['key']: r['value'] for r in csv.DictReader(f)})
    clip = f"clip {run['grad_clip']}" if float(run['grad_clip']) else 'no clipping'
    fig.suptitle(f"LR transfer: GDN, {run['n_layer']} layers, {run['dataset']}, {'/'.join(map(str, steps))} steps "
                 f"of {run['batch_size']}x{run['block_size']} tokens, {clip}, base width {run['base_width']}  "
                 f"(* optimum, x diverged)", fontsize=10)
    fig.tight_layout()
    png = os.path.splitext(cfg['out'])[0] + '.png'
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
        apply_config(argv, cfg)
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    if cfg['plot']:
        rows = load_results(cfg['out'])
        summarize(rows)
        return plot(cfg, rows)
    t0 = time.time()
    sweep(cfg)
    summarize(load_results(cfg['out']))
    print(f"\ntotal wall time {(time.time() - t0) / 60:.1f} min")


if __name__ == '__main__':
    main()
