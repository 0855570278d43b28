"""Launch-setting sweeps of fused_ops.py's Triton conv + SiLU (CONV_CONFIG) and cross-entropy (CE_LAUNCH).
Run on a GPU machine:

    python -m study.experiments.launch_configs.launch_sweep --op=conv [--shapes=w768,w1024] [--iters=20]
    python -m study.experiments.launch_configs.launch_sweep --op=ce [--ce_shape=16384x50304]

conv: the model's q, k, v conv (B 16, T 1024, 6 heads, q and k L2-normalised per head) at widths 768, 1024,
1536; each setting of each step (fwd, bwd = dz, dx, the normalised heads' "norm fwd" / "norm bwd") checked
against float64 (y, dx, dw), then its op timed; the fastest of each step last. ce: the row kernel alone over
BLOCK x num_warps, with the gradient and without. One setting's op-level time spreads 20-30% within a
process: decide close candidates by the step's kernel time (python -m study.bench --model=True --profile=True).
"""
import math
import statistics

import torch
import torch.nn.functional as F

import fused_ops as ops
from configurator import configure

W = 4
SHAPES = {"w768": (96, 192), "w1024": (128, 256), "w1536": (192, 384)}  # (K, V), 6 heads, B 16, T 1024
CONFIGS = {  # first: the default when this sweep was written
    "fwd": [dict(BT=16, BC=128, num_warps=4), dict(BT=32, BC=128, num_warps=4), dict(BT=16, BC=256, num_warps=4),
            dict(BT=8, BC=128, num_warps=4), dict(BT=32, BC=64, num_warps=2)],
    "bwd": [dict(BT=16, BC=32, NT=8, num_warps=1), dict(BT=16, BC=64, NT=8, num_warps=2),
            dict(BT=16, BC=32, NT=16, num_warps=1), dict(BT=32, BC=32, NT=8, num_warps=2),
            dict(BT=16, BC=128, NT=8, num_warps=4), dict(BT=16, BC=32, NT=8, num_warps=2)],
    "dx": [dict(BT=16, BC=128, num_warps=4), dict(BT=32, BC=128, num_warps=4), dict(BT=16, BC=256, num_warps=4),
           dict(BT=64, BC=64, num_warps=4), dict(BT=8, BC=128, num_warps=4)],
    "norm fwd": [dict(BT=16, num_warps=2), dict(BT=16, num_warps=4), dict(BT=8, num_warps=4),
                 dict(BT=32, num_warps=4), dict(BT=8, num_warps=2)],
    "norm bwd": [dict(BT=8, NT=1, num_warps=2), dict(BT=16, NT=8, num_warps=4), dict(BT=16, NT=2, num_warps=4),
                 dict(BT=16, NT=2, num_warps=2), dict(BT=8, NT=4, num_warps=2), dict(BT=32, NT=1, num_warps=4),
                 dict(BT=16, NT=1, num_warps=8), dict(BT=4, NT=1, num_warps=2)],
}


def gpu_ms(fn, iters, repeats=5):
    """Median over `repeats` of the mean time of `iters` calls queued back to back between two events."""
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


def conv_inputs(K, V, H=6, B=16, T=1024, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    C = 2 * H * K + H * V
    x = torch.randn(B, T, C, device="cuda", generator=g).bfloat16()
    w = (torch.rand(C, W, device="cuda", generator=g) * 2 - 1) / math.sqrt(W)  # the model's init
    dy = torch.randn(B, T, C, device="cuda", generator=g).bfloat16()
    return x, w, dy, [H * K, H * K, H * V], (2 * H * K, K)


def conv_errors(x, w, dy, parts, norm):
    """Relative errors of the Triton op's y, dx, dw against float64 (F.conv1d, F.normalize, autograd)."""
    B, T, C = x.shape
    xr, wr = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    y = F.silu(F.conv1d(F.pad(xr.transpose(1, 2), (W - 1, 0)), wr[:, None], groups=C)).transpose(1, 2)
    n, K = norm
    y = torch.cat([F.normalize(y[..., :n].reshape(B, T, -1, K), dim=-1).reshape(B, T, n), y[..., n:]], -1)
    y.backward(dy.double())
    xt, wt = x.detach().requires_grad_(), w.detach().requires_grad_()
    yt = torch.cat(ops.conv_silu(xt, wt, None, parts, norm, backend="triton")[0], -1)
    yt.backward(dy)
    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()  # noqa: E731
    return dict(y=rel(yt, y), dx=rel(xt.grad, xr.grad), dw=rel(wt.grad, wr.grad))


def conv_sweep(shapes, iters):
    default = {k: dict(v) for k, v in ops.CONV_CONFIG.items()}
    best = {}
    for name in shapes:
        x, w, dy, parts, norm = conv_inputs(*SHAPES[name])
        for step, cfgs in CONFIGS.items():
            for c in cfgs:
                ops.CONV_CONFIG = {k: dict(v) for k, v in default.items()}
                if step.startswith("norm"):
                    ops.CONV_CONFIG["norm"][step[5:]] = c
                else:
                    ops.CONV_CONFIG[step] = c
                try:
                    err = conv_errors(x, w, dy, parts, norm)
                    ok = err["y"] < 1e-2 and err["dx"] < 1e-2 and err["dw"] < 1e-4
                    if step in ("fwd", "norm fwd"):
                        ms = gpu_ms(lambda: ops._conv_fwd_op(x, w, None, parts, *norm), iters)
                    else:
                        ms = gpu_ms(lambda: ops._conv_bwd_op(dy.reshape(-1), x, w, None, parts, *norm), iters)
                except Exception as e:  # noqa: BLE001 (a setting that does not compile or fit)
                    print(f"{name:6s} {step:8s} {str(c):45s} ERROR {str(e).splitlines()[0][:80]}")
                    continue
                print(f"{name:6s} {step:8s} {str(c):45s} {ms:7.3f} ms  "
                      + " ".join(f"{q} {e:.1e}" for q, e in err.items()) + ("" if ok else "  FAIL"), flush=True)
                if ok and (ms < best.get((name, step), (math.inf,))[0]):
                    best[(name, step)] = (ms, c)
    ops.CONV_CONFIG = default
    for (name, step), (ms, c) in best.items():
        print(f"fastest {step} at {name}: {c} ({ms:.3f} ms)")


def ce_sweep(N, V, iters):
    z = torch.randn(N, V, device="cuda").bfloat16()
    t = torch.randint(0, V, (N,), device="cuda")
    loss = torch.empty(N, device="cuda")
    default, gb = dict(ops.CE_LAUNCH), N * V * 2 / 1e9
    print(f"the row kernel alone, {N} x {V} bf16; TB/s over 3 passes (2 when the row is one block) with the "
          "gradient, 1 without")
    for block in sorted({1024, 2048, 4096, 8192, 16384, 1 << (V - 1).bit_length()}):
        for warps in (4, 8, 16, 32):
            if not 2 <= block // (32 * warps) <= 128:  # 2 to 128 elements a thread
                continue
            ops.CE_LAUNCH.update(BLOCK=block, num_warps=warps)
            try:
                g = gpu_ms(lambda: ops._ce_rows(z, t, loss, 0.25, True), iters)
                f = gpu_ms(lambda: ops._ce_rows(z, t, loss, 0.25, False), iters)
            except Exception as e:  # noqa: BLE001
                print(f"BLOCK {block:6d} warps {warps:2d}  ERROR {str(e).splitlines()[0][:80]}")
                continue
            passes = 2 if block >= V else 3
            print(f"BLOCK {block:6d} warps {warps:2d}  grad {g:7.3f} ms {passes * gb / g:5.2f} TB/s   "
                  f"no grad {f:7.3f} ms {gb / f:5.2f} TB/s" + ("  (default)" if ops.CE_LAUNCH == default else ""))
    ops.CE_LAUNCH.clear()
    ops.CE_LAUNCH.update(default)


DEFAULTS = dict(
    op='',                       # 'conv' (fused_ops.CONV_CONFIG) or 'ce' (fused_ops.CE_LAUNCH)
    shapes='w768,w1024,w1536',   # conv: comma list of SHAPES' widths
    ce_shape='16384x50304',      # ce: rows x vocabulary
    iters=20,                    # calls timed back to back per measurement
)


def main():
    a = dict(DEFAULTS)
    configure(a)
    if a['op'] == "conv":
        conv_sweep(a['shapes'].split(","), a['iters'])
    elif a['op'] == "ce":
        ce_sweep(*map(int, a['ce_shape'].split("x")), a['iters'])
    else:
        raise SystemExit(f"error: op={a['op']!r}: use --op=conv or --op=ce")


if __name__ == "__main__":
    main()
