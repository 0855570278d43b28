"""The coordinate check on CPU: under μP the logits and the GDN readout move by a width-independent
amount in the first steps; under SP the logits' move grows with width. Then the probes (hooks that leave the
training forward's loss and gradients as they are, each quantity against a direct computation) and the
script (its plan within seconds; Ctrl-C keeps the widths that finished).

Widths 128..1024, 3 steps, 2 seeds, 4 x 64 tokens a step (~45 s on 2 cores). Widths from 128 because below
that (d_k = 8 at width 64) the readout S q is dominated by the random overlap of q with the keys, ~1/sqrt(d_k), and
shrinks like width^-0.4 (docs/coordinate_check.md, small widths). The LRs are larger than coord_check.py's defaults
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
import json
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import coord_check  # noqa: E402
from kernel import chunk_gated_delta_rule, recurrent_gated_delta_rule  # noqa: E402
from model import GDN, GDNConfig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3
CONFIG = dict(coord_check.DEFAULTS, widths='128,256,512,1024', steps=STEPS, seeds=2, batch_size=4,
              block_size=64, lr_adamw=1e-2, lr_sgd=0.15, device='cpu', kernel_backend='torch',
              runs='mup-adamw,mup-sgd,sp-adamw,sp-sgd', plot=False)

FLAT = {'logits': 0.2, 'readout': 0.25}  # |width exponent| of the μP changes at the last step (above)
SP_GROWS = 0.3   # SP's logits change must grow at least this fast, averaged over the steps (measured >= 0.39)


@pytest.fixture(scope='module')
def result(data_dir):
    return coord_check.coord_check(dict(CONFIG, data_dir=data_dir), verbose=False)


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
            for name in coord_check.QUANTITIES:
                assert len(result['slope'][run][kind][name]) == STEPS + 1
    coord_check.plot(result, str(tmp_path / 'c.png'), 'delta')
    assert (tmp_path / 'c.png').stat().st_size > 10_000
    text = coord_check.summary(result, 0.15)
    assert 'mup-adamw: flat:' in text and 'logits' in text


DEPTH = dict(CONFIG, dim='depth', depths='2,4,8,16', base_width=64, base_depth=4, steps=3, seeds=1,
             lr_adamw=coord_check.DEFAULTS['lr_adamw'], runs='mup-adamw-none,mup-adamw-completep')


@pytest.fixture(scope='module')
def depth_result(data_dir):
    return coord_check.coord_check(dict(DEPTH, data_dir=data_dir), verbose=False)


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


# ---- the probes: forward hooks that read, on the training forward -------------------------------------------
V = 97


def gdn(param, width=128, dtype=torch.float32):
    model = GDN(GDNConfig(vocab_size=V, width=width, n_layer=2, parametrization=param, kernel_backend='torch'))
    model.to(dtype).reset_parameters(0)
    return model


@pytest.mark.parametrize('param', ['sp', 'mup'])
def test_probes_leave_the_training_forward_unchanged(param):
    """With the hooks on, the loss and every gradient of model(x, y) are the same bits as without them (width
    128 against base 256, so μP's multipliers are not 1; 80 tokens, more than one chunk of the kernel)."""
    model = gdn(param)
    x, y = torch.randint(0, V, (2, 80)), torch.randint(0, V, (2, 80))

    def loss_and_grads():
        model.zero_grad()
        loss = model(x, y)[1]
        loss.backward()
        return loss, {n: p.grad.clone() for n, p in model.named_parameters()}
    loss, grads = loss_and_grads()
    with coord_check.probes(model, coord_check.GDN_PROBES) as seen:
        probed_loss, probed_grads = loss_and_grads()
    assert torch.equal(loss, probed_loss)
    assert all(torch.equal(grads[n], probed_grads[n]) for n in grads)
    assert {q: len(seen[q]) for q in seen} == {q: 1 if q in ('embed', 'logits') else 2 for q in seen}
    assert not any(m._forward_hooks for m in model.modules())  # and they are gone after the block


def test_probes_read_what_they_name():
    """Every probed quantity, in measure's units, against the same quantity computed directly from the
    weights in float64 (the conv by F.conv1d, the delta rule by kernel.py's token-by-token reference)."""
    model = gdn('mup', width=64, dtype=torch.float64)
    x, y = torch.randint(0, V, (2, 2, 70), generator=torch.Generator().manual_seed(0))
    got = coord_check.measure(model, x, y, coord_check.FAMILIES['gdn'])
    H, K, Vh, T = model.config.n_head, model.config.head_k, model.config.head_v, x.size(1)
    h = model.wte(x)
    want = {'embed': [h]}
    for blk in model.blocks:
        m, u = blk.mixer, blk.mixer_norm(h)
        w = m.qkv_conv.weight
        z = torch.cat([m.q_proj(u), m.k_proj(u), m.v_proj(u)], -1).transpose(1, 2)
        z = F.silu(F.conv1d(z, w[:, None], padding=w.size(1) - 1, groups=w.size(0))[..., :T]).transpose(1, 2)
        q, k, v = (t.unflatten(-1, (H, -1)) for t in z.split([H * K, H * K, H * Vh], -1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        beta = torch.sigmoid(m.b_proj(u))
        log_alpha = -m.A_log.exp() * F.softplus(m.a_proj(u) + m.dt_bias)
        o, S = recurrent_gated_delta_rule(q, k, v, log_alpha, beta, m.delta_rule.scale, output_final_state=True)
        mixer = m.o_proj((m.o_norm(o) * F.silu(m.g_proj(u).unflatten(-1, (H, Vh)))).flatten(2))
        h = h + blk.branch_mult * mixer
        mlp = blk.mlp(blk.mlp_norm(h))
        h = h + blk.branch_mult * mlp
        for name, t in dict(q=q * math.sqrt(K), k=k * math.sqrt(K), v=v, beta=beta, alpha=log_alpha.exp(),
                            state=S * math.sqrt(K), readout=o, mixer_out=mixer, mlp_out=mlp, residual=h).items():
            want.setdefault(name, []).append(t)
    want['logits'] = [F.linear(model.norm_f(h), model.wte.weight) * model.logit_mult]
    assert set(got) == set(coord_check.QUANTITIES)
    for name in want:
        assert len(got[name]) == len(want[name]), name
        for a, b in zip(got[name], want[name]):
            # the conv runs in fp32 whatever the model's dtype (fused_ops), and the L2 norm of a short vector
            # magnifies its rounding: q, k, v to fp32's precision of unit-norm coordinates
            atol = 1e-5 if name in ('q', 'k', 'v') else 1e-6
            torch.testing.assert_close(a, b.float(), rtol=1e-5, atol=atol, msg=lambda m: f"{name}: {m}")
    assert [len(got[kind]) for kind in coord_check.PARAM_KINDS] == [7, 2, 2, 2]  # 3 norms a layer and norm_f


def fla_model(width=64, n_layer=2):
    """fla's model behind model.GDN's interface (fla_mup.FlaLM), as the check builds it."""
    pytest.importorskip('fla.models')
    from fla_mup import FlaLM
    torch.manual_seed(0)
    return FlaLM(GDNConfig(vocab_size=V, width=width, n_layer=n_layer, n_head=2, base_width=width))


def test_fla_table_names_its_modules():
    """flash-linear-attention's model (built on the CPU; its forward needs CUDA): the fla table reports the
    quantities of the gdn table, each of its patterns names one module per layer (or one in all), and the
    parameter kinds find its gains, conv taps and per-head scalars."""
    model = fla_model()
    names = [n for n, _ in model.named_modules()]
    table = coord_check.FLA_PROBES
    assert [q for q in table if not q.startswith('_')] == list(coord_check.GDN_PROBES)
    for q, (pattern, _) in table.items():
        hits = [n for n in names if re.fullmatch(pattern, n)]
        assert len(hits) == (1 if q in ('embed', 'logits') else 2), (q, hits)
    params = [n for n, _ in model.named_parameters()]
    assert [sum(map(kind, params)) for kind in coord_check.PARAM_KINDS.values()] == [7, 6, 2, 2]
    with coord_check.probes(model, table):
        pass  # every quantity finds its module


@pytest.mark.gpu
def test_fla_probes_are_its_delta_rule_inputs():
    """On fla's model (CUDA), the probed q, k, v, alpha and beta, through kernel.py's delta rule with fla's
    scale 1/sqrt(d_k), give the readout fla's own kernel computed: the probes read what its rule was given."""
    model = fla_model(width=128).cuda()
    x = torch.randint(0, V, (2, 100), device='cuda')
    with coord_check.probes(model, coord_check.FLA_PROBES) as seen:
        model(x[:, :-1], x[:, 1:])
    for i in range(2):
        inputs = [seen[n][i] for n in ('q', 'k', 'v', '_g', 'beta')]
        o = chunk_gated_delta_rule(*inputs, model.config.head_k ** -0.5, backend='torch')[0]
        ref = seen['readout'][i].float()
        assert ((o - ref).norm() / ref.norm()).item() < 1e-2  # fla's fp32 matmuls may run in TF32


@pytest.mark.gpu
def test_fla_check_runs(data_dir):
    """The check on fla's model (CUDA), widths 128 and 256 = base: every value finite, q and k of RMS 1 per
    unit-norm coordinate, and μP the same as SP at the base width."""
    pytest.importorskip('fla.models')
    res = coord_check.coord_check(dict(CONFIG, model='fla', device='cuda', widths='128,256', steps=2, seeds=1,
                                       runs='sp-adamw,mup-adamw', data_dir=data_dir), verbose=False)
    for run in res['runs']:
        for name in coord_check.QUANTITIES:
            assert all(math.isfinite(v) for row in res['value'][run][name] for v in row), (run, name)
        for name in ('q', 'k'):
            assert all(v == pytest.approx(1, abs=1e-3) for row in res['value'][run][name] for v in row)
    for name in coord_check.QUANTITIES:
        assert res['value']['mup-adamw'][name][1] == pytest.approx(res['value']['sp-adamw'][name][1], rel=1e-4)


# ---- the script: says what it does, keeps what it finished ---------------------------------------------------
def start(out, data_dir, *args):
    """coord_check.py in a subprocess on a tiny grid; returns the process and a queue of its stdout lines."""
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    p = subprocess.Popen([sys.executable, 'coord_check.py', '--device=cpu', '--runs=mup-adamw', '--seeds=1',
                          '--plot=False', f'--out={out}', f'--data_dir={data_dir}', *args], cwd=ROOT, env=env,
                         text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in p.stdout], daemon=True).start()
    return p, lines


def wait_for(lines, prefix, seconds):
    """The first stdout line starting with prefix, within `seconds`, or None."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.time()))
        except queue.Empty:
            return None
        if line.lstrip().startswith(prefix):
            return line
    return None


def test_says_what_it_will_do_within_seconds(tmp_path, data_dir):
    p, lines = start(tmp_path, data_dir, '--widths=32,64', '--steps=1')
    plan = wait_for(lines, 'coord_check:', 10)
    assert plan and 'widths 32,64' in plan and '1 step,' in plan and 'on cpu' in plan, plan
    assert wait_for(lines, 'estimated', 60), "no time estimate"
    assert p.wait(timeout=300) == 0, p.stderr.read()


def test_ctrl_c_keeps_the_finished_widths(tmp_path, data_dir):
    """SIGINT while the widest model trains: one line on stderr, no traceback, and the JSON of the widths that
    finished."""
    p, lines = start(tmp_path, data_dir, '--widths=32,64,512', '--steps=3')
    assert wait_for(lines, 'width 64 mup-adamw: final loss', 300), "width 64 did not finish"
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=60) == 130
    err = p.stderr.read()
    assert 'Traceback' not in err and err.strip().splitlines()[-1].startswith('interrupted'), err
    with open(tmp_path / 'coord_check.json') as f:
        res = json.load(f)
    assert res['widths'] == [32, 64] and res['interrupted']
    assert len(res['value']['mup-adamw']['logits']) == 2 and len(res['loss']['mup-adamw']) == 2


@pytest.mark.parametrize('args, words', [(['--widths=64'], 'two widths'), (['--steps=0'], 'steps >= 1'),
                                         (['--seeds=0'], 'seeds >= 1'), (['--runs=foo'], "unknown run 'foo'"),
                                         (['--widths=abc'], "widths='abc'")])
def test_bad_input_is_one_line(args, words):
    with pytest.raises(SystemExit) as e:
        coord_check.main(['--device=cpu', '--widths=64,128', *args])
    assert str(e.value.code).startswith('error: ') and words in str(e.value.code), e.value.code
