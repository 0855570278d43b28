# The joint check of depth and width transfer: the base LR tuned at width 256 and 4 layers, carried to width
# 1024 and 16 layers under μP with CompleteP's depth rule, against an LR sweep there. config/sweep_depth.py's
# settings (600 steps of 16 x 512 tokens). learning_rate is the fitted optimum at 256 x 4 under CompleteP in
# assets/lr_sweep_depth.csv (`python sweep.py config/sweep_depth.py --out=assets/lr_sweep_depth.csv --plot`:
# 2^-7.44); the summary prints the loss at it and its distance from the fitted best at 1024 x 16. On one H100
# a run is about half a minute.
#   python sweep.py config/sweep_joint.py --out=assets/lr_sweep_joint.csv --seeds=1337
#   python sweep.py config/sweep_joint.py --out=assets/lr_sweep_joint.csv --seeds=1338 --adamw_lrs=-9:-7
#   python sweep.py config/sweep_joint.py --out=assets/lr_sweep_joint.csv --plot
out = 'out/lr_sweep_joint.csv'
dataset = 'gutenberg'
widths = '1024'
n_layer = '16'
base_width = 256
base_depth = 8
depth_rule = 'completep'
optimizers = 'adamw'
adamw_params = 'mup'
adamw_lrs = '-10:-6'
learning_rate = 0.00577      # 2^-7.44
seeds = '1337,1338'
output_mult = '4'
batch_size = 16
block_size = 512
max_iters = 600
warmup_iters = 60
min_lr = 5e-5
eval_interval = 200
