"""kernel.py: the chunked gated delta rule against the step-by-step reference, in float64.

The PyTorch chunked path is checked directly; the Triton path runs under TRITON_INTERPRET=1 on the
CPU in a subprocess (the interpreter flag must be set before triton is imported), is compiled for
sm_90 without a GPU, and runs on the GPU in the tests marked gpu (python -m pytest -m gpu tests).
"""
import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import kernel  # noqa: E402
from conftest import hopper_resources, interpreted  # noqa: E402


def make_inputs(B, T, H, K, V, regime, dtype=torch.float64, seed=0, device="cpu", h0=True):
    """Random inputs for one gate regime; q, k L2-normalised as the model feeds them."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    u = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    q = torch.nn.functional.normalize(r(B, T, H, K), dim=-1)
    k = torch.nn.functional.normalize(r(B, T, H, K), dim=-1)
    v = r(B, T, H, V)
    g = torch.nn.functional.logsigmoid(r(B, T, H) + 2.0)         # mild decay, a ~ 0.9
    beta = torch.sigmoid(r(B, T, H))
    if regime == "zero_decay":
        g = torch.zeros(B, T, H, dtype=torch.float64)
    elif regime == "strong_decay":
        g = -5.0 - 15.0 * u(B, T, H)                             # g in [-20, -5]
    elif regime == "very_strong_decay":
        g = -8.0 - 20.0 * u(B, T, H)                             # g in [-28, -8]: dg ~ 1e-6
    elif regime == "beta0":
        beta = 1e-4 * u(B, T, H)
    elif regime == "beta1":
        beta = 1.0 - 1e-4 * u(B, T, H)
    elif regime == "mixed":                                      # a mix of all of the above
        g = torch.where(u(B, T, H) < 0.3, torch.zeros_like(g), g)
        g = torch.where(u(B, T, H) < 0.2, -8.0 * torch.ones_like(g), g)
        beta = torch.where(u(B, T, H) < 0.3, torch.ones_like(beta), beta)
    s0 = r(B, H, K, V) if h0 else None
    xs = [q, k, v, g, beta] + ([s0] if h0 else [])
    return [x.to(device=device, dtype=dtype).requires_grad_() for x in xs]


def run_and_grads(fn, xs, scale, seed=1, backend=""):
    """Outputs, final state and the gradients of every input under random cotangents."""
    q, k, v, g, beta = xs[:5]
    s0 = xs[5] if len(xs) > 5 else None
    o, sT = fn(q, k, v, g, beta, scale, initial_state=s0, output_final_state=True, backend=backend)
    gen = torch.Generator().manual_seed(seed)
    do = torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o)
    dsT = torch.randn(sT.shape, generator=gen, dtype=torch.float64).to(sT)
    grads = torch.autograd.grad([o, sT], xs, [do, dsT])
    return [o, sT] + list(grads)


NAMES = ["o", "final_state", "dq", "dk", "dv", "dg", "dbeta", "dh0"]


def assert_match(got, ref, tol, what=""):
    for name, a, b in zip(NAMES, got, ref):
        a, b = a.detach().double(), b.detach().double()
        assert torch.isfinite(a).all(), f"{what} {name}: non-finite"
        scale = b.abs().max().clamp_min(1e-30)
        err = ((a - b).abs().max() / scale).item()
        assert err <= tol, f"{what} {name}: max error {err:.2e} relative to max|ref| > {tol:.0e}"


def rel(a, b):
    """Relative RMS error of a against the reference b."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


REGIMES = ["random", "zero_decay", "strong_decay", "beta0", "beta1"]


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("K", [32, 48, 96])
@pytest.mark.parametrize("T", [1, 63, 64, 130])
def test_torch_chunked_matches_recurrent_float64(T, K, regime):
    # both in float64 (unit roundoff 1e-16): a different order of a few hundred operations a value
    # leaves ~1e-14; 1e-10 leaves room for the conditioning of the inverse, and catches any real error
    xs = make_inputs(2, T, 2, K, 16, regime, seed=T * 1000 + K)
    scale = K ** -0.5
    ref = run_and_grads(kernel.recurrent_gated_delta_rule, xs, scale)
    got = run_and_grads(kernel.chunk_gated_delta_rule, xs, scale, backend="torch")
    assert_match(got, ref, 1e-10, f"T={T} K={K} {regime}")


def test_torch_no_initial_state_no_final_state():
    q, k, v, g, beta = make_inputs(1, 70, 2, 32, 16, "random", h0=False)
    o, s = kernel.chunk_gated_delta_rule(q, k, v, g, beta, 0.2, backend="torch")
    assert s is None and o.shape == v.shape and o.dtype == v.dtype
    o_ref, _ = kernel.recurrent_gated_delta_rule(q, k, v, g, beta, 0.2)
    assert (o - o_ref).abs().max() <= 1e-10 * o_ref.abs().max()


def test_torch_float32_and_bfloat16_inputs():
    xs = make_inputs(1, 100, 2, 32, 32, "random")
    o64, s64 = kernel.recurrent_gated_delta_rule(*xs[:5], 0.2, initial_state=xs[5], output_final_state=True)
    # against the float64 inputs: fp32 rounds them by 6e-8 (fp32 math, 1e-5 is ~100 roundings); bf16
    # rounds them by up to 2^-9 = 2e-3 and the output to bf16 again: 3e-2 is ~8 such roundings
    for dt, tol in [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)]:
        x = [t.detach().to(dt) for t in xs[:5]]
        o, s = kernel.chunk_gated_delta_rule(*x, 0.2, initial_state=xs[5].detach().float(),
                                             output_final_state=True, backend="torch")
        assert o.dtype == dt and s.dtype == torch.float32
        assert rel(o, o64) < tol and rel(s, s64) < tol


def test_default_backend_on_cpu_is_torch():
    xs = [x.detach() for x in make_inputs(1, 70, 2, 32, 16, "random", dtype=torch.float32)]
    ref = kernel.chunk_gated_delta_rule(*xs[:5], 0.2, initial_state=xs[5], output_final_state=True,
                                        backend="torch")
    for backend in ("", None):  # None: an alias of '', for older callers
        got = kernel.chunk_gated_delta_rule(*xs[:5], 0.2, initial_state=xs[5], output_final_state=True,
                                            backend=backend)
        assert all(torch.equal(a, b) for a, b in zip(got, ref))


def test_bad_inputs_raise_clear_errors():
    q, k, v, g, beta = [x.detach() for x in make_inputs(1, 8, 2, 32, 16, "random", h0=False)]
    with pytest.raises(ValueError, match="equal B, T, H"):
        kernel.chunk_gated_delta_rule(q, k, v[:, :4], g, beta, 1.0, backend="torch")
    with pytest.raises(ValueError, match="g and beta"):
        kernel.chunk_gated_delta_rule(q, k, v, g[:, :4], beta, 1.0, backend="torch")
    with pytest.raises(ValueError, match="initial_state"):
        kernel.chunk_gated_delta_rule(q, k, v, g, beta, 1.0, initial_state=torch.zeros(1, 2, 16, 32),
                                      backend="torch")
    with pytest.raises(ValueError, match="backend must be"):
        kernel.chunk_gated_delta_rule(q, k, v, g, beta, 1.0, backend="cuda")
    if kernel.HAS_TRITON:
        q2, k2 = q[..., :24].contiguous(), k[..., :24].contiguous()
        with pytest.raises(ValueError, match="multiples of 16"):
            kernel.chunk_gated_delta_rule(q2, k2, v, g, beta, 1.0, backend="triton")
        with pytest.raises(ValueError, match="one dtype"):
            kernel.chunk_gated_delta_rule(q, k, v.bfloat16(), g, beta, 1.0, backend="triton")
        if os.environ.get("TRITON_INTERPRET") != "1":
            with pytest.raises(ValueError, match="needs CUDA tensors"):
                kernel.chunk_gated_delta_rule(q, k, v, g, beta, 1.0, backend="triton")


# ---- Triton path under the CPU interpreter (one subprocess runs every case) ----
INTERPRET_CASES = {  # name: (B, T, H, K, V, regime, initial state, final state used)
    "K32_V48_T70_random": (1, 70, 2, 32, 48, "random", True, True),
    "K48_V96_T64_mixed": (1, 64, 2, 48, 96, "mixed", True, True),
    "K32_V16_T130_strong_decay": (1, 130, 2, 32, 16, "strong_decay", True, True),
    "K16_V32_T40_zero_decay_B2": (2, 40, 1, 16, 32, "zero_decay", True, True),
    "K32_V32_T100_beta0_no_h0": (1, 100, 2, 32, 32, "beta0", False, True),
    "K32_V32_T100_beta1_o_only": (1, 100, 2, 32, 32, "beta1", True, False),
    # more than one 64-wide K block (the backward's K split) and V block, with partial last blocks
    "K80_V144_T100_mixed": (1, 100, 1, 80, 144, "mixed", True, True),
    "K144_V80_T70_random": (1, 70, 1, 144, 80, "random", True, True),
    # half-precision inputs (the interpreter has no bf16): W and the per-chunk states are stored in
    # the inputs' dtype and products take them so, as bf16 does on the GPU
    "K64_V128_T150_mixed_fp16": (1, 150, 2, 64, 128, "mixed", True, True),
    # dg ~ 1e-6: the kernel sums the terms whose decay straddles t directly (kernel.py's docstring);
    # as a reverse cumsum of O(1) parts, fp32 rounding would swamp dg
    "K64_V128_T293_very_strong_decay": (1, 293, 2, 64, 128, "very_strong_decay", True, True),
}


def _override(text):
    """Launch-config overrides, 'kernel_field=value,...' (e.g. 'out_BKC=16'), on top of the default."""
    base, over = kernel.launch_config, [kv.split("=") for kv in text.split(",")]

    def config(K, V, fp32=False):
        cfg = base(K, V, fp32)
        for key, val in over:
            kern, field = key.split("_", 1)
            cfg[kern] = dict(cfg[kern], **{field: int(val) if val.isdigit() else val})
        return cfg
    kernel.launch_config = config


def _interpret_worker(only=None, cfg=None):
    """Runs in a subprocess with TRITON_INTERPRET=1; prints {case: {quantity: rel error}}."""
    if cfg:
        _override(cfg)
    out = {}
    for i, (name, (B, T, H, K, V, regime, h0, use_state)) in enumerate(INTERPRET_CASES.items()):
        if only and name not in only.split(","):
            continue
        xs = make_inputs(B, T, H, K, V, regime, seed=100 + i, h0=h0)
        dt = torch.float16 if name.endswith("fp16") else torch.float32
        x32 = [x.detach().to(dt if j < 5 else torch.float32).requires_grad_() for j, x in enumerate(xs)]
        o_ref, s_ref = kernel.recurrent_gated_delta_rule(*xs[:5], K ** -0.5, initial_state=xs[5] if h0 else None,
                                                         output_final_state=True)
        o, sT = kernel.chunk_gated_delta_rule(*x32[:5], K ** -0.5, initial_state=x32[5] if h0 else None,
                                              output_final_state=use_state, backend="triton")
        gen = torch.Generator().manual_seed(1)
        do = torch.randn(o.shape, generator=gen, dtype=torch.float64)
        dsT = torch.randn(s_ref.shape, generator=gen, dtype=torch.float64) * use_state
        ref = [o_ref, s_ref] + list(torch.autograd.grad([o_ref, s_ref], xs, [do, dsT]))
        outs, cots = ([o, sT], [do.to(dt), dsT.float()]) if use_state else ([o], [do.to(dt)])
        grads = torch.autograd.grad(outs, x32, cots)
        with torch.no_grad():  # the inference path (no saved states) must give the same output
            o2, _ = kernel.chunk_gated_delta_rule(*x32[:5], K ** -0.5, backend="triton",
                                                  initial_state=x32[5] if h0 else None)
        got = [o, sT if use_state else ref[1]] + list(grads)
        names = NAMES if h0 else NAMES[:-1]
        err = {n: rel(a, b) for n, a, b in zip(names, got, ref)}
        err["o_no_grad"] = rel(o2, ref[0])
        out[name] = err
    print("RESULT" + json.dumps(out))


def _interpret(*args, **env):
    return interpreted(__file__, "interpret", *args, **env)


@pytest.fixture(scope="module")
def interpret_results():
    return _interpret()


def interpret_tol(case, name):
    """The bound on a relative RMS error against the float64 reference, from the arithmetic.
    fp32 (unit roundoff 6e-8; the interpreter multiplies fp32 operands in fp32, not tf32): the inverse,
    the scan over chunks and the sums over K and V round each value some tens of times, ~1e-6; up to
    ~100 roundings (6e-6) where nothing damps them (beta = 1 with no decay makes I - k k^T a projection,
    the mixed cases). 3e-5 is 500 roundings.
    dg under strong decay: every term carries a factor exp(G_i - G_j) whose exponent has the absolute
    error of fp32 G, about an ulp of |G| (|G| < 2048 within a chunk: 1.2e-4), so 2e-4. (A reverse cumsum
    of the straddling terms' O(1) parts loses dg to cancellation there: errors of order 1e-3.)
    fp16 inputs: they and the fp16 workspaces are rounded to 11 bits (unit roundoff 4.9e-4); a few
    such roundings, 2e-3."""
    if case.endswith("fp16"):
        return 2e-3
    if name == "dg" and "strong" in case:
        return 2e-4
    return 3e-5


@pytest.mark.parametrize("case", list(INTERPRET_CASES))
def test_triton_interpreted_matches_recurrent(interpret_results, case):
    errs = interpret_results[case]
    for name, err in errs.items():
        tol = interpret_tol(case, name)
        assert err <= tol, f"{case} {name}: relative error {err:.2e} > {tol:.0e} ({errs})"


def test_out_kernel_k_slices_match_one_slice(interpret_results):
    """The out kernel sums Q K^T and Q H over K in slices (launch_config's BKC). Slices of 16 and 64
    at K 80 and 144 (a partial last slice; K 144 runs 3 slices by default) must leave every error
    where the default has it: the output's to fp32 reordering (1e-6 is ~10 fp32 roundings), the rest
    unchanged (the backward does not read O)."""
    cases = "K80_V144_T100_mixed,K144_V80_T70_random"
    for bkc in ("16", "64"):
        res = _interpret(cases, f"out_BKC={bkc}")
        for case, errs in res.items():
            one = interpret_results[case]
            for name, err in errs.items():
                same = abs(err - one[name]) <= 1e-6 if name.startswith("o") else err == one[name]
                assert err <= interpret_tol(case, name) and same, (bkc, case, name, errs, one)


def test_state_kernel_k_blocks_match_default(interpret_results):
    """The backward's state kernel takes K in blocks of BKS (launch_config; 64 by default, each block
    a program that reads all of dO, Vn and dVn again). Blocks of 128 at K 80 (one, partial) and 144 (two,
    the last partial) must leave the forward's errors as they are and the gradients' within fp32
    reordering of the default's (dq, dk, dg sum over other blocks; 2e-6 is ~30 fp32 roundings)."""
    res = _interpret("K80_V144_T100_mixed,K144_V80_T70_random", "state_BKS=128")
    for case, errs in res.items():
        one = interpret_results[case]
        for name, err in errs.items():
            same = err == one[name] if name in ("o", "o_no_grad", "final_state") else abs(err - one[name]) <= 2e-6
            assert err <= interpret_tol(case, name) and same, (case, name, errs, one)


# ---- the custom ops (the one Triton path; torch.compile traces around them) ----
def _custom_op_worker():
    """Runs under TRITON_INTERPRET=1: the grad_fn of the Triton path's output, then
    torch.library.opcheck on both ops (schema, fake tensors vs real, autograd, aot dispatch)."""
    q, k, v, g, beta, s0 = make_inputs(1, 70, 2, 16, 32, "mixed", seed=7)
    x16 = [x.detach().half().requires_grad_() for x in (q, k, v, g, beta)]
    o, _ = kernel.chunk_gated_delta_rule(*x16, 0.25, initial_state=s0.detach().float(), backend="triton")
    ws = kernel._fwd_op(*[x.detach() for x in x16], 0.25, s0.detach().float())
    checks = {"fwd_fp16_h0": (kernel._fwd_op, (*x16, 0.25, s0.detach().float().requires_grad_())),
              "fwd_fp32_no_h0": (kernel._fwd_op, (q.detach().float(), k.detach().float(), v.detach().float(),
                                                  g.detach().float(), beta.detach().float(), 0.25, None)),
              "bwd_fp16_no_dhT": (kernel._bwd_op, (torch.randn_like(x16[2]), None, *[x.detach() for x in x16[:3]],
                                                   x16[4].detach(), *ws[2:], 0.25, torch.float16))}
    out = {"grad_fn": type(o.grad_fn).__name__,
           "opcheck": {n: torch.library.opcheck(op, args) for n, (op, args) in checks.items()}}
    print("RESULT" + json.dumps(out))


def test_custom_ops_pass_opcheck():
    res = _interpret("custom_op")
    assert res["grad_fn"].startswith("GeneratedBackwardFor_gdn_chunk_gdr_fwd"), res["grad_fn"]
    for name, r in res["opcheck"].items():
        assert set(r.values()) == {"SUCCESS"}, (name, r)


# ---- the kernels compiled for sm_90 (no GPU needed) ----
def hopper_rows(K, V, fp32):
    """Compiles the seven kernels for sm_90 at launch_config(K, V, fp32), with pointers in the dtypes
    _fwd / _bwd pass; returns {kernel: {regs, stack, shared}}."""
    import triton
    dt = "fp32" if fp32 else "bf16"
    f32 = {"g", "beta", "G", "A", "h0", "hT", "dhT", "dh0", "dG", "dGp", "dg", "dbeta", "dVn"}
    cfg = kernel.launch_config(K, V, fp32)
    const = dict(H=4, K=K, V=V, BK=max(64, triton.next_power_of_2(K)), HAS_H0=True, HAS_DHT=True)
    rows = {}
    for name, fn in [("prep", kernel._prep_kernel), ("fwd", kernel._fwd_scan_kernel),
                     ("out", kernel._fwd_out_kernel), ("local", kernel._bwd_local_kernel),
                     ("bwd", kernel._bwd_scan_kernel), ("state", kernel._bwd_state_kernel),
                     ("wy", kernel._bwd_wy_kernel)]:
        opts = {o: v for o, v in cfg[name].items() if o in ("num_warps", "num_stages")}
        consts = {**const, **{c: v for c, v in cfg[name].items() if c not in opts}}
        sig, cst = {}, {}
        for i, a in enumerate(fn.arg_names):
            if a.endswith("_ptr"):
                sig[a] = "*" + ("fp32" if a[:-4] in f32 else dt)
            elif a in consts:
                sig[a], cst[(i,)] = "constexpr", consts[a]
            else:
                sig[a] = "fp32" if a == "scale" else "i32"
        rows[name] = hopper_resources(fn, sig, cst, **opts)
    return rows


@pytest.mark.parametrize("K,V,fp32", [(96, 192, False), (192, 384, False), (256, 512, False), (128, 128, True)])
def test_kernels_compile_for_hopper(K, V, fp32):
    """The interpreter runs what the GPU compiler rejects (a loop that re-binds a pointer name to
    another type passed every interpreted case): compile the seven kernels for sm_90 at launch_config's
    settings with triton's own ptxas, at head sizes below, at and above 128 (K slices, 1 or 2 stages)
    and in fp32. Each must fit an SM (227 KB of shared memory a block, 255 registers a thread) and
    spill little. The spill bound is generous, not one compiler's bytes: a 64 x 64 fp32 tile over a
    program's 128 threads is 128 B a thread, so bf16 kernels may spill two such tiles' worth (256 B);
    fp32 operand tiles are twice as wide and the fp32 kernels run 8 warps on twice the data, 1 KB.
    Spills of that size stay in L1; a kernel whose tiles did not fit would spill many KB."""
    if not kernel.HAS_TRITON:
        pytest.skip("triton not installed")
    rows = hopper_rows(K, V, fp32)
    assert len(rows) == 7
    for name, r in rows.items():
        assert r["shared"] <= 227 * 1024 and r["regs"] <= 255, (K, V, fp32, name, r)
        assert r["stack"] <= (1024 if fp32 else 256), (K, V, fp32, name, r)


# ---- on the GPU (python -m pytest -m gpu tests): bf16 as trained, against float64 ----
def gpu_inputs(B, T, H, K, V, regime, dtype, seed):
    """Inputs on the GPU, as the model makes them (study/bench.py's): q, k L2-normalised; g the
    model's gate -exp(A_log) softplus(a + dt_bias) with exp(A_log) ~ U(0, 16), or a regime's."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, device="cuda", generator=gen)  # noqa: E731
    u = lambda *s: torch.rand(*s, device="cuda", generator=gen)  # noqa: E731
    F = torch.nn.functional
    q = F.normalize(r(B, T, H, K), dim=-1).to(dtype)
    k = F.normalize(r(B, T, H, K), dim=-1).to(dtype)
    v = r(B, T, H, V).to(dtype)
    g = -(16 * u(H)) * F.softplus(r(B, T, H) - 4.0)
    beta = torch.sigmoid(r(B, T, H))
    if regime == "zero_decay":
        g = torch.zeros_like(g)
    elif regime == "strong_decay":
        g = -5 - 15 * u(B, T, H)
    elif regime == "very_strong_decay":
        g = -8 - 20 * u(B, T, H)
    elif regime == "beta1":
        beta = 1 - 1e-3 * u(B, T, H)
    elif regime == "beta0":
        beta = 1e-3 * u(B, T, H)
    s0 = r(B, H, K, V) * 0.1
    return [q, k, v, g, beta, s0]


def gpu_check(shape, regime, dtype, seed):
    """Every output and gradient of the Triton path against the float64 PyTorch chunked path on the
    same (rounded) inputs (which the CPU tests show equal to the recurrent reference to ~1e-13):
    {name: relative RMS error}; and whether a second run gives the same bits."""
    B, T, H, K, V = shape
    xs = [x.requires_grad_() for x in gpu_inputs(B, T, H, K, V, regime, dtype, seed)]
    x64 = [x.detach().double().requires_grad_() for x in xs]
    gen = torch.Generator(device="cuda").manual_seed(seed + 1)
    do = torch.randn(B, T, H, V, device="cuda", dtype=torch.float64, generator=gen)
    dsT = torch.randn(B, H, K, V, device="cuda", dtype=torch.float64, generator=gen)
    runs = []
    for _ in range(2):
        o, sT = kernel.chunk_gated_delta_rule(*xs[:5], K ** -0.5, initial_state=xs[5],
                                              output_final_state=True, backend="triton")
        runs.append([o, sT] + list(torch.autograd.grad([o, sT], xs, [do.to(o.dtype), dsT.float()])))
    o, sT = kernel.chunk_gated_delta_rule(*x64[:5], K ** -0.5, initial_state=x64[5], output_final_state=True,
                                          backend="torch")
    ref = [o, sT] + list(torch.autograd.grad([o, sT], x64, [do, dsT]))
    same = all(torch.equal(a, b) for a, b in zip(*runs))
    return {n: rel(a, b) for n, a, b in zip(NAMES, runs[0], ref)}, same


def assert_gpu_errors(errs, regime, what):
    """bf16 rounds to 8 bits (unit roundoff 2^-9 = 2e-3, a rounding's RMS ~1.1e-3): o and the state
    take a few such roundings (the workspaces Vn and Hs, the products' operands), 5e-3; a gradient takes
    more (dH per chunk, dW, the dk part), 1e-2; dg under strong decay is a small difference of O(1)
    terms (|G| ~ 1e3 within a chunk), 2e-2. fp32 inputs multiply in tf32 (11 bits), within the same."""
    for name, err in errs.items():
        tol = 5e-3 if name in ("o", "final_state") else 1e-2
        tol = 2e-2 if name == "dg" and regime.endswith("strong_decay") else tol
        assert err <= tol, f"{what} {name}: relative RMS error {err:.2e} > {tol:.0e} ({errs})"


GPU_SHAPES = [(2, 1000, 4, 128, 128), (1, 1024, 6, 96, 192), (1, 777, 3, 256, 512), (2, 700, 3, 64, 128),
              (1, 1024, 4, 128, 256), (1, 600, 2, 192, 384), (2, 333, 2, 48, 96)]
GPU_REGIMES = ["model", "zero_decay", "strong_decay", "very_strong_decay", "beta0", "beta1"]


@pytest.mark.gpu
@pytest.mark.parametrize("regime", GPU_REGIMES)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=str)
def test_gpu_bf16_matches_float64(shape, regime):
    seed = GPU_SHAPES.index(shape) * 10 + GPU_REGIMES.index(regime)
    errs, same = gpu_check(shape, regime, torch.bfloat16, seed)
    assert same, f"{shape} {regime}: two runs differ"
    assert_gpu_errors(errs, regime, f"{shape} {regime}")


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [s for s in GPU_SHAPES if s[3] <= 128][:2], ids=str)
def test_gpu_fp32_matches_float64(shape):
    # fp32 at K > 128 takes the torch path (the backward's fp32 tiles exceed shared memory)
    errs, same = gpu_check(shape, "model", torch.float32, seed=100 + shape[3])
    assert same, f"{shape} fp32: two runs differ"
    assert_gpu_errors(errs, "model", f"{shape} fp32")


@pytest.mark.gpu
@pytest.mark.parametrize("K", range(16, 257, 16))
def test_gpu_every_head_size(K):
    """Every head size the model's widths produce (K = width / 8, V = 2K), T not a multiple of 64."""
    shape = (1, 64 * (3 + K // 64) + 37, 2, K, 2 * K)
    errs, same = gpu_check(shape, "model", torch.bfloat16, seed=200 + K)
    assert same, f"{shape}: two runs differ"
    assert_gpu_errors(errs, "model", str(shape))


if __name__ == "__main__" and sys.argv[1:2] == ["interpret"]:
    import conftest
    conftest.patch_interpreter()  # after kernel and triton are imported, before any launch
    if sys.argv[2:3] == ["custom_op"]:
        _custom_op_worker()
    else:
        _interpret_worker(*sys.argv[2:4])
