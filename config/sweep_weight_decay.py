# Weight decay that transfers: lambda x LR at widths 256 and 1024, under μP with each decay rule and under SP,
# at config/sweep_long.py's settings (1500 steps of 16 x 512 tokens), so the runs share its CSV and its
# lambda = 0.1 rows. The rules only rescale lambda (under μP at width 1024, fixed_timescale's lambda is the
# paper's 4 lambda, sqrt_width's 2 lambda), so sweep.py trains each distinct decay once: 7 at 1024 under μP.
# The rule whose optimal lambda and optimal LR both stay put, and the best loss at 1024, decide
# (docs/weight_decay.md). On one H100 a width-1024 run takes 43 s; seed 1337 is 40 new width-1024 runs and 16
# at 256 (about 35 min), then seed 1338 at and next to each optimum:
#   python sweep.py config/sweep_weight_decay.py --out=assets/lr_sweep_long.csv --widths=256 --adamw_lrs=-9:-6
#   python sweep.py config/sweep_weight_decay.py --out=assets/lr_sweep_long.csv --widths=1024 --adamw_params=mup
#   python sweep.py config/sweep_weight_decay.py --out=assets/lr_sweep_long.csv --widths=1024 --adamw_params=sp \
#       --adamw_lrs=-11:-8
#   python sweep.py config/sweep_weight_decay.py --out=assets/lr_sweep_long.csv --plot --axis=weight_decay
out = 'out/lr_sweep_long.csv'
dataset = 'gutenberg'
n_layer = 8
n_head = 6
base_width = 256
widths = '256,1024'
batch_size = 16
block_size = 512
max_iters = 1500
warmup_iters = 150
min_lr = 5e-5
eval_iters = 10
eval_interval = 250
optimizers = 'adamw'
adamw_params = 'sp,mup'
weight_decay_rule = 'paper,fixed_timescale,sqrt_width'
adamw_lrs = '-10:-7'
weight_decay = '0,0.05,0.1,0.2,0.4'
seeds = '1337'
output_mult = '4'
