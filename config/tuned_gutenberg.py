# Base hyper-parameters for data/gutenberg at the base width (256), carried unchanged to every width by μP.
# From the paper-architecture sweeps at the base width (assets/lr_sweep_paper.csv, 300 steps of 16 x 512
# tokens): the LR optimum 2^-8 and the logits multiplier 4 (docs/transfer.md); init std 0.02 (SP's, also the
# base width's best). Regenerate for train.py's settings with `python sweep.py config/tune_base.py`.
dataset = 'gutenberg'
base_width = 256
learning_rate = 0.00390625
output_mult = 4.0
init_std = 0.02
weight_decay = 0.1
