#!/usr/bin/env bash
# Issue 12's Triton conv and cross-entropy on one GPU, in one device call (under 10 minutes; each step
# has its own deadline and log under OUTDIR, so a step cut short loses only itself):
#   1. tools/gpu_check_conv.py and tools/gpu_check_ce.py: the kernels' values and every gradient against
#      float64 beside the torch path's errors, compiled vs eager, timing on/off, launch settings swept;
#   2. bench.py --model --profile at width 768: the fused compiled step with the Triton ops, the same with
#      the torch ops (compile fuses them; the A/B), and the fla-built LM (eager) last, as in
#      gpu_throughput.sh (fla's wheels in .whl, its autotunings in .carry: carry both).
#   bash tools/gpu_fused_ops.sh OUTDIR
set -uo pipefail
out=$1
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
timeout 150 python3 tools/gpu_check_conv.py > "$out/check_conv.log" 2>&1; echo "check_conv rc=$?" >> "$out/check_conv.log"
tail -25 "$out/check_conv.log"
timeout 150 python3 tools/gpu_check_ce.py > "$out/check_ce.log" 2>&1; echo "check_ce rc=$?" >> "$out/check_ce.log"
tail -25 "$out/check_ce.log"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl > /dev/null 2>&1 && export PYTHONPATH=/tmp/site
fi
export TRITON_CACHE_DIR=/tmp/triton_cache
mkdir -p $TRITON_CACHE_DIR
[ -d .carry/triton_autotune ] && cp -r .carry/triton_autotune/. $TRITON_CACHE_DIR/
timeout ${BENCH_SECS:-270} python3 bench.py --model --profile --no-table --widths=768 \
    --variants='ours compiled fused,ours compiled fused torch ops,fla eager' > "$out/model768.log" 2>&1
grep -v -i warn "$out/model768.log" | grep -v "^#     " | tail -40
(cd $TRITON_CACHE_DIR && find . -name "*.autotune.json" | tar czf "$out/triton_autotune.tgz" -T -)
