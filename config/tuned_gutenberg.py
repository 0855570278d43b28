# Base hyper-parameters for data/gutenberg at the base width (256), carried unchanged to every width by μP.
# From the paper-architecture sweeps at the base width (assets/lr_sweep_paper.csv, 300 steps of 16 x 512
# tokens): the LR optimum 2^-8 and the logits multiplier 4 (docs/transfer.md); init std 0.02 (SP's, also the
# base width's best). At train.py's own settings the tune so far agrees (assets/tune_gutenberg.csv): c = 4
# and init std 0.02 have the lowest loss, and the LR's fitted optimum is 2^-7.85, its loss 0.001 below 2^-8's.
# `python sweep.py config/tune_base.py` finishes the tune and rewrites this file.
dataset = 'gutenberg'
base_width = 256
learning_rate = 0.00390625
output_mult = 4.0
init_std = 0.02
weight_decay = 0.1
