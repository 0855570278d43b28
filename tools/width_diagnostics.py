"""
Gradient-side diagnostics of SP vs μP across widths, for the question "why does μP lose to SP at width"
(README, "Why μP lost to SP"). For each width and parametrization it trains a few AdamW steps through
training.train_step and records, per step:
  - the total gradient norm before clipping (what grad_clip=1.0 acts on) and each group's share of it;
  - the tied embedding's two gradients separately: through the logits (output side) and through the
    input lookup (input side), and their norm ratio;
  - per group, the RMS of the gradient against AdamW's eps (1e-8): eps matters if sqrt(v) nears it.

    python tools/width_diagnostics.py --dataset=shakespeare --widths=256,512,1024 --steps=4
    (CPU, 2 cores: ~6 min; prints a table, writes out-diagnostics/width_diagnostics.json)
"""
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, ROOT)
import mup  # noqa: E402
from configurator import configure  # noqa: E402
from model import GDN, GDNConfig, padded_vocab  # noqa: E402
from prepare_data import ensure_prepared, load_split  # noqa: E402
from training import Batches, set_lr  # noqa: E402

cfg = dict(dataset='shakespeare', data_dir=os.path.join(ROOT, 'data'), widths='256,512,1024', params='sp,mup',
           base_width=256, n_layer=8, n_head=6, batch_size=2, block_size=256, steps=4, lr=2 ** -8,
           output_mult=1.0, out='out-diagnostics')


def tied_parts(model, x, y):
    """Total loss, and the gradients of wte through the logits and through the input lookup."""
    w = model.wte.weight
    model.zero_grad(set_to_none=True)
    # input side only: the logits see a detached copy of the tied weight
    h = model.wte(x)
    for b in model.blocks:
        h, _ = b(h)
    h = model.norm_f(h)
    loss = F.cross_entropy((F.linear(h, w.detach()) * model.logit_mult).view(-1, w.size(0)), y.reshape(-1))
    g_in, = torch.autograd.grad(loss, w, retain_graph=False)
    model.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    g_out = w.grad - g_in
    return loss.detach(), g_in, g_out


def main():
    configure(cfg)
    path = ensure_prepared(cfg['dataset'], cfg['data_dir'])
    vocab = padded_vocab(json.load(open(os.path.join(path, 'meta.json')))['vocab_size'])
    data = {s: load_split(path, s) for s in ('train', 'val')}
    torch.set_num_threads(os.cpu_count())
    res = {}
    for param in cfg['params'].split(','):
        for width in [int(w) for w in cfg['widths'].split(',')]:
            t0 = time.time()
            model = GDN(GDNConfig(vocab_size=vocab, width=width, n_layer=cfg['n_layer'], n_head=cfg['n_head'],
                                  parametrization=param, base_width=cfg['base_width'],
                                  output_mult=cfg['output_mult'], kernel_backend='torch'))
            model.reset_parameters(1337)
            opt = model.configure_optimizer('adamw', cfg['lr'], 0.1, (0.9, 0.95), 0.0, 'cpu')
            batches = Batches(data, cfg['batch_size'], cfg['block_size'], 1337)
            group_of = {id(p): g['name'] for g in opt.param_groups for p in g['params']}
            rows = []
            for step in range(cfg['steps']):
                x, y = batches.get('train', step)
                loss, g_in, g_out = tied_parts(model, x, y)
                sq = {}
                for p in model.parameters():
                    sq[group_of[id(p)]] = sq.get(group_of[id(p)], 0.0) + p.grad.double().pow(2).sum().item()
                n = {g: sum(p.numel() for p in gr['params']) for gr in opt.param_groups for g in [gr['name']]}
                total = math.sqrt(sum(sq.values()))
                rows.append(dict(step=step, loss=loss.item(), grad_norm=total,
                                 share={g: v / total ** 2 for g, v in sq.items()},
                                 rms={g: math.sqrt(v / n[g]) for g, v in sq.items()},
                                 tied_out=g_out.norm().item(), tied_in=g_in.norm().item()))
                set_lr(opt, cfg['lr'])
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            res[f'{param}-{width}'] = rows
            r = rows[-1]
            print(f"{param:4s} width {width:5d} ({time.time() - t0:.0f}s) | grad norm by step "
                  + ' '.join(f"{x['grad_norm']:.3g}" for x in rows)
                  + f" | step {r['step']}: share " + ' '.join(f"{g} {v:.2f}" for g, v in r['share'].items())
                  + f" | tied out/in {r['tied_out'] / r['tied_in']:.3g} | grad rms " +
                  ' '.join(f"{g} {v:.1e}" for g, v in r['rms'].items()), flush=True)
    os.makedirs(cfg['out'], exist_ok=True)
    with open(os.path.join(cfg['out'], 'width_diagnostics.json'), 'w') as f:
        json.dump(dict(config=cfg, results=res), f)


if __name__ == '__main__':
    main()
