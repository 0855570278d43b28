# Depth transfer: does the base LR carry across depth, as across width? Width 256 (the base), depths 2..16
# (base depth 8), the paper's block and data, AdamW under width-only μP ('none', depth ignored), depth-μP and
# CompleteP, 600 steps of 16 x 512 tokens, two seeds. Judged by the fitted optimum and its seed interval.
#   python -m study.sweep config/sweep_depth.py --out=assets/lr_sweep_depth.csv
#   python -m study.sweep config/sweep_depth.py --out=assets/lr_sweep_depth.csv --plot
out = 'out/lr_sweep_depth.csv'
dataset = 'gutenberg'
widths = '256'
n_layer = '2,4,8,16'
base_depth = 8
depth_rule = 'none,depth_mup,completep'
optimizers = 'adamw'
adamw_params = 'mup'
adamw_lrs = '-11:-5'
seeds = '1337,1338'
output_mult = '4'
batch_size = 16
block_size = 512
max_iters = 600
warmup_iters = 60
min_lr = 5e-5
eval_interval = 200
