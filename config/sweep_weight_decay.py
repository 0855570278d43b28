# Weight decay that transfers, on top of config/sweep_paper.py and config/sweep_long.py (whose CSV and lambda =
# 0.1 rows it shares): lambda x LR at widths 256 and 1024, under μP with each decay rule and under SP. The rules
# only rescale lambda (under μP at width 1024 fixed_timescale's lambda is the paper's 4 lambda, sqrt_width's
# 2 lambda), so the sweep trains each distinct decay once: 7 at 1024 under μP. The rule whose optimal lambda and
# optimal LR both stay put, and the best loss at 1024, decide (docs/weight_decay.md). On one H100 a width-1024
# run takes 43 s; seed 1337 is 40 new width-1024 runs and 16 at 256 (about 35 min), then seed 1338 at and next
# to each optimum. With W for `python -m study.sweep config/sweep_paper.py config/sweep_long.py
# config/sweep_weight_decay.py --out=assets/lr_sweep_long.csv`:
#   W --widths=256 --adamw_lrs=-9:-6
#   W --widths=1024 --adamw_params=mup
#   W --widths=1024 --adamw_params=sp --adamw_lrs=-11:-8
#   W --plot --axis=weight_decay
widths = '256,1024'
adamw_lrs = '-10:-7'
weight_decay = '0,0.05,0.1,0.2,0.4'
weight_decay_rule = 'paper,fixed_timescale,sqrt_width'
seeds = '1337'
