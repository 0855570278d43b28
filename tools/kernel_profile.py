"""Where the kernel's time goes: per-GPU-kernel time of one forward+backward (torch.profiler).

    python tools/kernel_profile.py                         # ours and fla at the first and third DESIGN shape
    python tools/kernel_profile.py --shapes=16,1024,6,96,192 --ops=ours
    python tools/kernel_profile.py --shapes=16,1024,6,96,192 --ops=ours --cfg=state_BKS=128,state_num_warps=8

Prints, per op and shape, every CUDA kernel's total time over `--iters` fwd+bwd passes divided by
the number of passes (ms per pass), largest first. Complements bench.py, which times the whole op.

    python tools/kernel_profile.py --resources=128,128       # no GPU needed: compile for sm_90 and
    python tools/kernel_profile.py --resources=256,512,fp32  # print registers, spills, shared memory

compiles every Triton kernel of kernel.py for an H100 (sm_90, launch_config's settings) on any
machine with triton and prints ptxas's registers per thread, stack (spill) bytes and shared memory
(the H100 allows 227 KB per block).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from torch.profiler import ProfilerActivity, profile
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench  # noqa: E402
import kernel  # noqa: E402


def resources(K, V, fp32):
    """Compiles the seven kernels for sm_90 at launch_config(K, V, fp32); returns
    [(kernel, registers, stack bytes, shared bytes, its config)]."""
    dt = "fp32" if fp32 else "bf16"
    f32 = {"g", "beta", "G", "A", "h0", "hT", "dhT", "dh0", "dG", "dGp", "dg", "dbeta", "dVn"}
    ws = dt if kernel.WS_HALF else "fp32"
    cfg = kernel.launch_config(K, V, fp32)
    const = dict(H=4, K=K, V=V, BK=max(64, triton.next_power_of_2(K)), HAS_H0=True, HAS_DHT=True)
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
    rows = []
    for name, fn in [("prep", kernel._prep_kernel), ("fwd", kernel._fwd_scan_kernel),
                     ("out", kernel._fwd_out_kernel), ("local", kernel._bwd_local_kernel),
                     ("bwd", kernel._bwd_scan_kernel),
                     ("state", kernel._bwd_state_kernel), ("wy", kernel._bwd_wy_kernel)]:
        opts = {o: v for o, v in cfg[name].items() if o in ("num_warps", "num_stages")}
        consts = {**const, "BV": 64, **{c: v for c, v in cfg[name].items() if c not in opts}}
        sig, cst = {}, {}
        for i, a in enumerate(fn.arg_names):
            if a.endswith("_ptr"):
                base = a[:-4]
                sig[a] = "*" + ("fp32" if base in f32 else ws if base in ("U", "Vn", "dkp", "dW") else dt)
            elif a in consts:
                sig[a], cst[(i,)] = "constexpr", consts[a]
            else:
                sig[a] = "fp32" if a == "scale" else "i32"
        attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if a.endswith("_ptr")}
        k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=cst, attrs=attrs),
                           target=GPUTarget("cuda", 90, 128), options=opts)
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(k.asm["cubin"])
            f.flush()
            res = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True).stdout
        regs, stack = re.search(r"REG:(\d+) STACK:(\d+)", res).groups()
        rows.append((name, int(regs), int(stack), k.metadata.shared, cfg[name]))
    return rows


def profile_op(name, op, shape, iters):
    B, T, H, K, V = shape
    q, k, v, g, beta, _ = bench.inputs(B, T, H, K, V)
    xs = [x.requires_grad_() for x in (q, k, v, g, beta)]
    do = torch.randn(B, T, H, V, device="cuda", dtype=v.dtype)
    for _ in range(3):  # compile and warm up
        op(*xs).backward(do)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            op(*xs).backward(do)
        torch.cuda.synchronize()
    rows = [(e.key, e.device_time_total / 1e3 / iters, e.count // iters) for e in prof.key_averages()
            if e.device_time_total > 0]
    rows.sort(key=lambda r: -r[1])
    total = sum(r[1] for r in rows)
    print(f"\n{name} {shape}: {total:.3f} ms of GPU kernels per fwd+bwd")
    for key, ms, n in rows[:15]:
        print(f"  {ms:7.3f} ms  {100 * ms / total:5.1f}%  x{n:<3d} {key[:90]}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="8,2048,16,128,128;4,4096,6,256,512")
    ap.add_argument("--ops", default="ours,fla")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--cfg", default="", help="launch-config overrides as bench.py's, e.g. state_BKS=128")
    ap.add_argument("--resources", default="", help="K,V[,fp32]: compile for sm_90, no GPU needed")
    a = ap.parse_args()
    if a.cfg:
        kernel.launch_config = bench.variant(**bench.parse_cfg(a.cfg))
        print(f"# launch config overrides: {a.cfg}")
    if a.resources:
        r = a.resources.split(",")
        for name, regs, stack, shared, cfg in resources(int(r[0]), int(r[1]), r[2:] == ["fp32"]):
            print(f"K={r[0]} V={r[1]} {'fp32' if r[2:] else 'bf16'}  {name:6s} regs {regs:3d}  "
                  f"stack {stack:4d} B  shared {shared / 1024:5.1f} KB  {cfg}")
        sys.exit()
    ops = bench.kernel_ops(False, bench.load_fla() if "fla" in a.ops else None)
    ops = {name: op for name, op in ops.items() if name in a.ops.split(",")}
    for s in a.shapes.split(";"):
        for name, op in ops.items():
            profile_op(name, op, tuple(int(x) for x in s.split(",")), a.iters)
