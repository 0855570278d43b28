"""Chunked gated delta rule (Gated DeltaNet), forward and backward.

One public entry, `chunk_gated_delta_rule`, with two backends:
  * "triton": fused Triton kernels (CUDA), forward and backward registered as two custom ops
    (gdn::chunk_gdr_fwd / _bwd, torch.library.custom_op + register_fake + register_autograd), so
    torch.compile traces around the call without a graph break and fuses the model's elementwise
    work across it (the default). GDR_CUSTOM_OP=0 selects the earlier path, the same launches in an
    autograd.Function behind torch.compiler.disable (one graph break per layer), kept for A/B runs.
    Both give the same values and gradients, bit for bit, on CPU under TRITON_INTERPRET=1 (tests); on
    an H200 the compiled model's gradients against float64 are the same for both (bench.py --compiled)
    and a compiled width-768 train.py step takes 48.4 ms instead of 63.2 (BENCH.md, run 5);
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
    if os.environ.get("TRITON_INTERPRET") == "1":  # CPU interpreter (tests): with numpy >= 2.3 its
        import triton.runtime.interpreter as _ti  # int(tensor) fails on 1-element arrays, which
        _patch = _ti._patch_lang_tensor           # breaks `range(runtime_int)`; index via .item()

        def _patch_lang_tensor(tensor, scope):
            _patch(tensor, scope)
            scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))
        _ti._patch_lang_tensor = _patch_lang_tensor
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
        if q.is_cuda and _fp32_past_shared_memory(q):
            raise ValueError(f"the triton backend's fp32 backward needs more shared memory than a GPU "
                             f"has at K={K} > 128: pass bf16 inputs (autocast) or use backend='torch'")
        if not (q.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
            raise ValueError("backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU "
                             "testing); use backend='torch' on CPU")
    elif backend != "torch":
        raise ValueError(f"backend must be None, 'torch' or 'triton'; got {backend!r}")


def _fp32_past_shared_memory(q):
    """fp32 inputs with K > 128: the Triton backward scan's tiles need more shared memory than a GPU has."""
    return q.dtype == torch.float32 and q.shape[-1] > 128


def chunk_gated_delta_rule(q, k, v, g, beta, scale, initial_state=None, output_final_state=False,
                           backend=None):
    """Gated delta rule over a whole sequence. Returns (o [B, T, H, V] in v's dtype,
    final_state [B, H, K, V] fp32 (float64 for float64 inputs on the torch path), or None unless
    output_final_state).
    backend: None (triton for CUDA tensors when triton is importable, else torch), "torch", "triton".
    fp32 inputs with K > 128 default to torch: the Triton backward's fp32 tiles would need more
    shared memory than an H100 has (bf16 at K = 256 fits).
    """
    if backend is None:
        backend = "triton" if (HAS_TRITON and q.is_cuda and not _fp32_past_shared_memory(q)) else "torch"
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


# ----------------------------------------------------------------------------------------------
# Triton path: 3 forward kernels (prep, scan, out), 4 backward (local, scan, state, wy), launched by
# _fwd / _bwd (behind the custom ops, or the autograd.Function). Only the two scans are sequential
# (over chunks), and they do the minimum there: 2 products per chunk forward, 3 backward.
# Layout: inputs [B, T, H, D] contiguous (a chunk = 64 rows of stride H*D); workspaces per
# (b, h) = bh: G [BH, Tp], A [BH, Tp, 64] and dVn [BH, Tp, V] fp32, W [BH, Tp, K], U / Vn
# [BH, Tp, V] and dW / dk parts [BH, Tp, K] in the inputs' dtype (GDR_WS=fp32: fp32), the state
# entering each chunk Hs and the grad of the state leaving it dHs [BH, N, K, V] in the inputs'
# dtype. Products: bf16 operands (inputs, workspaces, states) or fp32 ones (tf32; tf32x3 in the
# inverse), always fp32 accumulation.
# Triton 3.6 / Hopper traps, each met or guarded here:
# - tl.trans(tl.dot(...)) fed to another tl.dot miscompiles: no kernel does it; transposed products
#   are computed with swapped operands or transposed loads, tl.trans of a product goes to a store.
# - bf16 products whose shared-memory operand tile is 16 or 32 wide read shared memory out of
#   bounds (compute-sanitizer, H100): every tile is >= 64 wide (K blocks and V blocks of 64, masked).
# ----------------------------------------------------------------------------------------------
# bf16 workspaces (as in fla) move half the bytes of fp32 ones: 1.85 against 2.54 ms fwd+bwd at
# (4, 4096, 16, 128, 128) on an H100, 3.33 against 4.36 at (4, 4096, 6, 256, 512) (BENCH.md, run 4);
# o's error against float64 goes from 1.9e-3 to 2.5e-3. dVn stays fp32: in bf16 it made dbeta's
# error 2.1e-2 instead of 4.1e-3 in a strong-decay case. GDR_WS=fp32 makes every workspace fp32.
WS_HALF = os.environ.get("GDR_WS", "half") != "fp32"

if HAS_TRITON:
    @triton.jit
    def _rows(ptr, b, h, t0, T, H: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, c0=0):
        """Pointers and mask of a [64, BD] tile of a [B, T, H, D] tensor (rows t0.., cols c0..)."""
        t = t0 + tl.arange(0, 64)
        c = c0 + tl.arange(0, BD)
        return (ptr + ((b * T + t[:, None]) * H + h) * D + c[None, :],
                (t[:, None] < T) & (c[None, :] < D))

    @triton.jit
    def _rows_t(ptr, b, h, t0, T, H: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, c0=0):
        """The same tile transposed ([BD, 64]), addressed directly."""
        t = t0 + tl.arange(0, 64)
        c = c0 + tl.arange(0, BD)
        return (ptr + ((b * T + t[None, :]) * H + h) * D + c[:, None],
                (t[None, :] < T) & (c[:, None] < D))

    @triton.jit
    def _ws(ptr, bh, t0, Tp, D: tl.constexpr, BD: tl.constexpr, c0=0):
        """A [64, BD] tile of a [B*H, Tp, D] workspace."""
        t = bh * Tp + t0 + tl.arange(0, 64)
        c = c0 + tl.arange(0, BD)
        return ptr + t[:, None] * D + c[None, :], (c[None, :] < D) & (t[:, None] >= 0)

    @triton.jit
    def _ws_t(ptr, bh, t0, Tp, D: tl.constexpr, BD: tl.constexpr, c0=0):
        """The same tile transposed ([BD, 64])."""
        t = bh * Tp + t0 + tl.arange(0, 64)
        c = c0 + tl.arange(0, BD)
        return ptr + t[None, :] * D + c[:, None], (c[:, None] < D) & (t[None, :] >= 0)

    @triton.jit
    def _state(ptr, off, k0, c0, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr,
               BV: tl.constexpr):
        """A [BK, BV] tile of the [K, V] state at ptr + off."""
        ck, cv = k0 + tl.arange(0, BK), c0 + tl.arange(0, BV)
        return ptr + off + ck[:, None] * V + cv[None, :], (ck[:, None] < K) & (cv[None, :] < V)

    @triton.jit
    def _state_t(ptr, off, k0, c0, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr,
                 BV: tl.constexpr):
        """The same tile transposed ([BV, BK])."""
        ck, cv = k0 + tl.arange(0, BK), c0 + tl.arange(0, BV)
        return ptr + off + ck[None, :] * V + cv[:, None], (ck[None, :] < K) & (cv[:, None] < V)

    @triton.jit
    def _vec(ptr, b, h, t0, T, H: tl.constexpr):
        t = t0 + tl.arange(0, 64)
        return tl.load(ptr + (b * T + t) * H + h, mask=t < T, other=0.).to(tl.float32)

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
        b, h = bh // H, bh % H
        Tp, t0 = N * 64, n * 64
        r = tl.arange(0, 64)
        G = tl.cumsum(_vec(g_ptr, b, h, t0, T, H), 0)
        beta = _vec(beta_ptr, b, h, t0, T, H)
        tl.store(G_ptr + bh * Tp + t0 + r, G)
        kk = tl.zeros([64, 64], dtype=tl.float32)
        for c0 in range(0, K, 64):
            p, m = _rows(k_ptr, b, h, t0, T, H, K, 64, c0)
            k = tl.load(p, mask=m, other=0.)
            p, m = _rows_t(k_ptr, b, h, t0, T, H, K, 64, c0)
            kk += tl.dot(k, tl.load(p, mask=m, other=0.))
        L = beta[:, None] * _decay(G, G, r[:, None] > r[None, :]) * kk
        # Blocked inverse. The four 16 x 16 diagonal blocks D of L, as one [4, 16, 16] tensor, are
        # inverted at once by forward substitution: (I + D)^-1 = E_14^-1 ... E_0^-1 with
        # E_j^-1 = I - d_j e_j^T (d_j: column j of each block below the diagonal).
        i4, i16 = tl.arange(0, 4), tl.arange(0, 16)
        same = i4[:, None, None, None] == i4[None, None, :, None]        # [4, 1, 4, 1]
        D = tl.sum(tl.where(same, tl.reshape(L, (4, 16, 4, 16)), 0.), 2)  # D[b, r, c]
        X = tl.zeros([4, 16, 16], dtype=tl.float32) + tl.where(i16[:, None] == i16[None, :], 1., 0.)
        for j in range(15):
            dcol = tl.sum(tl.where(i16[None, None, :] == j, D, 0.), 2)    # D[b, :, j]
            xrow = tl.sum(tl.where(i16[None, :, None] == j, X, 0.), 1)    # X[b, j, :]
            X -= dcol[:, :, None] * xrow[:, None, :]
        X = tl.reshape(tl.where(same, X[:, :, None, :], 0.), (64, 64))   # block-diagonal [64, 64]
        # Then I + L = (I + D)(I + Nb), Nb = X (L - D) strictly block-lower so Nb^4 = 0:
        # A = (I - Nb)(I + Nb^2) X. Products in INV, tf32x3 (fp32-accurate): A feeds everything.
        Nb = tl.dot(X, tl.where(r[:, None] // 16 == r[None, :] // 16, 0., L), input_precision=INV)
        Y = X + tl.dot(tl.dot(Nb, Nb, input_precision=INV), X, input_precision=INV)
        A = Y - tl.dot(Nb, Y, input_precision=INV)
        tl.store(A_ptr + (bh * Tp + t0 + r[:, None]) * 64 + r[None, :], A)
        bg = beta * tl.exp(G)
        for c0 in range(0, K, 64):
            p, m = _rows(k_ptr, b, h, t0, T, H, K, 64, c0)
            kb = tl.load(p, mask=m, other=0.).to(tl.float32) * bg[:, None]
            p, m = _ws(W_ptr, bh, t0, Tp, K, 64, c0)
            tl.store(p, tl.dot(A, kb).to(W_ptr.dtype.element_ty), mask=m)
        for c0 in range(0, V, 64):
            p, m = _rows(v_ptr, b, h, t0, T, H, V, 64, c0)
            vb = tl.load(p, mask=m, other=0.).to(tl.float32) * beta[:, None]
            p, m = _ws(U_ptr, bh, t0, Tp, V, 64, c0)
            tl.store(p, tl.dot(A, vb).to(U_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _fwd_scan_kernel(k_ptr, G_ptr, W_ptr, U_ptr, h0_ptr, hT_ptr, Hs_ptr, Vn_ptr, T, N,
                         H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr,
                         BV: tl.constexpr, HAS_H0: tl.constexpr):
        """Forward step 2, sequential over chunks, parallel over (V block, b, h): store H (the state
        entering the chunk), Vn = U - W H (stored), H <- e^{G_C} H + (diag(e^{G_C - G}) K)^T Vn."""
        vb, bh = tl.program_id(0), tl.program_id(1)
        b, h = bh // H, bh % H
        Tp = N * 64
        r = tl.arange(0, 64)
        hp, hm = _state(h0_ptr, bh * K * V, 0, vb * BV, K, V, BK, BV)
        if HAS_H0:
            Hst = tl.load(hp, mask=hm, other=0.)
        else:
            Hst = tl.zeros([BK, BV], dtype=tl.float32)
        for n in range(N):
            t0 = n * 64
            p, m = _state(Hs_ptr, (bh * N + n) * K * V, 0, vb * BV, K, V, BK, BV)
            tl.store(p, Hst.to(Hs_ptr.dtype.element_ty), mask=m)
            p, m = _ws(W_ptr, bh, t0, Tp, K, BK)
            w = tl.load(p, mask=m, other=0.)
            p, m = _ws(U_ptr, bh, t0, Tp, V, BV, vb * BV)
            u = tl.load(p, mask=m, other=0.).to(tl.float32)
            p, m = _rows_t(k_ptr, b, h, t0, T, H, K, BK)
            kT = tl.load(p, mask=m, other=0.)
            G = tl.load(G_ptr + bh * Tp + t0 + r)
            GC = tl.load(G_ptr + bh * Tp + t0 + 63)
            Vn = u - tl.dot(w, Hst.to(w.dtype))
            p, m = _ws(Vn_ptr, bh, t0, Tp, V, BV, vb * BV)
            tl.store(p, Vn.to(Vn_ptr.dtype.element_ty), mask=m)
            Hst = tl.dot(kT, (Vn * tl.exp(GC - G)[:, None]).to(kT.dtype), acc=tl.exp(GC) * Hst)
        hp, hm = _state(hT_ptr, bh * K * V, 0, vb * BV, K, V, BK, BV)
        tl.store(hp, Hst, mask=hm)

    @triton.jit
    def _fwd_out_kernel(q_ptr, k_ptr, G_ptr, Hs_ptr, Vn_ptr, o_ptr, scale, T, N,
                        H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr,
                        BV: tl.constexpr, BKC: tl.constexpr):
        """Forward step 3, parallel over (V block, chunk, b, h):
        O = scale (diag(e^G) Q H + Tril(Q K^T o Gam) Vn). Q K^T and Q H are summed over K in
        slices of BKC columns (launch_config): smaller dot operands, less shared memory."""
        vb, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        b, h = bh // H, bh % H
        Tp, t0 = N * 64, n * 64
        r = tl.arange(0, 64)
        qk = tl.zeros([64, 64], dtype=tl.float32)
        qh = tl.zeros([64, BV], dtype=tl.float32)
        for k0 in tl.static_range(0, K, BKC):
            p, m = _rows(q_ptr, b, h, t0, T, H, K, BKC, k0)
            q = tl.load(p, mask=m, other=0.)
            p, m = _rows_t(k_ptr, b, h, t0, T, H, K, BKC, k0)
            qk = tl.dot(q, tl.load(p, mask=m, other=0.), qk)
            p, m = _state(Hs_ptr, (bh * N + n) * K * V, k0, vb * BV, K, V, BKC, BV)
            qh = tl.dot(q, tl.load(p, mask=m, other=0.).to(q.dtype), qh)
        p, m = _ws(Vn_ptr, bh, t0, Tp, V, BV, vb * BV)
        vn = tl.load(p, mask=m, other=0.).to(tl.float32)
        G = tl.load(G_ptr + bh * Tp + t0 + r)
        M = _decay(G, G, r[:, None] >= r[None, :]) * qk
        o = scale * (tl.exp(G)[:, None] * qh + tl.dot(M, vn))
        p, m = _rows(o_ptr, b, h, t0, T, H, V, BV, vb * BV)
        tl.store(p, o.to(o_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _bwd_local_kernel(q_ptr, k_ptr, do_ptr, G_ptr, dVn_ptr, scale, T, N, H: tl.constexpr,
                          K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
        """Backward step 1, parallel over (V block, chunk, b, h): the intra-chunk part of the grad
        of Vn, scale Tril(Q K^T o Gam)^T dO, stored in dVn for the scan to complete."""
        vb, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        b, h = bh // H, bh % H
        Tp, t0 = N * 64, n * 64
        r = tl.arange(0, 64)
        p, m = _rows(k_ptr, b, h, t0, T, H, K, BK)
        k = tl.load(p, mask=m, other=0.)
        p, m = _rows_t(q_ptr, b, h, t0, T, H, K, BK)
        qT = tl.load(p, mask=m, other=0.)
        p, m = _rows(do_ptr, b, h, t0, T, H, V, BV, vb * BV)
        do = tl.load(p, mask=m, other=0.).to(tl.float32)
        G = tl.load(G_ptr + bh * Tp + t0 + r)
        Mt = _decay(-G, -G, r[:, None] <= r[None, :]) * tl.dot(k, qT)  # M^T
        p, m = _ws(dVn_ptr, bh, t0, Tp, V, BV, vb * BV)
        tl.store(p, (scale * tl.dot(Mt, do)).to(dVn_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _bwd_scan_kernel(q_ptr, k_ptr, do_ptr, G_ptr, W_ptr, dhT_ptr, dh0_ptr, dHs_ptr, dVn_ptr,
                         scale, T, N, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                         BK: tl.constexpr, BV: tl.constexpr, HAS_DHT: tl.constexpr):
        """Backward step 2, sequential over chunks in reverse, parallel over (V block, b, h): carry
        dH, the grad of the state leaving the chunk (stored per chunk);
        dVn += diag(e^{G_C-G}) K dH (completing step 1's part, stored),
        dH <- e^{G_C} dH + scale (diag(e^G) Q)^T dO - W^T dVn."""
        vb, bh = tl.program_id(0), tl.program_id(1)
        b, h = bh // H, bh % H
        Tp = N * 64
        r = tl.arange(0, 64)
        hp, hm = _state(dhT_ptr, bh * K * V, 0, vb * BV, K, V, BK, BV)
        if HAS_DHT:
            dH = tl.load(hp, mask=hm, other=0.)
        else:
            dH = tl.zeros([BK, BV], dtype=tl.float32)
        for i in range(N):
            n = N - 1 - i
            t0 = n * 64
            p, m = _state(dHs_ptr, (bh * N + n) * K * V, 0, vb * BV, K, V, BK, BV)
            tl.store(p, dH.to(dHs_ptr.dtype.element_ty), mask=m)
            p, m = _rows(k_ptr, b, h, t0, T, H, K, BK)
            k = tl.load(p, mask=m, other=0.)
            p, m = _rows_t(q_ptr, b, h, t0, T, H, K, BK)
            qT = tl.load(p, mask=m, other=0.)
            p, m = _ws_t(W_ptr, bh, t0, Tp, K, BK)
            wT = tl.load(p, mask=m, other=0.)
            p, m = _rows(do_ptr, b, h, t0, T, H, V, BV, vb * BV)
            do = tl.load(p, mask=m, other=0.)
            G = tl.load(G_ptr + bh * Tp + t0 + r)
            GC = tl.load(G_ptr + bh * Tp + t0 + 63)
            p, m = _ws(dVn_ptr, bh, t0, Tp, V, BV, vb * BV)
            dVn = (tl.load(p, mask=m, other=0.).to(tl.float32)
                   + tl.exp(GC - G)[:, None] * tl.dot(k, dH.to(k.dtype)))
            tl.store(p, dVn.to(dVn_ptr.dtype.element_ty), mask=m)
            dH = tl.dot(qT, (do * (scale * tl.exp(G))[:, None]).to(qT.dtype), acc=tl.exp(GC) * dH)
            dH = tl.dot(wT, (-dVn).to(wT.dtype), acc=dH)  # accumulate in place: no extra tiles
        hp, hm = _state(dh0_ptr, bh * K * V, 0, vb * BV, K, V, BK, BV)
        tl.store(hp, dH, mask=hm)

    @triton.jit
    def _bwd_state_kernel(q_ptr, k_ptr, do_ptr, G_ptr, Hs_ptr, dHs_ptr, Vn_ptr, dVn_ptr,
                          dq_ptr, dkp_ptr, dW_ptr, dG_ptr, scale, T, N, H: tl.constexpr,
                          K: tl.constexpr, V: tl.constexpr, BV: tl.constexpr, BKS: tl.constexpr):
        """Backward step 3a, parallel over (BKS-wide K block, chunk, b, h), summing over V blocks:
        the grads through the chunk's states (H entering, dH = grad of the state leaving) and its
        intra-chunk attention M = Tril(Q K^T o Gam) with dM = scale dO Vn^T:
        dq = scale diag(e^G) dO H^T + (dM o Gam) K (final), dW = -dVn H^T,
        dk = diag(e^{G_C-G}) Vn dH^T + (dM o Gam)^T Q (partial: 3b adds the WY part), dG parts."""
        kb, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        b, h = bh // H, bh % H
        Tp, t0, k0 = N * 64, n * 64, kb * BKS
        r = tl.arange(0, 64)
        dq = tl.zeros([64, BKS], dtype=tl.float32)
        dw = tl.zeros([64, BKS], dtype=tl.float32)
        dk = tl.zeros([64, BKS], dtype=tl.float32)
        dMt = tl.zeros([64, 64], dtype=tl.float32)  # Vn dO^T = (dO Vn^T)^T
        dGC = 0.
        for c0 in range(0, V, BV):
            p, m = _state_t(Hs_ptr, (bh * N + n) * K * V, k0, c0, K, V, BKS, BV)
            HT = tl.load(p, mask=m, other=0.)  # [BV, BKS] = H^T
            p, m = _state_t(dHs_ptr, (bh * N + n) * K * V, k0, c0, K, V, BKS, BV)
            dHT = tl.load(p, mask=m, other=0.)
            p, m = _rows(do_ptr, b, h, t0, T, H, V, BV, c0)
            do = tl.load(p, mask=m, other=0.)
            p, m = _rows_t(do_ptr, b, h, t0, T, H, V, BV, c0)
            doT = tl.load(p, mask=m, other=0.)
            p, m = _ws(Vn_ptr, bh, t0, Tp, V, BV, c0)
            vn = tl.load(p, mask=m, other=0.)
            p, m = _ws(dVn_ptr, bh, t0, Tp, V, BV, c0)
            dvn = tl.load(p, mask=m, other=0.)
            dq += tl.dot(do, HT)              # products in the workspaces' dtype (exact for bf16 ones)
            dw += tl.dot(dvn, HT.to(dvn.dtype))
            dk += tl.dot(vn, dHT.to(vn.dtype))
            dMt += tl.dot(vn, doT.to(vn.dtype))
            dGC += tl.sum(tl.sum(HT.to(tl.float32) * dHT.to(tl.float32), 1), 0)
        G = tl.load(G_ptr + bh * Tp + t0 + r)
        GC = tl.load(G_ptr + bh * Tp + t0 + 63)
        p, m = _rows(q_ptr, b, h, t0, T, H, K, BKS, k0)
        q = tl.load(p, mask=m, other=0.)
        p, m = _rows(k_ptr, b, h, t0, T, H, K, BKS, k0)
        k = tl.load(p, mask=m, other=0.)
        p, m = _rows_t(q_ptr, b, h, t0, T, H, K, BKS, k0)
        qT = tl.load(p, mask=m, other=0.)
        p, m = _rows_t(k_ptr, b, h, t0, T, H, K, BKS, k0)
        kT = tl.load(p, mask=m, other=0.)
        dq = dq * (scale * tl.exp(G))[:, None]   # through e^G Q H
        dk = dk * tl.exp(GC - G)[:, None]        # through e^{G_C - G} K
        sk = tl.sum(dk * k.to(tl.float32), 1)
        dG = tl.sum(dq * q.to(tl.float32), 1)    # through e^G Q H: every t <= i
        # intra-chunk attention: Z^T = (dM o Gam)^T, built transposed so no product is transposed
        upper = r[:, None] <= r[None, :]
        Zt = tl.where(upper, scale * dMt, 0.) * _decay(-G, -G, upper)
        Zgt = Zt * tl.dot(k, qT)                 # (dM o M)^T restricted to this K block: [key a, query b]
        # dg_t directly for the terms whose decay spans (i, t]: e^{G_C - G_i} K gives dg_t the sk_i of
        # i < t, the attention the pairs a < t <= b. Written as a reverse cumsum of +-parts of dG (as the
        # WY terms are), their O(1) parts (sk at the chunk's end, the diagonal of Zgt) cancel, and the fp32
        # rounding of that cancellation swamps dg when the decay is strong (dg ~ 1e-6 at g < -8; relative
        # error 6e-2 at K 160 on an H200, 1.8e-2 at most this way over K 16..256: BENCH.md, runs 5 and 6)
        dG += tl.where(r == 63, dGC * tl.exp(GC), 0.)   # through e^{G_C} H: every t
        dgd = tl.sum(tl.where(r[None, :] < r[:, None], sk[None, :], 0.), 1)
        R = tl.cumsum(Zgt, 1, reverse=True)             # R[a, t] = sum over b >= t of Zgt[a, b]
        dgd += tl.sum(tl.where(r[:, None] < r[None, :], R, 0.), 0)
        tl.store(dG_ptr + ((bh * tl.num_programs(0) + kb) * 2 + 1) * Tp + t0 + r, dgd)
        Zc = Zt.to(k.dtype)
        dk += tl.dot(Zc, q)
        dq += tl.trans(tl.dot(kT, Zc))           # (Z K)^T computed, transposed for the store only
        p, m = _rows(dq_ptr, b, h, t0, T, H, K, BKS, k0)
        tl.store(p, dq.to(dq_ptr.dtype.element_ty), mask=m)
        p, m = _ws(dkp_ptr, bh, t0, Tp, K, BKS, k0)
        tl.store(p, dk.to(dkp_ptr.dtype.element_ty), mask=m)
        p, m = _ws(dW_ptr, bh, t0, Tp, K, BKS, k0)
        tl.store(p, (-dw).to(dW_ptr.dtype.element_ty), mask=m)
        tl.store(dG_ptr + (bh * tl.num_programs(0) + kb) * 2 * Tp + t0 + r, dG)

    @triton.jit
    def _bwd_wy_kernel(k_ptr, v_ptr, beta_ptr, G_ptr, A_ptr, dVn_ptr, dW_ptr, dkp_ptr, dGp_ptr,
                       dk_ptr, dv_ptr, dg_ptr, dbeta_ptr, T, N, NKS, H: tl.constexpr, K: tl.constexpr,
                       V: tl.constexpr):
        """Backward step 3b, parallel over chunks: through W = A diag(beta e^G) K, U = A diag(beta) V
        (dU = dVn) and A = (I + L)^-1: dA = dW (diag(beta e^G) K)^T + dU (diag(beta) V)^T,
        dv = diag(beta) A^T dU, dL = -A^T dA A^T, then dk (adds 3a's), dbeta, dG from W, U and
        L = StrictTril(diag(beta)(Gam o K K^T)); dg = reverse cumsum of dG within the chunk + the parts
        3a summed directly."""
        n, bh = tl.program_id(0), tl.program_id(1)
        b, h = bh // H, bh % H
        Tp, t0 = N * 64, n * 64
        r = tl.arange(0, 64)
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
            p, m = _ws(dVn_ptr, bh, t0, Tp, V, 64, c0)
            dvn = tl.load(p, mask=m, other=0.).to(tl.float32)
            p, m = _rows(v_ptr, b, h, t0, T, H, V, 64, c0)
            v = tl.load(p, mask=m, other=0.).to(tl.float32)
            p, m = _rows_t(v_ptr, b, h, t0, T, H, V, 64, c0)
            vT = tl.load(p, mask=m, other=0.).to(tl.float32)
            dvb = tl.dot(At, dvn)                      # grad of diag(beta) V
            p, m = _rows(dv_ptr, b, h, t0, T, H, V, 64, c0)
            tl.store(p, (beta[:, None] * dvb).to(dv_ptr.dtype.element_ty), mask=m)
            dbeta += tl.sum(dvb * v, 1)
            dA += tl.dot(dvn, vT * beta[None, :])
        bg = beta * eG
        kk = tl.zeros([64, 64], dtype=tl.float32)
        for c0 in range(0, K, 64):
            p, m = _rows(k_ptr, b, h, t0, T, H, K, 64, c0)
            k = tl.load(p, mask=m, other=0.)
            p, m = _rows_t(k_ptr, b, h, t0, T, H, K, 64, c0)
            kT = tl.load(p, mask=m, other=0.)
            p, m = _ws(dW_ptr, bh, t0, Tp, K, 64, c0)
            dw = tl.load(p, mask=m, other=0.).to(tl.float32)
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
            p, m = _rows(k_ptr, b, h, t0, T, H, K, 64, c0)
            k = tl.load(p, mask=m, other=0.)
            p, m = _rows_t(k_ptr, b, h, t0, T, H, K, 64, c0)
            kT = tl.load(p, mask=m, other=0.)
            p, m = _ws(dW_ptr, bh, t0, Tp, K, 64, c0)
            dkb = tl.dot(At, tl.load(p, mask=m, other=0.).to(tl.float32))  # grad of diag(beta e^G) K
            s = tl.sum(dkb * k.to(tl.float32), 1)
            dbeta += eG * s
            dG += bg * s
            Pc = P.to(k.dtype)
            p, m = _ws(dkp_ptr, bh, t0, Tp, K, 64, c0)
            dk = (tl.load(p, mask=m, other=0.).to(tl.float32) + bg[:, None] * dkb + tl.dot(Pc, k)
                  + tl.trans(tl.dot(kT, Pc)))          # (P^T K)^T computed, transposed for the store
            p, m = _rows(dk_ptr, b, h, t0, T, H, K, 64, c0)
            tl.store(p, dk.to(dk_ptr.dtype.element_ty), mask=m)
        dg = tl.cumsum(dG, 0, reverse=True) + dgd
        t = t0 + r
        tl.store(dg_ptr + (b * T + t) * H + h, dg.to(dg_ptr.dtype.element_ty), mask=t < T)
        tl.store(dbeta_ptr + (b * T + t) * H + h, dbeta.to(dbeta_ptr.dtype.element_ty), mask=t < T)

    def launch_config(K, V, fp32=False):
        """Block size over V and warps/stages per kernel; depends on the head dims and dtype only
        (never T). bench.py --sweep overrides it to compare settings, each checked against float64."""
        big = K > 128 or fp32  # bwd scan: 1 stage (shared memory) for BK = 256 or fp32 tiles
        # fwd scan: 2 stages at every bf16 K (K 192: 0.654 vs 0.757 ms forward, BENCH.md run 12)
        fwd = dict(BV=64, num_warps=8 if fp32 else 4, num_stages=1 if fp32 else 2)
        bwd = dict(BV=64, num_warps=8 if big else 4, num_stages=1 if big else 2)
        # prep's INV="tf32" is 0.6% of a step faster and moves single dbeta errors 19x (BENCH.md run 11)
        # out: Q K^T and Q H in K slices of 64 above K 128 (64 -> 16 KB shared memory, 5% faster at
        # K 192); one slice at K <= 128, where two were 7% slower at K 96 (BENCH.md run 12)
        out = dict(BV=64, BKC=64 if K > 128 else max(64, triton.next_power_of_2(K)), num_warps=4)
        # state: K in blocks of BKS = 64, each block a program that reads dO, Vn and dVn again; BKS 128
        # reads them once at K <= 128 (on 8 warps it spills nothing on sm_90; not yet timed: bench.py
        # --sweep's 'state BK 128 warps 8')
        return dict(prep=dict(num_warps=4, INV="tf32x3"), fwd=fwd, out=out, bwd=bwd,
                    local=dict(BV=64, num_warps=4),
                    state=dict(BV=64, BKS=64, num_warps=4, num_stages=2), wy=dict(num_warps=4))

    def _fwd(q, k, v, g, beta, scale, h0):
        """The forward launches. Returns o, the final state and the workspaces the backward needs."""
        B, T, H, K = q.shape
        V = v.shape[-1]
        N, BH = triton.cdiv(T, 64), B * H
        Tp, BK = N * 64, max(64, triton.next_power_of_2(K))
        q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
        f32 = dict(device=q.device, dtype=torch.float32)
        ws = dict(device=q.device, dtype=k.dtype if WS_HALF else torch.float32)
        cfg = launch_config(K, V, k.dtype == torch.float32)
        G, A = torch.empty(BH, Tp, **f32), torch.empty(BH, Tp, 64, **f32)
        W = torch.empty(BH, Tp, K, device=q.device, dtype=k.dtype)
        U = torch.empty(BH, Tp, V, **ws)
        _prep_kernel[(N, BH)](k, v, g, beta, G, A, W, U, T, N, H, K, V, **cfg["prep"])
        hT = torch.empty(B, H, K, V, **f32)
        Hs = torch.empty(BH, N, K, V, device=q.device, dtype=k.dtype)
        Vn = torch.empty(BH, Tp, V, **ws)
        c = cfg["fwd"]
        _fwd_scan_kernel[(triton.cdiv(V, c["BV"]), BH)](
            k, G, W, U, hT if h0 is None else h0, hT, Hs, Vn, T, N, H, K, V, BK,
            HAS_H0=h0 is not None, **c)
        del U
        o = torch.empty_like(v)
        c = cfg["out"]
        _fwd_out_kernel[(triton.cdiv(V, c["BV"]), N, BH)](
            q, k, G, Hs, Vn, o, scale, T, N, H, K, V, BK, **c)
        return o, hT, G, A, W, Hs, Vn

    def _bwd(do, dhT, q, k, v, beta, G, A, W, Hs, Vn, scale, g_dtype):
        """The backward launches (do / dhT None: zero). Returns dq, dk, dv, dg, dbeta, dh0."""
        q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
        B, T, H, K = q.shape
        V = v.shape[-1]
        BH, N, Tp = B * H, Hs.shape[1], G.shape[1]
        BK = max(64, triton.next_power_of_2(K))
        do = torch.zeros_like(v) if do is None else do.contiguous()
        f32 = dict(device=q.device, dtype=torch.float32)
        ws = dict(device=q.device, dtype=Vn.dtype)
        cfg = launch_config(K, V, k.dtype == torch.float32)
        dHs, dVn = torch.empty_like(Hs), torch.empty(BH, Tp, V, **f32)  # dVn: fp32 always
        dh0 = torch.empty(B, H, K, V, **f32)
        c = cfg["local"]
        _bwd_local_kernel[(triton.cdiv(V, c["BV"]), N, BH)](q, k, do, G, dVn, scale, T, N, H,
                                                           K, V, BK, **c)
        c = cfg["bwd"]
        _bwd_scan_kernel[(triton.cdiv(V, c["BV"]), BH)](
            q, k, do, G, W, dh0 if dhT is None else dhT.contiguous(), dh0, dHs, dVn,
            scale, T, N, H, K, V, BK, HAS_DHT=dhT is not None, **c)
        dq = torch.empty_like(q)
        dkp, dW = torch.empty(BH, Tp, K, **ws), torch.empty(BH, Tp, K, **ws)
        NKS = triton.cdiv(K, cfg["state"]["BKS"])  # the state kernel's K blocks
        dGp = torch.empty(BH, NKS, 2, Tp, **f32)  # per K block: dG (reverse-cumsummed), direct dg parts
        _bwd_state_kernel[(NKS, N, BH)](q, k, do, G, Hs, dHs, Vn, dVn, dq, dkp, dW, dGp,
                                        scale, T, N, H, K, V, **cfg["state"])
        del dHs
        dk, dv, dbeta = torch.empty_like(k), torch.empty_like(v), torch.empty_like(beta)
        dg = torch.empty(B, T, H, device=q.device, dtype=g_dtype)
        _bwd_wy_kernel[(N, BH)](k, v, beta, G, A, dVn, dW, dkp, dGp, dk, dv, dg, dbeta,
                                T, N, NKS, H, K, V, **cfg["wy"])
        return dq, dk, dv, dg, dbeta, dh0

    class _ChunkGDR(torch.autograd.Function):  # the default path (a graph break under torch.compile)
        @staticmethod
        def forward(ctx, q, k, v, g, beta, scale, h0):
            o, hT, *ws = _fwd(q, k, v, g, beta, scale, h0)
            ctx.save_for_backward(q, k, v, beta, *ws)
            ctx.scale, ctx.has_h0, ctx.g_dtype = scale, h0 is not None, g.dtype
            return o, hT

        @staticmethod
        def backward(ctx, do, dhT):
            *grads, dh0 = _bwd(do, dhT, *ctx.saved_tensors, ctx.scale, ctx.g_dtype)
            return *grads, None, (dh0 if ctx.has_h0 else None)

    # two custom ops (the default) that torch.compile keeps opaque (fake impls give the shapes)
    # and traces around, no graph break. The forward also returns the workspaces the backward
    # needs (custom ops cannot save intermediates); they are marked non-differentiable.
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
        N, BH, dt = (T + 63) // 64, B * H, k.dtype
        f32, ws = torch.float32, (dt if WS_HALF else torch.float32)
        e = lambda *s, dtype: q.new_empty(s, dtype=dtype)  # noqa: E731
        return (e(B, T, H, V, dtype=v.dtype), e(B, H, K, V, dtype=f32), e(BH, N * 64, dtype=f32),
                e(BH, N * 64, 64, dtype=f32), e(BH, N * 64, K, dtype=dt), e(BH, N, K, V, dtype=dt),
                e(BH, N * 64, V, dtype=ws))

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

# the custom ops (default; no graph break) or, GDR_CUSTOM_OP=0, a graph break around an autograd.Function
CUSTOM_OP = os.environ.get("GDR_CUSTOM_OP", "1") == "1"


@torch.compiler.disable  # torch.compile runs around it (a graph break), never traces the launches
def _triton_gdr_disabled(q, k, v, g, beta, scale, h0):
    return _ChunkGDR.apply(q, k, v, g, beta, scale, h0)


def _triton_gdr(q, k, v, g, beta, scale, initial_state, output_final_state):
    # contiguous here, not in the launches: the copy is saved for the backward, and under
    # torch.compile it is traced (inductor can write the producer's output in this layout)
    q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
    h0 = None if initial_state is None else initial_state.float().contiguous()
    f = _fwd_op if CUSTOM_OP else _triton_gdr_disabled
    o, hT = f(q, k, v, g, beta, float(scale), h0)[:2]
    return o, (hT if output_final_state else None)


# ---- the cross-entropy of the tied head: one Triton pass over the logits
# model.py's LinearCrossEntropy calls linear_ce on CUDA. The matmul writes the logits [N, vocab] in x's
# dtype; one program per row reads them twice (an online max / sum-exp, then the softmax; once when the
# row is one block, kept in registers) and overwrites them with their gradient, so no fp32 copy of the
# logits ever exists. The arithmetic is the torch path's:
# z = logits * mult rounded to the logits' dtype (as a bf16 tensor times a float is in PyTorch), then fp32.
# The gradient is (softmax(z) - onehot(target)) * mult, without the 1/n of the mean: n is a device value,
# and the backward's scalar takes it (no host sync).
# a row's vocabulary in blocks of BLOCK (tools/gpu_check_ce.py's sweep: 4.0 TB/s over the three passes at
# 16384 x 50304, BENCH.md run 8). A vocabulary up to BLOCK is one block, read once; GPT-2's in one block
# (65536 on 32 warps, 64 registers a thread) spills 232 B on sm_90 and is not timed yet (the sweep's last rows)
CE_LAUNCH = dict(BLOCK=4096, num_warps=8)

# the CPU interpreter (tests) rounds fp32 -> bf16 toward zero (its nearest mode loses carries: 1.9999 -> 1);
# the GPU rounds to nearest even, as torch does, and so does the interpreter with this patch
if HAS_TRITON and os.environ.get("TRITON_INTERPRET") == "1":
    _convert = _ti._convert_float

    def _convert_float(data, src, dst, rounding_mode):
        if src == tl.float32 and dst == tl.bfloat16:
            return torch.from_numpy(data.astype("float32")).bfloat16().view(torch.int16).numpy()
        return _convert(data, src, dst, rounding_mode)
    _ti._convert_float = _convert_float

if HAS_TRITON:
    @triton.jit
    def _ce_logits(ptr, cols, V, mult):
        """A block of z = logits * mult as PyTorch rounds it (to the logits' dtype), in fp32; -inf past V."""
        z = tl.load(ptr + cols, mask=cols < V, other=0.).to(tl.float32) * mult
        return tl.where(cols < V, z.to(ptr.dtype.element_ty).to(tl.float32), float("-inf"))

    @triton.jit
    def _ce_rows_kernel(z_ptr, t_ptr, loss_ptr, mult, V, stride, GRAD: tl.constexpr, BLOCK: tl.constexpr,
                        ONE_PASS: tl.constexpr):
        """Row r's loss lse(z) - z[t] (0 when t = -1) into loss[r]; with GRAD the row is overwritten by
        (softmax(z) - onehot(t)) * mult (zeros when t = -1)."""
        row = tl.program_id(0).to(tl.int64)  # int64: row * stride passes 2^31 at large N * vocab
        ptr = z_ptr + row * stride
        t = tl.load(t_ptr + row).to(tl.int32)
        if ONE_PASS:  # the whole row in one block, kept in registers: the logits read once, not twice
            zr = _ce_logits(ptr, tl.arange(0, BLOCK), V, mult)
            m = tl.max(zr, 0)
            lse = m + tl.log(tl.sum(tl.exp(zr - m), 0))
        else:
            m, s = float("-inf"), 0.  # running max and sum of exp(z - m), fp32
            for v0 in range(0, V, BLOCK):
                z = _ce_logits(ptr, v0 + tl.arange(0, BLOCK), V, mult)
                m_new = tl.maximum(m, tl.max(z, 0))
                s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), 0)
                m = m_new
            lse = m + tl.log(s)
        zt = (tl.load(ptr + tl.maximum(t, 0)).to(tl.float32) * mult).to(z_ptr.dtype.element_ty)
        tl.store(loss_ptr + row, tl.where(t >= 0, lse - zt.to(tl.float32), 0.))
        if GRAD:
            scale = tl.where(t >= 0, mult, 0.)
            if ONE_PASS:
                cols = tl.arange(0, BLOCK)
                g = (tl.exp(zr - lse) - tl.where(cols == t, 1., 0.)) * scale
                tl.store(ptr + cols, g.to(z_ptr.dtype.element_ty), mask=cols < V)
            else:
                for v0 in range(0, V, BLOCK):
                    cols = v0 + tl.arange(0, BLOCK)
                    p = tl.exp(_ce_logits(ptr, cols, V, mult) - lse)
                    g = (p - tl.where(cols == t, 1., 0.)) * scale
                    tl.store(ptr + cols, g.to(z_ptr.dtype.element_ty), mask=cols < V)

    def _ce_rows(z, targets, loss, mult, grad):
        """The kernel over the rows of z [n, V] (in place when grad); loss [n] fp32."""
        N, V = z.shape
        assert z.stride(1) == 1, "rows of contiguous logits expected"
        if N == 0:
            return
        block = min(CE_LAUNCH["BLOCK"], triton.next_power_of_2(V))
        _ce_rows_kernel[(N,)](z, targets, loss, mult, V, z.stride(0), GRAD=grad, BLOCK=block,
                              ONE_PASS=block >= V, num_warps=CE_LAUNCH["num_warps"])

    def _linear_ce(x, weight, mult, targets, need_grad, chunk):
        """Sum over rows of the cross-entropy of (x @ weight^T) * mult, and the logits' gradient without
        1/n ([N, V] in x's dtype; [0, V] without need_grad: then chunk rows at a time, no gradient)."""
        N, V = x.size(0), weight.size(0)
        targets = targets.contiguous()
        loss = torch.empty(N, device=x.device, dtype=torch.float32)
        with torch.autocast(x.device.type, enabled=False):  # the caller chose the matmul's dtype
            if need_grad:
                z = x @ weight.t()
                _ce_rows(z, targets, loss, mult, True)
                return loss.sum(), z
            for i in range(0, N, chunk):
                _ce_rows(x[i:i + chunk] @ weight.t(), targets[i:i + chunk], loss[i:i + chunk], mult, False)
        return loss.sum(), x.new_empty(0, V)

    # a functional custom op: torch.compile sees no mutation (the buffer it writes in place is its own)
    linear_ce = torch.library.custom_op(
        "gdn::linear_ce_fwd", _linear_ce, mutates_args=(),
        schema="(Tensor x, Tensor weight, float mult, Tensor targets, bool need_grad, int chunk) "
               "-> (Tensor, Tensor)")

    @linear_ce.register_fake
    def _(x, weight, mult, targets, need_grad, chunk):
        N = x.size(0) if need_grad else 0
        return x.new_empty((), dtype=torch.float32), x.new_empty(N, weight.size(0))


# ---- causal depthwise conv + SiLU (the mixer's q, k, v conv) ---------------------------------------
# y[b, t, c] = silu(z[b, t, c]), z = sum_j w[c, j] xs[b, t + j, c], xs = cat(state, x) over time (state:
# the W - 1 inputs before x, zeros when None); with norm = (n, K) the first n channels of y (the q and k
# heads) are then L2-normalised in groups of K, as F.normalize (eps 1e-12). Tiles of (time, channels) per
# batch row; the W shifted input tiles are read straight from global memory (they overlap, so all but the
# first hit the cache); fp32 math, the output in x's dtype. x may be a row-strided view (with
# model.ONE_PROJ_MATMUL the model's qkv is a column slice of a matmul's output); the state is [B, W - 1, C]
# contiguous. The backward is two kernels: the first recomputes z (x is read again instead of an fp32 z
# written and read), writes dz = dy silu'(z) (through the norm's backward where there is one) in x's dtype
# (dx is rounded to it anyway; an fp32 dz doubled this kernel's writes and the second's reads: conv 3.46 ->
# 3.09 ms of a width-768 step, BENCH.md run 13) and per-program partial sums of dw to an fp32 [programs, C,
# W] workspace that torch sums (deterministic, no atomics); the second forms dx and d state from W shifted
# reads of dz. (One kernel that recomputed the W shifted dz tiles each dx needs ran 6x over the memory
# floor on an H200: BENCH.md.) The normalised heads take launches of their own, a tile one head wide (the
# norm is a sum over it): the q/k L2 norm and its backward were four compiled kernels, 1.4 ms of a 35.5 ms
# step at width 768 (BENCH.md run 9).
# Block sizes (tools/gpu_check_conv.py times others): a program's tile is [BT, BC]; the dz kernel's
# program takes NT row blocks in turn (one workspace row of dw per BT * NT rows). The defaults are the
# fastest of gpu_check_conv.py's sweep on an H200 (BENCH.md run 8); the dz kernel's 16 x 32 tiles on one
# warp also in the model (35.5 against 35.9 ms a step at width 768 with 16 x 64 on two, BENCH.md run 9).
# norm: the normalised heads' launches, forward and dz (their tiles are BT x next_power_of_2(K); K > 128
# takes twice the warps), from gpu_check_conv.py's sweep at width 768: the dz step 0.481 ms against 0.603
# with run 9's first guess (BT 16, NT 8 on 4 warps, which made the model's step 0.7 ms slower); the
# sweep's fastest, BT 16, NT 2 (0.477), spills registers on sm_90 (test_kernels_compile_for_hopper).
CONV_CONFIG = dict(fwd=dict(BT=16, BC=128, num_warps=4), bwd=dict(BT=16, BC=32, NT=8, num_warps=1),
                   dx=dict(BT=16, BC=128, num_warps=4),
                   norm=dict(fwd=dict(BT=16, num_warps=2), bwd=dict(BT=8, NT=1, num_warps=2)))

if HAS_TRITON:
    @triton.jit
    def _conv_xs(x_ptr, s_ptr, sxt, r, c, cm, T, C, W: tl.constexpr, HAS_STATE: tl.constexpr):
        """Rows r of xs = cat(state, x) at channels c (cm: those in range), fp32, 0 outside; pointers at
        the batch row."""
        u = r - (W - 1)  # the row of x
        ptr = x_ptr + (u.to(tl.int64) * sxt)[:, None] + c[None, :]
        ok = (u >= 0) & (u < T)
        if HAS_STATE:  # one load either way: the first W - 1 rows from the state
            ptr = tl.where((u < 0)[:, None], s_ptr + (r * C)[:, None] + c[None, :], ptr)
            ok = (r >= 0) & (u < T)
        return tl.load(ptr, mask=ok[:, None] & cm[None, :], other=0.).to(tl.float32)

    @triton.jit
    def _conv_w(w_ptr, c, cm, j, W: tl.constexpr):  # tap j of the [C, W] weight, as a [1, BC] row
        return tl.load(w_ptr + c * W + j, mask=cm, other=0.).to(tl.float32)[None, :]

    @triton.jit
    def _conv_z(x_ptr, s_ptr, w_ptr, sxt, t, c, cm, T, C, W: tl.constexpr, HAS_STATE: tl.constexpr):
        """The pre-activation at rows t, summed in tap order as the torch path does."""
        z = _conv_w(w_ptr, c, cm, 0, W) * _conv_xs(x_ptr, s_ptr, sxt, t, c, cm, T, C, W, HAS_STATE)
        for j in tl.static_range(1, W):
            z += _conv_w(w_ptr, c, cm, j, W) * _conv_xs(x_ptr, s_ptr, sxt, t + j, c, cm, T, C, W, HAS_STATE)
        return z

    @triton.jit
    def _conv_channels(c0, CE, G, BC: tl.constexpr):
        """This program's channels, c0 + G * program_id(1) + [0, BC), and which are in its group of G
        (and before CE, the end of the launch's part)."""
        first = c0 + tl.program_id(1) * G
        c = first + tl.arange(0, BC)
        return c, (c < first + G) & (c < CE)

    @triton.jit
    def _conv_dz(dy_ptr, x_ptr, s_ptr, w_ptr, sdt, sxt, t, c, cy, cm, T, C, W: tl.constexpr,
                 HAS_STATE: tl.constexpr, NORM: tl.constexpr):
        """dz = dy silu'(z) at rows t (z recomputed), 0 outside 0 <= t < T. NORM: dy is the gradient of
        y / max(|y|, eps) over the tile's channels (a head), taken back to y first."""
        z = _conv_z(x_ptr, s_ptr, w_ptr, sxt, t, c, cm, T, C, W, HAS_STATE)
        m = ((t >= 0) & (t < T))[:, None] & cm[None, :]
        dy = tl.load(dy_ptr + (t.to(tl.int64) * sdt)[:, None] + cy[None, :], mask=m, other=0.).to(tl.float32)
        s = tl.sigmoid(z)
        if NORM:  # d y = d yhat / n - y (y . d yhat) / n^3, n = |y| (no second term where eps clamps n)
            y = z * s
            n = tl.sqrt(tl.sum(y * y, 1))
            nc = tl.maximum(n, 1e-12)
            proj = tl.where(n >= 1e-12, tl.sum(y * dy, 1) / (nc * nc * nc), 0.)
            dy = dy / nc[:, None] - y * proj[:, None]
        return dy * s * (1 + z * (1 - s))

    @triton.jit
    def _conv_fwd_kernel(x_ptr, s_ptr, w_ptr, y_ptr, sxb, sxt, T, C, c0, CE, G, CY, W: tl.constexpr,
                         HAS_STATE: tl.constexpr, NORM: tl.constexpr, A: tl.constexpr, BT: tl.constexpr,
                         BC: tl.constexpr):
        """Programs over (row blocks, channel groups of G in the part [c0, CE), batch): y = silu(z) for
        one [BT, BC] tile into the part's [B, T, CY] output (at y_ptr, CY = CE - c0); NORM: each row of
        the tile L2-normalised (the group is a head)."""
        sxb, sxt, CY = sxb * A, sxt * A, CY * A  # passed / A: a product with a constexpr tells the compiler
                                                 # the rows' alignment, for vector loads (see _conv_align)
        b = tl.program_id(2).to(tl.int64)  # int64 offsets: B * T * C passes 2^31 at long contexts
        t = tl.program_id(0) * BT + tl.arange(0, BT)
        c, cm = _conv_channels(c0, CE, G, BC)
        z = _conv_z(x_ptr + b * sxb, s_ptr + b * (W - 1) * C, w_ptr, sxt, t, c, cm, T, C, W, HAS_STATE)
        y = z * tl.sigmoid(z)
        if NORM:
            y = y / tl.maximum(tl.sqrt(tl.sum(y * y, 1)), 1e-12)[:, None]
        m = (t < T)[:, None] & cm[None, :]
        tl.store(y_ptr + ((b * T + t) * CY)[:, None] + (c - c0)[None, :], y.to(y_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _conv_dz_kernel(dy_ptr, x_ptr, s_ptr, w_ptr, dz_ptr, dw_ptr, sxb, sxt, T, C, c0, CE, G, CY,
                        W: tl.constexpr, WP: tl.constexpr, HAS_STATE: tl.constexpr, NORM: tl.constexpr,
                        A: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, NT: tl.constexpr):
        """Programs over (groups of NT row blocks, channel groups of the part [c0, CE), batch): dz = dy
        silu'(z) into the buffer [B, T, C] in x's dtype (dy: the part's [B, T, CY] gradient at dy_ptr), and
        dw[c, j] = sum_t dz[t] xs[t + j] over this program's rows into its workspace row (the part's
        own workspace, [programs, CE - c0, W]). The products dz[t] xs[t + j] are summed into a [WP, BT, BC]
        block over the NT row blocks and reduced over its rows once, at the end: a sum over the rows for each
        tap and row block was 45% of the backward at width 768 and 72% at 1536 (BENCH.md run 14)."""
        pt, b = tl.program_id(0), tl.program_id(2).to(tl.int64)
        c, cm = _conv_channels(c0, CE, G, BC)
        sxb, sxt, CY = sxb * A, sxt * A, CY * A  # passed / A, as in the forward
        dy_ptr += b * T * CY
        x_ptr += b * sxb
        s_ptr += b * (W - 1) * C
        jw = tl.arange(0, WP)
        dwacc = tl.zeros([WP, BT, BC], dtype=tl.float32)
        for i in range(NT):
            t = (pt * NT + i) * BT + tl.arange(0, BT)
            dz = _conv_dz(dy_ptr, x_ptr, s_ptr, w_ptr, CY, sxt, t, c, c - c0, cm, T, C, W, HAS_STATE, NORM)
            m = (t < T)[:, None] & cm[None, :]
            tl.store(dz_ptr + ((b * T + t) * C)[:, None] + c[None, :], dz.to(dz_ptr.dtype.element_ty), mask=m)
            for j in tl.static_range(W):  # the x tiles z was made of, again (cache hits)
                xs = _conv_xs(x_ptr, s_ptr, sxt, t + j, c, cm, T, C, W, HAS_STATE)
                dwacc += tl.where(jw[:, None, None] == j, (dz * xs)[None, :, :], 0.)
        dw = tl.sum(dwacc, 1)
        m = (jw < W)[:, None] & cm[None, :]
        tl.store(dw_ptr + ((b * tl.num_programs(0) + pt) * (CE - c0) + (c - c0)[None, :]) * W + jw[:, None],
                 dw, mask=m)

    @triton.jit
    def _conv_dx_kernel(dz_ptr, w_ptr, dx_ptr, ds_ptr, T, C, W: tl.constexpr, SP: tl.constexpr,
                        HAS_STATE: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
        """Programs over (row blocks, channel blocks, batch). x feeds the outputs W - 1 rows on, so
        dx[u] = d xs[u + W - 1] = sum_k w[k] dz[u + W - 1 - k], and d state[r] = sum_k w[k] dz[r - k]
        (r < W - 1), by the first row block."""
        b = tl.program_id(2).to(tl.int64)
        u = tl.program_id(0) * BT + tl.arange(0, BT)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        cm = c < C
        dz_ptr += b * T * C
        dx = tl.zeros([BT, BC], dtype=tl.float32)
        for k in tl.static_range(W):
            r = u + (W - 1 - k)
            m = (r < T)[:, None] & cm[None, :]
            dz = tl.load(dz_ptr + (r.to(tl.int64) * C)[:, None] + c[None, :], mask=m, other=0.).to(tl.float32)
            dx += _conv_w(w_ptr, c, cm, k, W) * dz
        m = (u < T)[:, None] & cm[None, :]
        tl.store(dx_ptr + ((b * T + u) * C)[:, None] + c[None, :], dx.to(dx_ptr.dtype.element_ty), mask=m)
        if HAS_STATE:
            if tl.program_id(0) == 0:  # (new names: Triton rejects a name re-bound to another shape)
                rs = tl.arange(0, SP)
                ds = tl.zeros([SP, BC], dtype=tl.float32)
                for k in tl.static_range(W):
                    ms = ((rs - k >= 0) & (rs - k < T))[:, None] & cm[None, :]
                    ds += _conv_w(w_ptr, c, cm, k, W) * tl.load(dz_ptr + ((rs - k) * C)[:, None] + c[None, :],
                                                              mask=ms, other=0.).to(tl.float32)
                ms = (rs < W - 1)[:, None] & cm[None, :]
                tl.store(ds_ptr + b * (W - 1) * C + rs[:, None] * C + c[None, :],
                         ds.to(ds_ptr.dtype.element_ty), mask=ms)

    def _conv_align(x, *rows):
        """The largest power of two (up to 16 bytes) dividing x's batch and row strides and the row
        lengths `rows`. One projection matmul's qkv rows are 4.5 width + 2 n_head elements apart (3468 at 768:
        8-byte aligned), and Triton, knowing only that 3468 is no multiple of 16, loaded them one bf16 at
        a time (sm_90 PTX)."""
        a = 16 // x.element_size()
        while a > 1 and any(n % a for n in (x.stride(0), x.stride(1), *rows)):
            a //= 2
        return a

    def _conv_launches(parts, n_norm, K, step):
        """(c0, CE, G, channel groups, NORM, launch settings) of each launch of the forward or the dz
        step: one per part [c0, CE) of the channels, those before n_norm in heads of K (one a program,
        CONV_CONFIG["norm"]'s settings), the rest in blocks of BC (CONV_CONFIG[step]'s)."""
        out, c0 = [], 0
        for n in parts:
            if c0 < n_norm:
                cfg = dict(CONV_CONFIG["norm"][step])
                cfg["BC"] = triton.next_power_of_2(K)
                cfg["num_warps"] *= max(1, cfg["BC"] // 128)  # (a 16 x 256 dz tile on 4 warps spilled)
                out.append((c0, c0 + n, K, n // K, True, cfg))
            else:
                cfg = CONV_CONFIG[step]
                out.append((c0, c0 + n, cfg["BC"], triton.cdiv(n, cfg["BC"]), False, cfg))
            c0 += n
        return out

    def _conv_fwd(x, weight, state, parts, n_norm, K):
        """y = silu(causal depthwise conv(cat(state, x))) in x's dtype, flat: for each part of the
        channels (sizes `parts`) a contiguous [B, T, part], one after another; the channels before
        n_norm L2-normalised in groups of K."""
        x = x if x.stride(-1) == 1 else x.contiguous()
        B, T, C = x.shape
        W = weight.shape[1]
        y = torch.empty(B * T * C, device=x.device, dtype=x.dtype)
        a = _conv_align(x, *parts)
        s, weight = x if state is None else state.contiguous(), weight.contiguous()
        for c0, ce, G, groups, norm, cfg in _conv_launches(parts, n_norm, K, "fwd"):
            _conv_fwd_kernel[(triton.cdiv(T, cfg["BT"]), groups, B)](
                x, s, weight, y[B * T * c0:], x.stride(0) // a, x.stride(1) // a, T, C, c0, ce, G,
                (ce - c0) // a, W, state is not None, norm, a, **cfg)
        return y

    def _conv_bwd(dy, x, weight, state, parts, n_norm, K):
        """dx [B, T, C] (x's dtype), dw [C, W] (weight's dtype), d state (state's dtype; empty if None);
        dy flat, as _conv_fwd's y."""
        x = x if x.stride(-1) == 1 else x.contiguous()
        dy = dy.contiguous()
        B, T, C = x.shape
        W, cx = weight.shape[1], CONV_CONFIG["dx"]
        weight = weight.contiguous()
        dz = torch.empty(B, T, C, device=x.device, dtype=x.dtype)
        dw = torch.empty(C, W, device=x.device, dtype=torch.float32)
        a = _conv_align(x, *parts)
        s = x if state is None else state.contiguous()
        for c0, ce, G, groups, norm, cfg in _conv_launches(parts, n_norm, K, "bwd"):
            n = triton.cdiv(T, cfg["BT"] * cfg["NT"])
            dwp = torch.empty(B * n, ce - c0, W, device=x.device, dtype=torch.float32)  # this part's
            _conv_dz_kernel[(n, groups, B)](
                dy[B * T * c0:], x, s, weight, dz, dwp, x.stride(0) // a, x.stride(1) // a, T, C, c0, ce,
                G, (ce - c0) // a, W, triton.next_power_of_2(W), state is not None, norm, a, **cfg)
            dw[c0:ce] = dwp.sum(0)
        dx = torch.empty(B, T, C, device=x.device, dtype=x.dtype)
        ds = x.new_empty(0) if state is None else state.new_empty(state.shape)  # contiguous
        _conv_dx_kernel[(triton.cdiv(T, cx["BT"]), triton.cdiv(C, cx["BC"]), B)](
            dz, weight, dx, ds, T, C, W, max(2, triton.next_power_of_2(W - 1)), state is not None, **cx)
        return dx, dw.to(weight.dtype), ds

    # custom ops, as for the delta rule above: torch.compile traces around them (no graph break)
    _conv_fwd_op = torch.library.custom_op(
        "gdn::conv_silu_fwd", _conv_fwd, mutates_args=(),
        schema="(Tensor x, Tensor weight, Tensor? state, int[] parts, int n_norm, int K) -> Tensor")
    _conv_bwd_op = torch.library.custom_op(
        "gdn::conv_silu_bwd", _conv_bwd, mutates_args=(),
        schema="(Tensor dy, Tensor x, Tensor weight, Tensor? state, int[] parts, int n_norm, int K) -> "
               "(Tensor, Tensor, Tensor)")

    @_conv_fwd_op.register_fake
    def _(x, weight, state, parts, n_norm, K):
        return x.new_empty(x.numel())

    @_conv_bwd_op.register_fake
    def _(dy, x, weight, state, parts, n_norm, K):
        return (x.new_empty(x.shape), weight.new_empty(weight.shape),
                x.new_empty(0) if state is None else state.new_empty(state.shape))

    def _conv_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:3])
        ctx.norm = inputs[3:]

    def _conv_backward(ctx, dy):
        x, weight, state = ctx.saved_tensors
        dx, dw, ds = _conv_bwd_op(dy, x, weight, state, *ctx.norm)
        return dx, dw, (None if state is None else ds), None, None, None

    _conv_fwd_op.register_autograd(_conv_backward, setup_context=_conv_setup)


def causal_conv_silu(x, weight, state=None, parts=None, norm=(0, 1)):
    """CausalConv's fused branch by the Triton kernels: x [B, T, C], weight [C, W], state [B, W - 1, C]
    or None (zeros); parts: the sizes of the output's parts along the channels (None: one, [C]); norm =
    (n, K): the first n channels L2-normalised in groups of K (n a multiple of K, at a part's end).
    Returns y = silu(conv) in x's dtype, as one [B, T, C] tensor, or as a tuple of contiguous [B, T,
    part] tensors (one allocation; the delta rule takes q, k, v without a copy); and the new state,
    xs[:, T:] of xs = cat(state, x) (its last W - 1 rows, formed without concatenating all of x)."""
    B, T, C = x.shape
    W = weight.size(1)
    split = parts is not None
    parts = list(parts) if split else [C]
    ends = [sum(parts[:i + 1]) for i in range(len(parts))]
    assert sum(parts) == C and norm[0] % norm[1] == 0 and norm[0] in [0] + ends, (parts, norm)
    state = None if state is None or W == 1 else state.to(x.dtype)
    y = _conv_fwd_op(x, weight, state, parts, *norm)
    y = tuple(p.view(B, T, -1) for p in y.split([B * T * n for n in parts])) if split else y.view(B, T, C)
    tail = torch.cat([x.new_zeros(B, W - 1, C) if state is None else state, x[:, max(T - W + 1, 0):]], 1)
    return y, tail[:, tail.size(1) - (W - 1):]
