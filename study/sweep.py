"""
Learning-rate transfer: SP vs μP across widths (and depths), AdamW vs SGD, and the base values that μP carries.

A grid of widths x depths x learning rates x parametrizations x optimizers x base hyper-parameters x seeds
(study/grid.py), each run a short train.py run (study/run.py): the same batches, schedule, step and
evaluation (training.py). Every finished run appends its rows to the results CSV, flushed at once: a re-run
skips what is done, an interrupted sweep (Ctrl-C, a kill) loses nothing. On a GPU machine worker processes
share each of its GPUs (study/pool.py); with --ray the runs are the tasks of a Ray cluster (study/ray_pool.py,
docs/scale_out.md); on a CPU the runs go one by one in this process. It prints its plan and an estimate of
its time first, a heartbeat within each run, and a line with the ETA as each run ends; each finished run
redraws <out stem>_live.png and, asked for, writes its curves to TensorBoard or wandb (study/track.py).

    python -m study.sweep                              # the quick default grid (character level, 2 layers) -> out/
    python -m study.sweep config/sweep_paper.py        # the paper's architecture (8 layers, GPT-2 BPE, T 512)
    python -m study.sweep config/sweep_paper.py --ray=auto --tensorboard=True   # on a Ray cluster, tracked
    python -m study.sweep --plot [--out=...]           # figures + fitted optima with seed intervals, from the CSV
    python -m study.sweep --plot --at_step=500 [...]   # the optima by the val loss at step 500 (where they settle)
    python -m study.sweep --help                       # every key, its value and meaning

On a CPU, without a config file or a grid key, it runs a small grid that ends in minutes (CPU_GRID) and
says so; the published figures need a GPU. `axis` says which key the figure and the summary put on x (the
best over the other axes is taken at each x). Each curve's fitted optimum, its seed interval and the summary
are study/optima.py's; the figures study/plots.py's.
"""
import dataclasses
import os
import sys
import time

import torch

import kernel
import training
from study.grid import (ResultWriter, check_grid, check_run_config, describe, grid, load_results, read_rows,
                        run_key, run_settings, select, trained_as, trained_key, trained_run, RESULTS)
from study import track
from study.optima import summarize
from study.plots import live, plot
from study.pool import placement, sweep_devices, train_runs, workers_for
from study.run import build_model, model_config

DEFAULTS = dict(
    out='out/lr_sweep.csv',      # results CSV; its run settings go to <out stem>_config.csv beside it
    plot=False,                  # --plot: draw the figures from the CSV and print the optima (no training)
    axis='lr',                   # x of the figure and the summary: 'lr' or another grid key
    at_step=0,                   # with --plot, the summary by the val loss each run recorded at this step (0: the final)
    note='',                     # a line under the figure's title: what a panel cannot show, and why
    model='gdn',                 # 'gdn': model.py's; 'fla': flash-linear-attention's model at the same shapes (a GPU)
    dataset='shakespeare_char',  # a folder of data/ (prepare_data.py); char level: the width-scaled layers dominate
    data_dir='data',             # where the datasets are
    widths='128,256,512,1024',   # comma list: the model widths
    n_layer='2',                 # comma list: the depths (depth does not enter the width rules; 2 keeps it short)
    depth_rule='none',           # comma list of mup.DEPTH_ALPHA: 'none', 'depth_mup', 'completep'
    optimizers='adamw,sgd',      # comma list: 'adamw', 'sgd'
    adamw_params='sp,mup',       # comma list of parametrizations run under AdamW
    sgd_params='sp,mup,mup_fixed_fanout',  # comma list of parametrizations run under SGD
    adamw_lrs='-12:-5',          # log2 of the base LR under AdamW: 'lo:hi', 'lo:hi:step' or a comma list
    sgd_lrs='-6:1',              # log2 of the base LR under SGD, as adamw_lrs
    learning_rate=0.0,           # a tuned base LR (config/tuned_*.py): added to the AdamW grid and judged in the summary
    seeds='1337',                # comma list: the seeds (a seed fixes the init and the data order)
    output_mult='2',             # comma list: base logits multiplier (2: the base width's best for this grid)
    init_std='0.02',             # comma list: base init std of the matrices
    embed_lr_mult='1',           # comma list: base LR multiplier of the embedding
    gate_lr_mult='1',            # comma list: base LR multiplier of the gates and their scalars
    weight_decay='0.1',          # comma list: AdamW's λ (the paper's SGD runs have none)
    weight_decay_rule='paper',   # comma list of mup.WEIGHT_DECAY_RULES: 'paper', 'fixed_timescale', 'sqrt_width'
    n_head=6,                    # heads of every layer, at every width
    base_width=256,              # the width where μP is SP
    base_depth=8,                # the depth where a depth rule is 'none'
    kernel_backend='',           # '' = best available (Triton on CUDA), 'torch' or 'triton'
    max_iters=200,               # steps of each run (0 = one epoch of the training split)
    batch_size=32,               # sequences a micro-batch
    block_size=256,              # tokens a sequence
    gradient_accumulation_steps=1,  # micro-batches a step
    warmup_iters=20,             # linear warmup steps, then cosine to min_lr at max_iters; -1 = a tenth of the run
    min_lr=5e-5,                 # the LR at the end of the cosine
    beta1=0.9,                   # AdamW's beta1
    beta2=0.95,                  # AdamW's beta2
    momentum=0.98,               # SGD's Nesterov momentum (the paper's; 0.9 on 200 steps: config/sweep_quick_momentum09.py)
    grad_clip=1.0,               # clip the gradient norm to this (0 = no clipping)
    eval_iters=10,               # fixed batches for the final train and val loss
    eval_interval=0,             # also record the val loss every this many steps (0: only at the end)
    diverge_factor=1.5,          # diverged: loss not finite, or above this factor x the step-0 loss
    check_interval=10,           # how often (steps) the loss is read back to check for divergence
    heartbeat=15.0,              # seconds between a run's progress lines (0: none)
    workers=-1,                  # processes on each device; 0 = this process (the first device); -1 = 8 a GPU, 0 on a CPU
    gpu_mem_gb=0.0,              # the runs in flight together on a GPU stay under this (0: 90% of its memory)
    device='',                   # '' = cuda if available, else cpu
    devices='',                  # the GPUs the workers spread over: '' = every visible one, '0,2' = those; 'cpu'
    ray='',                      # run on a Ray cluster: 'auto' (the one this machine is in, else a local one) or
                                 # its address HOST:PORT; '' = this machine (docs/scale_out.md)
    tensorboard=False,           # write each run's metrics as TensorBoard events, a folder per run (offline)
    tensorboard_dir='',          # where those folders go ('' = <out stem>_tensorboard beside the CSV)
    wandb_log=False,             # also log each run to Weights & Biases (WANDB_MODE=offline: no network)
    wandb_project='mup-gdn',     # wandb's project
    live_plot=True,              # redraw <out stem>_live.png (the val loss of the runs so far) as each run ends
    dtype='',                    # '' = bfloat16 on CUDA, float32 elsewhere
    compile=True,                # torch.compile each worker's model once (CUDA only), reused across runs
    compile_mode='',             # '' or 'reduce-overhead' (CUDA graphs: for the small widths the host bounds)
    max_runs=0,                  # stop after training this many runs (0 = all)
)
# the keys that say where and how a sweep runs, not which runs: with none but these given on a CPU, CPU_GRID
WHERE_KEYS = {'out', 'plot', 'axis', 'at_step', 'note', 'data_dir', 'heartbeat', 'workers', 'gpu_mem_gb', 'device',
              'devices', 'ray', 'tensorboard', 'tensorboard_dir', 'wandb_log', 'wandb_project', 'live_plot',
              'dtype', 'compile', 'compile_mode', 'max_runs', 'kernel_backend'}
# the quick grid made small for a CPU (2 cores: about 2 minutes): AdamW, SP against μP over a 4x width range
CPU_GRID = dict(out='out/lr_sweep_cpu.csv', widths='32,64,128', base_width=32, n_layer='2', optimizers='adamw',
                adamw_lrs='-9:-4', max_iters=100, warmup_iters=10, batch_size=8, block_size=64, eval_iters=5)
# A GPU worker compiles each model it builds once (the rest of a run's time: training.pass_seconds)
COMPILE_SECONDS = 40


def run_seconds(cfg, vocab_size, dev, rate=None):
    """A function of a run: its estimated seconds on the device, its steps' and evaluations' passes timed by
    training.pass_seconds. rate: the matmul rate (measured if not given)."""
    rate = rate or training.matmul_rate(dev)
    tokens, per_token = cfg['batch_size'] * cfg['block_size'], {}

    def seconds(r):
        shape = (r['width'], r['n_layer'])
        if shape not in per_token:
            with torch.device('meta'):  # model.py's FLOPs: fla's model has the same shapes
                per_token[shape] = build_model(model_config(r, cfg, vocab_size)).flops_per_token(cfg['block_size'])
        evals = 2 + (r['steps'] // cfg['eval_interval'] if cfg['eval_interval'] else 0)
        passes = r['steps'] * cfg['gradient_accumulation_steps'] + evals * cfg['eval_iters'] / 3  # fwd+bwd's
        return passes * training.pass_seconds(per_token[shape], r['n_layer'], tokens, dev.type, rate)
    return seconds


def estimate_seconds(cfg, runs, vocab_size, dev, seconds=None, devices=1):
    """How long the runs take (run_seconds) on `devices` devices alike, with a compile for each model on a GPU
    (the workers compile at once)."""
    seconds = seconds or run_seconds(cfg, vocab_size, dev)
    total = sum(seconds(r) for r in runs)  # workers sharing one device share its FLOPs
    if dev.type == 'cuda' and cfg['compile']:
        models = {dataclasses.astuple(model_config(r, cfg, vocab_size)) for r in runs}
        total += len(models) * COMPILE_SECONDS / max(1, workers_for(cfg, dev.type))
    return total / devices


def sweep(cfg, runs=None):
    """Train the grid's runs that the CSV lacks (runs: a list of them instead of the whole grid); a run that
    stands for several labels is trained once and written once for each. Returns the number trained."""
    check_grid(cfg)
    check_run_config(cfg)
    track.check(cfg)
    if cfg['devices'] == 'cpu':
        cfg = dict(cfg, device='cpu')
    try:
        dev = training.device_setup(cfg['device'], cfg['dtype'])
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    if cfg['kernel_backend'] == 'triton' and not cfg['ray'] and not kernel.triton_runs_on(dev.type):
        raise SystemExit(f"error: kernel_backend='triton' runs on CUDA (or under TRITON_INTERPRET=1, slowly); on "
                         f"this {dev.type} use --kernel_backend=torch")
    if not cfg['ray']:
        sweep_devices(cfg, dev)  # a GPU that does not exist: one line, before anything starts
    folder, vocab = training.dataset_setup(cfg['dataset'], cfg['data_dir'])  # prepared before the workers start
    epoch = training.Batches(training.load_splits(folder), cfg['batch_size'], cfg['block_size'], 0,
                             accum=cfg['gradient_accumulation_steps']).steps_per_epoch()
    runs = grid(cfg, cfg['max_iters'] or epoch) if runs is None else runs
    writer = ResultWriter(cfg['out'])  # held till the end: a second sweep into the CSV stops at once
    try:
        rows = read_rows(cfg['out'])
        done, results = {run_key(r) for r in rows}, {trained_key(r): r for r in rows}
        missing = [r for r in runs if run_key(r) not in done]
        jobs, shared = {}, []  # trained run key -> (trained run, the labels it stands for); labels already trained
        for r in missing:
            t = trained_run(r, cfg['base_width'], cfg['base_depth'])
            if run_key(t) in results:
                shared.append((r, t, results[run_key(t)]))
            else:
                jobs.setdefault(run_key(t), (t, []))[1].append(r)
        todo = list(jobs.values())[:cfg['max_runs'] or None]
        rows_now = sum(len(ls) for _, ls in todo)
        print(f"sweep: {len(runs)} runs in the grid, {len(runs) - len(missing)} already in {cfg['out']}"
              + (f", {len(shared)} more written from the runs it holds" if shared else '')
              + f"; {len(todo)} to train now" + (f" for {rows_now} rows" if rows_now > len(todo) else '')
              + f" ({placement(cfg, dev)})", flush=True)
        for r, t, row in shared:
            writer.write(dict(r, trained_as=trained_as(r, t), **{k: row[k] for k in RESULTS}))
        if todo:
            return train(cfg, todo, writer, dev, vocab)
        return 0
    finally:
        writer.close()


def train(cfg, todo, writer, dev, vocab):
    """Train the runs of todo ([(trained run, its labels)]), writing each label's row as its run ends, then its
    trackers' events and the live figure."""
    seconds = run_seconds(cfg, vocab, dev)
    total = left = float(sum(seconds(t) for t, _ in todo))  # the ETA weighs the runs left by their estimates
    devices = 1 if cfg['ray'] or not workers_for(cfg, dev.type) else len(sweep_devices(cfg, dev))
    guess = estimate_seconds(cfg, [t for t, _ in todo], vocab, dev, seconds, devices)
    print(f"sweep: about {training.duration(guess)} (estimated from the runs' FLOPs and this device's matmul rate"
          f"{f' on {devices} alike' if devices > 1 else ''}; measured after each run)", flush=True)
    if dev.type == 'cpu' and not cfg['ray'] and guess > 3600:
        print("that grid is meant for a GPU: on a CPU, python -m study.sweep with no config runs a small one in minutes "
              "(Ctrl-C keeps the rows written)", flush=True)
    labels = {run_key(t): ls for t, ls in todo}
    t_start, n, tokens, skipped = time.time(), 0, 0, []

    def on_row(row, secs):
        nonlocal n, left, tokens
        rows = len(labels[run_key(row)])
        track.track(cfg, row)  # before the rows: a run stopped between the two is trained and tracked again
        for r in labels[run_key(row)]:
            writer.write(dict(r, trained_as=trained_as(r, row), **{k: row[k] for k in RESULTS}))
        if cfg['live_plot']:
            live(select(load_results(cfg['out']), cfg), cfg['axis'], cfg['out'], run_settings(cfg), cfg['learning_rate'])
        n, tokens, left = n + 1, tokens + row['tokens'], left - seconds(row)
        el = time.time() - t_start
        eta = el / max(1e-9, 1 - left / total) - el if left > 1e-6 * total else 0
        status = 'DIVERGED' if row['diverged'] else f"val {row['final_val_loss']:.4f}"
        print(f"[{n}/{len(todo)}] {describe(row)}: train {row['final_train_loss']:.4f} {status}, grad norm "
              f"{row['grad_norm_median']:.3g} ({secs:.1f}s){f'; its {rows} rows written' if rows > 1 else ''}"
              f" | {el / 60:.1f} min, ~{eta / 60:.1f} min left", flush=True)

    def on_skip(r, message):
        skipped.append(r)
        print(f"{describe(r)} skipped: {message}", flush=True)

    try:
        train_runs(cfg, [t for t, _ in todo], vocab, dev, on_row, on_skip)
    except KeyboardInterrupt:
        raise SystemExit(f"interrupted: {n} runs written to {cfg['out']}; run the same command again to go on")
    el = time.time() - t_start
    print(f"sweep: {n} runs in {el / 60:.1f} min -> {cfg['out']} ({tokens / max(el, 1e-9):,.0f} tokens/s in all)"
          + (f"; {len(skipped)} skipped for memory" if skipped else ''))
    return n


def cpu_grid(cfg, assigned, files):
    """On a CPU, without a config file or a grid key: CPU_GRID instead of the default grid, said in a line."""
    if files or assigned - WHERE_KEYS:
        return
    try:
        dev = training.device_setup(cfg['device'], cfg['dtype'])
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    if dev.type == 'cuda' or cfg['ray']:  # a Ray cluster's devices are its nodes', not this machine's
        return
    _, vocab = training.dataset_setup(cfg['dataset'], cfg['data_dir'])
    trained = {run_key(t): t for t in (trained_run(r, cfg['base_width'], cfg['base_depth']) for r in grid(cfg))}
    hours = training.duration(estimate_seconds(cfg, list(trained.values()), vocab, dev))
    print(f"on this CPU the quick grid takes about {hours}; running a small one instead (widths "
          f"{CPU_GRID['widths']}, AdamW, {CPU_GRID['max_iters']} steps of {CPU_GRID['batch_size']} x "
          f"{CPU_GRID['block_size']} tokens) -> "
          f"{cfg['out'] if 'out' in assigned else CPU_GRID['out']}; name a grid key or a config file to run another. "
          "The figures in assets/ (config/sweep_*.py) need a GPU.", flush=True)
    cfg.update({k: v for k, v in CPU_GRID.items() if k not in assigned})


def main(argv=None):
    from configurator import ConfigError, apply_config
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = dict(DEFAULTS)
    try:
        assigned = apply_config(argv, cfg)
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    check_grid(cfg)
    if cfg['plot']:
        if 'out' not in assigned and not os.path.exists(cfg['out']) and os.path.exists(CPU_GRID['out']):
            print(f"plotting {CPU_GRID['out']}, the CPU grid's results (--out names another)")
            cfg['out'] = CPU_GRID['out']
        rows = select(load_results(cfg['out'], cfg['at_step']), cfg, assigned)
        if not rows and cfg['at_step']:
            raise SystemExit(f"error: no run in {cfg['out']} recorded its val loss at step {cfg['at_step']}")
        summary = summarize(rows, cfg['axis'], cfg['learning_rate'])
        return summary if cfg['at_step'] else plot(rows, cfg['axis'], cfg['out'], run_settings(cfg), cfg['note'],
                                                   summary, cfg['learning_rate'])
    t0 = time.time()
    cpu_grid(cfg, assigned, [a for a in argv if not a.startswith('--')])
    sweep(cfg)
    summarize(select(load_results(cfg['out']), cfg), cfg['axis'], cfg['learning_rate'])
    print(f"\ntotal wall time {(time.time() - t0) / 60:.1f} min")


if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:  # before or after the runs (the sweep says what it wrote when it stops in them)
        raise SystemExit("interrupted")
