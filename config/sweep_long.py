# Learning-rate transfer at a long horizon, on top of config/sweep_paper.py (the paper's architecture and data):
# AdamW only, 1500 steps of 16 x 512 tokens (12.3M tokens, none read twice) instead of 300. At this horizon the
# basins are flat near their minima, so the optima are judged by the fitted optimum and its seed interval, with
# the second seed at and next to each optimum (the exact commands: docs/transfer.md, Reproduce).
#   python -m study.sweep config/sweep_paper.py config/sweep_long.py --out=assets/lr_sweep_long.csv --seeds=1337
#   python -m study.sweep config/sweep_paper.py config/sweep_long.py --out=assets/lr_sweep_long.csv --plot
out = 'out/lr_sweep_long.csv'
max_iters = 1500
warmup_iters = 150
eval_interval = 250          # the val loss along the run: the step at which the ranking and the optima settle
optimizers = 'adamw'
adamw_lrs = '-10:-6'
seeds = '1337,1338,1339,1340'
weight_decay = '0.1'         # the paper's; config/sweep_weight_decay.py adds other values to the same CSV
weight_decay_rule = 'paper'  # the paper's; config/sweep_weight_decay.py adds the other rules' rows to the same CSV
