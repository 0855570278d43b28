"""
What every run shares, defined once here and called by train.py, the study's sweep runs and coord_check.py: where a run
runs (device, precision, data), its memory and time, which tokens a batch holds, the learning-rate schedule, one
optimizer step, the evaluation and reading a checkpoint back. So a sweep row and a `python train.py` run with the same
settings see the same batches, take the same steps and report the same loss (tests/test_study_run.py).
"""
import glob
import math
import os
import time
from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import torch

from model import padded_vocab
from prepare_data import ensure_prepared, load_split, read_meta

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def device_setup(device='', dtype=''):
    """Where a run runs: device '' = cuda if available, else cpu; dtype '' = bfloat16 on CUDA, float32
    elsewhere. Returns .device, .type ('cuda', 'cpu', 'mps'), .dtype (its name), .ptdtype and .autocast (the
    context the forward runs in). A device that does not exist raises ValueError with what exists."""
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device={device!r}: use 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type == 'cuda':
        count = torch.cuda.device_count()
        if not count or (dev.index or 0) >= count:
            raise ValueError(f"device={device!r}: this machine has "
                             + (f"{count} CUDA device(s), cuda:0..cuda:{count - 1}" if count else "no CUDA device")
                             + " (CUDA_VISIBLE_DEVICES counts)")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dtype = dtype or ('bfloat16' if dev.type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32')
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: use {', '.join(DTYPES)} (or '' for the device's best)")
    ptdtype = DTYPES[dtype]
    autocast = nullcontext() if ptdtype == torch.float32 else torch.autocast(dev.type, dtype=ptdtype)
    return SimpleNamespace(device=device, type=dev.type, dtype=dtype, ptdtype=ptdtype, autocast=autocast)


def dataset_setup(dataset, data_dir='data'):
    """(folder, padded vocabulary size) of a prepared dataset; an embedded corpus is prepared on first use,
    any other unprepared one stops with the command that prepares it (prepare_data.ensure_prepared)."""
    path = ensure_prepared(dataset, data_dir)
    return path, padded_vocab(read_meta(path)['vocab_size'])


def load_splits(dataset_dir, device=None):
    """{'train', 'val'} tokens of a prepared dataset: memory-mapped (prepare_data.TokenSplit), or with a
    device the whole split on it as int32 (a batch is then one gather, no host work per step)."""
    splits = {s: load_split(dataset_dir, s) for s in ('train', 'val')}
    if device is None:
        return splits
    return {s: torch.from_numpy(d[:].astype(np.int32)).to(device) for s, d in splits.items()}


def memory_estimate_gb(config, tokens, device_type='cuda'):
    """Memory one training run needs, from its model config (model.GDNConfig) and the tokens of one
    micro-batch: fp32 weights, gradients and AdamW moments (16 bytes a parameter); the activations kept for
    the backward, ACTIVATION_BYTES per token, layer and unit of width; the logits' gradient kept by the fused
    cross-entropy (2 bytes per token and vocabulary entry) plus one fp32 chunk of them on the PyTorch path;
    and, on CUDA, the context and the compiler's workspace (~1.5 GB)."""
    from fused_ops import CE_CHUNK
    c = config
    params = c.vocab_size * c.width + c.n_layer * c.width * (c.n_head * (2 * c.head_k + 3 * c.head_v) + 3 * c.mlp_hidden)
    cuda = device_type == 'cuda'
    logits = (2 if cuda else 4) * tokens * c.vocab_size + 12 * min(tokens * c.vocab_size, CE_CHUNK)
    act = ACTIVATION_BYTES['cuda' if cuda else 'cpu']
    return (1.5 if cuda else 0.5) + (16 * params + act * tokens * c.n_layer * c.width + logits) / 2**30


# bytes kept for the backward per token, layer and unit of width: bf16 autocast with the Triton kernels on
# CUDA (measured with the heavier PyTorch kernel: an upper bound); fp32 with the PyTorch kernels on a CPU
# (train.py's peak resident memory at widths 256-768, 2-4 layers, 2-4K tokens a micro-batch: 0-12% below this)
ACTIVATION_BYTES = {'cuda': 160, 'cpu': 260}


# A run's time before it has timed itself (train.py's estimate, the sweep's plan): a forward and backward takes
# its FLOPs at a share of the device's measured matmul rate, and a cost per layer the FLOPs miss. On a GPU that
# is the host launching the layer's kernels, which overlaps the kernels: a pass takes the longer of the two (the
# steps of docs/benchmarks.md: host-bound at width 256, FLOP-bound from 768). On a CPU it is the PyTorch delta
# rule's loop over chunks, on the same cores: the two add (within 1.5x of the demo, the sweep's CPU grid and
# the main job at batch 2 on a 2-core CPU).
PASS_EFFICIENCY = {'cuda': 0.4, 'cpu': 0.5}
GPU_LAYER_SECONDS = 0.003      # a layer's launches in a compiled forward and backward
CPU_LAYER_SECONDS = 0.015      # a layer's chunk loop over 1024 tokens, forward and backward


def matmul_rate(dev):
    """FLOP/s of a square matmul in the run's precision on its device (device_setup's), measured for 0.2 s."""
    n = 4096 if dev.type == 'cuda' else 1024
    a = torch.randn(n, n, device=dev.device, dtype=dev.ptdtype)
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    a @ a
    sync()
    reps, t0 = 0, time.time()
    while time.time() - t0 < 0.2:
        a @ a
        reps += 1
        sync()
    return 2 * n ** 3 * reps / (time.time() - t0)


def pass_seconds(flops_per_token, n_layer, tokens, device_type, rate):
    """A forward and backward over `tokens` tokens, estimated (PASS_EFFICIENCY and the layer costs above)."""
    if device_type == 'cuda':
        return max(flops_per_token * tokens / (PASS_EFFICIENCY['cuda'] * rate), GPU_LAYER_SECONDS * n_layer)
    return flops_per_token * tokens / (PASS_EFFICIENCY['cpu'] * rate) + CPU_LAYER_SECONDS * n_layer * tokens / 1024


def duration(seconds):
    """Seconds, minutes or hours, by their size."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


CHECKPOINT_KEYS = ('model', 'optimizer', 'model_args', 'iter_num', 'best_val_loss', 'config', 'signature')


def checkpoints(out_dir):
    """The ckpt_*.pt files in out_dir, oldest first."""
    return sorted(glob.glob(os.path.join(out_dir, 'ckpt_*.pt')))


def load_checkpoint(out_dir, device='cpu'):
    """(path, checkpoint) of the newest checkpoint in out_dir that loads. A damaged one (cut short by a full
    disk, a copy that did not finish) is skipped with one line, for the one before it. Raises
    FileNotFoundError when none loads."""
    for path in reversed(checkpoints(out_dir)):
        try:
            checkpoint = torch.load(path, map_location=device, weights_only=False)
        except Exception as e:  # noqa: BLE001 - any reason it does not load: say so, try the older one
            reason = ' '.join(str(e).split())[:100]
            print(f"skipping {path}: it does not load ({type(e).__name__}: {reason}); trying an older one")
            continue
        missing = [k for k in CHECKPOINT_KEYS if k not in checkpoint] if isinstance(checkpoint, dict) else ['dict']
        if not missing:
            return path, checkpoint
        print(f"skipping {path}: not a train.py checkpoint (no {', '.join(missing)}); trying an older one")
    raise FileNotFoundError(f"{out_dir} holds no readable ckpt_*.pt")


def lr_at(it, lr, warmup_iters, decay_iters, min_lr, decay=True):
    """The LR of step `it` (0-based): linear warmup to `lr` over warmup_iters steps, then a cosine down to
    min_lr at decay_iters, then min_lr (nanoGPT's schedule; the paper's: 2k warmup, cosine to 5e-5)."""
    if not decay:
        return lr
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


class Batches:
    """The batches of a run: iteration `it`'s global batch is fixed by (seed, it) alone, so every run, width and DDP
    layout with the same seed sees the same tokens at the same step, and resuming is exact. Each split is cut into
    disjoint windows of block_size + 1 tokens (x = w[:-1], y = w[1:]) and training walks through them in a seeded random
    order: no token is seen twice before the whole split has been seen once (the next pass shifts the cut by a seeded
    offset and reshuffles). Evaluation uses the first windows of another fixed order, the same at every evaluation.
    data: {'train': tokens, 'val': tokens}, each a torch tensor (on any device: gathered there, no host work per step)
    or anything sliceable into numpy arrays (prepare_data.TokenSplit, a memmap)."""

    def __init__(self, data, batch_size, block_size, seed, device='cpu', accum=1, world=1, rank=0):
        self.data, self.B, self.T, self.seed = data, batch_size, block_size, seed
        self.device, self.accum, self.world, self.rank = torch.device(device), accum, world, rank
        self.orders = {}  # (split, pass) -> (offset, permutation of the window indices)
        self.prefetched = None
        for split, d in data.items():
            if len(d) < 2 * block_size:  # one window of block_size + 1 after an offset of up to block_size - 1
                raise ValueError(f"the {split} split has {len(d):,} tokens, too few for block_size={block_size}: "
                                 f"use --block_size={len(d) // 2} or less")

    def n_windows(self, split):
        return (len(self.data[split]) - self.T) // self.T  # leaves room for any offset < block_size

    def steps_per_epoch(self):
        """Optimizer steps in one pass over the training split (at least 1)."""
        return max(1, self.n_windows('train') // (self.B * self.accum * self.world))

    def order(self, split, n_pass):
        """(offset, permutation of the window indices) of pass n_pass through a split; pass -1: evaluation."""
        key = (split, n_pass)
        if key not in self.orders:
            if len(self.orders) > 8:
                self.orders.clear()
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + 7919 * n_pass + (split == 'val')) % 2**63)
            offset = int(torch.randint(self.T, (1,), generator=gen)) if n_pass > 0 else 0
            self.orders[key] = offset, torch.randperm(self.n_windows(split), generator=gen)
        return self.orders[key]

    def window_starts(self, split, it, micro):
        """Token offsets of the windows of micro-batch `micro` (this rank's) at iteration `it`;
        it < 0 is evaluation batch -1 - it."""
        n = self.n_windows(split)
        if it < 0:
            idx = (torch.arange(self.B) + (-1 - it) * self.B) % n
            offset, perm = self.order(split, -1)
            return offset + perm[idx] * self.T
        first = it * self.B * self.accum * self.world + (self.rank * self.accum + micro) * self.B
        idx = torch.arange(first, first + self.B)
        out = torch.empty(self.B, dtype=torch.long)
        for p in (idx // n).unique().tolist():  # a batch may run over the end of a pass
            sel = idx // n == p
            offset, perm = self.order(split, p)
            out[sel] = offset + perm[idx[sel] % n] * self.T
        return out

    def get(self, split, it, micro=0):
        """(x, y) of micro-batch `micro` at iteration `it`, on the device ([batch_size, block_size] int64)."""
        key = (split, it, micro)
        if self.prefetched is not None and self.prefetched[0] == key:
            return self.prefetched[1]
        ix = self.window_starts(split, it, micro)
        d = self.data[split]
        if isinstance(d, torch.Tensor):
            if d.is_cuda:  # from pageable memory the copy waits for the GPU's queue to drain: an idle gap
                ix = ix.pin_memory()  # every step
            ix = ix.to(d.device, non_blocking=True)
            w = d[ix[:, None] + torch.arange(self.T + 1, device=d.device)].long().to(self.device)
        else:
            w = torch.from_numpy(np.stack([d[i:i + self.T + 1] for i in ix.tolist()]).astype(np.int64))
            w = w.pin_memory().to(self.device, non_blocking=True) if self.device.type == 'cuda' else w
        return w[:, :-1], w[:, 1:]

    def prefetch(self, split, it, micro=0):
        """Start reading a micro-batch now (the copy overlaps the GPU's work); get() then returns it."""
        self.prefetched = None
        self.prefetched = ((split, it, micro), self.get(split, it, micro))


def train_step(model, optimizer, batches, it, lr, grad_clip=0.0, autocast=nullcontext(), scaler=None):
    """One optimizer step on iteration `it`'s global batch (batches.accum micro-batches, each rank its own under DDP):
    set the LRs, accumulate the gradients, clip their norm to grad_clip (0: no clipping), step. Returns the batch's mean
    loss and the gradient norm before clipping, as device tensors (no sync with the host, so the GPU runs ahead)."""
    for group in optimizer.param_groups:  # mup.py's per-group multipliers on top of the schedule's LR
        group['lr'] = lr * group['lr_mult']
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    loss_sum = 0.0
    for micro in range(batches.accum):
        if ddp:  # sync gradients only on the last micro-step
            model.require_backward_grad_sync = micro == batches.accum - 1
        x, y = batches.get('train', it, micro)
        if x.is_cuda:  # a new iteration for CUDA graphs (compile_mode='reduce-overhead'), else a no-op;
            torch.compiler.cudagraph_mark_step_begin()  # (it imports the inductor: not on the CPU)
        with autocast:
            loss = model(x, y)[1] / batches.accum
        nxt = (it, micro + 1) if micro + 1 < batches.accum else (it + 1, 0)
        batches.prefetch('train', *nxt)  # read the next micro-batch while the GPU works
        (scaler.scale(loss) if scaler is not None else loss).backward()
        loss_sum = loss_sum + loss.detach()
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for g in optimizer.param_groups for p in g['params']]
    # the norm is logged whether or not it is clipped (inf: measure only)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip else float('inf'))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm.detach()


@torch.no_grad()
def evaluate(model, batches, eval_iters, autocast=nullcontext(), splits=('train', 'val')):
    """Mean loss over eval_iters fixed batches per split (the same batches at every evaluation)."""
    was_training = model.training
    model.eval()
    out = {}
    for split in splits:
        total = 0.0
        for k in range(eval_iters):
            x, y = batches.get(split, -1 - k)
            with autocast:
                total = total + model(x, y)[1].float()
        out[split] = (total / eval_iters).item()
    model.train(was_training)
    return out
