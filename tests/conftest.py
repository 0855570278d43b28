import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

# the project is flat scripts, not a package: make them importable from the tests
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def interpreted(test_file, *args, **env):
    """Runs `python test_file *args` with TRITON_INTERPRET=1 (Triton on the CPU; the flag must be set
    before triton is imported, hence a subprocess) and returns the dict its worker printed after RESULT."""
    import kernel
    if not kernel.HAS_TRITON:
        pytest.skip("triton not installed")
    env = dict(os.environ, TRITON_INTERPRET="1", **env)
    p = subprocess.run([sys.executable, os.path.abspath(test_file), *args], env=env, capture_output=True,
                       text=True, timeout=600)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")]
    assert p.returncode == 0 and line, f"interpreter run failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return json.loads(line[0][len("RESULT"):])


def compile_for_hopper(fn, signature, constexprs, num_warps, divisible=()):
    """The interpreter runs what the GPU compiler may reject: compile a Triton kernel for sm_90 (H100,
    H200) with the ptxas that triton ships, no GPU needed. Returns the compiled kernel (its .asm) and its
    stack (spill) bytes from cuobjdump."""
    import kernel
    if not kernel.HAS_TRITON:
        pytest.skip("triton not installed")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
    # pointers 16-byte aligned, as the launcher marks torch's allocations (its vector loads depend on it)
    # and the integer arguments named in `divisible` multiples of 16, as the launcher specialises them
    attrs = {(i,): [["tt.divisibility", 16]] for i, (n, t) in enumerate(signature.items())
             if t.startswith("*") or n in divisible}
    k = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                       target=GPUTarget("cuda", 90, 128), options=dict(num_warps=num_warps))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        res = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True).stdout
    return k, int(re.search(r"STACK:(\d+)", res).group(1))
