#!/usr/bin/env bash
# The GPU runs behind README's "Why μP lost to SP, and what fixed it" (tools/TRANSFER.md has the tables).
# Each probe is a few sweep.py grids in the paper's architecture (config/sweep_paper.py), short runs,
# several sweep drivers sharing one GPU (each its own CSV and memory budget; sweeps resume where they stop).
#   bash tools/transfer_probes.sh output_mult OUTDIR    # the logit multiplier at the base width, and at 1024
#   bash tools/transfer_probes.sh adamw OUTDIR          # the AdamW sweep at output_mult 4; more base output_mults; no clipping
#   bash tools/transfer_probes.sh sgd OUTDIR            # the SGD sweep at output_mult 4
#   bash tools/transfer_probes.sh seeds OUTDIR          # a second seed at and near the optima
#   bash tools/transfer_probes.sh sgd_noclip OUTDIR     # the SGD sweep without gradient clipping (SP and μP)
#   bash tools/transfer_probes.sh sgd_noclip_low OUTDIR # the same at LRs that train unclipped; and the quick grid
#                                                       # unclipped, and its second seed near the optima
#   bash tools/transfer_probes.sh sgd_noclip_rules OUTDIR  # unclipped SGD with the other μP-SGD rules: is the
#                                                       # paper's scalar rule what shrinks μP's stable range?
#   bash tools/transfer_probes.sh gate_lr OUTDIR       # unclipped SGD: the base width's gate LR, and the paper's
#                                                       # rule with a raised one at 512, 1024; seed 1338
#   bash tools/transfer_probes.sh sgd_momentum OUTDIR  # SGD at Nesterov 0.9: paper arch (clip 1.0) and quick
#   bash tools/transfer_probes.sh quick_deep OUTDIR    # the quick grid's SGD at 4 layers, 600 steps, clip and not
#   bash tools/transfer_probes.sh momentum_more OUTDIR # the two above, resumed from assets/; more LRs, a seed
#   bash tools/transfer_probes.sh next OUTDIR          # the quick grid at 0.9 unclipped; init_std (ran 2026-12-02)
#   bash tools/transfer_probes.sh quick_output_mult OUTDIR  # only its first half (output_mult x LR at 256)
#   bash tools/transfer_probes.sh quick OUTDIR          # the quick default: output_mult at the base width,
#                                                       # then the whole default grid at the best one
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
sgd_noclip)  # does clipping at 1.0 hide SP-SGD's drift? (SP's small-LR runs are clipped every step)
    cp assets/lr_sweep_paper_noclip.csv "$out/noclip.csv"; cp assets/lr_sweep_paper_noclip_config.csv "$out/noclip_config.csv"
    sw noclip 520 --optimizers=sgd --sgd_params=sp,mup --grad_clip=0 --workers=6 --gpu_mem_gb=85
    ;;
sgd_noclip_low)  # unclipped, every run at 2^-4..2^0 diverged: LRs below them, paper arch and quick grid
    cp assets/lr_sweep_paper_noclip.csv "$out/noclip.csv"; cp assets/lr_sweep_paper_noclip_config.csv "$out/noclip_config.csv"
    sw noclip 480 --optimizers=sgd --sgd_params=sp,mup --grad_clip=0 --sgd_lrs=-9:-5 --workers=5 --gpu_mem_gb=80
    cp assets/lr_sweep.csv "$out/lr_sweep.csv"; cp assets/lr_sweep_config.csv "$out/lr_sweep_config.csv"
    ( export PYTHONUNBUFFERED=1
      timeout 200 python3 sweep.py --optimizers=sgd --sgd_params=sp,mup --grad_clip=0 --sgd_lrs=-10:-3 \
          --output_mult=2 --out="$out/lr_sweep_noclip.csv" --workers=4 --gpu_mem_gb=20 > "$out/quick_noclip.log" 2>&1
      timeout 250 python3 sweep.py --seeds=1338 --adamw_lrs=-11:-7 --sgd_lrs=-6:-2 --output_mult=2 \
          --out="$out/lr_sweep.csv" --workers=4 --gpu_mem_gb=20 > "$out/quick_seed.log" 2>&1 ) &
    ;;
sgd_noclip_rules)  # μP's largest trainable LR fell x8 from 256 to 512 unclipped under the paper's rule;
                   # the coordinate check blames its scalar LR m^+1/2 (A_log change ~ m^0.57): the same cells
                   # under the fixed-fan-out rule (scalars m^0) and without the GDN rules separate it
    cp assets/lr_sweep_paper_noclip.csv "$out/noclip.csv"; cp assets/lr_sweep_paper_noclip_config.csv "$out/noclip_config.csv"
    sw noclip 480 --optimizers=sgd --sgd_params=mup_fixed_fanout,mup_nogdn --widths=512,1024 --grad_clip=0 \
        --sgd_lrs=-9:-5 --workers=5 --gpu_mem_gb=80
    # and the seed spread unclipped (μP at 512 was worse than at 256 with one seed): seed 1338 at each
    # optimum and next to it, in a CSV of its own (one driver per CSV); SP's 1024 optimum was at the
    # grid's low edge: 2^-10 there
    ( export PYTHONUNBUFFERED=1; end=$((SECONDS + 480))
      for g in "--widths=256 --sgd_lrs=-8,-7 --seeds=1338" "--widths=512 --sgd_lrs=-9:-7 --seeds=1338" \
               "--widths=1024 --sgd_lrs=-10:-8 --seeds=1338" "--widths=1024 --sgd_lrs=-10 --seeds=1337"; do
          [ $SECONDS -lt $end ] && timeout $((end - SECONDS)) python3 sweep.py $short --out="$out/noclip_seeds.csv" --optimizers=sgd --sgd_params=sp,mup \
              --grad_clip=0 $g --workers=3 --gpu_mem_gb=40 >> "$out/noclip_seeds.log" 2>&1
      done ) &
    ;;
gate_lr)  # unclipped SGD: μP without the GDN rules (gates m^0, scalars m^1) beat the paper's rule at 1024
         # (5.49 vs 5.69) and was the only variant better at every width. At 1024 it is the paper's rule with
         # the gates' LR x2. Is the base width's gate LR (gate_lr_mult) simply too low? Tune it at 256; run
         # the paper's rule at x2, x4 at 512 and 1024; and seed 1338 at the optima (one driver per CSV)
    noclip="--optimizers=sgd --grad_clip=0"
    sw gate_base 430 $noclip --widths=256 --gate_lr_mult=0.25,4,16 --sgd_lrs=-8:-6 --axis=gate_lr_mult \
        --workers=3 --gpu_mem_gb=30
    sw gate_wide 430 $noclip --widths=512,1024 --sgd_params=mup --gate_lr_mult=2,4 --sgd_lrs=-8,-7 \
        --workers=4 --gpu_mem_gb=60
    ( export PYTHONUNBUFFERED=1; end=$((SECONDS + 430))
      for g in "--widths=256 --sgd_lrs=-7" "--widths=512 --sgd_params=mup --sgd_lrs=-8" \
               "--widths=1024 --sgd_params=mup --sgd_lrs=-8" "--widths=1024 --sgd_params=mup_nogdn --sgd_lrs=-7"; do
          [ $SECONDS -lt $end ] && timeout $((end - SECONDS)) python3 sweep.py $short $noclip --seeds=1338 $g \
              --out="$out/noclip_seeds.csv" --workers=0 --compile=False >> "$out/noclip_seeds.log" 2>&1
      done ) &
    ;;
sgd_momentum)  # the one candidate of README's table not yet run: Nesterov 0.9 instead of the paper's 0.98
              # (momentum is a setting of the whole CSV: files of their own), paper arch clipped as the
              # paper, and the quick default
    sw momentum 480 --optimizers=sgd --sgd_params=sp,mup --momentum=0.9 --sgd_lrs=-5:0 --workers=6 --gpu_mem_gb=80
    ( export PYTHONUNBUFFERED=1
      timeout 300 python3 sweep.py --optimizers=sgd --sgd_params=sp,mup --momentum=0.9 --sgd_lrs=-6:1 \
          --out="$out/quick_momentum.csv" --workers=4 --gpu_mem_gb=10 > "$out/quick_momentum.log" 2>&1 ) &
    ;;
quick_deep)  # the quick default's SGD shows no SP drift at all (2 layers, 200 steps, even unclipped): the same
            # model at 4 layers and 600 steps, SGD, widths 256..1024 (4x, the target's range), clipped
            # (its grid: the quick default's optima are 2^-5..2^-2) and not (2^-9..2^-4), one CSV each
    deep="--n_layer=4 --max_iters=600 --warmup_iters=60 --eval_interval=200 --widths=256,512,1024 --optimizers=sgd --sgd_params=sp,mup"
    ( export PYTHONUNBUFFERED=1
      timeout 480 python3 sweep.py $deep --sgd_lrs=-6:-1 --out="$out/quick_deep.csv" --workers=4 --gpu_mem_gb=20 \
          > "$out/quick_deep.log" 2>&1 ) &
    ( export PYTHONUNBUFFERED=1
      timeout 480 python3 sweep.py $deep --sgd_lrs=-9:-4 --grad_clip=0 --out="$out/quick_deep_noclip.csv" --workers=4 \
          --gpu_mem_gb=20 > "$out/quick_deep_noclip.log" 2>&1 ) &
    ;;
momentum_more)  # resumes sgd_momentum and quick_deep from their CSVs in assets/ (base width first, so a cut
               # run still has it), the paper arch's momentum-0.9 grid up to 2^1 (0.9's optimum sits ~5x
               # above 0.98's), and for the quick grid at 0.9 the fixed-fan-out rule and seed 1338 near the optima
    secs=${PROBE_SECS:-330}
    for f in lr_sweep_paper_momentum lr_sweep_quick_deep lr_sweep_quick_deep_noclip; do
        cp assets/$f.csv assets/${f}_config.csv "$out/"
    done
    cp assets/lr_sweep_momentum09.csv "$out/lr_sweep_momentum.csv"; cp assets/lr_sweep_momentum09_config.csv "$out/lr_sweep_momentum_config.csv"
    deep="--n_layer=4 --max_iters=600 --warmup_iters=60 --eval_interval=200 --optimizers=sgd --sgd_params=sp,mup"
    run() {  # run NAME ARGS...: sweep.py at the base width, then every width, into OUTDIR/NAME.csv, one deadline
        local name=$1; shift
        ( export PYTHONUNBUFFERED=1; end=$((SECONDS + secs))
          for w in 256 256,512,1024; do
              [ $((end - SECONDS)) -gt 10 ] && timeout $((end - SECONDS)) python3 sweep.py "$@" --widths=$w --out="$out/$name.csv" >> "$out/$name.log" 2>&1
          done ) &
    }
    run lr_sweep_paper_momentum $short --optimizers=sgd --sgd_params=sp,mup --momentum=0.9 --sgd_lrs=-5:1 --workers=6 --gpu_mem_gb=80
    run lr_sweep_quick_deep $deep --sgd_lrs=-6:-1 --workers=3 --gpu_mem_gb=15
    run lr_sweep_quick_deep_noclip $deep --sgd_lrs=-9:-4 --grad_clip=0 --workers=3 --gpu_mem_gb=15
    ( export PYTHONUNBUFFERED=1; q="--optimizers=sgd --momentum=0.9 --out=$out/lr_sweep_momentum.csv --workers=3 --gpu_mem_gb=10"
      timeout 150 python3 sweep.py $q --sgd_params=mup_fixed_fanout --sgd_lrs=-6:1 >> "$out/lr_sweep_momentum.log" 2>&1
      timeout 150 python3 sweep.py $q --sgd_params=sp,mup --sgd_lrs=-4:-1 --seeds=1338 >> "$out/lr_sweep_momentum.log" 2>&1 ) &
    ;;
next)  # ran on one H200, 2026-12-02 (tools/TRANSFER.md, fifth session; assets/lr_sweep_noclip09.*,
      # assets/lr_sweep_paper_init_std.*, assets/logs/{quick_noclip09,init_std256,init_std1024}.log):
      # (1) the quick default at 0.9 without clipping: does SP drift there once clipping stops rescaling
      # its LR (as in the paper's architecture)? (2) the init std at the base width (the last untested
      # candidate): AdamW, paper architecture, init_std x LR at 256, then 1024 under SP and μP at the two
      # LRs best at 0.02
    ( export PYTHONUNBUFFERED=1
      timeout 300 python3 sweep.py --optimizers=sgd --sgd_params=sp,mup --momentum=0.9 --grad_clip=0 --sgd_lrs=-9:-3 \
          --widths=256,512,1024 --out="$out/lr_sweep_noclip09.csv" --workers=4 --gpu_mem_gb=15 \
          > "$out/quick_noclip09.log" 2>&1 ) &
    # the base width first (SP is every parametrization there), then 1024 at the two LRs that were best at
    # both widths at init_std 0.02 (2^-9, 2^-8; assets/lr_sweep_paper.csv), one driver after the other
    ( sw init_std256 150 --optimizers=adamw --adamw_params=sp --init_std=0.005,0.01,0.02,0.04 --axis=init_std \
          --widths=256 --adamw_lrs=-9:-8 --workers=8 --gpu_mem_gb=90
      wait
      sw init_std1024 380 --optimizers=adamw --adamw_params=sp,mup --init_std=0.005,0.01,0.02,0.04 \
          --axis=init_std --widths=1024 --adamw_lrs=-9:-8 --workers=6 --gpu_mem_gb=90
      wait ) &
    ;;
quick_output_mult)  # only the first half of `quick`: the base width's output_mult x LR, kept as a CSV
    PYTHONUNBUFFERED=1 timeout 300 python3 sweep.py --widths=256 --output_mult=1,2,4,8,16 --axis=output_mult \
        --out="$out/quick_output_mult.csv" --workers=4 --gpu_mem_gb=20 > "$out/quick_output_mult.log" 2>&1
    ;;
quick)  # the character-level default of sweep.py (no config file): tune output_mult at the base width
        # (SP there is every parametrization), then run the default grid at the AdamW-best value
    ( export PYTHONUNBUFFERED=1
      timeout 200 python3 sweep.py --widths=256 --output_mult=1,2,4,8,16 --axis=output_mult \
          --out="$out/quick_output_mult.csv" --workers=6 --gpu_mem_gb=40 > "$out/quick_output_mult.log" 2>&1
      best=$(python3 tools/transfer_tables.py --best_output_mult "$out/quick_output_mult.csv" 2>>"$out/quick_output_mult.log")
      echo "== best base output_mult (AdamW): $best" >> "$out/quick_output_mult.log"
      timeout 300 python3 sweep.py --output_mult="${best:-1}" --out="$out/lr_sweep.csv" --workers=6 \
          --gpu_mem_gb=40 > "$out/quick.log" 2>&1 ) &
    ;;
*) echo "unknown probe $probe"; exit 1 ;;
esac
wait
tail -n 3 "$out"/*.log
