# The paper's SGD setup: Nesterov momentum 0.98, no weight decay; otherwise as
# paper_adamw.py. Widths in the paper: 256, 512, 768, 1024; LR grid 0.1 ... 1.
#   torchrun --standalone --nproc_per_node=8 train.py config/paper_sgd.py --width=768
#   ... --parametrization=mup_fixed_fanout   # μP with the gates as an output layer of fixed fan-out
#   ... --parametrization=mup_nogdn          # the ablation: standard μP without the GDN gate/scalar rules
dataset = 'fineweb_edu'
out_dir = 'out-paper-sgd'
width = 768
base_width = 256
n_layer = 8
n_head = 6
mup = True
optimizer = 'sgd'
momentum = 0.98
learning_rate = 0.3
weight_decay = 0.0
grad_clip = 1.0
block_size = 1024
batch_size = 16
gradient_accumulation_steps = 30
max_iters = 20000
lr_decay_iters = 20000
warmup_iters = 2000
min_lr = 5e-5
eval_interval = 1000
eval_iters = 100
log_interval = 10
