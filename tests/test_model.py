"""The GDN LM: μP == SP at the base shape (every width, depth and weight-decay rule), the scaling rules as
numbers, causality, init loss, state, the Triton path against the PyTorch path, compiled without a graph break."""
import json
import math
import os
import subprocess
import sys
import types

import pytest
import torch

import mup
from model import GDN, GDNConfig

V = 512  # a small vocab keeps the CPU tests fast


def build(width=256, param='sp', seed=0, n_layer=2, **kw):
    model = GDN(GDNConfig(width=width, n_layer=n_layer, vocab_size=V, parametrization=param, **kw))
    model.reset_parameters(seed)
    return model


def groups(model, optimizer, rule='paper'):
    opt = model.configure_optimizer(optimizer, 1e-2, 0.1, (0.9, 0.95), 0.98, 'cpu', rule)
    names = {id(p): n for n, p in model.named_parameters()}
    return {g['name']: (g['lr'], g['weight_decay'], g.get('eps'), sorted(names[id(p)] for p in g['params']))
            for g in opt.param_groups}


def logits(model, idx):
    return model(idx, return_state=True)[0]


MUP = [p for p in mup.PARAMETRIZATIONS if p != 'sp']
# base hyper-parameters away from SP's defaults: μP must still equal SP at the base width
TUNED = dict(output_mult=4.0, init_std=0.03, embed_lr_mult=2.0, gate_lr_mult=3.0)


@pytest.mark.parametrize('optimizer', ['adamw', 'sgd'])
@pytest.mark.parametrize('hp', [{}, TUNED])
def test_mup_equals_sp_at_base_shape(optimizer, hp):
    """At width == base_width and n_layer == base_depth every parametrization, depth rule and weight-decay
    rule builds SP's model with SP's optimizer groups, parameter by parameter."""
    sp = build(param='sp', base_depth=2, **hp)
    idx = torch.randint(0, V, (2, 40))
    for param in mup.PARAMETRIZATIONS:
        for rule in mup.DEPTH_ALPHA:
            mp = build(param=param, base_depth=2, depth_rule=rule, **hp)
            for (n1, p1), (n2, p2) in zip(sp.named_parameters(), mp.named_parameters()):
                assert n1 == n2 and torch.equal(p1, p2), (param, rule, n1)
            assert torch.equal(sp(idx, idx)[1], mp(idx, idx)[1]) and torch.equal(logits(sp, idx), logits(mp, idx))
            for wd_rule in mup.WEIGHT_DECAY_RULES:
                assert groups(sp, optimizer) == groups(mp, optimizer, wd_rule), (param, rule, wd_rule)


@pytest.mark.parametrize('optimizer', ['adamw', 'sgd'])
def test_no_depth_rule_changes_nothing_at_any_depth(optimizer):
    """depth_rule='none' (the paper's setting) is width-only μP at every depth: no branch multiplier, and the
    LRs, decays and epsilons of a model with base_depth 8 and 2 layers are those of base_depth 2."""
    a, b = build(param='mup', width=512, base_depth=8), build(param='mup', width=512, base_depth=2)
    assert all(blk.branch_mult == 1 for blk in a.blocks)
    assert groups(a, optimizer) == groups(b, optimizer)
    idx = torch.randint(0, V, (1, 30))
    assert torch.equal(a(idx, idx)[1], b(idx, idx)[1])


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
    seen = [id(p) for g in mup.param_groups(model, 'sgd', 0.1) for p in g['params']]
    assert len(seen) == len(set(seen)) == len(list(model.parameters()))
    assert {mup.group_of(n) for n, _ in model.named_parameters()} == set(mup.GROUPS)
    model.blocks[0].mixer.extra = torch.nn.Parameter(torch.zeros(3))  # a parameter no rule names: no default
    with pytest.raises(ValueError, match='blocks.0.mixer.extra has no μP rule'):
        mup.param_groups(model, 'adamw', 0.1)


# LR exponents of m written out independently of mup.py, from Tensor Programs V (Table 3) and Liu & Gu
# (§4), so a changed rule fails here.
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
        assert mup.lr_mult(GDNConfig(width=256, parametrization=param), optimizer, group) == 1.0
        got = mup.lr_mult(GDNConfig(width=256 * m, parametrization=param), optimizer, group)
        assert got == pytest.approx(m ** exp), group
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
    torch.testing.assert_close(logits(b, idx), 3.0 * logits(a, idx))


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
        readout = model.blocks[0].mixer.delta_rule.scale * math.sqrt(d_k)
        assert readout == pytest.approx(math.sqrt(m) if param != 'sp' else 1.0)
        assert model.logit_mult == pytest.approx(1 / m if param != 'sp' else 1.0)


def test_unknown_parametrization_fails_clearly():
    with pytest.raises(ValueError, match='mup_fixed_fanout'):
        GDNConfig(parametrization='mupp')


def test_causal():
    model = build().double()
    idx = torch.randint(0, V, (1, 100))
    a = logits(model, idx)
    idx[0, 60] = (idx[0, 60] + 1) % V
    b = logits(model, idx)
    assert torch.equal(a[:, :60], b[:, :60])
    assert (a[:, 60:] - b[:, 60:]).abs().max() > 1e-4  # and the change is seen from t on


@pytest.mark.parametrize('width,param', [(256, 'sp'), (512, 'mup'), (512, 'sp')])
def test_init_loss_near_log_vocab(width, param):
    model = build(width=width, param=param)
    idx, targets = torch.randint(0, V, (4, 64)), torch.randint(0, V, (4, 64))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(V)) < 0.15


def test_state_carries_across_pieces():
    """Pieces shorter than the conv (1 and 2 tokens), within a chunk, across chunks: the same logits."""
    model = build()
    idx = torch.randint(0, V, (2, 150))
    whole = logits(model, idx)
    state, pieces = None, []
    for a, b in [(0, 1), (1, 3), (3, 37), (37, 101), (101, 150)]:
        out, _, state = model(idx[:, a:b], state=state, return_state=True)
        pieces.append(out)
    torch.testing.assert_close(torch.cat(pieces, 1), whole, rtol=1e-4, atol=1e-5)


def test_token_by_token_equals_full_sequence():
    model = build()
    idx = torch.randint(0, V, (1, 20))
    whole = logits(model, idx)
    state, steps = None, []
    for t in range(idx.size(1)):
        out, _, state = model(idx[:, t:t + 1], state=state, return_state=True)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), whole, rtol=1e-4, atol=1e-5)


def test_generate_carries_the_state_exactly():
    """Greedy sampling (top_k=1): generate, reading the prompt once and carrying the state, picks the tokens
    that re-reading the whole sequence at every step picks."""
    model = build().double()
    idx = torch.randint(0, V, (2, 5))
    seq = idx
    for _ in range(8):
        seq = torch.cat([seq, model(seq)[0][:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(model.generate(idx, 8, top_k=1), seq)


def test_bad_head_dims_fail_clearly():
    with pytest.raises(ValueError, match='multiple of 8'):
        GDNConfig(width=100)


TRITON_VS_TORCH = """
import sys, json, torch
sys.path.insert(0, 'tests')
import conftest, kernel, fused_ops
conftest.patch_interpreter()
from model import GDN, GDNConfig
torch.manual_seed(0)
cfg = dict(width=128, n_layer=2, n_head=2, vocab_size=300, parametrization='mup', base_width=64)
models = {b: GDN(GDNConfig(**cfg, kernel_backend=b)) for b in ('triton', 'torch')}
models['torch'].reset_parameters(1)
models['triton'].load_state_dict(models['torch'].state_dict())
ref = GDN(GDNConfig(**cfg, kernel_backend='torch')).double()
ref.load_state_dict(models['torch'].state_dict())
idx = torch.randint(0, 300, (2, 70))
targets = idx.roll(-1, 1)
targets[0, :9] = -1  # ignored positions
out = {}
for name, m in [*models.items(), ('float64', ref)]:
    loss = m(idx, targets)[1]
    loss.backward()
    out[name] = dict(loss=loss.item(), grads={n: p.grad.double() for n, p in m.named_parameters()})
g64 = out['float64']['grads']
err = {b: {n: ((g - g64[n]).norm() / g64[n].norm()).item() for n, g in out[b]['grads'].items()} for b in models}
res = {b: dict(loss=abs(out[b]['loss'] - out['float64']['loss']), grads=err[b]) for b in models}
ex = torch._dynamo.explain(models['triton'])(idx, targets)
res['ops'] = sorted({str(n.target) for gm in ex.graphs for n in gm.graph.nodes if 'gdn' in str(n.target)})
res['breaks'] = {'triton': ex.graph_break_count,
                 'torch': torch._dynamo.explain(models['torch'])(idx, targets).graph_break_count}
for backend in sys.argv[1:]:
    torch._dynamo.reset()
    models['triton'].zero_grad()
    loss = torch.compile(models['triton'], backend=backend)(idx, targets)[1]
    loss.backward()
    res[backend] = max(((p.grad.double() - g64[n]).norm() / g64[n].norm()).item()
                       for n, p in models['triton'].named_parameters())
print('RESULT' + json.dumps(res))
"""


@pytest.fixture(scope='module')
def triton_vs_torch():
    pytest.importorskip('triton')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, '-c', TRITON_VS_TORCH, 'aot_eager', 'inductor'], capture_output=True,
                       text=True, cwd=root, env=dict(os.environ, TRITON_INTERPRET='1'), timeout=900)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith('RESULT')]
    assert r.returncode == 0 and line, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads(line[0][len('RESULT'):])


def test_triton_path_is_as_accurate_as_the_torch_path(triton_vs_torch):
    """The model on the Triton kernels (interpreted) and on the PyTorch ops, both fp32, against the same model
    in float64: the loss and every parameter's gradient. Both orders of fp32 summation carry errors of the same
    size, so the Triton path's error is bounded by a small multiple of the PyTorch path's own (plus a floor of
    ~100 fp32 roundings, for gradients the PyTorch path happens to get almost exactly)."""
    tri, tor = triton_vs_torch['triton'], triton_vs_torch['torch']
    assert tri['loss'] < 1e-5 and tor['loss'] < 1e-5, (tri['loss'], tor['loss'])
    for name, err in tri['grads'].items():
        assert err <= 10 * tor['grads'][name] + 100 * 2 ** -24, (name, err, tor['grads'][name])


def test_compiled_model_runs_the_custom_ops_without_graph_break(triton_vs_torch):
    """train.py compiles the model on CUDA. The delta rule, the conv and the loss are custom ops (gdn::...)
    that dynamo keeps in the graph without tracing their launches: no graph break on either backend, and the
    compiled model's gradients (aot_eager, and inductor's CPU code) match float64 as the eager ones do."""
    assert triton_vs_torch['breaks'] == {'triton': 0, 'torch': 0}, triton_vs_torch['breaks']
    assert {'gdn.chunk_gdr_fwd.default', 'gdn.conv_silu_fwd.default'} <= set(triton_vs_torch['ops']), \
        triton_vs_torch['ops']
    worst_eager = max(triton_vs_torch['triton']['grads'].values())
    for backend in ('aot_eager', 'inductor'):
        assert triton_vs_torch[backend] <= 10 * worst_eager + 100 * 2 ** -24, (backend, triton_vs_torch[backend])


@pytest.mark.parametrize('rule,alpha', [('depth_mup', 0.5), ('completep', 1.0)])
@pytest.mark.parametrize('k', [0.5, 4])
def test_depth_rules(rule, alpha, k):
    """A depth rule at n_layer = k * base_depth, measured on built models: every residual branch x k^-alpha;
    inside the blocks AdamW's LR x k^(alpha-1) and epsilon x k^-alpha, SGD's LR x k^(2 alpha - 1), on top of the
    width rule; the embedding and the final norm untouched; 'fixed_timescale' decay x LR ratio^-1."""
    base = build(param='mup', width=512, base_depth=2)
    deep = build(param='mup', width=512, base_depth=2, n_layer=int(2 * k), depth_rule=rule)
    assert all(b.branch_mult == pytest.approx(k ** -alpha) for b in deep.blocks)
    for optimizer, lr_exp in [('adamw', alpha - 1), ('sgd', 2 * alpha - 1)]:
        for wd_rule in mup.WEIGHT_DECAY_RULES:
            g0, g1 = groups(base, optimizer, wd_rule), groups(deep, optimizer, wd_rule)
            for name, (lr, wd, eps, _) in g1.items():
                inside = name in ('hidden', 'gate', 'scalar', 'vector')
                assert lr == pytest.approx(g0[name][0] * (k ** lr_exp if inside else 1)), (name, optimizer)
                if optimizer == 'adamw':
                    assert eps == pytest.approx(g0[name][2] * (k ** -alpha if inside else 1)), name
                scale = {'paper': 1, 'sqrt_width': 1, 'fixed_timescale': k ** -lr_exp}[wd_rule] if inside else 1
                assert wd == pytest.approx(g0[name][1] * scale), (name, optimizer, wd_rule)


@pytest.mark.parametrize('m', [2, 4])
def test_weight_decay_rules(m):
    """Under μP-AdamW the hidden and gate matrices' LR is lr/m: 'paper' keeps lambda (so lr * lambda shrinks
    like 1/m), 'fixed_timescale' gives lambda m (lr * lambda as at the base width), 'sqrt_width' lambda sqrt(m)
    (Fan et al.); groups without decay keep none, SP keeps lambda under every rule, and SGD has no decay (the
    paper's SGD runs use none, and PyTorch's SGD decay is an L2 term, not decoupled)."""
    for wd_rule, exp in [('paper', 0), ('fixed_timescale', 1), ('sqrt_width', 0.5)]:
        g = groups(build(param='mup', width=128 * m, base_width=128), 'adamw', wd_rule)
        for name in ('hidden', 'gate'):
            assert g[name][1] == pytest.approx(0.1 * m ** exp), (wd_rule, name)
            assert g[name][0] * g[name][1] == pytest.approx(1e-2 * 0.1 * m ** (exp - 1)), (wd_rule, name)
        assert all(g[n][1] == 0 for n in g if n not in ('hidden', 'gate'))
        g = groups(build(param='sp', width=128 * m, base_width=128), 'adamw', wd_rule)
        assert g['hidden'][1] == pytest.approx(0.1), wd_rule
        for param in ('sp', 'mup'):
            g = groups(build(param=param, width=128 * m, base_width=128), 'sgd', wd_rule)
            assert all(wd == 0 for _, wd, _, _ in g.values()), (param, wd_rule)


def test_bad_config_numbers_fail_clearly():
    for kw, word in [(dict(width=0), 'width=0'), (dict(n_layer=-1), 'n_layer=-1'), (dict(depth_rule='x'), 'completep'),
                     (dict(kernel_backend='cuda'), 'kernel_backend')]:
        with pytest.raises(ValueError, match=word):
            GDNConfig(**kw)


@pytest.mark.gpu
@pytest.mark.parametrize('width,T', [(256, 300), (768, 300), (256, 8192)])
def test_gpu_compiled_model_gradients_match_float64(width, T):
    """The compiled model in bf16 autocast on the Triton kernels against the eager float64 model on the
    PyTorch ops (same weights, same batch): every parameter's gradient within bf16 noise (rel. RMS 5e-2), the
    loss within 2e-2. Also at T = 8192, a long context's 128 chunks of state."""
    torch.manual_seed(0)
    cfg = dict(width=width, n_layer=2, vocab_size=50304, parametrization='mup')
    ref = GDN(GDNConfig(**cfg, kernel_backend='torch')).cuda().double()
    ref.reset_parameters(0)
    x = torch.randint(0, 50304, (2, T + 1), device='cuda')
    ref_loss = ref(x[:, :-1], x[:, 1:])[1]
    ref_loss.backward()
    m = GDN(GDNConfig(**cfg)).cuda()
    m.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    with torch.autocast('cuda', dtype=torch.bfloat16):
        loss = torch.compile(m)(x[:, :-1], x[:, 1:])[1]
    loss.backward()
    assert abs(loss.item() - ref_loss.item()) < 2e-2
    for (n, p), q in zip(m.named_parameters(), ref.parameters()):
        err = ((p.grad.double() - q.grad).norm() / q.grad.norm()).item()
        assert err < 5e-2, (n, err)


def test_readme_rules_table_names_the_rules_and_states_them():
    """README's rules table names where each rule lives in mup.py (a name, never a line), and each μP entry it
    states is what mup.py's tables hold: a rule changed in one place and not the other fails here."""
    root = os.path.join(os.path.dirname(__file__), '..')
    readme = open(os.path.join(root, 'README.md'), encoding='utf-8').read()
    rows = [[c.strip() for c in r.split('|')[1:-1]] for r in readme.splitlines()
            if r.startswith('| ') and r.count('|') == 6 and '`' in r.split('|')[4] and not r.startswith('| rule |')]
    assert len(rows) >= 12 and 'mup.py#L' not in readme
    for rule, mu, sp, where, why in rows:
        assert where.startswith('`') and hasattr(mup, where.strip('`')), (rule, where)
    lr, init = mup.LR_EXP, mup.INIT_EXP['mup']
    expect = [  # (the row's rule starts with, its μP entry, the name it gives, what mup.py must hold)
        ('init std of hidden matrices', 'init_std/√m', 'INIT_EXP', init['hidden'] == init['gate'] == -0.5),
        ('init of the tied embedding', 'init_std', 'INIT_EXP', init['embedding'] == 0),
        ('logits multiplier', 'output_mult/m', 'multipliers', True),
        ('GDN readout scale', '√m/√d_k', 'multipliers', True),
        ('AdamW LR: hidden and gate', '×1/m', 'LR_EXP',
         lr['mup']['adamw']['hidden'] == lr['mup']['adamw']['gate'] == -1),
        ('AdamW LR: embedding, gains, conv taps, A_log, dt_bias', '×1', 'LR_EXP',
         {lr['mup']['adamw'][g] for g in ('embedding', 'vector', 'scalar')} == {0}),
        ('SGD LR: hidden matrices', '×1', 'LR_EXP', lr['mup']['sgd']['hidden'] == 0),
        ('SGD LR: embedding, gains, conv taps', '×m', 'LR_EXP',
         lr['mup']['sgd']['embedding'] == lr['mup']['sgd']['vector'] == 1),
        ('**SGD LR: W_α, W_β; A_log, dt_bias** (`mup`', '**×m^−1/2; ×m^+1/2**', 'LR_EXP',
         (lr['mup']['sgd']['gate'], lr['mup']['sgd']['scalar']) == (-0.5, 0.5)),
        ('SGD LR: W_α, W_β; A_log, dt_bias (`mup_fixed_fanout`)', '×1/m; ×1', 'LR_EXP',
         (lr['mup_fixed_fanout']['sgd']['gate'], lr['mup_fixed_fanout']['sgd']['scalar']) == (-1, 0)),
        ('SGD LR: W_α, W_β; A_log, dt_bias (`mup_nogdn`)', '×1; ×m', 'LR_EXP',
         (lr['mup_nogdn']['sgd']['gate'], lr['mup_nogdn']['sgd']['scalar']) == (0, 1)),
        ('weight decay', 'hidden and gate matrices only', 'DECAY',
         {g for g, on in mup.DECAY.items() if on} == {'hidden', 'gate'}),
        ('weight-decay scaling', '`paper` (λ as given)', 'WEIGHT_DECAY_RULES', mup.WEIGHT_DECAY_RULES['paper'] == 0),
        ('depth', '`none`', 'DEPTH_ALPHA', mup.DEPTH_ALPHA['none'] == 0),
    ]
    for start, mu, name, holds in expect:
        row = next((r for r in rows if r[0].startswith(start)), None)
        assert row is not None, f"README's rules table has no row {start!r}"
        assert (row[1], row[3]) == (mu, f'`{name}`') and holds, (row, mu, name)
    c = types.SimpleNamespace(parametrization='mup', width=1024, base_width=256, head_k=128, output_mult=4.0,
                              n_layer=8, base_depth=8, depth_rule='none')
    m = mup.multipliers(c)
    assert math.isclose(m['logits'], 4.0 / 4) and math.isclose(m['readout'], math.sqrt(4) / math.sqrt(128))


@pytest.mark.gpu
def test_gpu_compiled_step_is_bit_reproducible():
    """Two compiled bf16 steps from the same weights on the same batch give every parameter the same gradient to the
    bit, so a GPU run resumes exactly and a sweep repeats its rows. An op that sums in a racing order (atomic adds,
    e.g. a scatter in an embedding's backward) fails this and is named."""
    torch.manual_seed(0)
    m = GDN(GDNConfig(width=256, n_layer=2, vocab_size=50304, parametrization='mup')).cuda()
    m.reset_parameters(0)
    fwd = torch.compile(m)
    x = torch.randint(0, 50304, (8, 1025), device='cuda')
    grads = []
    for _ in range(2):
        with torch.autocast('cuda', dtype=torch.bfloat16):
            fwd(x[:, :-1], x[:, 1:])[1].backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
        m.zero_grad(set_to_none=True)
    differ = [n for n in grads[0] if not torch.equal(grads[0][n], grads[1][n])]
    assert not differ, f"gradients that differ between two identical steps: {differ}"
