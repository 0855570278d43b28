"""training.py, the one definition of the batches, the schedule and the step: a sweep row and a train.py
run with the same settings give the same loss; the batches never repeat a token within a pass and do not
depend on the DDP layout; the schedule's shape."""
import csv
import math
import os
import subprocess
import sys

import pytest
import torch

import sweep
import training
from prepare_data import ensure_prepared

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_schedule():
    lr = [training.lr_at(it, 1.0, 10, 100, 0.1) for it in range(120)]
    assert lr[0] == pytest.approx(1 / 11) and lr[9] == pytest.approx(10 / 11)  # linear warmup
    assert lr[10] == pytest.approx(1.0) and max(lr) == pytest.approx(1.0)
    assert lr[55] == pytest.approx(0.1 + 0.45)  # the cosine's midpoint
    assert lr[100] == pytest.approx(0.1) and lr[119] == 0.1  # then min_lr
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))
    assert training.lr_at(50, 0.3, 10, 100, 0.0, decay=False) == 0.3


def tokens(n):
    return {'train': torch.arange(n), 'val': torch.arange(n // 4)}


def test_no_token_twice_within_a_pass():
    data = tokens(20_000)
    b = training.Batches(data, batch_size=4, block_size=32, seed=7)
    n = b.n_windows('train')
    starts = torch.cat([b.window_starts('train', it, 0) for it in range(n // 4)])
    assert len(starts.unique()) == len(starts) == n - n % 4  # disjoint windows, each once
    x, y = b.get('train', 3)
    assert x.shape == (4, 32) and torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(y[:, -1], x[:, -1] + 1)  # windows of consecutive tokens (here: token i == i)
    # the next pass reads the split again, cut at another offset and in another order
    later = torch.cat([b.window_starts('train', it, 0) for it in range(n // 4, 2 * (n // 4))])
    assert (later % 32 != 0).all() or not torch.equal(later.sort()[0], starts.sort()[0])
    assert (later + 33 <= 20_000).all()


def test_batches_do_not_depend_on_the_layout():
    """Iteration it's global batch is the same for 1 process x 4 micro-batches and 2 ranks x 2."""
    data = tokens(50_000)
    one = training.Batches(data, 2, 16, seed=1, accum=4)
    ranks = [training.Batches(data, 2, 16, seed=1, accum=2, world=2, rank=r) for r in (0, 1)]
    for it in (0, 5):
        a = torch.cat([one.get('train', it, m)[0] for m in range(4)])
        b = torch.cat([ranks[r].get('train', it, m)[0] for r in (0, 1) for m in (0, 1)])
        assert torch.equal(a, b)
    # eval batches are fixed and not the training ones
    assert torch.equal(one.get('val', -1)[0], training.Batches(data, 2, 16, seed=1).get('val', -1)[0])
    assert not torch.equal(one.get('val', -1)[0], one.get('val', -2)[0])


def test_a_sweep_row_is_a_train_py_run(tmp_path):
    """The sweep trains through training.py as train.py does: the same settings give the same losses."""
    data_dir = str(tmp_path / 'data')
    ensure_prepared('shakespeare_char', data_dir)
    out = str(tmp_path / 'sweep.csv')
    cfg = dict(sweep.DEFAULTS, out=out, data_dir=data_dir, widths='64', base_width=32, optimizers='adamw,sgd',
               adamw_params='mup', sgd_params='mup', adamw_lrs='-7', sgd_lrs='-3', output_mult='2',
               init_std='0.03', max_iters=8, warmup_iters=2, n_layer=2, n_head=2, batch_size=3, block_size=24,
               eval_iters=2, workers=0, device='cpu', check_interval=100)
    sweep.sweep(cfg)
    rows = {r['optimizer']: r for r in sweep.load_results(out)}
    for opt, run in rows.items():
        args = sweep.train_py_args(cfg, run)
        p = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), *args, f'--out_dir={tmp_path / opt}',
                            '--device=cpu', '--log_interval=1'],
                           capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
        assert p.returncode == 0, p.stderr[-2000:]
        log = list(csv.DictReader(open(tmp_path / opt / 'log.csv')))
        val = [float(x['val_loss']) for x in log if x['val_loss']]
        train = [float(x['train_loss']) for x in log if x['train_loss']]
        assert len(val) == 1 and math.isfinite(val[0])
        assert val[0] == pytest.approx(run['val'], abs=2e-5), (opt, val, run)
        assert train[0] == pytest.approx(run['train'], abs=2e-5), (opt, train, run)
