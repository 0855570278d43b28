"""The coordinate check on CPU: under μP the logits and the GDN readout move by a width-independent
amount in the first steps; under SP the logits' move grows with width.

Widths 128..1024, 3 steps, 2 seeds, 4 x 64 tokens a step (~45 s on 2 cores). Widths from 128 because below
that (d_k = 8 at width 64) the readout S q is dominated by the random overlap of q with the keys, ~1/sqrt(d_k), and
shrinks like width^-0.4 (see mup.py, the readout rule). The LRs are larger than coord_check.py's defaults
so that within 3 steps the learned part of each change dominates the part made by the fixed init weights
acting on changed inputs (W_emb dx / m for the logits), which shrinks like m^-1/2 and is nearly all of the
change in step 1 (slope -0.45 there); the runs are stable over these steps.
Measured width exponents of the change at step 3 (torch 2.13, CPU, training.py's batches), 2 seeds:
    logits:  mup-adamw -0.08   mup-sgd -0.01      readout: mup-adamw -0.19   mup-sgd -0.11
    SP logits, mean over steps 1-3:  sp-adamw +0.41   sp-sgd +0.65
The readout's change shrinks mildly with width under μP-AdamW here (-0.16 with 3 seeds, -0.20 with 4; the
full check, 10 steps, has -0.18), so its bound is 0.25; the wrong readout rules give -0.71 / -0.53 (SP's
1/sqrt(d_k)) and +0.31 / +0.40 (m/sqrt(d_k)) for AdamW / SGD, outside it.
Each of six deliberately broken rules (logits multiplier 1; AdamW hidden LR m^0; readout scale SP's or m/sqrt(d_k);
SGD embedding LR m^0; SGD hidden LR 1/m) fails at least one assertion here.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import coord_check  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3
CONFIG = dict(coord_check.DEFAULTS, widths='128,256,512,1024', steps=STEPS, seeds=2, batch_size=4,
              block_size=64, lr_adamw=1e-2, lr_sgd=0.15, device='cpu', kernel_backend='torch',
              runs='mup-adamw,mup-sgd,sp-adamw,sp-sgd', data_dir=os.path.join(ROOT, 'data'), plot=False)

FLAT = {'logits': 0.2, 'readout': 0.25}  # |width exponent| of the μP changes at the last step (above)
SP_GROWS = 0.3   # SP's logits change must grow at least this fast, averaged over the steps (measured >= 0.39)


@pytest.fixture(scope='module')
def result():
    return coord_check.coord_check(CONFIG, verbose=False)


def delta_slope(res, run, name):
    return res['slope'][run]['delta'][name][STEPS]


@pytest.mark.parametrize('optimizer', ['adamw', 'sgd'])
@pytest.mark.parametrize('name', ['logits', 'readout'])
def test_mup_change_is_width_independent(result, optimizer, name):
    s = delta_slope(result, f'mup-{optimizer}', name)
    assert abs(s) <= FLAT[name], f"μP {optimizer}: {name} change scales like width^{s:+.2f}"


@pytest.mark.parametrize('optimizer', ['adamw', 'sgd'])
def test_sp_logits_change_grows_with_width(result, optimizer):
    s = sum(result['slope'][f'sp-{optimizer}']['delta']['logits'][1:]) / STEPS
    assert s >= SP_GROWS, f"SP {optimizer}: logits change grows only like width^{s:+.2f}"


def test_outputs(result, tmp_path):
    """The JSON has a slope per run, quantity and step; the figures are written."""
    for run in CONFIG['runs'].split(','):
        for kind in ('value', 'delta'):
            for name, _, _ in coord_check.QUANTITIES:
                assert len(result['slope'][run][kind][name]) == STEPS + 1
    coord_check.plot(result, str(tmp_path / 'c.png'), 'delta')
    assert (tmp_path / 'c.png').stat().st_size > 10_000
    text = coord_check.summary(result, 0.15)
    assert 'mup-adamw: flat:' in text and 'logits' in text


DEPTH = dict(CONFIG, dim='depth', depths='2,4,8,16', base_width=64, base_depth=4, steps=3, seeds=1,
             lr_adamw=coord_check.DEFAULTS['lr_adamw'], runs='mup-adamw-none,mup-adamw-completep')


@pytest.fixture(scope='module')
def depth_result():
    return coord_check.coord_check(DEPTH, verbose=False)


def test_depth_check(depth_result):
    """Across depth (2..16 layers at width 64, 3 AdamW steps): under CompleteP every layer's own quantities
    (q, k, v, the gates, the state, the readout) and the parameters inside the branches move by a
    depth-independent amount, and the residual stream's move does not grow; without a depth rule the residual
    stream's move grows with depth. Measured (CPU, 1 seed): CompleteP |slope| <= 0.06 inside, residual -0.30;
    none: residual +0.35."""
    run = depth_result['slope']['mup-adamw-completep']['delta']
    for name in ('q', 'k', 'v', 'beta', 'alpha', 'state', 'readout', 'conv', 'A_log', 'dt_bias'):
        assert abs(run[name][3]) <= 0.15, (name, run[name][3])
    none = depth_result['slope']['mup-adamw-none']['delta']['residual'][3]
    assert none >= 0.2 and none > run['residual'][3] + 0.3, (none, run['residual'][3])
    assert depth_result['dim'] == 'depth' and depth_result['widths'] == [2, 4, 8, 16]
