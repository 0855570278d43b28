"""Tuning the base values at the base width (study/tune.py): the config file it writes is taken by train.py at
another width and by the sweep, which adds its LR to the grid and marks it; a best value at its list's edge is
said."""
import math
import os
import subprocess
import sys

import pytest

from prepare_data import ensure_prepared
from study import grid, sweep, tune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tune_writes_a_config_that_train_and_sweep_take(tmp_path, monkeypatch):
    """μTransfer in one command: the LR and output_mult tuned at the base width, written as a config file; train.py
    runs it at another width, and the sweep takes it unchanged (its LR added to the grid, judged and marked)."""
    data_dir = str(tmp_path / 'data')
    ensure_prepared('shakespeare_char', data_dir)
    out, tuned = str(tmp_path / 'tune.csv'), str(tmp_path / 'tuned.py')
    common = [f'--data_dir={data_dir}', '--optimizers=adamw', '--max_iters=5', '--n_layer=1', '--batch_size=2',
              '--block_size=16', '--eval_iters=1', '--check_interval=1', '--workers=0', '--device=cpu']
    tune.main([f'--out={out}', *common, '--widths=64', '--base_width=64', '--adamw_params=sp', '--adamw_lrs=-9:-5',
               '--output_mult=1,4', '--tune=output_mult', f'--tuned_out={tuned}'])
    values = {}
    exec(open(tuned).read(), values)
    assert values['dataset'] == 'shakespeare_char' and values['base_width'] == 64
    assert values['output_mult'] in (1.0, 4.0) and 2 ** -9 <= values['learning_rate'] <= 2 ** -5
    assert f"# Written by `python -m study.tune --out={out}" in open(tuned).read()
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), tuned, '--width=128', '--mup=True',
                        '--n_layer=1', '--batch_size=2', '--block_size=16', '--max_iters=3', '--eval_iters=1',
                        f'--data_dir={data_dir}', f'--out_dir={tmp_path / "run"}', '--device=cpu'],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and 'final val loss' in r.stdout, r.stderr[-2000:]
    assert f"lr {values['learning_rate']:.3g}, output_mult {values['output_mult']:g}" in r.stdout
    check = [tuned, f'--out={tmp_path / "check.csv"}', *common, '--widths=128', '--base_width=64',
             '--adamw_params=mup', '--adamw_lrs=-8']
    sweep.main(check)
    got = grid.load_results(str(tmp_path / 'check.csv'))
    assert {r['lr'] for r in got} == {2 ** -8, values['learning_rate']}
    assert {r['output_mult'] for r in got} == {values['output_mult']}
    import matplotlib.axes
    lines, axvline = [], matplotlib.axes.Axes.axvline
    monkeypatch.setattr(matplotlib.axes.Axes, 'axvline', lambda ax, x, **kw: lines.append(x) or axvline(ax, x, **kw))
    sweep.main(check + ['--plot'])
    assert lines == [pytest.approx(math.log2(values['learning_rate']))] * 2  # the check's figures mark the tuned LR


def test_tune_says_when_the_best_value_is_at_its_lists_edge():
    """A tuned key whose best candidate is the first or last of three or more may have its optimum beyond the
    list: the report line (printed, and written into the config) says so; an interior best, or a list of two,
    says nothing."""
    assert tune.list_edge([0.0, 0.1, 0.2], 0.2, 'weight_decay') == \
        " (the best is the list's largest: extend weight_decay and tune again)"
    assert "smallest: extend init_std" in tune.list_edge([0.01, 0.02, 0.04], 0.01, 'init_std')
    assert tune.list_edge([2.0, 4.0, 8.0], 4.0, 'output_mult') == ''
    assert tune.list_edge([1.0, 4.0], 4.0, 'output_mult') == ''
