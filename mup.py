"""
Every width-scaling rule of the Maximal Update Parametrization (μP) for Gated DeltaNet, in one file.

The model (model.py) and the trainer (train.py) ask this file three things: how to initialise a
parameter, which constant multipliers to put in the forward pass, and how to split the parameters
into optimizer groups (LR multiplier, weight decay). `grep mup` in those files shows the whole
difference between μP and standard parametrization (SP).

Parametrizations:
  'sp'         standard parametrization: every matrix N(0, 0.02²), one LR, readout 1/sqrt(d_k).
  'mup'        μP with the GDN rules of Liu & Gu (arXiv 2606.04048, §4): q/k/state readout and gate
               init; the gates and per-head scalars get the LRs of an output layer and its biases
               (under SGD this departs from the paper's m^-1/2, m^+1/2: see LR_EXP for why).
  'mup_nogdn'  "standard μP" without the GDN treatment of the gates (gates as hidden weights,
               A_log/dt_bias as plain vector-like parameters): the paper's SGD ablation.
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
        # vector: LR m^0 (standard μP), not the authors' code's 1/m, settled by coord_check.py: with m^0
        # the gains' and conv taps' own change is flat in width (exponent +0.02 / -0.01, H100, widths
        # 128..2048, step 10, assets/coord_check.json); with 1/m it is -1.00 / -1.00 (CPU, widths 64..512,
        # 5 steps) while no activation's exponent moves by more than 0.15: they just stop learning.
        'adamw': {'embedding': 0, 'hidden': -1, 'gate': -1, 'scalar': 0, 'vector': 0},
        # SGD: hidden gradients are already Θ(1/d) per entry, so LR Θ(1); input-like (embedding,
        # vectors) gradients are Θ(1/d) for Θ(1) params, so LR ∝ m (TP5, Table 3).
        # gate, scalar: W_alpha/W_beta map the width to n_head outputs, a fixed fan-out: TP5's output
        # weights (SGD LR η/fan_in, m^-1); A_log/dt_bias act on those n_head pre-activations: biases of
        # a fixed fan-out (LR η, m^0). Same rows as under Adam. NOT the paper's §4 correction
        # (m^-1/2, m^+1/2), which sizes the first step only, from the gate signal's incoherent
        # Θ(1/sqrt d) value at init; from step 2 that gradient is coherent and Θ(1), and m^±1/2 then
        # makes the gate and decay updates grow as sqrt(m). coord_check.py, H100, widths 128..2048,
        # change at step 10: A_log/dt_bias +0.52 with m^+1/2, +1.01 with the ablation's m^1;
        # CPU, widths 128..512 (tools/SGD_DRIFT.md): A_log +0.58 -> +0.09, W_alpha x +0.43 -> -0.06
        # with these rules. The price: the first update of these parameters shrinks like m^-1/2 (A_log
        # -0.54 at step 1), a finite-width fluctuation that vanishes in the limit. LR sweeps cannot tell
        # the two apart (README, "Learning-rate transfer").
        # vector: LR m (standard μP), not the authors' code's 1: with m the gains' and conv taps' change
        # is flat over the first steps (-0.04 / -0.06, steps 1-2, H100); with 1 it is -1.06 / -1.05
        # (CPU, widths 64..512).
        'sgd':   {'embedding': 1, 'hidden': 0, 'gate': -1, 'scalar': 0, 'vector': 1},
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


# the config's two switches (--mup, --gdn_corrections) that select each parametrization
SWITCHES = {'sp': (False, True), 'mup': (True, True), 'mup_nogdn': (True, False)}

def parametrization(mup, gdn_corrections=True):
    """The config's two switches -> one of PARAMETRIZATIONS."""
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
        # Settled by coord_check.py against the other reading of §4, m/sqrt(d_k) ("S q stays
        # Θ(1/sqrt d), so multiply it by sqrt d"): readout change at step 10, H100, widths 128..2048:
        # sqrt(m): -0.17 (AdamW), -0.02 (SGD); m: +0.38, +0.54 (assets/coord_check_readout_x_m.json).
        # Training aligns q with the keys, so S q becomes Θ(1) and sqrt(m) keeps o_t Θ(1). Below width
        # 128 (d_k <= 16) the random q.k overlap ~1/sqrt(d_k) dominates and o_t shrinks (-0.4 at widths
        # 64..512). The scale reaches the model only through the RMSNorm's eps (norm(c u) =
        # u / sqrt(mean u^2 + eps/c^2)): the rule keeps o_t >> sqrt(eps) = 1e-3 as width grows.
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
