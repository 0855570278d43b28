"""
Every width-scaling rule of the Maximal Update Parametrization (μP) for Gated DeltaNet, in one file.

The model (model.py) asks this file three things: how to initialise a parameter, which constant
multipliers to put in the forward pass, and how to split the parameters into optimizer groups (LR
multiplier, weight decay). `grep -n mup model.py train.py` shows the whole difference between μP and
standard parametrization (SP).

Parametrizations:
  'sp'                standard parametrization: every matrix N(0, init_std²), one LR, readout 1/sqrt(d_k).
  'mup'               μP as published by Liu & Gu (arXiv 2606.04048, §4), the default: the q/k/state
                      readout multiplier, gates initialised like hidden weights and, under SGD, the
                      paper's correction: W_alpha, W_beta LR ∝ m^-1/2, A_log and dt_bias LR ∝ m^+1/2.
  'mup_fixed_fanout'  the same μP, but under SGD the gates and their scalars get TP5's rows for an
                      output layer of fixed fan-out (n_head) and its biases: LR ∝ m^-1 and m^0. Under
                      AdamW it is 'mup'. Why it exists: see LR_EXP.
  'mup_nogdn'         "standard μP" without the GDN treatment of the gates (gates as hidden weights,
                      A_log/dt_bias as plain vector-like parameters): the paper's SGD ablation.
m = width / base_width. At width == base_width all four are the same model with the same LRs.

Base hyper-parameters (μTransfer, Tensor Programs V §1): what a small model is tuned on and a wide one
inherits. Each is the value AT THE BASE WIDTH; SP uses it as it is at every width, μP scales it by the
rule below, so that its optimum is meant to stay put as the width grows (sweep.py can sweep each):
  output_mult     the logits multiplier (μP: output_mult / m)
  init_std        the init std of the matrices (μP: init_std / sqrt(m) for the hidden and gate matrices)
  embed_lr_mult   the embedding's LR relative to the base LR (μP: times the embedding's LR rule)
  gate_lr_mult    the LR of the gates and their scalars (W_alpha, W_beta, A_log, dt_bias) relative to the
                  base LR (μP: times those groups' LR rules). Why it exists: under SGD the three μP
                  variants differ only in how these LRs grow with width, so an untuned base value
                  could favour whichever raises them most; in the paper's architecture it moved no
                  loss above the seed spread (README, "SGD and gradient clipping").
At their defaults (1, 0.02, 1, 1) the base model is GPT-2's SP.

    python mup.py --width=1024 --optimizer=sgd --parametrization=mup   # print the rules as numbers
"""
import math

PARAMETRIZATIONS = ('sp', 'mup', 'mup_fixed_fanout', 'mup_nogdn')
OPTIMIZERS = ('adamw', 'sgd')
BASE_HPARAMS = {'output_mult': 1.0, 'init_std': 0.02, 'embed_lr_mult': 1.0, 'gate_lr_mult': 1.0}  # SP's values

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

# Init std = init_std * m**INIT_EXP[group]; None = the group's own width-independent init (model.py).
INIT_EXP = {
    'sp':  {'embedding': 0, 'hidden': 0, 'gate': 0, 'scalar': None, 'vector': None},
    # hidden: std ∝ 1/sqrt(fan_in) keeps h = Wx at Θ(1) coordinates (Tensor Programs V, Table 3).
    # gate: dα/dz, dβ/dz are Θ(1), so W_alpha, W_beta see the same fan-in as hidden weights (paper §4).
    # embedding: input weights have fan-in 1 (a one-hot), so Θ(1) init (TP5, Table 3).
    'mup': {'embedding': 0, 'hidden': -0.5, 'gate': -0.5, 'scalar': None, 'vector': None},
}
INIT_EXP['mup_fixed_fanout'] = INIT_EXP['mup_nogdn'] = INIT_EXP['mup']

# LR multiplier = m**LR_EXP[parametrization][optimizer][group].
LR_EXP = {
    'sp': {'adamw': dict.fromkeys(GROUPS, 0), 'sgd': dict.fromkeys(GROUPS, 0)},
    'mup': {
        # Adam normalises each coordinate, so an update of size lr moves a fan-in-d matrix's output by
        # lr*d: hidden and gate LRs scale 1/m; vector-like and embedding LRs stay (TP5, Table 3).
        # Adam makes the GDN gate corrections unnecessary (paper §4).
        # vector: LR m^0 (standard μP), not the authors' code's 1/m, settled by coord_check.py: with m^0
        # the gains' and conv taps' own change is flat in width (exponent +0.02 / -0.01, H100, widths
        # 128..2048, step 10, assets/v1/coord_check.json); with 1/m it is -1.00 / -1.00 (CPU, widths 64..512,
        # 5 steps) while no activation's exponent moves by more than 0.15: they just stop learning.
        'adamw': {'embedding': 0, 'hidden': -1, 'gate': -1, 'scalar': 0, 'vector': 0},
        # SGD: hidden gradients are already Θ(1/d) per entry, so LR Θ(1); input-like (embedding,
        # vectors) gradients are Θ(1/d) for Θ(1) params, so LR ∝ m (TP5, Table 3).
        # gate, scalar: the paper's correction (§4). With head dims ∝ d the signal reaching the gate
        # pre-activations is Θ(1/sqrt d) rather than Θ(1/d), so W_alpha, W_beta get m^-1/2 and the
        # per-head A_log, dt_bias m^+1/2.
        # vector: LR m (standard μP), not the authors' code's 1: with m the gains' and conv taps' change
        # is flat over the first steps (-0.04 / -0.06, steps 1-2, H100); with 1 it is -1.06 / -1.05
        # (CPU, widths 64..512).
        'sgd':   {'embedding': 1, 'hidden': 0, 'gate': -0.5, 'scalar': 0.5, 'vector': 1},
    },
    'mup_fixed_fanout': {
        'adamw': {'embedding': 0, 'hidden': -1, 'gate': -1, 'scalar': 0, 'vector': 0},
        # gate, scalar: W_alpha/W_beta map the width to n_head outputs, a fixed fan-out: TP5's output
        # weights (SGD LR η/fan_in, m^-1); A_log/dt_bias act on those n_head pre-activations: biases of
        # a fixed fan-out (LR η, m^0). The paper's m^∓1/2 sizes the first step from the gate signal's
        # incoherent Θ(1/sqrt d) value at init; from step 2 that gradient is coherent and Θ(1), and the
        # coordinate check then sees the A_log/dt_bias change grow like width^+0.52 (H100, widths
        # 128..2048, step 10) where this rule gives -0.04; its price is a first update of these
        # parameters that shrinks like m^-1/2 (README, "Coordinate check"; tools/SGD_DRIFT.md).
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


def check(param):
    if param not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization={param!r}: choose from {', '.join(PARAMETRIZATIONS)}")
    return param

def init_std(group, param, width, base_width, std=BASE_HPARAMS['init_std']):
    """The init std of a group's matrices (std: the base width's); None = the group's own init."""
    exp = INIT_EXP[param][group]
    return None if exp is None else std * (width / base_width) ** exp

def multipliers(param, width, base_width, head_k, output_mult=BASE_HPARAMS['output_mult']):
    """Constant multipliers in the forward pass."""
    m = width / base_width
    if param == 'sp':
        return {'logits': output_mult, 'readout': 1 / math.sqrt(head_k)}
    return {
        # Tied embedding: Θ(1) entries, so W x has Θ(d) correlated terms: scale logits by 1/m
        # (TP5 Table 3, output weights in the multiplier form, which lets them stay tied).
        'logits': output_mult / m,
        # L2-normalised q, k have Θ(1/sqrt d) entries, so the state S and the readout S q are
        # Θ(1/sqrt d): multiply by sqrt(m) before the head RMSNorm, i.e. keep the readout scale
        # at its base-width value 1/sqrt(d_k0), or the norm hides the size and breaks the
        # gradient scaling (paper §4).
        # Settled by coord_check.py against the other reading of §4, m/sqrt(d_k) ("S q stays
        # Θ(1/sqrt d), so multiply it by sqrt d"): readout change at step 10, H100, widths 128..2048:
        # sqrt(m): -0.17 (AdamW), -0.02 (SGD); m: +0.38, +0.54 (assets/v1/coord_check_readout_x_m.json).
        # Training aligns q with the keys, so S q becomes Θ(1) and sqrt(m) keeps o_t Θ(1). Below width
        # 128 (d_k <= 16) the random q.k overlap ~1/sqrt(d_k) dominates and o_t shrinks (-0.4 at widths
        # 64..512). The scale reaches the model only through the RMSNorm's eps (norm(c u) =
        # u / sqrt(mean u^2 + eps/c^2)): the rule keeps o_t >> sqrt(eps) = 1e-3 as width grows.
        'readout': math.sqrt(m) / math.sqrt(head_k),
    }

def lr_mult(group, param, optimizer, width, base_width, embed_lr_mult=BASE_HPARAMS['embed_lr_mult'],
            gate_lr_mult=BASE_HPARAMS['gate_lr_mult']):
    base = {'embedding': embed_lr_mult, 'gate': gate_lr_mult, 'scalar': gate_lr_mult}.get(group, 1.0)
    return base * (width / base_width) ** LR_EXP[param][optimizer][group]

def param_groups(model, param, optimizer, width, base_width, weight_decay,
                 embed_lr_mult=BASE_HPARAMS['embed_lr_mult'], gate_lr_mult=BASE_HPARAMS['gate_lr_mult']):
    """Optimizer groups: dicts with params, lr_mult (the trainer sets lr = lr_mult * schedule) and weight_decay."""
    assert param in PARAMETRIZATIONS and optimizer in OPTIMIZERS, (param, optimizer)
    groups = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(group_of(name), []).append(p)
    return [{'name': g, 'params': ps,
             'lr_mult': lr_mult(g, param, optimizer, width, base_width, embed_lr_mult, gate_lr_mult),
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
    for k, v in BASE_HPARAMS.items():
        ap.add_argument(f'--{k}', type=float, default=v, help='at the base width')
    a = ap.parse_args()
    wd = 0.0 if a.optimizer == 'sgd' else a.weight_decay  # the paper's SGD runs use no weight decay
    m = a.width / a.base_width
    head_k = a.width // 8
    print(f"{a.parametrization}, {a.optimizer}, width {a.width}, base width {a.base_width} (m = {m:g}); "
          + ', '.join(f'{k} {getattr(a, k):g}' for k in BASE_HPARAMS) + ' at the base width')
    print(f"{'group':10s} {'parameters':52s} {'init std':>9s} {'LR mult':>8s} {'wd':>5s}")
    for g, what in GROUPS.items():
        std = init_std(g, a.parametrization, a.width, a.base_width, a.init_std)
        std = 'own' if std is None else f'{std:.5f}'
        lrm = lr_mult(g, a.parametrization, a.optimizer, a.width, a.base_width, a.embed_lr_mult, a.gate_lr_mult)
        print(f"{g:10s} {what:52s} {std:>9s} {lrm:8.4f} {wd if DECAY[g] else 0.0:5.2f}")
    mult = multipliers(a.parametrization, a.width, a.base_width, head_k, a.output_mult)
    print(f"forward: logits x {mult['logits']:.4f}; readout scale {mult['readout']:.4f} "
          f"(SP: 1/sqrt(d_k) = {1 / math.sqrt(head_k):.4f}, d_k = {head_k})")
    print("'own' init: A_log = log U(0,16), dt_bias = softplus^-1(dt), dt ~ logU(1e-3,1e-1); "
          "gains 1; conv taps U(+-1/2) (fan-in 4)")
