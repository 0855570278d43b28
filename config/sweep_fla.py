# The AdamW LR-transfer sweep on flash-linear-attention's GatedDeltaNetForCausalLM, on top of
# config/sweep_paper.py (the paper's architecture, data and schedule): fla_mup.FlaLM builds fla's model at the
# same shapes, its rules from fla_mup.apply; widths 256 and 1024, SP against μP. Its delta rule runs on this
# repo's kernel (fla 0.6 refuses its own backward with Triton < 3.7.1 on Hopper); the rest is fla's code.
# Needs a GPU. fla autotunes its kernels at each new shape, so the first run of each width is slow.
#   python -m study.sweep config/sweep_paper.py config/sweep_fla.py --out=assets/lr_sweep_fla.csv     # resumable
#   python -m study.sweep config/sweep_paper.py config/sweep_fla.py --out=assets/lr_sweep_fla.csv --seeds=1338 --adamw_lrs=-9.5:-7.5:0.5
#   python -m study.sweep config/sweep_paper.py config/sweep_fla.py --out=assets/lr_sweep_fla.csv --plot
model = 'fla'
out = 'out/lr_sweep_fla.csv'
widths = '256,1024'
optimizers = 'adamw'
adamw_lrs = '-11:-6'
