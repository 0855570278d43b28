"""The sweep on a Ray cluster (study/ray_pool.py), on a local cluster of 2 CPUs: the same rows as the runs in this
process (losses to the printed digit), a task whose process dies mid-run is run again and its row written once,
a cluster that does not answer is one line, a GPU share sized by the run's memory, and a sweep without --ray
never imports Ray."""
import csv
import os
import subprocess
import sys

import pytest

from study import grid, ray_pool, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def cluster():
    """One local cluster for the module (2 CPUs, no dashboard): the sweeps in this process run on it."""
    ray = pytest.importorskip('ray')
    ray_pool.connect('auto', num_cpus=2)
    yield ray
    ray.shutdown()


def args(data_dir, out, *extra):
    return [f'--out={out}', f'--data_dir={data_dir}', '--widths=64,128', '--optimizers=adamw', '--adamw_params=mup',
            '--adamw_lrs=-8,-6', '--max_iters=4', '--n_layer=1', '--batch_size=2', '--block_size=16',
            '--eval_iters=1', '--check_interval=1', '--device=cpu', '--base_width=64', '--live_plot=False', *extra]


def rows(out):
    """{run key: the row as written, but its seconds}"""
    with open(out, newline='') as f:
        return {grid.run_key(r): dict(r, seconds=None) for r in csv.DictReader(f)}


def test_the_rows_of_a_ray_sweep_are_the_rows_of_the_runs_in_this_process(cluster, data_dir, tmp_path, capsys):
    """Each row of the tiny grid (its width-64 rows trained as SP, the base width) holds the same losses to the
    printed digit, whether the runs train here or as tasks of the cluster; a re-run on the cluster
    finds every row and trains nothing."""
    here, there = str(tmp_path / 'here.csv'), str(tmp_path / 'there.csv')
    sweep.main(args(data_dir, here, '--workers=0'))
    sweep.main(args(data_dir, there, '--ray=auto'))
    out = capsys.readouterr().out
    assert 'as tasks of the Ray cluster' in out and "ray: the Ray cluster this process is in" in out
    assert len(rows(here)) == 4 and rows(here) == rows(there)
    sweep.main(args(data_dir, there, '--ray=auto'))
    assert '4 already in' in capsys.readouterr().out and len(rows(there)) == 4


def test_a_task_that_dies_mid_run_is_run_again_and_its_row_written_once(cluster, data_dir, tmp_path, monkeypatch):
    """The first task to start kills its process (as a lost node would); Ray runs it again, and the sweep
    writes every row once."""
    marker = str(tmp_path / 'died')
    real = ray_pool.run_task

    def dies_once(cfg, r):
        if not os.path.exists(marker):
            open(marker, 'w').close()
            os._exit(1)
        return real(cfg, r)
    monkeypatch.setattr(ray_pool, 'run_task', dies_once)
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--ray=auto'))
    with open(out, newline='') as f:
        got = [grid.run_key(r) for r in csv.DictReader(f)]
    assert os.path.exists(marker) and len(got) == 4 and len(set(got)) == 4


def test_a_cluster_that_does_not_answer_is_one_line(data_dir, tmp_path):
    pytest.importorskip('ray')
    with pytest.raises(SystemExit) as e:
        sweep.main(args(data_dir, str(tmp_path / 'res.csv'), '--ray=127.0.0.1:9'))
    assert str(e.value).startswith('error: no Ray cluster answers at 127.0.0.1:9') and '\n' not in str(e.value)


def test_a_run_asks_for_its_memory_share_of_a_card():
    assert ray_pool.share_of(7.2, 72.0) == 0.1 and ray_pool.share_of(7.3, 72.0) == 0.11
    assert ray_pool.share_of(500.0, 72.0) == 1.0  # a card alone: the out-of-memory rule counts it as alone
    assert ray_pool.gpu_index('1', None) == 1 and ray_pool.gpu_index('6', '4,6') == 1


def test_a_sweep_without_ray_never_imports_it(data_dir, tmp_path):
    code = ("import sys; from study import sweep; sweep.main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules, 'ray imported'; print('NO RAY')")
    p = subprocess.run([sys.executable, '-c', code, *args(data_dir, str(tmp_path / 'res.csv'), '--widths=64',
                                                           '--adamw_lrs=-8', '--workers=0')],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and 'NO RAY' in p.stdout, p.stderr[-2000:]
