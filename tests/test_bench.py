"""bench.py's profile: kernel names as the CUDA profiler reports them land in the right kind; the host side."""
import torch

import bench


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
