"""Where the delta rule's time goes: per-GPU-kernel time of one forward+backward (torch.profiler).
Run on a GPU machine (fla beside ours where fla-core is installed):

    python -m study.experiments.launch_configs.kernel_profile    # ours and fla at (8,2048,16,128,128), (4,4096,6,256,512)
    python -m study.experiments.launch_configs.kernel_profile --shapes=16,1024,6,96,192 --ops=ours
    python -m study.experiments.launch_configs.kernel_profile --shapes=16,1024,6,96,192 --ops=ours \
        --cfg=state_BKS=128,state_num_warps=8

Prints, per op and shape, every CUDA kernel's total time over `iters` fwd+bwd passes divided by
the number of passes (ms per pass), largest first. Complements study/bench.py, which times the whole op.

(Registers, spills and shared memory per kernel compiled for sm_90: tests/test_kernel.py, which compiles
every kernel with the ptxas that triton ships, no GPU needed.)
"""
import torch
from torch.profiler import ProfilerActivity, profile

import kernel
from configurator import configure
from study import bench


def profile_op(name, op, shape, iters):
    B, T, H, K, V = shape
    q, k, v, g, beta = bench.inputs(B, T, H, K, V)
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


DEFAULTS = dict(
    shapes='8,2048,16,128,128;4,4096,6,256,512',  # ';'-separated B,T,H,K,V shapes
    ops='ours,fla',              # comma list: 'ours', 'fla' (where fla-core is installed)
    iters=10,                    # fwd+bwd passes profiled
    cfg='',                      # launch-config overrides as study/bench.py's, e.g. 'state_BKS=128'
)


def main():
    a = dict(DEFAULTS)
    configure(a)
    if a['cfg']:
        kernel.launch_config = bench.variant(**bench.parse_cfg(a['cfg']))
        print(f"# launch config overrides: {a['cfg']}")
    ops = bench.kernel_ops(False, bench.load_fla() if "fla" in a['ops'] else None)
    ops = {name: op for name, op in ops.items() if name in a['ops'].split(",")}
    for s in a['shapes'].split(";"):
        for name, op in ops.items():
            profile_op(name, op, tuple(int(x) for x in s.split(",")), a['iters'])


if __name__ == "__main__":
    main()
