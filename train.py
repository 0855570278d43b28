"""
Pre-train a Gated DeltaNet LM under standard parametrization or μP, on one device or many (DDP).

    python train.py --width=768 --mup=True           # μP at width 768 with the base values tuned at 256
    python train.py --width=768 --mup=False          # the same under SP
    python train.py config/demo.py                   # a quick demo on the embedded Shakespeare (CPU: minutes)
    python train.py config/paper_adamw.py --width=1024
    torchrun --standalone --nproc_per_node=8 train.py config/paper_adamw.py

Config: the globals below, then the base values tuned for the default corpus (config/tuned_gutenberg.py),
then config files and --key=value in command-line order (configurator.py). Ctrl-C stops after the current
step and saves it; a second Ctrl-C stops at once (the last checkpoint stays).
"""
import csv
import dataclasses
import glob
import math
import os
import signal
import time
from contextlib import nullcontext

import torch
from torch.distributed import destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP

from model import GDN, GDNConfig, padded_vocab
from mup import check_weight_decay_rule
from training import Batches, evaluate, lr_at, train_step

# -----------------------------------------------------------------------------
# I/O
out_dir = 'out'
eval_interval = 250
log_interval = 10
eval_iters = 20
eval_only = False
init_from = 'scratch'        # 'scratch' or 'resume' (from the newest readable checkpoint in out_dir)
keep_checkpoints = 2         # how many of the newest checkpoints to keep
# data
dataset = 'gutenberg'        # a folder of data_dir made by prepare_data.py; 'gutenberg' (121 books, 15M GPT-2
                             # tokens) and 'shakespeare' ship with the repo and are prepared on first use
data_dir = 'data'
gradient_accumulation_steps = 1  # global, split across DDP ranks
batch_size = 16              # micro-batch per device
block_size = 1024            # the paper's context
# model
width = 256
base_width = 256             # μP's base width: at width == base_width, μP is SP
n_layer = 8
base_depth = 8               # the depth rules' base depth: at n_layer == base_depth they change nothing
depth_rule = 'none'          # one of mup.DEPTH_ALPHA: 'none' (the paper's), 'depth_mup', 'completep'
n_head = 6
head_k = 0                   # 0 = width // 8
head_v = 0                   # 0 = width // 4
mup = False                  # True = μP by the paper's rules ('mup'); False = standard parametrization
parametrization = ''         # '' = by `mup`; or one of mup.PARAMETRIZATIONS: sp, mup, mup_fixed_fanout, mup_nogdn
# base hyper-parameters, at base_width (mup.py scales them under μP; SP uses them as they are)
output_mult = 1.0            # logits multiplier
init_std = 0.02              # init std of the matrices
embed_lr_mult = 1.0          # the embedding's LR relative to learning_rate
gate_lr_mult = 1.0           # the gates' and their scalars' LR relative to learning_rate
kernel_backend = ''          # '' = Triton on CUDA, PyTorch elsewhere; or 'torch' / 'triton'
# optimizer
optimizer = 'adamw'          # 'adamw' or 'sgd' (Nesterov)
learning_rate = 3e-3         # the base LR; mup.py's per-group multipliers apply on top
max_iters = 0                # 0 = one epoch of the training split (no token read twice)
weight_decay = 0.1
weight_decay_rule = 'paper'  # how the decay scales with width (mup.WEIGHT_DECAY_RULES): 'paper', 'fixed_timescale', 'sqrt_width'
beta1 = 0.9
beta2 = 0.95
momentum = 0.98              # SGD only
grad_clip = 1.0              # 0 = no clipping
# schedule (training.lr_at): linear warmup, then cosine to min_lr at lr_decay_iters
decay_lr = True
warmup_iters = -1            # -1 = a tenth of max_iters (the paper: 2k of 20k)
lr_decay_iters = 0           # 0 = max_iters
min_lr = 5e-5
# system
device = ''                  # '' = cuda if available, else cpu; or 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = ''                   # '' = bfloat16 on CUDA, float32 elsewhere; or 'float32', 'bfloat16', 'float16'
compile = True               # torch.compile the model (CUDA only; ignored elsewhere)
compile_mode = ''            # torch.compile's mode: '' (its default) or 'reduce-overhead' (CUDA graphs: the step
                             # replayed rather than launched op by op, for small widths whose step the host
                             # bounds; docs/benchmarks.md)
seed = 1337
peak_flops = 989e12          # for MFU: H100 SXM dense bf16
# -----------------------------------------------------------------------------
_here = os.path.dirname(os.path.abspath(__file__))
# the base hyper-parameters tuned at base_width for the default corpus (μTransfer: `python sweep.py
# config/tune_base.py` writes the file; μP carries its values unchanged to every width)
exec(open(os.path.join(_here, 'config', 'tuned_gutenberg.py')).read())
_keys = [k for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))]
exec(open(os.path.join(_here, 'configurator.py')).read())
config = {k: globals()[k] for k in _keys}  # what this run was, saved in checkpoints
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
if init_from not in ('scratch', 'resume'):
    fail(f"init_from={init_from!r}: use 'scratch' or 'resume'")
if mup and parametrization == 'sp':
    fail("--mup=True and --parametrization=sp contradict each other: drop one")
try:
    check_weight_decay_rule(weight_decay_rule)
except ValueError as e:
    fail(e)
parametrization = parametrization or ('mup' if mup else 'sp')

# DDP (nanoGPT's pattern): torchrun sets RANK/LOCAL_RANK/WORLD_SIZE
ddp = int(os.environ.get('RANK', -1)) != -1
device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
if ddp:
    init_process_group(backend='nccl' if device.startswith('cuda') else 'gloo')
    rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    if device.startswith('cuda'):
        device = f"cuda:{os.environ['LOCAL_RANK']}"
        torch.cuda.set_device(device)
    if gradient_accumulation_steps % world:
        fail(f"gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of the number of "
             f"processes ({world})")
    gradient_accumulation_steps //= world
else:
    rank, world = 0, 1
master = rank == 0
device_type = 'cuda' if device.startswith('cuda') else device.split(':')[0]
dtype = dtype or ('bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32')
compile = compile and device_type == 'cuda'
if ddp and compile and compile_mode:
    fail("compile_mode='reduce-overhead' (CUDA graphs) is not tested under DDP: use compile_mode='' with torchrun")
tokens_per_iter = gradient_accumulation_steps * world * batch_size * block_size
torch.manual_seed(seed)
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
autocast = nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type, dtype=ptdtype)

# data: uint16 tokens made by prepare_data.py; the embedded corpora are prepared on first use
from prepare_data import EMBEDDED, ensure_prepared, load_split, read_meta  # noqa: E402
if master or dataset not in EMBEDDED:  # only rank 0 prepares; a missing dataset stops every rank
    ensure_prepared(dataset, data_dir)
if ddp:
    torch.distributed.barrier()  # rank 0 may have just prepared the data
dataset_dir = os.path.join(data_dir, dataset)
# the batch of each iteration depends on (seed, iteration) only: resuming is exact, and 1 process ==
# N processes for the same global batch (training.Batches)
batches = Batches({s: load_split(dataset_dir, s) for s in ('train', 'val')}, batch_size, block_size, seed,
                  device, gradient_accumulation_steps, world, rank)
max_iters = max_iters or batches.steps_per_epoch()
lr_decay_iters = lr_decay_iters or max_iters
warmup_iters = max_iters // 10 if warmup_iters < 0 else warmup_iters

# model
model_args = dict(vocab_size=padded_vocab(read_meta(dataset_dir)['vocab_size']), width=width, n_layer=n_layer,
                  n_head=n_head, head_k=head_k, head_v=head_v, parametrization=parametrization,
                  base_width=base_width, depth_rule=depth_rule, base_depth=base_depth, output_mult=output_mult,
                  init_std=init_std, embed_lr_mult=embed_lr_mult, gate_lr_mult=gate_lr_mult)
try:
    model_config = GDNConfig(**model_args, kernel_backend=kernel_backend)
except ValueError as e:  # an unknown parametrization, a width that is not positive, head dims that do not divide
    fail(e)
triton = kernel_backend == 'triton' or (kernel_backend == '' and device_type == 'cuda')
if triton and (model_config.head_k % 16 or model_config.head_v % 16):
    fail(f"width={width}: the Triton kernels need head dims d_k = width/8 and d_v = width/4 that are multiples "
         f"of 16 (a width that is a multiple of 128); use such a width, or --kernel_backend=torch")
# what a checkpoint must agree on to be resumed (the rest, e.g. max_iters or log_interval, may change)
signature = dict(model_args, dataset=dataset, optimizer=optimizer, block_size=block_size)


def checkpoints():
    return sorted(glob.glob(os.path.join(out_dir, 'ckpt_*.pt')))


def load_newest_checkpoint():
    """The newest checkpoint that loads: a damaged one (cut short by a full disk, a copy that did not finish)
    is skipped, with a word, for the one before it."""
    for path in reversed(checkpoints()):
        try:
            ckpt = torch.load(path, map_location=device, weights_only=False)
            return path, ckpt
        except Exception as e:  # noqa: BLE001 - any reason it does not load: say so, try the older one
            print(f"skipping {path}: it does not load ({type(e).__name__}: {str(e)[:120]})")
    fail(f"init_from='resume' but {out_dir} has no readable ckpt_*.pt: train from scratch first")


iter_num, best_val_loss, checkpoint = 0, float('inf'), None
if init_from == 'resume':
    path, checkpoint = load_newest_checkpoint()
    # a checkpoint from before a model key existed (e.g. a base hyper-parameter) had its default
    old = {**{f.name: f.default for f in dataclasses.fields(GDNConfig)}, **checkpoint['signature']}
    differ = [f"{k}: checkpoint {old.get(k)!r}, now {v!r}" for k, v in signature.items() if old.get(k) != v]
    if differ:
        fail(f"cannot resume {path}: the config differs in\n  " + "\n  ".join(differ)
             + "\npass the checkpoint's values, or use another out_dir")
    iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
    if master:
        print(f"resuming from {path} (iter {iter_num})")

model = GDN(model_config).to(device)
if checkpoint is not None:
    model.load_state_dict(checkpoint['model'])
else:
    model.reset_parameters(seed)  # the init depends on the seed alone (sweep.py draws the same one)
optim = model.configure_optimizer(optimizer, learning_rate, weight_decay, (beta1, beta2), momentum, device_type,
                                  weight_decay_rule)
if checkpoint is not None:
    optim.load_state_dict(checkpoint['optimizer'])
checkpoint = None
scaler = torch.amp.GradScaler(enabled=(dtype == 'float16'))
raw_model = model
if compile:
    model = torch.compile(model, mode=compile_mode or None)
if ddp:
    model = DDP(model, device_ids=[int(os.environ['LOCAL_RANK'])] if device_type == 'cuda' else None)
if master:
    os.makedirs(out_dir, exist_ok=True)
    print(f"{parametrization}, width {width}, {n_layer} layers, {n_head} heads (d_k {model_config.head_k}, d_v "
          f"{model_config.head_v}): {raw_model.num_params() / 1e6:.2f}M non-embedding parameters; {dataset}, "
          f"{max_iters} steps of {tokens_per_iter:,} tokens ({world} x {gradient_accumulation_steps} x {batch_size} "
          f"x {block_size}); lr {learning_rate:.3g}, output_mult {output_mult:g}, init_std {init_std:g} at width "
          f"{base_width}; {device}, {dtype}, compile={compile}")


def save_checkpoint():
    """Write to a temporary file, then rename: a crash mid-write never leaves a broken checkpoint."""
    if not all(torch.isfinite(p).all() for p in raw_model.parameters()):
        stop_non_finite('not finite (weights)')
    path = os.path.join(out_dir, f'ckpt_{iter_num:07d}.pt')
    torch.save({'model': raw_model.state_dict(), 'optimizer': optim.state_dict(), 'model_args': model_args,
                'iter_num': iter_num, 'best_val_loss': best_val_loss, 'config': config,
                'signature': signature}, path + '.tmp')
    os.replace(path + '.tmp', path)
    for old in checkpoints()[:-keep_checkpoints]:
        os.remove(old)
    return path


def stop_non_finite(value):
    # never save a diverged model: the newest checkpoint on disk stays the last good one
    fail(f"loss is {value} at iter {iter_num}: training stopped. The last good checkpoint is "
         f"{checkpoints()[-1] if checkpoints() else '(none yet)'}. Lower learning_rate (or raise warmup_iters, "
         "or set grad_clip) and resume with --init_from=resume.")


# per-step CSV log: a row per step (loss, lr; speed on log steps) and per evaluation (train_loss, val_loss).
# On resume the rows after the checkpoint's step go (they are trained again), so each step has one row
LOG_COLUMNS = ['iter', 'loss', 'lr', 'grad_norm', 'ms', 'tokens_per_s', 'mfu', 'train_loss', 'val_loss']
if master:
    log_path = os.path.join(out_dir, 'log.csv')
    kept = []
    if init_from == 'resume' and os.path.exists(log_path):
        with open(log_path, newline='') as f:
            kept = [r for r in csv.reader(f) if r and r[0].isdigit() and int(r[0]) <= iter_num]
    with open(log_path + '.tmp', 'w', newline='') as f:
        csv.writer(f).writerows([LOG_COLUMNS] + kept)
    os.replace(log_path + '.tmp', log_path)
    log_file = open(log_path, 'a', newline='')
    log = csv.writer(log_file)

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

start_iter, saved_iter, val_loss = iter_num, iter_num, float('nan')
recent = []  # (iter, lr, loss, grad norm) of the steps since the last log line
flops_per_iter = raw_model.flops_per_token(block_size) * tokens_per_iter
t_start = t_log = time.time()


def write_log():
    """Print a log line and write a CSV row for each step since the last one (one host sync)."""
    global recent, t_log
    step_losses = torch.stack([l for _, _, l, _ in recent])
    if ddp:
        torch.distributed.all_reduce(step_losses, op=torch.distributed.ReduceOp.AVG)
    step_losses = step_losses.tolist()
    norms = torch.stack([n for _, _, _, n in recent]).tolist()
    if not all(map(math.isfinite, step_losses)):
        stop_non_finite(next(l for l in step_losses if not math.isfinite(l)))
    if master:
        dt = (time.time() - t_log) / len(recent)
        mfu = flops_per_iter / dt / peak_flops
        first = iter_num == start_iter + 1
        eta = (max_iters - iter_num) * dt
        when = f"{(time.time() - t_start) / 60:.1f} min, ~{eta / 60:.1f} min left"
        print(f"iter {iter_num}: loss {step_losses[-1]:.4f}, lr {recent[-1][1]:.3e}, grad norm {norms[-1]:.3g}, "
              + (f"first step {dt:.1f} s (compiling)" if first and compile else
                 f"{dt * 1000:.1f} ms, {tokens_per_iter / dt:,.0f} tok/s, mfu {mfu * 100:.1f}%, {when}"), flush=True)
        if first and device_type == 'cpu' and eta > 600:
            print(f"on this CPU the run's {max_iters} steps take ~{eta / 3600:.1f} h: for a quick demo, "
                  f"python train.py config/demo.py (minutes), or run this on a GPU", flush=True)
        for (it, it_lr, _, _), l, gn in zip(recent, step_losses, norms):
            speed = [f'{dt * 1000:.2f}', f'{tokens_per_iter / dt:.0f}', f'{mfu:.4f}'] if it == iter_num else [''] * 3
            log.writerow([it, f'{l:.5f}', f'{it_lr:.4e}', f'{gn:.4g}', *speed, '', ''])
        log_file.flush()
    recent, t_log = [], time.time()


try:
    while True:
        if master and (iter_num % eval_interval == 0 or iter_num == max_iters) and (iter_num != start_iter or eval_only):
            losses = evaluate(model, batches, eval_iters, autocast)
            val_loss = losses['val']
            print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {val_loss:.4f}")
            if not math.isfinite(val_loss):
                stop_non_finite(val_loss)
            log.writerow([iter_num, '', '', '', '', '', '', f"{losses['train']:.5f}", f"{val_loss:.5f}"])
            log_file.flush()
            best_val_loss = min(best_val_loss, val_loss)
            if not eval_only:
                save_checkpoint()
                saved_iter = iter_num
        if eval_only or iter_num >= max_iters or stop:
            break
        # one step (training.train_step: the same as sweep.py's): the loss and grad norm stay on the device
        lr = lr_at(iter_num, learning_rate, warmup_iters, lr_decay_iters, min_lr, decay_lr)
        loss, grad_norm = train_step(model, optim, batches, iter_num, lr, grad_clip, autocast,
                                     scaler if scaler.is_enabled() else None)
        iter_num += 1
        recent.append((iter_num, lr, loss, grad_norm))
        if not ddp:
            stop = interrupted
        elif iter_num % log_interval == 0:
            flag = torch.tensor(float(interrupted), device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
        if iter_num % log_interval == 0 or iter_num == start_iter + 1 or iter_num >= max_iters or stop:
            write_log()
    if master and not eval_only:
        path = save_checkpoint() if saved_iter != iter_num else checkpoints()[-1]
        minutes = (time.time() - t_start) / 60
        done = iter_num >= max_iters
        print(f"{'done' if done else 'stopped'}: {iter_num - start_iter} steps in {minutes:.1f} min"
              + (f", final val loss {val_loss:.4f}" if done else f" (iter {iter_num} of {max_iters})")
              + f"; checkpoint {path}\n" + (f"sample from it: python sample.py --out_dir={out_dir}" if done else
                                            "go on: the same command with --init_from=resume"))
except KeyboardInterrupt:
    if master:
        log_file.flush()
        raise SystemExit(f"stopped at once at iter {iter_num}; the last checkpoint is "
                         f"{checkpoints()[-1] if checkpoints() else '(none yet)'}")
if ddp:
    torch.distributed.barrier()  # tear down together: a rank leaving while rank 0 saves can abort (gloo)
    destroy_process_group()
