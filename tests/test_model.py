"""The GDN LM: μP == SP at the base width, the scaling rules as numbers, causality, init loss, state."""
import math
import os
import re
import subprocess
import sys

import pytest
import torch

import mup
from model import GDN, GDNConfig

V = 512  # a small vocab keeps the CPU tests fast


def build(width=256, param='sp', seed=0, **kw):
    model = GDN(GDNConfig(width=width, n_layer=2, vocab_size=V, parametrization=param, **kw))
    model.reset_parameters(seed)
    return model


def groups(model, optimizer, **kw):
    opt = model.configure_optimizer(optimizer, 1e-2, 0.1, (0.9, 0.95), 0.98, 'cpu', **kw)
    names = {id(p): n for n, p in model.named_parameters()}
    return {g['name']: (g['lr'], g['weight_decay'], sorted(names[id(p)] for p in g['params']))
            for g in opt.param_groups}


MUP = [p for p in mup.PARAMETRIZATIONS if p != 'sp']
# base hyper-parameters away from SP's defaults: μP must still equal SP at the base width
TUNED = dict(output_mult=4.0, init_std=0.03, embed_lr_mult=2.0, gate_lr_mult=3.0)


@pytest.mark.parametrize('optimizer', ['adamw', 'sgd'])
@pytest.mark.parametrize('hp', [{}, TUNED])
def test_mup_equals_sp_at_base_width(optimizer, hp):
    sp = build(param='sp', **hp)
    idx = torch.randint(0, V, (2, 40))
    for param in MUP:
        mp = build(param=param, **hp)
        for (n1, p1), (n2, p2) in zip(sp.named_parameters(), mp.named_parameters()):
            assert n1 == n2 and torch.equal(p1, p2), (param, n1)
        assert torch.equal(sp(idx, idx)[0], mp(idx, idx)[0]), param
        assert groups(sp, optimizer) == groups(mp, optimizer), param


def test_init_depends_on_the_seed_alone():
    a = build(seed=3)
    torch.manual_seed(123)
    torch.randn(1000)  # whatever was drawn before
    b = build(seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = build(seed=4)
    assert not torch.equal(a.wte.weight, c.wte.weight)


def test_groups_cover_every_parameter_once():
    model = build(width=384, param='mup')
    seen = [id(p) for g in mup.param_groups(model, 'mup', 'sgd', 384, 256, 0.1) for p in g['params']]
    assert len(seen) == len(set(seen)) == len(list(model.parameters()))
    assert {mup.group_of(n) for n, _ in model.named_parameters()} == set(mup.GROUPS)


# LR exponents of m written out independently of mup.py (DESIGN §3), so a changed rule fails here.
# 'mup' is the paper's (§4: SGD gates m^-1/2, scalars m^+1/2); 'mup_fixed_fanout' gives the gates and
# scalars TP5's rows for an output layer of fixed fan-out and its biases (m^-1, m^0).
EXPECTED_LR_EXP = {
    ('mup', 'adamw'): dict(embedding=0, hidden=-1, gate=-1, scalar=0, vector=0),
    ('mup', 'sgd'): dict(embedding=1, hidden=0, gate=-0.5, scalar=0.5, vector=1),
    ('mup_fixed_fanout', 'adamw'): dict(embedding=0, hidden=-1, gate=-1, scalar=0, vector=0),
    ('mup_fixed_fanout', 'sgd'): dict(embedding=1, hidden=0, gate=-1, scalar=0, vector=1),
    ('mup_nogdn', 'adamw'): dict(embedding=0, hidden=-1, gate=-1, scalar=0, vector=0),
    ('mup_nogdn', 'sgd'): dict(embedding=1, hidden=0, gate=0, scalar=1, vector=1),
    ('sp', 'adamw'): dict(embedding=0, hidden=0, gate=0, scalar=0, vector=0),
    ('sp', 'sgd'): dict(embedding=0, hidden=0, gate=0, scalar=0, vector=0),
}


def test_every_parametrization_is_tested():
    assert {p for p, _ in EXPECTED_LR_EXP} == set(mup.PARAMETRIZATIONS)


@pytest.mark.parametrize('param,optimizer', list(EXPECTED_LR_EXP))
@pytest.mark.parametrize('m', [2, 4])
def test_lr_multipliers_scale_with_width(param, optimizer, m):
    """Measured on the optimizer a built model makes: each group's LR / base LR = m^exponent."""
    for group, exp in EXPECTED_LR_EXP[(param, optimizer)].items():
        assert mup.lr_mult(group, param, optimizer, 256, 256) == 1.0
        assert mup.lr_mult(group, param, optimizer, 256 * m, 256) == pytest.approx(m ** exp), group
    got = groups(build(width=128 * m, param=param, base_width=128), optimizer)
    for group, exp in EXPECTED_LR_EXP[(param, optimizer)].items():
        assert got[group][0] == pytest.approx(1e-2 * m ** exp), group


@pytest.mark.parametrize('m', [2, 4])
@pytest.mark.parametrize('param', ['sp', 'mup'])
def test_base_hyperparameters_scale_with_width(m, param):
    """output_mult, init_std, embed_lr_mult and gate_lr_mult are base-width values: μP scales them by
    m^-1, m^-1/2 (hidden and gate matrices; not the embedding) and the embedding's and the gates' LR
    rules; SP uses them as they are."""
    mu = param != 'sp'
    model = build(width=128 * m, param=param, base_width=128, **TUNED)
    p = dict(model.named_parameters())
    for name in ['blocks.0.mixer.q_proj.weight', 'blocks.1.mlp.down_proj.weight', 'blocks.0.mixer.a_proj.weight']:
        assert p[name].std().item() == pytest.approx(0.03 * (m ** -0.5 if mu else 1), rel=0.06), name
    assert p['wte.weight'].std().item() == pytest.approx(0.03, rel=0.03)
    assert model.logit_mult == pytest.approx(4.0 / m if mu else 4.0)
    for optimizer, emb_exp in [('adamw', 0), ('sgd', 1)]:
        g = groups(model, optimizer)
        assert g['embedding'][0] == pytest.approx(1e-2 * 2.0 * (m ** emb_exp if mu else 1))
        assert g['hidden'][0] == pytest.approx(1e-2 * (m ** -1 if mu and optimizer == 'adamw' else 1))
        # gate_lr_mult: the gates and their scalars, times their rule (the paper's: AdamW m^-1 / m^0,
        # SGD m^-1/2 / m^+1/2)
        gate_exp, scalar_exp = {'adamw': (-1, 0), 'sgd': (-0.5, 0.5)}[optimizer] if mu else (0, 0)
        assert g['gate'][0] == pytest.approx(1e-2 * 3.0 * m ** gate_exp)
        assert g['scalar'][0] == pytest.approx(1e-2 * 3.0 * m ** scalar_exp)


def test_logits_scale_with_output_mult():
    """output_mult multiplies the logits exactly (the forward pass, not only the attribute)."""
    a, b = build(output_mult=1.0), build(output_mult=3.0)
    idx = torch.randint(0, V, (1, 30))
    torch.testing.assert_close(b(idx, idx)[0], 3.0 * a(idx, idx)[0])


@pytest.mark.parametrize('m', [2, 4])
def test_init_std_and_multipliers_scale_with_width(m):
    """Measured on built models: hidden and gate stds shrink as m^-1/2 under μP, stay 0.02 under SP."""
    for param, exp in [('mup', -0.5), ('sp', 0.0)]:
        model = build(width=128 * m, param=param, base_width=128)
        p = dict(model.named_parameters())
        for name in ['blocks.0.mixer.q_proj.weight', 'blocks.1.mlp.down_proj.weight',
                     'blocks.0.mixer.a_proj.weight', 'blocks.0.mixer.b_proj.weight']:
            assert p[name].std().item() == pytest.approx(0.02 * m ** exp, rel=0.06), name
        assert p['wte.weight'].std().item() == pytest.approx(0.02, rel=0.03)
        d_k = model.config.head_k
        readout = model.blocks[0].mixer.readout_scale * math.sqrt(d_k)
        assert readout == pytest.approx(math.sqrt(m) if param != 'sp' else 1.0)
        assert model.logit_mult == pytest.approx(1 / m if param != 'sp' else 1.0)


def test_unknown_parametrization_fails_clearly():
    with pytest.raises(ValueError, match='mup_fixed_fanout'):
        GDNConfig(parametrization='mupp')


def test_causal():
    model = build().double()
    idx = torch.randint(0, V, (1, 100))
    a, _ = model(idx, idx)
    idx[0, 60] = (idx[0, 60] + 1) % V
    b, _ = model(idx, idx)
    assert torch.equal(a[:, :60], b[:, :60])
    assert (a[:, 60:] - b[:, 60:]).abs().max() > 1e-4  # and the change is seen from t on


@pytest.mark.parametrize('width,param', [(256, 'sp'), (512, 'mup'), (512, 'sp')])
def test_init_loss_near_log_vocab(width, param):
    model = build(width=width, param=param)
    idx, targets = torch.randint(0, V, (4, 64)), torch.randint(0, V, (4, 64))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(V)) < 0.15


def test_state_carries_across_pieces():
    model = build()
    idx = torch.randint(0, V, (2, 150))
    whole, _ = model(idx, idx)
    a, _, state = model(idx[:, :37], return_state=True)
    b, _, state = model(idx[:, 37:101], state=state, return_state=True)
    c, _, _ = model(idx[:, 101:], state=state, return_state=True)
    torch.testing.assert_close(torch.cat([a, b, c], 1), whole, rtol=1e-4, atol=1e-5)


def test_token_by_token_equals_full_sequence():
    model = build()
    idx = torch.randint(0, V, (1, 20))
    whole, _ = model(idx, idx)
    state, steps = None, []
    for t in range(idx.size(1)):
        logits, _, state = model(idx[:, t:t + 1], state=state, return_state=True)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), whole, rtol=1e-4, atol=1e-5)


def test_bad_head_dims_fail_clearly():
    with pytest.raises(ValueError, match='multiple of 8'):
        GDNConfig(width=100)


COMPILED_TRITON = """
import sys, torch
from model import GDN, GDNConfig
torch.manual_seed(0)
cfg = dict(width=128, n_layer=1, n_head=2, vocab_size=64)
tri, ref = GDN(GDNConfig(**cfg, kernel_backend='triton')), GDN(GDNConfig(**cfg, kernel_backend='torch'))
ref.load_state_dict(tri.state_dict())
idx = torch.randint(0, 64, (1, 70))
ex = torch._dynamo.explain(tri)(idx, idx)
ops = sorted({str(n.target) for gm in ex.graphs for n in gm.graph.nodes if 'gdn' in str(n.target)})
print('EXPLAIN', ex.graph_break_count, ','.join(ops) or '-')
_, loss_ref = ref(idx, idx)
loss_ref.backward()
g_ref = ref.blocks[0].mixer.q_proj.weight.grad
for backend in sys.argv[1:]:
    torch._dynamo.reset()
    tri.zero_grad()
    _, loss = torch.compile(tri, backend=backend)(idx, idx)
    loss.backward()
    g = tri.blocks[0].mixer.q_proj.weight.grad
    print(backend, abs(loss.item() - loss_ref.item()), ((g - g_ref).norm() / g_ref.norm()).item())
"""


@pytest.mark.parametrize('custom_op', [True, False])
def test_compiled_model_runs_the_triton_kernel(custom_op):
    """train.py compiles the model on CUDA. By default the Triton kernel is a custom op
    (gdn::chunk_gdr_fwd) that dynamo keeps in the graph without tracing the launches: no graph break.
    GDR_CUSTOM_OP=0 restores the torch.compiler.disable path (a graph break per layer). Both checked
    with the Triton interpreter against the torch path; with aot_eager, and inductor (CPU C++) once."""
    pytest.importorskip('triton')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    backends = ['aot_eager', 'inductor'] if custom_op else ['aot_eager']
    env = dict(os.environ, TRITON_INTERPRET='1', GDR_CUSTOM_OP='1' if custom_op else '0')
    r = subprocess.run([sys.executable, '-c', COMPILED_TRITON, *backends], capture_output=True, text=True,
                       cwd=root, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = {ln.split()[0]: ln.split()[1:] for ln in r.stdout.splitlines() if ln.strip()}
    breaks, ops = int(lines['EXPLAIN'][0]), lines['EXPLAIN'][1]
    if custom_op:
        assert breaks == 0 and ops == 'gdn.chunk_gdr_fwd.default', lines['EXPLAIN']
    else:
        assert breaks > 0 and ops == '-', lines['EXPLAIN']
    for backend in backends:
        dloss, dgrad = map(float, lines[backend])
        assert dloss < 1e-5 and dgrad < 1e-4, (backend, dloss, dgrad)


def test_readme_rule_links_point_at_the_rules():
    """README's rules table links to mup.py lines; each must still be the line that sets the rule."""
    root = os.path.join(os.path.dirname(__file__), '..')
    readme = open(os.path.join(root, 'README.md'), encoding='utf-8').read()
    lines = open(os.path.join(root, 'mup.py'), encoding='utf-8').read().splitlines()
    expect = {'INIT_EXP': "'mup': {", 'multiplier (tied lm_head)': "'logits':", 'readout scale': "'readout':",
              'AdamW LR': "'adamw':", 'SGD LR': "'sgd':", 'SGD ablation': "'sgd':", 'weight decay': 'DECAY =',
              'BASE_HPARAMS': 'BASE_HPARAMS ='}
    rows = [r for r in readme.splitlines() if '](mup.py#L' in r]
    assert len(rows) >= 12
    for row in rows:
        n = int(re.search(r'\(mup\.py#L(\d+)\)', row).group(1))
        key = next((k for k in expect if k in row), 'INIT_EXP')  # the init rows all point at INIT_EXP
        assert expect[key] in lines[n - 1], f"README row {row[:60]!r} -> mup.py:{n} = {lines[n - 1]!r}"
        # an SGD row that names a parametrization points into that parametrization's LR_EXP block
        named = [p for p in ('mup_fixed_fanout', 'mup_nogdn', 'mup') if f'`{p}`' in row]
        if key.startswith('SGD') and named:
            start = lines.index('LR_EXP = {')
            block = next(i for i in range(start, len(lines)) if lines[i].startswith(f"    '{named[0]}': {{"))
            assert block < n - 1 and all(not lines[i].startswith("    '") for i in range(block + 1, n - 1)), \
                f"README row {row[:60]!r} -> mup.py:{n}, not in {named[0]}'s rules"
