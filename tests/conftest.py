import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

# the project is flat scripts, not a package: make them importable from the tests
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CUDA (python -m pytest -m gpu tests); skipped without it")


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
    """The character-level Shakespeare, prepared once outside the repository's data/ (a test file may define its
    own data_dir)."""
    from prepare_data import ensure_prepared
    d = tmp_path_factory.mktemp('data')
    ensure_prepared('shakespeare_char', str(d))
    return str(d)


def pytest_collection_modifyitems(config, items):
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def patch_interpreter():
    """Two fixes to Triton's CPU interpreter, applied in the TRITON_INTERPRET=1 workers: with numpy >= 2.3
    int(tensor) fails on its 1-element arrays, which breaks `range(runtime_int)` (index via the data);
    and it rounds fp32 -> bf16 toward zero, where the GPU and torch round to nearest even."""
    import torch
    import triton.language as tl
    import triton.runtime.interpreter as ti
    patch = ti._patch_lang_tensor

    def patch_lang_tensor(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))
    ti._patch_lang_tensor = patch_lang_tensor
    convert = ti._convert_float

    def convert_float(data, src, dst, rounding_mode):
        if src == tl.float32 and dst == tl.bfloat16:
            return torch.from_numpy(data.astype("float32")).bfloat16().view(torch.int16).numpy()
        return convert(data, src, dst, rounding_mode)
    ti._convert_float = convert_float


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


def hopper_resources(fn, signature, constexprs, num_warps, num_stages=None, divisible=()):
    """compile_for_hopper's compile for sm_90, with the launch's num_stages too. Returns the compiled
    kernel's registers a thread, stack (spill) bytes a thread (cuobjdump) and shared memory a block."""
    import kernel
    if not kernel.HAS_TRITON:
        pytest.skip("triton not installed")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
    attrs = {(i,): [["tt.divisibility", 16]] for i, (n, t) in enumerate(signature.items())
             if t.startswith("*") or n in divisible}
    options = dict(num_warps=num_warps, **({} if num_stages is None else dict(num_stages=num_stages)))
    k = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                       target=GPUTarget("cuda", 90, 128), options=options)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        res = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True).stdout
    regs, stack = re.search(r"REG:(\d+) STACK:(\d+)", res).groups()
    return dict(regs=int(regs), stack=int(stack), shared=k.metadata.shared)
