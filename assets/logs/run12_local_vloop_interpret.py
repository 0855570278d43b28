"""BENCH.md run 12, item 4: the local kernel's rewrite against the default under the CPU interpreter.
    cp kernel.py /tmp/kernel_vl.py && (cd /tmp && patch -p1 kernel_vl.py < $PWD/assets/logs/run12_local_vloop.patch)
    TRITON_INTERPRET=1 python3 assets/logs/run12_local_vloop_interpret.py 130 /tmp/kernel_vl.py
Prints each one's relative errors against the float64 recurrence and their largest difference (measured: 2e-6
of the largest value, dg 0)."""
import importlib.util
import sys

import torch

sys.path.insert(0, "."), sys.path.insert(0, "tests")  # run from the repo root
from test_kernel import NAMES, make_inputs  # noqa: E402


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


mods = {"base": load("kernel.py", "kb"), "vl": load(sys.argv[2], "kv")}
for m in mods.values():  # the torch.library op is registered once, by the first module: use each one's own
    m.CUSTOM_OP = False  # autograd.Function (the same launches)
B, T, H, K, V = 1, int(sys.argv[1]), 1, 256, 512
for regime in ("strong_decay", "mixed"):
    xs = make_inputs(B, T, H, K, V, regime, seed=5, h0=True)
    o_ref, s_ref = mods["base"].recurrent_gated_delta_rule(*xs[:5], K ** -0.5, initial_state=xs[5],
                                                           output_final_state=True)
    gen = torch.Generator().manual_seed(1)
    do = torch.randn(o_ref.shape, generator=gen, dtype=torch.float64)
    dsT = torch.randn(s_ref.shape, generator=gen, dtype=torch.float64)
    ref = [o_ref, s_ref] + list(torch.autograd.grad([o_ref, s_ref], xs, [do, dsT]))
    got = {}
    for name, kmod in mods.items():
        x = [t.detach().to(torch.float16 if j < 5 else torch.float32).requires_grad_() for j, t in enumerate(xs)]
        o, sT = kmod.chunk_gated_delta_rule(*x[:5], K ** -0.5, initial_state=x[5], output_final_state=True,
                                            backend="triton")
        got[name] = [o, sT] + list(torch.autograd.grad([o, sT], x, [do.half(), dsT.float()]))
        print(regime, name, {n: f"{((a.double() - b).norm() / b.norm()).item():.1e}"
                             for n, a, b in zip(NAMES, got[name], ref)}, flush=True)
    print(regime, "vl vs base, largest difference / largest value",
          {n: f"{((a - b).abs().max() / b.abs().max()).item():.1e}" for n, a, b in zip(NAMES, got["vl"], got["base"])})
