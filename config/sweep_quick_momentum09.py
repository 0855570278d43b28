# The sweep's quick default grid with SGD at Nesterov momentum 0.9 instead of the paper's 0.98: the base width's
# best for this 200-step run (1.693 vs 1.913), where 0.98's ~50-step gradient memory leaves every SGD curve flat in
# the LR (docs/transfer.md, "The quick default and SGD's momentum"). Only the SGD rows differ from the default's;
# its AdamW rows are the same runs.
#   python -m study.sweep config/sweep_quick_momentum09.py          # resumable; --plot redraws the figure
out = 'out/lr_sweep_momentum09.csv'
momentum = 0.9
