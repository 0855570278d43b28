#!/usr/bin/env bash
# Issue 12's Triton conv and cross-entropy on one GPU, in one device call (under 10 minutes; each step
# has its own deadline and log under OUTDIR, so a step cut short loses only itself):
#   conv, ce  tools/gpu_check_conv.py, tools/gpu_check_ce.py: the kernels' values and every gradient
#             against float64 beside the torch path's errors, compiled vs eager, timing on/off, launch
#             settings swept;
#   model768  bench.py --model --profile at width 768: the fused compiled step with the Triton ops, the
#             same with the torch ops (compile fuses them; the A/B), and the fla-built LM (eager) last;
#   widths    ours compiled fused at the paper's widths 256, 1024, 1536 (the fla LM there: the fla step);
#   proj, kernels   the input projections' grouping A/B (profiled), the delta rule alone against fla
#             at bench.py's shapes (see each step below);
#   host      width 256, where the host bounds the step (BENCH.md run 15): the step launched and as CUDA
#             graphs (bench.py, profiled: kernel time and the host's CPU time by op), then train.py with
#             compile_mode '' and 'reduce-overhead';
#   fla       the fla-built LM beside ours at the paper's widths (FLA_WIDTHS, default 1024 1536 256): fla's
#             configs compiled in parallel (WARM_SECS; 0: not) and those that fault left out; then fla
#             first, each width its own process and deadline; fla's tunings saved after each width.
# fla travels as wheels in .whl, its autotunings in .carry (gpu_throughput.sh): carry both.
#   bash tools/gpu_fused_ops.sh OUTDIR [STEP ...]     # default: all four
set -uo pipefail
out=$1; shift
steps=${*:-conv ce model768 widths}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
source tools/fla_env.sh  # fla's wheels and autotunings (FLA_PATH, TRITON_CACHE_DIR)
save_tunings() {  # Triton's autotunings so far (fla's: minutes to redo) to OUTDIR, for .carry
    (cd $TRITON_CACHE_DIR && find . -name "*.autotune.json" | tar czf "$out/triton_autotune.tgz" -T -)
}
for s in $steps; do
    case $s in
    conv) timeout ${CONV_SECS:-150} python3 tools/gpu_check_conv.py > "$out/check_conv.log" 2>&1
          echo "check_conv rc=$?" >> "$out/check_conv.log"; grep -v "^  w.* \(fwd\|bwd\|dx\) {" "$out/check_conv.log" | tail -30 ;;
    ce)   timeout 150 python3 tools/gpu_check_ce.py > "$out/check_ce.log" 2>&1
          echo "check_ce rc=$?" >> "$out/check_ce.log"; tail -25 "$out/check_ce.log" ;;
    model768) PYTHONPATH=${FLA_PATH:-} timeout ${BENCH_SECS:-270} python3 bench.py --model --profile --no-table \
          --widths=768 --variants='ours compiled fused,ours compiled fused torch ops,fla eager' > "$out/model768.log" 2>&1
          grep -v -i warn "$out/model768.log" | grep -v "^#     " | tail -40 ;;
    widths) timeout ${WIDTHS_SECS:-150} python3 bench.py --model --no-table --widths=256,1024,1536 \
          --variants='ours compiled fused' > "$out/model_widths.log" 2>&1  # (fla beside it: the fla step)
          grep -v -i warn "$out/model_widths.log" | tail -8 ;;
    proj) # the input projections in one matmul or three (model.ONE_PROJ_MATMUL), profiled; Inductor's
          # generated kernels saved (OUTDIR/inductor.tgz) to read what each compiled fusion does
          TORCHINDUCTOR_CACHE_DIR=/tmp/inductor timeout ${PROJ_SECS:-240} python3 bench.py --model --profile \
          --no-table --widths=768 --variants='ours compiled fused,ours compiled fused one proj matmul' > "$out/proj.log" 2>&1
          (cd /tmp && find inductor -name "*.py" | tar czf "$out/inductor.tgz" -T -)
          grep -v -i warn "$out/proj.log" | grep -v "^#     " | tail -30 ;;
    kernels) # the delta rule alone against fla's at bench.py's shapes (fla autotunes at each new K: last)
          PYTHONPATH=${FLA_PATH:-} timeout ${KERNEL_SECS:-240} python3 bench.py --quick > "$out/kernels.log" 2>&1
          grep -v -i warn "$out/kernels.log" | tail -30 ;;
    host) timeout ${HOST_SECS:-200} python3 bench.py --model --profile --no-table --widths=256 \
          --variants='ours compiled fused,ours compiled fused cudagraphs' > "$out/host256.log" 2>&1
          grep -v -i warn "$out/host256.log" | grep -v "^#     [ 0-9.]* ms [ 0-9.]*%" | tail -40
          python3 prepare_data.py --dataset=gutenberg > /dev/null
          for mode in "" reduce-overhead; do
              timeout ${TRAIN_SECS:-130} python3 train.py --dataset=gutenberg --width=256 --mup=True \
                  --batch_size=16 --block_size=1024 --max_iters=60 --eval_interval=1000 --eval_iters=2 \
                  --log_interval=10 --compile_mode=$mode --out_dir=/tmp/host_train$mode > "$out/train256_$mode.log" 2>&1
              echo "compile_mode '$mode':"; grep "tok/s" "$out/train256_$mode.log" | tail -3
          done ;;
    fla)  widths=${FLA_WIDTHS:-1024 1536 256}; set -- $widths
          # fla's configs compiled in parallel first (15 workers over the widths), so each width's timed
          # run only loads and benchmarks them; the configs that fault are named in FLA_SKIP_CONFIGS and
          # left out of the timed run too (tools/fla_warm.py)
          export FLA_SKIP_CONFIGS=${FLA_SKIP_CONFIGS:-$out/fla_skip_configs.txt}
          [ "${WARM_SECS:-240}" != 0 ] && PYTHONPATH=${FLA_PATH:-} python3 tools/fla_warm.py \
              --widths=${widths// /,} --procs=$((15 / $#)) --secs=${WARM_SECS:-240} > "$out/fla_warm.log" 2>&1 \
              && grep -v "worker .*: done" "$out/fla_warm.log"
          for w in $widths; do
              PYTHONPATH=${FLA_PATH:-} timeout ${FLA_SECS:-280} python3 bench.py --model --profile --no-table \
                  --widths=$w --variants='fla eager,ours compiled fused' > "$out/model${w}_fla.log" 2>&1
              grep -v -i warn "$out/model${w}_fla.log" | grep -v "^#     " | tail -24
              save_tunings
          done ;;
    *) echo "unknown step $s" ;;
    esac
done
save_tunings
