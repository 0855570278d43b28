# SGD at six times the batch, on top of config/sweep_paper.py: does clipping become rare, and does SP drift there?
# Clip 1.0 as the paper, but 96 sequences of 512 tokens a step (6 x 16 by gradient accumulation, 49K tokens)
# for 300 steps: 14.7M tokens, the corpus once. At 16 sequences the clip rescales 37-67% of the steps at the
# optima and SP's drift hides behind it (docs/transfer.md); a 6x batch cuts the gradient noise's share of the
# norm by sqrt(6), and each row's clip_frac says whether clipping became rare (it did not: at 300 steps the
# norm is the gradient's mean, docs/transfer.md). The paper's batch is 480 x 1024. On one H100, about 20 min a
# seed with 8 workers:
#   python -m study.sweep config/sweep_paper.py config/sweep_sgd_batch.py --out=assets/lr_sweep_sgd_batch.csv --seeds=1337
#   python -m study.sweep config/sweep_paper.py config/sweep_sgd_batch.py --out=assets/lr_sweep_sgd_batch.csv --plot
out = 'out/lr_sweep_sgd_batch.csv'
gradient_accumulation_steps = 6
optimizers = 'sgd'
sgd_params = 'sp,mup'
sgd_lrs = '-4:1'
seeds = '1337,1338'
