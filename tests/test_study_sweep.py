"""The LR sweep (study/) on a tiny grid, on the CPU: rows written and flushed, re-runs skip finished runs, an
interrupted sweep keeps its rows, a run out of memory is retried later, a diverging LR is marked diverged, a run
that stands for several labels is trained once and written once for each, a base hyper-parameter as the swept
axis, the plot and the summary of a real sweep, the plan printed within seconds, a heartbeat within a run,
Ctrl-C without a traceback, and workers that end with their driver."""
import csv
import math
import os
import signal
import subprocess
import sys
import time

import pytest

import mup
import training
from study import grid as grid_
from study import optima, run, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def args(data_dir, out, *extra):
    return [f'--out={out}', f'--data_dir={data_dir}', '--widths=64,128', '--optimizers=adamw',
            '--adamw_params=sp,mup', '--adamw_lrs=-8,-6', '--max_iters=5', '--n_layer=1', '--batch_size=2',
            '--block_size=16', '--eval_iters=1', '--check_interval=1', '--workers=0', '--device=cpu',
            '--base_width=256', *extra]


def rows(out):
    with open(out, newline='') as f:
        return list(csv.DictReader(f))


def key(r):
    return grid_.run_key(r)


def count_runs(monkeypatch, fail_at=None):
    """Count Runner.run calls; fail on call number `fail_at` (a crash or kill mid-sweep)."""
    calls = []
    real = run.Runner.run

    def counted(self, r):
        calls.append(r)
        if len(calls) == fail_at:
            raise RuntimeError('killed')
        return real(self, r)
    monkeypatch.setattr(run.Runner, 'run', counted)
    return calls


def test_grid_writes_rows_and_rerun_skips(data_dir, tmp_path, monkeypatch):
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out))
    got = rows(out)
    assert len(got) == 8 and len({key(r) for r in got}) == 8
    assert list(got[0]) == grid_.CSV_COLUMNS and all(r['trained_as'] == '' for r in got)
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


def test_a_row_cut_short_is_trained_again_and_a_csv_has_one_writer(data_dir, tmp_path, monkeypatch):
    """A last row cut inside its later columns (a full disk) is not a finished run; while a sweep writes a
    CSV, a second sweep into it stops with one line before it trains anything."""
    out = str(tmp_path / 'res.csv')
    small = ('--widths=64', '--adamw_params=mup')
    sweep.main(args(data_dir, out, *small))
    lines = open(out).read().splitlines()
    cut = ','.join(lines[-1].split(',')[:grid_.CSV_COLUMNS.index('diverged') + 2])  # diverged and a bit more
    open(out, 'w').write('\n'.join(lines[:-1] + [cut]))
    calls = count_runs(monkeypatch)
    sweep.main(args(data_dir, out, *small))
    assert len(calls) == 1 and len(grid_.read_rows(out)) == 2
    writer = grid_.ResultWriter(out)
    try:
        with pytest.raises(SystemExit, match='another sweep is writing'):
            sweep.main(args(data_dir, out, '--widths=64,128'))
        assert len(calls) == 1
    finally:
        writer.close()


def test_diverging_lr_is_marked(data_dir, tmp_path):
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--widths=64', '--adamw_params=sp', '--adamw_lrs=-8,6', '--max_iters=8'))
    by_lr = {float(r['lr']): r for r in rows(out)}
    assert by_lr[2 ** -8]['diverged'] == 'False'
    bad = by_lr[2 ** 6]
    assert bad['diverged'] == 'True'
    assert int(bad['tokens']) < 8 * 2 * 16  # stopped early
    summary = optima.summarize(grid_.load_results(out))
    (s,) = summary.values()  # one width only: no spread; and the diverged LR is never an optimum
    assert 'shift' not in s and s['best'][(64, 1)][0] == -8.0


def test_bad_input_is_one_line(data_dir, tmp_path):
    """Changed run settings, a CSV of other columns, a bad LR list: each refused with one line."""
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--widths=64', '--adamw_params=sp', '--adamw_lrs=-8'))
    with pytest.raises(SystemExit, match='block_size'):
        sweep.main(args(data_dir, out, '--widths=64', '--adamw_params=sp', '--adamw_lrs=-8', '--block_size=24'))
    other = tmp_path / 'other.csv'
    other.write_text('width,lr,val\n64,0.01,3.0\n')
    with pytest.raises(SystemExit, match='has the columns width,lr,val'):
        sweep.main(args(data_dir, str(other), '--widths=64', '--adamw_params=sp', '--adamw_lrs=-8'))
    with pytest.raises(SystemExit, match='adamw_lrs'):
        sweep.main(args(data_dir, out, '--adamw_lrs=-8:x'))
    with pytest.raises(SystemExit, match="model='flax'"):
        sweep.main(args(data_dir, str(tmp_path / 'new.csv'), '--model=flax'))
    with pytest.raises(SystemExit, match="model: 'gdn' there, 'fla' now"):  # another family's rows never mix in
        sweep.main(args(data_dir, out, '--widths=64', '--adamw_params=sp', '--adamw_lrs=-8', '--model=fla'))
    if 'TRITON_INTERPRET' not in os.environ:
        with pytest.raises(SystemExit, match="kernel_backend='triton' runs on CUDA"):
            sweep.main(args(data_dir, str(tmp_path / 'tr.csv'), '--kernel_backend=triton'))


@pytest.mark.gpu
def test_a_sweep_of_flas_model(data_dir, tmp_path):
    """model=fla trains flash-linear-attention's model (fla_mup.FlaLM) through the same runner: finite losses
    that fall, μP and SP alike at the base width."""
    pytest.importorskip('fla.models')
    out = str(tmp_path / 'fla.csv')
    sweep.main([f'--out={out}', f'--data_dir={data_dir}', '--model=fla', '--widths=128', '--base_width=128',
                '--optimizers=adamw', '--adamw_params=sp,mup', '--adamw_lrs=-8', '--max_iters=20', '--n_layer=2',
                '--batch_size=4', '--block_size=128', '--eval_iters=2', '--workers=0', '--device=cuda',
                '--compile=False', '--live_plot=False'])
    got = rows(out)
    assert len(got) == 2 and {r['parametrization'] for r in got} == {'sp', 'mup'}
    assert len({r['final_val_loss'] for r in got}) == 1  # one run stands for both labels at the base width
    _, vocab = training.dataset_setup('shakespeare_char', data_dir)
    assert float(got[0]['final_train_loss']) < math.log(vocab) - 0.5  # below a uniform guess over the characters


@pytest.mark.gpu
def test_a_sweep_under_cuda_graphs_gives_the_default_modes_rows(data_dir, tmp_path):
    """compile_mode='reduce-overhead' (each run's step replayed as CUDA graphs, models reused across runs in a
    worker) against torch.compile's default mode: the same rows, to the digits the CSV keeps."""
    got = {}
    for mode in ('', 'reduce-overhead'):
        out = str(tmp_path / f'{mode or "default"}.csv')
        sweep.main(args(data_dir, out, '--device=cuda', '--widths=128,256', '--n_head=2', '--max_iters=10',
                        f'--compile_mode={mode}', '--live_plot=False'))  # (head dims 16..: the Triton kernel's)
        got[mode] = {key(r): (r['final_train_loss'], r['final_val_loss']) for r in rows(out)}
    assert len(got['']) == 8 and got['reduce-overhead'] == got['']  # (SP and μP rows share the base width's run)


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
    summary = optima.summarize(grid_.load_results(out))
    assert set(summary) == {('adamw', 'sp', 'none', 'paper'), ('adamw', 'mup', 'none', 'paper')}
    for s in summary.values():
        assert set(s['best']) == {(64, 1), (128, 1)} and s['shift'] in (0.0, 2.0)


def test_worker_processes(data_dir, tmp_path):
    """The multi-process path (spawned workers, the driver writes the rows)."""
    out = str(tmp_path / 'res.csv')
    a = [x for x in args(data_dir, out, '--widths=64', '--adamw_params=mup') if x != '--workers=0']
    sweep.main(a + ['--workers=2'])
    assert len(rows(out)) == 2 and all(r['diverged'] == 'False' for r in rows(out))


def trained(cfg, runs):
    """The distinct runs the sweep trains for a grid's labels."""
    return list({key(t): t for t in (grid_.trained_run(r, cfg['base_width'], cfg['base_depth']) for r in runs)}.values())


def test_lr_grid_spec():
    assert grid_.parse_exponents('-12:-5') == list(range(-12, -4))
    assert grid_.parse_exponents('-2:0:0.5') == [-2, -1.5, -1, -0.5, 0]
    assert grid_.parse_exponents('-3,1') == [-3, 1]
    cfg = dict(sweep.DEFAULTS)
    g = grid_.grid(cfg)
    # 4 widths x (2 AdamW + 3 SGD parametrizations) x 8 LRs labels; the base width (256) trains SP only
    assert len(g) == 4 * (2 * 8 + 3 * 8) and g[0]['width'] == 1024  # widest first
    t = trained(cfg, g)
    assert len(t) == 3 * (2 * 8 + 3 * 8) + (8 + 8) and {r['parametrization'] for r in t if r['width'] == 256} == {'sp'}
    # depth rules at the base depth are one run, and a weight-decay rule is 'paper' with the λ it amounts to:
    # fixed_timescale doubles λ for μP at 2x width and leaves it under CompleteP-AdamW (its LRs in the blocks
    # do not scale with depth), so only those runs are new
    c = dict(cfg, n_layer='2,8', base_depth=8, depth_rule='none,completep', widths='256,512', optimizers='adamw',
             adamw_params='sp,mup', adamw_lrs='-8', weight_decay_rule='paper,fixed_timescale')
    g = grid_.grid(c)
    assert {r['weight_decay_rule'] for r in g if r['parametrization'] == 'sp'} == {'paper'}  # SP: λ is λ
    assert len(g) == 2 * 2 * 2 * (1 + 2)  # widths x depths x rules x (SP + μP's two decay rules)
    t = trained(c, g)
    runs = sorted((r['width'], r['n_layer'], r['parametrization'], r['depth_rule'], r['weight_decay']) for r in t)
    assert {r['weight_decay_rule'] for r in t} == {'paper'}
    assert runs == sorted([(256, 8, 'sp', 'none', 0.1), (256, 2, 'sp', 'none', 0.1), (256, 2, 'sp', 'completep', 0.1),
                           (512, 8, 'sp', 'none', 0.1), (512, 8, 'mup', 'none', 0.1), (512, 8, 'mup', 'none', 0.2),
                           (512, 2, 'sp', 'none', 0.1), (512, 2, 'sp', 'completep', 0.1), (512, 2, 'mup', 'none', 0.1),
                           (512, 2, 'mup', 'none', 0.2), (512, 2, 'mup', 'completep', 0.1),
                           (512, 2, 'mup', 'completep', 0.2)]), runs


def test_weight_decay_rules_are_one_grid_of_lambda(data_dir, tmp_path, capsys, monkeypatch):
    """A weight-decay rule only rescales λ: the run the sweep trains for (rule, λ) gives every parameter group
    the decay that rule gives it, the sweep trains each distinct decay once, and writes each rule's rows with
    their own λ, which its panel reads."""
    from model import GDN, GDNConfig
    for width, n_layer, depth_rule in [(192, 2, 'none'), (96, 4, 'depth_mup'), (144, 1, 'completep')]:
        model = GDN(GDNConfig(width=width, n_layer=n_layer, vocab_size=64, parametrization='mup', base_width=48,
                              base_depth=2, depth_rule=depth_rule))
        for rule in mup.WEIGHT_DECAY_RULES:
            r = dict(width=width, n_layer=n_layer, depth_rule=depth_rule, parametrization='mup', optimizer='adamw',
                     weight_decay=0.1, weight_decay_rule=rule)
            t = grid_.trained_run(r, 48, 2)
            asked = [g['weight_decay'] for g in mup.param_groups(model, 'adamw', 0.1, rule)]
            got = [g['weight_decay'] for g in mup.param_groups(model, 'adamw', t['weight_decay'], t['weight_decay_rule'])]
            assert got == pytest.approx(asked, rel=1e-9) and max(asked) > 0, (width, depth_rule, rule)
    out = str(tmp_path / 'res.csv')
    calls = count_runs(monkeypatch)
    a = args(data_dir, out, '--base_width=64', '--adamw_lrs=-7', '--weight_decay=0,0.1,0.2',
             '--weight_decay_rule=paper,fixed_timescale,sqrt_width', '--axis=weight_decay')
    sweep.main(a)
    got = rows(out)
    # trained: width 64 (the base) 3 decays; width 128: SP 3, μP 0, 0.1, 0.2 (paper), 0.4 (fixed), 0.1·√2, 0.2·√2
    assert len(calls) == 3 + 3 + 6 and {r['weight_decay_rule'] for r in calls} == {'paper'}
    # written: SP one rule (λ is λ), μP three, each row with its own labels
    assert len(got) == 2 * (3 + 3 * 3) and len({key(r) for r in got}) == len(got)
    mup128 = {(r['weight_decay_rule'], float(r['weight_decay'])): r for r in got
              if r['width'] == '128' and r['parametrization'] == 'mup'}
    assert mup128[('fixed_timescale', 0.1)]['final_val_loss'] == mup128[('paper', 0.2)]['final_val_loss']
    assert mup128[('fixed_timescale', 0.1)]['trained_as'] == 'weight_decay_rule=paper weight_decay=0.2'
    assert mup128[('fixed_timescale', 0.2)]['trained_as'] == 'weight_decay_rule=paper weight_decay=0.4'
    assert all(mup128[(w, 0.0)]['final_val_loss'] == mup128[('paper', 0.0)]['final_val_loss'] for w, _ in mup128)
    cfg = dict(sweep.DEFAULTS, out=out, axis='weight_decay', weight_decay='0,0.1,0.2',
               weight_decay_rule='paper,fixed_timescale,sqrt_width')
    capsys.readouterr()
    summary = optima.summarize(grid_.select(grid_.load_results(out), cfg, {'weight_decay', 'weight_decay_rule'}),
                               'weight_decay')
    assert {k[3] for k in summary if k[1] == 'mup'} == {'paper', 'fixed_timescale', 'sqrt_width'}
    assert {k[3] for k in summary if k[1] == 'sp'} == {'paper'}  # under SP every rule is λ: one panel, not three
    text = capsys.readouterr().out
    assert "adamw mup at width 128 x 1: fixed_timescale λ = paper 2λ (1 run)" in text, text
    assert "adamw at width 64 x 1: mup fixed_timescale = mup paper = mup sqrt_width = sp paper (2 runs)" in text
    assert "adamw mup at width 128 x 1, λ 0: fixed_timescale = paper = sqrt_width (1 run)" in text


def test_base_width_rows_stand_for_mup(data_dir, tmp_path, capsys, monkeypatch):
    """At the base width only SP is trained; its run is written as the SP row and as the μP row (trained as
    SP), a μP row asked for later is written from the SP run the CSV holds, and the summary says they are
    one model."""
    out = str(tmp_path / 'res.csv')
    calls = count_runs(monkeypatch)
    sweep.main(args(data_dir, out, '--base_width=64', '--widths=64', '--adamw_params=sp'))
    assert len(calls) == 2 and len(rows(out)) == 2
    sweep.main(args(data_dir, out, '--base_width=64'))
    got = rows(out)
    assert len(calls) == 6 and {r['parametrization'] for r in calls if r['width'] == 64} == {'sp'}
    base = {r['parametrization']: r for r in got if r['width'] == '64' and r['lr'] == str(2 ** -8)}
    assert base['mup']['trained_as'] == 'parametrization=sp' and base['sp']['trained_as'] == ''
    assert base['mup']['final_val_loss'] == base['sp']['final_val_loss'] and len(got) == 8
    capsys.readouterr()
    summary = optima.summarize(grid_.select(grid_.load_results(out), dict(sweep.DEFAULTS, out=out), set()), 'lr')
    assert "adamw at width 64 x 1: mup = sp (2 runs)" in capsys.readouterr().out
    mup_, sp_ = summary[('adamw', 'mup', 'none', 'paper')], summary[('adamw', 'sp', 'none', 'paper')]
    assert set(mup_['best']) == {(64, 1), (128, 1)} and mup_['best'][(64, 1)] == sp_['best'][(64, 1)]


def test_a_grid_at_the_base_width_alone_is_drawn_as_asked(data_dir, tmp_path):
    """A μP sweep across depth at the base width trains SP runs and writes the μP rows it asked for, each depth
    rule's, the base depth in all of them; its summary and --plot show those panels."""
    out = str(tmp_path / 'res.csv')
    a = args(data_dir, out, '--widths=64', '--base_width=64', '--adamw_params=mup', '--n_layer=1,2',
             '--base_depth=2', '--depth_rule=none,completep')
    sweep.main(a)
    got = rows(out)
    assert {r['parametrization'] for r in got} == {'mup'} and len(got) == 8  # 2 depths x 2 rules x 2 LRs
    assert len({grid_.trained_key(r) for r in got}) == 6  # depth 2 once, depth 1 per rule
    cfg = dict(sweep.DEFAULTS, out=out, adamw_params='mup', depth_rule='none,completep')
    summary = optima.summarize(grid_.select(grid_.load_results(out), cfg, {'adamw_params', 'depth_rule'}), 'lr')
    assert set(summary) == {('adamw', 'mup', 'none', 'paper'), ('adamw', 'mup', 'completep', 'paper')}
    assert all(set(s['best']) == {(64, 1), (64, 2)} for s in summary.values())
    assert sweep.main(a + ['--plot']).endswith('res.png')


def test_hyperparameter_axis(data_dir, tmp_path, capsys):
    """output_mult as a grid axis: one row per value, the optimum reported per width, its own figure."""
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--output_mult=0.5,2', '--adamw_lrs=-7', '--axis=output_mult'))
    got = rows(out)
    assert sorted({float(r['output_mult']) for r in got}) == [0.5, 2.0] and len(got) == 8
    text = capsys.readouterr().out
    assert 'optimum output_mult' in text
    summary = optima.summarize(grid_.load_results(out), 'output_mult')
    assert all(set(s['best']) == {(64, 1), (128, 1)} and s['best'][(64, 1)][0] in (-1.0, 1.0) for s in summary.values())
    png = sweep.main(args(data_dir, out, '--plot', '--axis=output_mult'))
    assert png.endswith('res_output_mult.png') and os.path.getsize(png) > 10_000


def test_out_of_memory_is_retried_later(data_dir, tmp_path, monkeypatch, capsys):
    """A run that runs out of device memory goes back to the queue and is run again; one that does not
    fit even alone is skipped with a message, and the sweep goes on with the others."""
    import torch
    out = str(tmp_path / 'res.csv')
    calls, real = [], run.Runner.run
    fail = {2, 5, 6}  # the 2nd run fails once; the 5th twice in a row (alone on the device)

    def flaky(self, r):
        calls.append(r)
        if len(calls) in fail:
            raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB (simulated)')
        return real(self, r)
    monkeypatch.setattr(run.Runner, 'run', flaky)
    sweep.main(args(data_dir, out, '--widths=64', '--gpu_mem_gb=1000', '--adamw_lrs=-8,-7,-6'))
    text = capsys.readouterr().out
    assert 'goes back to the queue' in text and 'skipped: out of memory twice' in text
    assert calls[1] == calls[2] and calls[4] == calls[5]  # retried
    got = rows(out)
    assert len(got) == 5 and len({key(r) for r in got}) == 5 and len(calls) == 8
    assert key(calls[4]) not in {key(r) for r in got}


def test_memory_estimate_of_a_run():
    """The pool's budget (training.memory_estimate_gb of a run's model config) counts the vocabulary (the logits
    dominate a small model with a 50K vocabulary) and grows with the width, the depth and the tokens per step;
    the paper-shaped width-1024 run fits an H200 several times."""
    cfg = dict(sweep.DEFAULTS, n_head=6)
    r = dict(width=256, n_layer=8, depth_rule='none', parametrization='mup', **mup.BASE_HPARAMS)

    def est(width=256, vocab=50304, tokens=16 * 512, n_layer=8):
        config = run.model_config(dict(r, width=width, n_layer=n_layer), cfg, vocab)
        return training.memory_estimate_gb(config, tokens, 'cuda')
    assert est(vocab=50304) > est(vocab=84) + 1
    assert est(1024) > est(512) > est(256)
    assert est(512, tokens=32 * 512) > est(512) and est(512, n_layer=16) > est(512)
    assert 5 < est(1024) < 40
    # the fused cross-entropy keeps only the logits' bf16 gradient (and one fp32 chunk): past a chunk each
    # token adds 2 bytes per vocabulary entry (with a vocabulary of 1: 2, and 12 in the chunk)
    big = 64 * 512
    grow = est(512, tokens=big) - est(512) - (est(512, vocab=1, tokens=big) - est(512, vocab=1))
    assert grow == pytest.approx(48 * 512 * (2 * 50304 - 14) / 2**30)


def test_plot_selects_what_the_command_sets(data_dir, tmp_path):
    """One CSV can hold several grids: after a sweep the summary is the grid just run; --plot draws the
    whole CSV (at its run length) unless a key selects a part of it."""
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--widths=64', '--output_mult=0.5,2'))
    got = grid_.load_results(out)
    assert len(got) == 8
    cfg = dict(sweep.DEFAULTS, output_mult='2')
    assert {r['output_mult'] for r in grid_.select(got, cfg, {'output_mult'})} == {2.0}
    assert {r['output_mult'] for r in grid_.select(got, cfg, set())} == {0.5, 2.0}  # nothing set: all of it
    assert grid_.select(got, dict(sweep.DEFAULTS, out=out), None) == []  # the default grid (widths 128.., 200 steps)
    g = dict(sweep.DEFAULTS, out=out, axis='output_mult', max_iters=5, widths='64', n_layer='1')
    assert len(grid_.select(got, g, None)) == 8


def test_summary_at_an_earlier_step(data_dir, tmp_path, capsys):
    """--at_step judges each run by the val loss it recorded at that step: the final step gives the final losses,
    an earlier one the losses along the run; it prints and draws nothing, and a step no run recorded is refused."""
    out = str(tmp_path / 'res.csv')
    sweep.main(args(data_dir, out, '--max_iters=4', '--eval_interval=2'))
    final = {key(r): float(r['final_val_loss']) for r in rows(out)}
    at2 = {key(r): r['val'] for r in grid_.load_results(out, at_step=2)}
    at4 = {key(r): r['val'] for r in grid_.load_results(out, at_step=4)}
    assert at4 == pytest.approx(final, abs=1e-4) and set(at2) == set(final)  # the curve keeps 4 decimals
    assert at2 != pytest.approx(final, abs=1e-3)
    capsys.readouterr()
    summary = sweep.main(args(data_dir, out, '--max_iters=4', '--eval_interval=2', '--plot', '--at_step=2'))
    assert set(summary) == {('adamw', 'sp', 'none', 'paper'), ('adamw', 'mup', 'none', 'paper')}
    assert 'the optimum moves' in capsys.readouterr().out and not os.path.exists(str(tmp_path / 'res.png'))
    with pytest.raises(SystemExit, match='recorded its val loss at step 3'):
        sweep.main(args(data_dir, out, '--max_iters=4', '--eval_interval=2', '--plot', '--at_step=3'))


def test_defaults_write_to_out_and_a_cpu_gets_a_small_grid(data_dir, tmp_path, capsys):
    """A fork's default commands never overwrite the published results; on a CPU the runs go in this process,
    and without a grid key a CPU gets a grid of minutes, said in one line that names what needs a GPU."""
    assert sweep.DEFAULTS['out'].startswith('out/')
    a = [x for x in args(data_dir, str(tmp_path / 'res.csv'), '--widths=64', '--adamw_params=sp', '--adamw_lrs=-8')
         if x != '--workers=0']
    sweep.main(a)
    assert 'in this process, CPU' in capsys.readouterr().out
    cfg = dict(sweep.DEFAULTS, data_dir=data_dir, device='cpu')
    sweep.cpu_grid(cfg, {'device', 'data_dir'}, [])
    text = capsys.readouterr().out
    assert cfg['widths'] == sweep.CPU_GRID['widths'] and cfg['out'] == sweep.CPU_GRID['out']
    assert 'on this CPU the quick grid takes about' in text and 'need a GPU' in text and len(text.splitlines()) == 1
    dev, quick = training.device_setup('cpu'), dict(sweep.DEFAULTS)
    small = sum(map(sweep.run_seconds(cfg, 84, dev, 1e10), trained(cfg, grid_.grid(cfg))))
    full = sum(map(sweep.run_seconds(quick, 84, dev, 1e10), trained(quick, grid_.grid(quick))))
    assert small < full / 50  # (minutes on two cores where the quick grid takes hours)
    for given, files in [({'widths'}, []), (set(), ['config/sweep_paper.py'])]:  # a grid asked for: as asked
        cfg = dict(sweep.DEFAULTS, data_dir=data_dir, device='cpu')
        sweep.cpu_grid(cfg, given, files)
        assert cfg['widths'] == sweep.DEFAULTS['widths']


def test_a_heartbeat_within_a_run(data_dir, tmp_path, capsys):
    """A run prints its step and loss every `heartbeat` seconds, not only when it ends."""
    sweep.main(args(data_dir, str(tmp_path / 'res.csv'), '--widths=64', '--adamw_params=sp', '--adamw_lrs=-8',
                    '--heartbeat=1e-9'))
    beats = [line for line in capsys.readouterr().out.splitlines() if ': step ' in line]
    assert [b.split(': step ')[1].split(',')[0] for b in beats] == ['1/5', '2/5', '3/5', '4/5'], beats
    assert 'width 64 x 1 sp adamw lr 2^-8' in beats[0] and 'loss' in beats[0]


def command(data_dir, out, *extra):
    return [sys.executable, '-m', 'study.sweep', *args(data_dir, out, *extra)]


def test_the_plan_comes_within_seconds(data_dir, tmp_path):
    """`python -m study.sweep` says what it will do (runs, where) and how long, before any run ends."""
    p = subprocess.Popen(command(data_dir, str(tmp_path / 'res.csv'), '--max_iters=1000'), cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0, lines = time.time(), []
    try:
        for line in p.stdout:
            lines.append(line)
            if line.startswith('sweep: about'):
                break
        took = time.time() - t0
    finally:
        p.kill()
        p.wait()
    plan = [line for line in lines if line.startswith('sweep: ')]
    assert len(plan) == 2 and '8 runs in the grid' in plan[0] and 'in this process, CPU' in plan[0], lines
    assert took < 10, (took, lines)


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_keeps_the_finished_rows(data_dir, tmp_path, sig):
    """SIGINT (or a scheduler's SIGTERM) mid-sweep: one line on stderr, no traceback, every finished row kept
    whole; the same command then goes on."""
    out = tmp_path / 'res.csv'
    p = subprocess.Popen(command(data_dir, str(out), '--adamw_lrs=-8:-3', '--max_iters=60'), cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
        time.sleep(0.2)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0 and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith('interrupted'), err
    kept = [r for r in rows(out) if r['diverged'] in ('True', 'False')]
    assert 2 <= len(kept) < 24 and all(r['val_curve'] for r in kept)


def test_workers_end_with_their_driver(data_dir, tmp_path):
    """kill -9 of a multi-worker sweep leaves no worker behind (they watch their parent)."""
    cmd = [c for c in command(data_dir, str(tmp_path / 'res.csv'), '--max_iters=100000') if c != '--workers=0']
    p = subprocess.Popen(cmd + ['--workers=2'], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def state(pid):
        try:
            with open(f'/proc/{pid}/stat') as f:
                return f.read().rsplit(')', 1)[1].split()
        except (OSError, IndexError):
            return None

    def children():
        return [int(pid) for pid in os.listdir('/proc') if pid.isdigit() and (state(pid) or [0, 0])[1] == str(p.pid)]
    deadline = time.time() + 120
    while len(children()) < 2 and time.time() < deadline:
        time.sleep(0.5)
    kids = children()
    assert len(kids) >= 2, 'the workers never started'
    time.sleep(3)
    p.send_signal(signal.SIGKILL)
    p.wait()

    def alive():
        return [k for k in kids if (state(k) or ['Z'])[0] != 'Z']
    deadline = time.time() + 30
    while alive() and time.time() < deadline:
        time.sleep(0.5)
    assert not alive(), f'workers {alive()} outlived their driver'


SWEEP_CONFIGS = [['config/sweep_paper.py'], ['config/sweep_paper.py', 'config/sweep_long.py'],
                 ['config/sweep_paper.py', 'config/sweep_long.py', 'config/sweep_weight_decay.py'],
                 ['config/sweep_paper.py', 'config/sweep_sgd_batch.py'], ['config/sweep_depth.py'],
                 ['config/sweep_depth.py', 'config/sweep_joint.py'], ['config/sweep_quick_momentum09.py'],
                 ['config/tune_base.py'], ['config/tune_base.py', 'config/tuned_gutenberg.py']]


@pytest.mark.parametrize('files', SWEEP_CONFIGS, ids=lambda f: '+'.join(os.path.basename(x)[:-3] for x in f))
def test_sweep_configs_load_as_documented(files):
    """Each sweep config, on top of the configs its header names, makes a valid grid; the weight-decay study
    can extend the long-horizon CSV (the same run settings); the joint check carries the LR the depth sweep
    fits at 256 x 4 under its rule."""
    from configurator import apply_config
    files = [os.path.join(ROOT, f) for f in files]
    cfg = dict(sweep.DEFAULTS)
    apply_config(files, cfg)
    assert grid_.grid(cfg, 10)
    if files[-1].endswith('sweep_weight_decay.py'):
        long = dict(sweep.DEFAULTS)
        apply_config(files[:-1], long)
        assert {k: cfg[k] for k in grid_.RUN_KEYS} == {k: long[k] for k in grid_.RUN_KEYS}
    if files[-1].endswith('sweep_joint.py'):
        csv_path = os.path.join(ROOT, 'assets', 'lr_sweep_depth.csv')
        got = grid_.select(grid_.load_results(csv_path), dict(cfg, widths='256', n_layer='4', out=csv_path),
                           {'widths', 'n_layer', 'depth_rule', 'adamw_params'})
        (panel,) = optima.cells(got, 'lr').values()
        x = optima.panel_optima(panel, optima.panel_seeds(panel))[(256, 4)][0]
        assert math.log2(cfg['learning_rate']) == pytest.approx(x, abs=0.01)
