"""sweep.py on a tiny grid, on the CPU: rows written and flushed, re-runs skip finished runs, an interrupted sweep
keeps its rows, a run out of memory is retried later, a diverging LR is marked diverged, a base hyper-parameter
as the swept axis, the memory estimate, the plot and the summary of a real sweep, tuning the base values into a
config file that train.py and sweep.py take, and workers that end with their driver."""
import csv
import math
import os
import signal
import subprocess
import sys
import time

import pytest

import optima
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
            '--base_width=256', *extra]


def rows(out):
    with open(out, newline='') as f:
        return list(csv.DictReader(f))


def key(r):
    return sweep.run_key(r)


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
    summary = optima.summarize(sweep.load_results(out))
    (s,) = summary.values()  # one width only: no spread; and the diverged LR is never an optimum
    assert 'shift' not in s and s['best'][(64, 1)][0] == -8.0


def test_changed_settings_are_refused(data_dir, tmp_path):
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--widths=64', '--adamw_params=sp', '--adamw_lrs=-8'))
    with pytest.raises(SystemExit, match='block_size'):
        sweep.main(args(data_dir, out, '--widths=64', '--adamw_params=sp', '--adamw_lrs=-8', '--block_size=24'))


def test_plot_and_summary(data_dir, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--gradient_accumulation_steps=3'))
    capsys.readouterr()
    import matplotlib.figure
    titles, suptitle = [], matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(matplotlib.figure.Figure, 'suptitle',
                        lambda fig, t, **kw: titles.append(t) or suptitle(fig, t, **kw))
    png = sweep.main(args(data_dir, out, '--gradient_accumulation_steps=3', '--plot', '--note=SGD: why not'))
    assert len(titles) == 2 and all(t.endswith('\nSGD: why not') for t in titles)  # the note on both figures
    assert '5 steps of 6x16 tokens' in ' '.join(titles[0].split())  # the batch a step, accumulated
    assert png == str(tmp_path / 'res.png') and os.path.getsize(png) > 10_000
    text = capsys.readouterr().out
    assert 'AdamW, SP' in text and 'AdamW, μP (paper)' in text and 'the optimum moves x' in text
    assert os.path.getsize(str(tmp_path / 'res_relative.png')) > 10_000  # the paper's style
    summary = optima.summarize(sweep.load_results(out))
    assert set(summary) == {('adamw', 'sp', 'none', 'paper'), ('adamw', 'mup', 'none', 'paper')}
    for s in summary.values():
        assert set(s['best']) == {(64, 1), (128, 1)} and s['shift'] in (0.0, 2.0)


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
    # depth rules at the base depth are one run, and a weight-decay rule is 'paper' with the λ it amounts to:
    # fixed_timescale doubles λ for μP at 2x width and leaves it under CompleteP-AdamW (its LRs in the blocks
    # do not scale with depth), so only those runs are new
    g = sweep.grid(dict(cfg, n_layer='2,8', base_depth=8, depth_rule='none,completep', widths='256,512',
                        optimizers='adamw', adamw_params='sp,mup', adamw_lrs='-8', weight_decay_rule='paper,fixed_timescale'))
    runs = sorted((r['width'], r['n_layer'], r['parametrization'], r['depth_rule'], r['weight_decay']) for r in g)
    assert {r['weight_decay_rule'] for r in g} == {'paper'}
    assert runs == sorted([(256, 8, 'sp', 'none', 0.1), (256, 2, 'sp', 'none', 0.1), (256, 2, 'sp', 'completep', 0.1),
                           (512, 8, 'sp', 'none', 0.1), (512, 8, 'mup', 'none', 0.1), (512, 8, 'mup', 'none', 0.2),
                           (512, 2, 'sp', 'none', 0.1), (512, 2, 'sp', 'completep', 0.1), (512, 2, 'mup', 'none', 0.1),
                           (512, 2, 'mup', 'none', 0.2), (512, 2, 'mup', 'completep', 0.1),
                           (512, 2, 'mup', 'completep', 0.2)]), runs


def test_weight_decay_rules_are_one_grid_of_lambda(data_dir, tmp_path, capsys):
    """A weight-decay rule only rescales λ: the run the sweep trains for (rule, λ) gives every parameter group
    the decay that rule gives it, the grid trains each distinct decay once, and each rule's panel reads its own
    λ back from the shared rows."""
    from model import GDN, GDNConfig
    for width, n_layer, depth_rule in [(192, 2, 'none'), (96, 4, 'depth_mup'), (144, 1, 'completep')]:
        model = GDN(GDNConfig(width=width, n_layer=n_layer, vocab_size=64, parametrization='mup', base_width=48,
                              base_depth=2, depth_rule=depth_rule))
        for rule in sweep.mup.WEIGHT_DECAY_RULES:
            r = dict(width=width, n_layer=n_layer, depth_rule=depth_rule, parametrization='mup', optimizer='adamw',
                     weight_decay=0.1, weight_decay_rule=rule)
            t = sweep.canonical(r, 48, 2)
            asked = [g['weight_decay'] for g in sweep.mup.param_groups(model, 'adamw', 0.1, rule)]
            trained = [g['weight_decay'] for g in sweep.mup.param_groups(model, 'adamw', t['weight_decay'],
                                                                         t['weight_decay_rule'])]
            assert trained == pytest.approx(asked, rel=1e-9) and max(asked) > 0, (width, depth_rule, rule)
    out = str(tmp_path / 'res.csv')
    grid = args(data_dir, out, '--base_width=64', '--adamw_lrs=-7', '--weight_decay=0,0.1,0.2',
                '--weight_decay_rule=paper,fixed_timescale,sqrt_width', '--axis=weight_decay')
    sweep.main(grid)
    got = rows(out)
    # width 64 (the base): 3 decays; width 128: SP 3, μP 0, 0.1, 0.2 (paper), 0.4 (fixed), 0.1·√2, 0.2·√2 (sqrt)
    assert len(got) == 3 + 3 + 6 and {r['weight_decay_rule'] for r in got} == {'paper'}
    summary = optima.summarize(sweep.select(sweep.load_results(out), dict(sweep.DEFAULTS, out=out, axis='weight_decay',
                              weight_decay='0,0.1,0.2', weight_decay_rule='paper,fixed_timescale,sqrt_width'),
                              {'weight_decay', 'weight_decay_rule'}), 'weight_decay')
    assert {k[3] for k in summary if k[1] == 'mup'} == {'paper', 'fixed_timescale', 'sqrt_width'}
    assert {k[3] for k in summary if k[1] == 'sp'} == {'paper'}  # under SP every rule is λ: one panel, not three
    loaded = sweep.expand(sweep.load_results(out), 64, 2, {'weight_decay_rule': ['fixed_timescale']})
    fixed = {r['weight_decay']: r['val'] for r in loaded if r['width'] == 128 and r['parametrization'] == 'mup'
             and r['weight_decay_rule'] == 'fixed_timescale'}
    paper = {float(r['weight_decay']): float(r['final_val_loss']) for r in got if r['width'] == '128'
             and r['parametrization'] == 'mup'}
    assert fixed[0.1] == paper[0.2] and fixed[0.2] == paper[0.4] and fixed[0.0] == paper[0.0]


def test_base_width_rows_stand_for_mup(data_dir, tmp_path):
    """At the base width only SP is trained; the summary counts that row in every μP panel."""
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--base_width=64'))
    got = rows(out)
    assert {r['parametrization'] for r in got if r['width'] == '64'} == {'sp'} and len(got) == 6
    selected = sweep.select(sweep.load_results(out), dict(sweep.DEFAULTS, out=out), set())
    summary = optima.summarize(selected, 'lr')
    mup_, sp_ = summary[('adamw', 'mup', 'none', 'paper')], summary[('adamw', 'sp', 'none', 'paper')]
    assert set(mup_['best']) == {(64, 1), (128, 1)} and mup_['best'][(64, 1)] == sp_['best'][(64, 1)]


def test_a_grid_at_the_base_width_alone_is_drawn_as_asked(data_dir, tmp_path):
    """A μP sweep across depth at the base width trains (and stores) SP runs; its summary and --plot still
    show the μP panels it asked for, each depth rule in its own, with the base depth in all of them."""
    out = str(tmp_path / 'res.csv')
    grid = args(data_dir, out, '--widths=64', '--base_width=64', '--adamw_params=mup', '--n_layer=1,2',
                '--base_depth=2', '--depth_rule=none,completep')
    sweep.main(grid)
    got = rows(out)
    assert {r['parametrization'] for r in got} == {'sp'} and len(got) == 6  # depth 2 once, depth 1 per rule
    cfg = dict(sweep.DEFAULTS, out=out, adamw_params='mup', depth_rule='none,completep')
    summary = optima.summarize(sweep.select(sweep.load_results(out), cfg, {'adamw_params', 'depth_rule'}), 'lr')
    assert set(summary) == {('adamw', 'mup', 'none', 'paper'), ('adamw', 'mup', 'completep', 'paper')}
    assert all(set(s['best']) == {(64, 1), (64, 2)} for s in summary.values())
    assert sweep.main(grid + ['--plot']).endswith('res.png')


def test_hyperparameter_axis(data_dir, tmp_path, capsys):
    """output_mult as a grid axis: one row per value, the optimum reported per width, its own figure."""
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--output_mult=0.5,2', '--adamw_lrs=-7', '--axis=output_mult'))
    got = rows(out)
    assert sorted({float(r['output_mult']) for r in got}) == [0.5, 2.0] and len(got) == 8
    text = capsys.readouterr().out
    assert 'optimum output_mult' in text
    summary = optima.summarize(sweep.load_results(out), 'output_mult')
    assert all(set(s['best']) == {(64, 1), (128, 1)} and s['best'][(64, 1)][0] in (-1.0, 1.0) for s in summary.values())
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
    cfg = dict(sweep.DEFAULTS, n_layer='8', batch_size=16, block_size=512)
    est = sweep.mem_estimate_gb
    assert est(cfg, 256, 50304) > est(cfg, 256, 84) + 1
    assert est(cfg, 1024, 50304) > est(cfg, 512, 50304) > est(cfg, 256, 50304)
    assert est(dict(cfg, batch_size=32), 512, 50304) > est(cfg, 512, 50304)
    assert est(cfg, 512, 50304, n_layer=16) > est(cfg, 512, 50304)
    assert 5 < est(cfg, 1024, 50304) < 40
    # the fused cross-entropy keeps only the logits' bf16 gradient (and one fp32 chunk): past a chunk each
    # token adds 2 bytes per vocabulary entry
    big = dict(cfg, batch_size=64)
    grow = est(big, 512, 50304) - est(cfg, 512, 50304) - (est(big, 512, 0) - est(cfg, 512, 0))
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
    assert sweep.select(rows, dict(sweep.DEFAULTS, out=out), None) == []  # the default grid (widths 128.., 200 steps)
    grid = dict(sweep.DEFAULTS, out=out, axis='output_mult', max_iters=5, widths='64', n_layer='1')
    assert len(sweep.select(rows, grid, None)) == 8


def test_csv_from_before_a_base_hyperparameter_is_upgraded(data_dir, tmp_path, monkeypatch):
    """A results CSV without a base hyper-parameter's column (an older sweep.py) gains it at its default:
    its rows still count as done, and new rows line up."""
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--widths=64'))
    old = rows(out)
    cols = [c for c in sweep.CSV_COLUMNS if c not in ('gate_lr_mult', 'n_layer', 'depth_rule', 'weight_decay',
                                                      'weight_decay_rule')]
    with open(out, 'w', newline='') as f:
        w = csv.DictWriter(f, cols, extrasaction='ignore')
        w.writeheader()
        w.writerows(old)
    with open(sweep.config_path(out), 'a', newline='') as f:  # n_layer and weight_decay were run settings once
        csv.writer(f).writerows([['n_layer', '1'], ['weight_decay', '0.1']])
    calls = count_runs(monkeypatch)
    sweep.main(args(data_dir, out, '--widths=64', '--gate_lr_mult=1,4'))
    got = rows(out)
    assert list(got[0]) == sweep.CSV_COLUMNS
    assert got[:len(old)] == old  # the old rows, the defaults (or the _config.csv's) in the new columns: not re-run
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


def test_tune_writes_a_config_that_train_and_sweep_take(data_dir, tmp_path, monkeypatch):
    """μTransfer in one command: the LR and output_mult tuned at the base width, written as a config file; train.py
    runs it at another width, and sweep.py takes it unchanged (its LR added to the grid, judged and marked)."""
    out, tuned = str(tmp_path / 'tune.csv'), str(tmp_path / 'tuned.py')
    sweep.main(args(data_dir, out, '--widths=64', '--base_width=64', '--adamw_params=sp', '--adamw_lrs=-9:-5',
                    '--output_mult=1,4', '--tune=output_mult', f'--tuned_out={tuned}'))
    values = {}
    exec(open(tuned).read(), values)
    assert values['dataset'] == 'shakespeare_char' and values['base_width'] == 64
    assert values['output_mult'] in (1.0, 4.0) and 2 ** -9 <= values['learning_rate'] <= 2 ** -5
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, 'train.py'), tuned, '--width=128', '--mup=True',
                        '--n_layer=1', '--batch_size=2', '--block_size=16', '--max_iters=3', '--eval_iters=1',
                        f'--data_dir={data_dir}', f'--out_dir={tmp_path / "run"}', '--device=cpu'],
                       capture_output=True, text=True, cwd=root, timeout=300)
    assert r.returncode == 0 and 'final val loss' in r.stdout, r.stderr[-2000:]
    assert f"lr {values['learning_rate']:.3g}, output_mult {values['output_mult']:g}" in r.stdout
    out2 = str(tmp_path / 'check.csv')
    sweep.main([tuned] + args(data_dir, out2, '--widths=128', '--base_width=64', '--adamw_params=mup', '--adamw_lrs=-8'))
    lrs = {float(r['lr']) for r in rows(out2)}
    assert lrs == {2 ** -8, values['learning_rate']} and {float(r['output_mult']) for r in rows(out2)} == {values['output_mult']}
    import matplotlib.axes
    lines, axvline = [], matplotlib.axes.Axes.axvline
    monkeypatch.setattr(matplotlib.axes.Axes, 'axvline', lambda ax, x, **kw: lines.append(x) or axvline(ax, x, **kw))
    sweep.main([tuned] + args(data_dir, out2, '--widths=128', '--base_width=64', '--adamw_params=mup', '--adamw_lrs=-8',
                              '--plot'))
    assert lines == [pytest.approx(math.log2(values['learning_rate']))] * 2  # the check's figures mark the tuned LR


def test_tune_says_when_the_best_value_is_at_its_lists_edge():
    """A tuned key whose best candidate is the first or last of three or more may have its optimum beyond the
    list: the report line (printed, and written into the config) says so; an interior best, or a list of two,
    says nothing."""
    assert sweep.list_edge([0.0, 0.1, 0.2], 0.2, 'weight_decay') == \
        " (the best is the list's largest: extend weight_decay and tune again)"
    assert "smallest: extend init_std" in sweep.list_edge([0.01, 0.02, 0.04], 0.01, 'init_std')
    assert sweep.list_edge([2.0, 4.0, 8.0], 4.0, 'output_mult') == ''
    assert sweep.list_edge([1.0, 4.0], 4.0, 'output_mult') == ''


def test_defaults_write_to_out_and_run_in_process_on_a_cpu(data_dir, tmp_path, capsys):
    """A fork's default commands never overwrite the published results; on a CPU the runs go in this process."""
    assert sweep.DEFAULTS['out'].startswith('out/')
    a = [x for x in args(data_dir, str(tmp_path / 'res.csv'), '--widths=64', '--adamw_params=sp', '--adamw_lrs=-8')
         if x != '--workers=0']
    sweep.main(a)
    assert 'in this process, CPU' in capsys.readouterr().out


def test_workers_end_with_their_driver(data_dir, tmp_path):
    """kill -9 of a multi-worker sweep leaves no worker behind (they watch their parent)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, os.path.join(root, 'sweep.py'), *args(data_dir, str(tmp_path / 'res.csv'), '--max_iters=100000')]
    cmd = [c for c in cmd if c != '--workers=0'] + ['--workers=2']
    p = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children():
        kids = []
        for pid in os.listdir('/proc'):
            try:
                with open(f'/proc/{pid}/stat') as f:
                    if pid.isdigit() and int(f.read().rsplit(')', 1)[1].split()[1]) == p.pid:
                        kids.append(int(pid))
            except (OSError, IndexError, ValueError):
                pass
        return kids
    deadline = time.time() + 120
    while len(children()) < 2 and time.time() < deadline:
        time.sleep(0.5)
    kids = children()
    assert len(kids) >= 2, 'the workers never started'
    time.sleep(3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.time() + 30
    while any(os.path.exists(f'/proc/{k}') and open(f'/proc/{k}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z'
              for k in kids) and time.time() < deadline:
        time.sleep(0.5)
    alive = [k for k in kids if os.path.exists(f'/proc/{k}') and open(f'/proc/{k}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z']
    assert not alive, f'workers {alive} outlived their driver'


def test_summary_at_an_earlier_step(data_dir, tmp_path, capsys):
    """--at_step judges each run by the val loss it recorded at that step: the final step gives the final losses,
    an earlier one the losses along the run; it prints and draws nothing, and a step no run recorded is refused."""
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--max_iters=4', '--eval_interval=2'))
    final = {key(r): float(r['final_val_loss']) for r in rows(out)}
    at2 = {sweep.run_key(r): r['val'] for r in sweep.load_results(out, at_step=2)}
    at4 = {sweep.run_key(r): r['val'] for r in sweep.load_results(out, at_step=4)}
    assert at4 == pytest.approx(final, abs=1e-4) and set(at2) == set(final)  # the curve keeps 4 decimals
    assert at2 != pytest.approx(final, abs=1e-3)
    capsys.readouterr()
    summary = sweep.main(args(data_dir, out, '--max_iters=4', '--eval_interval=2', '--plot', '--at_step=2'))
    assert set(summary) == {('adamw', 'sp', 'none', 'paper'), ('adamw', 'mup', 'none', 'paper')}
    assert 'the optimum moves' in capsys.readouterr().out and not os.path.exists(str(tmp_path / 'res.png'))
    with pytest.raises(SystemExit, match='recorded its val loss at step 3'):
        sweep.main(args(data_dir, out, '--max_iters=4', '--eval_interval=2', '--plot', '--at_step=3'))


SWEEP_CONFIGS = [['config/sweep_paper.py'], ['config/sweep_paper.py', 'config/sweep_long.py'],
                 ['config/sweep_paper.py', 'config/sweep_long.py', 'config/sweep_weight_decay.py'],
                 ['config/sweep_paper.py', 'config/sweep_sgd_batch.py'], ['config/sweep_depth.py'],
                 ['config/sweep_depth.py', 'config/sweep_joint.py'], ['config/sweep_quick_momentum09.py'],
                 ['config/tune_base.py']]


@pytest.mark.parametrize('files', SWEEP_CONFIGS, ids=lambda f: '+'.join(os.path.basename(x)[:-3] for x in f))
def test_sweep_configs_load_as_documented(files):
    """Each sweep config, on top of the configs its header names, makes a valid grid; the weight-decay study
    can extend the long-horizon CSV (the same run settings); the joint check carries the LR the depth sweep
    fits at 256 x 4 under its rule."""
    from configurator import apply_config
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = [os.path.join(root, f) for f in files]
    cfg = dict(sweep.DEFAULTS)
    apply_config(files, cfg)
    assert sweep.grid(cfg, 10)
    if files[-1].endswith('sweep_weight_decay.py'):
        long = dict(sweep.DEFAULTS)
        apply_config(files[:-1], long)
        assert {k: cfg[k] for k in sweep.RUN_KEYS} == {k: long[k] for k in sweep.RUN_KEYS}
    if files[-1].endswith('sweep_joint.py'):
        csv_path = os.path.join(root, 'assets', 'lr_sweep_depth.csv')
        rows = sweep.select(sweep.load_results(csv_path), dict(cfg, widths='256', n_layer='4', out=csv_path),
                            {'widths', 'n_layer', 'depth_rule', 'adamw_params'})
        (panel,) = optima.cells(rows, 'lr').values()
        x = optima.panel_optima(panel, optima.panel_seeds(panel))[(256, 4)][0]
        assert math.log2(cfg['learning_rate']) == pytest.approx(x, abs=0.01)
