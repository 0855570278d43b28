# A quick demo: a small μP model on the character-level Shakespeare shipped in the repo.
# About 5 minutes on a laptop CPU, well under a minute on a GPU:
#   python train.py config/demo.py
#   python train.py config/demo.py --width=512 --out_dir=out-demo-512   # same LR: μP transfers it
dataset = 'shakespeare_char'
out_dir = 'out-demo'
width = 128
base_width = 128
n_layer = 4
mup = True
batch_size = 16
block_size = 128
max_iters = 300
lr_decay_iters = 300
warmup_iters = 30
eval_interval = 100
eval_iters = 10
log_interval = 20
learning_rate = 1e-2
min_lr = 1e-3
# SP's base values (train.py's defaults are the ones tuned for the GPT-2-BPE corpus data/gutenberg)
output_mult = 1.0
init_std = 0.02
weight_decay = 0.1
