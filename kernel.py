"""The chunked gated delta rule (Gated DeltaNet), forward and backward, in PyTorch and in Triton.

Shapes: q, k [B, T, H, K]; v [B, T, H, V]; g (log decay, <= 0) and beta [B, T, H]. q and k are expected L2-normalised
(the model does it; ||k|| = 1 keeps I - b k k^T a contraction).

Recurrence. The state is carried as H = S^T in R^{K x V} ([B, H, K, V], fp32); per token t
    H_t = a_t (I - b_t k_t k_t^T) H_{t-1} + b_t k_t v_t^T,   o_t = scale H_t^T q_t,   a_t = exp(g_t).

Chunked (WY) form, chunk C = 64; rows are the chunk's tokens, H0 is the state entering the chunk:
    G = cumsum(g) within the chunk,   Gam_ij = exp(G_i - G_j) for i >= j (0 above the diagonal),
    A = (I + StrictTril(diag(b) (Gam o K K^T)))^-1,   W = A diag(b e^G) K,   U = A diag(b) V,
    Vn = U - W H0                            (the chunk's new values: b_i times v_i's prediction error),
    O  = scale (diag(e^G) Q H0 + M Vn),      M = Tril(Q K^T o Gam),
    H1 = e^{G_C} H0 + (diag(e^{G_C - G}) K)^T Vn.
Only the H0 -> H1 pass is sequential over chunks. Exponents are masked before exp (select, not multiply) and exp(-G) is
never formed alone, so strong decay cannot overflow.

Backward, given dO and dH1, the grad of the state leaving a chunk (Triton kernel in brackets):
  * [local] the intra-chunk part of dVn, scale M^T dO, parallel over chunks;
  * [scan] in reverse over chunks, the only sequential step: dVn += diag(e^{G_C - G}) K dH1 and
    dH0 = e^{G_C} dH1 + scale (diag(e^G) Q)^T dO - W^T dVn; each chunk's dH1 is stored;
  * [state] through the chunk's states (the forward stores each H0) and M, with dM = scale dO Vn^T:
    dq = scale diag(e^G) dO H0^T + (dM o Gam) K (final), dW = -dVn H0^T, dk = diag(e^{G_C - G}) Vn dH1^T
    + (dM o Gam)^T Q (partial: [wy] adds the rest), and dG, the grad of G, through e^G Q H0 and e^{G_C} H0;
  * [wy] through W, U (dU = dVn) and A: dA = dW (diag(b e^G) K)^T + dU (diag(b) V)^T,
    dv = diag(b) A^T dU, d(diag(b e^G) K) = A^T dW, and since d(X^-1) = -X^-1 dX X^-1,
    dL = -A^T dA A^T (strictly lower) for L = StrictTril(diag(b) (Gam o K K^T)); from dL the rest of dk, dbeta and dG.
G = cumsum(g), so dg_t = sum over i >= t of dG_i, a reverse cumsum. A factor exp(G_i - G_j) puts +x on dG_i and -x on
dG_j, which after the cumsum count only for the t with j < t <= i. The factors with i = j (M's diagonal, the last row of
e^{G_C - G} K) are 1: their x are of order 1 and cancel exactly in real arithmetic, but under strong decay dg is ~1e-6
and the fp32 rounding of that cancellation would swamp it. So the state kernel sums the terms of e^{G_C - G} K and of M
directly over the pairs that straddle t; the WY terms (|L_ij| <= b_i e^{G_i - G_j}, no factor of 1) and the one-sided
ones (e^G, e^{G_C}) take the cumsum.
"""
import os

import torch

try:
    import triton
    import triton.language as tl
    HAS_TRITON = True
except ImportError:
    # the kernels below are defined at module level, so their decorators and tl.constexpr annotations must still
    # evaluate without triton: a stand-in jit that returns the function (never launched; chunk_gated_delta_rule then
    # takes the PyTorch path)
    import types
    HAS_TRITON = False
    triton = types.SimpleNamespace(jit=lambda fn: fn)
    tl = types.SimpleNamespace(constexpr=int)

CHUNK = 64


# ---- Reference and PyTorch path --------------------------------------------------------------------------------------

def recurrent_gated_delta_rule(q, k, v, g, beta, scale, initial_state=None, output_final_state=False, backend=""):
    """Token-by-token reference, in the dtype it is given (tests run it in float64). `backend` is
    ignored: the signature is chunk_gated_delta_rule's."""
    (B, T, Hh, K), V = q.shape, v.shape[-1]
    h = q.new_zeros(B, Hh, K, V) if initial_state is None else initial_state.to(q.dtype)
    out = []
    for t in range(T):
        kt, vt, qt = k[:, t], v[:, t], q[:, t]                       # [B, H, K] / [B, H, V]
        a, b = g[:, t].exp()[..., None, None], beta[:, t][..., None]
        h = a * h                                                     # decay
        pred = torch.einsum("bhk,bhkv->bhv", kt, h)                   # H^T k
        h = h + torch.einsum("bhk,bhv->bhkv", kt, b * (vt - pred))    # delta-rule write
        out.append(scale * torch.einsum("bhk,bhkv->bhv", qt, h))
    return torch.stack(out, 1).to(v.dtype), (h if output_final_state else None)


def _torch_chunk_gdr(q, k, v, g, beta, scale, initial_state, output_final_state):
    """The chunked algorithm in PyTorch: fp32 math (fp64 if given fp64), autograd backward."""
    (B, T, Hh, K), V, C = q.shape, v.shape[-1], CHUNK
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


# ---- Triton kernels --------------------------------------------------------------------------------------------------
# 3 forward (prep, scan, out) and 4 backward (local, scan, state, wy), launched by _fwd / _bwd below. Only the two
# scans are sequential (over chunks), and they do the minimum there: 2 products per chunk forward, 3 backward.
# Layout: inputs [B, T, H, D] contiguous (a chunk = 64 rows of stride H*D); workspaces per (b, h) = bh: G [BH, Tp], A
# [BH, Tp, 64] and dVn [BH, Tp, V] in fp32; W [BH, Tp, K], U and Vn [BH, Tp, V], the dW and dk parts [BH, Tp, K], the
# state entering each chunk Hs and the grad of the state leaving it dHs [BH, N, K, V] in the inputs' dtype: bf16
# workspaces halve the bytes moved, and dVn stays fp32 because dbeta loses accuracy (under strong decay) otherwise.
# Products: bf16 operands (inputs, workspaces, states) or fp32 ones (tf32; tf32x3 in the inverse), fp32 accumulation.
# Triton traps on Hopper, each avoided here:
# - tl.trans of a tl.dot result fed to another tl.dot miscompiles: no kernel does it; transposed products are
#   computed with swapped operands or transposed loads, tl.trans of a product goes to a store.
# - bf16 products whose shared-memory operand tile is 16 or 32 wide read shared memory out of bounds:
#   every tile is >= 64 wide (K blocks and V blocks of 64, masked).
# - exp of an unmasked exponent overflows under strong decay (and 0 * inf is nan): mask before exp.


@triton.jit
def _grid(r, c, TR: tl.constexpr):
    """A tile's row indices r as a column and column indices c as a row; TR: the other way, for its transpose."""
    return (r[None, :], c[:, None]) if TR else (r[:, None], c[None, :])


@triton.jit
def _rows(ptr, b, h, t0, T, H: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, c0=0, TR: tl.constexpr = False):
    """Pointers and mask of a [64, BD] tile of a [B, T, H, D] tensor (rows t0.., cols c0..); TR: of the same tile
    transposed ([BD, 64]), addressed directly."""
    t, c = _grid(t0 + tl.arange(0, 64), c0 + tl.arange(0, BD), TR)
    return ptr + ((b * T + t) * H + h) * D + c, (t < T) & (c < D)


@triton.jit
def _ws(ptr, bh, t0, Tp, D: tl.constexpr, BD: tl.constexpr, c0=0, TR: tl.constexpr = False):
    """A [64, BD] tile of a [B*H, Tp, D] workspace (TR: transposed, [BD, 64])."""
    t, c = _grid(bh * Tp + t0 + tl.arange(0, 64), c0 + tl.arange(0, BD), TR)
    return ptr + t * D + c, (c < D) & (t >= 0)


@triton.jit
def _state(ptr, off, k0, c0, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
           TR: tl.constexpr = False):
    """A [BK, BV] tile of the [K, V] state at ptr + off (TR: transposed, [BV, BK])."""
    ck, cv = _grid(k0 + tl.arange(0, BK), c0 + tl.arange(0, BV), TR)
    return ptr + off + ck * V + cv, (ck < K) & (cv < V)


@triton.jit
def _ld(pm):
    """The tile at one of the helpers' (pointers, mask) above: 0 where masked."""
    return tl.load(pm[0], mask=pm[1], other=0.)


@triton.jit
def _st(pm, x):
    """Store x, cast to the pointers' dtype, at one of the helpers' (pointers, mask) above."""
    tl.store(pm[0], x.to(pm[0].dtype.element_ty), mask=pm[1])


@triton.jit
def _vec(ptr, b, h, t0, T, H: tl.constexpr):
    t = t0 + tl.arange(0, 64)
    return tl.load(ptr + (b * T + t) * H + h, mask=t < T, other=0.).to(tl.float32)


@triton.jit
def _chunk(n, bh, N, H: tl.constexpr):
    """Of chunk n of bh = b * H + h: b, h, the padded length Tp = 64 N, the chunk's first row t0 and its 64 rows r."""
    return bh // H, bh % H, N * 64, n * 64, tl.arange(0, 64)


@triton.jit
def _decay(Gi, Gj, keep):
    """exp(Gi[:, None] - Gj[None, :]) where keep, else 0; masked before the exp."""
    return tl.where(keep, tl.exp(tl.where(keep, Gi[:, None] - Gj[None, :], 0.)), 0.)


@triton.jit
def _prep_kernel(k_ptr, v_ptr, g_ptr, beta_ptr, G_ptr, A_ptr, W_ptr, U_ptr, T, N,
                 H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, INV: tl.constexpr):
    """Forward step 1, parallel over chunks: G = cumsum(g) in the chunk,
    A = (I + L)^-1 with L = StrictTril(diag(beta)(Gam o K K^T)), W = A diag(beta e^G) K and
    U = A diag(beta) V. INV: the precision of the inverse's products (launch_config)."""
    n, bh = tl.program_id(0), tl.program_id(1)
    b, h, Tp, t0, r = _chunk(n, bh, N, H)
    G = tl.cumsum(_vec(g_ptr, b, h, t0, T, H), 0)
    beta = _vec(beta_ptr, b, h, t0, T, H)
    tl.store(G_ptr + bh * Tp + t0 + r, G)
    kk = tl.zeros([64, 64], dtype=tl.float32)
    for c0 in range(0, K, 64):
        k = _ld(_rows(k_ptr, b, h, t0, T, H, K, 64, c0))
        kk += tl.dot(k, _ld(_rows(k_ptr, b, h, t0, T, H, K, 64, c0, TR=True)))
    L = beta[:, None] * _decay(G, G, r[:, None] > r[None, :]) * kk
    # Blocked inverse. The four 16 x 16 diagonal blocks D of L, as one [4, 16, 16] tensor, are inverted at once by
    # forward substitution: (I + D)^-1 = E_14^-1 ... E_0^-1 with E_j^-1 = I - d_j e_j^T (d_j: column j of each block
    # below the diagonal).
    i4, i16 = tl.arange(0, 4), tl.arange(0, 16)
    same = i4[:, None, None, None] == i4[None, None, :, None]        # [4, 1, 4, 1]
    D = tl.sum(tl.where(same, tl.reshape(L, (4, 16, 4, 16)), 0.), 2)  # D[b, r, c]
    X = tl.zeros([4, 16, 16], dtype=tl.float32) + tl.where(i16[:, None] == i16[None, :], 1., 0.)
    for j in range(15):
        dcol = tl.sum(tl.where(i16[None, None, :] == j, D, 0.), 2)    # D[b, :, j]
        xrow = tl.sum(tl.where(i16[None, :, None] == j, X, 0.), 1)    # X[b, j, :]
        X -= dcol[:, :, None] * xrow[:, None, :]
    X = tl.reshape(tl.where(same, X[:, :, None, :], 0.), (64, 64))   # block-diagonal [64, 64]
    # Then I + L = (I + D)(I + Nb), Nb = X (L - D) strictly block-lower so Nb^4 = 0: A = (I - Nb)(I + Nb^2) X. Products
    # in INV, tf32x3 (fp32-accurate): A feeds everything.
    Nb = tl.dot(X, tl.where(r[:, None] // 16 == r[None, :] // 16, 0., L), input_precision=INV)
    Y = X + tl.dot(tl.dot(Nb, Nb, input_precision=INV), X, input_precision=INV)
    A = Y - tl.dot(Nb, Y, input_precision=INV)
    tl.store(A_ptr + (bh * Tp + t0 + r[:, None]) * 64 + r[None, :], A)
    bg = beta * tl.exp(G)
    for c0 in range(0, K, 64):
        kb = _ld(_rows(k_ptr, b, h, t0, T, H, K, 64, c0)).to(tl.float32) * bg[:, None]
        _st(_ws(W_ptr, bh, t0, Tp, K, 64, c0), tl.dot(A, kb))
    for c0 in range(0, V, 64):
        vb = _ld(_rows(v_ptr, b, h, t0, T, H, V, 64, c0)).to(tl.float32) * beta[:, None]
        _st(_ws(U_ptr, bh, t0, Tp, V, 64, c0), tl.dot(A, vb))


@triton.jit
def _given_state(ptr, bh, vb, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                 GIVEN: tl.constexpr):
    """A scan's starting [BK, BV] tile of a [K, V] state (h0 forward, dhT backward): given, or zeros."""
    return _ld(_state(ptr, bh * K * V, 0, vb * BV, K, V, BK, BV)) if GIVEN else tl.zeros([BK, BV], dtype=tl.float32)


@triton.jit
def _fwd_scan_kernel(k_ptr, G_ptr, W_ptr, U_ptr, h0_ptr, hT_ptr, Hs_ptr, Vn_ptr, T, N, H: tl.constexpr, K: tl.constexpr,
                     V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_H0: tl.constexpr):
    """Forward step 2, sequential over chunks, parallel over (V block, b, h): store H (the state
    entering the chunk), Vn = U - W H (stored), H <- e^{G_C} H + (diag(e^{G_C - G}) K)^T Vn."""
    vb, bh = tl.program_id(0), tl.program_id(1)
    b, h, Tp, _, r = _chunk(0, bh, N, H)
    Hst = _given_state(h0_ptr, bh, vb, K, V, BK, BV, HAS_H0)
    for n in range(N):
        t0 = n * 64
        _st(_state(Hs_ptr, (bh * N + n) * K * V, 0, vb * BV, K, V, BK, BV), Hst)
        w = _ld(_ws(W_ptr, bh, t0, Tp, K, BK))
        u = _ld(_ws(U_ptr, bh, t0, Tp, V, BV, vb * BV)).to(tl.float32)
        kT = _ld(_rows(k_ptr, b, h, t0, T, H, K, BK, TR=True))
        G = tl.load(G_ptr + bh * Tp + t0 + r)
        GC = tl.load(G_ptr + bh * Tp + t0 + 63)
        Vn = u - tl.dot(w, Hst.to(w.dtype))
        _st(_ws(Vn_ptr, bh, t0, Tp, V, BV, vb * BV), Vn)
        Hst = tl.dot(kT, (Vn * tl.exp(GC - G)[:, None]).to(kT.dtype), acc=tl.exp(GC) * Hst)
    _st(_state(hT_ptr, bh * K * V, 0, vb * BV, K, V, BK, BV), Hst)


@triton.jit
def _fwd_out_kernel(q_ptr, k_ptr, G_ptr, Hs_ptr, Vn_ptr, o_ptr, scale, T, N, H: tl.constexpr, K: tl.constexpr,
                    V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, BKC: tl.constexpr):
    """Forward step 3, parallel over (V block, chunk, b, h): O = scale (diag(e^G) Q H + Tril(Q K^T o Gam) Vn). Q K^T and
    Q H are summed over K in slices of BKC columns (launch_config): smaller dot operands, less shared memory."""
    vb, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h, Tp, t0, r = _chunk(n, bh, N, H)
    qk = tl.zeros([64, 64], dtype=tl.float32)
    qh = tl.zeros([64, BV], dtype=tl.float32)
    for k0 in tl.static_range(0, K, BKC):
        q = _ld(_rows(q_ptr, b, h, t0, T, H, K, BKC, k0))
        qk = tl.dot(q, _ld(_rows(k_ptr, b, h, t0, T, H, K, BKC, k0, TR=True)), qk)
        qh = tl.dot(q, _ld(_state(Hs_ptr, (bh * N + n) * K * V, k0, vb * BV, K, V, BKC, BV)).to(q.dtype), qh)
    vn = _ld(_ws(Vn_ptr, bh, t0, Tp, V, BV, vb * BV)).to(tl.float32)
    G = tl.load(G_ptr + bh * Tp + t0 + r)
    M = _decay(G, G, r[:, None] >= r[None, :]) * qk
    o = scale * (tl.exp(G)[:, None] * qh + tl.dot(M, vn))
    _st(_rows(o_ptr, b, h, t0, T, H, V, BV, vb * BV), o)


@triton.jit
def _bwd_local_kernel(q_ptr, k_ptr, do_ptr, G_ptr, dVn_ptr, scale, T, N, H: tl.constexpr,
                      K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """Backward step 1, parallel over (V block, chunk, b, h): the intra-chunk part of the grad
    of Vn, scale Tril(Q K^T o Gam)^T dO, stored in dVn for the scan to complete."""
    vb, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h, Tp, t0, r = _chunk(n, bh, N, H)
    k = _ld(_rows(k_ptr, b, h, t0, T, H, K, BK))
    qT = _ld(_rows(q_ptr, b, h, t0, T, H, K, BK, TR=True))
    do = _ld(_rows(do_ptr, b, h, t0, T, H, V, BV, vb * BV)).to(tl.float32)
    G = tl.load(G_ptr + bh * Tp + t0 + r)
    Mt = _decay(-G, -G, r[:, None] <= r[None, :]) * tl.dot(k, qT)  # M^T
    _st(_ws(dVn_ptr, bh, t0, Tp, V, BV, vb * BV), scale * tl.dot(Mt, do))


@triton.jit
def _bwd_scan_kernel(q_ptr, k_ptr, do_ptr, G_ptr, W_ptr, dhT_ptr, dh0_ptr, dHs_ptr, dVn_ptr,
                     scale, T, N, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                     BK: tl.constexpr, BV: tl.constexpr, HAS_DHT: tl.constexpr):
    """Backward step 2, sequential over chunks in reverse, parallel over (V block, b, h): carry dH, the grad of the
    state leaving the chunk (stored per chunk); dVn += diag(e^{G_C-G}) K dH (completing step 1's part, stored),
    dH <- e^{G_C} dH + scale (diag(e^G) Q)^T dO - W^T dVn."""
    vb, bh = tl.program_id(0), tl.program_id(1)
    b, h, Tp, _, r = _chunk(0, bh, N, H)
    dH = _given_state(dhT_ptr, bh, vb, K, V, BK, BV, HAS_DHT)
    for i in range(N):
        n = N - 1 - i
        t0 = n * 64
        _st(_state(dHs_ptr, (bh * N + n) * K * V, 0, vb * BV, K, V, BK, BV), dH)
        k = _ld(_rows(k_ptr, b, h, t0, T, H, K, BK))
        qT = _ld(_rows(q_ptr, b, h, t0, T, H, K, BK, TR=True))
        wT = _ld(_ws(W_ptr, bh, t0, Tp, K, BK, TR=True))
        do = _ld(_rows(do_ptr, b, h, t0, T, H, V, BV, vb * BV))
        G = tl.load(G_ptr + bh * Tp + t0 + r)
        GC = tl.load(G_ptr + bh * Tp + t0 + 63)
        pm = _ws(dVn_ptr, bh, t0, Tp, V, BV, vb * BV)
        dVn = _ld(pm).to(tl.float32) + tl.exp(GC - G)[:, None] * tl.dot(k, dH.to(k.dtype))
        _st(pm, dVn)
        dH = tl.dot(qT, (do * (scale * tl.exp(G))[:, None]).to(qT.dtype), acc=tl.exp(GC) * dH)
        dH = tl.dot(wT, (-dVn).to(wT.dtype), acc=dH)  # accumulate in place: no extra tiles
    _st(_state(dh0_ptr, bh * K * V, 0, vb * BV, K, V, BK, BV), dH)


@triton.jit
def _bwd_state_kernel(q_ptr, k_ptr, do_ptr, G_ptr, Hs_ptr, dHs_ptr, Vn_ptr, dVn_ptr,
                      dq_ptr, dkp_ptr, dW_ptr, dG_ptr, scale, T, N, H: tl.constexpr,
                      K: tl.constexpr, V: tl.constexpr, BV: tl.constexpr, BKS: tl.constexpr):
    """Backward step 3a, parallel over (BKS-wide K block, chunk, b, h), summing over V blocks: the grads through the
    chunk's states (H entering, dH = grad of the state leaving) and its intra-chunk attention M = Tril(Q K^T o Gam)
    with dM = scale dO Vn^T: dq = scale diag(e^G) dO H^T + (dM o Gam) K (final), dW = -dVn H^T,
    dk = diag(e^{G_C-G}) Vn dH^T + (dM o Gam)^T Q (partial: 3b adds the WY part), dG parts."""
    kb, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h, Tp, t0, r = _chunk(n, bh, N, H)
    k0 = kb * BKS
    dq = tl.zeros([64, BKS], dtype=tl.float32)
    dw = tl.zeros([64, BKS], dtype=tl.float32)
    dk = tl.zeros([64, BKS], dtype=tl.float32)
    dMt = tl.zeros([64, 64], dtype=tl.float32)  # Vn dO^T = (dO Vn^T)^T
    dGC = 0.
    for c0 in range(0, V, BV):
        HT = _ld(_state(Hs_ptr, (bh * N + n) * K * V, k0, c0, K, V, BKS, BV, TR=True))  # [BV, BKS] = H^T
        dHT = _ld(_state(dHs_ptr, (bh * N + n) * K * V, k0, c0, K, V, BKS, BV, TR=True))
        do = _ld(_rows(do_ptr, b, h, t0, T, H, V, BV, c0))
        doT = _ld(_rows(do_ptr, b, h, t0, T, H, V, BV, c0, TR=True))
        vn = _ld(_ws(Vn_ptr, bh, t0, Tp, V, BV, c0))
        dvn = _ld(_ws(dVn_ptr, bh, t0, Tp, V, BV, c0))
        dq += tl.dot(do, HT)              # products in the workspaces' dtype (exact for bf16 ones)
        dw += tl.dot(dvn, HT.to(dvn.dtype))
        dk += tl.dot(vn, dHT.to(vn.dtype))
        dMt += tl.dot(vn, doT.to(vn.dtype))
        dGC += tl.sum(tl.sum(HT.to(tl.float32) * dHT.to(tl.float32), 1), 0)
    G = tl.load(G_ptr + bh * Tp + t0 + r)
    GC = tl.load(G_ptr + bh * Tp + t0 + 63)
    q = _ld(_rows(q_ptr, b, h, t0, T, H, K, BKS, k0))
    k = _ld(_rows(k_ptr, b, h, t0, T, H, K, BKS, k0))
    qT = _ld(_rows(q_ptr, b, h, t0, T, H, K, BKS, k0, TR=True))
    kT = _ld(_rows(k_ptr, b, h, t0, T, H, K, BKS, k0, TR=True))
    dq = dq * (scale * tl.exp(G))[:, None]   # through e^G Q H
    dk = dk * tl.exp(GC - G)[:, None]        # through e^{G_C - G} K
    sk = tl.sum(dk * k.to(tl.float32), 1)
    dG = tl.sum(dq * q.to(tl.float32), 1)    # through e^G Q H: every t <= i
    # intra-chunk attention: Z^T = (dM o Gam)^T, built transposed so no product is transposed
    upper = r[:, None] <= r[None, :]
    Zt = tl.where(upper, scale * dMt, 0.) * _decay(-G, -G, upper)
    Zgt = Zt * tl.dot(k, qT)                 # (dM o M)^T restricted to this K block: [key a, query b]
    # dg_t directly for the terms whose decay spans (i, t]: e^{G_C - G_i} K gives dg_t the sk_i of i < t, the attention
    # the pairs a < t <= b. As a reverse cumsum of +-parts of dG (as the WY terms are), their O(1) parts (sk at the
    # chunk's end, the diagonal of Zgt) would cancel, and the fp32 rounding of that cancellation swamps dg when the
    # decay is strong (dg ~ 1e-6 at g < -8)
    dG += tl.where(r == 63, dGC * tl.exp(GC), 0.)   # through e^{G_C} H: every t
    dgd = tl.sum(tl.where(r[None, :] < r[:, None], sk[None, :], 0.), 1)
    R = tl.cumsum(Zgt, 1, reverse=True)             # R[a, t] = sum over b >= t of Zgt[a, b]
    dgd += tl.sum(tl.where(r[:, None] < r[None, :], R, 0.), 0)
    tl.store(dG_ptr + ((bh * tl.num_programs(0) + kb) * 2 + 1) * Tp + t0 + r, dgd)
    Zc = Zt.to(k.dtype)
    dk += tl.dot(Zc, q)
    dq += tl.trans(tl.dot(kT, Zc))           # (Z K)^T computed, transposed for the store only
    _st(_rows(dq_ptr, b, h, t0, T, H, K, BKS, k0), dq)
    _st(_ws(dkp_ptr, bh, t0, Tp, K, BKS, k0), dk)
    _st(_ws(dW_ptr, bh, t0, Tp, K, BKS, k0), -dw)
    tl.store(dG_ptr + (bh * tl.num_programs(0) + kb) * 2 * Tp + t0 + r, dG)


@triton.jit
def _k_and_dw(k_ptr, dW_ptr, b, h, bh, t0, T, Tp, H: tl.constexpr, K: tl.constexpr, c0):
    """The WY kernel's tiles at the K columns c0..c0 + 63: k, k^T and dW (fp32)."""
    k = _ld(_rows(k_ptr, b, h, t0, T, H, K, 64, c0))
    kT = _ld(_rows(k_ptr, b, h, t0, T, H, K, 64, c0, TR=True))
    return k, kT, _ld(_ws(dW_ptr, bh, t0, Tp, K, 64, c0)).to(tl.float32)


@triton.jit
def _bwd_wy_kernel(k_ptr, v_ptr, beta_ptr, G_ptr, A_ptr, dVn_ptr, dW_ptr, dkp_ptr, dGp_ptr, dk_ptr, dv_ptr, dg_ptr,
                   dbeta_ptr, T, N, NKS, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr):
    """Backward step 3b, parallel over chunks: through W = A diag(beta e^G) K, U = A diag(beta) V (dU = dVn) and
    A = (I + L)^-1: dA = dW (diag(beta e^G) K)^T + dU (diag(beta) V)^T, dv = diag(beta) A^T dU, dL = -A^T dA A^T,
    then dk (adds 3a's), dbeta, dG from W, U and L = StrictTril(diag(beta)(Gam o K K^T)); dg = reverse cumsum of dG
    within the chunk + the parts 3a summed directly."""
    n, bh = tl.program_id(0), tl.program_id(1)
    b, h, Tp, t0, r = _chunk(n, bh, N, H)
    G = tl.load(G_ptr + bh * Tp + t0 + r)
    eG = tl.exp(G)
    beta = _vec(beta_ptr, b, h, t0, T, H)
    At = tl.load(A_ptr + (bh * Tp + t0 + r[None, :]) * 64 + r[:, None])
    dG = tl.zeros([64], dtype=tl.float32)
    dgd = tl.zeros([64], dtype=tl.float32)   # parts of dg already summed (3a)
    for kb in range(NKS):  # the state kernel's K blocks
        dG += tl.load(dGp_ptr + (bh * NKS + kb) * 2 * Tp + t0 + r)
        dgd += tl.load(dGp_ptr + ((bh * NKS + kb) * 2 + 1) * Tp + t0 + r)
    dbeta = tl.zeros([64], dtype=tl.float32)
    dA = tl.zeros([64, 64], dtype=tl.float32)
    for c0 in range(0, V, 64):
        dvn = _ld(_ws(dVn_ptr, bh, t0, Tp, V, 64, c0)).to(tl.float32)
        v = _ld(_rows(v_ptr, b, h, t0, T, H, V, 64, c0)).to(tl.float32)
        vT = _ld(_rows(v_ptr, b, h, t0, T, H, V, 64, c0, TR=True)).to(tl.float32)
        dvb = tl.dot(At, dvn)                      # grad of diag(beta) V
        _st(_rows(dv_ptr, b, h, t0, T, H, V, 64, c0), beta[:, None] * dvb)
        dbeta += tl.sum(dvb * v, 1)
        dA += tl.dot(dvn, vT * beta[None, :])
    bg = beta * eG
    kk = tl.zeros([64, 64], dtype=tl.float32)
    for c0 in range(0, K, 64):
        k, kT, dw = _k_and_dw(k_ptr, dW_ptr, b, h, bh, t0, T, Tp, H, K, c0)
        kk += tl.dot(k, kT)
        dA += tl.dot(dw, kT.to(tl.float32) * bg[None, :])
    strict = r[:, None] > r[None, :]
    gs = _decay(G, G, strict)
    dL = tl.where(strict, -tl.dot(tl.dot(At, dA), At), 0.)
    w = dL * gs * kk
    dbeta += tl.sum(w, 1)
    y = beta[:, None] * w
    dG += tl.sum(y, 1) - tl.sum(y, 0)
    P = dL * gs * beta[:, None]                    # grad of the K K^T entries
    for c0 in range(0, K, 64):
        k, kT, dw = _k_and_dw(k_ptr, dW_ptr, b, h, bh, t0, T, Tp, H, K, c0)
        dkb = tl.dot(At, dw)                           # grad of diag(beta e^G) K
        s = tl.sum(dkb * k.to(tl.float32), 1)
        dbeta += eG * s
        dG += bg * s
        Pc = P.to(k.dtype)
        dk = (_ld(_ws(dkp_ptr, bh, t0, Tp, K, 64, c0)).to(tl.float32) + bg[:, None] * dkb + tl.dot(Pc, k)
              + tl.trans(tl.dot(kT, Pc)))          # (P^T K)^T computed, transposed for the store
        _st(_rows(dk_ptr, b, h, t0, T, H, K, 64, c0), dk)
    dg = tl.cumsum(dG, 0, reverse=True) + dgd
    t = t0 + r
    tl.store(dg_ptr + (b * T + t) * H + h, dg.to(dg_ptr.dtype.element_ty), mask=t < T)
    tl.store(dbeta_ptr + (b * T + t) * H + h, dbeta.to(dbeta_ptr.dtype.element_ty), mask=t < T)



# ---- Launches and custom ops -----------------------------------------------------------------------------------------

def _pow2(n):
    """The smallest power of two >= n (triton.next_power_of_2, here also without triton)."""
    return 1 << (n - 1).bit_length()


def launch_config(K, V, fp32=False):
    """Block size over V and warps / stages per kernel; depends on the head dims and dtype only (never T).
    study/bench.py's `cfg` key overrides it to time a setting; the GPU tests check a setting against float64."""
    big = K > 128 or fp32  # bwd scan: 1 stage (shared memory) for BK = 256 or fp32 tiles
    # fwd scan: 2 stages at every bf16 K (faster than 1, also at K > 128)
    fwd = dict(BV=64, num_warps=8 if fp32 else 4, num_stages=1 if fp32 else 2)
    bwd = dict(BV=64, num_warps=8 if big else 4, num_stages=1 if big else 2)
    # prep: the inverse's products in tf32x3, fp32-accurate: A feeds every output and gradient, and plain tf32 saves
    # next to nothing while it moves dbeta's errors by an order of magnitude.
    # out: Q K^T and Q H in K slices of 64 above K 128 (a fraction of one slice's shared memory, and faster); one slice
    # at K <= 128, where two are slower
    out = dict(BV=64, BKC=64 if K > 128 else max(64, _pow2(K)), num_warps=4)
    # state: K in blocks of BKS = 64, each block a program that reads dO, Vn and dVn again
    return dict(prep=dict(num_warps=4, INV="tf32x3"), fwd=fwd, out=out, bwd=bwd, local=dict(BV=64, num_warps=4),
                state=dict(BV=64, BKS=64, num_warps=4, num_stages=2), wy=dict(num_warps=4))


def _fwd(q, k, v, g, beta, scale, h0):
    """The forward launches. Returns o, the final state and the workspaces the backward needs."""
    (B, T, H, K), V = q.shape, v.shape[-1]
    N, BH = triton.cdiv(T, 64), B * H
    Tp, BK = N * 64, max(64, _pow2(K))
    q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
    f32, ws = dict(device=q.device, dtype=torch.float32), dict(device=q.device, dtype=k.dtype)
    cfg = launch_config(K, V, k.dtype == torch.float32)
    G, A = torch.empty(BH, Tp, **f32), torch.empty(BH, Tp, 64, **f32)
    W, U = torch.empty(BH, Tp, K, **ws), torch.empty(BH, Tp, V, **ws)
    _prep_kernel[(N, BH)](k, v, g, beta, G, A, W, U, T, N, H, K, V, **cfg["prep"])
    hT, Hs, Vn = torch.empty(B, H, K, V, **f32), torch.empty(BH, N, K, V, **ws), torch.empty(BH, Tp, V, **ws)
    c = cfg["fwd"]
    _fwd_scan_kernel[(triton.cdiv(V, c["BV"]), BH)](k, G, W, U, hT if h0 is None else h0, hT, Hs, Vn, T, N, H, K, V, BK,
                                                    HAS_H0=h0 is not None, **c)
    del U
    o = torch.empty_like(v)
    c = cfg["out"]
    _fwd_out_kernel[(triton.cdiv(V, c["BV"]), N, BH)](q, k, G, Hs, Vn, o, scale, T, N, H, K, V, BK, **c)
    return o, hT, G, A, W, Hs, Vn


def _bwd(do, dhT, q, k, v, beta, G, A, W, Hs, Vn, scale, g_dtype):
    """The backward launches (do / dhT None: zero). Returns dq, dk, dv, dg, dbeta, dh0."""
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    (B, T, H, K), V = q.shape, v.shape[-1]
    BH, N, Tp, BK = B * H, Hs.shape[1], G.shape[1], max(64, _pow2(K))
    do = torch.zeros_like(v) if do is None else do.contiguous()
    f32, ws = dict(device=q.device, dtype=torch.float32), dict(device=q.device, dtype=k.dtype)
    cfg = launch_config(K, V, k.dtype == torch.float32)
    dHs, dVn, dh0 = torch.empty_like(Hs), torch.empty(BH, Tp, V, **f32), torch.empty(B, H, K, V, **f32)  # dVn: fp32
    c = cfg["local"]
    _bwd_local_kernel[(triton.cdiv(V, c["BV"]), N, BH)](q, k, do, G, dVn, scale, T, N, H, K, V, BK, **c)
    c = cfg["bwd"]
    _bwd_scan_kernel[(triton.cdiv(V, c["BV"]), BH)](q, k, do, G, W, dh0 if dhT is None else dhT.contiguous(), dh0, dHs,
                                                    dVn, scale, T, N, H, K, V, BK, HAS_DHT=dhT is not None, **c)
    dq, dkp, dW = torch.empty_like(q), torch.empty(BH, Tp, K, **ws), torch.empty(BH, Tp, K, **ws)
    NKS = triton.cdiv(K, cfg["state"]["BKS"])  # the state kernel's K blocks
    dGp = torch.empty(BH, NKS, 2, Tp, **f32)  # per K block: dG (reverse-cumsummed), direct dg parts
    _bwd_state_kernel[(NKS, N, BH)](q, k, do, G, Hs, dHs, Vn, dVn, dq, dkp, dW, dGp,
                                    scale, T, N, H, K, V, **cfg["state"])
    del dHs
    dk, dv, dbeta = torch.empty_like(k), torch.empty_like(v), torch.empty_like(beta)
    dg = torch.empty(B, T, H, device=q.device, dtype=g_dtype)
    _bwd_wy_kernel[(N, BH)](k, v, beta, G, A, dVn, dW, dkp, dGp, dk, dv, dg, dbeta, T, N, NKS, H, K, V, **cfg["wy"])
    return dq, dk, dv, dg, dbeta, dh0


# Two custom ops that torch.compile keeps opaque (the fake impls give the shapes) and traces around, so the model's
# elementwise work around the call fuses and no graph break splits the graph. The forward also returns the workspaces
# the backward needs (a custom op cannot save intermediates); they are marked non-differentiable.
_F = "gdn::chunk_gdr_fwd", "(Tensor q, Tensor k, Tensor v, Tensor g, Tensor beta, float scale, " \
    "Tensor? h0) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
_B = "gdn::chunk_gdr_bwd", "(Tensor? do, Tensor? dhT, Tensor q, Tensor k, Tensor v, Tensor beta, " \
    "Tensor G, Tensor A, Tensor W, Tensor Hs, Tensor Vn, float scale, ScalarType g_dtype) " \
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
_fwd_op = torch.library.custom_op(_F[0], _fwd, mutates_args=(), schema=_F[1])
_bwd_op = torch.library.custom_op(_B[0], _bwd, mutates_args=(), schema=_B[1])


@_fwd_op.register_fake
def _(q, k, v, g, beta, scale, h0):
    (B, T, H, K), V = q.shape, v.shape[-1]
    N, BH, dt, f32 = (T + 63) // 64, B * H, k.dtype, torch.float32
    e = lambda *s, dtype: q.new_empty(s, dtype=dtype)  # noqa: E731
    return (e(B, T, H, V, dtype=v.dtype), e(B, H, K, V, dtype=f32), e(BH, N * 64, dtype=f32),
            e(BH, N * 64, 64, dtype=f32), e(BH, N * 64, K, dtype=dt), e(BH, N, K, V, dtype=dt),
            e(BH, N * 64, V, dtype=dt))


@_bwd_op.register_fake
def _(do, dhT, q, k, v, beta, G, A, W, Hs, Vn, scale, g_dtype):
    (B, T, H, K), V = q.shape, v.shape[-1]
    c = lambda x: torch.empty_like(x, memory_format=torch.contiguous_format)  # noqa: E731
    return (c(q), c(k), c(v), q.new_empty(B, T, H, dtype=g_dtype), c(beta),
            q.new_empty(B, H, K, V, dtype=torch.float32))


def _setup(ctx, inputs, output):
    q, k, v, g, beta, scale, h0 = inputs
    ctx.mark_non_differentiable(*output[2:])
    ctx.set_materialize_grads(False)  # unused outputs' grads stay None, no zero tensors
    ctx.save_for_backward(q, k, v, beta, *output[2:])
    ctx.scale, ctx.has_h0, ctx.g_dtype = scale, h0 is not None, g.dtype


def _backward(ctx, do, dhT, *_):
    *grads, dh0 = _bwd_op(do, dhT, *ctx.saved_tensors, ctx.scale, ctx.g_dtype)
    return *grads, None, (dh0 if ctx.has_h0 else None)


_fwd_op.register_autograd(_backward, setup_context=_setup)


# ---- Public entry ----------------------------------------------------------------------------------------------------

def _fp32_past_shared_memory(q):
    """fp32 inputs with K > 128: the Triton backward scan's tiles need more shared memory than a GPU has."""
    return q.dtype == torch.float32 and q.shape[-1] > 128


def triton_takes(K, V):
    """The head dims the Triton kernels take: multiples of 16, K (d_k) in 16..256 and V (d_v) in 16..512."""
    return K % 16 == 0 and V % 16 == 0 and 16 <= K <= 256 and 16 <= V <= 512


def triton_runs_on(device_type):
    """Where the Triton kernels run: CUDA, or any device under TRITON_INTERPRET=1 (Triton's interpreter, slowly)."""
    return device_type == 'cuda' or os.environ.get("TRITON_INTERPRET") == "1"


def _check_inputs(q, k, v, g, beta, initial_state, backend):
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"expected q, k [B, T, H, K] and v [B, T, H, V] with equal B, T, H; got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if g.shape != q.shape[:3] or beta.shape != q.shape[:3]:
        raise ValueError(f"expected g and beta of shape [B, T, H] = {tuple(q.shape[:3])}; got "
                         f"g {tuple(g.shape)}, beta {tuple(beta.shape)}")
    (B, _, H, K), V = q.shape, v.shape[-1]
    if initial_state is not None and initial_state.shape != (B, H, K, V):
        raise ValueError(f"initial_state must be [B, H, K, V] = {(B, H, K, V)}; got {tuple(initial_state.shape)}")
    if backend == "triton":
        if not q.dtype == k.dtype == v.dtype:
            raise ValueError(f"the triton backend takes q, k and v in one dtype; got {q.dtype}, {k.dtype}, "
                             f"{v.dtype}: cast them alike (autocast runs some norms in fp32)")
        if not HAS_TRITON:
            raise ValueError("backend='triton' needs the triton package; install it or use backend='torch'")
        if not triton_takes(K, V):
            raise ValueError(f"the triton backend supports head dims K (d_k) in 16..256 and V (d_v) in 16..512, both "
                             f"multiples of 16; got K={K}, V={V}. Pad the head dims or use backend='torch'")
        if q.is_cuda and _fp32_past_shared_memory(q):
            raise ValueError(f"the triton backend's fp32 backward needs more shared memory than a GPU "
                             f"has at K={K} > 128: pass bf16 inputs (autocast) or use backend='torch'")
        if not triton_runs_on(q.device.type):
            raise ValueError("backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU "
                             "testing); use backend='torch' on CPU")
    elif backend != "torch":
        raise ValueError(f"backend must be '' (the best available), 'torch' or 'triton'; got {backend!r}")


def chunk_gated_delta_rule(q, k, v, g, beta, scale, initial_state=None, output_final_state=False, backend=""):
    """Gated delta rule over a whole sequence. Returns (o [B, T, H, V] in v's dtype, final_state [B, H, K, V] fp32
    (float64 for float64 inputs on the torch path), or None unless output_final_state). backend: '' (or None): triton
    for CUDA tensors when triton is importable, else torch; 'torch'; 'triton' (on CPU only under TRITON_INTERPRET=1).
    fp32 inputs with K > 128 default to torch: the Triton backward's fp32 tiles would need more shared memory than an
    H100 has (bf16 at K = 256 fits)."""
    if not backend:
        backend = "triton" if (HAS_TRITON and q.is_cuda and not _fp32_past_shared_memory(q)) else "torch"
    _check_inputs(q, k, v, g, beta, initial_state, backend)
    if backend == "torch":
        return _torch_chunk_gdr(q, k, v, g, beta, scale, initial_state, output_final_state)
    # contiguous here, not in the launches: the copy is saved for the backward, and under torch.compile it is traced
    # (inductor can write the producer's output in this layout)
    q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
    h0 = None if initial_state is None else initial_state.float().contiguous()
    o, hT = _fwd_op(q, k, v, g, beta, float(scale), h0)[:2]
    return o, (hT if output_final_state else None)
