"""GPU check of kernel.py's Triton causal conv + SiLU (model.CausalConv's fused branch, TRITON_CONV).

    python tools/gpu_check_conv.py                  # all four parts, a few minutes on an H200
    python tools/gpu_check_conv.py --no-compile     # skip the torch.compile parts
    python tools/gpu_check_conv.py --no-sweep       # skip the block-size sweep
    python tools/gpu_check_conv.py --timed="w768 model,w1024 model"   # time only these shapes

1. correctness: y, dx, dw, d state of the Triton path against float64 (F.conv1d on the same bf16 inputs),
   norm-relative errors, with the torch path's (TRITON_CONV = False) beside; PASS when the Triton error is
   under a threshold the torch path meets too (bf16 outputs 1e-2, dw 1e-4; fp32 1e-5), the new state is
   the torch path's exactly and everything is finite;
2. torch.compile: a model-like function (one matmul, split, conv) compiled against eager, Triton path;
3. timing: forward + backward of CausalConv(fused=True), Triton on / off, eager and compiled (median of
   5 repeats of --iters calls queued back to back, after warmup), and the memory floor (x read twice, y,
   dy, dx once each, at the measured copy rate);
4. block sizes: kernel.CONV_CONFIG alternatives, each checked against float64, forward and backward timed
   (the model's q, k, v conv: the normalised heads' launches keep their tiles, the rest take the config's).

Every part runs per shape in a try/except, so one failure does not hide the rest; exit status 1 on any
FAIL or error. Shapes: B 16, T 1024 at widths 768, 512, 1024 (C = 3 width = 2 H K + H V), the width-768
input as the model feeds it (a column slice of the fused projection's output, rows 3468 apart), with a
carried state, generation (T 1, 2), and odd shapes (B 3, T 77, C 200, state; bf16 and fp32); and "model"
shapes, the mixer's q, k, v conv with q and k L2-normalised per head at widths 768, 1024, 1536 and K 256.
"""
import argparse
import math
import os
import statistics
import sys
import time
import traceback

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kernel  # noqa: E402
import model  # noqa: E402

W = 4
DEV, ON = "cuda", True  # the device and TRITON_CONV's 'on' (a CPU dry run: "cpu", 'force', TRITON_INTERPRET=1)
FAILS = []
# name: B, T, C, state, dtype, pad (x is a column slice of a [B, T, C + pad] tensor; None: contiguous),
# heads (H, K): the output in q, k, v parts, q and k L2-normalised per head, as the model's (None: one part)
SHAPES = {
    "w768": (16, 1024, 2304, False, torch.bfloat16, None),
    "w768 qkv-slice": (16, 1024, 2304, False, torch.bfloat16, 3468 - 2304),
    "w768 model": (16, 1024, 2304, False, torch.bfloat16, None, (6, 96)),
    "w1024 model": (16, 1024, 3072, False, torch.bfloat16, None, (6, 128)),
    "w1536 model": (16, 1024, 4608, False, torch.bfloat16, None, (6, 192)),
    "K256 model state": (4, 300, 2 * 2 * 256 + 2 * 512, True, torch.bfloat16, None, (2, 256)),
    "w768 model gen T=1": (4, 1, 2304, True, torch.bfloat16, None, (6, 96)),
    "odd model fp32": (3, 77, 2 * 3 * 48 + 40, True, torch.float32, None, (3, 48)),
    "w512": (16, 1024, 1536, False, torch.bfloat16, None),
    "w1024": (16, 1024, 3072, False, torch.bfloat16, None),
    "w768 state": (16, 1024, 2304, True, torch.bfloat16, None),
    "gen T=1": (4, 1, 2304, True, torch.bfloat16, None),
    "gen T=2": (4, 2, 2304, True, torch.bfloat16, None),
    "odd": (3, 77, 200, True, torch.bfloat16, None),
    "odd fp32": (3, 77, 200, True, torch.float32, None),
}
TIMED = ["w768", "w768 qkv-slice", "w512", "w1024", "w768 model", "w1024 model", "w1536 model"]
CONFIGS = {  # forward and dx (BT, BC, warps), dz + dw (BT, BC, NT, warps), the heads' warps; the first: default
    "fwd": [(16, 128, 4), (32, 128, 4), (16, 256, 4), (8, 128, 4), (32, 64, 2)],
    # dz: the tiles of 16 elements a thread on one warp take 168 registers on sm_90 (12 warps an SM), on two
    # warps 80 (ptxas, at the model's launch alignment): more warps a tile, fewer registers
    "bwd": [(16, 32, 8, 1), (16, 64, 8, 2), (16, 32, 16, 1), (32, 32, 8, 2), (16, 128, 8, 4),
            (16, 32, 8, 2), (16, 32, 16, 2), (16, 64, 8, 4), (16, 64, 16, 4), (16, 128, 8, 8), (32, 64, 8, 8)],
    # the normalised heads' launches: forward (BT, warps), dz (BT, NT, warps)
    "norm fwd": [(16, 2), (16, 4), (8, 4), (32, 4), (16, 8), (8, 2)],
    "norm bwd": [(8, 1, 2), (16, 8, 4), (16, 2, 4), (16, 1, 4), (8, 2, 4), (8, 4, 2), (16, 2, 2), (32, 1, 4),
                 (16, 4, 8), (16, 1, 8), (32, 2, 8), (8, 8, 4), (8, 1, 4), (8, 4, 4), (16, 2, 8), (4, 1, 2)],
    "dx": [(16, 128, 4), (32, 128, 4), (16, 256, 4), (64, 64, 4), (8, 128, 4)],
}
CONFIGS = {part: cfgs + cfgs[:1] for part, cfgs in CONFIGS.items()}  # the default again, last: the spread
DEFAULT = {k: dict(v) for k, v in kernel.CONV_CONFIG.items()}


def shape(name):
    """B, T, C, state, dtype, pad, heads of SHAPES[name]."""
    return (SHAPES[name] + (None,))[:7]


def split_norm(C, heads):
    """CausalConv's parts and norm for heads (H, K), or (None, (0, 1)): one part, no norm."""
    if heads is None:
        return None, (0, 1)
    H, K = heads
    return [H * K, H * K, C - 2 * H * K], (2 * H * K, K)


def make(B, T, C, state, dtype, pad, heads=None, seed=0):
    gen = torch.Generator(device=DEV).manual_seed(seed)
    x = torch.randn(B, T, C + (pad or 0), device=DEV, generator=gen).to(dtype)[..., :C]
    bound = 1 / math.sqrt(W)  # the model's init of the conv (GDN.reset_parameters)
    w = (torch.rand(C, W, device=DEV, generator=gen) * 2 - 1) * bound
    s = torch.randn(B, W - 1, C, device=DEV, generator=gen).to(dtype) if state else None
    dy = torch.randn(B, T, C, device=DEV, generator=gen).to(dtype)
    return x, w, s, dy


def conv_module(w, heads=None):
    conv = model.CausalConv(w.shape[0], W, *split_norm(w.shape[0], heads)).to(DEV)
    conv.weight.data.copy_(w)
    return conv


def run_conv(switch, x, w, s, dy, heads=None):
    """CausalConv(fused=True) with TRITON_CONV = switch: y (its parts side by side), new state, dx, dw,
    d state."""
    model.TRITON_CONV = switch
    conv = conv_module(w, heads)
    x = x.detach().requires_grad_()  # a view: keeps x's strides
    s = None if s is None else s.detach().requires_grad_()
    parts, ns = conv(x, s, True)
    y = torch.cat(parts, -1)
    y.backward(dy)
    return y, ns, x.grad, conv.weight.grad, (None if s is None else s.grad)


def run_ref(x, w, s, dy, heads=None):
    """float64 reference: F.conv1d over cat(state, x), F.normalize per head of q and k, autograd."""
    B, T, C = x.shape
    x, w = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    s = None if s is None else s.detach().double().requires_grad_()
    xs = torch.cat([x.new_zeros(B, W - 1, C) if s is None else s, x], 1)
    y = F.silu(F.conv1d(xs.transpose(1, 2), w[:, None], groups=C)).transpose(1, 2)
    if heads is not None:
        n, K = split_norm(C, heads)[1]
        y = torch.cat([F.normalize(y[..., :n].reshape(B, T, -1, K), dim=-1).view(B, T, n), y[..., n:]], -1)
    y.backward(dy.double())
    return y, xs[:, T:], x.grad, w.grad, (None if s is None else s.grad)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def errors(got, ref):
    names = ["y", "dx", "dw", "dstate"]
    return {n: rel(got[i], ref[i]) for n, i in zip(names, (0, 2, 3, 4)) if ref[i] is not None}


def tolerance(q, dtype):
    if dtype == torch.float32:
        return 1e-5
    return 1e-4 if q == "dw" else 1e-2


def why(e):
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


def fail(what):
    FAILS.append(what)
    print(f"  FAIL {what}")


def check(name):
    B, T, C, state, dtype, pad, heads = shape(name)
    x, w, s, dy = make(B, T, C, state, dtype, pad)
    ref = run_ref(x, w, s, dy, heads)
    tri = run_conv(ON, x, w, s, dy, heads)
    tor = run_conv(False, x, w, s, dy, heads)
    et, eo = errors(tri, ref), errors(tor, ref)
    ok = all(torch.isfinite(t).all().item() for t in tri if t is not None)
    ok &= torch.equal(tri[1], tor[1])  # the new state: a copy of inputs either way
    cells = []
    for q, e in et.items():
        tol = tolerance(q, dtype)
        good = e <= tol
        ok &= good
        cells.append(f"{q} {e:.1e}/{eo[q]:.1e}{'' if good else '!'}{'' if eo[q] <= tol else '(torch over)'}")
    status = "PASS" if ok else "FAIL"
    print(f"{status}  {name:15s} B{B} T{T} C{C} {str(dtype)[6:]:8s} align {kernel._conv_align(x)}  "
          f"triton/torch: " + "  ".join(cells))
    if not ok:
        fail(f"correctness {name}")


def compile_check(B=16, T=1024, d=768):
    """The model's pattern: x -> one matmul -> split -> conv (a strided view into the custom op)."""
    C, rest = 3 * d, 3 * d // 2 + 12  # the fused projection's other outputs: gate, alpha, beta
    gen = torch.Generator(device=DEV).manual_seed(1)
    h = torch.randn(B, T, d, device=DEV, generator=gen, dtype=torch.bfloat16)
    Wp = (torch.randn(C + rest, d, device=DEV, generator=gen) / math.sqrt(d)).to(torch.bfloat16)
    conv = conv_module((torch.rand(C, W, device=DEV, generator=gen) * 2 - 1) / math.sqrt(W))
    dy = torch.randn(B, T, C, device=DEV, generator=gen, dtype=torch.bfloat16)

    def fn(h, Wp):
        qkv, other = F.linear(h, Wp).split([C, rest], dim=-1)
        y, st = conv(qkv, None, True)
        return torch.cat(y, -1), st, other

    def go(f):
        conv.weight.grad = None
        hh, ww = h.detach().requires_grad_(), Wp.detach().requires_grad_()
        y, st, other = f(hh, ww)
        torch.autograd.backward([y, other], [dy, torch.ones_like(other)])
        return [y, st, hh.grad, ww.grad, conv.weight.grad]
    model.TRITON_CONV = ON
    eager = go(fn)
    torch._dynamo.reset()
    comp = go(torch.compile(fn, fullgraph=True, dynamic=False))
    diffs = [rel(a, b) for a, b in zip(comp, eager)]
    ok = max(diffs) <= 1e-2  # bf16-level: inductor may round the matmul's output differently
    print(f"{'PASS' if ok else 'FAIL'}  compiled vs eager (matmul, split, Triton conv; y, state, dh, dW, dw): "
          + " ".join(f"{e:.1e}" for e in diffs))
    if not ok:
        fail("compile vs eager")


def bench_ms(fn, iters, repeats=5):
    """The GPU's time per call: the median over `repeats` of `iters` calls queued back to back (one call
    between two events, synchronised each time, also timed the host's launches). Even so one config reads
    20-30% apart within a sweep (BENCH.md run 14): rank configs by the model's kernel time, not by this."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(iters):
            fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / iters)
    return statistics.median(ts)


def copy_rate():
    x = torch.empty(2 ** 28, device=DEV, dtype=torch.bfloat16)  # 512 MB
    ms = bench_ms(lambda: x.clone(), 20)
    return 2 * x.numel() * 2 / (ms * 1e-3)


def timing(name, iters, compiled, rate):
    B, T, C, state, dtype, pad, heads = shape(name)
    x, w, s, dy = make(B, T, C, state, dtype, pad)
    conv = conv_module(w, heads)
    dys = dy.split(split_norm(C, heads)[0] or [C], -1)  # the parts' gradients, as the model's come
    xg = x.detach().requires_grad_()
    floor = 5 * x.numel() * x.element_size() / rate * 1e3  # x twice; y, dy, dx once
    cells = {}
    for switch in (False, ON):
        for mode in ("eager", "compiled") if compiled else ("eager",):
            key = f"{mode} {'triton' if switch else 'torch'}"
            try:
                model.TRITON_CONV = switch
                f = lambda x: conv(x, s, True)[0]  # noqa: E731
                if mode == "compiled":
                    torch._dynamo.reset()
                    f = torch.compile(f, fullgraph=True, dynamic=False)

                def step():
                    conv.weight.grad, xg.grad = None, None
                    torch.autograd.backward(f(xg), dys)
                cells[key] = bench_ms(step, iters)
            except Exception as e:  # noqa: BLE001
                cells[key] = float("nan")
                traceback.print_exc()
                fail(f"timing {name} {key}: {why(e)}")
    line = "  ".join(f"{k} {v:7.3f}" for k, v in cells.items())
    speed = [f"{mode} x{cells[mode + ' torch'] / cells[mode + ' triton']:.2f}"
             for mode in ("eager", "compiled") if mode + " triton" in cells]
    print(f"{name:15s} ms fwd+bwd: {line}   triton speed-up: {', '.join(speed)}   floor {floor:.3f}")


def sweep(name, iters):
    B, T, C, state, dtype, pad, heads = shape(name)
    x, w, s, dy = make(B, T, C, state, dtype, pad)
    ref = run_ref(x, w, s, dy, heads)
    parts, norm = split_norm(C, heads)
    args = (parts or [C], *norm)
    best = {}
    for part, configs in CONFIGS.items():
        for cfg in configs:
            keys = {"bwd": ("BT", "BC", "NT", "num_warps"), "norm fwd": ("BT", "num_warps"),
                    "norm bwd": ("BT", "NT", "num_warps")}.get(part, ("BT", "BC", "num_warps"))
            c = dict(zip(keys, cfg))
            if part.startswith("norm") and heads is None:
                continue
            try:
                if part.startswith("norm"):
                    kernel.CONV_CONFIG = dict(DEFAULT, norm=dict(DEFAULT["norm"], **{part[5:]: c}))
                else:
                    kernel.CONV_CONFIG = dict(DEFAULT, **{part: c})
                got = run_conv(ON, x, w, s, dy, heads)
                err = errors(got, ref)
                ok = all(e <= tolerance(q, dtype) for q, e in err.items())
                if part in ("fwd", "norm fwd"):
                    ms = bench_ms(lambda: kernel._conv_fwd_op(x, w, s, *args), iters)
                else:
                    ms = bench_ms(lambda: kernel._conv_bwd_op(dy.reshape(-1), x, w, s, *args), iters)
                print(f"  {name:15s} {part} {str(c):55s} {ms:7.3f} ms  "
                      + " ".join(f"{q} {e:.1e}" for q, e in err.items()) + ("" if ok else "  FAIL"))
                if not ok:
                    fail(f"sweep {name} {part} {c}")
                elif part not in best or ms < best[part][0]:
                    best[part] = (ms, c)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                fail(f"sweep {name} {part} {c}: {why(e)}")
            finally:
                kernel.CONV_CONFIG = {k: dict(v) for k, v in DEFAULT.items()}
    for part, (ms, c) in best.items():
        print(f"  best {part} at {name}: {c} {ms:.3f} ms")


def guarded(what, fn, *args):
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        fail(f"{what} {' '.join(map(str, args[:1]))}: {why(e)}")
    finally:
        model.TRITON_CONV = ON
        kernel.CONV_CONFIG = {k: dict(v) for k, v in DEFAULT.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--timed", default=",".join(TIMED), help="the shapes to time, a comma list of SHAPES' names")
    ap.add_argument("--swept", default="w768 model,w1024 model", help="the shapes of the block-size sweep")
    a = ap.parse_args()
    if not torch.cuda.is_available() or not kernel.HAS_TRITON:
        print("needs a CUDA GPU and triton")
        return 2
    import triton
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"CONV_CONFIG {kernel.CONV_CONFIG}")
    t0 = time.time()
    print("\n## 1. correctness (norm-relative errors vs float64, Triton/torch; '!' = over the threshold)")
    for name in SHAPES:
        guarded("correctness", check, name)
    if not a.no_compile:
        print(f"\n## 2. torch.compile ({time.time() - t0:.0f} s in)")
        guarded("compile", compile_check)
    print(f"\n## 3. timing (CausalConv fused=True, forward + backward; {time.time() - t0:.0f} s in)")
    rate = copy_rate()
    print(f"copy rate {rate / 1e12:.2f} TB/s (the floor's bandwidth)")
    for name in a.timed.split(","):
        guarded("timing", timing, name, a.iters, not a.no_compile, rate)
    if not a.no_sweep:
        print(f"\n## 4. block sizes (op-level, forward and backward apart; {time.time() - t0:.0f} s in)")
        for name in a.swept.split(","):
            guarded("sweep", sweep, name, a.iters)
    print(f"\n{len(FAILS)} failure(s) ({time.time() - t0:.0f} s)" + "".join(f"\n  {f}" for f in FAILS)
          if FAILS else f"\nALL PASS ({time.time() - t0:.0f} s)")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
