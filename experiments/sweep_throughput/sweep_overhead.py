"""Where a sweep run's time goes outside its training steps (the sweep's gap to train.py's tokens/s).
Run on a GPU machine (on a CPU it runs, slowly, and measures the CPU):

    python experiments/sweep_throughput/sweep_overhead.py config/sweep_paper.py --widths=1024 --max_iters=150 \
        --eval_interval=0 --runs=4

Runs `runs` AdamW μP runs of the sweep's Trainer in this process (the LRs of a grid, one model, so
the first run builds and compiles it and the others reuse it, as a sweep worker does) and prints per
run: the model (build / compile), the init, the optimizer's construction, the first step (its state is
created there), the other steps, the evaluations, and the rest. Each timed part synchronises the
device before and after, so the parts add up to the run's wall time.
"""
import os
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
import torch  # noqa: E402

import model  # noqa: E402
import sweep  # noqa: E402
import training  # noqa: E402

parts = defaultdict(float)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(name, fn):
    def wrapper(*a, **kw):
        sync()
        t = time.perf_counter()
        out = fn(*a, **kw)
        sync()
        parts[name] += time.perf_counter() - t
        return out
    return wrapper


def main(argv):
    from configurator import apply_config
    runs = 4
    for a in list(argv):
        if a.startswith('--runs='):
            runs = int(a.split('=')[1])
            argv.remove(a)
    cfg = dict(sweep.DEFAULTS)
    apply_config(argv, cfg)
    cfg['eval_interval'] = cfg['eval_interval'] or 0
    r0 = [r for r in sweep.grid(dict(cfg, optimizers='adamw', adamw_params='mup'))
          if r['parametrization'] == 'mup' or r['width'] == cfg['base_width']]
    width = max(r['width'] for r in r0)
    todo = [r for r in r0 if r['width'] == width][:runs]
    trainer = sweep.Trainer(cfg)
    sweep.Trainer.model = timed('model', sweep.Trainer.model)
    sweep.Trainer.initialise = timed('init', sweep.Trainer.initialise)
    model.GDN.configure_optimizer = timed('optimizer', model.GDN.configure_optimizer)
    training.evaluate = timed('eval', training.evaluate)
    step, first_step = training.train_step, timed('first step', training.train_step)

    def train_step(*a, **kw):  # iteration 0 (a[3]) creates the optimizer state
        return (first_step if a[3] == 0 else step)(*a, **kw)
    training.train_step = train_step
    print(f"width {width}, {cfg['max_iters']} steps of {cfg['batch_size']} x {cfg['block_size']}, "
          f"{len(todo)} runs (s):")
    for i, r in enumerate(todo):
        parts.clear()
        sync()
        t = time.perf_counter()
        row = trainer.run(r)
        sync()
        total = time.perf_counter() - t
        rest = total - sum(parts.values())  # the other steps, and the host code between them
        steps = r['steps'] - 1
        line = ' '.join(f"{k} {v:.3f}" for k, v in parts.items())
        print(f"run {i} lr {r['lr']:.2e}: total {total:.3f} = {line} + {steps} steps and the rest {rest:.3f} "
              f"({rest / steps * 1e3:.1f} ms a step); {row['tokens'] / total:,.0f} tok/s over the run, "
              f"{row['tokens'] / (rest / steps * r['steps']):,.0f} over the steps", flush=True)


if __name__ == '__main__':
    main(sys.argv[1:])
