"""Chunked gated delta rule (Gated DeltaNet), forward and backward.

One public entry, `chunk_gated_delta_rule`, with two backends:
  * "triton": fused Triton kernels (CUDA), forward and backward in one autograd.Function;
  * "torch":  the same chunked algorithm in plain PyTorch (autograd does the backward),
    used on CPU and as the test oracle's sibling;
plus `recurrent_gated_delta_rule`, the step-by-step reference the tests compare against.

Shapes: q, k [B, T, H, K]; v [B, T, H, V]; g (log decay, <= 0) and beta [B, T, H].
State convention: we carry H = S^T in R^{K x V} (state [B, H, K, V], fp32), so per token
    H_t = a_t (I - b_t k_t k_t^T) H_{t-1} + b_t k_t v_t^T,   o_t = scale * H_t^T q_t,   a_t = exp(g_t).
q and k are expected L2-normalised (the model does it; ||k|| = 1 keeps I - b k k^T a contraction).

Chunked (WY) form, chunk C = 64, rows = the chunk's tokens, H0 = state entering the chunk:
    G = cumsum(g) within the chunk,  Gam_ij = exp(G_i - G_j) for i >= j (0 above the diagonal),
    A = (I + StrictTril(diag(b) (Gam o K K^T)))^-1,   W = A diag(b e^G) K,   U = A diag(b) V,
    Vn = U - W H0                      (= b_i (v_i - a-decayed prediction), the "new values")
    O  = scale (diag(e^G) Q H0 + Tril(Q K^T o Gam) Vn)
    H1 = e^{G_C} H0 + (diag(e^{G_C - G}) K)^T Vn
Everything except the H0 -> H1 pass is parallel over chunks. Exponents are masked *before* exp
(select, not multiply) and exp(-G) is never formed alone, so strong decay cannot overflow.
"""
import os

import torch

try:
    import triton
    import triton.language as tl
    HAS_TRITON = True
except ImportError:  # CPU-only installs without triton: the torch path still works
    HAS_TRITON = False

CHUNK = 64


def _check_inputs(q, k, v, g, beta, initial_state, backend):
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"expected q, k [B, T, H, K] and v [B, T, H, V] with equal B, T, H; got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if g.shape != q.shape[:3] or beta.shape != q.shape[:3]:
        raise ValueError(f"expected g and beta of shape [B, T, H] = {tuple(q.shape[:3])}; got "
                         f"g {tuple(g.shape)}, beta {tuple(beta.shape)}")
    B, T, H, K = q.shape
    V = v.shape[-1]
    if initial_state is not None and initial_state.shape != (B, H, K, V):
        raise ValueError(f"initial_state must be [B, H, K, V] = {(B, H, K, V)}; "
                         f"got {tuple(initial_state.shape)}")
    if backend == "triton":
        if not HAS_TRITON:
            raise ValueError("backend='triton' needs the triton package; install it or use backend='torch'")
        if K % 16 or not 16 <= K <= 256 or V % 16 or not 16 <= V <= 512:
            raise ValueError(f"the triton backend supports head dims K (d_k) in 16..256 and V (d_v) in "
                             f"16..512, both multiples of 16; got K={K}, V={V}. Pad the head dims or "
                             f"use backend='torch'")
        if not (q.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
            raise ValueError("backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU "
                             "testing); use backend='torch' on CPU")
    elif backend != "torch":
        raise ValueError(f"backend must be None, 'torch' or 'triton'; got {backend!r}")


def chunk_gated_delta_rule(q, k, v, g, beta, scale, initial_state=None, output_final_state=False,
                           backend=None):
    """Gated delta rule over a whole sequence. Returns (o [B, T, H, V] in v's dtype,
    final_state [B, H, K, V] fp32, or None unless output_final_state).
    backend: None (triton for CUDA tensors when triton is importable, else torch), "torch", "triton".
    """
    if backend is None:
        backend = "triton" if (HAS_TRITON and q.is_cuda) else "torch"
    _check_inputs(q, k, v, g, beta, initial_state, backend)
    if backend == "triton":
        return _triton_gdr(q, k, v, g, beta, scale, initial_state, output_final_state)
    return _torch_chunk_gdr(q, k, v, g, beta, scale, initial_state, output_final_state)


# ----------------------------------------------------------------------------------------------
# Reference and PyTorch fallback
# ----------------------------------------------------------------------------------------------

def recurrent_gated_delta_rule(q, k, v, g, beta, scale, initial_state=None,
                               output_final_state=False, backend=None):
    """Token-by-token reference, in the dtype it is given (tests run it in float64)."""
    B, T, Hh, K = q.shape
    V = v.shape[-1]
    h = q.new_zeros(B, Hh, K, V) if initial_state is None else initial_state.to(q.dtype)
    out = []
    for t in range(T):
        kt, vt, qt = k[:, t], v[:, t], q[:, t]                       # [B, H, K] / [B, H, V]
        a, b = g[:, t].exp()[..., None, None], beta[:, t][..., None]
        h = a * h                                                     # decay
        pred = torch.einsum("bhk,bhkv->bhv", kt, h)                   # H^T k
        h = h + torch.einsum("bhk,bhv->bhkv", kt, b * (vt - pred))    # delta-rule write
        out.append(scale * torch.einsum("bhk,bhkv->bhv", qt, h))
    o = torch.stack(out, 1).to(v.dtype)
    return o, (h if output_final_state else None)


def _torch_chunk_gdr(q, k, v, g, beta, scale, initial_state, output_final_state):
    """The chunked algorithm in PyTorch: fp32 math (fp64 if given fp64), autograd backward."""
    B, T, Hh, K = q.shape
    V, C = v.shape[-1], CHUNK
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    out_dtype = v.dtype
    N = (T + C - 1) // C
    pad = N * C - T

    def chunks(x):  # [B, T, H, ...] -> [B, H, N, C, ...], padded with zeros (g=0, beta=0)
        x = x.to(dt).transpose(1, 2)
        if pad:
            x = torch.nn.functional.pad(x, (0, 0) * (x.dim() - 3) + (0, pad))
        return x.reshape(B, Hh, N, C, *x.shape[3:])

    q, k, v = chunks(q), chunks(k), chunks(v)
    g, beta = chunks(g[..., None])[..., 0], chunks(beta[..., None])[..., 0]
    G = g.cumsum(-1)                                                  # [B, H, N, C]
    idx = torch.arange(C, device=q.device)
    incl = idx[:, None] >= idx[None, :]                               # i >= j
    strict = idx[:, None] > idx[None, :]
    diff = G[..., :, None] - G[..., None, :]
    gam = torch.where(incl, torch.exp(torch.where(incl, diff, 0.0)), 0.0)  # mask before exp
    kk = (k @ k.transpose(-1, -2)) * gam * beta[..., :, None]
    L = torch.eye(C, dtype=dt, device=q.device) + torch.where(strict, kk, 0.0)
    rhs = torch.cat([k * (beta * G.exp())[..., None], v * beta[..., None]], -1)
    WU = torch.linalg.solve_triangular(L, rhs, upper=False, unitriangular=True)
    W, U = WU[..., :K], WU[..., K:]
    Aqk = (q @ k.transpose(-1, -2)) * gam                             # Tril(Q K^T o Gam)
    qg = q * G.exp()[..., None]
    kd = k * torch.exp(G[..., -1:] - G)[..., None]                    # e^{G_C - G} K, exponent <= 0
    gC = G[..., -1].exp()[..., None, None]                            # [B, H, N, 1, 1]

    h = q.new_zeros(B, Hh, K, V) if initial_state is None else initial_state.to(dt)
    outs = []
    for n in range(N):  # the only sequential part: carry H across chunks
        vn = U[:, :, n] - W[:, :, n] @ h
        outs.append(scale * (qg[:, :, n] @ h + Aqk[:, :, n] @ vn))
        h = gC[:, :, n] * h + kd[:, :, n].transpose(-1, -2) @ vn
    o = torch.stack(outs, 2).reshape(B, Hh, N * C, V)[:, :, :T].transpose(1, 2)
    return o.to(out_dtype), (h if output_final_state else None)


def _triton_gdr(*args):
    raise NotImplementedError("the triton backend lands with issue 3; use backend='torch'")
