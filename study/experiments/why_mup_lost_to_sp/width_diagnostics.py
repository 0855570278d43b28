"""
The gradient side of SP against μP across width, for "why did μP lose to SP" (docs/transfer.md, "Ruled out").
For each parametrization and width it takes a few AdamW steps as train.py takes them (training.train_step, clipped
at 1.0) and measures before each step:
  - the gradient norm before clipping and each group's share of its square;
  - each group's gradient RMS, against AdamW's eps (1e-8): eps matters only where sqrt(v) comes near it;
  - the tied embedding's two gradients apart: through the logits (output side) and through the lookup (input side).

    python -m study.experiments.why_mup_lost_to_sp.width_diagnostics                # CPU, a few minutes
    python -m study.experiments.why_mup_lost_to_sp.width_diagnostics --widths=256,512,1024 --steps=4
"""
import math
import time

import torch

from configurator import configure
from fused_ops import linear_cross_entropy
from model import GDN, GDNConfig
from training import Batches, dataset_setup, load_splits, train_step

DEFAULTS = dict(
    dataset='shakespeare',  # a prepared dataset (the embedded ones are prepared on first use)
    data_dir='data',        # where the prepared datasets live
    widths='256,1024',      # comma list of the widths to compare
    params='sp,mup',        # comma list of the parametrizations
    base_width=256,         # μP's base width (SP = μP there)
    n_layer=8,              # blocks, as the paper's model
    n_head=6,               # heads, as the paper's model
    batch_size=2,           # sequences a step
    block_size=256,         # tokens a sequence
    steps=3,                # AdamW steps, each measured before it is taken
    lr=2 ** -8,             # the base LR (mup.py's multipliers on top)
    output_mult=1.0,        # the logits multiplier at the base width: SP's 1, the value μP lost with
    seed=1337,              # the init and the batches
)


def tied_gradients(model, x, y):
    """(loss, the tied weight's gradient through the lookup, its gradient through the logits); every parameter's
    .grad holds the whole gradient afterwards."""
    w = model.wte.weight
    h = model.wte(x)
    for block in model.blocks:
        h, _ = block(h)
    lookup_only = linear_cross_entropy(model.norm_f(h), w.detach(), model.logit_mult, y, 'torch')  # head fixed
    g_in, = torch.autograd.grad(lookup_only, w)
    model.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    return loss.item(), g_in, w.grad - g_in


def diagnose(cfg, param, width, data, vocab):
    """The rows (one a step) of one parametrization at one width."""
    model = GDN(GDNConfig(vocab_size=vocab, width=width, n_layer=cfg['n_layer'], n_head=cfg['n_head'],
                          parametrization=param, base_width=cfg['base_width'], output_mult=cfg['output_mult'],
                          kernel_backend='torch'))
    model.reset_parameters(cfg['seed'])
    opt = model.configure_optimizer('adamw', cfg['lr'], 0.1, (0.9, 0.95), 0.0, 'cpu')
    batches = Batches(data, cfg['batch_size'], cfg['block_size'], cfg['seed'])
    rows = []
    for step in range(cfg['steps']):
        loss, g_in, g_out = tied_gradients(model, *batches.get('train', step))
        sq = {g['name']: sum(p.grad.double().pow(2).sum().item() for p in g['params']) for g in opt.param_groups}
        size = {g['name']: sum(p.numel() for p in g['params']) for g in opt.param_groups}
        total = math.sqrt(sum(sq.values()))
        rows.append(dict(loss=loss, grad_norm=total, share={g: v / total ** 2 for g, v in sq.items()},
                         rms={g: math.sqrt(v / size[g]) for g, v in sq.items()},
                         logits_over_lookup=g_out.norm().item() / g_in.norm().item()))
        model.zero_grad(set_to_none=True)
        train_step(model, opt, batches, step, cfg['lr'], grad_clip=1.0)
    return rows


def main(argv=None):
    cfg = dict(DEFAULTS)
    configure(cfg, argv)
    folder, vocab = dataset_setup(cfg['dataset'], cfg['data_dir'])
    data = load_splits(folder)
    for param in cfg['params'].split(','):
        for width in map(int, cfg['widths'].split(',')):
            t0 = time.time()
            rows = diagnose(cfg, param, width, data, vocab)
            last, ratios = rows[-1], ' '.join(f"{r['logits_over_lookup']:.3g}" for r in rows)
            print(f"{param:3s} width {width:5d} ({time.time() - t0:.0f} s): grad norm by step "
                  + ' '.join(f"{r['grad_norm']:.3g}" for r in rows) + f" | tied logits/lookup {ratios}"
                  + f" | smallest group grad RMS {min(last['rms'].values()):.2g} (AdamW eps 1e-8)"
                  + " | last step's share: " + ', '.join(f"{g} {v:.2f}" for g, v in last['share'].items()),
                  flush=True)


if __name__ == '__main__':
    main()
