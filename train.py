"""
Pre-train a Gated DeltaNet LM under standard parametrization or μP, on one device or many (DDP).

    python train.py                                  # quick demo on the embedded Shakespeare
    python train.py --width=768 --mup=True           # μP at width 768 (same LR as at 256)
    python train.py config/paper_adamw.py --width=1024
    torchrun --standalone --nproc_per_node=8 train.py config/paper_adamw.py

Config: the globals below, overridden by config files and then --key=value (configurator.py).
"""
import csv
import dataclasses
import glob
import json
import math
import os
import time
from contextlib import nullcontext

import torch
from torch.distributed import destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP

from model import GDN, GDNConfig, padded_vocab
from training import Batches, evaluate, lr_at, train_step

# -----------------------------------------------------------------------------
# I/O
out_dir = 'out'
eval_interval = 250
log_interval = 10
eval_iters = 20
eval_only = False
init_from = 'scratch'        # 'scratch' or 'resume' (from the newest checkpoint in out_dir)
keep_checkpoints = 2         # how many of the newest checkpoints to keep
# data
dataset = 'shakespeare'      # a folder of data_dir made by prepare_data.py
data_dir = 'data'
gradient_accumulation_steps = 1  # global, split across DDP ranks
batch_size = 16              # micro-batch per device
block_size = 256
# model
width = 256
base_width = 256             # μP's base width: at width == base_width, μP is SP
n_layer = 8
n_head = 6
head_k = 0                   # 0 = width // 8
head_v = 0                   # 0 = width // 4
mup = False                  # True = μP by the paper's rules ('mup'); False = standard parametrization
parametrization = ''         # '' = by `mup`; or one of mup.PARAMETRIZATIONS: sp, mup, mup_fixed_fanout, mup_nogdn
# base hyper-parameters, at base_width (mup.py scales them with width under μP; SP uses them as they are)
output_mult = 1.0            # logits multiplier
init_std = 0.02              # init std of the matrices
embed_lr_mult = 1.0          # the embedding's LR relative to learning_rate
gate_lr_mult = 1.0           # the gates' and their scalars' LR relative to learning_rate
kernel_backend = ''          # '' = Triton on CUDA, PyTorch elsewhere; or 'torch' / 'triton'
fused = True                 # the fused projections, conv and cross-entropy (model.GDNConfig.fused; same math
                             # within bf16 noise, 10% faster compiled, slower eager: BENCH.md, run 6)
# optimizer
optimizer = 'adamw'          # 'adamw' or 'sgd' (Nesterov)
learning_rate = 3e-3         # the base LR; mup.py's per-group multipliers apply on top
max_iters = 2000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
momentum = 0.98              # SGD only
grad_clip = 1.0              # 0 = no clipping
# schedule (training.lr_at): linear warmup, then cosine to min_lr at lr_decay_iters
decay_lr = True
warmup_iters = 100
lr_decay_iters = 2000
min_lr = 5e-5
# system
device = ''                  # '' = cuda if available, else cpu; or 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = ''                   # '' = bfloat16 on CUDA, float32 elsewhere; or 'float32', 'bfloat16', 'float16'
compile = True               # torch.compile the model (CUDA only; ignored elsewhere)
compile_mode = ''            # torch.compile's mode: '' (its default) or 'reduce-overhead' (CUDA graphs: the
                             # step replayed, not launched op by op from Python; for small widths, where the
                             # host bounds the step: at 256, 12.6 against 26.4 ms a step;
                             # at 768 the same 34-35 ms, BENCH.md run 16)
seed = 1337
peak_flops = 989e12          # for MFU: H100 SXM dense bf16
# -----------------------------------------------------------------------------
_keys = [k for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))]
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
config = {k: globals()[k] for k in _keys}  # what this run was, saved in checkpoints
# -----------------------------------------------------------------------------

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
        raise SystemExit(f"gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple "
                         f"of the number of processes ({world})")
    gradient_accumulation_steps //= world
else:
    rank, world = 0, 1
master = rank == 0
device_type = 'cuda' if device.startswith('cuda') else device.split(':')[0]
dtype = dtype or ('bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32')
compile = compile and device_type == 'cuda'
if compile_mode not in ('', 'reduce-overhead'):
    raise SystemExit(f"error: compile_mode={compile_mode!r}: use '' (torch.compile's default) or "
                     "'reduce-overhead' (CUDA graphs)")
if ddp and compile and compile_mode:
    raise SystemExit("error: compile_mode='reduce-overhead' (CUDA graphs) is not tested under DDP: "
                     "use compile_mode='' with torchrun")
tokens_per_iter = gradient_accumulation_steps * world * batch_size * block_size
torch.manual_seed(seed)
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
autocast = nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type, dtype=ptdtype)
if master:
    os.makedirs(out_dir, exist_ok=True)
    print(f"tokens per iteration: {tokens_per_iter:,} ({world} x {gradient_accumulation_steps} x "
          f"{batch_size} x {block_size}); device {device}, {dtype}, compile={compile}")

# data: uint16 tokens made by prepare_data.py (one .bin per split, or shards); the embedded corpus
# is prepared on the fly on a fresh clone
from prepare_data import EMBEDDED, ensure_prepared, load_split
if master or dataset not in EMBEDDED:  # only rank 0 prepares; a missing dataset stops every rank
    ensure_prepared(dataset, data_dir)
if ddp:
    torch.distributed.barrier()  # rank 0 may have just prepared the data
dataset_dir = os.path.join(data_dir, dataset)
with open(os.path.join(dataset_dir, 'meta.json')) as f:
    meta = json.load(f)
# the batch of each iteration depends on (seed, iteration) only: resuming is exact, and 1 process ==
# N processes for the same global batch (training.Batches)
batches = Batches({s: load_split(dataset_dir, s) for s in ('train', 'val')}, batch_size, block_size, seed,
                  device, gradient_accumulation_steps, world, rank)

# model
vocab_size = padded_vocab(meta['vocab_size'])
if mup and parametrization == 'sp':
    raise SystemExit("error: --mup=True and --parametrization=sp contradict each other: drop one")
parametrization = parametrization or ('mup' if mup else 'sp')
model_args = dict(vocab_size=vocab_size, width=width, n_layer=n_layer, n_head=n_head, head_k=head_k,
                  head_v=head_v, parametrization=parametrization, base_width=base_width,
                  output_mult=output_mult, init_std=init_std, embed_lr_mult=embed_lr_mult,
                  gate_lr_mult=gate_lr_mult)
# what a checkpoint must agree on to be resumed (the rest, e.g. max_iters or log_interval, may change)
signature = dict(model_args, dataset=dataset, optimizer=optimizer, block_size=block_size)

def checkpoints():
    return sorted(glob.glob(os.path.join(out_dir, 'ckpt_*.pt')))

iter_num, best_val_loss, checkpoint = 0, float('inf'), None
if init_from == 'resume':
    if not checkpoints():
        raise SystemExit(f"init_from='resume' but {out_dir} has no ckpt_*.pt: train from scratch first")
    checkpoint = torch.load(checkpoints()[-1], map_location=device, weights_only=False)
    old = checkpoint['signature']
    # a checkpoint from before a model key existed (e.g. a base hyper-parameter) had its default
    old = {**{f.name: f.default for f in dataclasses.fields(GDNConfig)}, **old}
    differ = [f"{k}: checkpoint {old.get(k)!r}, now {v!r}" for k, v in signature.items() if old.get(k) != v]
    if differ:
        raise SystemExit(f"cannot resume {checkpoints()[-1]}: the config differs in\n  " + "\n  ".join(differ)
                         + "\npass the checkpoint's values, or use another out_dir")
    iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
elif init_from != 'scratch':
    raise SystemExit(f"init_from={init_from!r}: use 'scratch' or 'resume'")

try:
    model = GDN(GDNConfig(**model_args, kernel_backend=kernel_backend, fused=fused)).to(device)
except ValueError as e:  # an unknown parametrization, head dims that do not divide
    raise SystemExit(f"error: {e}")
if checkpoint is not None:
    model.load_state_dict(checkpoint['model'])
else:
    model.reset_parameters(seed)  # the init depends on the seed alone (sweep.py draws the same one)
if master:
    print(f"{model.config.parametrization}, width {width}, {n_layer} layers, {n_head} heads "
          f"(d_k {model.config.head_k}, d_v {model.config.head_v}): {model.num_params() / 1e6:.2f}M "
          f"non-embedding parameters")
optim = model.configure_optimizer(optimizer, learning_rate, weight_decay, (beta1, beta2), momentum, device_type)
if checkpoint is not None:
    optim.load_state_dict(checkpoint['optimizer'])
checkpoint = None
scaler = torch.amp.GradScaler(enabled=(dtype == 'float16'))
raw_model = model
if compile:
    model = torch.compile(model, mode=compile_mode or None)
if ddp:
    model = DDP(model, device_ids=[int(os.environ['LOCAL_RANK'])] if device_type == 'cuda' else None)

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
    print(f"saved {path}")

def stop_non_finite(value):
    # never save a diverged model: the newest checkpoint on disk stays the last good one
    raise SystemExit(f"loss is {value} at iter {iter_num}: training stopped. The last good checkpoint "
                     f"is {checkpoints()[-1] if checkpoints() else '(none yet)'}. Lower learning_rate "
                     "(or raise warmup_iters, or set grad_clip) and resume with --init_from=resume.")

# per-step CSV log (appended on resume)
log_path = os.path.join(out_dir, 'log.csv')
if master:
    new_log = init_from == 'scratch' or not os.path.exists(log_path)
    log_file = open(log_path, 'w' if new_log else 'a', newline='')
    log = csv.writer(log_file)
    if new_log:
        # a row per step (loss, lr; speed on log steps) and per eval (train_loss, val_loss)
        log.writerow(['iter', 'loss', 'lr', 'grad_norm', 'ms', 'tokens_per_s', 'mfu', 'train_loss', 'val_loss'])

start_iter = iter_num
recent = []  # (iter, lr, loss, grad norm) of the steps since the last log line
flops_per_iter = raw_model.flops_per_token(block_size) * tokens_per_iter
t0 = time.time()
while True:
    lr = lr_at(iter_num, learning_rate, warmup_iters, lr_decay_iters, min_lr, decay_lr)

    if iter_num % eval_interval == 0 and master and (iter_num != start_iter or eval_only):
        losses = evaluate(model, batches, eval_iters, autocast)
        print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        if not math.isfinite(losses['val']):
            stop_non_finite(losses['val'])
        log.writerow([iter_num, '', '', '', '', '', '', f"{losses['train']:.5f}", f"{losses['val']:.5f}"])
        log_file.flush()
        best_val_loss = min(best_val_loss, losses['val'])
        if not eval_only:
            save_checkpoint()
    if eval_only or iter_num >= max_iters:
        break

    # one step (training.train_step: the same as sweep.py's): the loss and grad norm stay on the device
    loss, grad_norm = train_step(model, optim, batches, iter_num, lr, grad_clip, autocast,
                                 scaler if scaler.is_enabled() else None)
    iter_num += 1
    recent.append((iter_num, lr, loss, grad_norm))
    if iter_num % log_interval == 0 or iter_num >= max_iters:
        step_losses = torch.stack([l for _, _, l, _ in recent])
        if ddp:
            torch.distributed.all_reduce(step_losses, op=torch.distributed.ReduceOp.AVG)
        step_losses = step_losses.tolist()  # one sync per log_interval steps
        norms = torch.stack([n for _, _, _, n in recent]).tolist()
        if not all(map(math.isfinite, step_losses)):
            stop_non_finite(next(l for l in step_losses if not math.isfinite(l)))
        if master:
            dt = (time.time() - t0) / len(recent)
            t0 = time.time()
            mfu = flops_per_iter / dt / peak_flops
            print(f"iter {iter_num}: loss {step_losses[-1]:.4f}, lr {lr:.3e}, grad norm {norms[-1]:.3g}, "
                  f"{dt * 1000:.1f} ms, {tokens_per_iter / dt:,.0f} tok/s, mfu {mfu * 100:.1f}%")
            for (it, it_lr, _, _), l, gn in zip(recent, step_losses, norms):  # a CSV row for every step
                speed = [f'{dt * 1000:.2f}', f'{tokens_per_iter / dt:.0f}', f'{mfu:.4f}'] if it == iter_num else [''] * 3
                log.writerow([it, f'{l:.5f}', f'{it_lr:.4e}', f'{gn:.4g}', *speed, '', ''])
            log_file.flush()
        recent = []

if master and not eval_only and iter_num % eval_interval:
    save_checkpoint()  # the final state, whatever the eval cadence
if ddp:
    torch.distributed.barrier()  # tear down together: a rank leaving while rank 0 saves can abort (gloo)
    destroy_process_group()
