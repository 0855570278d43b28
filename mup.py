"""
Every width-scaling rule of the Maximal Update Parametrization (μP) for Gated DeltaNet, in one file.

The model (model.py) and the trainer (train.py) ask this file three things: how to initialise a
parameter, which constant multipliers to put in the forward pass, and how to split the parameters
into optimizer groups (LR multiplier, weight decay). `grep mup` in those files shows the whole
difference between μP and standard parametrization (SP).

Parametrizations:
  'sp'         standard parametrization: every matrix N(0, 0.02²), one LR, readout 1/sqrt(d_k).
  'mup'        μP with the GDN corrections of Liu & Gu (arXiv 2606.04048, §4).
  'mup_nogdn'  "standard μP" without those corrections (gates as hidden weights, A_log/dt_bias as
               plain vector-like parameters): the paper's SGD ablation.
m = width / base_width. At width == base_width all three are the same model with the same LRs.

    python mup.py --width=768 --optimizer=sgd      # print the rules as numbers
"""
import math

PARAMETRIZATIONS = ('sp', 'mup', 'mup_nogdn')
OPTIMIZERS = ('adamw', 'sgd')
SIGMA = 0.02  # init std of every matrix at the base width (GPT-2's 0.02)

# Parameter groups. Each parameter belongs to exactly one, by its name in model.py.
GROUPS = {
    'embedding': 'tied token embedding / lm_head (wte)',
    'hidden':    'W_q W_k W_v W_g W_o, MLP (width x width matrices)',
    'gate':      'W_alpha W_beta (a_proj, b_proj: width -> n_head)',
    'scalar':    'A_log, dt_bias (per head, width-independent)',
    'vector':    'RMSNorm gains, depthwise conv weights',
}

def group_of(name):
    if name.endswith(('A_log', 'dt_bias')):
        return 'scalar'
    if name.startswith('wte.'):
        return 'embedding'
    if '.a_proj.' in name or '.b_proj.' in name:
        return 'gate'
    if 'norm' in name or 'conv' in name:
        return 'vector'
    return 'hidden'

# Init std = SIGMA * m**INIT_EXP[group]; None = the group's own width-independent init (model.py).
INIT_EXP = {
    'sp':  {'embedding': 0, 'hidden': 0, 'gate': 0, 'scalar': None, 'vector': None},
    # hidden: std ∝ 1/sqrt(fan_in) keeps h = Wx at Θ(1) coordinates (Tensor Programs V, Table 3).
    # gate: dα/dz, dβ/dz are Θ(1), so W_alpha, W_beta see the same fan-in as hidden weights (paper §4).
    # embedding: input weights have fan-in 1 (a one-hot), so Θ(1) init (TP5, Table 3).
    'mup': {'embedding': 0, 'hidden': -0.5, 'gate': -0.5, 'scalar': None, 'vector': None},
}
INIT_EXP['mup_nogdn'] = INIT_EXP['mup']

# LR multiplier = m**LR_EXP[parametrization][optimizer][group].
LR_EXP = {
    'sp': {'adamw': dict.fromkeys(GROUPS, 0), 'sgd': dict.fromkeys(GROUPS, 0)},
    'mup': {
        # Adam normalises each coordinate, so an update of size lr moves a fan-in-d matrix's output by
        # lr*d: hidden and gate LRs scale 1/m; vector-like and embedding LRs stay (TP5, Table 3).
        # Adam makes the GDN gate corrections unnecessary (paper §4).
        'adamw': {'embedding': 0, 'hidden': -1, 'gate': -1, 'scalar': 0, 'vector': 0},
        # SGD: hidden gradients are already Θ(1/d) per entry, so LR Θ(1); input-like (embedding,
        # vectors) gradients are Θ(1/d) for Θ(1) params, so LR ∝ m (TP5, Table 3).
        # gate: the signal reaching the gate pre-activations is Θ(1/sqrt d), not Θ(1/d), so the
        # W_alpha/W_beta LR is m^-1/2 and the per-head scalars' LR is m^+1/2 (paper §4).
        'sgd':   {'embedding': 1, 'hidden': 0, 'gate': -0.5, 'scalar': 0.5, 'vector': 1},
    },
    'mup_nogdn': {
        'adamw': {'embedding': 0, 'hidden': -1, 'gate': -1, 'scalar': 0, 'vector': 0},
        # the ablation: gates treated as hidden weights, scalars as plain vector-like (paper §4, the SGD comparison)
        'sgd':   {'embedding': 1, 'hidden': 0, 'gate': 0, 'scalar': 1, 'vector': 1},
    },
}

# Weight decay only on matrices whose scale is learned against the data; never on the embedding,
# gains, conv taps or the decay/step-size scalars (same rule in SP and μP, so they agree at base).
DECAY = {'embedding': False, 'hidden': True, 'gate': True, 'scalar': False, 'vector': False}


def parametrization(mup, gdn_corrections=True):
    """The config's two switches (--mup, --gdn_corrections) -> one of PARAMETRIZATIONS."""
    return 'sp' if not mup else ('mup' if gdn_corrections else 'mup_nogdn')

def init_std(group, param, width, base_width):
    exp = INIT_EXP[param][group]
    return None if exp is None else SIGMA * (width / base_width) ** exp

def multipliers(param, width, base_width, head_k):
    """Constant multipliers in the forward pass."""
    m = width / base_width
    if param == 'sp':
        return {'logits': 1.0, 'readout': 1 / math.sqrt(head_k)}
    return {
        # Tied embedding: Θ(1) entries, so W x has Θ(d) correlated terms: scale logits by 1/m
        # (TP5 Table 3, output weights in the multiplier form, which lets them stay tied).
        'logits': 1 / m,
        # L2-normalised q, k have Θ(1/sqrt d) entries, so the state S and the readout S q are
        # Θ(1/sqrt d): multiply by sqrt(m) before the head RMSNorm, i.e. keep the readout scale
        # at its base-width value 1/sqrt(d_k0), or the norm hides the size and breaks the
        # gradient scaling (paper §4).
        'readout': math.sqrt(m) / math.sqrt(head_k),
    }

def lr_mult(group, param, optimizer, width, base_width):
    return (width / base_width) ** LR_EXP[param][optimizer][group]

def param_groups(model, param, optimizer, width, base_width, weight_decay):
    """Optimizer groups: dicts with params, lr_mult (train.py sets lr = lr_mult * schedule) and weight_decay."""
    assert param in PARAMETRIZATIONS and optimizer in OPTIMIZERS, (param, optimizer)
    groups = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(group_of(name), []).append(p)
    return [{'name': g, 'params': ps,
             'lr_mult': lr_mult(g, param, optimizer, width, base_width),
             'weight_decay': weight_decay if DECAY[g] else 0.0}
            for g, ps in groups.items()]


if __name__ == '__main__':
    import argparse
    ap = argparse.ArgumentParser(description='print the μP rules as numbers')
    ap.add_argument('--width', type=int, default=768)
    ap.add_argument('--base_width', type=int, default=256)
    ap.add_argument('--optimizer', choices=OPTIMIZERS, default='adamw')
    ap.add_argument('--parametrization', choices=PARAMETRIZATIONS, default='mup')
    ap.add_argument('--weight_decay', type=float, default=0.1)
    a = ap.parse_args()
    wd = 0.0 if a.optimizer == 'sgd' else a.weight_decay  # the paper's SGD runs use no weight decay
    m = a.width / a.base_width
    head_k = a.width // 8
    print(f"{a.parametrization}, {a.optimizer}, width {a.width}, base width {a.base_width} (m = {m:g})")
    print(f"{'group':10s} {'parameters':52s} {'init std':>9s} {'LR mult':>8s} {'wd':>5s}")
    for g, what in GROUPS.items():
        std = init_std(g, a.parametrization, a.width, a.base_width)
        std = 'own' if std is None else f'{std:.5f}'
        lrm = lr_mult(g, a.parametrization, a.optimizer, a.width, a.base_width)
        print(f"{g:10s} {what:52s} {std:>9s} {lrm:8.4f} {wd if DECAY[g] else 0.0:5.2f}")
    mult = multipliers(a.parametrization, a.width, a.base_width, head_k)
    print(f"forward: logits x {mult['logits']:.4f}; readout scale {mult['readout']:.4f} "
          f"(SP: 1/sqrt(d_k) = {1 / math.sqrt(head_k):.4f}, d_k = {head_k})")
    print("'own' init: A_log = log U(0,16), dt_bias = softplus^-1(dt), dt ~ logU(1e-3,1e-1); "
          "gains 1; conv taps U(+-1/2) (fan-in 4)")
