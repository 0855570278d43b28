#!/usr/bin/env bash
# The GPU runs behind README's "Why μP lost to SP, and what fixed it" (tools/TRANSFER.md has the tables).
# Each probe is a few sweep.py grids in the paper's architecture (config/sweep_paper.py), short runs,
# several sweep drivers sharing one GPU (each its own CSV and memory budget; sweeps resume where they stop).
#   bash tools/transfer_probes.sh output_mult OUTDIR    # the logit multiplier at the base width, and at 1024
#   bash tools/transfer_probes.sh adamw OUTDIR          # the AdamW sweep at output_mult 4; more base output_mults; no clipping
#   bash tools/transfer_probes.sh sgd OUTDIR            # the SGD sweep at output_mult 4
#   bash tools/transfer_probes.sh seeds OUTDIR          # a second seed at and near the optima
# Results: OUTDIR/*.csv (+ _config.csv), OUTDIR/*.log; OUTDIR/paper.csv is assets/lr_sweep_paper.csv
# with the new rows (the sweep skips the rows it has).
set -uo pipefail
probe=$1; out=$2
mkdir -p "$out"
cd "$(dirname "$0")/.."
python3 prepare_data.py --dataset=gutenberg >/dev/null || exit 1
# 300 steps of 16 x 512 tokens (2.5M tokens), 10% warmup; val loss every 100 steps
short="config/sweep_paper.py --max_iters=300 --warmup_iters=30 --eval_iters=10 --eval_interval=100"
sw() {  # sw NAME SECONDS ARGS...: one sweep driver in the background, stopped after SECONDS; if it
        # fails (not a timeout), the same sweep again uncompiled, where it stopped
    local name=$1 secs=$2; shift 2
    ( export PYTHONUNBUFFERED=1; t0=$SECONDS
      timeout "$secs" python3 sweep.py $short --out="$out/$name.csv" "$@" > "$out/$name.log" 2>&1
      rc=$?; left=$((secs - SECONDS + t0))
      if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $left -gt 30 ]; then
          echo "== failed ($rc): again with --compile=False" >> "$out/$name.log"
          timeout "$left" python3 sweep.py $short --out="$out/$name.csv" "$@" --compile=False >> "$out/$name.log" 2>&1
      fi ) &
}
case $probe in
output_mult)
    # base width: SP (== μP there) over output_mult x LR, AdamW and SGD
    sw base 480 --widths=256 --optimizers=adamw,sgd --output_mult=1,2,4,8,16,32 --adamw_lrs=-10:-6 \
        --sgd_lrs=-4:0 --workers=3 --gpu_mem_gb=36
    # width 1024, AdamW: μP around its base optimum, SP around its lower one, output_mult 1 / 4 / 16
    sw mup1024 480 --widths=1024 --optimizers=adamw --adamw_params=mup --output_mult=1,4,16 \
        --adamw_lrs=-9:-7 --workers=3 --gpu_mem_gb=50
    sw sp1024 480 --widths=1024 --optimizers=adamw --adamw_params=sp --output_mult=1,4,16 \
        --adamw_lrs=-11:-9 --workers=3 --gpu_mem_gb=50 --compile=False  # (uncompiled: an A/B of the speed)
    ;;
adamw)
    cp assets/lr_sweep_paper.csv "$out/paper.csv"; cp assets/lr_sweep_paper_config.csv "$out/paper_config.csv"
    sw paper 520 --optimizers=adamw --workers=4 --gpu_mem_gb=75
    sw base_c 520 --widths=256 --optimizers=adamw --output_mult=8,16 --adamw_lrs=-10:-6 --workers=2 --gpu_mem_gb=20
    # no clipping (grad_clip is a setting of the whole CSV, so another file): μP and SP at width 1024 at
    # their optima, and the base width
    ( for g in "--widths=1024 --adamw_params=mup --adamw_lrs=-9,-8 --output_mult=4" \
               "--widths=1024 --adamw_params=sp --adamw_lrs=-10 --output_mult=1,4" \
               "--widths=256 --adamw_lrs=-9,-8 --output_mult=4"; do
          PYTHONUNBUFFERED=1 timeout 500 python3 sweep.py $short --out="$out/noclip.csv" --grad_clip=0 \
              --optimizers=adamw $g --workers=2 --gpu_mem_gb=40 >> "$out/noclip.log" 2>&1
      done ) &
    ;;
sgd)
    cp assets/lr_sweep_paper.csv "$out/paper.csv"; cp assets/lr_sweep_paper_config.csv "$out/paper_config.csv"
    sw paper 520 --optimizers=sgd --workers=7 --gpu_mem_gb=130
    ;;
seeds)  # a second seed at and next to each optimum: the seed spread
    s2="--seeds=1338 --output_mult=4"
    sw s_adamw1024 330 $s2 --optimizers=adamw --widths=1024 --adamw_lrs=-10:-8 --workers=3 --gpu_mem_gb=60
    sw s_small 330 $s2 --widths=256,512 --adamw_lrs=-9:-8 --sgd_lrs=-3:-2 --workers=3 --gpu_mem_gb=35
    sw s_sgd1024 330 $s2 --optimizers=sgd --widths=1024 --sgd_lrs=-3,-1 --workers=3 --gpu_mem_gb=40
    ;;
*) echo "unknown probe $probe"; exit 1 ;;
esac
wait
tail -n 3 "$out"/*.log
