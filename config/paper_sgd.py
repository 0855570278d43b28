# The paper's SGD setup: Nesterov momentum 0.98, no weight decay, the rest as paper_adamw.py (name both:
# config files apply in order). Widths in the paper: 256, 512, 768, 1024; LR grid 0.1 ... 1.
#   torchrun --standalone --nproc_per_node=8 train.py config/paper_adamw.py config/paper_sgd.py --width=768
#   ... --parametrization=mup_fixed_fanout   # μP with the gates as an output layer of fixed fan-out
#   ... --parametrization=mup_nogdn          # the ablation: standard μP without the GDN gate/scalar rules
out_dir = 'out-paper-sgd'
width = 768
optimizer = 'sgd'
momentum = 0.98
learning_rate = 0.3
weight_decay = 0.0
