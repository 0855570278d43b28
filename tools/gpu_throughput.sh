#!/usr/bin/env bash
# Issue 12's same-run throughput figures in one device call (under 10 minutes; each step has its own
# deadline and writes its log under OUTDIR at once, so a step cut short loses only itself):
#   1. train.py at the sweep's shape (config/sweep_paper.py: 8 layers, T 512, 16 x 512 tokens), width 1024,
#      compiled, fused: its tokens/s;
#   2. sweep.py at the same shape, 4 workers (SWEEP_WORKERS="4 1": each count), 8 AdamW LRs at width 1024:
#      its aggregate tokens/s after the first wave ("sweep: ... after the first 4 runs"), against step 1's;
#   3. bench.py --model --profile at width 768: ours compiled fused against the fla-built LM, eager, and
#      the CUDA kernel time of each step by kind. fla's autotuning takes minutes on a fresh machine, so
#      it runs last; its results (Triton's *.autotune.json, a few KB) are saved to OUTDIR/triton_autotune:
#      copied to .carry/triton_autotune and carried, a later call skips the tuning.
# fla travels as wheels in .whl (README, "The kernel"): the device call names .whl (and .carry) in carry.
#   bash tools/gpu_throughput.sh OUTDIR
set -uo pipefail
out=$1
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python3 prepare_data.py --dataset=gutenberg > /dev/null || exit 1
shape="--dataset=gutenberg --n_layer=8 --n_head=6 --batch_size=16 --block_size=512 --warmup_iters=30"
timeout 100 python3 train.py $shape --width=1024 --mup=True --max_iters=150 --lr_decay_iters=150 \
    --eval_interval=1000 --eval_iters=2 --log_interval=10 --out_dir=/tmp/tp_train > "$out/train1024.log" 2>&1
grep "tok/s" "$out/train1024.log" | tail -3
for nw in ${SWEEP_WORKERS:-4}; do  # e.g. SWEEP_WORKERS="4 1": each worker count in turn, its own log
    timeout 160 python3 sweep.py config/sweep_paper.py --widths=1024 --optimizers=adamw --adamw_params=mup \
        --adamw_lrs=-12:-5 --workers=$nw --out=/tmp/tp_sweep$nw.csv > "$out/sweep1024_w$nw.log" 2>&1
    echo "workers $nw:"; grep "^sweep:" "$out/sweep1024_w$nw.log" | tail -2
done
[ "${BENCH:-1}" = 0 ] && exit 0  # BENCH=0: only the train.py / sweep figures
source tools/fla_env.sh  # fla's wheels and autotunings (FLA_PATH, TRITON_CACHE_DIR)
PYTHONPATH=${FLA_PATH:-} timeout ${BENCH_SECS:-300} python3 bench.py --model --profile --no-table --widths=768 \
    --variants="${BENCH_VARIANTS:-ours compiled fused,fla eager}" \
    > "$out/model768_fla.log" 2>&1
grep -v -i warn "$out/model768_fla.log" | grep -v "^#     " | tail -30
(cd $TRITON_CACHE_DIR && find . -name "*.autotune.json" | tar czf "$out/triton_autotune.tgz" -T -)
