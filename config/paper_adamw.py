# The paper's AdamW setup (Liu & Gu, arXiv 2606.04048): FineWeb-Edu, GPT-2 tokenizer,
# 8 layers, 6 heads, seq 1024, global batch 480, 20k steps, 2k warmup, cosine to 5e-5, clip 1.0.
# Widths in the paper: 256, 512, 1024, 1536; LR grid 1e-3 ... 2e-2.
#   python prepare_fineweb.py --max_tokens=10e9     # once
#   torchrun --standalone --nproc_per_node=8 train.py config/paper_adamw.py --width=1024
dataset = 'fineweb_edu'
out_dir = 'out-paper-adamw'
width = 1024
base_width = 256
n_layer = 8
n_head = 6
mup = True
output_mult = 1.0                   # the paper's base values, not train.py's (tuned for gutenberg)
init_std = 0.02
optimizer = 'adamw'
learning_rate = 4e-3
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
block_size = 1024
batch_size = 16
gradient_accumulation_steps = 30   # 16 x 30 = 480 sequences per step, split over the GPUs
max_iters = 20000
lr_decay_iters = 20000
warmup_iters = 2000
min_lr = 5e-5
eval_interval = 1000
eval_iters = 100
log_interval = 10
