"""
Pre-train a Gated DeltaNet LM under standard parametrization or μP, on one device or many (DDP).

    python train.py --width=768 --mup=True           # μP at width 768 with the base values tuned at 256
    python train.py --width=768 --mup=False          # the same under SP
    python train.py config/demo.py                   # a quick demo on the embedded Shakespeare (CPU: minutes)
    python train.py config/paper_adamw.py --width=1024
    torchrun --standalone --nproc_per_node=8 train.py config/paper_adamw.py

The settings are the globals below, then config files and --key=value in command-line order (configurator.py; `--help`
lists them). A run owns its out_dir: a new run into a folder that holds another run stops, and says how to go on. Ctrl-C
stops after the current step and saves it; a second Ctrl-C stops at once (the last checkpoint stays).
"""
import csv
import fcntl
import glob
import json
import math
import os
import shutil
import signal
import sys
import time
import uuid

import torch
from torch.distributed import destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP

from configurator import config_keys, configure
from kernel import triton_runs_on, triton_takes
from model import GDN, GDNConfig
from mup import check
from prepare_data import EMBEDDED, atomic_write, replacing
from tracking import Tracker, draw_losses
from training import (Batches, checkpoints, dataset_setup, device_setup, duration, evaluate, load_checkpoint,
                      load_splits, lr_at, matmul_rate, memory_estimate_gb, pass_seconds, train_step)

# -----------------------------------------------------------------------------
# I/O
out_dir = 'out'              # this run's folder: checkpoints, log.csv, run.json
eval_interval = 250          # steps between evaluations (each saves a checkpoint)
log_interval = 10            # steps between log lines
eval_iters = 20              # batches per split in an evaluation
eval_only = False            # evaluate the model (a resumed checkpoint, or the init) and stop; writes nothing
init_from = 'scratch'        # 'scratch' or 'resume' (from the newest readable checkpoint in out_dir)
overwrite = False            # True: a new run into an out_dir that holds another run removes that run first
keep_checkpoints = 2         # how many of this run's newest checkpoints to keep
plot = True                  # draw the loss curves into out_dir/loss.png at every evaluation
tensorboard = False          # also write TensorBoard event files, to out_dir/tensorboard (offline)
wandb_log = False            # also log to Weights & Biases (WANDB_MODE=offline: no network)
wandb_project = 'mup-gdn'    # wandb's project
wandb_run_name = ''          # wandb's run name ('' = its own)
# data
dataset = 'gutenberg'        # a folder of data_dir made by prepare_data.py; 'gutenberg' (121 books, 15.7M GPT-2
                             # tokens) and 'shakespeare' ship with the repo and are prepared on first use
data_dir = 'data'            # where the prepared datasets live
gradient_accumulation_steps = 1  # micro-batches a step, in all (split across DDP ranks)
batch_size = 16              # sequences a micro-batch, per device
block_size = 1024            # tokens a sequence: the paper's context
# model
width = 256                  # d, the residual stream width
base_width = 256             # μP's base width: at width == base_width, μP is SP
n_layer = 8                  # blocks
base_depth = 8               # the depth rules' base depth: at n_layer == base_depth they change nothing
depth_rule = 'none'          # one of mup.DEPTH_ALPHA: 'none' (the paper's), 'depth_mup', 'completep'
n_head = 6                   # heads, fixed across widths as in the paper
head_k = 0                   # key head dim; 0 = width // 8
head_v = 0                   # value head dim; 0 = width // 4
mup = False                  # True = μP by the paper's rules ('mup'); False = standard parametrization
parametrization = ''         # '' = by `mup`; or one of mup.PARAMETRIZATIONS: sp, mup, mup_fixed_fanout, mup_nogdn
kernel_backend = ''          # '' = Triton on CUDA, PyTorch elsewhere; or 'torch' / 'triton'
# base hyper-parameters: their values at base_width, which μP carries to every width and SP uses as they are.
# These are the values tuned at width 256 on gutenberg, the LR with one key at a time (config/tuned_gutenberg.py
# holds the tune's report and the command that wrote it); another dataset says so when it starts
learning_rate = 0.00445      # the base LR; mup.py's per-group multipliers apply on top
output_mult = 4.0            # logits multiplier
init_std = 0.02              # init std of the matrices
embed_lr_mult = 1.0          # the embedding's LR relative to learning_rate
gate_lr_mult = 1.0           # the gates' and their scalars' LR relative to learning_rate
weight_decay = 0.2           # AdamW's decoupled decay (SGD runs without: mup.decay)
# optimizer
optimizer = 'adamw'          # 'adamw' or 'sgd' (Nesterov)
max_iters = 0                # steps; 0 = one epoch of the training split (no token read twice)
weight_decay_rule = 'paper'  # how the decay scales with width (mup.WEIGHT_DECAY_RULES): 'paper', 'fixed_timescale', 'sqrt_width'
beta1 = 0.9                  # AdamW
beta2 = 0.95                 # AdamW
momentum = 0.98              # SGD only
grad_clip = 1.0              # clip the gradient norm to this; 0 = no clipping
# schedule (training.lr_at): linear warmup, then cosine to min_lr at lr_decay_iters
decay_lr = True              # False: a constant LR
warmup_iters = -1            # -1 = a tenth of max_iters (the paper: 2k of 20k)
lr_decay_iters = 0           # 0 = max_iters
min_lr = 5e-5                # the LR at the end of the cosine
# system
device = ''                  # '' = cuda if available, else cpu; or 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = ''                   # '' = bfloat16 on CUDA, float32 elsewhere; or 'float32', 'bfloat16', 'float16'
compile = True               # torch.compile the model (CUDA only; ignored elsewhere)
compile_mode = ''            # torch.compile's mode: '' (its default) or 'reduce-overhead' (CUDA graphs, for small
                             # widths whose step the host bounds; docs/benchmarks.md)
seed = 1337                  # the init and the order of the batches
peak_flops = 0.0             # the device's peak FLOP/s for MFU; 0 = from its name (H100, H200, A100), else no MFU
# -----------------------------------------------------------------------------
_assigned = configure(globals())
signal.signal(signal.SIGINT, lambda *_: sys.exit("\ninterrupted before the first step: nothing was trained"))
config = {k: globals()[k] for k in config_keys(globals())}  # what this run was, saved in its checkpoints
TUNED_ON = 'gutenberg'  # the dataset the base values above were tuned on
BASE_KEYS = ('learning_rate', 'output_mult', 'init_std', 'weight_decay')
# -----------------------------------------------------------------------------


def fail(message):
    raise SystemExit(f"error: {message}")


for _k in ('batch_size', 'block_size', 'gradient_accumulation_steps', 'eval_iters', 'eval_interval',
           'log_interval', 'keep_checkpoints'):
    if globals()[_k] <= 0:
        fail(f"{_k}={globals()[_k]}: must be a positive whole number")
if max_iters < 0 or learning_rate <= 0 or min_lr < 0 or weight_decay < 0 or grad_clip < 0:
    fail("max_iters, min_lr, weight_decay and grad_clip must be >= 0 and learning_rate > 0")
if compile_mode not in ('', 'reduce-overhead'):
    fail(f"compile_mode={compile_mode!r}: use '' (torch.compile's default) or 'reduce-overhead' (CUDA graphs)")
if not out_dir:
    fail("out_dir='': name the folder the run writes, e.g. --out_dir=out")
if init_from not in ('scratch', 'resume'):
    fail(f"init_from={init_from!r}: use 'scratch' or 'resume'")
if mup and parametrization == 'sp':
    fail("--mup=True and --parametrization=sp contradict each other: drop one")
try:
    check(optimizer=optimizer, weight_decay_rule=weight_decay_rule)
    run = device_setup(device, dtype)
except ValueError as e:
    fail(e)
parametrization = parametrization or ('mup' if mup else 'sp')

# DDP (nanoGPT's pattern): torchrun sets RANK/LOCAL_RANK/WORLD_SIZE
ddp = int(os.environ.get('RANK', -1)) != -1
if ddp:
    init_process_group(backend='nccl' if run.type == 'cuda' else 'gloo')
    rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    if run.type == 'cuda':
        run.device = f"cuda:{os.environ['LOCAL_RANK']}"
        torch.cuda.set_device(run.device)
    if gradient_accumulation_steps % world:
        fail(f"gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of the number of "
             f"processes ({world})")
    gradient_accumulation_steps //= world
else:
    rank, world = 0, 1
master = rank == 0
compile = compile and run.type == 'cuda'
if ddp and compile and compile_mode:
    fail("compile_mode='reduce-overhead' (CUDA graphs) is not tested under DDP: use compile_mode='' with torchrun")
tokens_per_iter = gradient_accumulation_steps * world * batch_size * block_size
torch.manual_seed(seed)

# data: uint16 tokens made by prepare_data.py; the embedded corpora are prepared on first use, by rank 0 alone
# (a dataset that is missing stops every rank)
if master or dataset not in EMBEDDED:
    dataset_dir, vocab_size = dataset_setup(dataset, data_dir)
if ddp:
    torch.distributed.barrier()
    dataset_dir, vocab_size = dataset_setup(dataset, data_dir)
# the batch of each iteration depends on (seed, iteration) only: resuming is exact, and 1 process ==
# N processes for the same global batch (training.Batches)
try:
    batches = Batches(load_splits(dataset_dir), batch_size, block_size, seed, run.device,
                      gradient_accumulation_steps, world, rank)
except ValueError as e:  # a split too short for block_size
    fail(f"{dataset}: {e}")
max_iters = max_iters or batches.steps_per_epoch()
lr_decay_iters = lr_decay_iters or max_iters
warmup_iters = max_iters // 10 if warmup_iters < 0 else warmup_iters
if master and optimizer == 'sgd' and weight_decay and 'weight_decay' in _assigned:
    print(f"note: weight_decay {weight_decay:g} is AdamW's; SGD runs without decay (mup.decay)")
if master and dataset != TUNED_ON and not _assigned & set(BASE_KEYS):
    print(f"note: {', '.join(f'{k} {globals()[k]:g}' for k in BASE_KEYS)} are the base values tuned on {TUNED_ON}; "
          f"for {dataset}, tune them: python -m study.tune config/tune_base.py --dataset={dataset} "
          f"--tuned_out=config/tuned_{dataset}.py")

# model
model_args = dict(vocab_size=vocab_size, width=width, n_layer=n_layer, n_head=n_head, head_k=head_k, head_v=head_v,
                  parametrization=parametrization, base_width=base_width, depth_rule=depth_rule, base_depth=base_depth,
                  output_mult=output_mult, init_std=init_std, embed_lr_mult=embed_lr_mult, gate_lr_mult=gate_lr_mult)
try:
    model_config = GDNConfig(**model_args, kernel_backend=kernel_backend)
except ValueError as e:  # an unknown parametrization, a width that is not positive, head dims that do not divide
    fail(e)
triton = kernel_backend == 'triton' or (kernel_backend == '' and run.type == 'cuda')
if triton and not triton_takes(model_config.head_k, model_config.head_v):
    fail(f"width={width}: the Triton kernels take head dims d_k (width/8) in 16..256 and d_v (width/4) in 16..512, "
         f"multiples of 16 (a width of 128..2048 in steps of 128); here d_k={model_config.head_k}, "
         f"d_v={model_config.head_v}: use such a width, or --kernel_backend=torch")
if kernel_backend == 'triton' and not triton_runs_on(run.type):
    fail(f"kernel_backend='triton' runs on CUDA (or under TRITON_INTERPRET=1, slowly); on this {run.type} use "
         "--kernel_backend=torch")
# what a checkpoint must agree on to be resumed (the rest, e.g. max_iters or log_interval, may change)
signature = dict(model_args, dataset=dataset, optimizer=optimizer, block_size=block_size)


def claim(folder):
    """Hold folder while this process lives (the system drops the lock however the process ends): a second
    train.py there stops at once instead of writing over this run's files."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except OSError as e:
        fail(f"cannot make or open out_dir={folder}: {e.strerror}; use a --out_dir this user can write")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fail(f"another train.py is running in {folder}: wait for it, or give this run its own --out_dir")
    return fd


# a run owns its out_dir: run.json names it, and lists the checkpoints it wrote (only those are rotated)
RUN_FILES = ('run.json', 'log.csv', 'loss.png', 'tensorboard')
if master and not eval_only:
    out_dir_lock = claim(out_dir)
    for _tmp in glob.glob(os.path.join(out_dir, '*.tmp')):  # left by a process killed mid-write: unfinished
        if os.path.isfile(_tmp):  # (a folder, e.g. hf.py's export in progress, is not this run's)
            os.remove(_tmp)
held = [os.path.basename(p) for p in checkpoints(out_dir)]  # checkpoints already in the folder
found = held + [f for f in RUN_FILES if os.path.exists(os.path.join(out_dir, f))]
if init_from == 'scratch' and found and not eval_only:  # a run that wrote no checkpoint leaves nothing to keep
    if held and not overwrite:
        listed = ', '.join(found[:3] + (['...'] if len(found) > 3 else []))
        fail(f"{out_dir} holds another run ({listed}): give this run its own --out_dir, continue that one with "
             "--init_from=resume, or start over there with --overwrite=True (removes it)")
    if master:
        why = " (--overwrite=True)" if held or overwrite else ": it wrote no checkpoint"
        for f in found:
            path = os.path.join(out_dir, f)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        print(f"removed the earlier run's {len(found)} files from {out_dir}{why}")


def free_memory_gb():
    """Memory this run may take on its device: the GPU's free memory, or the host's available memory."""
    if run.type == 'cuda':
        return torch.cuda.mem_get_info(run.device)[0] / 2**30
    try:
        with open('/proc/meminfo') as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith('MemAvailable')) / 2**20
    except (OSError, StopIteration):
        return float('inf')  # not Linux: no estimate to check against


def check_memory():
    """Stop before the operating system or the GPU's allocator does, with what would fit."""
    need = memory_estimate_gb(model_config, batch_size * block_size, run.type)
    have = free_memory_gb()
    if need <= 0.9 * have:
        return need, have
    per_seq = memory_estimate_gb(model_config, 2 * block_size, run.type) - memory_estimate_gb(
        model_config, block_size, run.type)
    fits = int((0.9 * have - memory_estimate_gb(model_config, 0, run.type)) // per_seq)
    fits = max((b for b in range(1, min(fits, batch_size) + 1) if batch_size % b == 0), default=0)
    accum = batch_size // fits * gradient_accumulation_steps * world if fits else 0  # the total over the ranks
    way = (f"--batch_size={fits} --gradient_accumulation_steps={accum} (the same tokens a step), or " if fits
           else "a smaller --width or --block_size, or ")
    fail(f"this run needs ~{need:.0f} GB (width {width}, {batch_size} x {block_size} tokens a micro-batch) and this "
         f"{run.type} has ~{have:.0f} GB free: try {way}"
         + ("python train.py config/demo.py (minutes on a CPU)" if run.type == 'cpu' else "a larger GPU"))


PEAK_FLOPS = {'H100': 989e12, 'H200': 989e12, 'A100': 312e12}  # dense bf16, from the spec sheets


iter_num, best_val_loss, checkpoint = 0, float('inf'), None
if init_from == 'resume':
    try:
        path, checkpoint = load_checkpoint(out_dir, run.device)
    except FileNotFoundError:
        fail(f"init_from='resume' but {out_dir} has no readable ckpt_*.pt: train from scratch "
             + ("there with --overwrite=True (removes what is there)" if found else "first"))
    differ = [f"{k}: checkpoint {checkpoint['signature'].get(k)!r}, now {v!r}" for k, v in signature.items()
              if checkpoint['signature'].get(k) != v]
    if differ:
        fail(f"cannot resume {path}: the config differs in\n  " + "\n  ".join(differ)
             + "\npass the checkpoint's values, or use another out_dir")
    iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
    if iter_num >= max_iters and not eval_only:
        if master:
            print(f"{path} is at iter {iter_num}, max_iters is {max_iters}: nothing to train (a larger --max_iters "
                  f"goes on; --eval_only=True evaluates it)")
        sys.exit(0)
    if master:
        print(f"resuming from {path} (iter {iter_num})")
need_gb, free_gb = check_memory()

model = GDN(model_config).to(run.device)
if checkpoint is not None:
    model.load_state_dict(checkpoint['model'])
else:
    model.reset_parameters(seed)  # the init depends on the seed alone (the sweep's runs draw the same one)
optim = model.configure_optimizer(optimizer, learning_rate, weight_decay, (beta1, beta2), momentum, run.type,
                                  weight_decay_rule)
if checkpoint is not None:
    optim.load_state_dict(checkpoint['optimizer'])
run_id = checkpoint.get('run_id') if checkpoint is not None else None
checkpoint = None
scaler = torch.amp.GradScaler(enabled=(run.dtype == 'float16'))
raw_model = model
if compile:
    model = torch.compile(model, mode=compile_mode or None)
if ddp:
    model = DDP(model, device_ids=[int(os.environ['LOCAL_RANK'])] if run.type == 'cuda' else None)
flops_per_iter = raw_model.flops_per_token(block_size) * tokens_per_iter
peak = peak_flops or (next((v for k, v in PEAK_FLOPS.items() if k in torch.cuda.get_device_name(run.device)), 0.0)
                      if run.type == 'cuda' else 0.0)
if master:
    print(f"{parametrization}, width {width}, {n_layer} layers, {n_head} heads (d_k {model_config.head_k}, d_v "
          f"{model_config.head_v}): {raw_model.num_params() / 1e6:.2f}M non-embedding parameters; {dataset}, "
          f"{max_iters} steps of {tokens_per_iter:,} tokens ({world} x {gradient_accumulation_steps} x {batch_size} "
          f"x {block_size}); lr {learning_rate:.3g}, output_mult {output_mult:g}, init_std {init_std:g} at width "
          f"{base_width}; {run.device}, {run.dtype}, compile={compile}")
    steps_left = 0 if eval_only else max(0, max_iters - iter_num)
    estimate = steps_left * gradient_accumulation_steps * pass_seconds(
        raw_model.flops_per_token(block_size), n_layer, batch_size * block_size, run.type, matmul_rate(run))
    print(f"estimate: ~{need_gb:.1f} GB of {free_gb:.0f} GB free, ~{duration(estimate)} for {steps_left} "
          f"steps (from this {run.type}'s matmul speed; the log's ETA is measured)", flush=True)
    if run.type == 'cpu' and estimate > 3600:
        print(f"that is ~{estimate / 3600:.1f} h on this CPU: for a demo in minutes, python train.py config/demo.py; "
              "this run is meant for a GPU", flush=True)

# run.json: this run's id and the checkpoints it wrote, so rotation never deletes another run's file
run_path = os.path.join(out_dir, 'run.json')


def read_run():
    try:
        with open(run_path) as f:
            return json.load(f)
    except (OSError, ValueError):  # none or a damaged one: the checkpoints here are the resumed run's
        return {'run_id': run_id or uuid.uuid4().hex, 'checkpoints': [os.path.basename(p) for p in checkpoints(out_dir)]}


def write_run(info):
    atomic_write(run_path, json.dumps(info, indent=1))


# per-step CSV log: a row per step (loss, lr; speed on log steps) and per evaluation (train_loss, val_loss).
# On resume the rows after the checkpoint's step go (they are trained again), so each step has one row
LOG_COLUMNS = ['iter', 'loss', 'lr', 'grad_norm', 'ms', 'tokens_per_s', 'mfu', 'train_loss', 'val_loss']
if master and not eval_only:
    try:
        tracker = Tracker(out_dir, config, tensorboard, '', wandb_log, wandb_project, wandb_run_name)
        run_info = read_run() if init_from == 'resume' else {'run_id': uuid.uuid4().hex, 'checkpoints': []}
        run_info.update(config=config)
        write_run(run_info)
        log_path = os.path.join(out_dir, 'log.csv')
        kept = []
        if init_from == 'resume' and os.path.exists(log_path):
            with open(log_path, newline='') as f:
                kept = [r for r in csv.reader(f) if r and r[0].isdigit() and int(r[0]) <= iter_num]
        with replacing(log_path) as tmp, open(tmp, 'w', newline='') as f:
            csv.writer(f).writerows([LOG_COLUMNS] + kept)
        log_file = open(log_path, 'a', newline='')
        log = csv.writer(log_file)
    except OSError as e:  # a read-only or full disk: before the first step, not at the first checkpoint
        fail(f"cannot write to out_dir={out_dir} ({e.strerror}): use a --out_dir this user can write")


def save_checkpoint():
    """Write to a temporary file, then rename: a crash mid-write never leaves a broken checkpoint. Then drop
    this run's older checkpoints past keep_checkpoints."""
    if not all(torch.isfinite(p).all() for p in raw_model.parameters()):
        stop_non_finite('not finite (weights)')
    name = f'ckpt_{iter_num:07d}.pt'
    path = os.path.join(out_dir, name)
    try:
        with replacing(path) as tmp:
            torch.save({'model': raw_model.state_dict(), 'optimizer': optim.state_dict(), 'model_args': model_args,
                        'iter_num': iter_num, 'best_val_loss': best_val_loss, 'config': config,
                        'signature': signature, 'run_id': run_info['run_id']}, tmp)
    except (OSError, RuntimeError) as e:  # a full disk: torch.save's writer says so as a RuntimeError
        fail(f"cannot write {path} ({str(e).splitlines()[0][:120]}): the last checkpoint is {last_checkpoint()}; "
             "make room and resume with --init_from=resume")
    mine = [n for n in run_info['checkpoints'] if n != name] + [name]
    for old in mine[:-keep_checkpoints]:
        if os.path.exists(os.path.join(out_dir, old)):
            os.remove(os.path.join(out_dir, old))
    run_info['checkpoints'] = mine[-keep_checkpoints:]
    write_run(run_info)
    return path


def last_checkpoint():
    return checkpoints(out_dir)[-1] if checkpoints(out_dir) else '(none yet)'


def stop_non_finite(value):
    # never save a diverged model: the newest checkpoint on disk stays the last good one
    fail(f"loss is {value} at iter {iter_num}: training stopped. The last good checkpoint is {last_checkpoint()}. "
         "Lower learning_rate (or raise warmup_iters, or set grad_clip) and "
         + ("resume with --init_from=resume." if checkpoints(out_dir) else "start again with --overwrite=True."))


# Ctrl-C (or SIGTERM) stops after the step in flight, so the checkpoint holds a whole step; a second one
# stops at once. Under DDP the ranks agree at the next log step, so they stop at the same step
interrupted = stop = False


def request_stop(signum, frame):
    global interrupted
    if interrupted:
        raise KeyboardInterrupt
    interrupted = True
    if master:
        print("\nstopping after this step and saving it (Ctrl-C again to stop at once)", flush=True)


signal.signal(signal.SIGINT, request_stop)
signal.signal(signal.SIGTERM, request_stop)

# The ETA is the run's own pace since its warm-up (compilation, the first allocations): steps and evaluations
# done over the time they took, applied to those left. It steadies as the run goes; one slow step barely moves it
WARMUP_STEPS = 3
start_iter, saved_iter, val_loss, saved_path = iter_num, iter_num, float('nan'), None
recent = []  # (iter, lr, loss, grad norm) of the steps since the last log line
t_start = t_log = time.time()
pace = dict(t0=None, it0=None, eval_s=0.0, evals=0)
cpu_warned = False


def eta_seconds():
    if pace['t0'] is None or iter_num <= pace['it0']:
        return None
    step_s = (time.time() - pace['t0'] - pace['eval_s']) / (iter_num - pace['it0'])
    evals_left = max_iters // eval_interval - iter_num // eval_interval + (max_iters % eval_interval > 0)
    eval_s = pace['eval_s'] / pace['evals'] if pace['evals'] else step_s * eval_iters * 2 / 3
    return (max_iters - iter_num) * step_s + evals_left * eval_s


def write_log():
    """Print a log line and write a CSV row for each step since the last one (one host sync)."""
    global recent, t_log, cpu_warned
    step_losses = torch.stack([l for _, _, l, _ in recent])
    if ddp:
        torch.distributed.all_reduce(step_losses, op=torch.distributed.ReduceOp.AVG)
    step_losses = step_losses.tolist()
    norms = torch.stack([n for _, _, _, n in recent]).tolist()
    if not all(map(math.isfinite, step_losses)):
        stop_non_finite(next(l for l in step_losses if not math.isfinite(l)))
    if pace['t0'] is None and iter_num >= start_iter + WARMUP_STEPS:
        pace.update(t0=time.time(), it0=iter_num)
    if master:
        dt = (time.time() - t_log) / len(recent)
        mfu = flops_per_iter / dt / peak if peak else float('nan')
        eta = eta_seconds()
        left = '' if eta is None else f", ~{duration(eta)} left"
        when = f"{(time.time() - t_start) / 60:.1f} min{left}"
        first = iter_num == start_iter + 1
        print(f"iter {iter_num}: loss {step_losses[-1]:.4f}, lr {recent[-1][1]:.3e}, grad norm {norms[-1]:.3g}, "
              + (f"first step {dt:.1f} s (compiling)" if first and compile else
                 f"{dt * 1000:.1f} ms, {tokens_per_iter / dt:,.0f} tok/s"
                 + (f", mfu {mfu * 100:.1f}%" if peak else "") + f", {when}"), flush=True)
        if run.type == 'cpu' and eta is not None and eta > 3600 and not cpu_warned:
            cpu_warned = True
            print(f"on this CPU the {max_iters - iter_num} steps left take ~{eta / 3600:.1f} h: for a demo in minutes, "
                  "python train.py config/demo.py, or run this on a GPU", flush=True)
        for (it, it_lr, _, _), l, gn in zip(recent, step_losses, norms):
            speed = [f'{dt * 1000:.2f}', f'{tokens_per_iter / dt:.0f}', f'{mfu:.4f}' if peak else ''] \
                if it == iter_num else [''] * 3
            log.writerow([it, f'{l:.5f}', f'{it_lr:.4e}', f'{gn:.4g}', *speed, '', ''])
            tracker.log(it, {'train/loss': l, 'lr': it_lr, 'grad_norm': gn})
        log_file.flush()
        tracker.flush()
    recent, t_log = [], time.time()


try:
    while True:
        if master and (iter_num % eval_interval == 0 or iter_num == max_iters) and (iter_num != start_iter or eval_only):
            t_eval = time.time()
            losses = evaluate(model, batches, eval_iters, run.autocast)
            val_loss = losses['val']
            print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {val_loss:.4f}")
            if not math.isfinite(val_loss):
                stop_non_finite(val_loss)
            best_val_loss = min(best_val_loss, val_loss)
            if not eval_only:
                log.writerow([iter_num, '', '', '', '', '', '', f"{losses['train']:.5f}", f"{val_loss:.5f}"])
                log_file.flush()
                tracker.log(iter_num, {'eval/train_loss': losses['train'], 'eval/val_loss': val_loss})
                tracker.flush()
                if plot:
                    draw_losses(log_path, os.path.join(out_dir, 'loss.png'), tokens_per_iter,
                                f"{parametrization}, width {width}, {dataset}, lr {learning_rate:.3g}")
                saved_path, saved_iter = save_checkpoint(), iter_num
            if pace['t0'] is not None:
                pace['eval_s'] += time.time() - t_eval
                pace['evals'] += 1
            t_log += time.time() - t_eval  # the next log line's step time leaves the evaluation out
        if eval_only or iter_num >= max_iters or stop:
            break
        # one step (training.train_step: the same as the sweep's): the loss and grad norm stay on the device
        lr = lr_at(iter_num, learning_rate, warmup_iters, lr_decay_iters, min_lr, decay_lr)
        loss, grad_norm = train_step(model, optim, batches, iter_num, lr, grad_clip, run.autocast,
                                     scaler if scaler.is_enabled() else None)
        iter_num += 1
        recent.append((iter_num, lr, loss, grad_norm))
        if not ddp:
            stop = interrupted
        elif iter_num % log_interval == 0:
            flag = torch.tensor(float(interrupted), device=run.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
        if iter_num % log_interval == 0 or iter_num <= start_iter + WARMUP_STEPS or iter_num >= max_iters or stop:
            write_log()
    if master and not eval_only:
        if saved_iter != iter_num:
            saved_path = save_checkpoint()
        minutes = (time.time() - t_start) / 60
        done = iter_num >= max_iters
        print(f"{'done' if done else 'stopped'}: {iter_num - start_iter} steps in {minutes:.1f} min"
              + (f", final val loss {val_loss:.4f}" if done else f" (iter {iter_num} of {max_iters})")
              + f"; checkpoint {saved_path}"
              + (f", curves {out_dir}/loss.png" if os.path.exists(os.path.join(out_dir, 'loss.png')) else '') + "\n"
              + (f"sample from it: python sample.py --out_dir={out_dir}" if done else
                 "go on: the same command with --init_from=resume"))
        tracker.close()
except KeyboardInterrupt:
    if master:
        if not eval_only:
            log_file.flush()
        raise SystemExit(f"stopped at once at iter {iter_num}; the last checkpoint is {last_checkpoint()}")
if ddp:
    torch.distributed.barrier()  # tear down together: a rank leaving while rank 0 saves can abort (gloo)
    destroy_process_group()
if iter_num < max_iters and not eval_only:
    sys.exit(130)  # stopped by Ctrl-C or SIGTERM: not finished, so `train.py && sample.py` goes no further
