"""The Triton cross-entropy of the tied head (kernel.linear_ce, model.TRITON_CE) on a GPU, in one run.

    python tools/gpu_check_ce.py                      # every check: a few minutes on an H200
    python tools/gpu_check_ce.py --no-compile --no-sweep --shapes=16384x50304
    TRITON_INTERPRET=1 python tools/gpu_check_ce.py --dry-run   # the script's own test, on the CPU

1. accuracy: bf16 inputs as a model's (x rows ~ N(0, 1), weight std 0.02, width 768, 5% of the targets
   ignored), mult 1 and 0.25: the loss, dx and dweight of the Triton path and of the torch path against
   float64 (relative error: norm of the difference over the reference's). PASS: the Triton path's error is
   under a threshold that the torch path also meets, and at most twice the torch path's (plus a floor);
2. timing: forward + backward of fused_cross_entropy with TRITON_CE on and off, eager and torch.compile
   (median of --iters, CUDA events), and the peak memory above the inputs; evaluation (no_grad) too;
3. sweep: the kernel alone over its launch settings (kernel.CE_LAUNCH) at the first shape.
Each shape and each variant runs in its own try, so one failure does not hide the rest. Exit status 1 if a
check FAILs or raises.
"""
import argparse
import os
import statistics
import sys
import time
import traceback

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kernel  # noqa: E402
import model as M  # noqa: E402

THRESH = dict(loss=1e-4, dx=2e-2, dw=2e-2)   # bf16-level errors, which the torch path meets
FLOOR = dict(loss=1e-6, dx=1e-4, dw=1e-4)    # the floor of the "at most twice the torch path's" test
FAILED = []
DEV, ON, BACKEND, WIDTH = "cuda", True, "inductor", 768  # --dry-run: cpu, 'force', aot_eager, 64

LAUNCHES = [0]  # the kernel's launches: the op's implementation looks kernel._ce_rows up at each call
_ce_rows = kernel._ce_rows


def _counted(*a, **k):
    LAUNCHES[0] += 1
    return _ce_rows(*a, **k)


kernel._ce_rows = _counted


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def inputs(N, V, seed=0):
    gen = torch.Generator(device=DEV).manual_seed(seed)
    x = torch.randn(N, WIDTH, device=DEV, generator=gen).bfloat16()
    w = (torch.randn(V, WIDTH, device=DEV, generator=gen) * 0.02).bfloat16()
    t = torch.randint(0, V, (N,), device=DEV, generator=gen)
    t[torch.rand(N, device=DEV, generator=gen) < 0.05] = -1
    return x, w, t


def loss_and_grads(f, x, w, mult, t):
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    loss = f(x, w, mult, t)
    return [loss.detach()] + list(torch.autograd.grad(loss, [x, w]))


def reference(x, w, mult, t):
    x, w = x.double().requires_grad_(), w.double().requires_grad_()
    loss = F.cross_entropy(F.linear(x, w) * mult, t, ignore_index=-1)
    return [loss.detach()] + list(torch.autograd.grad(loss, [x, w]))


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def accuracy(N, V, mult):
    x, w, t = inputs(N, V)
    ref = reference(x, w, mult, t)
    before = LAUNCHES[0]
    M.TRITON_CE = ON
    tri = loss_and_grads(M.fused_cross_entropy, x, w, mult, t)
    used = LAUNCHES[0] > before
    M.TRITON_CE = False
    tor = loss_and_grads(M.fused_cross_entropy, x, w, mult, t)
    with torch.no_grad():  # evaluation: chunks of rows, the kernel without the gradient
        M.TRITON_CE = ON
        ev = M.fused_cross_entropy(x, w, mult, t)
    del x, w, t
    rows = []
    for q, a, b, r in zip(("loss", "dx", "dw"), tri, tor, ref):
        e_tri, e_tor, e_diff = rel(a, r), rel(b, r), rel(a, b)
        ok = (used and torch.isfinite(a).all().item() and e_tri <= THRESH[q]
              and e_tri <= 2 * e_tor + FLOOR[q])
        rows.append((q, e_tri, e_tor, e_diff, ok))
    # the chunks' matmuls may take other cuBLAS kernels than the whole one's: equal, not bit for bit
    ev_diff = abs(ev.item() - tri[0].item()) / abs(tri[0].item())
    rows.append(("eval loss", ev_diff, float("nan"), float("nan"), ev_diff <= 1e-4))
    return rows, used


def timed(fn, iters, warmup=3):
    """Median ms of fn over iters (after warmup), and the peak memory of one more call above what was
    allocated before it, GiB (0 on the CPU)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        if DEV == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    if DEV != "cuda":
        return statistics.median(times), 0.0
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return statistics.median(times), (torch.cuda.max_memory_allocated() - base) / 2 ** 30


def compiled():
    torch._dynamo.reset()
    return torch.compile(M.fused_cross_entropy, dynamic=False, backend=BACKEND)


def timing(N, V, iters, compile_too):
    x, w, t = inputs(N, V)
    x.requires_grad_()
    w.requires_grad_()
    mult, out = 0.25, {}

    def step(f):
        return lambda: torch.autograd.grad(f(x, w, mult, t), [x, w])

    def attempt(key, fn):
        try:
            out[key] = fn()
        except Exception:
            traceback.print_exc()
            out[key] = None
            FAILED.append(f"timing {key} N={N} V={V}")

    for mode in ("eager", "compiled") if compile_too else ("eager",):
        for on in (False, ON):
            M.TRITON_CE = on
            attempt((mode, bool(on)), lambda: timed(step(compiled() if mode == "compiled" else
                                                          M.fused_cross_entropy), iters))
    for on in (False, ON):  # evaluation: no gradient buffer, bounded memory
        M.TRITON_CE = on
        with torch.no_grad():
            attempt(("eval", bool(on)), lambda: timed(lambda: M.fused_cross_entropy(x, w, mult, t), iters))
    M.TRITON_CE = ON
    if compile_too:  # the compiled Triton path's values against eager's
        def compiled_vs_eager():
            eager = loss_and_grads(M.fused_cross_entropy, x, w, mult, t)
            return max(rel(a, b) for a, b in zip(loss_and_grads(compiled(), x, w, mult, t), eager))
        attempt("compiled_vs_eager", compiled_vs_eager)
        if out["compiled_vs_eager"] is not None and out["compiled_vs_eager"] > 1e-2:
            FAILED.append(f"compiled vs eager N={N} V={V}: {out['compiled_vs_eager']:.1e}")
    out["sync"] = host_syncs(step(M.fused_cross_entropy)) if DEV == "cuda" else "not checked (CPU)"
    return out


def host_syncs(run):
    """Whether the Triton path's eager step syncs with the host (it should not)."""
    try:
        run()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            run()
            return "none"
        except RuntimeError as e:
            return "YES: " + str(e).splitlines()[0][:60]
        finally:
            torch.cuda.set_sync_debug_mode("default")
    except Exception as e:
        return f"check failed: {e}"[:70]


def sweep(N, V, iters):
    """The kernel alone (with the gradient: two reads and a write of the bf16 logits, one read and a write
    when the row is one block, BLOCK >= V) per launch setting."""
    z = torch.randn(N, V, device=DEV).bfloat16()
    t = torch.randint(0, V, (N,), device=DEV)
    loss = torch.empty(N, device=DEV)
    saved = dict(kernel.CE_LAUNCH)
    print(f"\nsweep: the kernel alone, N={N} V={V} bf16 (TB/s: 3 passes over N*V*2 bytes with the gradient, "
          "2 when the row is one block; 1 without)")
    print(f"{'BLOCK':>6} {'warps':>5} {'grad ms':>8} {'TB/s':>6} {'no-grad ms':>10} {'TB/s':>6}")
    best, gb = None, N * V * 2 / 1e12
    for block in sorted({1024, 2048, 4096, 8192, 16384, 1 << (V - 1).bit_length()}):  # the last: a row a block
        for warps in (4, 8, 16, 32):
            if not 2 <= block // (32 * warps) <= 128:  # 2 to 128 elements a thread
                continue
            try:
                kernel.CE_LAUNCH.update(BLOCK=block, num_warps=warps)
                g, _ = timed(lambda: _ce_rows(z, t, loss, 0.25, True), iters)
                f, _ = timed(lambda: _ce_rows(z, t, loss, 0.25, False), iters)
                star = " (default)" if (block, warps) == (saved["BLOCK"], saved["num_warps"]) else ""
                passes = 2 if block >= V else 3
                print(f"{block:>6} {warps:>5} {g:8.3f} {passes * gb / g * 1e3:6.2f} {f:10.3f} {gb / f * 1e3:6.2f}{star}")
                best = min(best or (g, block, warps), (g, block, warps))
            except Exception as e:
                print(f"{block:>6} {warps:>5} ERROR {str(e).splitlines()[0][:80]}")
    kernel.CE_LAUNCH.clear()
    kernel.CE_LAUNCH.update(saved)
    if best:
        print(f"fastest with the gradient: BLOCK={best[1]} num_warps={best[2]}, {best[0]:.3f} ms")


def print_accuracy(shapes):
    print("\naccuracy: bf16, relative error against float64 (PASS: triton <= the threshold, which the torch "
          "path also meets, and <= 2x torch + floor)")
    print(f"{'shape':>16} {'mult':>5} {'quantity':>9} {'triton':>9} {'torch':>9} {'tri-torch':>9} "
          f"{'threshold':>9}  result")
    for N, V in shapes:
        for mult in (1.0, 0.25):
            try:
                rows, used = accuracy(N, V, mult)
                for q, e_tri, e_tor, e_diff, ok in rows:
                    th = THRESH.get(q, 1e-4)
                    note = "" if used else "  (the Triton kernel was not launched)"
                    note += "" if q not in THRESH or e_tor <= th else "  (the torch path is over it too)"
                    print(f"{N:>7}x{V:<8} {mult:5.2f} {q:>9} {e_tri:9.2e} {e_tor:9.2e} {e_diff:9.2e} {th:9.0e}"
                          f"  {'PASS' if ok else 'FAIL'}{note}")
                    if not ok:
                        FAILED.append(f"accuracy N={N} V={V} mult={mult} {q}")
            except Exception:
                traceback.print_exc()
                print(f"{N:>7}x{V:<8} {mult:5.2f}  ERROR (traceback above)")
                FAILED.append(f"accuracy N={N} V={V} mult={mult}: error")
            if DEV == "cuda":
                torch.cuda.empty_cache()


def print_timing(shapes, iters, compile_too):
    print(f"\ntiming: forward + backward of fused_cross_entropy (bf16, mult 0.25), median of {iters}, ms; "
          "peak memory above the inputs, GiB; eval: the no_grad forward")
    print(f"{'shape':>16} {'mode':>9} {'torch ms':>9} {'triton ms':>9} {'speedup':>8} {'torch GiB':>9} "
          f"{'triton GiB':>10}")
    for N, V in shapes:
        try:
            out = timing(N, V, iters, compile_too)
            for mode in ("eager", "compiled", "eval"):
                if (mode, False) not in out:
                    continue
                r0, r1 = out[mode, False], out[mode, True]  # (ms, GiB), or None: an error
                ms0, ms1, gb0, gb1 = (f"{r[i]:9.3f}" if r else f"{'ERROR':>9}" for i in (0, 1) for r in (r0, r1))
                sp = f"{r0[0] / r1[0]:8.2f}" if r0 and r1 else f"{'-':>8}"
                print(f"{N:>7}x{V:<8} {mode:>9} {ms0} {ms1} {sp} {gb0} {gb1:>10}")
            extra = f"host syncs in the Triton path's step: {out['sync']}"
            if compile_too:
                cve = out["compiled_vs_eager"]
                extra += f"; compiled vs eager (Triton): {cve:.1e}" if cve is not None else "; compiled: ERROR"
            print(f"{'':>16}   {extra}")
        except Exception:
            traceback.print_exc()
            FAILED.append(f"timing N={N} V={V}: error")
        if DEV == "cuda":
            torch.cuda.empty_cache()


def main():
    global DEV, ON, BACKEND, WIDTH
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="16384x50304,8192x50304,4096x32000,1000x300",
                   help="N x V, comma-separated (width 768)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (TRITON_INTERPRET=1): "
                   "runs every line of this script, measures nothing")
    a = p.parse_args()
    if a.dry_run:
        DEV, ON, BACKEND, WIDTH = "cpu", "force", "aot_eager", 64
        a.shapes, a.iters = "40x300,17x1000", 2
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    name = torch.cuda.get_device_name() if DEV == "cuda" else "CPU (dry run)"
    print(f"{name}, torch {torch.__version__}, triton {__import__('triton').__version__}, "
          f"CE_LAUNCH {kernel.CE_LAUNCH}, width {WIDTH}")
    print_accuracy(shapes)
    print_timing(shapes, a.iters, not a.no_compile)
    if not a.no_sweep:
        try:
            sweep(*shapes[0], a.iters)
        except Exception:
            traceback.print_exc()
            print("sweep: ERROR (not counted as a failure)")
    print("\n" + ("FAIL: " + "; ".join(FAILED) if FAILED else "ALL PASS"))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
