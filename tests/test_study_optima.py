"""study/optima.py on synthetic sweeps: the fitted optimum of a curve, its seed interval (and none where the seeds
cannot move it), seed levels that do not bend the curves, "larger better" judged with the seeds, one unit per
panel, and the check of a tuned LR against the best run."""
import itertools
import math

import pytest

import mup
from study import optima


def test_fit_optimum():
    """The fitted optimum of a parabola sampled on an octave grid is its vertex, between grid points; at the
    grid's edge there is no fit; a curve without curvature gives its lowest point; diverged points are ignored."""
    par = {x: 3.0 + 0.1 * (x + 7.3) ** 2 for x in range(-11, -4)}
    x, y, edge = optima.fit_optimum(par)
    assert x == pytest.approx(-7.3) and y == pytest.approx(3.0) and not edge
    half = {x / 2: 3.0 + 0.1 * (x / 2 + 7.3) ** 2 for x in range(-22, -8)}  # 5 points within an octave: least squares
    assert optima.fit_optimum(half)[0] == pytest.approx(-7.3)
    assert optima.fit_optimum({x: -x for x in range(-11, -4)})[2]  # falling all the way: the edge
    nan = {**par, -5: float('nan'), -6: float('nan')}
    assert optima.fit_optimum(nan)[0] == pytest.approx(-7.3) and not optima.fit_optimum(nan)[2]
    # a basin asymmetric beyond an octave (a wall on the right) does not pull the fit
    wall = {**par, -5: 9.0, -4: 12.0}
    assert optima.fit_optimum(wall)[0] == pytest.approx(-7.3)


def result(width, lr, seed, val, weight_decay=0.1):
    """One μP-AdamW result as study.grid.load_results() gives it, at depth 8 with the base hyper-parameters."""
    return dict(width=width, n_layer=8, depth_rule='none', lr=lr, parametrization='mup', optimizer='adamw',
                seed=seed, steps=10, weight_decay=weight_decay, weight_decay_rule='paper', trained_as='', val=val,
                diverged=False, **mup.BASE_HPARAMS)


def test_seed_interval_brackets_the_seed_optima():
    """With several seeds the bootstrap interval of a curve's optimum lies within the per-seed optima and around
    their mean (the seeds resampled jointly across curves), and the shift across curves gets an interval too;
    one seed gives none."""
    rows = []
    for seed, off in [(1, -0.3), (2, 0.0), (3, 0.3)]:
        for width, shift in [(256, 0.0), (1024, -1.0)]:
            for e in range(-11, -4):
                rows.append(result(width, 2.0 ** e, seed, 3 + 0.1 * (e + 7 - off - shift) ** 2))
    s = optima.summarize(rows)[('adamw', 'mup', 'none', 'paper')]
    assert s['best'][(256, 8)][0] == pytest.approx(-7.0) and s['best'][(1024, 8)][0] == pytest.approx(-8.0)
    lo, hi = s['interval'][(256, 8)]
    assert -7.3 - 1e-6 <= lo < -7.0 < hi <= -6.7 + 1e-6, (lo, hi)  # within the seeds' own optima, around the mean
    assert s['shift'] == pytest.approx(1.0) and s['shift_interval'][0] == pytest.approx(1.0)  # same seeds: same shift
    one = [r for r in rows if r['seed'] == 1]
    assert optima.summarize(one)[('adamw', 'mup', 'none', 'paper')]['interval'][(256, 8)] == (math.nan, math.nan) or \
        all(math.isnan(v) for v in optima.summarize(one)[('adamw', 'mup', 'none', 'paper')]['interval'][(256, 8)])


def test_an_optimum_on_one_seed_has_no_interval(capsys):
    """A second seed run only at width 1024 gives that width an interval; width 256, one seed near its optimum
    (its second seed far out on the left), gets none, nor does the shift, and the order of widths is unconfirmed:
    resampling the seeds cannot move a fit whose points each have one seed."""
    rows = [result(w, 2.0 ** e, 1, 3.1 - 0.1 * (w == 1024) + 0.1 * (e + 7) ** 2) for w in (256, 1024)
            for e in range(-11, -4)]
    rows += [result(1024, 2.0 ** e, 2, 3.02 + 0.1 * (e + 7.4) ** 2) for e in (-8, -7, -6)]
    rows += [result(256, 2.0 ** -11, 2, 4.7)]
    s = optima.summarize(rows)[('adamw', 'mup', 'none', 'paper')]
    out = capsys.readouterr().out
    lo, hi = s['interval'][(1024, 8)]
    assert lo < hi and all(math.isnan(v) for v in s['interval'][(256, 8)] + s['shift_interval'])
    assert 'optimum lr 2^-7.00 (one seed there: no interval)' in out
    assert '(no interval: one seed at width 256)' in out and 'larger better at the optimum: yes, within' in out


def test_a_seed_level_does_not_bend_the_curves():
    """A seed that scores 0.15 higher everywhere (its validation windows), run only near the optima: the plain
    mean over the seeds each LR has would tilt the curve towards the LRs without it; the fit removes the level.
    On a grid that every seed covers the curves are the plain means."""
    rows = [result(w, 2.0 ** e, 1, 3 + 0.01 * (e + 8.5) ** 2) for w in (256, 1024) for e in range(-11, -5)]
    rows += [result(w, 2.0 ** e, 2, 3.15 + 0.01 * (e + 8.5) ** 2) for w in (256, 1024) for e in (-9, -8)]
    s = optima.summarize(rows)[('adamw', 'mup', 'none', 'paper')]
    assert s['best'][(1024, 8)][0] == pytest.approx(-8.5) and s['best'][(1024, 8)][1] == pytest.approx(3.075)
    raw = {}  # the curves before cells() removes the levels: {width: {lr: {(): {seed: (val, diverged)}}}}
    for r in rows:
        raw.setdefault(r['width'], {}).setdefault(r['lr'], {}).setdefault((), {})[r['seed']] = (r['val'], False)
    off = optima.seed_offsets(list(raw.values()))
    assert off[2] - off[1] == pytest.approx(0.15) and off[1] + off[2] == pytest.approx(0.0)
    full = [result(w, 2.0 ** e, seed, 3 + 0.1 * seed + 0.01 * (e + 8 + seed) ** 2)
            for w in (256, 1024) for e in range(-11, -5) for seed in (1, 2)]
    (panel,) = optima.cells(full, 'lr').values()
    mean = {x: sum(r['val'] for r in full if r['width'] == 256 and r['lr'] == x) / 2 for x in panel[(256, 8)]}
    assert optima.curve(panel[(256, 8)], [1, 2]) == pytest.approx(mean)


@pytest.mark.parametrize('gain, verdict', [(0.1, 'yes ('), (0.001, 'yes, within the seed intervals'), (-0.05, 'no')])
def test_wider_better_is_judged_with_the_seeds(capsys, gain, verdict):
    """"Larger better" is confirmed only where the best-loss intervals of neighbouring curves do not overlap. The
    seeds' noise differs per width (a common level would cancel: test_a_seed_level_does_not_bend_the_curves)."""
    rows = []
    for seed, off in [(1, 0.02), (2, -0.02)]:
        for width, e in itertools.product((256, 1024), range(-11, -4)):
            noise = off if width == 256 else -off
            rows.append(result(width, 2.0 ** e, seed, 3 + noise - (gain if width == 1024 else 0) + 0.1 * (e + 8) ** 2))
    optima.summarize(rows)
    assert f"larger better at the optimum: {verdict}" in capsys.readouterr().out


def test_a_panel_is_fitted_in_one_unit():
    """A weight-decay panel whose curves differ in having λ = 0 is fitted in λ's own units for every curve, so the
    optima and their shift compare (log2 units for one curve and λ for the other would mix octaves and λ)."""
    rows = []
    for width, lams in [(256, (0.0, 0.1, 0.2, 0.4)), (1024, (0.1, 0.2, 0.4, 0.8))]:
        for lam in lams:
            rows.append(result(width, 2.0 ** -8, 1, 3 + (lam - 0.2) ** 2, weight_decay=lam))
    s = optima.summarize(rows, 'weight_decay')[('adamw', 'mup', 'none', 'paper')]
    assert s['best'][(256, 8)][0] == pytest.approx(0.2) and s['best'][(1024, 8)][0] == pytest.approx(0.2)
    assert s['shift'] == pytest.approx(0.0, abs=1e-9)


def test_tuned_lr_is_judged_against_the_best_run(capsys):
    """The check of μTransfer's promise: the loss at the tuned LR against the best grid run's seed interval (the
    fitted minimum lies between grid points, where no run is), and the best loss gets its own interval; a best run
    of one seed has none."""
    rows = []
    for seed, off in [(1, 0.02), (2, -0.02)]:
        for width, e in itertools.product((256, 1024), range(-11, -4)):
            rows.append(result(width, 2.0 ** e, seed, 3 + (off if width == 256 else -off) + 0.1 * (e + 7.8) ** 2))
    s = optima.summarize(rows, tuned_lr=2.0 ** -8)[('adamw', 'mup', 'none', 'paper')]
    lo, hi = s['loss_interval'][(1024, 8)]
    assert lo == pytest.approx(2.98) and hi == pytest.approx(3.02)  # the seeds' own minima
    assert "at the tuned LR 3.0040 (+0.0040; the best LR of the grid)" in capsys.readouterr().out
    optima.summarize(rows, tuned_lr=2.0 ** -7)  # one octave off: 0.0640 above the best run, whose seeds reach 3.0240
    out = capsys.readouterr().out
    assert "at the tuned LR 3.0040" not in out and "(+0.0640; the best run's seed interval reaches 3.0240)" in out
    lone = [r for r in rows if r['seed'] == 1 or r['lr'] != 2.0 ** -8]  # the best run without its second seed
    optima.summarize(lone, tuned_lr=2.0 ** -7)
    assert "; the best run has one seed)" in capsys.readouterr().out


def test_labels_of_one_model_are_said_once():
    """Rows of several labels trained as one run are named together, counted per kind (not per run), with a
    group's decays in units of its smallest; a row alone on its run is not named, whatever it was trained as."""
    rows = [result(256, 2.0 ** e, 1, 3.0) for e in (-8, -7)]
    rows += [dict(r, parametrization='sp', trained_as='') for r in rows]
    rows = [dict(r, trained_as='parametrization=sp') if r['parametrization'] == 'mup' else r for r in rows]
    rows += [result(1024, 2.0 ** -8, 1, 2.9, weight_decay=0.4),
             dict(result(1024, 2.0 ** -8, 1, 2.9, weight_decay=0.1), weight_decay_rule='fixed_timescale',
                  trained_as='weight_decay_rule=paper weight_decay=0.4'),
             dict(result(1024, 2.0 ** -8, 1, 2.9, weight_decay=0.2), weight_decay_rule='sqrt_width',
                  trained_as='weight_decay_rule=paper weight_decay=0.4'),
             dict(result(1024, 2.0 ** -7, 1, 2.9, weight_decay=0.1), weight_decay_rule='fixed_timescale',
                  trained_as='weight_decay_rule=paper weight_decay=0.4'),
             result(1024, 2.0 ** -6, 1, 2.9)]
    assert optima.one_model(rows) == [
        'adamw at width 256 x 8: mup = sp (2 runs)',
        'adamw mup at width 1024 x 8: fixed_timescale λ = paper 4λ = sqrt_width 2λ (1 run)']
