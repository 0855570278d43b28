"""
A sweep's runs where a researcher looks at them: each finished run's steps as TensorBoard events in a folder
named by its labels, and with --wandb_log=True a Weights & Biases run of its own (tracking.Tracker, the keys
train.py logs). The sweep's driver writes them as each run's row arrives, so on a Ray cluster they land beside
the CSV, not on the nodes that trained the runs.

    python -m study.sweep config/sweep_paper.py --tensorboard=True
    tensorboard --logdir out/lr_sweep_paper_tensorboard
"""
import os
import shutil

import training
from study.grid import describe
from study.run import warmup
from tracking import Tracker, require


def tensorboard_dir(cfg):
    return cfg['tensorboard_dir'] or os.path.splitext(cfg['out'])[0] + '_tensorboard'


def check(cfg):
    """The trackers asked for are installed, or one line that says what to install (before any run)."""
    require(cfg['tensorboard'] or cfg['tensorboard_dir'], cfg['wandb_log'])


def track(cfg, row):
    """Write a finished run's steps (train/loss, lr, grad_norm) and evaluations (eval/val_loss along the run,
    eval/train_loss at its end) to its TensorBoard folder and/or wandb run. A run trained again (the sweep was
    stopped before its row was written) replaces its folder."""
    tb = bool(cfg['tensorboard'] or cfg['tensorboard_dir'])
    if not (tb or cfg['wandb_log']):
        return
    name = describe(row).replace(' ', '_')
    folder = os.path.join(tensorboard_dir(cfg), name)
    if tb and os.path.exists(folder):
        shutil.rmtree(folder)
    out = os.path.dirname(os.path.abspath(cfg['out']))
    tracker = Tracker(out, dict(row, train_losses=None, grad_norms=None), tb, folder if tb else '',
                      cfg['wandb_log'], cfg['wandb_project'], name)
    steps = row['steps']
    for i, (loss, norm) in enumerate(zip(row['train_losses'], row['grad_norms'])):
        lr = training.lr_at(i, row['lr'], warmup(cfg, steps), steps, cfg['min_lr'])
        tracker.log(i + 1, {'train/loss': loss, 'lr': lr, 'grad_norm': norm})
    for point in filter(None, row['val_curve'].split(';')):
        step, val = point.split(':')
        tracker.log(int(step), {'eval/val_loss': float(val)})
    if not row['diverged']:
        tracker.log(len(row['train_losses']), {'eval/train_loss': row['final_train_loss']})
    tracker.close()
