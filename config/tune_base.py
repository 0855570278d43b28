# μTransfer, step 1: tune the base values at the base width on the default corpus, at train.py's settings
# (T 1024, 16 sequences a step, one epoch), one key at a time with the LR (study/tune.py's `tune`: output_mult,
# init_std, weight_decay), and write them as a config file that train.py and the sweep take. On a GPU machine:
# 63 runs of width 256 and 15M tokens each (9 LRs x 3 values for each of the three keys, the middle value
# shared; docs/transfer.md#reproduce has the time it took):
#   python -m study.tune config/tune_base.py --tuned_out=config/tuned_gutenberg.py   # resumable
#   python train.py config/tuned_gutenberg.py --width=768 --mup=True                  # step 2: any width, the same values
#   python -m study.sweep config/tune_base.py config/tuned_gutenberg.py --widths=1024 --adamw_params=mup \
#       --adamw_lrs=-10:-7 --seeds=1337,1338 --out=assets/tuned_check_gutenberg.csv   # step 3, the check: 10
#       runs (the grid and the tuned LR, 2 seeds), about 11 min of one H100; the summary prints the tuned LR's
#       loss at width 1024 and its distance from the fitted best there, and --plot draws it
out = 'assets/tune_gutenberg.csv'         # committed: the command resumes from the runs it holds
dataset = 'gutenberg'
widths = '256'
base_width = 256
n_layer = '8'
optimizers = 'adamw'
adamw_params = 'sp'                          # at the base width μP is SP
adamw_lrs = '-10:-6:0.5'
output_mult = '2,4,8'
init_std = '0.01,0.02,0.04'
weight_decay = '0,0.1,0.2'
batch_size = 16
block_size = 1024
max_iters = 0                                # one epoch, as train.py
warmup_iters = -1                            # a tenth of the run, as train.py
min_lr = 5e-5
