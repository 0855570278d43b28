"""fused_ops.py's two ops, conv_silu (causal conv + SiLU, q and k heads L2-normalised) and linear_cross_entropy:
each Triton op against the PyTorch op and a float64 reference, values and every gradient.

The PyTorch ops run here. The Triton ops run under TRITON_INTERPRET=1 on the CPU, in one subprocess per op (the
flag must be set before triton is imported), which prints its measurements for the tests to assert on. The
interpreter costs ~40 ms a program step whatever the tile, so most conv cases take one big tile a program, and
four small multi-program tiles (two of them CONV_CONFIG's, what the GPU runs). The kernels are also compiled for sm_90 without
a GPU, and run on the GPU at the model's shapes in the tests marked gpu (python -m pytest -m gpu tests).

Errors are norm-relative, |a - b| / |b|, and every tolerance follows from the arithmetic: sum_tol for sums
evaluated in another order (or exactly), round_tol for roundings to half precision on the way.
"""
import json
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fused_ops  # noqa: E402
from conftest import compile_for_hopper, hopper_resources, interpreted  # noqa: E402

UNIT = {torch.float64: 2.0 ** -53, torch.float32: 2.0 ** -24, torch.bfloat16: 2.0 ** -8,
        torch.float16: 2.0 ** -11}  # unit roundoff: one rounding moves a value by at most this, relatively


def sum_tol(n, dtype=torch.float32):
    """Two evaluations of the same sums of at most n terms in dtype, in different orders (or one exact): each
    addition rounds by at most the unit roundoff u, so a sum moves by at most ~n u of its terms' magnitude,
    and random-sign roundings random-walk to ~sqrt(n) u of the sum itself: n u covers either, on any machine
    and in any order. x4: a few such sums are chained (a product's, a norm's or a softmax's, the backward's)."""
    return 4 * n * UNIT[dtype]


def round_tol(k, dtype):
    """k roundings of results to the half-precision dtype on the way: each moves a tensor by at most u of its
    norm; x2 for their propagation through later sums whose terms partly cancel. fp32: 0 (sum_tol's)."""
    return 2 * k * UNIT[dtype] if dtype in (torch.bfloat16, torch.float16) else 0.0


def rel(a, b):
    """Norm-relative error of a against b (|a| itself when b is 0)."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm()).item() if b.norm() > 0 else a.norm().item()


# ---- op 1: conv_silu ------------------------------------------------------------------------------------------

BIG = dict(fwd=dict(BT=64, BC=256, num_warps=4), bwd=dict(BT=64, BC=256, NT=1, num_warps=4),
           dx=dict(BT=64, BC=256, num_warps=4), norm=dict(fwd=dict(BT=64, num_warps=4),
                                                          bwd=dict(BT=64, NT=1, num_warps=4)))
SMALL = dict(fwd=dict(BT=8, BC=16, num_warps=4), bwd=dict(BT=4, BC=16, NT=2, num_warps=4),
             dx=dict(BT=4, BC=16, num_warps=4), norm=dict(fwd=dict(BT=4, num_warps=4),
                                                          bwd=dict(BT=4, NT=3, num_warps=4)))
CONV_CASES = {  # name: (B, T, C, W, state, x dtype, launch settings (None: CONV_CONFIG), row stride of x:
                #        C + pad (None: contiguous), heads (H, K): the output split in q, k, v of H K, H K,
                #        C - 2 H K channels, q and k L2-normalised per head; None: one part, no norm)
    "fp32_B2_T70_C200_state": (2, 70, 200, 4, True, "float32", BIG, None, None),  # T, C past one block
    "fp32_B2_T70_C200": (2, 70, 200, 4, False, "float32", BIG, None, None),
    "fp32_B2_T1_C64_state": (2, 1, 64, 4, True, "float32", BIG, None, None),        # generation: T < W - 1
    "fp32_B2_T2_C64_state": (2, 2, 64, 4, True, "float32", BIG, None, None),
    "fp32_B1_T2_C64": (1, 2, 64, 4, False, "float32", BIG, None, None),
    "fp32_W2_B2_T9_C40_state": (2, 9, 40, 2, True, "float32", BIG, None, None),   # other kernel sizes
    "fp32_W5_B1_T6_C40_state": (1, 6, 40, 5, True, "float32", BIG, None, None),
    "fp32_B2_T130_C96_odd_stride": (2, 130, 96, 4, False, "float32", BIG, 3, None),  # rows 99 apart: unaligned
    # many programs: 3 row groups of 2 row blocks (dw summed over 6 workspace rows), 3 channel blocks
    "fp32_B2_T21_C40_state_small": (2, 21, 40, 4, True, "float32", SMALL, None, None),
    "bf16_B2_T70_C200_state": (2, 70, 200, 4, True, "bfloat16", BIG, None, None),  # fp32 state, cast as torch
    "bf16_B2_T50_C96": (2, 50, 96, 4, False, "bfloat16", BIG, None, None),
    "bf16_B2_T70_C200_model_stride": (2, 70, 200, 4, False, "bfloat16", BIG, 12, None),  # qkv-like: 8-B rows
    "bf16_B1_T20_C130_state_default": (1, 20, 130, 4, True, "bfloat16", None, None, None),
    # the mixer's q, k, v: the heads normalised in launches of their own (tiles one head wide, K padded to a
    # power of two), each part written contiguous
    "fp32_B2_T70_qkv_H2_K48_state": (2, 70, 2 * 2 * 48 + 40, 4, True, "float32", BIG, None, (2, 48)),
    "fp32_B2_T21_qkv_H3_K16_small": (2, 21, 2 * 3 * 16 + 32, 4, False, "float32", SMALL, 4, (3, 16)),
    "bf16_B2_T50_qkv_H2_K96_model_stride": (2, 50, 2 * 2 * 96 + 192, 4, False, "bfloat16", BIG, 12, (2, 96)),
    "bf16_B1_T20_qkv_H1_K256_state_default": (1, 20, 2 * 256 + 64, 4, True, "bfloat16", None, None, (1, 256)),
}
CONV_QUANTITIES = ["y", "dx", "dw", "dstate"]


def split_norm(C, heads):
    """conv_silu's parts and norm for heads (H, K), or (None, (0, 1)): one part, no norm."""
    if heads is None:
        return None, (0, 1)
    H, K = heads
    return [H * K, H * K, C - 2 * H * K], (2 * H * K, K)


def conv_reference(x, w, s, heads=None):
    """float64: F.conv1d over cat(state, x), SiLU, then F.normalize per head of q and k; y and the new state."""
    B, T, C = x.shape
    xs = torch.cat([x.new_zeros(B, w.shape[1] - 1, C) if s is None else s, x], 1)
    y = F.silu(F.conv1d(xs.transpose(1, 2), w[:, None], groups=C)).transpose(1, 2)
    if heads is not None:
        n, K = split_norm(C, heads)[1]
        y = torch.cat([F.normalize(y[..., :n].reshape(B, T, -1, K), dim=-1).view(B, T, n), y[..., n:]], -1)
    return y, xs[:, T:]


def conv_op(heads, backend):
    """conv_silu as (x, w, s) -> (y, its parts side by side; new state)."""
    def fn(x, w, s):
        parts, state = fused_ops.conv_silu(x, w, s, *split_norm(x.size(-1), heads), backend=backend)
        return torch.cat(parts, -1), state
    return fn


def make_conv(B, T, C, W, state, dtype, pad, seed, device="cpu"):
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(B, T, C + (pad or 0), generator=gen, device=device).to(dtype)[..., :C]  # a column slice
    w = (torch.rand(C, W, generator=gen, device=device) * 2 - 1) / W ** 0.5                # the model's init
    s = torch.randn(B, W - 1, C, generator=gen, device=device) if state else None  # fp32, cast by the op
    dy = torch.randn(B, T, C, generator=gen, device=device).to(dtype)
    return x, w, s, dy


def conv_run(fn, x, w, s, dy):
    """y, new state and the grads of x, w, s (None without s) under the cotangent dy."""
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()  # views: x keeps its strides
    s = None if s is None else s.detach().requires_grad_()
    y, ns = fn(x, w, s)
    grads = torch.autograd.grad(y, [t for t in (x, w, s) if t is not None], dy)
    return y, ns, *grads, *([] if s is not None else [None])


def conv_errors(x, w, s, dy, heads, triton="triton"):
    """The errors of the Triton op (run with backend=triton; None: the PyTorch op alone) and of the PyTorch op
    against the float64 reference (from the same rounded inputs: the state rounded to x's dtype, as both ops
    do) and against each other; whether the new states equal the reference's. And the ops' outputs."""
    s64 = None if s is None else s.to(x.dtype).double()
    ref = conv_run(lambda x, w, s: conv_reference(x, w, s, heads), x.double(), w.double(), s64, dy.double())
    got = {"torch": conv_run(conv_op(heads, "torch"), x, w, s, dy)}
    pairs = [("torch", got["torch"], ref)]
    if triton is not None:
        got["triton"] = conv_run(conv_op(heads, triton), x, w, s, dy)
        pairs += [("triton", got["triton"], ref), ("triton_torch", got["triton"], got["torch"])]
    out = {tag: {q: rel(a[i], b[i]) for q, i in zip(CONV_QUANTITIES, (0, 2, 3, 4)) if b[i] is not None}
           for tag, a, b in pairs}
    out["state_equal"] = all(torch.equal(g[1].double(), ref[1]) for g in got.values())
    out["finite"] = all(bool(torch.isfinite(t).all()) for g in got.values() for t in g if t is not None)
    return out, got


def conv_tol(q, path, B, T, W, dtype, heads):
    """An op's error bound against float64. The sums: W taps, K squares of a head's norm (and its backward),
    dw's B T rows. The roundings to x's dtype: the Triton op stores y; dz, then dx or d state (dw comes from
    the fp32 dz). The PyTorch op stores y (normalised from the stored y, stored again); its autograd rounds
    the norm's gradient, each tap's gradient and their W - 1 additions into x's and the state's."""
    K = heads[1] if heads else 0
    n = W + K + (B * T if q == "dw" else 0)
    if path == "triton":
        k = dict(y=1, dx=2, dw=0, dstate=2)[q]
    else:
        k = (heads is not None) + dict(y=1, dx=2 * W - 1, dw=0, dstate=2 * W - 1)[q]
    return sum_tol(n) + round_tol(k, dtype)


def _conv_case(case, seed):
    B, T, C, W, state, dtype, cfg, pad, heads = case
    fused_ops.CONV_CONFIG = cfg or DEFAULT_CONV_CONFIG
    x, w, s, dy = make_conv(B, T, C, W, state, getattr(torch, dtype), pad, seed)
    out, got = conv_errors(x, w, s, dy, heads)
    tri = got["triton"]
    parts = fused_ops.conv_silu(x, w, s, *split_norm(C, heads), backend="triton")[0]
    out.update(shapes=[list(t.shape) if t is not None else None for t in tri],
               dtypes=[str(t.dtype) if t is not None else None for t in tri],
               contiguous=all(p.is_contiguous() for p in parts), strided=not x.is_contiguous(),
               align=fused_ops._conv_align(x, *(split_norm(C, heads)[0] or [C])))
    return out


def _conv_pieces():
    """The Triton op over pieces of 1, 2 and 17 tokens, each carrying the last one's state, against the whole
    sequence at once: the outputs and the final state."""
    C, heads = 2 * 2 * 16 + 24, (2, 16)
    x, w, s, _ = make_conv(2, 20, C, 4, True, torch.float32, None, 7)
    whole, final = conv_op(heads, "triton")(x, w, s)
    ys, state = [], s
    for a, b in [(0, 1), (1, 3), (3, 20)]:
        y, state = conv_op(heads, "triton")(x[:, a:b], w, state)
        ys.append(y)
    return dict(y=rel(torch.cat(ys, 1), whole), state_equal=torch.equal(state, final))


def _conv_compiled():
    """The custom ops under torch.compile(fullgraph=True) (aot_eager: fake impls, autograd, tracing) against
    eager; torch.library.opcheck on both ops."""
    res = {}
    for state, heads in [(True, None), (False, None), (True, (2, 8))]:
        x, w, s, dy = make_conv(2, 11, 48, 4, state, torch.float32, None, 5)

        def fn(x, w, s):
            y, ns = conv_op(heads, "triton")(x, w, s)
            return y * 1.5, ns + 1.0  # something for the compiler to fuse around the op
        eager = conv_run(fn, x, w, s, dy)
        torch._dynamo.reset()
        compiled = conv_run(torch.compile(fn, fullgraph=True, backend="aot_eager"), x, w, s, dy)
        res[f"state={state} heads={heads}"] = max(rel(a, b) for a, b in zip(compiled, eager) if b is not None)
    x, w, s, dy = make_conv(1, 5, 16, 4, True, torch.float32, None, 6)
    s, dy = s.requires_grad_(), dy.reshape(-1)
    one, qkv = ([16], 0, 1), ([4, 4, 8], 8, 4)  # parts, n_norm, K
    fwd, bwd = fused_ops._conv_fwd_op, fused_ops._conv_bwd_op
    checks = {"fwd_state": (fwd, (x.requires_grad_(), w.requires_grad_(), s, *one)),
              "fwd_no_state": (fwd, (x, w, None, *one)),
              "fwd_qkv": (fwd, (x, w, s, *qkv)),
              "bwd_state": (bwd, (dy, x.detach(), w.detach(), s.detach(), *one)),
              "bwd_no_state": (bwd, (dy, x.detach(), w.detach(), None, *one)),
              "bwd_qkv": (bwd, (dy, x.detach(), w.detach(), s.detach(), *qkv))}
    res["opcheck"] = {n: torch.library.opcheck(op, args) for n, (op, args) in checks.items()}
    return res


def _conv_worker():
    out = {name: _conv_case(case, seed) for seed, (name, case) in enumerate(CONV_CASES.items())}
    fused_ops.CONV_CONFIG = BIG
    out["pieces"] = _conv_pieces()
    out["compile"] = _conv_compiled()
    print("RESULT" + json.dumps(out))


DEFAULT_CONV_CONFIG = fused_ops.CONV_CONFIG  # the GPU's launch settings


@pytest.fixture(scope="module")
def conv_results():
    return interpreted(__file__, "conv")


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_triton_conv_matches_float64_and_torch_op(conv_results, case):
    r = conv_results[case]
    B, T, C, W, state, dtype, _, pad, heads = CONV_CASES[case]
    dt = getattr(torch, dtype)
    parts = split_norm(C, heads)[0] or [C]
    row, a = C + (pad or 0), 16 // dt.itemsize
    while row % a or T * row % a or any(p % a for p in parts):
        a //= 2
    assert r["strided"] == bool(pad) and r["align"] == a, r  # the vector-load hint: rows a elements aligned
    assert r["contiguous"] and r["finite"], r  # each part its own contiguous tensor: no copy for the delta rule
    assert r["shapes"] == [[B, T, C], [B, W - 1, C], [B, T, C], [C, W], [B, W - 1, C] if state else None]
    assert r["dtypes"] == ["torch." + dtype] * 3 + ["torch.float32", "torch.float32" if state else None], r
    assert r["state_equal"], r  # the new state is a copy of the inputs: equal to the bit
    for q in r["triton"]:
        tri, tor = (conv_tol(q, p, B, T, W, dt, heads) for p in ("triton", "torch"))
        assert r["triton"][q] <= tri, f"{case} {q}: {r['triton'][q]:.2e} > {tri:.1e} against float64 ({r})"
        assert r["torch"][q] <= tor, f"{case} {q}: the PyTorch op {r['torch'][q]:.2e} > {tor:.1e} ({r})"
        assert r["triton_torch"][q] <= tri + tor, (case, q, r)  # both bounds, through the reference


def test_triton_conv_carries_state_over_pieces(conv_results):
    r = conv_results["pieces"]
    # the same taps in the same order, whether a row comes from the state or from x; the norm's sums over a
    # head's K = 16 squares may be tiled otherwise
    assert r["state_equal"] and r["y"] <= sum_tol(16), r


def test_conv_custom_ops_compile_without_graph_break(conv_results):
    r = conv_results["compile"]
    for name, err in r.items():  # the same launches as eager; aot_eager's decompositions may reorder a sum
        if name != "opcheck":
            assert err <= sum_tol(4 + 8), (name, r)
    for name, checks in r["opcheck"].items():
        assert set(checks.values()) == {"SUCCESS"}, (name, checks)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_conv_matches_float64(dtype):
    """The PyTorch op here (no interpreter), fp32 and bf16, against float64 within conv_tol."""
    B, T, C, W, heads = 2, 37, 2 * 2 * 24 + 40, 4, (2, 24)
    x, w, s, dy = make_conv(B, T, C, W, True, dtype, 5, 11)
    r = conv_errors(x, w, s, dy, heads, triton=None)[0]
    for q, err in r["torch"].items():
        tol = conv_tol(q, "torch", B, T, W, dtype, heads)
        assert err <= tol, (dtype, q, err, tol)
    assert r["state_equal"], r


def test_torch_conv_carries_state_over_pieces():
    """Pieces of 1, 2, 17 and 20 tokens, shorter than the kernel too, each carrying the last one's state: the
    whole sequence's final state, bit for bit, and its outputs (the same taps in the same order; the norm's sums
    over K = 16 squares may be vectorised otherwise)."""
    C, heads = 2 * 2 * 16 + 24, (2, 16)
    x, w, s, _ = make_conv(2, 40, C, 4, False, torch.float32, None, 8)
    whole, final = conv_op(heads, "torch")(x, w, None)
    ys, state = [], None
    for a, b in [(0, 1), (1, 3), (3, 20), (20, 40)]:
        y, state = conv_op(heads, "torch")(x[:, a:b], w, state)
        ys.append(y)
    assert torch.equal(state, final) and rel(torch.cat(ys, 1), whole) <= sum_tol(16)


def test_conv_hopper_resources():
    """The interpreter runs what the GPU compiler may reject (a name re-bound to another shape inside an `if`
    passes every interpreted case and fails on the GPU): compile the three kernels for sm_90 with the ptxas
    that triton ships, at CONV_CONFIG's launch settings, with and without a state, and the q, k heads'
    launches (K 96 and 256). They must fit the hardware (255 registers a thread, 227 KB of shared memory a
    block) and spill at most 256 bytes a thread: a few values kept in L1 cost little beside a tile's loads,
    while a tile that does not fit its registers spills kilobytes. And at the model's row alignment (qkv rows
    8 bytes aligned, A = 4 bf16) the row loads are vector loads, not one bf16 at a time."""
    p, i = "*bf16", "i32"
    specs = {  # kernel: (its runtime arguments' types, its constexprs after them, CONV_CONFIG's part)
        "_conv_fwd_kernel": ([p, p, "*fp32", p] + [i] * 8, ["W", "HAS_STATE", "NORM", "A", "BT", "BC"], "fwd"),
        "_conv_dz_kernel": ([p, p, p, "*fp32", p, "*fp32"] + [i] * 8,
                            ["W", "WP", "HAS_STATE", "NORM", "A", "BT", "BC", "NT"], "bwd"),
        "_conv_dx_kernel": ([p, "*fp32", p, p, i, i], ["W", "SP", "HAS_STATE", "BT", "BC"], "dx"),
    }
    for name, (types, consts, part) in specs.items():
        fn = getattr(fused_ops, name)
        for has_state, norm_k in [(False, 0), (True, 0), (False, 96), (True, 256)]:
            if norm_k and part == "dx":
                continue
            cfg = dict(fused_ops.CONV_CONFIG[part])
            if norm_k:  # the q, k heads' launches, as _conv_launches makes them: a tile one head wide
                (*_, cfg), = fused_ops._conv_launches([norm_k], norm_k, norm_k, part)
            cfg = dict(cfg)
            warps = cfg.pop("num_warps")
            vals = dict(W=4, WP=4, SP=4, HAS_STATE=has_state, NORM=bool(norm_k), A=4, **cfg)
            sig = dict(zip(fn.arg_names, types))
            sig.update({n: "constexpr" for n in consts})
            # the model's launch at width 768: T, C and the channel offsets multiples of 16, the row strides
            # of x not (a column slice of the projection's output, 867 elements of 4 apart)
            div = [n for n, ty in sig.items() if ty == "i32" and n not in ("sxb", "sxt")]
            constexprs = {(fn.arg_names.index(n),): vals[n] for n in consts}
            use = hopper_resources(fn, sig, constexprs, warps, divisible=div)
            what = (name, has_state, norm_k, use)
            assert use["regs"] <= 255 and use["shared"] <= 227 * 1024 and use["stack"] <= 256, what
            if part != "dx":
                ptx = compile_for_hopper(fn, sig, constexprs, warps, div)[0].asm["ptx"]
                assert re.search(r"ld\.global(\.\w+)*\.v[248]\.", ptx), what
                assert not re.search(r"ld\.global(\.\w+)*\.[bsu]16\b", ptx), what


# ---- op 2: linear_cross_entropy ---------------------------------------------------------------------------------

CE_CASES = {  # name: (N, d, V, mult, dtype, ignored targets, the kernel's block over the vocab (None: CE_LAUNCH's))
    # 300 = 2 blocks of 128 and a ragged one of 44; N = 37 rows
    "fp32_V300_block128": (37, 16, 300, 0.37, "float32", "some", 128),
    "fp32_V300_mult1": (37, 16, 300, 1.0, "float32", "some", None),   # one masked block of 512
    "bf16_V300_block128": (37, 16, 300, 0.25, "bfloat16", "some", 128),
    "bf16_V1000_block256": (19, 32, 1000, 1.0, "bfloat16", "none", 256),
    "fp16_V300_block128": (37, 16, 300, 0.37, "float16", "some", 128),
    "bf16_autocast": (37, 16, 300, 0.37, "autocast", "some", 128),   # fp32 tensors, bf16 autocast
    "fp32_all_ignored": (11, 16, 300, 0.5, "float32", "all", 128),
}
CE_QUANTITIES = ["loss", "dx", "dw"]


def make_ce(N, d, V, mult, dtype, ignored, seed, device="cpu", w_std=0.5):
    """x rows ~ N(0, 1); weight std 0.5: logits of std ~2 at d = 16, a peaked softmax, not a flat one."""
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(N, d, generator=gen, device=device)
    w = torch.randn(V, d, generator=gen, device=device) * w_std
    t = torch.randint(0, V, (N,), generator=gen, device=device)
    t[1] = V - 1  # a target in the ragged last block
    if ignored == "some":
        t[[0, 5, N - 1]] = -1
    elif ignored == "all":
        t[:] = -1
    elif ignored == "5%":
        t[torch.rand(N, generator=gen, device=device) < 0.05] = -1
    dt = torch.float32 if dtype == "autocast" else getattr(torch, dtype)
    return x.to(dt), w.to(dt), t


def ce_run(x, w, mult, t, backend, autocast=False):
    """The loss and its gradients in x and w."""
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = fused_ops.linear_cross_entropy(x, w, mult, t, backend)
    return [loss] + list(torch.autograd.grad(loss, [x, w]))


def ce_reference(x, w, mult, t):
    """float64 F.cross_entropy, the mean over the targets not ignored (0 when all are), and its gradients in x
    and w. In half precision the ops' arithmetic rounds the logits to x's dtype (the matmul's output, then times
    mult), as F.linear's and PyTorch's product are rounded: the reference takes those logits (in the forward
    pass; the backward through the float64 product), so that the comparison sees the ops' own roundings."""
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    z = F.linear(x64, w64) * mult
    if x.dtype in (torch.bfloat16, torch.float16):
        z = z + (((x @ w.t()) * mult).double() - z).detach()
    loss = F.cross_entropy(z, t, ignore_index=-1, reduction="sum") / max(1, (t != -1).sum())
    return [loss] + list(torch.autograd.grad(loss, [x64, w64]))


def ce_errors(x, w, mult, t, autocast=False):
    """Each backend's errors against float64 (from the inputs the matmul takes: autocast's rounded ones) and
    against each other."""
    ref = ce_reference(*(a.to(torch.bfloat16) if autocast else a for a in (x, w)), mult, t)
    tri, tor = (ce_run(x, w, mult, t, b, autocast) for b in ("triton", "torch"))
    return dict(triton={q: rel(a, b) for q, a, b in zip(CE_QUANTITIES, tri, ref)},
                torch={q: rel(a, b) for q, a, b in zip(CE_QUANTITIES, tor, ref)},
                triton_torch={q: rel(a, b) for q, a, b in zip(CE_QUANTITIES, tri, tor)},
                finite=all(bool(torch.isfinite(a).all()) for a in tri),
                dtypes=[str(a.dtype) for a in tri] == [str(b.dtype) for b in tor] and tri[0].dtype == torch.float32,
                loss=tri[0].item())


def ce_tol(q, path, N, d, V, dtype):
    """An op's error bound against float64 on the same logits (ce_reference). The sums: d products a logit,
    V exps a row, dx's V and dw's N terms. The roundings to half precision: the loss none (fp32); the gradient
    stored, the products' outputs, and the Triton op's cast after its fp32 1/n."""
    return sum_tol(d + V + N) + (0 if q == "loss" else round_tol(3 if path == "triton" else 2, dtype))


def kernel_vs_torch_formula(x, w, mult, t):
    """The op's logits gradient (softmax(z) - onehot) * mult against the PyTorch arithmetic for it,
    z = (x @ w^T) * mult rounded to x's dtype, then fp32: the share of entries equal to the bit, the largest
    difference in units of the dtype's precision (a mean loss would hide a rounding left out), the loss sum's
    error; and the largest |lse| and |z - lse|."""
    loss, dl = fused_ops._linear_ce_op(x, w, mult, t, True, 8)
    z = ((x @ w.t()) * mult).float()
    ok = (t != -1)[:, None]
    g = ((z.softmax(-1) - F.one_hot(t.clamp(min=0), z.size(1))) * mult * ok).to(x.dtype).float()
    rows = (z.logsumexp(-1) - z.gather(1, t.clamp(min=0)[:, None])[:, 0]) * ok[:, 0]
    d = (dl.float() - g).abs()
    return dict(exact=(d == 0).float().mean().item(), loss_sum=rel(loss, rows.sum()),
                ulps=(d / (torch.finfo(x.dtype).eps * g.abs()).clamp_min(1e-38)).max().item(),
                lse=z.logsumexp(-1).abs().max().item(), zlse=(z - z.logsumexp(-1, keepdim=True)).abs().max().item())


def _ce_case(case, seed):
    N, d, V, mult, dtype, ignored, block = case
    fused_ops.CE_LAUNCH["BLOCK"] = block or DEFAULT_CE_BLOCK
    x, w, t = make_ce(N, d, V, mult, dtype, ignored, seed)
    autocast = dtype == "autocast"
    out = ce_errors(x, w, mult, t, autocast)
    fused_ops.CE_CHUNK = 8 * V  # evaluation in chunks of 8 rows, the last one ragged
    for backend in ("triton", "torch"):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out["eval_" + backend] = fused_ops.linear_cross_entropy(x, w, mult, t, backend).item()
    fused_ops.CE_CHUNK = 2 ** 27
    op_dtype = torch.bfloat16 if autocast else x.dtype
    out.update(kernel_vs_torch_formula(x.to(op_dtype), w.to(op_dtype), mult, t))
    return out


def _ce_compiled():
    """linear_cross_entropy under torch.compile(fullgraph=True) against eager, both Triton: training (the
    loss, then dx and dw by the compiled backward) in fp32 and under bf16 autocast, and evaluation."""
    res = {}
    for name, autocast in (("fp32", False), ("bf16_autocast", True)):
        x, w, t = make_ce(37, 16, 300, 0.37, "float32", "some", seed=3)

        def loss_fn(x, w, t):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return fused_ops.linear_cross_entropy(x, w, 0.37, t, "triton")

        got = []
        for f in (loss_fn, torch.compile(loss_fn, fullgraph=True, backend="aot_eager")):
            xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
            loss = f(xs, ws, t)
            loss.backward()  # the compiled backward graph
            got.append([loss, xs.grad, ws.grad])
        res[name] = max(rel(a, b) for a, b in zip(*got))
    x, w, t = make_ce(37, 16, 300, 0.37, "float32", "some", seed=4)
    ev = torch.compile(lambda x, w, t: fused_ops.linear_cross_entropy(x, w, 0.37, t, "triton"),
                       fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        res["eval"] = rel(ev(x, w, t), fused_ops.linear_cross_entropy(x, w, 0.37, t, "triton"))
    return res


def _ce_worker():
    out = {name: _ce_case(case, seed) for seed, (name, case) in enumerate(CE_CASES.items())}
    fused_ops.CE_LAUNCH["BLOCK"] = 128
    out["compile"] = _ce_compiled()
    x, w, t = make_ce(37, 16, 300, 0.37, "float32", "some", seed=0)
    out["opcheck"] = {f"need_grad={g}": torch.library.opcheck(fused_ops._linear_ce_op, (x, w, 0.37, t, g, 8))
                      for g in (True, False)}
    print("RESULT" + json.dumps(out))


DEFAULT_CE_BLOCK = fused_ops.CE_LAUNCH["BLOCK"]


@pytest.fixture(scope="module")
def ce_results():
    return interpreted(__file__, "ce")


@pytest.mark.parametrize("case", [c for c in CE_CASES if c != "fp32_all_ignored"])
def test_triton_ce_matches_float64_and_torch_op(ce_results, case):
    r = ce_results[case]
    assert r["finite"] and r["dtypes"], r
    N, d, V, _, dtype, _, _ = CE_CASES[case]
    dt = torch.bfloat16 if dtype == "autocast" else getattr(torch, dtype)
    for q in CE_QUANTITIES:
        tri, tor = (ce_tol(q, p, N, d, V, dt) for p in ("triton", "torch"))
        assert r["triton"][q] <= tri, f"{case} {q}: {r['triton'][q]:.2e} > {tri:.1e} against float64 ({r})"
        assert r["torch"][q] <= tor, f"{case} {q}: the PyTorch op {r['torch'][q]:.2e} > {tor:.1e} ({r})"
        assert r["triton_torch"][q] <= tri + tor, (case, q, r)  # both bounds, through the reference


@pytest.mark.parametrize("case", [c for c in CE_CASES if c != "fp32_all_ignored"])
def test_kernel_gradient_is_the_torch_ops_arithmetic(ce_results, case):
    """The kernel's logits gradient against the PyTorch formula's, entry by entry (a mean loss would not see a
    rounding of z left out). Half precision: the same fp32 values but for the last bits of exp and of the lse
    (another summation order), so after rounding to the format they are equal but where the fp32 value lies
    within those bits of a rounding boundary (about 2^-13 of the entries, allowing 1%), and then 1 unit apart.
    fp32: each side's p = exp(z - lse) is off by its lse's error, at most (V - 1) u from the row's sum of V
    positive exps (in any order) and u |lse| from its rounding, by the rounding of z - lse, u |z - lse|, and by
    exp's ulp or two, all relative: in units of fp32's precision (2u) the two sides differ by at most
    V + max|lse| + max|z - lse| + 4 (where p is not near 1: the target's p - 1 cancels there)."""
    r = ce_results[case]
    N, d, V, _, dtype, _, _ = CE_CASES[case]
    assert r["loss_sum"] <= sum_tol(V + N), r
    if dtype == "float32":
        assert r["ulps"] <= V + r["lse"] + r["zlse"] + 4, r
    else:
        assert r["exact"] >= 0.99 and r["ulps"] <= 1, r


def test_all_ignored_targets_give_zero(ce_results):
    r = ce_results["fp32_all_ignored"]
    assert r["finite"] and r["loss"] == 0.0 and r["eval_triton"] == 0.0 and r["eval_torch"] == 0.0, r
    assert r["triton"]["dx"] == 0.0 and r["triton"]["dw"] == 0.0, r  # |grad| itself: the reference's is 0
    assert r["torch"]["dx"] == 0.0 and r["torch"]["dw"] == 0.0, r


@pytest.mark.parametrize("case", list(CE_CASES))
def test_evaluation_path_gives_the_same_loss(ce_results, case):
    """Without gradients both ops take 8-row chunks and keep no gradient buffer: the same loss (the chunks'
    matmuls may sum otherwise, and the ops' softmax sums differ in order)."""
    r = ce_results[case]
    N, d, V = CE_CASES[case][:3]
    scale = max(1.0, abs(r["loss"]))
    assert abs(r["eval_triton"] - r["loss"]) <= sum_tol(d + V) * scale, r
    assert abs(r["eval_triton"] - r["eval_torch"]) <= sum_tol(d + V + N) * scale, r


def test_ce_custom_op_compiles_without_graph_break(ce_results):
    """The op is opaque to torch.compile (fullgraph: no graph break) and gives eager's values (the same
    launches; aot_eager's decompositions may reorder a sum); torch.library.opcheck passes (schema, fake
    tensors, aot dispatch)."""
    for name, err in ce_results["compile"].items():
        assert err <= sum_tol(16 + 300 + 37), (name, ce_results["compile"])
    for name, r in ce_results["opcheck"].items():
        assert set(r.values()) == {"SUCCESS"}, (name, r)


@pytest.mark.parametrize("rows", [1, 7, 45, 1000])
def test_torch_ce_matches_f_cross_entropy(monkeypatch, rows):
    """The PyTorch op in float64 against F.cross_entropy, in chunks of 1, 7, 45 and all the rows (45, three
    ignored): to float64's sum_tol."""
    V = 300
    monkeypatch.setattr(fused_ops, "CE_CHUNK", rows * V)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(45, 16, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(V, 16, dtype=torch.float64, generator=gen, requires_grad=True)
    t = torch.randint(0, V, (45,), generator=gen)
    t[[3, 17, 44]] = -1
    ref = F.cross_entropy(F.linear(x, w) * 0.37, t, ignore_index=-1)
    got = fused_ops.linear_cross_entropy(x, w, 0.37, t)
    tol = sum_tol(16 + V + 45, torch.float64)
    for a, b in zip([got, *torch.autograd.grad(got, [x, w])], [ref, *torch.autograd.grad(ref, [x, w])]):
        assert rel(a, b) <= tol, rows


def test_torch_ce_under_bf16_autocast():
    """bf16 autocast, as on the GPU: the matmuls in bf16 (x and w rounded, as F.linear's would be), the loss
    in fp32, within ce_tol of float64 on the rounded inputs and logits; each gradient in its input's dtype."""
    N, d, V, mult = 40, 16, 300, 0.37
    x, w, t = make_ce(N, d, V, mult, "autocast", "some", seed=9)
    x = x.view(4, 10, d)  # [B, T, d], as the model's
    got = ce_run(x, w, mult, t.view(4, 10), "torch", autocast=True)
    ref = ce_reference(x.view(N, d).bfloat16(), w.bfloat16(), mult, t)
    assert got[0].dtype == torch.float32 and got[1].dtype == got[2].dtype == torch.float32
    for q, a, b in zip(CE_QUANTITIES, got, [ref[0], ref[1].view(4, 10, d), ref[2]]):
        tol = ce_tol(q, "torch", N, d, V, torch.bfloat16)
        assert rel(a, b) <= tol, (q, rel(a, b), tol)


# ---- both ops: backends ----------------------------------------------------------------------------------------

def test_default_backend_on_cpu_is_torch(monkeypatch):
    """backend '' keeps CPU tensors on the PyTorch ops (the Triton ops run on CUDA, or when asked for)."""
    def no(*args):
        raise AssertionError("the Triton op ran")
    monkeypatch.setattr(fused_ops, "_conv_silu_triton", no)
    monkeypatch.setattr(fused_ops._LinearCrossEntropyTriton, "apply", no)
    x, w, s, _ = make_conv(2, 5, 16, 4, True, torch.float32, None, 0)
    assert torch.equal(fused_ops.conv_silu(x, w, s)[0][0], fused_ops.conv_silu(x, w, s, backend="torch")[0][0])
    x, w, t = make_ce(7, 8, 30, 1.0, "float32", "some", seed=0)
    assert fused_ops.linear_cross_entropy(x, w, 1.0, t) == fused_ops.linear_cross_entropy(x, w, 1.0, t, "torch")


def test_backend_errors(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, w, s, _ = make_conv(1, 3, 8, 4, False, torch.float32, None, 0)
    with pytest.raises(ValueError, match="backend must be"):
        fused_ops.conv_silu(x, w, backend="cuda")
    with pytest.raises(ValueError, match="multiple of K"):
        fused_ops.conv_silu(x, w, parts=[4, 4], norm=(6, 3))
    if fused_ops.HAS_TRITON:
        with pytest.raises(ValueError, match="CUDA tensors"):
            fused_ops.conv_silu(x, w, backend="triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        with pytest.raises(ValueError, match="takes"):
            fused_ops.linear_cross_entropy(x.double(), w.double().t(), 1.0, torch.zeros(1, 3).long(), "triton")


HIDDEN = """
import sys
sys.modules['triton'] = None  # as if not installed
import torch, fused_ops
assert not fused_ops.HAS_TRITON
torch.manual_seed(0)
x, w = torch.randn(2, 5, 24, requires_grad=True), torch.randn(24, 4, requires_grad=True)
(q, k, v), state = fused_ops.conv_silu(x, w, None, [8, 8, 8], (16, 8))
loss = fused_ops.linear_cross_entropy(torch.cat([q, k, v], -1), torch.randn(30, 24), 0.5, torch.randint(0, 30, (2, 5)))
loss.backward()
print('OK', loss.item(), float(x.grad.norm()), float(w.grad.norm()))
"""


def test_imports_and_runs_without_triton():
    """Without Triton installed the ops import and give what the same code gives here (the PyTorch path)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", HIDDEN], capture_output=True, text=True, cwd=root, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stderr[-3000:]
    here = subprocess.run([sys.executable, "-c", HIDDEN.replace("sys.modules['triton'] = None", "")
                           .replace("assert not fused_ops.HAS_TRITON", "")], capture_output=True, text=True,
                          cwd=root, timeout=300)
    assert here.returncode == 0 and here.stdout == r.stdout, (here.stdout, r.stdout)


def test_ce_hopper_resources():
    """The kernel compiled for sm_90 rounds to nearest even (cvt.rn) and fits the hardware, spilling at most
    256 bytes a thread (test_conv_hopper_resources says why): at CE_LAUNCH's block (a vocabulary in several
    blocks, two passes) and with a row in one block (a small vocabulary)."""
    for dt, grad, one_pass in (("bf16", True, False), ("bf16", False, False), ("fp32", True, False),
                               ("bf16", True, True), ("fp32", True, True)):
        sig = dict(z_ptr="*" + dt, t_ptr="*i64", loss_ptr="*fp32", mult="fp32", V="i32", stride="i32",
                   GRAD="constexpr", BLOCK="constexpr", ONE_PASS="constexpr")
        args = (fused_ops._ce_rows_kernel, sig, {(6,): grad, (7,): fused_ops.CE_LAUNCH["BLOCK"], (8,): one_pass},
                fused_ops.CE_LAUNCH["num_warps"])
        use = hopper_resources(*args)
        assert use["regs"] <= 255 and use["shared"] <= 227 * 1024 and use["stack"] <= 256, (dt, grad, use)
        if dt == "bf16":
            assert "cvt.rn.bf16" in compile_for_hopper(*args)[0].asm["ptx"], (dt, grad, one_pass)


# ---- on the GPU, at the model's shapes (python -m pytest -m gpu tests) ----------------------------------------

@pytest.fixture
def fp32_matmuls():
    """Plain fp32 matmuls (no TF32) for the float64 comparisons, whatever an earlier test set."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("state", [False, True])
def test_gpu_conv_at_width_768(dtype, state):
    """The mixer's q, k, v conv at width 768 (6 heads: C = 2 * 6 * 96 + 6 * 192, q and k normalised), x a
    column slice of the fused projection's output (rows 3468 apart, as the model's qkv view can be): the
    default backend (Triton) against float64 and the PyTorch op."""
    B, T, C, W, heads = 4, 1024, 2 * 6 * 96 + 6 * 192, 4, (6, 96)
    x, w, s, dy = make_conv(B, T, C, W, state, dtype, 3468 - C, seed=1, device="cuda")
    r = conv_errors(x, w, s, dy, heads, triton="")[0]
    assert r["finite"] and r["state_equal"], r
    for q in r["torch"]:
        tri, tor = (conv_tol(q, p, B, T, W, dtype, heads) for p in ("triton", "torch"))
        assert r["triton"][q] <= tri and r["torch"][q] <= tor and r["triton_torch"][q] <= tri + tor, (q, r)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_gpu_ce_at_the_model_shapes(dtype, fp32_matmuls):
    """The tied head at width 768, GPT-2's padded vocabulary and 8192 rows (5% of the targets ignored, weight
    std 0.02 as the model's init): the default backend (Triton) against float64 and the PyTorch op, and the
    evaluation path."""
    N, d, V, mult = 8192, 768, 50304, 0.25
    x, w, t = make_ce(N, d, V, mult, dtype, "5%", seed=2, device="cuda", w_std=0.02)
    ref = ce_reference(x, w, mult, t)
    got = {b: ce_run(x, w, mult, t, b) for b in ("", "torch")}
    for i, q in enumerate(CE_QUANTITIES):
        tri, tor = (ce_tol(q, p, N, d, V, getattr(torch, dtype)) for p in ("triton", "torch"))
        errs = rel(got[""][i], ref[i]), rel(got["torch"][i], ref[i]), rel(got[""][i], got["torch"][i])
        assert errs[0] <= tri and errs[1] <= tor and errs[2] <= tri + tor, (q, errs, tri, tor)
    with torch.no_grad():
        ev = fused_ops.linear_cross_entropy(x, w, mult, t)
    assert abs(ev.item() - got[""][0].item()) <= sum_tol(d + V) * abs(ev.item())


if __name__ == "__main__" and sys.argv[1:2] in (["conv"], ["ce"]):
    import conftest
    conftest.patch_interpreter()  # after fused_ops and triton are imported, before any launch
    _conv_worker() if sys.argv[1] == "conv" else _ce_worker()
