# Weight decay that transfers: lambda x LR at widths 256 and 1024, under μP with each decay rule and under SP,
# 1500 steps of 16 x 512 tokens (12.3M tokens, none read twice), two seeds. The rule whose optimal lambda and
# optimal LR both stay put, and the best loss at 1024, decide (docs/weight_decay.md).
#   python sweep.py config/sweep_weight_decay.py --out=assets/lr_sweep_wd.csv             # about an hour of GPU
#   python sweep.py config/sweep_weight_decay.py --out=assets/lr_sweep_wd.csv --plot --axis=weight_decay
out = 'out/lr_sweep_wd.csv'
dataset = 'gutenberg'
widths = '256,1024'
n_layer = '8'
optimizers = 'adamw'
adamw_params = 'sp,mup'
weight_decay_rule = 'paper,fixed_timescale,sqrt_width'
adamw_lrs = '-10:-6'
weight_decay = '0,0.05,0.1,0.2,0.4'
seeds = '1337,1338'
output_mult = '4'
batch_size = 16
block_size = 512
max_iters = 1500
warmup_iters = 150
min_lr = 5e-5
eval_interval = 250
