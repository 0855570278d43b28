"""sweep.py on a tiny grid, on the CPU: rows written and flushed, re-runs skip finished runs, an
interrupted sweep keeps its rows, a run out of memory is retried later, a diverging LR is marked diverged,
a base hyper-parameter as the swept axis, the memory estimate, the plot and the summary."""
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
    assert 'AdamW, SP:' in text and 'AdamW, μP (paper):' in text and 'spread x' in text
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
    # 3 widths with every parametrization, the base width (256) with SP only
    assert len(g) == 3 * (2 * 8 + 3 * 8) + (8 + 8) and g[0]['width'] == 1024  # widest first
    assert {r['parametrization'] for r in g if r['width'] == 256} == {'sp'}


def test_base_width_rows_stand_for_mup(data_dir, tmp_path):
    """At the base width only SP is trained; the summary counts that row in every μP panel."""
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--base_width=64'))
    got = rows(out)
    assert {r['parametrization'] for r in got if r['width'] == '64'} == {'sp'} and len(got) == 6
    summary = sweep.summarize(sweep.load_results(out), 'lr', 64)
    assert set(summary[('adamw', 'mup')]['best']) == {64, 128}
    assert summary[('adamw', 'mup')]['best'][64] == summary[('adamw', 'sp')]['best'][64]


def test_hyperparameter_axis(data_dir, tmp_path, capsys):
    """output_mult as a grid axis: one row per value, the optimum reported per width, its own figure."""
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--output_mult=0.5,2', '--adamw_lrs=-7', '--axis=output_mult'))
    got = rows(out)
    assert sorted({float(r['output_mult']) for r in got}) == [0.5, 2.0] and len(got) == 8
    text = capsys.readouterr().out
    assert 'optimum output_mult' in text
    summary = sweep.summarize(sweep.load_results(out), 'output_mult', 256)
    assert all(set(s['best']) == {64, 128} and s['best'][64][0] in (0.5, 2.0) for s in summary.values())
    png = sweep.main(args(data_dir, out, '--plot', '--axis=output_mult'))
    assert png.endswith('res_output_mult.png') and os.path.getsize(png) > 10_000


def test_out_of_memory_is_retried_later(data_dir, tmp_path, monkeypatch, capsys):
    """A run that runs out of device memory goes back to the queue and is run again; one that does not
    fit even alone is skipped with a message, and the sweep goes on with the others."""
    import torch
    out = str(tmp_path / 'res.csv')
    calls, real = [], sweep.Trainer.run
    fail = {2, 5, 6}  # the 2nd run fails once; the 5th twice in a row (alone on the device)

    def run(self, r):
        calls.append(r)
        if len(calls) in fail:
            raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB (simulated)')
        return real(self, r)
    monkeypatch.setattr(sweep.Trainer, 'run', run)
    sweep.main(args(data_dir, out, '--widths=64', '--gpu_mem_gb=1000', '--adamw_lrs=-8,-7,-6'))
    text = capsys.readouterr().out
    assert 'goes back to the queue' in text and 'skipped' in text
    assert calls[1] == calls[2] and calls[4] == calls[5]  # retried
    got = rows(out)
    assert len(got) == 5 and len({key(r) for r in got}) == 5 and len(calls) == 8
    assert key(dict(calls[4], **{k: str(v) for k, v in calls[4].items()})) not in {key(r) for r in got}


def test_memory_estimate():
    """It counts the vocabulary (the logits dominate a small model with a 50K vocabulary) and grows with
    the width, the depth and the tokens per step; the paper-shaped width-1024 run fits an H200 several times."""
    cfg = dict(sweep.DEFAULTS, n_layer=8, batch_size=16, block_size=512, fused=False)
    est = sweep.mem_estimate_gb
    assert est(cfg, 256, 50304) > est(cfg, 256, 84) + 4
    assert est(cfg, 1024, 50304) > est(cfg, 512, 50304) > est(cfg, 256, 50304)
    assert est(dict(cfg, batch_size=32), 512, 50304) > est(cfg, 512, 50304)
    assert est(dict(cfg, n_layer=16), 512, 50304) > est(cfg, 512, 50304)
    assert 10 < est(cfg, 1024, 50304) < 40
    # the fused cross-entropy keeps only the logits' bf16 gradient (and one fp32 chunk): a 50K vocabulary
    # costs less, and past a chunk each token adds 2 bytes per vocabulary entry
    fused = dict(cfg, fused=True)
    assert est(fused, 512, 50304) < est(cfg, 512, 50304) - 3
    big = dict(fused, batch_size=64)
    grow = est(big, 512, 50304) - est(fused, 512, 50304) - (est(big, 512, 0) - est(fused, 512, 0))
    assert grow == pytest.approx(2 * 48 * 512 * 50304 / 2**30)


def test_plot_selects_what_the_command_sets(data_dir, tmp_path):
    """One CSV can hold several grids: after a sweep the summary is the grid just run; --plot draws the
    whole CSV (at its run length) unless a key selects a part of it."""
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--widths=64', '--output_mult=0.5,2'))
    rows = sweep.load_results(out)
    assert len(rows) == 8
    cfg = dict(sweep.DEFAULTS, output_mult='2')
    assert {r['output_mult'] for r in sweep.select(rows, cfg, {'output_mult'})} == {2.0}
    assert {r['output_mult'] for r in sweep.select(rows, cfg, set())} == {0.5, 2.0}  # nothing set: all of it
    assert sweep.select(rows, dict(sweep.DEFAULTS), None) == []  # the default grid (output_mult 1, 200 steps)
    assert len(sweep.select(rows, dict(sweep.DEFAULTS, axis='output_mult', max_iters=5), None)) == 8


def test_csv_from_before_a_base_hyperparameter_is_upgraded(data_dir, tmp_path, monkeypatch):
    """A results CSV without a base hyper-parameter's column (an older sweep.py) gains it at its default:
    its rows still count as done, and new rows line up."""
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--widths=64'))
    old = rows(out)
    cols = [c for c in sweep.CSV_COLUMNS if c != 'gate_lr_mult']
    with open(out, 'w', newline='') as f:
        w = csv.DictWriter(f, cols, extrasaction='ignore')
        w.writeheader()
        w.writerows(old)
    calls = count_runs(monkeypatch)
    sweep.main(args(data_dir, out, '--widths=64', '--gate_lr_mult=1,4'))
    got = rows(out)
    assert list(got[0]) == sweep.CSV_COLUMNS
    assert got[:len(old)] == old  # the old rows, the default in the new column: not re-run
    assert len(calls) == len(old) and {r['gate_lr_mult'] for r in calls} == {4.0}
    assert {r['gate_lr_mult'] for r in got[len(old):]} == {'4.0'}


def test_worker_drops_old_compiled_graphs_per_model(data_dir, tmp_path, monkeypatch):
    # every model a worker builds shares GDN.forward's dynamo cache; without a reset per new model the
    # cache fills (recompile_limit) and later models silently run eagerly. One reset each time the worker
    # builds a model, none for a run on the model it has (2 widths x SP/μP x 2 LRs: 4 models, 8 runs).
    import torch
    resets = []
    monkeypatch.setattr(torch._dynamo, 'reset', lambda: resets.append(1))
    calls = count_runs(monkeypatch)
    sweep.main(args(data_dir, str(tmp_path / 'res.csv')))
    keys = [sweep.model_key(r) for r in calls]
    built = 1 + sum(a != b for a, b in zip(keys, keys[1:]))
    assert len(calls) == 8 and len(set(keys)) == 4 and len(resets) == built < len(calls)


def test_a_run_does_not_depend_on_the_runs_before_it(data_dir, tmp_path, monkeypatch):
    # a worker draws the init once per model, parametrization and seed and copies it for the other LRs;
    # each run of the grid must give what it gives alone in a fresh worker
    import model
    seeded = []
    real = model.GDN.reset_parameters
    monkeypatch.setattr(model.GDN, 'reset_parameters',
                        lambda self, seed=None: (seed is not None and seeded.append(seed), real(self, seed)))
    sweep.main(args(data_dir, str(tmp_path / 'grid.csv')))
    assert len(seeded) == 4  # 2 widths x SP/μP, each for 2 LRs
    grid = {key(r): r for r in rows(tmp_path / 'grid.csv')}
    for lr in (-8, -6):
        out = tmp_path / f'alone{lr}.csv'
        sweep.main(args(data_dir, str(out), '--widths=128', '--adamw_params=mup', f'--adamw_lrs={lr}'))
        (alone,) = rows(out)
        assert alone['final_val_loss'] == grid[key(alone)]['final_val_loss'], lr
        assert alone['final_train_loss'] == grid[key(alone)]['final_train_loss'], lr
