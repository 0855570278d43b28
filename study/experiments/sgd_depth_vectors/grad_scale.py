"""
Why do the vector-like parameters (RMSNorm gains, conv taps, A_log, dt_bias) of μP-SGD under CompleteP change
faster in deeper models (docs/depth.md), when the derivation gives them the depth factor of the hidden
matrices? Measured at initialisation, coord_check.py's depth setup (width 256, base depth 8, shakespeare_char,
batch 8 x 128, PyTorch kernels, float32), for depths 2..32 and seeds 0..2:
  * the RMS of the residual stream entering the final norm, and of each block's input (mean over blocks);
  * per group inside the blocks, the RMS of the gradient divided by the branch multiplier b: the gradient the
    derivation takes to be depth-independent, and (μP-SGD's depth LR factor being 1/b under both rules at the
    base width) the size of the SGD step;
with the embedding as it is (std 0.02) and multiplied by 50 on the input side, printed as depth exponents
(log-log slopes).

    python -m study.experiments.sgd_depth_vectors.grad_scale                   # CPU, about a minute
    python -m study.experiments.sgd_depth_vectors.grad_scale --mode=per_block   # where in the stack the gradient sits
    python -m study.experiments.sgd_depth_vectors.grad_scale --mode=coord_check # the SGD depth check, stream Θ(1) (6 min)
"""
import numpy as np
import torch

import mup
import training
from configurator import configure
from coord_check import rms, slope
from model import GDN, GDNConfig
from training import Batches

DEPTHS, SEEDS, RULES = [2, 4, 8, 16, 32], [0, 1, 2], ['none', 'completep']
INPUT_MULTS = [1.0, 50.0]  # the embedding's output times this: 50 = 1/init_std makes the stream Θ(1) from block 0


def measure(data, vocab, rule, depth, seed, input_mult, per_block=False):
    torch.manual_seed(seed)
    c = GDNConfig(vocab_size=vocab, width=256, n_layer=depth, parametrization='mup', depth_rule=rule,
                  output_mult=2.0, kernel_backend='torch')
    model = GDN(c)
    model.wte.register_forward_hook(lambda m, a, out: out * input_mult)  # the input side only: the tied
                                                                          # lm_head reads wte.weight directly
    x, y = Batches(data, 8, 128, 1000 + seed).get('train', 0)
    inputs = []
    hooks = [b.register_forward_pre_hook(lambda m, a: inputs.append(rms(a[0]))) for b in model.blocks]
    hooks.append(model.norm_f.register_forward_pre_hook(lambda m, a: inputs.append(rms(a[0]))))
    _, loss = model(x, y)
    loss.backward()
    for h in hooks:
        h.remove()
    b = mup.multipliers(c)['branch']
    if per_block:  # [(block input RMS, hidden grad / b, vector grad / b)] for each block
        return [(inputs[i], *(float(np.mean([rms(p.grad) for n, p in model.named_parameters()
                                             if n.startswith(f'blocks.{i}.') and mup.group_of(n) == g])) / b
                              for g in ('hidden', 'vector'))) for i in range(depth)]
    out = {'final stream': inputs[-1], 'block input': float(np.mean(inputs[:-1]))}
    for group in ('hidden', 'gate', 'scalar', 'vector'):
        ps = [(n, p) for n, p in model.named_parameters() if mup.in_branch(n) and mup.group_of(n) == group]
        g = float(np.mean([rms(p.grad) for _, p in ps]))
        out[f'{group} grad / b'] = g / b
    return out


def coord_check_with_input_mult(input_mult=50.0):
    """coord_check.py's depth check under SGD, the embedding's output times input_mult (Θ(1) at 50)."""
    import coord_check
    build = coord_check.GDN

    def gdn(config):
        model = build(config)
        model.wte.register_forward_hook(lambda m, a, out: out * input_mult)
        return model
    coord_check.GDN = gdn
    cfg = dict(coord_check.DEFAULTS, dim='depth', device='cpu', runs='mup-sgd-completep,mup-sgd-none', plot=False)
    print(coord_check.summary(coord_check.coord_check(cfg), cfg['flat_tol']))


DEFAULTS = dict(
    mode='exponents',            # 'exponents' (depth exponents at init), 'per_block' or 'coord_check'
)


def main():
    cfg = dict(DEFAULTS)
    configure(cfg)
    if cfg['mode'] not in ('exponents', 'per_block', 'coord_check'):
        raise SystemExit(f"error: mode={cfg['mode']!r}: use 'exponents', 'per_block' or 'coord_check'")
    if cfg['mode'] == 'coord_check':
        return coord_check_with_input_mult()
    folder, vocab = training.dataset_setup('shakespeare_char', 'data')
    data = training.load_splits(folder)
    if cfg['mode'] == 'per_block':
        for rule in RULES:
            for depth in (8, 32):
                rows = measure(data, vocab, rule, depth, 0, 1.0, per_block=True)
                show = sorted({0, 1, depth // 4, depth // 2, depth - 1})
                print(f"{rule}, depth {depth}, blocks {show}: " + '; '.join(
                    f"{name} " + ' '.join(f"{rows[i][j]:.3g}" for i in show)
                    for j, name in enumerate(('input RMS', 'hidden grad/b', 'vector grad/b'))))
        return
    rows, cols = {}, [(r, im) for im in INPUT_MULTS for r in RULES]
    for rule, im in cols:
        per_depth = [[measure(data, vocab, rule, d, s, im) for s in SEEDS] for d in DEPTHS]
        for key in per_depth[0][0]:
            rows.setdefault(key, {})[rule, im] = slope(DEPTHS, [np.mean([m[key] for m in ms]) for ms in per_depth])
    print(f"depth exponents at initialisation, depths {DEPTHS}, {len(SEEDS)} seeds, μP width 256 (= SP widthwise)")
    print(f"{'quantity':22s}" + ''.join(f"{f'{r} x{im:g}':>16s}" for r, im in cols))
    for key, by_col in rows.items():
        print(f"{key:22s}" + ''.join(f"{by_col[c]:+16.2f}" for c in cols))


if __name__ == '__main__':
    main()
