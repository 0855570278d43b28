# Base hyper-parameters tuned at the base width (256) for data/gutenberg; μP carries them unchanged to every width.
# Written by `python -m study.tune config/tune_base.py --tuned_out=config/tuned_gutenberg.py` from assets/tune_gutenberg.csv: the LR and one key at a time, 1 seed(s), runs of one epoch of steps x 16 x 1024 tokens; fitted best val loss 3.9326.
#   output_mult: 2 -> 3.9791 at 2^-7.96, 4 -> 3.9334 at 2^-7.85, 8 -> 3.9518 at 2^-7.94
#   init_std: 0.01 -> 3.9555 at 2^-8.87, 0.02 -> 3.9334 at 2^-7.85, 0.04 -> 3.9479 at 2^-7.42
#   weight_decay: 0 -> 3.9430 at 2^-7.91, 0.1 -> 3.9334 at 2^-7.85, 0.2 -> 3.9326 at 2^-7.81 (the best is the list's largest: extend weight_decay and tune again)
dataset = 'gutenberg'
base_width = 256
learning_rate = 0.00445
output_mult = 4.0
init_std = 0.02
weight_decay = 0.2
