"""
A run's metrics, where a researcher looks at them: TensorBoard event files (offline), Weights & Biases
(nanoGPT's keys; WANDB_MODE=offline works with no network), and a PNG of the loss curves against tokens
drawn from the run's log.csv. TensorBoard and wandb are imported only when asked for.

    tracker = Tracker(out_dir, config, tensorboard=True)
    tracker.log(step, {'train/loss': 3.2, 'lr': 1e-3}); tracker.flush()
    draw_losses(log_csv, png, tokens_per_step)
"""
import csv
import importlib.util
import os

from prepare_data import replacing


def require(tensorboard=False, wandb_log=False):
    """The trackers asked for are installed, or one line that says what to install."""
    if tensorboard and importlib.util.find_spec('tensorboard') is None:
        raise SystemExit("error: --tensorboard=True needs the tensorboard package: pip install tensorboard")
    if wandb_log and importlib.util.find_spec('wandb') is None:
        raise SystemExit("error: --wandb_log=True needs the wandb package: pip install wandb "
                         "(WANDB_MODE=offline runs with no network)")


class Tracker:
    """Sends scalars to TensorBoard and/or wandb; with neither asked for, does nothing."""

    def __init__(self, out_dir, config, tensorboard=False, tensorboard_dir='', wandb_log=False, wandb_project='',
                 wandb_run_name=''):
        self.tb = self.wandb = None
        require(tensorboard or tensorboard_dir, wandb_log)
        if tensorboard or tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(tensorboard_dir or os.path.join(out_dir, 'tensorboard'))
        if wandb_log:
            import wandb
            self.wandb = wandb
            wandb.init(project=wandb_project, name=wandb_run_name or None, config=config, dir=out_dir)

    def log(self, step, metrics):
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def flush(self):
        """Make what was logged visible now (the caller's log line; TensorBoard writes by itself every 2 min)."""
        if self.tb is not None:
            self.tb.flush()

    def close(self):
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_losses(log_csv):
    """(steps, losses) of the training steps and (steps, train, val) of the evaluations in a train.py log.csv."""
    steps, loss, evals = [], [], []
    with open(log_csv, newline='') as f:
        for r in csv.DictReader(f):
            if r['loss']:
                steps.append(int(r['iter']))
                loss.append(float(r['loss']))
            elif r['val_loss']:
                evals.append((int(r['iter']), float(r['train_loss']), float(r['val_loss'])))
    return (steps, loss), evals


def draw_losses(log_csv, png, tokens_per_step, title=''):
    """The run's loss against tokens: each step's training loss (faint), its running mean over a twentieth of
    the run, and the evaluations' train and val loss. Written to a temporary file, then renamed."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    (steps, loss), evals = read_losses(log_csv)
    fig, ax = plt.subplots(figsize=(7, 4))
    if steps:
        tokens = [s * tokens_per_step for s in steps]
        k = max(1, len(loss) // 20)
        mean = [sum(loss[max(0, i - k + 1):i + 1]) / len(loss[max(0, i - k + 1):i + 1]) for i in range(len(loss))]
        ax.plot(tokens, loss, color='C0', alpha=0.25, lw=0.8)
        ax.plot(tokens, mean, color='C0', label=f'train (steps; mean of {k})')
    if evals:
        ax.plot([e[0] * tokens_per_step for e in evals], [e[1] for e in evals], 'o--', color='C1', label='train (eval)')
        ax.plot([e[0] * tokens_per_step for e in evals], [e[2] for e in evals], 'o-', color='C3', label='val (eval)')
    ax.set_xlabel('tokens')
    ax.set_ylabel('loss')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with replacing(png) as tmp:
        fig.savefig(tmp, dpi=110, format='png')
    plt.close(fig)
