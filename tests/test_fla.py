"""mup.apply on flash-linear-attention's GatedDeltaNetForCausalLM: every parameter in one group, with this repo's
model's init std, LR, decay and epsilon for the same role; μP == SP at the base shape; the multipliers (the
final norm's and the branches' hooks, o_norm's eps), a second call replacing the first, nothing stored on the
parameters; unsupported models fail with one line. On a GPU: training under torch.compile and DDP."""
import os
import socket

import pytest
import torch
import torch.nn.functional as F

import fla_mup
import mup
from model import GDN, GDNConfig

fla = pytest.importorskip('fla')
from fla.models import GatedDeltaNetConfig, GatedDeltaNetForCausalLM  # noqa: E402

from hf import fla_name  # noqa: E402  (this repo's parameter names -> fla's)

V = 512
TUNED = dict(output_mult=4.0, init_std=0.03, embed_lr_mult=2.0, gate_lr_mult=3.0)


def fla_model(width=256, n_layer=2, **kw):
    """fla's LM in this repo's shapes. fuse_norm/fuse_swiglu off: the residual norms and the MLP then run on the
    CPU (fla's fused ones are Triton only), so the hooks can be checked here."""
    cfg = dict(hidden_size=width, num_hidden_layers=n_layer, num_heads=6, head_dim=width // 8, expand_v=2.0,
               intermediate_size=GDNConfig(width=width).mlp_hidden, vocab_size=V, tie_word_embeddings=True,
               norm_eps=1e-6, fuse_norm=False, fuse_swiglu=False)
    return GatedDeltaNetForCausalLM(GatedDeltaNetConfig(**{**cfg, **kw}))


def by_name(groups, named):
    """parameter name -> (group name, lr, weight decay, eps) of the group holding it."""
    name_of = {id(p): n for n, p in named}
    return {name_of[id(p)]: (g['name'], g['lr'], g['weight_decay'], g.get('eps')) for g in groups for p in g['params']}


def fla_names_of(ours):
    """fla's names for one of this repo's parameters (the conv is three there)."""
    if ours.endswith('qkv_conv.weight'):
        return [fla_name(ours).replace('qkv_conv', f'{x}_conv1d') for x in 'qkv']
    return [fla_name(ours)]


@pytest.mark.parametrize('depth_rule,n_layer', [('none', 2), ('completep', 4)])
def test_groups_equal_this_repos_for_the_same_role(depth_rule, n_layer):
    """At widths 256, 512 and 768 (base 256, base depth 2), every parametrization, both optimizers and every
    weight-decay rule: every fla parameter is in exactly one group, with the LR, decay and epsilon that its
    counterpart in this repo's model gets."""
    for width in (256, 512, 768):
        model = fla_model(width, n_layer)
        for param in mup.PARAMETRIZATIONS:
            ours = GDN(GDNConfig(width=width, n_layer=n_layer, vocab_size=V, parametrization=param, base_width=256,
                                 depth_rule=depth_rule, base_depth=2, **TUNED))
            for optimizer in mup.OPTIMIZERS:
                for rule in mup.WEIGHT_DECAY_RULES:
                    groups = fla_mup.apply(model, base_width=256, lr=1e-2, parametrization=param, optimizer=optimizer,
                                       weight_decay=0.1, weight_decay_rule=rule, depth_rule=depth_rule,
                                       base_depth=2, init=False, **TUNED)
                    ids = [id(p) for g in groups for p in g['params']]
                    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
                    got = by_name(groups, model.named_parameters())
                    opt = ours.configure_optimizer(optimizer, 1e-2, 0.1, (0.9, 0.95), 0.9, 'cpu', rule)
                    want = by_name(opt.param_groups, ours.named_parameters())
                    assert {f: want[n] for n in want for f in fla_names_of(n)} == got, (width, param, optimizer, rule)


@pytest.mark.parametrize('width', [256, 768])
def test_init_std_equals_this_repos_for_the_same_role(width):
    """The init of every fla parameter is its counterpart's: the same std for each matrix (μP at width 768:
    hidden and gate std init_std/sqrt(3), embedding init_std), and the groups' own inits (gains 1, conv taps
    within ±1/2, exp(A_log) in (0, 16], softplus(dt_bias) in [1e-3, 1e-1])."""
    c = GDNConfig(width=width, n_layer=2, vocab_size=V, parametrization='mup', init_std=0.03)
    model = fla_model(width)
    fla_mup.apply(model, base_width=256, lr=1e-2, init_std=0.03, seed=0)
    ours = GDN(c)
    ours.reset_parameters(0)
    mine = dict(ours.named_parameters())
    for n, p in model.named_parameters():
        ref = next(m for m in mine if n in fla_names_of(m))
        std = mup.init_std(c, mup.group_of(ref))
        if std is not None:
            assert p.std().item() == pytest.approx(std, rel=0.06), n
            assert mine[ref].std().item() == pytest.approx(std, rel=0.06), ref
        elif 'norm' in n:
            assert torch.equal(p, torch.ones_like(p)), n
        elif 'conv' in n:
            assert p.abs().max() <= 0.5 and p.std() > 0.25, n
        elif n.endswith('A_log'):
            assert (p.exp() > 0).all() and (p.exp() <= 16).all(), n
        else:
            dt = F.softplus(p)
            assert (dt >= 1e-3 * 0.999).all() and (dt <= 1e-1 * 1.001).all(), n


@pytest.mark.parametrize('optimizer', mup.OPTIMIZERS)
def test_mup_equals_sp_at_the_base_shape(optimizer):
    """At width == base_width and n_layer == base_depth, every parametrization and depth rule makes fla's model
    SP's: the same init draws for the same seed, the same groups, the same o_norm eps and final norm output."""
    x = torch.randn(2, 5, 256)
    sp = fla_model()
    ref = fla_mup.apply(sp, base_width=256, lr=1e-2, parametrization='sp', optimizer=optimizer, weight_decay=0.1,
                    seed=3, **TUNED)
    for param in mup.PARAMETRIZATIONS:
        for rule in mup.DEPTH_ALPHA:
            model = fla_model()
            groups = fla_mup.apply(model, base_width=256, lr=1e-2, parametrization=param, optimizer=optimizer,
                               weight_decay=0.1, depth_rule=rule, base_depth=2, seed=3, **TUNED)
            for (n1, p1), (n2, p2) in zip(sp.named_parameters(), model.named_parameters()):
                assert n1 == n2 and torch.equal(p1, p2), (param, rule, n1)
            assert by_name(groups, model.named_parameters()) == by_name(ref, sp.named_parameters()), (param, rule)
            assert [g['name'] for g in groups] == [g['name'] for g in ref]
            assert all(a.attn.o_norm.eps == 1e-6 for a in model.model.layers)
            assert torch.equal(model.model.norm(x), sp.model.norm(x))


def test_multipliers(monkeypatch):
    """μP at width 512 (m = 2), CompleteP at 4 layers over a base depth of 2: the final norm's output x
    output_mult / m (so the logits are), o_norm's eps 1e-6 / m (the readout x sqrt(m)), each branch's output x
    1/2; a second call replaces the first (one hook a module), and SP at the base undoes every change."""
    monkeypatch.setattr('fla.modules.mlp.swiglu', lambda g, y: F.silu(g) * y)  # fla's is Triton only
    model = fla_model(512, 4)
    fla_mup.apply(model, base_width=256, lr=1e-2, depth_rule='completep', base_depth=2, seed=0, output_mult=4.0)
    x = torch.randn(2, 5, 512)
    inner = model.model
    torch.testing.assert_close(inner.norm(x), 2.0 * F.rms_norm(x, (512,), inner.norm.weight, 1e-6), rtol=0, atol=0)
    layer = inner.layers[1]
    assert layer.attn.o_norm.eps == pytest.approx(1e-6 / 2, rel=1e-12)
    h = torch.randn(2, 5, layer.attn.value_dim)
    torch.testing.assert_close(layer.attn.o_proj(h), 0.5 * F.linear(h, layer.attn.o_proj.weight), rtol=0, atol=0)
    m = layer.mlp
    mlp = m.down_proj.weight @ (F.silu(m.gate_proj.weight @ x[..., None]) * (m.up_proj.weight @ x[..., None]))
    torch.testing.assert_close(m(x), 0.5 * mlp[..., 0], rtol=1e-5, atol=1e-6)

    def hooks():
        return [len(mod._forward_hooks) for mod in model.modules() if mod._forward_hooks]
    assert hooks() == [1] * (1 + 2 * 4)
    fla_mup.apply(model, base_width=512, lr=1e-2, depth_rule='completep', base_depth=2, init=False, output_mult=3.0)
    assert hooks() == [1] * (1 + 2 * 4) and layer.attn.o_norm.eps == 1e-6
    torch.testing.assert_close(inner.norm(x), 3.0 * F.rms_norm(x, (512,), inner.norm.weight, 1e-6), rtol=0, atol=0)
    fla_mup.apply(model, base_width=512, lr=1e-2, parametrization='sp', init=False)
    assert hooks() == [] and all(a.attn.o_norm.eps == 1e-6 for a in inner.layers)


def test_nothing_is_stored_on_the_parameters():
    """apply() leaves every parameter's attributes as fla made them (the multipliers live on modules)."""
    model = fla_model(512)
    before = {n: dict(vars(p)) for n, p in model.named_parameters()}
    fla_mup.apply(model, base_width=256, lr=1e-2, depth_rule='depth_mup', base_depth=1)
    assert {n: dict(vars(p)) for n, p in model.named_parameters()} == before


@pytest.mark.parametrize('kw,words', [
    (dict(tie_word_embeddings=False), 'untied lm_head'),
    (dict(num_v_heads=12), 'num_v_heads=12'),
    (dict(use_gate=False), 'use_gate=False'),
    (dict(use_short_conv=False), 'use_short_conv=False'),
    (dict(allow_neg_eigval=True), 'allow_neg_eigval=True'),
    (dict(hidden_act='powlu'), 'hidden_act=powlu'),
    (dict(attnres_block_size=2), 'attnres_block_size'),
])
def test_unsupported_fla_models_fail_clearly(kw, words):
    with pytest.raises(ValueError, match=words) as e:
        fla_mup.apply(fla_model(**kw), base_width=256, lr=1e-2)
    assert '\n' not in str(e.value) and 'μP rules do not cover' in str(e.value)


def test_bad_input_fails_clearly():
    model = fla_model()
    model.config.attn = {'layers': [1], 'num_heads': 4}  # a hybrid (building one needs flash-attn)
    with pytest.raises(ValueError, match='hybrid attention layers'):
        fla_mup.apply(model, base_width=256, lr=1e-2)
    with pytest.raises(ValueError, match='not laid out as fla'):
        fla_mup.apply(GDN(GDNConfig(vocab_size=V, n_layer=1)), base_width=256, lr=1e-2)
    for kw, words in [(dict(parametrization='mupp'), 'mup_fixed_fanout'), (dict(optimizer='adam'), 'adamw, sgd'),
                      (dict(depth_rule='x'), 'completep'), (dict(weight_decay_rule='y'), 'fixed_timescale')]:
        with pytest.raises(ValueError, match=words):
            fla_mup.apply(fla_model(), base_width=256, lr=1e-2, **kw)


# ---- GPU ------------------------------------------------------------------------------------------------

def fla_refuses_backward():
    """fla 0.6 raises in its backward on Hopper with Triton >= 3.4, < 3.7.1 (wrong gated dq/dk there, fla #640)."""
    from fla.utils import IS_NVIDIA_HOPPER, TRITON_ABOVE_3_4_0, TRITON_ABOVE_3_7_1
    return IS_NVIDIA_HOPPER and TRITON_ABOVE_3_4_0 and not TRITON_ABOVE_3_7_1


@pytest.mark.gpu
def test_gpu_apply_under_compile_and_ddp():
    """Five AdamW steps of fla's model (μP, width 512 over base 256, CompleteP at 4 layers over 2) on fresh
    random tokens in bf16 autocast, eager against torch.compile inside DDP (world size 1, NCCL): the same logits at
    init and the same losses within bf16 noise, and the compiled model's logits carry the logit multiplier
    (doubling it doubles them)."""
    if fla_refuses_backward():  # fla 0.6 on Hopper with Triton < 3.7.1: the same math on this repo's kernel
        fla_mup.train_on_this_kernel()
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    with socket.socket() as s:
        s.bind(('localhost', 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR='localhost', MASTER_PORT=str(port))
    dist.init_process_group('nccl', rank=0, world_size=1)
    try:
        gen = torch.Generator('cuda').manual_seed(0)
        batches = [torch.randint(0, V, (4, 257), device='cuda', generator=gen) for _ in range(5)]
        x = batches[0][:, :-1]
        runs = {}
        for name in ('eager', 'compiled ddp'):
            model = fla_model(512, 4, fuse_norm=True, fuse_swiglu=True).cuda()
            groups = fla_mup.apply(model, base_width=256, lr=1e-3, weight_decay=0.1, depth_rule='completep',
                                   base_depth=2, seed=0, output_mult=4.0)
            opt = torch.optim.AdamW(groups, betas=(0.9, 0.95))
            run = model if name == 'eager' else DDP(torch.compile(model), device_ids=[0])
            with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
                init = run(input_ids=x).logits.float()  # the same weights: the same logits
            losses = []
            for batch in batches:
                with torch.autocast('cuda', dtype=torch.bfloat16):
                    logits = run(input_ids=batch[:, :-1]).logits.float()
                loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.append(loss.item())
            with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
                runs[name] = losses, init, run(input_ids=x).logits.float()
            last = model
        (a, ia, _), (b, ib, lb) = runs['eager'], runs['compiled ddp']
        assert (ia - ib).abs().mean() < 2e-2 * ia.abs().mean(), ((ia - ib).abs().mean(), ia.abs().mean())
        # the losses, not the trained weights: AdamW's first steps move a weight by about lr whatever its
        # gradient's size, so bf16-sized differences in small gradients become lr-sized ones in the weights
        assert all(abs(p - q) < 2e-2 for p, q in zip(a, b)), (a, b)
        assert a[-1] < a[0] - 0.05, a  # it learns (the logits' scale, on random tokens)
        fla_mup.apply(last, base_width=256, lr=1e-3, depth_rule='completep', base_depth=2, init=False,
                      output_mult=8.0)  # the same model with the logit multiplier 8 / 2 in place of 4 / 2
        with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
            doubled = last(input_ids=x).logits.float()
        torch.testing.assert_close(doubled, 2 * lb, rtol=2e-2, atol=2e-2 * lb.abs().mean().item())
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize('neg, state', [(False, False), (True, True)])
def test_the_delta_rule_fla_trains_on_is_flas(neg, state):
    """fla_delta_rule (this repo's kernel behind fla's call) against fla's own step-by-step reference in float64,
    with every flag fla's layer passes: the gate from A_log and dt_bias, q and k L2-normalised, β = σ (2σ with
    negative eigenvalues), and the state in fla's [B, H, V, K] layout, in and out."""
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule
    g = torch.Generator().manual_seed(0)
    B, T, H, K, Vd = 2, 100, 3, 16, 32
    q, k = (torch.randn(B, T, H, K, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, T, H, Vd, generator=g, dtype=torch.float64)
    a, b = (torch.randn(B, T, H, generator=g, dtype=torch.float64) for _ in range(2))
    A_log = torch.rand(H, generator=g, dtype=torch.float64) * 2
    dt_bias = torch.randn(H, generator=g, dtype=torch.float64)
    h0 = torch.randn(B, H, Vd, K, generator=g, dtype=torch.float64) if state else None  # fla's layout
    o, h = fla_mup.fla_delta_rule(q, k, v, a, b, h0, True, A_log, dt_bias, use_gate_in_kernel=True,
                                  use_qk_l2norm_in_kernel=True, use_beta_sigmoid_in_kernel=True,
                                  allow_neg_eigval=neg, state_v_first=True)
    gate = -A_log.exp() * F.softplus(a + dt_bias)
    ro, rh = naive_recurrent_gated_delta_rule(
        F.normalize(q, dim=-1).float(), F.normalize(k, dim=-1).float(), v.float(),
        b.sigmoid().float() * (2 if neg else 1), gate.float(), K ** -0.5,
        None if h0 is None else h0.transpose(-1, -2).float(), True)
    assert (o - ro).abs().max() < 1e-4 * ro.abs().max()
    assert (h - rh.transpose(-1, -2)).abs().max() < 1e-4 * rh.abs().max()
    with pytest.raises(NotImplementedError, match='cu_seqlens'):
        fla_mup.fla_delta_rule(q, k, v, a, b, cu_seqlens=torch.tensor([0, T]))


def test_the_delta_rule_gets_one_dtype(monkeypatch):
    """Under CUDA autocast fla's layer hands q and k over in fp32 (the L2 norm runs in fp32) and v in bf16:
    the kernel gets all three in v's dtype."""
    seen = []
    monkeypatch.setattr(fla_mup, 'chunk_gated_delta_rule', lambda q, k, v, *a: seen.append((q.dtype, k.dtype)) or
                        (v, None))
    q, k, v = torch.randn(1, 8, 2, 16), torch.randn(1, 8, 2, 16), torch.randn(1, 8, 2, 32).bfloat16()
    g, b = torch.zeros(1, 8, 2), torch.zeros(1, 8, 2)
    fla_mup.fla_delta_rule(q, k, v, g, b, use_qk_l2norm_in_kernel=True)
    assert seen == [(torch.bfloat16, torch.bfloat16)]
