# The joint check of depth and width transfer, on top of config/sweep_depth.py (its settings: 600 steps of
# 16 x 512 tokens): the base LR tuned at width 256 and 4 layers, carried to width 1024 and 16 layers under μP
# with CompleteP's depth rule, against an LR sweep there. learning_rate is the fitted optimum at 256 x 4 under
# CompleteP in assets/lr_sweep_depth.csv by the plain mean of both seeds (2^-7.74; with the seeds' levels fitted
# out, which `python -m study.sweep config/sweep_depth.py --out=assets/lr_sweep_depth.csv --plot` prints: 2^-7.90,
# inside its interval [-8.60, -7.44]); the summary prints the loss at it and its distance from
# the fitted best at 1024 x 16. On one H100 a run is about half a minute. With J for `python -m study.sweep
# config/sweep_depth.py config/sweep_joint.py --out=assets/lr_sweep_joint.csv`:
#   J --seeds=1337
#   J --seeds=1338 --adamw_lrs=-9:-7
#   J --plot
out = 'out/lr_sweep_joint.csv'
widths = '1024'
n_layer = '16'
depth_rule = 'completep'
adamw_lrs = '-10:-6'
learning_rate = 0.00469      # 2^-7.74
