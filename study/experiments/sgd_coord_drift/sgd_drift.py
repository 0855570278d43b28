"""
Which parameter group or path makes the μP-SGD coordinate check grow with width after step ~3 at SGD lr 0.05?
(Answers in NOTES.md beside this file; docs/coordinate_check.md and docs/rules.md use them.)

Controlled ablations on the CPU, coord_check.py's setup (2 layers, 6 heads, shakespeare_char, batch 8 x 128,
base width 256, Nesterov SGD lr 0.05 momentum 0.9, shared per-head scalars), the paper's μP-SGD rule ('mup')
as the base, widths 128..512:
  * LR scale (x1, x1/2, x1/4), momentum 0.9 vs 0 (and plain SGD at 10x lr = momentum's late step size)
  * freeze one group (LR 0): embedding, hidden, gate, scalar, vector; within hidden one module at a time
  * halve one group's LR; LR-exponent changes for the 'scalar'/'gate'/'vector' groups (candidate rules)
Per run: the RMS change since step 0 of coord_check's probes (per layer and seed), the per-module ||dW x||
(RMS of (W_t - W_0) applied to the module's current input on the measurement batch), and at init the RMS
of lr*grad per group; printed as width exponents, and written to out/sgd_drift/.

    python -m study.experiments.sgd_coord_drift.sgd_drift --jobs=2                 # all ablations (2 cores: ~30 min)
    python -m study.experiments.sgd_coord_drift.sgd_drift --jobs=2 --only=base,lr/2 --widths=128,256,512,1024
"""
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn

import coord_check as cc
import mup
import training
from configurator import configure
from model import GDN, GDNConfig
from training import Batches

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..')

QTY = ['q', 'v', 'beta', 'alpha', 'readout', 'mixer_out', 'mlp_out', 'residual', 'logits',
       'norm_gain', 'conv', 'A_log']
MODULES = ['q_proj', 'k_proj', 'v_proj', 'g_proj', 'o_proj', 'a_proj', 'b_proj', 'gate_proj', 'up_proj',
           'down_proj']
HIDDEN_SUB = {'qkv': ('q_proj', 'k_proj', 'v_proj'), 'g_proj': ('g_proj',), 'o_proj': ('o_proj',),
              'mlp': ('gate_proj', 'up_proj', 'down_proj')}

# name -> dict(lr=scale of the base lr, momentum, freeze=[group or hidden-submodule names],
#              exp={group: LR exponent replacing mup.LR_EXP['mup']['sgd'][group]})
ABLATIONS = {
    'base': {},
    'lr/2': dict(lr=0.5),
    'lr/4': dict(lr=0.25),
    'mom0': dict(momentum=0.0),
    'mom0-lrx10': dict(momentum=0.0, lr=10.0),
    'freeze-embedding': dict(freeze=['embedding']),
    'freeze-hidden': dict(freeze=['hidden']),
    'freeze-gate': dict(freeze=['gate']),
    'freeze-scalar': dict(freeze=['scalar']),
    'freeze-vector': dict(freeze=['vector']),
    'freeze-qkv': dict(freeze=['qkv']),
    'freeze-g_proj': dict(freeze=['g_proj']),
    'freeze-o_proj': dict(freeze=['o_proj']),
    'freeze-mlp': dict(freeze=['mlp']),
    'scalar-m^0': dict(exp={'scalar': 0}),
    'gate-m^-1': dict(exp={'gate': -1}),
    'vector-m^0': dict(exp={'vector': 0}),
    'onorm-eps1e-12': dict(onorm_eps=1e-12),
    # the candidate rule: gate m^-1, scalar m^0 (now the 'mup_fixed_fanout' parametrization)
    'gate-m^-1+scalar-m^0': dict(exp={'gate': -1, 'scalar': 0}),
    # halve one group's LR at a time: which group's LR sets the stability edge of the wide model?
    **{f'half-{k}': dict(scale={k: 0.5}) for k in ('embedding', 'hidden', 'qkv', 'g_proj', 'o_proj', 'mlp')},
    'half-all-but-embedding': dict(scale={k: 0.5 for k in ('hidden', 'gate', 'scalar', 'vector')}),  # is the o_norm eps (sqrt = 1e-3 vs readout ~2e-3) involved?
}


def key_of(name):
    """group name, or the hidden sub-module key, of a parameter."""
    g = mup.group_of(name)
    if g == 'hidden':
        for k, mods in HIDDEN_SUB.items():
            if any(f'.{m}.' in name for m in mods):
                return g, k
    return g, None


def run(width, seed, abl, cfg, data):
    splits, vocab = data
    batches = Batches(splits, 8, 128, 1000 + seed)
    tb = [batches.get('train', it) for it in range(cfg['steps'])]
    mx, my = batches.get('val', -1)
    model = GDN(GDNConfig(vocab_size=vocab, width=width, n_layer=2, n_head=6, parametrization='mup',
                          base_width=256, kernel_backend='torch'))
    model.reset_parameters(seed)
    cc.share_head_scalars(model, seed)
    if 'onorm_eps' in abl:
        for b in model.blocks:
            b.mixer.o_norm.eps = abl['onorm_eps']
    m = width / 256
    lr0 = cfg['lr'] * abl.get('lr', 1.0)
    exps = dict(mup.LR_EXP['mup']['sgd'], **abl.get('exp', {}))
    groups, names = [], []
    for name, p in model.named_parameters():
        g, sub = key_of(name)
        frozen = g in abl.get('freeze', []) or (sub is not None and sub in abl.get('freeze', []))
        sc = abl.get('scale', {})
        f = sc.get(g, 1.0) * (sc.get(sub, 1.0) if sub else 1.0)
        groups.append({'params': [p], 'lr': 0.0 if frozen else f * lr0 * m ** exps[g], 'group': g})
        names.append(name)
    mom = abl.get('momentum', cfg['momentum'])
    opt = torch.optim.SGD(groups, lr=lr0, momentum=mom, nesterov=mom > 0)
    # per-module inputs on the measurement batch, for ||(W_t - W_0) x_t||
    lin = {n: mod for n, mod in model.named_modules() if isinstance(mod, nn.Linear)}
    w0 = {n: mod.weight.detach().clone() for n, mod in lin.items()}
    inputs = {}
    hooks = [mod.register_forward_hook(lambda mod, i, o, n=n: inputs.__setitem__(n, i[0].detach()))
             for n, mod in lin.items()]
    # the mixer's input projections may run as one matmul over concatenated weights (no module call):
    # their input is the mixer's
    hooks += [mod.register_forward_hook(lambda mod, i, o, n=n: inputs.update(
        {f'{n}.{p}': i[0].detach() for p in ('q_proj', 'k_proj', 'v_proj', 'a_proj', 'b_proj', 'g_proj')}))
        for n, mod in model.named_modules() if n.endswith('.mixer')]
    out = {'delta': {q: [] for q in QTY}, 'dWx': {}, 'loss': [], 'upd_rms': {}}
    ref = None
    for step in range(cfg['steps'] + 1):
        inputs.clear()
        pr = cc.measure(model, mx, my, cc.FAMILIES['gdn'])
        if ref is None:
            ref = pr
        for q in QTY:
            out['delta'][q].append([cc.rms(t - r) for t, r in zip(pr[q], ref[q])])
        # what o_norm passes on: the per-head direction of the readout (RMS-normalised over d_v), its
        # change since step 0
        ud = [t / t.pow(2).mean(-1, keepdim=True).sqrt() for t in pr['readout']]
        ud0 = [t / t.pow(2).mean(-1, keepdim=True).sqrt() for t in ref['readout']]
        out['delta'].setdefault('o_dir', []).append([cc.rms(a - b) for a, b in zip(ud, ud0)])
        if step in cfg['dwx_steps']:
            with torch.no_grad():
                d = {}
                for n, mod in lin.items():
                    if n.startswith('blocks.') and n in inputs:
                        d[n] = cc.rms(nn.functional.linear(inputs[n], mod.weight - w0[n]))
                out['dWx'][step] = d
        if step == cfg['steps']:
            break
        x, y = tb[step]
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0:  # RMS of the first update's entries, lr * grad, per group
            acc = {}
            for gr, n in zip(groups, names):
                p = gr['params'][0]
                acc.setdefault(gr['group'], []).append((gr['lr'] * p.grad).double().pow(2).sum().item()
                                                       / max(1, p.numel()) if gr['lr'] else 0.0)
            # 'hidden' split by sub-module too
            for gr, n in zip(groups, names):
                g, sub = key_of(n)
                if sub:
                    p = gr['params'][0]
                    acc.setdefault('hidden:' + sub, []).append(
                        (gr['lr'] * p.grad).double().pow(2).mean().item())
            out['upd_rms'] = {g: math.sqrt(np.mean(v)) for g, v in acc.items()}
        opt.step()
        out['loss'].append(loss.item())
    for h in hooks:
        h.remove()
    return out


def worker(args):
    name, width, seed, cfg = args
    torch.set_num_threads(cfg['threads'])
    folder, vocab = training.dataset_setup('shakespeare_char', os.path.join(ROOT, 'data'))
    data = training.load_splits(folder), vocab
    t = time.time()
    r = run(width, seed, ABLATIONS[name], cfg, data)
    return name, width, seed, r, time.time() - t


def slope(ws, v):
    return cc.slope(ws, v)


def report(res, widths, steps, seeds, names):
    lines = []
    S = [s for s in (2, 10, steps) if s <= steps]
    lines.append(f"width exponent of the RMS change since step 0 (mean over {seeds} seeds and layers), "
                 f"widths {widths}, at steps {S}")
    head = ['mixer_out', 'residual', 'readout', 'o_dir', 'beta', 'alpha', 'mlp_out', 'logits', 'norm_gain', 'conv',
            'A_log']
    lines.append(f"{'ablation':18s} " + ' '.join(f'{h:>17s}' for h in head) + f" {'L0 mixer_out':>17s}"
                 + f" {'loss@end':>22s}")
    for name in names:
        cells = []
        for q in head + ['L0']:
            qq = 'mixer_out' if q == 'L0' else q
            ss = []
            for s in S:
                v = []
                for w in widths:
                    a = np.array([res[name][w][sd]['delta'][qq][s] for sd in range(seeds)])  # [seed, layer]
                    v.append(a[:, 0].mean() if q == 'L0' else a.mean())
                ss.append(slope(widths, v))
            cells.append('/'.join(f'{x:+.2f}' for x in ss))
        loss = '/'.join(f"{np.mean([res[name][w][sd]['loss'][-1] for sd in range(seeds)]):.2f}" for w in widths)
        lines.append(f"{name:18s} " + ' '.join(f'{c:>17s}' for c in cells) + f" {loss:>22s}")
    # per-module ||dW x|| slopes
    for name in names:
        r0 = res[name][widths[0]][0]
        lines.append(f"\n{name}: width exponent of ||(W_t-W_0) x_t|| (RMS), mean over seeds, per layer, "
                     f"at steps {sorted(r0['dWx'])}")
        mods = sorted(r0['dWx'][sorted(r0['dWx'])[0]])
        row = []
        for mname in mods:
            ss = [slope(widths, [np.mean([res[name][w][sd]['dWx'][s][mname] for sd in range(seeds)])
                                 for w in widths]) for s in sorted(r0['dWx'])]
            short = mname.replace('blocks.', 'L').replace('.mixer.', '.').replace('.mlp.', '.')
            row.append(f"{short}:" + '/'.join(f'{x:+.2f}' for x in ss))
        for i in range(0, len(row), 5):
            lines.append('  ' + '  '.join(f'{c:26s}' for c in row[i:i + 5]))
    # first-update RMS per group
    name = names[0]
    lines.append(f"\n{name}: width exponent of RMS(lr*grad) entries at step 0 per group "
                 "(μP-SGD expects -1 for the fan-in-d matrices, hidden and gate)")
    gs = sorted(res[name][widths[0]][0]['upd_rms'])
    lines.append('  ' + '  '.join(
        f"{g}:{slope(widths, [np.mean([res[name][w][sd]['upd_rms'][g] for sd in range(seeds)]) for w in widths]):+.2f}"
        for g in gs))
    return '\n'.join(lines)


DEFAULTS = dict(
    widths='128,256,512',        # comma list: the widths (base width 256)
    steps=20,                    # SGD steps of each run
    seeds=2,                     # seeds 0 .. seeds-1 at each width
    lr=0.05,                     # the base SGD LR
    momentum=0.9,                # Nesterov momentum
    only='',                     # comma list of ABLATIONS to run ('' = all)
    jobs=1,                      # worker processes (forked), the CPU's threads split among them
    out=os.path.join(ROOT, 'out', 'sgd_drift'),  # where the text and JSON go
)


def main():
    a = dict(DEFAULTS)
    configure(a)
    widths = [int(w) for w in a['widths'].split(',')]
    names = [n for n in (a['only'].split(',') if a['only'] else ABLATIONS)]
    cfg = dict(steps=a['steps'], lr=a['lr'], momentum=a['momentum'], dwx_steps=[1, 10, a['steps']],
               threads=max(1, (os.cpu_count() or 2) // a['jobs']))
    tasks = [(n, w, s, cfg) for n in names for w in widths for s in range(a['seeds'])]
    res = {n: {w: {} for w in widths} for n in names}
    t0 = time.time()
    if a['jobs'] > 1:
        import multiprocessing as mp
        with mp.get_context('fork').Pool(a['jobs']) as pool:
            it = pool.imap_unordered(worker, tasks)
            for n, w, s, r, dt in it:
                res[n][w][s] = r
                print(f'{n} w{w} s{s} {dt:.0f}s (total {time.time() - t0:.0f}s)', flush=True)
    else:
        for t in tasks:
            n, w, s, r, dt = worker(t)
            res[n][w][s] = r
            print(f'{n} w{w} s{s} {dt:.0f}s (total {time.time() - t0:.0f}s)', flush=True)
    txt = report(res, widths, a['steps'], a['seeds'], names)
    print(txt)
    os.makedirs(a['out'], exist_ok=True)
    tag = ('_'.join(names) if len(names) < 4 else 'all').replace('/', 'div').replace('^', '')
    with open(os.path.join(a['out'], f'sgd_drift_{tag}.json'), 'w') as f:
        json.dump({'args': a, 'res': {n: {str(w): v for w, v in d.items()} for n, d in res.items()}},
                  f, default=float)
    with open(os.path.join(a['out'], f'sgd_drift_{tag}.txt'), 'w') as f:
        f.write(txt + '\n')


if __name__ == '__main__':
    main()
