"""Where a sweep run's time goes outside its training steps (the sweep's gap to train.py's tokens/s).
Run on a GPU machine (on a CPU it runs, slowly, and measures the CPU):

    python -m study.experiments.sweep_throughput.sweep_overhead config/sweep_paper.py --widths=1024 \
        --max_iters=150 --eval_interval=0 --runs=4

Runs `runs` AdamW μP runs of the sweep's Runner (study/run.py) in this process (the LRs of a grid, one model, so
the first run builds and compiles it and the others reuse it, as a sweep worker does) and prints per
run: the model (build / compile), the init, the optimizer's construction, the first step (its state is
created there), the other steps, the evaluations, and the rest. Each timed part synchronises the
device before and after, so the parts add up to the run's wall time.
"""
import time
from collections import defaultdict

import torch

import model
import training
from configurator import configure
from study import grid, run, sweep

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


DEFAULTS = dict(sweep.DEFAULTS, runs=4)  # runs: how many runs of the grid's widest width to time


def main():
    cfg = dict(DEFAULTS)
    configure(cfg)
    r0 = [r for r in grid.grid(dict(cfg, optimizers='adamw', adamw_params='mup'))
          if r['parametrization'] == 'mup' or r['width'] == cfg['base_width']]
    width = max(r['width'] for r in r0)
    todo = [r for r in r0 if r['width'] == width][:cfg['runs']]
    runner = run.Runner(cfg)
    run.Runner.model = timed('model', run.Runner.model)
    run.Runner.initialise = timed('init', run.Runner.initialise)
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
        row = runner.run(r)
        sync()
        total = time.perf_counter() - t
        rest = total - sum(parts.values())  # the other steps, and the host code between them
        steps = r['steps'] - 1
        line = ' '.join(f"{k} {v:.3f}" for k, v in parts.items())
        print(f"run {i} lr {r['lr']:.2e}: total {total:.3f} = {line} + {steps} steps and the rest {rest:.3f} "
              f"({rest / steps * 1e3:.1f} ms a step); {row['tokens'] / total:,.0f} tok/s over the run, "
              f"{row['tokens'] / (rest / steps * r['steps']):,.0f} over the steps", flush=True)


if __name__ == '__main__':
    main()
