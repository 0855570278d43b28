# The LR-transfer sweep in the paper's architecture (Liu & Gu, arXiv 2606.04048), on every GPU of the machine:
# 8 layers, 6 heads, tied GPT-2 BPE vocabulary, T = 512, widths 256 / 512 / 1024, the paper's LR grids,
# 10% warmup then cosine to 5e-5, clip 1.0, AdamW (0.9, 0.95) wd 0.1, SGD Nesterov 0.98 without decay.
# The corpus is the 121 public-domain books shipped in data/gutenberg (14.9M training tokens): a run of
# 300 steps x 16 x 512 tokens reads 2.5M of them, each at most once (training.Batches).
# output_mult = 4: the base width's best logits multiplier (docs/transfer.md, "The base values"); SP and μP use it
# alike (they are one model at the base width), μP scales it by 1/m.
#   python -m study.sweep config/sweep_paper.py                       # resumable: run it again to go on
#   python -m study.sweep config/sweep_paper.py --plot                # figure + optima from the CSV
out = 'out/lr_sweep_paper.csv'
dataset = 'gutenberg'
n_layer = 8
n_head = 6
base_width = 256
widths = '256,512,1024'
batch_size = 16
block_size = 512
max_iters = 300
warmup_iters = 30
min_lr = 5e-5
eval_iters = 10
eval_interval = 100          # the val loss along the run: when the ranking of widths settles
optimizers = 'adamw,sgd'
adamw_params = 'sp,mup'
sgd_params = 'sp,mup,mup_fixed_fanout'
adamw_lrs = '-11:-5'         # 2^-11 .. 2^-5 (4.9e-4 .. 3.1e-2; the paper's grid is 1e-3 .. 2e-2)
sgd_lrs = '-4:0'             # 0.0625 .. 1 (the paper's grid is 0.1 .. 1; 2^0 diverges at the base width)
output_mult = '4'
