"""study/bench.py: kernel names as the CUDA profiler reports them land in the right kind; the host side of the profile;
the step table's order, its failures and its long-context ratios (rows faked: no GPU)."""
import pytest
import torch

from study import bench


def test_kernel_kinds():
    cases = {
        "_bwd_wy_kernel": "delta rule (ours)",
        "_fwd_scan_kernel": "delta rule (ours)",
        "_conv_dz_kernel": "conv + SiLU (ours)",
        "_ce_rows_kernel": "cross-entropy (ours)",
        "nvjet_tst_192x192_64x4_2x1_v_bz_coopB_TNT": "matmul (cuBLAS/CUTLASS)",
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1": "matmul (cuBLAS/CUTLASS)",
        "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous "
        "namespace)::TensorListMetadata<4>, at::native::(anonymous namespace)::FusedAdamMathFunctor<float, 4>>":
            "optimizer",
        "triton_red_fused__to_copy_mul_rsqrt_sum_3": "torch.compile fusions (Triton)",
        "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>":
            "aten elementwise",
        "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float>>": "aten reduction, softmax, norm",
        "void at::native::(anonymous namespace)::conv_depthwise2d_forward_kernel<float>": "aten conv",
        "Memcpy DtoD (Device -> Device)": "copies, memset, cat",
        "chunk_gated_delta_rule_fwd_kernel_h_blockdim64": "other Triton (fla)",
        "void something_unknown<int>": "other",
    }
    for name, kind in cases.items():
        assert bench.kernel_kind(name) == kind, name


def test_profile_step_names_the_host_ops(capsys):
    """profile_step's host half on a CPU step: the step's ops by name, most CPU self time first."""
    a, b = torch.randn(384, 384), torch.randn(8)
    bench.profile_step(lambda: (a @ a, torch.relu(b)), steps=2)
    out = capsys.readouterr().out
    host = out.split("#   host:")[1].splitlines()
    rows = [(float(line.split()[1]), line.split()[3]) for line in host[1:]]
    names = [n for _, n in rows]
    assert "aten::mm" in names and "aten::relu" in names, out
    assert [t for t, _ in rows] == sorted((t for t, _ in rows), reverse=True), out
    assert float(host[0].split()[0]) >= sum(t for t, _ in rows) - 0.05 - 0.005 * len(rows)  # (rounding)


def test_skip_faulting_configs_leaves_out_exactly_the_named(tmp_path, monkeypatch):
    """The configs study/experiments/fla_comparison/fla_warm.py saw fault are left out of that kernel's autotuning and no other's;
    a missing file changes nothing."""
    import triton
    import triton.language as tl
    from triton.runtime.autotuner import Autotuner
    monkeypatch.setattr(Autotuner, "prune_configs", Autotuner.prune_configs)  # undone after the test

    def tuned(name):
        def k(x, n, B: tl.constexpr):
            pass
        k.__name__ = name
        return triton.autotune([triton.Config({"B": b}, num_warps=w) for b in (16, 32) for w in (2, 4)],
                               key=["n"])(triton.jit(k))
    a, b = tuned("kernel_a"), tuned("kernel_b")
    a.nargs = b.nargs = {}
    everything = [str(c) for c in a.configs]
    bench.skip_faulting_configs(str(tmp_path / "none.txt"))
    assert [str(c) for c in a.prune_configs({})] == everything
    (tmp_path / "skip.txt").write_text(f"kernel_a {a.configs[1]}\nkernel_a {a.configs[3]}\nkernel_c {a.configs[0]}\n")
    bench.skip_faulting_configs(str(tmp_path / "skip.txt"))
    assert [str(c) for c in a.prune_configs({})] == [everything[0], everything[2]]
    assert [str(c) for c in b.prune_configs({})] == everything


def test_by_kind_sums_each_kernel_once():
    """The step table's matmul / other split: every kernel's time lands in exactly one kind."""
    per = {"nvjet_tst_192x192_64x4_2x1_v_bz_coopB_TNT": 2.0, "sm90_xmma_gemm_bf16bf16": 1.5,
           "_bwd_wy_kernel": 0.25, "triton_poi_fused_mul_0": 0.5, "void mystery<int>": 0.125}
    kinds = bench.by_kind(per)
    assert kinds == {"matmul (cuBLAS/CUTLASS)": 3.5, "delta rule (ours)": 0.25,
                     "torch.compile fusions (Triton)": 0.5, "other": 0.125}


def test_parse_batches():
    assert bench.parse_batches("16x1024,2x8192") == [(16, 1024), (2, 8192)]
    for bad in ("16", "16x", "ax2", "0x5", "16x1024x2", ""):
        with pytest.raises(ValueError, match="BxT"):
            bench.parse_batches(bad)


def test_step_table_runs_ours_first_and_stops_when_the_context_is_lost(monkeypatch, capsys):
    """model_table's order and bookkeeping (rows faked, no GPU): our variants at every width before fla's, so an fla
    kernel that faults (which loses the CUDA context) costs no row of ours; an out-of-memory row is reported and
    skipped; each shape's tokens/s against the first shape's."""
    calls = []

    def row(name, width, n_layer, batch, T, steps, peak, spec):
        calls.append((name, width, T))
        if name == "fla compiled" and width == 768:
            raise torch.AcceleratorError("illegal memory access")
        if name == "ours eager" and T == 8192:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return (lambda: None), 1e6 * (0.9 if T == 8192 else 1.0), [5.0]
    monkeypatch.setattr(bench, "step_row", row)
    monkeypatch.setattr(bench, "matmul_peak", lambda: 800.0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    bench.model_table([256, 768, 1536], True, batches=[(16, 1024), (2, 8192)],
                      variants=["ours compiled", "fla compiled", "ours eager"])
    out = capsys.readouterr().out
    ours = [c for c in calls if c[0].startswith("ours")]
    assert calls[:len(ours)] == ours and len(ours) == 12            # every row of ours, first
    assert calls[len(ours):] == [("fla compiled", 256, 1024), ("fla compiled", 256, 8192),
                                 ("fla compiled", 768, 1024)]  # then fla's, until the context is lost
    assert "the CUDA context is lost" in out
    assert out.count("ours eager               failed: OutOfMemoryError") == 3
    assert "  256 ours compiled            2x8192 runs at 0.900x the tokens/s of 16x1024" in out
