"""Timing: the chunked gated delta rule's kernels, and a training step of the whole model against the fla-built LM.

    python -m study.bench                     # kernel table: ours (Triton), PyTorch fallback, fla, SDPA attention
    python -m study.bench --model=True        # + the step table: widths 256..2048, ours compiled against fla's LM
    python -m study.bench --model=True --table=False --widths=768 --batches=16x1024,2x8192   # long context
    python -m study.bench --model=True --profile=True ...                      # + where the step's time goes
    python -m study.bench --help                                               # every key, its value and meaning
    keys combine; --quick=True skips the PyTorch fallback in the table. Run on a GPU machine.

Correctness lives in the tests (python -m pytest -m gpu tests: every output and gradient against float64).
Times are medians of triton.testing.do_bench (CUDA events), bf16 q/k/v, fp32 g and beta. The memory floor
counts each input read once and each output written once: forward reads q, k, v, g, beta and writes o;
forward+backward also re-reads them, reads dO and writes dq, dk, dv, dg, dbeta. 'x floor' = time / (floor
bytes / 3.0 TB/s, the H100's measured copy rate). fla's backward refuses Triton < 3.7.1 on Hopper (wrong gated
dq/dk there, fla issue #640); this script bypasses that guard for timing only. Results: docs/benchmarks.md.
"""
import functools
import os
import re
import sys

import torch
import torch.nn.functional as F
import triton

import kernel

ANCHOR_SHAPES = [(8, 2048, 16, 128, 128), (4, 4096, 16, 128, 128), (4, 4096, 6, 256, 512),
                 (16, 1024, 8, 64, 128)]
PAPER_SHAPES = [(16, 1024, 6, d // 8, d // 4) for d in (768, 1024, 1536)]  # 16K tokens, H=6
LONG_SHAPES = [(2, 8192, 6, 96, 192)]  # width 768's 16K tokens as 2 long sequences: 8x the chunks in sequence
FLA_ANCHOR = {ANCHOR_SHAPES[0]: 2.62, ANCHOR_SHAPES[1]: 3.15, ANCHOR_SHAPES[2]: 3.52,
              ANCHOR_SHAPES[3]: 3.96}
PEAK_BW = 3.0e12


def load_fla():
    try:
        import fla.ops.common.chunk_o as fla_chunk_o
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_gdr
        fla_chunk_o.TRITON_ABOVE_3_7_1 = True  # timing only: see the module docstring
        skip_faulting_configs(os.environ.get("FLA_SKIP_CONFIGS", ""))
        return fla_gdr
    except Exception as e:  # noqa: BLE001
        print(f"# fla not available ({type(e).__name__}: {e})")
        return None


def skip_faulting_configs(path):
    """Leave out of every Triton autotuner's list the configs named in the file at path, one
    "kernel config" a line: those that study/experiments/fla_comparison/fla_warm.py saw fault (illegal memory access)
    on this card (fla 0.6 at head size 32 on Triton 3.6). A config that faults cannot be the one autotuning picks,
    so the picks are otherwise fla's own."""
    if not os.path.exists(path):
        return
    from triton.runtime.autotuner import Autotuner
    bad, prune = set(open(path).read().splitlines()), Autotuner.prune_configs
    Autotuner.prune_configs = lambda self, kw: [c for c in prune(self, kw)
                                                if f"{self.base_fn.__name__} {c}" not in bad]


def inputs(B, T, H, K, V, dtype=torch.bfloat16, seed=0):
    """Timing inputs as the model makes them: q, k L2-normalised; the model's gates g = -exp(A_log)
    softplus(a + dt_bias) with exp(A_log) ~ U(0, 16); beta = sigmoid. Random, never zeros."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, device="cuda", generator=gen)  # noqa: E731
    q = F.normalize(r(B, T, H, K), dim=-1).to(dtype)
    k = F.normalize(r(B, T, H, K), dim=-1).to(dtype)
    v = r(B, T, H, V).to(dtype)
    g = -(16 * torch.rand(H, device="cuda", generator=gen)) * F.softplus(r(B, T, H) - 4.0)
    return q, k, v, g, torch.sigmoid(r(B, T, H))


def time_op(fn, q, k, v, g, beta, V, backward):
    if not backward:
        with torch.no_grad():
            return triton.testing.do_bench(lambda: fn(q, k, v, g, beta), warmup=50, rep=200,
                                           return_mode="median")
    xs = [x.detach().requires_grad_() for x in (q, k, v, g, beta)]
    do = torch.randn(*q.shape[:3], V, device="cuda", dtype=v.dtype)

    def step():
        o = fn(*xs)
        o.backward(do)
    return triton.testing.do_bench(step, warmup=50, rep=200, grad_to_none=xs, return_mode="median")


def floor_ms(B, T, H, K, V, backward, esize=2):
    per = (2 * K + V) * esize + 8 + V * esize          # q k v, g beta (fp32) in; o out
    if backward:
        per = 2 * per + ((2 * K + V) * esize + 8)      # re-read inputs + dO, write the 5 grads
    return B * T * H * per / PEAK_BW * 1e3


def kernel_ops(with_torch, fla_gdr):
    """The gated delta rule implementations to time, as o = op(q, k, v, g, beta)."""
    ops = {"ours": lambda q, k, v, g, b: kernel.chunk_gated_delta_rule(
        q, k, v, g, b, q.shape[-1] ** -0.5, backend="triton")[0]}
    if with_torch:
        ops["torch"] = lambda q, k, v, g, b: kernel.chunk_gated_delta_rule(
            q, k, v, g, b, q.shape[-1] ** -0.5, backend="torch")[0]
    if fla_gdr is not None:
        ops["fla"] = lambda q, k, v, g, b: fla_gdr(q, k, v, g, b, scale=q.shape[-1] ** -0.5)[0]
    return ops


def kernel_table(shapes, with_torch, fla_gdr):
    ops = kernel_ops(with_torch, fla_gdr)

    def sdpa(q, k, v, g, b):
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              is_causal=True).transpose(1, 2)
    ops["sdpa"] = sdpa
    rows = []
    print(f"{'B, T, H, K, V':24s} {'op':6s} {'fwd ms':>8s} {'fwd+bwd':>8s} {'vs fla':>7s} "
          f"{'GB/s':>6s} {'x floor':>7s}")
    for shape in shapes:
        q, k, v, g, beta = inputs(*shape)
        res = {}
        for name, fn in ops.items():
            try:
                f = time_op(fn, q, k, v, g, beta, shape[-1], False)
                fb = time_op(fn, q, k, v, g, beta, shape[-1], True)
            except Exception as e:  # noqa: BLE001
                print(f"{str(shape):24s} {name:6s} failed: {type(e).__name__}: {str(e)[:120]}")
                continue
            res[name] = (f, fb)
        for name, (f, fb) in res.items():
            ratio = fb / res["fla"][1] if "fla" in res else float("nan")
            fl = floor_ms(*shape, backward=True)
            gbs = fl * PEAK_BW / 1e3 / (fb * 1e-3) / 1e9
            print(f"{str(shape):24s} {name:6s} {f:8.3f} {fb:8.3f} {ratio:7.2f} {gbs:6.0f} {fb / fl:7.1f}")
            rows.append((shape, name, f, fb, ratio))
        if shape in FLA_ANCHOR:
            print(f"{'':24s} (fla 0.6 on an H100, 2026-11-26: {FLA_ANCHOR[shape]:.2f} ms fwd+bwd)")
        sys.stdout.flush()
    return rows


def fla_lm(width, n_layer, vocab, n_head=6):
    """The same-shaped LM built from flash-linear-attention's own layers (GatedDeltaNet with its short
    convs, fused gated RMSNorm and kernel; GatedMLP; RMSNorm), tied embedding, plain cross-entropy."""
    import torch.nn as nn
    from fla.layers import GatedDeltaNet
    from fla.modules import GatedMLP, RMSNorm

    from model import GDNConfig
    hidden = GDNConfig(width=width).mlp_hidden

    class Block(nn.Module):
        def __init__(self, i):
            super().__init__()
            self.attn_norm, self.mlp_norm = RMSNorm(width), RMSNorm(width)
            self.attn = GatedDeltaNet(hidden_size=width, expand_v=2, head_dim=width // 8, num_heads=n_head,
                                      layer_idx=i, mode="chunk")
            self.mlp = GatedMLP(hidden_size=width, intermediate_size=hidden)

        def forward(self, x):
            x = x + self.attn(self.attn_norm(x))[0]
            return x + self.mlp(self.mlp_norm(x))

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab, width)
            nn.init.normal_(self.wte.weight, std=0.02)  # as fla's models init it (nn.Embedding's N(0, 1),
            # tied to the logits, started the loss near 700; same step time, but a fair peer trains)
            self.blocks = nn.ModuleList(Block(i) for i in range(n_layer))
            self.norm = RMSNorm(width)

        def forward(self, idx, targets):
            x = self.wte(idx)
            for blk in self.blocks:
                x = blk(x)
            logits = F.linear(self.norm(x), self.wte.weight)
            return None, F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
    return LM()


def matmul_peak():
    """The card's measured dense bf16 matmul rate (TFLOP/s): the best of a few large square GEMMs."""
    best = 0.0
    for n in (4096, 8192, 16384):
        a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        ms = triton.testing.do_bench(lambda: a @ b, warmup=20, rep=100, return_mode="median")
        best = max(best, 2 * n ** 3 / ms / 1e9)
    return best


SPEC_PEAK = {"H100": 989.0, "H200": 989.0}  # dense bf16 TFLOP/s, spec sheet (SXM)


# Kernel-name patterns -> what they are, for --profile (first match wins). aten's kernels are demangled
# C++ ("void at::native::..."), Triton's (ours, torch.compile's, fla's) plain identifiers.
KERNEL_KINDS = [
    ("delta rule (ours)", r"^_(prep|fwd_scan|fwd_out|bwd_local|bwd_scan|bwd_state|bwd_wy)_kernel"),
    ("conv + SiLU (ours)", r"^_conv_(fwd|dz|dx)_kernel"),
    ("cross-entropy (ours)", r"^_ce_rows_kernel"),
    ("matmul (cuBLAS/CUTLASS)", r"gemm|cutlass|nvjet|xmma|cublas|splitK"),
    ("optimizer", r"multi_tensor|[Aa]dam"),
    ("torch.compile fusions (Triton)", r"^triton_"),
    ("aten elementwise", r"^void .*(elementwise|vectorized|unrolled)"),
    ("aten reduction, softmax, norm", r"^void .*(reduce|[Ss]oft[Mm]ax|norm)"),
    ("aten conv", r"^void .*conv"),
    ("copies, memset, cat", r"[Mm]emcpy|[Mm]emset|copy|CatArray"),
    ("other Triton (fla)", r"^[A-Za-z_][A-Za-z0-9_]*$"),
]


def kernel_kind(name):
    return next((kind for kind, pattern in KERNEL_KINDS if re.search(pattern, name)), "other")


def kernel_times(step, steps=3):
    """CUDA kernel time per call of step() (ms), by kernel name, over `steps` calls under the profiler."""
    from torch.profiler import ProfilerActivity, profile
    cuda = torch.cuda.is_available()  # (False in the tests: a CPU step, no kernels)
    sync = torch.cuda.synchronize if cuda else lambda: None
    sync()
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
        sync()
    per = {}
    for e in prof.key_averages():
        if e.device_time_total > 0 and not e.key.startswith(("ProfilerStep", "aten::", "autograd::")):
            per[e.key] = per.get(e.key, 0.0) + e.device_time_total / 1e3 / steps
    return per


def by_kind(per):
    """{kernel name: ms} -> {KERNEL_KINDS kind: ms}."""
    kinds = {}
    for name, ms in per.items():
        kind = kernel_kind(name)
        kinds[kind] = kinds.get(kind, 0.0) + ms
    return kinds


def profile_step(step, steps=3, top=40, host_top=12):
    """Where a training step's time goes: the CUDA kernel time of `steps` calls of step(), grouped by KERNEL_KINDS,
    then the `top` kernels by time (ms per step and share of the kernel time). Then the host's side: the CPU time per
    step of the `host_top` ops with the most self time, for a step whose wall time is well above its kernel time
    (bound by the host, as at width 256). Times under the profiler, which adds a few microseconds to every op, so
    the host's total reads high."""
    from torch.profiler import ProfilerActivity, profile
    per = kernel_times(step, steps)
    with profile(activities=[ProfilerActivity.CPU]) as host_prof:  # apart: CPU events' device times would
        for _ in range(steps):                                      # count the kernels twice
            step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    host = sorted(((e.key, e.self_cpu_time_total / 1e3 / steps) for e in host_prof.key_averages()
                   if "Synchronize" not in e.key), key=lambda kv: -kv[1])  # (not the waits)
    total = sum(per.values())
    print(f"#   profile: {total:.1f} ms of CUDA kernel time per step ({len(per)} distinct kernels)")
    for kind, ms in sorted(by_kind(per).items(), key=lambda kv: -kv[1]):
        print(f"#   {kind:30s} {ms:7.2f} ms {ms / total:6.1%}")
    for name, ms in sorted(per.items(), key=lambda kv: -kv[1])[:top]:
        print(f"#     {ms:6.2f} ms {ms / total:5.1%}  {name[:110]}")
    print(f"#   host: {sum(ms for _, ms in host):.1f} ms of CPU self time per step (under the profiler); most:")
    for name, ms in host[:host_top]:
        print(f"#     {ms:6.2f} ms  {name[:110]}")


def parse_batches(text):
    """'16x1024,2x8192' -> [(16, 1024), (2, 8192)]: the (batch, T) shapes of the step table."""
    try:
        shapes = [tuple(int(n) for n in bt.split("x")) for bt in text.split(",")]
    except ValueError:
        shapes = [()]
    if any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise ValueError(f"batches={text!r}: give BxT shapes, comma-separated, e.g. 16x1024,2x8192")
    return shapes


def make_step(name, width, n_layer, batch, T):
    """One train.py step (bf16 autocast, fused AdamW, clip 1.0) of the model a variant names, on one fixed batch.
    Returns step() -> the loss (on the device)."""
    from model import GDN, GDNConfig
    fp32 = "fp32" in name  # no autocast, no TF32, the PyTorch ops
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not fp32
    if name.startswith("fla"):
        m = fla_lm(width, n_layer, 50304).cuda()
    else:
        m = GDN(GDNConfig(width=width, n_layer=n_layer, kernel_backend="torch" if fp32 else "")).cuda()
        m.reset_parameters(seed=0)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)
    mode = "reduce-overhead" if "cudagraphs" in name else None  # is the step bound by the host?
    fwd = torch.compile(m, mode=mode) if "compiled" in name else m
    x = torch.randint(0, 50304, (batch, T + 1), device="cuda")

    def step():
        torch.compiler.cudagraph_mark_step_begin()  # (a no-op without CUDA graphs)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=not fp32):
            loss = fwd(x[:, :-1], x[:, 1:])[1]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach().clone()  # a graph's output is overwritten by its next replay
    return step


def time_step(step, steps):
    """ms per step over `steps` steps queued back to back (one sync at the end), and their losses."""
    torch.cuda.synchronize()
    t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0.record()
    timed = [step() for _ in range(steps)]  # kept on the device: no sync in the loop
    t1.record()
    torch.cuda.synchronize()
    return t0.elapsed_time(t1) / steps, torch.stack(timed).float().tolist()


@functools.cache
def flops_per_token(width, n_layer, T):
    """model.flops_per_token of the GDN LM at this shape (fla's LM has the same), built once per shape."""
    from model import GDN, GDNConfig
    return GDN(GDNConfig(width=width, n_layer=n_layer)).flops_per_token(T)


def step_row(name, width, n_layer, batch, T, steps, peak, spec):
    """Time one variant's step and print its row (the header is model_table's). Returns the step, its tokens/s and
    its losses at every step."""
    torch.manual_seed(0)
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    step = make_step(name, width, n_layer, batch, T)
    losses = [step().item() for _ in range(3)]
    ms, timed = time_step(step, steps)
    kinds = by_kind(kernel_times(step))
    matmul, tps = kinds.get("matmul (cuBLAS/CUTLASS)", 0.0), batch * T / ms * 1e3
    flops = flops_per_token(width, n_layer, T)
    print(f"{width:5d} {f'{batch}x{T}':>8s} {name:24s} {ms:8.1f} {tps / 1e3:8.0f}K {flops * tps / peak / 1e12:8.1%} "
          f"{flops * tps / spec / 1e12:8.1%} {matmul:7.1f} {sum(kinds.values()) - matmul:7.1f} "
          f"{torch.cuda.max_memory_allocated() / 2**30:7.1f}  " + " ".join(f"{v:.4f}" for v in losses))
    return step, tps, losses + timed


def model_table(widths, fla_ok, batches=((16, 1024),), steps=50, n_layer=8, variants=None, profile=False):
    """A train.py step of the GDN LM at each width and (batch, T), in one run, for each of `variants`: 'ours
    compiled' (as train.py runs it), 'ours compiled cudagraphs', 'ours eager', 'ours eager fp32' (no autocast, the
    PyTorch ops: the reference the bf16 paths are measured against; put it first), and the fla-built LM, 'fla eager'
    and 'fla compiled'. Each row: ms, tokens/s, MFU (model.flops_per_token against the measured matmul peak and
    the spec sheet), the step's CUDA kernel time split into matmuls and the rest (under the profiler, 3 steps),
    peak memory and the first three losses; our variants at every width first, then fla's (an fla kernel that
    faults loses the CUDA context for every later row). Then, per width and shape, the largest and mean loss
    difference of every pair of our variants over all 3 + steps steps (same init, same batch), and each row's
    tokens/s against the first shape's. Each compiled row compiles for about a minute."""
    peak = matmul_peak()
    spec = next((v for k, v in SPEC_PEAK.items() if k in torch.cuda.get_device_name()), float("nan"))
    print(f"# measured bf16 matmul peak {peak:.0f} TFLOP/s; spec sheet {spec:.0f}")
    print(f"{'width':>5s} {'B x T':>8s} {'model':24s} {'ms/step':>8s} {'tokens/s':>9s} {'MFU meas':>8s} "
          f"{'MFU spec':>8s} {'matmul':>7s} {'other':>7s} {'peak GB':>7s}  first losses")
    variants = variants or ["ours compiled", "fla compiled", "fla eager"]  # fla's faster of the two is its time
    ordered = [v for v in variants if not v.startswith("fla")] + [v for v in variants if v.startswith("fla") and fla_ok]
    speed, curves = {}, {}  # (variant, width, shape) -> tokens/s; (width, shape) -> {our variant: its losses}
    for name, width, (batch, T) in ((n, w, bt) for n in ordered for w in widths for bt in batches):
        try:
            step, speed[name, width, (batch, T)], losses = step_row(name, width, n_layer, batch, T, steps, peak, spec)
        except Exception as e:  # noqa: BLE001  (out of memory, an fla failure: the row says so)
            print(f"{width:5d} {f'{batch}x{T}':>8s} {name:24s} failed: {type(e).__name__}: {str(e)[:160]}")
            if isinstance(e, torch.AcceleratorError):  # a faulted kernel is sticky: every later CUDA call fails
                print(f"# the CUDA context is lost: run the variants after {name!r} in a new process"
                      + ("; for fla, study/experiments/fla_comparison/fla_warm.py first names the configs that fault,"
                         " and study.bench then leaves them out (FLA_SKIP_CONFIGS)" if name.startswith("fla") else ""))
                break
            continue
        if name.startswith("ours"):
            curves.setdefault((width, (batch, T)), {})[name] = losses
        if profile:
            profile_step(step)
        step = None
        sys.stdout.flush()
    for (width, (batch, T)), runs in curves.items():
        names = list(runs)
        for i, ref in enumerate(names):  # every pair: with 'ours eager fp32' first, its rows are the noise
            for name in names[i + 1:]:
                c, d = runs[name], [abs(a - b) for a, b in zip(runs[name], runs[ref])]
                print(f"{width:5d} {f'{batch}x{T}':>8s} {name:24s} vs {ref}: max |loss difference| {max(d):.4f} "
                      f"(step {d.index(max(d))}), mean {sum(d) / len(d):.4f} over {len(d)} steps; last losses "
                      f"{c[-1]:.4f} / {runs[ref][-1]:.4f}")
    first = batches[0]
    for (name, width, shape), tps in speed.items():
        if shape != first and (name, width, first) in speed:
            print(f"{width:5d} {name:24s} {shape[0]}x{shape[1]} runs at {tps / speed[name, width, first]:.3f}x the "
                  f"tokens/s of {first[0]}x{first[1]}")


def variant(**over):
    def fn(K, V, fp32=False):
        cfg = _BASE(K, V, fp32)
        for key, val in over.items():
            kern, field = key.split("_", 1)
            cfg[kern] = dict(cfg[kern], **{field: val})
        return cfg
    return fn


def parse_cfg(text):
    """'state_BKS=128,prep_INV=tf32' -> {'state_BKS': 128, 'prep_INV': 'tf32'}, variant's arguments."""
    return {k: int(v) if v.lstrip("-").isdigit() else v for k, v in (kv.split("=") for kv in text.split(","))}


_BASE = kernel.launch_config if kernel.HAS_TRITON else None

DEFAULTS = dict(
    table=True,                  # the kernel table (delta rule: ours, PyTorch, fla, SDPA) at every shape below
    quick=False,                 # leave the PyTorch fallback out of the table
    shapes='',                   # table rows: indices into the 4 anchor, 3 paper, 1 long shapes ('' = all)
    cfg='',                      # launch-config overrides, e.g. 'state_num_warps=4,fwd_num_stages=1' (kernel.launch_config)
    model=False,                 # the step table: a train.py step of the model (8 layers) at each width and shape
    widths='768,1536,2048,256',  # with model: comma list of widths (256 last: fla can fault at head size 32)
    batches='16x1024',           # with model: comma list of B x T shapes (16x1024,2x8192: the same tokens, long)
    variants='',                 # with model: comma list of model_table's variants ('' = ours compiled, fla both ways)
    profile=False,               # with model: each variant's CUDA kernel time per step by kind, and its top kernels
)


def main(argv=None):
    from configurator import configure
    cfg = dict(DEFAULTS)
    configure(cfg, argv)
    if not torch.cuda.is_available():
        raise SystemExit("error: study.bench times CUDA kernels: run it on a GPU machine")
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    fla_gdr = load_fla()
    if cfg['cfg']:
        over = parse_cfg(cfg['cfg'])
        kernel.launch_config = variant(**over)
        print(f"# launch config overrides: {over}")
    table = ANCHOR_SHAPES + PAPER_SHAPES + LONG_SHAPES
    if cfg['table']:
        kernel_table([table[int(i)] for i in cfg['shapes'].split(",")] if cfg['shapes'] else table, not cfg['quick'],
                     fla_gdr)
    if cfg['model']:
        try:
            batches = parse_batches(cfg['batches'])
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        model_table([int(w) for w in cfg['widths'].split(",")], fla_gdr is not None, batches=batches,
                    variants=cfg['variants'].split(",") if cfg['variants'] else None, profile=cfg['profile'])


if __name__ == "__main__":
    main()
