"""
One run of a sweep: its model built from its own settings, trained through training.py as train.py trains
(the same batches, schedule, step and evaluation), and the row it gives.

A Runner lives in a worker process (or the sweep's own) and trains one run at a time. It keeps its last
model, compiled once, for the next run whose model config is the same (the full config: a run that differs
in anything the model holds gets a model of its own), and the init drawn for (config, seed), copied for the
next run with both equal (the other LRs of a grid).
"""
import dataclasses
import math
import time

import torch

import training
from model import GDN, GDNConfig
from study.grid import HPARAMS, describe


def model_config(run, cfg, vocab_size):
    """The model config of one run: every setting its forward pass and its init depend on, fixed before the
    model is built. fla's model takes the same config (fla_mup.FlaLM builds fla's at its shapes)."""
    return GDNConfig(width=run['width'], n_layer=run['n_layer'], n_head=cfg['n_head'], vocab_size=vocab_size,
                     parametrization=run['parametrization'], base_width=cfg['base_width'],
                     depth_rule=run['depth_rule'], base_depth=cfg['base_depth'],
                     kernel_backend=cfg['kernel_backend'], **{h: float(run[h]) for h in HPARAMS})


def build_model(config, family='gdn'):
    """The model of a config: the one place a run's model is made. family: 'gdn' (model.py's) or 'fla'
    (flash-linear-attention's GatedDeltaNetForCausalLM behind the same interface, imported only then)."""
    if family == 'fla':
        from fla_mup import FlaLM
        return FlaLM(config)
    return GDN(config)


def warmup(cfg, steps):
    return steps // 10 if cfg['warmup_iters'] < 0 else cfg['warmup_iters']


def train_py_args(cfg, r):
    """The `python train.py` arguments that make the same run as sweep row r (tests/test_study_run.py)."""
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


class Runner:
    """The device, the data (on the device) and the last model of one worker; trains one run at a time."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.dev = training.device_setup(cfg['device'], cfg['dtype'])
        if self.dev.ptdtype == torch.float16:
            raise ValueError("dtype=float16: the sweep runs bfloat16 or float32 (float16 needs train.py's GradScaler)")
        folder, self.vocab_size = training.dataset_setup(cfg['dataset'], cfg['data_dir'])
        self.data = training.load_splits(folder, self.dev.device)
        self.key, self.raw, self.fwd = None, None, None
        self.init_key, self.init = None, None  # initialise()'s copy of the last init, on the host
        self.stop = lambda: None  # called after each step: raises to stop the run (the sweep's Ctrl-C)

    def model(self, r):
        """The worker's model for run r: built (and compiled) once per model config, then reused."""
        config = model_config(r, self.cfg, self.vocab_size)
        key = dataclasses.astuple(config)
        if key != self.key:
            self.release()  # one model per worker: the driver budgets device memory per run
            # drop the old model's compiled graphs: they share GDN.forward's cache, and once it is full
            # (recompile_limit) dynamo silently runs every later model eagerly
            torch._dynamo.reset()
            self.raw = build_model(config, self.cfg['model']).to(self.dev.device)
            compiled = self.cfg['compile'] and self.dev.type == 'cuda'
            self.fwd = torch.compile(self.raw, mode=self.cfg['compile_mode'] or None) if compiled else self.raw
            self.key = key
        return self.raw, self.fwd

    def initialise(self, r):
        """reset_parameters(seed), drawn once per model config and seed (all the init depends on) and copied
        for the runs that share both: the draws run on the CPU, a large part of a short run."""
        key = (self.key, r['seed'])
        if key == self.init_key:
            with torch.no_grad():
                for p, t in zip(self.raw.parameters(), self.init):
                    p.copy_(t, non_blocking=True)
            return
        self.raw.reset_parameters(r['seed'])
        pin = self.dev.type == 'cuda'
        self.init = [torch.empty(p.shape, dtype=p.dtype, pin_memory=pin).copy_(p) for p in self.raw.parameters()]
        self.init_key = key

    def run(self, r):
        """Train run r; its row: r's labels and the run's results, and each step's loss and gradient norm
        (train_losses, grad_norms: for the trackers, not the CSV)."""
        c, dev = self.cfg, self.dev
        raw, model = self.model(r)
        self.initialise(r)
        raw.train()
        optim = raw.configure_optimizer(r['optimizer'], r['lr'], r['weight_decay'], (c['beta1'], c['beta2']),
                                        c['momentum'], dev.type, r['weight_decay_rule'])
        batches = training.Batches(self.data, c['batch_size'], c['block_size'], r['seed'], dev.device,
                                   c['gradient_accumulation_steps'])
        steps, diverged, init_loss, last = r['steps'], False, None, float('nan')
        losses = torch.zeros(steps, device=dev.device)
        norms = torch.zeros(steps, device=dev.device)
        curve, done, beat = [], 0, time.time()
        for it in range(steps):
            lr = training.lr_at(it, r['lr'], warmup(c, steps), steps, c['min_lr'])
            losses[it], norms[it] = training.train_step(model, optim, batches, it, lr, c['grad_clip'], dev.autocast)
            done = it + 1
            self.stop()
            if it == 0 or done % c['check_interval'] == 0 or done == steps:
                last = losses[it].item()  # the only host sync in the loop, besides the heartbeat's
                if it == 0:
                    init_loss = last
                if not math.isfinite(last) or last > c['diverge_factor'] * init_loss:
                    diverged = True
                    break
            if c['heartbeat'] and time.time() - beat >= c['heartbeat'] and done < steps:
                beat = time.time()
                print(f"  {describe(r)}: step {done}/{steps}, loss {losses[it].item():.4f}", flush=True)
            if c['eval_interval'] and done % c['eval_interval'] == 0 and done < steps:
                val = training.evaluate(model, batches, c['eval_iters'], dev.autocast, ('val',))['val']
                curve.append(f"{done}:{val:.4f}")
        train_loss = val_loss = float('nan')
        if not diverged:
            ev = training.evaluate(model, batches, c['eval_iters'], dev.autocast)
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
                    val_curve=';'.join(curve), train_losses=losses[:done].tolist(), grad_norms=n.tolist())

    def release(self):
        """Drop the model (a new one comes, or the device ran out of memory) and the cached blocks."""
        self.raw = self.fwd = self.key = None
        self.init_key = self.init = None
        if self.dev.type == 'cuda':
            import gc
            gc.collect()
            torch.cuda.empty_cache()

    def peak_gb(self):
        if self.dev.type != 'cuda':
            return 0.0
        peak = torch.cuda.max_memory_reserved() / 2**30
        torch.cuda.reset_peak_memory_stats()
        return peak
