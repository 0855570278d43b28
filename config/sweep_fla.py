# The AdamW LR-transfer sweep on flash-linear-attention's GatedDeltaNetForCausalLM (fla_mup.FlaLM: fla's model at
# the paper architecture's shapes, its rules from fla_mup.apply), as config/sweep_paper.py runs this repo's model:
# widths 256 and 1024, SP against μP, 300 steps of 16 x 512 tokens of the Gutenberg books. Its delta rule runs on
# this repo's kernel (fla 0.6 refuses its own backward with Triton < 3.7.1 on Hopper); the rest is fla's code.
# Needs a GPU and `pip install flash-linear-attention`. fla autotunes its kernels at each new shape, so the first
# run of each width is slow.
#   python -m study.sweep config/sweep_fla.py --out=assets/lr_sweep_fla.csv          # resumable
#   python -m study.sweep config/sweep_fla.py --out=assets/lr_sweep_fla.csv --seeds=1338 --adamw_lrs=-9.5:-7.5:0.5
#   python -m study.sweep config/sweep_fla.py --out=assets/lr_sweep_fla.csv --plot
model = 'fla'
out = 'out/lr_sweep_fla.csv'
dataset = 'gutenberg'
n_layer = 8
n_head = 6
base_width = 256
widths = '256,1024'
batch_size = 16
block_size = 512
max_iters = 300
warmup_iters = 30
min_lr = 5e-5
eval_iters = 10
eval_interval = 100
optimizers = 'adamw'
adamw_params = 'sp,mup'
adamw_lrs = '-11:-6'
output_mult = '4'
