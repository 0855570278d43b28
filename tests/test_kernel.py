"""kernel.py: the chunked gated delta rule against the step-by-step reference, in float64.

The PyTorch chunked path is checked directly; the Triton path runs under TRITON_INTERPRET=1 on the
CPU in a subprocess (the interpreter flag must be set before triton is imported).
"""
import os
import subprocess
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import kernel  # noqa: E402


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


def run_and_grads(fn, xs, scale, seed=1, backend=None):
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


REGIMES = ["random", "zero_decay", "strong_decay", "beta0", "beta1"]


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("K", [32, 48, 96])
@pytest.mark.parametrize("T", [1, 63, 64, 130])
def test_torch_chunked_matches_recurrent_float64(T, K, regime):
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
    for dt, tol in [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)]:
        x = [t.detach().to(dt) for t in xs[:5]]
        o, s = kernel.chunk_gated_delta_rule(*x, 0.2, initial_state=xs[5].detach().float(),
                                             output_final_state=True, backend="torch")
        assert o.dtype == dt and s.dtype == torch.float32
        assert (o.double() - o64).norm() / o64.norm() < tol
        assert (s.double() - s64).norm() / s64.norm() < tol


def test_bad_inputs_raise_clear_errors():
    q, k, v, g, beta = [x.detach() for x in make_inputs(1, 8, 2, 32, 16, "random", h0=False)]
    with pytest.raises(ValueError, match="equal B, T, H"):
        kernel.chunk_gated_delta_rule(q, k, v[:, :4], g, beta, 1.0, backend="torch")
    with pytest.raises(ValueError, match="g and beta"):
        kernel.chunk_gated_delta_rule(q, k, v, g[:, :4], beta, 1.0, backend="torch")
    with pytest.raises(ValueError, match="initial_state"):
        kernel.chunk_gated_delta_rule(q, k, v, g, beta, 1.0, initial_state=torch.zeros(1, 2, 16, 32),
                                      backend="torch")
    with pytest.raises(ValueError, match="backend"):
        kernel.chunk_gated_delta_rule(q, k, v, g, beta, 1.0, backend="cuda")
    if kernel.HAS_TRITON:
        q2, k2 = q[..., :24].contiguous(), k[..., :24].contiguous()
        with pytest.raises(ValueError, match="multiples of 16"):
            kernel.chunk_gated_delta_rule(q2, k2, v, g, beta, 1.0, backend="triton")
