"""The model's two fused ops, each a Triton op (CUDA) beside its PyTorch version.

1. conv_silu: the mixer's depthwise causal conv over time + SiLU, on q, k and v together, with the q and k
   heads L2-normalised. The Triton op does the conv, the SiLU, the cast and the per-head norm in one pass over
   x (the backward in two), where PyTorch runs several elementwise kernels, each reading and writing [B, T, C].
2. linear_cross_entropy: the tied head's mean cross-entropy of (x @ weight^T) * mult, without ever
   materialising fp32 logits [N, vocab] (3.3 GB at 16K tokens and GPT-2's vocabulary). The Triton op has one
   kernel overwrite the matmul's logits (in x's dtype) with their gradient; the PyTorch op takes chunks of rows.

Both take backend: '' (Triton for CUDA tensors in TRITON_DTYPES when triton is importable, else PyTorch), 'torch' or
'triton' (CPU tensors only under TRITON_INTERPRET=1, Triton's interpreter: how the tests run the kernels). Both versions
of an op compute in fp32 and return x's dtype, rounding to it in places of their own; the PyTorch one is what the CPU
runs and what the tests compare the Triton one with, beside a float64 reference.
"""
import torch
import torch.nn.functional as F

# triton, or where it is missing the stand-in that lets the kernel definitions below evaluate (kernel.py's)
from kernel import HAS_TRITON, tl, triton, triton_runs_on

TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # what the Triton ops take


def _use_triton(backend, x):
    """Whether an op runs its Triton version (backend: the module docstring's); 'triton' insists on it."""
    if not backend:
        return HAS_TRITON and x.is_cuda and x.dtype in TRITON_DTYPES
    if backend == 'torch':
        return False
    if backend != 'triton':
        raise ValueError(f"backend must be '', 'torch' or 'triton'; got {backend!r}")
    if not HAS_TRITON:
        raise ValueError("backend='triton' needs the triton package; install it or use backend='torch'")
    if not triton_runs_on(x.device.type):
        raise ValueError("backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU testing); "
                         "use backend='torch' on CPU")
    if x.dtype not in TRITON_DTYPES:
        raise ValueError(f"backend='triton' takes {TRITON_DTYPES}, got {x.dtype}; use backend='torch'")
    return True


# ---- op 1: causal depthwise conv + SiLU, the q and k heads L2-normalised ---------------------------------
# y[b, t, c] = silu(z[b, t, c]), z = sum_j w[c, j] xs[b, t + j, c], xs = cat(state, x) over time (state: the
# W - 1 inputs before x, zeros when None); with norm = (n, K) the first n channels of y (the q and k heads) are
# then L2-normalised in groups of K, as F.normalize (eps 1e-12). fp32 math, y in x's dtype.

def _conv_silu_torch(x, weight, state, parts, norm):
    """The PyTorch op: W shifted multiply-adds in fp32, summed in tap order (torch.compile fuses them, the SiLU
    and the cast into one kernel and the backward into few, where aten's depthwise conv takes one kernel and
    its backward two), then the norm of each part before channel n, in fp32 from the rounded y, cast back."""
    (B, T, C), W = x.shape, weight.size(1)
    xs = torch.cat([x.new_zeros(B, W - 1, C) if state is None else state.to(x.dtype), x], dim=1)  # [B, T + W - 1, C]
    w = weight.float()
    y = F.silu(sum(xs[:, j:j + T].float() * w[:, j] for j in range(W))).to(x.dtype)
    parts = list(y.split(parts, dim=-1))
    n, K, c0 = *norm, 0
    for i, p in enumerate(parts):
        if c0 < n:
            parts[i] = F.normalize(p.reshape(B, T, -1, K).float(), dim=-1).view(B, T, -1).to(y.dtype)
        c0 += p.size(-1)
    return tuple(parts), xs[:, T:]


# The Triton op. Tiles of (time, channels) per batch row; the W shifted input tiles are read straight from
# global memory (they overlap, so all but the first hit the cache). x may be a row-strided view (the model's
# qkv can be a column slice of a matmul's output); the state is [B, W - 1, C] contiguous. The normalised heads
# take launches of their own, a tile one head wide (the norm is a sum over it), instead of the norm and its
# backward as four more elementwise kernels. The backward is two kernels:
# - dz: recomputes z (x is read again rather than an fp32 z written and read), writes dz = dy silu'(z) (through
#   the norm's backward where there is one) in x's dtype (dx is rounded to it anyway; an fp32 dz doubles this
#   kernel's writes and the next one's reads), and per-program partial sums of dw to an fp32 [programs, C, W]
#   workspace that torch sums (deterministic, no atomics);
# - dx: dx and d state from W shifted reads of dz (one kernel for both steps would recompute the W shifted dz
#   tiles each dx needs, far over the memory floor).
# Launch settings: a program's tile is [BT, BC]; the dz kernel's program (bwd) takes NT row blocks in turn;
# norm: the normalised heads' launches, tiles BT x next_power_of_2(K). Each the fastest setting at width 768
# on an H200 that spills no registers on sm_90 (python -m study.experiments.launch_configs.launch_sweep --op=conv).
CONV_CONFIG = dict(fwd=dict(BT=16, BC=128, num_warps=4), bwd=dict(BT=16, BC=32, NT=8, num_warps=1),
                   dx=dict(BT=16, BC=128, num_warps=4),
                   norm=dict(fwd=dict(BT=16, num_warps=2), bwd=dict(BT=8, NT=1, num_warps=2)))


@triton.jit
def _conv_xs(x_ptr, s_ptr, sxt, r, c, cm, T, C, W: tl.constexpr, HAS_STATE: tl.constexpr):
    """Rows r of xs = cat(state, x) at channels c (cm: those in range), fp32, 0 outside; pointers at the batch row."""
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
    """The pre-activation at rows t, summed in tap order as the PyTorch op does."""
    z = _conv_w(w_ptr, c, cm, 0, W) * _conv_xs(x_ptr, s_ptr, sxt, t, c, cm, T, C, W, HAS_STATE)
    for j in tl.static_range(1, W):
        z += _conv_w(w_ptr, c, cm, j, W) * _conv_xs(x_ptr, s_ptr, sxt, t + j, c, cm, T, C, W, HAS_STATE)
    return z


@triton.jit
def _conv_channels(c0, CE, G, BC: tl.constexpr):
    """This program's channels, c0 + G * program_id(1) + [0, BC), and which are in its group of G (and
    before CE, the end of the launch's part)."""
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
                     HAS_STATE: tl.constexpr, NORM: tl.constexpr, A: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
    """Programs over (row blocks, channel groups of G in the part [c0, CE), batch): y = silu(z) for one
    [BT, BC] tile into the part's [B, T, CY] output (at y_ptr, CY = CE - c0); NORM: each row of the tile
    L2-normalised (the group is a head)."""
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
    """Programs over (groups of NT row blocks, channel groups of the part [c0, CE), batch): dz = dy silu'(z) into the
    buffer [B, T, C] in x's dtype (dy: the part's [B, T, CY] gradient at dy_ptr), and dw[c, j] = sum_t dz[t] xs[t + j]
    over this program's rows into its workspace row (the part's own workspace, [programs, CE - c0, W]). The products
    dz[t] xs[t + j] are summed into a [WP, BT, BC] block over the NT row blocks and reduced over its rows once, at the
    end: a reduction per tap and row block would dominate the backward."""
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
        for j in tl.static_range(W):  # the x tiles z is made of, again (cache hits)
            xs = _conv_xs(x_ptr, s_ptr, sxt, t + j, c, cm, T, C, W, HAS_STATE)
            dwacc += tl.where(jw[:, None, None] == j, (dz * xs)[None, :, :], 0.)
    dw = tl.sum(dwacc, 1)
    m = (jw < W)[:, None] & cm[None, :]
    tl.store(dw_ptr + ((b * tl.num_programs(0) + pt) * (CE - c0) + (c - c0)[None, :]) * W + jw[:, None], dw, mask=m)


@triton.jit
def _conv_dx_kernel(dz_ptr, w_ptr, dx_ptr, ds_ptr, T, C, W: tl.constexpr, SP: tl.constexpr,
                    HAS_STATE: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
    """Programs over (row blocks, channel blocks, batch). x feeds the outputs W - 1 rows on, so
    dx[u] = d xs[u + W - 1] = sum_k w[k] dz[u + W - 1 - k], and d state[r] = sum_k w[k] dz[r - k] (r < W - 1), by the
    first row block."""
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
            tl.store(ds_ptr + b * (W - 1) * C + rs[:, None] * C + c[None, :], ds.to(ds_ptr.dtype.element_ty), mask=ms)


def _conv_align(x, *rows):
    """The largest power of two (up to 16 bytes) dividing x's batch and row strides and the row lengths `rows`. The
    model's qkv rows can be 4.5 width + 2 n_head elements apart (3468 at width 768: 8-byte aligned), and Triton, knowing
    only that such a stride is no multiple of 16, loads them one element at a time."""
    a = 16 // x.element_size()
    while a > 1 and any(n % a for n in (x.stride(0), x.stride(1), *rows)):
        a //= 2
    return a


def _conv_launches(parts, n_norm, K, step):
    """(c0, CE, G, channel groups, NORM, launch settings) of each launch of the forward or the dz step: one
    per part [c0, CE) of the channels, those before n_norm in heads of K (one a program, CONV_CONFIG["norm"]'s
    settings), the rest in blocks of BC (CONV_CONFIG[step]'s)."""
    out, c0 = [], 0
    for n in parts:
        if c0 < n_norm:
            cfg = dict(CONV_CONFIG["norm"][step])
            cfg["BC"] = triton.next_power_of_2(K)
            cfg["num_warps"] *= max(1, cfg["BC"] // 128)  # (a 16 x 256 dz tile on 4 warps spills)
            out.append((c0, c0 + n, K, n // K, True, cfg))
        else:
            cfg = CONV_CONFIG[step]
            out.append((c0, c0 + n, cfg["BC"], triton.cdiv(n, cfg["BC"]), False, cfg))
        c0 += n
    return out


def _conv_fwd(x, weight, state, parts, n_norm, K):
    """y = silu(causal depthwise conv(cat(state, x))) in x's dtype, flat: for each part of the channels (sizes `parts`)
    a contiguous [B, T, part], one after another; the channels before n_norm L2-normalised in groups of K."""
    x = x if x.stride(-1) == 1 else x.contiguous()
    (B, T, C), W = x.shape, weight.shape[1]
    y = torch.empty(B * T * C, device=x.device, dtype=x.dtype)
    a = _conv_align(x, *parts)
    s, weight = x if state is None else state.contiguous(), weight.contiguous()
    for c0, ce, G, groups, norm, cfg in _conv_launches(parts, n_norm, K, "fwd"):
        _conv_fwd_kernel[(triton.cdiv(T, cfg["BT"]), groups, B)](
            x, s, weight, y[B * T * c0:], x.stride(0) // a, x.stride(1) // a, T, C, c0, ce, G,
            (ce - c0) // a, W, state is not None, norm, a, **cfg)
    return y


def _conv_bwd(dy, x, weight, state, parts, n_norm, K):
    """dx [B, T, C] (x's dtype), dw [C, W] (weight's dtype), d state (state's dtype; empty if None); dy flat,
    as _conv_fwd's y."""
    x = x if x.stride(-1) == 1 else x.contiguous()
    dy = dy.contiguous()
    (B, T, C), W, cx = x.shape, weight.shape[1], CONV_CONFIG["dx"]
    dz = torch.empty(B, T, C, device=x.device, dtype=x.dtype)
    dw = torch.empty(C, W, device=x.device, dtype=torch.float32)
    a = _conv_align(x, *parts)
    s, weight = x if state is None else state.contiguous(), weight.contiguous()
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


def _custom_op(name, fn, schema, fake):
    """fn as the op gdn::<name>, its outputs' shapes given by fake: torch.compile traces around it without a
    graph break and fuses the model's elementwise work across it. torch.library keeps the last registration of
    a name, silently: no other module may register these gdn:: names."""
    op = torch.library.custom_op(f"gdn::{name}", fn, mutates_args=(), schema=schema)
    op.register_fake(fake)
    return op


_conv_fwd_op = _custom_op(
    "conv_silu_fwd", _conv_fwd, "(Tensor x, Tensor weight, Tensor? state, int[] parts, int n_norm, int K) -> Tensor",
    lambda x, weight, state, parts, n_norm, K: x.new_empty(x.numel()))
_conv_bwd_op = _custom_op(
    "conv_silu_bwd", _conv_bwd, "(Tensor dy, Tensor x, Tensor weight, Tensor? state, int[] parts, int n_norm, "
    "int K) -> (Tensor, Tensor, Tensor)",
    lambda dy, x, weight, state, parts, n_norm, K: (x.new_empty(x.shape), weight.new_empty(weight.shape),
                                                    x.new_empty(0) if state is None else state.new_empty(state.shape)))


def _conv_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:3])
    ctx.norm = inputs[3:]


def _conv_backward(ctx, dy):
    x, weight, state = ctx.saved_tensors
    dx, dw, ds = _conv_bwd_op(dy, x, weight, state, *ctx.norm)
    return dx, dw, (None if state is None else ds), None, None, None


_conv_fwd_op.register_autograd(_conv_backward, setup_context=_conv_setup)


def _conv_silu_triton(x, weight, state, parts, norm):
    """The Triton op: its parts are contiguous, in one allocation (the delta rule takes q, k, v without a
    copy); the new state is formed without concatenating all of x."""
    (B, T, C), W = x.shape, weight.size(1)
    state = None if state is None or W == 1 else state.to(x.dtype)
    y = _conv_fwd_op(x, weight, state, parts, *norm)
    y = tuple(p.view(B, T, -1) for p in y.split([B * T * n for n in parts]))
    tail = torch.cat([x.new_zeros(B, W - 1, C) if state is None else state, x[:, max(T - W + 1, 0):]], 1)
    return y, tail[:, tail.size(1) - (W - 1):]


def conv_silu(x, weight, state=None, parts=None, norm=(0, 1), backend=''):
    """y = silu(depthwise causal conv over time of cat(state, x)), its first norm[0] channels L2-normalised in
    groups of norm[1]. x [B, T, C]; weight [C, W]; state [B, W - 1, C] (the W - 1 inputs before x) or None
    (zeros); parts: the channel counts of the output's parts (None: one part, [C]); norm = (n, K), n a multiple
    of K at a part's end. Returns (parts, new_state): a tuple of [B, T, part] tensors in x's dtype, and the
    last W - 1 rows of cat(state, x) in x's dtype."""
    B, T, C = x.shape
    parts = [C] if parts is None else list(parts)
    ends = [sum(parts[:i + 1]) for i in range(len(parts))]
    if sum(parts) != C or norm[0] % norm[1] or norm[0] not in [0] + ends:
        raise ValueError(f"parts {parts} must sum to C = {C}, and norm {tuple(norm)} = (n, K) have n a "
                         f"multiple of K at a part's end")
    op = _conv_silu_triton if _use_triton(backend, x) else _conv_silu_torch
    return op(x, weight, state, parts, norm)


# ---- op 2: the tied head's linear cross-entropy ------------------------------------------------------------
# Mean cross-entropy of z = (x @ weight^T) * mult against targets (-1: ignored; n = the targets not ignored).
# The arithmetic of F.cross_entropy on F.linear's logits: the logits rounded to x's dtype, times mult (rounded
# again, as a half-precision tensor times a float is), then softmax in fp32 (float64 for float64 inputs). The
# logits' gradient (softmax(z) - onehot(target)) * mult is formed in the forward pass and kept in x's dtype; the
# backward is two matmuls. Without gradients (evaluation) neither op keeps a gradient buffer.

CE_CHUNK = 2 ** 27  # the PyTorch op's logits per chunk of rows: 512 MB of fp32 logits at a time


class _LinearCrossEntropy(torch.autograd.Function):
    """The PyTorch op: chunks of rows, so that only one chunk's fp32 logits exist at a time; the gradient is
    stored with its 1/n."""

    @staticmethod
    def forward(ctx, x, weight, mult, targets, chunk, need_grad):
        N = x.size(0)
        acc = torch.promote_types(x.dtype, torch.float32)  # softmax in fp32 (fp64 stays fp64)
        valid = targets != -1
        n = valid.sum().clamp(min=1).to(acc)
        dlogits = x.new_empty(N, weight.size(0)) if need_grad else None
        loss = x.new_zeros((), dtype=acc)
        for i in range(0, N, chunk):
            logits = ((x[i:i + chunk] @ weight.t()) * mult).to(acc)
            t, ok = targets[i:i + chunk].clamp(min=0)[:, None], valid[i:i + chunk, None]
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            loss += ((lse - logits.gather(1, t)) * ok).sum()
            if need_grad:  # d loss / d logits = (softmax - onehot) / n, times mult for the scale
                p = logits.sub_(lse).exp_().scatter_add_(1, t, -torch.ones_like(lse))
                dlogits[i:i + chunk] = p.mul_(ok * (mult / n))
        ctx.save_for_backward(x, weight, dlogits)
        return loss / n

    @staticmethod
    def backward(ctx, dloss):
        x, weight, dlogits = ctx.saved_tensors
        # dloss (the loss's dtype) scales the two small products, not the [N, vocab] buffer, as the Triton op's
        dx, dw = (dlogits @ weight).to(dloss.dtype) * dloss, (dlogits.t() @ x).to(dloss.dtype) * dloss
        return dx.to(x.dtype), dw.to(weight.dtype), None, None, None, None


# The Triton op: the matmul writes all the logits [N, vocab] in x's dtype; one program per row reads them twice
# (an online max and sum of exp, then the softmax; once when the row is one block, kept in registers) and
# overwrites them with their gradient, so no fp32 copy of the logits ever exists. The gradient lacks the 1/n
# of the mean: n is a device value, and the backward's fp32 scalar takes it (no host sync).
# Launch: a row's vocabulary in blocks of BLOCK, the fastest setting at 16384 x 50304 on an H200
# (python -m study.experiments.launch_configs.launch_sweep --op=ce); a vocabulary up to BLOCK is one block, read once (a
# GPT-2 row in one block is slower and spills on sm_90).
CE_LAUNCH = dict(BLOCK=4096, num_warps=8)


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
    """Sum over rows of the cross-entropy of (x @ weight^T) * mult, and the logits' gradient without 1/n
    ([N, V] in x's dtype; [0, V] without need_grad: then chunk rows at a time, no gradient)."""
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
_linear_ce_op = _custom_op(
    "linear_ce_fwd", _linear_ce, "(Tensor x, Tensor weight, float mult, Tensor targets, bool need_grad, int chunk) "
    "-> (Tensor, Tensor)",
    lambda x, weight, mult, targets, need_grad, chunk: (
        x.new_empty((), dtype=torch.float32), x.new_empty(x.size(0) if need_grad else 0, weight.size(0))))


class _LinearCrossEntropyTriton(torch.autograd.Function):
    """The Triton op through gdn::linear_ce_fwd; the backward applies the 1/n in fp32 (a bf16 scalar would be
    off by up to 2^-9)."""

    @staticmethod
    def forward(ctx, x, weight, mult, targets, chunk, need_grad):
        n = (targets != -1).sum().clamp(min=1).to(torch.float32)
        loss, dlogits = _linear_ce_op(x, weight, float(mult), targets, need_grad, chunk)
        ctx.save_for_backward(x, weight, dlogits if need_grad else None, n)
        return loss / n

    @staticmethod
    def backward(ctx, dloss):
        x, weight, dlogits, n = ctx.saved_tensors
        s = dloss / n
        dx, dw = ((dlogits @ weight).float() * s), ((dlogits.t() @ x).float() * s)
        return dx.to(x.dtype), dw.to(weight.dtype), None, None, None, None


def linear_cross_entropy(x, weight, mult, targets, backend=''):
    """Mean cross-entropy of the logits (x @ weight^T) * mult against targets (-1: ignored; 0 when all are).
    x [..., d], weight [vocab, d], targets [...]. Under autocast the matmuls run in its dtype, as F.linear's
    would; the loss is fp32 (float64 for float64 inputs)."""
    if torch.is_autocast_enabled(x.device.type):
        dt = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dt), weight.to(dt)
    chunk = max(1, CE_CHUNK // weight.size(0))  # rows
    need_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)  # else no buffer
    op = _LinearCrossEntropyTriton if _use_triton(backend, x) else _LinearCrossEntropy
    return op.apply(x.reshape(-1, x.size(-1)), weight, mult, targets.reshape(-1), chunk, need_grad)
