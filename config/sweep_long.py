# Learning-rate transfer at a long horizon: the paper's architecture and AdamW (config/sweep_paper.py), 1500
# steps of 16 x 512 tokens (12.3M tokens, none read twice) instead of 300. At this horizon the basins are flat
# near their minima, so the optima are judged by the fitted optimum and its seed interval (sweep.py), with a
# second seed at and next to each optimum.
#   python sweep.py config/sweep_long.py --out=assets/lr_sweep_long.csv --seeds=1337                  # the grid
#   python sweep.py config/sweep_long.py --out=assets/lr_sweep_long.csv --seeds=1338 --adamw_lrs=-9:-7  # near optima
#   python sweep.py config/sweep_long.py --out=assets/lr_sweep_long.csv --plot
out = 'out/lr_sweep_long.csv'
dataset = 'gutenberg'
n_layer = 8
n_head = 6
base_width = 256
widths = '256,512,1024'
batch_size = 16
block_size = 512
max_iters = 1500
warmup_iters = 150
min_lr = 5e-5
eval_iters = 10
eval_interval = 250          # the val loss along the run: the step at which the ranking and the optima settle
optimizers = 'adamw'
adamw_params = 'sp,mup'
adamw_lrs = '-10:-6'
seeds = '1337,1338'
output_mult = '4'
weight_decay = '0.1'         # the paper's; config/sweep_weight_decay.py adds other values to the same CSV
