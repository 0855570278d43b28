"""sweep.py on a tiny grid, on the CPU: rows written and flushed, re-runs skip finished runs, an
interrupted sweep keeps its rows, a diverging LR is marked diverged, the plot and the summary."""
import csv
import os

import pytest

import sweep
from prepare_data import ensure_prepared


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('data')
    ensure_prepared('shakespeare_char', str(d))
    return str(d)


def args(data_dir, out, *extra):
    return [f'--out={out}', f'--data_dir={data_dir}', '--widths=64,128', '--optimizers=adamw',
            '--adamw_params=sp,mup', '--adamw_lrs=-8,-6', '--max_iters=5', '--n_layer=1', '--batch_size=2',
            '--block_size=16', '--eval_iters=1', '--check_interval=1', '--workers=0', '--device=cpu',
            *extra]


def rows(out):
    with open(out, newline='') as f:
        return list(csv.DictReader(f))


def key(r):
    return (r['width'], r['lr'], r['parametrization'], r['optimizer'], r['seed'], r['steps'])


def count_runs(monkeypatch, fail_at=None):
    """Count Trainer.run calls; fail on call number `fail_at` (a crash or kill mid-sweep)."""
    calls = []
    real = sweep.Trainer.run

    def run(self, r):
        calls.append(r)
        if len(calls) == fail_at:
            raise RuntimeError('killed')
        return real(self, r)
    monkeypatch.setattr(sweep.Trainer, 'run', run)
    return calls


def test_grid_writes_rows_and_rerun_skips(data_dir, tmp_path, monkeypatch):
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out))
    got = rows(out)
    assert len(got) == 8 and len({key(r) for r in got}) == 8
    assert list(got[0]) == sweep.CSV_COLUMNS
    assert {r['width'] for r in got} == {'64', '128'} and {r['parametrization'] for r in got} == {'sp', 'mup'}
    assert {float(r['lr']) for r in got} == {2 ** -8, 2 ** -6}
    for r in got:
        assert r['diverged'] == 'False' and r['steps'] == '5' and r['tokens'] == str(5 * 2 * 16)
        assert 0 < float(r['final_val_loss']) < 10 and 0 < float(r['final_train_loss']) < 10
    calls = count_runs(monkeypatch)
    sweep.main(args(data_dir, out))
    assert calls == [] and rows(out) == got  # nothing re-run, nothing written twice
    # a longer run is a different run: the grid is extended, not skipped
    sweep.main(args(data_dir, out, '--widths=64', '--adamw_params=mup', '--max_iters=6'))
    assert len(calls) == 2 and len(rows(out)) == 10


def test_interrupted_sweep_keeps_rows_and_resumes(data_dir, tmp_path, monkeypatch):
    out = str(tmp_path / 'res.csv')
    calls = count_runs(monkeypatch, fail_at=4)
    with pytest.raises(RuntimeError, match='killed'):
        sweep.main(args(data_dir, out))
    first = rows(out)
    assert len(first) == 3 and len(calls) == 4
    with open(out, 'a') as f:  # a row torn by a kill mid-write
        f.write('64,0.0039')
    monkeypatch.undo()
    calls = count_runs(monkeypatch)
    sweep.main(args(data_dir, out))
    final = rows(out)
    assert len(calls) == 5  # only the runs that had not finished
    good = [r for r in final if r['diverged'] in ('True', 'False')]
    assert len(good) == 8 and len({key(r) for r in good}) == 8 and good[:3] == first


def test_diverging_lr_is_marked(data_dir, tmp_path):
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--widths=64', '--adamw_params=sp', '--adamw_lrs=-8,6', '--max_iters=8'))
    by_lr = {float(r['lr']): r for r in rows(out)}
    assert by_lr[2 ** -8]['diverged'] == 'False'
    bad = by_lr[2 ** 6]
    assert bad['diverged'] == 'True'
    assert int(bad['tokens']) < 8 * 2 * 16  # stopped early
    summary = sweep.summarize(sweep.load_results(out))
    assert summary == {}  # one width only: no spread; and the diverged LR is never an optimum


def test_changed_settings_are_refused(data_dir, tmp_path):
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--widths=64', '--adamw_params=sp', '--adamw_lrs=-8'))
    with pytest.raises(SystemExit, match='n_layer'):
        sweep.main(args(data_dir, out, '--widths=64', '--adamw_params=sp', '--adamw_lrs=-8', '--n_layer=2'))


def test_plot_and_summary(data_dir, tmp_path, capsys):
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out))
    capsys.readouterr()
    png = sweep.main(args(data_dir, out, '--plot'))
    assert png == str(tmp_path / 'res.png') and os.path.getsize(png) > 10_000
    text = capsys.readouterr().out
    assert 'AdamW, SP:' in text and 'AdamW, μP:' in text and 'spread x' in text
    summary = sweep.summarize(sweep.load_results(out))
    assert set(summary) == {('adamw', 'sp'), ('adamw', 'mup')}
    for s in summary.values():
        assert set(s['best']) == {64, 128} and s['spread'] in (1.0, 4.0)


def test_worker_processes(data_dir, tmp_path):
    """The multi-process path (spawned workers, the driver writes the rows)."""
    out = str(tmp_path / 'res.csv')
    a = [x for x in args(data_dir, out, '--widths=64', '--adamw_params=mup') if x != '--workers=0']
    sweep.main(a + ['--workers=2'])
    assert len(rows(out)) == 2 and all(r['diverged'] == 'False' for r in rows(out))


def test_lr_grid_spec():
    assert sweep.parse_exponents('-12:-5') == list(range(-12, -4))
    assert sweep.parse_exponents('-2:0:0.5') == [-2, -1.5, -1, -0.5, 0]
    assert sweep.parse_exponents('-3,1') == [-3, 1]
    cfg = dict(sweep.DEFAULTS)
    g = sweep.grid(cfg)
    assert len(g) == 4 * (2 * 8 + 3 * 8) and g[0]['width'] == 1024  # widest first
