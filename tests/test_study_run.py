"""One run of the study (study/run.py): a sweep row is the train.py run with the same settings; a worker's
cached model and init are keyed by the run's full model config (and seed), so a run never trains on another
run's model; a run gives what it gives alone; a worker drops its compiled graphs for each new model."""
import csv
import dataclasses
import math
import os
import subprocess
import sys

import pytest
import torch

import mup
from study import grid, run, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(data_dir, **over):
    return dict(sweep.DEFAULTS, data_dir=data_dir, device='cpu', workers=0, n_layer='1', batch_size=2, block_size=16,
                eval_iters=1, check_interval=1, base_width=256, **over)


def a_run(**over):
    return dict(dict(width=64, n_layer=1, depth_rule='none', lr=2 ** -8, parametrization='mup', optimizer='adamw',
                     seed=1337, steps=3, **mup.BASE_HPARAMS, weight_decay=0.1, weight_decay_rule='paper'), **over)


def test_the_model_cache_is_keyed_by_the_full_config(data_dir, monkeypatch):
    """Two runs that differ only in init_std (or the gates' LR multiplier, or the parametrization among the μP
    variants) get models and inits of their own; runs with one config (another LR, decay, optimizer) reuse the
    worker's model, and its init where the seed is the same too."""
    built, drawn = [], []
    real_build, real_reset = run.build_model, run.GDN.reset_parameters
    monkeypatch.setattr(run, 'build_model', lambda c, family='gdn': built.append(c) or real_build(c))
    monkeypatch.setattr(run.GDN, 'reset_parameters',  # the seeded draws: the runs' inits
                        lambda self, seed=None: (seed is not None and drawn.append(seed), real_reset(self, seed)))
    runner = run.Runner(config(data_dir))

    def model_and_init(r):
        raw, _ = runner.model(r)
        runner.initialise(r)
        return raw, [p.detach().clone() for p in raw.parameters()]
    base, init = model_and_init(a_run())
    for same in (a_run(lr=2 ** -6), a_run(weight_decay=0.0), a_run(optimizer='sgd')):
        raw, again = model_and_init(same)
        assert raw is base and len(built) == 1 and len(drawn) == 1
        assert all(torch.equal(a, b) for a, b in zip(init, again))
    raw, reseeded = model_and_init(a_run(seed=7))
    assert raw is base and len(drawn) == 2 and not torch.equal(reseeded[0], init[0])
    for other in (a_run(init_std=0.04), a_run(gate_lr_mult=4.0), a_run(parametrization='mup_fixed_fanout')):
        raw, _ = model_and_init(other)
        assert raw is not base and built[-1] == run.model_config(other, runner.cfg, runner.vocab_size)
        base = raw
    assert len(built) == 4 and len(drawn) == 5

    def hidden_std(r):  # the init follows the config its model was built with
        raw, _ = model_and_init(r)
        return torch.cat([p.detach().flatten() for n, p in raw.named_parameters() if mup.group_of(n) == 'hidden']).std().item()
    assert hidden_std(a_run(init_std=0.01)) == pytest.approx(hidden_std(a_run(init_std=0.04)) / 4, rel=0.05)


def test_a_run_does_not_depend_on_the_runs_before_it(data_dir, tmp_path, monkeypatch):
    """A worker draws the init once per model config and seed and copies it for the other LRs; each run of
    the grid gives what it gives alone in a fresh worker."""
    import model
    seeded, real = [], model.GDN.reset_parameters
    monkeypatch.setattr(model.GDN, 'reset_parameters',
                        lambda self, seed=None: (seed is not None and seeded.append(seed), real(self, seed)))
    cfg = config(data_dir, out=str(tmp_path / 'grid.csv'), widths='64,128', optimizers='adamw', adamw_lrs='-8,-6',
                 max_iters=5)
    sweep.sweep(cfg)
    assert len(seeded) == 4  # 2 widths x SP/μP, each for 2 LRs
    with open(cfg['out'], newline='') as f:
        rows = {grid.run_key(r): r for r in csv.DictReader(f)}
    for lr in (-8, -6):
        alone = dict(cfg, out=str(tmp_path / f'alone{lr}.csv'), widths='128', adamw_params='mup', adamw_lrs=str(lr))
        sweep.sweep(alone)
        with open(alone['out'], newline='') as f:
            (row,) = csv.DictReader(f)
        for k in ('final_val_loss', 'final_train_loss'):
            assert row[k] == rows[grid.run_key(row)][k], (lr, k)


def test_a_worker_drops_old_compiled_graphs_per_model(data_dir, tmp_path, monkeypatch):
    """Every model a worker builds shares GDN.forward's dynamo cache; without a reset per new model the cache
    fills (recompile_limit) and later models silently run eagerly. One reset each time the worker builds a
    model, none for a run on the model it has (2 widths x SP/μP x 2 LRs: 4 models, 8 runs)."""
    resets, calls, real = [], [], run.Runner.run
    monkeypatch.setattr(torch._dynamo, 'reset', lambda: resets.append(1))
    monkeypatch.setattr(run.Runner, 'run', lambda self, r: calls.append(r) or real(self, r))
    cfg = config(data_dir, out=str(tmp_path / 'res.csv'), widths='64,128', optimizers='adamw', adamw_lrs='-8,-6',
                 max_iters=2)
    sweep.sweep(cfg)
    keys = [dataclasses.astuple(run.model_config(r, cfg, 84)) for r in calls]
    built = 1 + sum(a != b for a, b in zip(keys, keys[1:]))
    assert len(calls) == 8 and len(set(keys)) == 4 and len(resets) == built < len(calls)


def test_a_sweep_row_is_a_train_py_run(data_dir, tmp_path):
    """The sweep trains through training.py as train.py does: the same settings give the same losses."""
    out = str(tmp_path / 'sweep.csv')
    cfg = dict(sweep.DEFAULTS, out=out, data_dir=data_dir, widths='64', base_width=32, optimizers='adamw,sgd',
               adamw_params='mup', sgd_params='mup', adamw_lrs='-7', sgd_lrs='-3', output_mult='2',
               init_std='0.03', max_iters=8, warmup_iters=2, n_layer=2, n_head=2, batch_size=3, block_size=24,
               eval_iters=2, workers=0, device='cpu', check_interval=100)
    sweep.sweep(cfg)
    rows = {r['optimizer']: r for r in grid.load_results(out)}
    for opt, r in rows.items():
        args = run.train_py_args(cfg, r)
        p = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), *args, f'--out_dir={tmp_path / opt}',
                            '--device=cpu', '--log_interval=1'],
                           capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
        assert p.returncode == 0, p.stderr[-2000:]
        log = list(csv.DictReader(open(tmp_path / opt / 'log.csv')))
        val = [float(x['val_loss']) for x in log if x['val_loss']]
        train = [float(x['train_loss']) for x in log if x['train_loss']]
        assert len(val) == 1 and math.isfinite(val[0])
        assert val[0] == pytest.approx(r['val'], abs=2e-5), (opt, val, r)
        assert train[0] == pytest.approx(r['train'], abs=2e-5), (opt, train, r)
