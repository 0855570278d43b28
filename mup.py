"""
Every scaling rule of the Maximal Update Parametrization (μP) for Gated DeltaNet, as data, in one file.

The model (model.py) asks this file four things: how to initialise a parameter, which constant multipliers to put in the
forward pass, how to split the parameters into optimizer groups (LR, Adam epsilon and weight decay per group), and how
much each residual branch counts. `grep -n mup model.py train.py` shows the whole difference from standard
parametrization (SP). fla_mup.apply() does the four to flash-linear-attention's model.

Width. m = width / base_width; at m = m_L = 1 every combination is SP, parameter by parameter. Parametrizations:
  'sp'                standard parametrization: every matrix N(0, init_std²), one LR, readout 1/sqrt(d_k).
  'mup'               μP as published by Liu & Gu (arXiv 2606.04048, §4): the q/k/state readout multiplier,
                      gates initialised like hidden weights and, under SGD, the paper's correction: W_alpha,
                      W_beta LR ∝ m^-1/2, A_log and dt_bias LR ∝ m^+1/2.
  'mup_fixed_fanout'  the same μP, but under SGD the gates and their scalars get the rows of an output layer
                      of fixed fan-out (n_head) and its biases: LR ∝ m^-1 and m^0 (see LR_EXP).
  'mup_nogdn'         "standard μP" without the GDN treatment of the gates: the paper's SGD ablation.

Depth. m_L = n_layer / base_depth. Depth rules (DEPTH_ALPHA) scale each residual branch by m_L^-alpha and adjust the LR
and Adam's epsilon of the parameters inside the branches; 'none' is width-only μP.

Weight decay. PyTorch's AdamW decays by lr_group * weight_decay a step, so under μP the hidden matrices' decay timescale
grows with width. WEIGHT_DECAY_RULES say how the decay of each group scales instead.

Base hyper-parameters (BASE_HPARAMS, each described in model.GDNConfig; μTransfer, Tensor Programs V §1) are the values
AT THE BASE SHAPE: SP uses them as they are at every width, μP scales them by the rules below (output_mult / m,
init_std / sqrt(m), the LR rules), so that their optimum stays put. At their defaults the base model is GPT-2's SP.

    python mup.py --width=1024 --n_layer=32 --optimizer=sgd   # print every rule as numbers
"""
import math
import re

import torch

BASE_HPARAMS = {'output_mult': 1.0, 'init_std': 0.02, 'embed_lr_mult': 1.0, 'gate_lr_mult': 1.0}  # SP's values
PARAMETRIZATIONS = ('sp', 'mup', 'mup_fixed_fanout', 'mup_nogdn')
OPTIMIZERS = ('adamw', 'sgd')
GROUPS = {  # the parameter groups
    'embedding': 'tied token embedding / lm_head (wte)',
    'hidden':    'W_q W_k W_v W_g W_o, MLP (width x width matrices)',
    'gate':      'W_alpha W_beta (a_proj, b_proj: width -> n_head)',
    'scalar':    'A_log, dt_bias (per head, width-independent)',
    'vector':    'RMSNorm gains, depthwise conv weights',
}
# Each parameter's one group, by its name: one map per model, model.py's ('gdn') and flash-linear-attention's
# GatedDeltaNetForCausalLM ('fla', for fla_mup.apply()): a pattern per group (the first found in the name wins), then
# that of the names inside a residual branch (a block's mixer or MLP with its pre-norm: the depth rules' domain).
NAMES = {
    'gdn': ({'scalar': r'(A_log|dt_bias)$', 'embedding': r'^wte\.', 'gate': r'\.[ab]_proj\.',
             'vector': r'norm|conv', 'hidden': r'\.([qkvgo]|gate|up|down)_proj\.weight$'}, r'^blocks\.'),
    'fla': ({'scalar': r'(A_log|dt_bias)$', 'embedding': r'(^|\.)embeddings\.', 'gate': r'\.[ab]_proj\.',
             'vector': r'norm|conv1d', 'hidden': r'\.([qkvgo]|gate|up|down)_proj\.weight$'}, r'(^|\.)layers\.\d+\.'),
}

def group_of(name, names='gdn', strict=False):  # None: no rule (a parameter the model's layout does not have)
    group = next((group for group, pattern in NAMES[names][0].items() if re.search(pattern, name)), None)
    if group is None and strict:  # a new parameter never gets some group's rule by default
        raise ValueError(f"parameter {name} has no μP rule: give it a group in mup.NAMES[{names!r}]")
    return group

def in_branch(name, names='gdn'):
    return re.search(NAMES[names][1], name) is not None

# ---- width ----------------------------------------------------------------------------------------------
# Init std = init_std * m**INIT_EXP[group]; None = the group's own width-independent init (own_init).
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
        # Adam normalises each coordinate, so an update of size lr moves a fan-in-d matrix's output by lr*d: hidden and
        # gate LRs scale 1/m; vector-like and embedding LRs stay (TP5, Table 3). Adam makes the GDN gate corrections
        # unnecessary (paper §4). vector: m^0 (standard μP), not the authors' code's 1/m: the coordinate check shows the
        # gains and conv taps stop learning with 1/m (docs/rules.md).
        'adamw': {'embedding': 0, 'hidden': -1, 'gate': -1, 'scalar': 0, 'vector': 0},
        # SGD: hidden gradients are already Θ(1/d) per entry, so LR Θ(1); input-like (embedding, vectors)
        # gradients are Θ(1/d) for Θ(1) params, so LR ∝ m (TP5, Table 3). gate, scalar: the paper's
        # correction (§4): with head dims ∝ d the signal reaching the gate pre-activations is Θ(1/sqrt d),
        # not Θ(1/d), so W_alpha, W_beta get m^-1/2 and A_log, dt_bias m^+1/2. vector: m (standard μP),
        # not the authors' code's 1, by the coordinate check (docs/rules.md).
        'sgd':   {'embedding': 1, 'hidden': 0, 'gate': -0.5, 'scalar': 0.5, 'vector': 1},
    },
    'mup_fixed_fanout': {
        # gate, scalar: W_alpha/W_beta map the width to n_head outputs, a fixed fan-out: TP5's output
        # weights (SGD LR η/fan_in, m^-1); A_log/dt_bias act on those n_head pre-activations: the biases of
        # a fixed fan-out (m^0). The paper's m^∓1/2 sizes the first step from the gate signal's incoherent
        # Θ(1/sqrt d) value at init; later the gradient is coherent and Θ(1) (docs/rules.md).
        'sgd':   {'embedding': 1, 'hidden': 0, 'gate': -1, 'scalar': 0, 'vector': 1},
    },
    'mup_nogdn': {
        # the ablation: gates treated as hidden weights, scalars as plain vector-like (paper §4, the SGD comparison)
        'sgd':   {'embedding': 1, 'hidden': 0, 'gate': 0, 'scalar': 1, 'vector': 1},
    },
}
LR_EXP['mup_fixed_fanout']['adamw'] = LR_EXP['mup_nogdn']['adamw'] = LR_EXP['mup']['adamw']  # only SGD differs

# Weight decay only on matrices whose scale is learned against the data; never on the embedding, gains,
# conv taps or the decay/step-size scalars (same rule in SP and μP, so they agree at base).
DECAY = {'embedding': False, 'hidden': True, 'gate': True, 'scalar': False, 'vector': False}

# How a group's decay coefficient scales, as the exponent applied to its LR multiplier (lr_mult / its base
# value): lambda_group = weight_decay * (lr ratio) ** WEIGHT_DECAY_RULES[rule].
WEIGHT_DECAY_RULES = {
    # the paper's and the authors' code's: lambda unscaled, so the decay per step lr_group * lambda shrinks
    # like the group's LR (PyTorch AdamW; Liu & Gu; microsoft/mup)
    'paper': 0.0,
    # lr_group * lambda_group held at its base value, i.e. a width- and depth-independent decay timescale
    # (Wang & Aitchison, ICML 2025; CompleteP, arXiv 2505.01618)
    'fixed_timescale': -1.0,
    # lambda ∝ sqrt(m) for the hidden matrices under μP-AdamW (Fan, Liu et al., arXiv 2510.15262): half the
    # timescale correction. Width only: the depth part of the LR ratio is left out (depth_lr_exp below)
    'sqrt_width': -0.5,
}

# ---- depth ----------------------------------------------------------------------------------------------
# Residual branch multiplier m_L**-alpha (x = x + m_L**-alpha * branch(x)); alpha by rule.
DEPTH_ALPHA = {
    'none': 0.0,        # width-only μP: depth changes nothing (the paper's setting)
    'depth_mup': 0.5,   # depth-μP (Yang, Yu, Zhu, Hayou, Tensor Programs VI, 2023)
    'completep': 1.0,   # CompleteP (Dey et al., arXiv 2505.01618): the one alpha where no layer is lazy
}

def depth_lr_exp(optimizer, rule):
    """The exponent of m_L in the LR of every parameter inside a residual branch (0 without a depth rule). Each
    block's contribution to the residual stream should change by Θ(1/L) a step (so the L blocks together move
    it by Θ(1)). A branch scaled by b = m_L^-alpha sees gradients scaled by b and moves the stream by b times its
    own change: Adam's update ignores the gradient's size, so the move is η b and η ∝ m_L^(alpha-1) (CompleteP,
    Table 1); SGD's update carries it, so the move is η b² and η ∝ m_L^(2 alpha - 1) (Bordelon et al., 2024).
    The GDN gates and scalars sit inside the branch like the hidden matrices, so the same factor applies on top
    of their width rule (docs/depth.md)."""
    if rule == 'none':
        return 0.0
    alpha = DEPTH_ALPHA[rule]
    return alpha - 1 if optimizer == 'adamw' else 2 * alpha - 1

# Adam's epsilon inside the branches ∝ m_L^-alpha: the gradients there shrink by the branch multiplier, and a
# fixed epsilon would grow relative to them (CompleteP, eq. 40)
DEPTH_EPS_EXP = -1.0   # times alpha


CHOICES = {'parametrization': PARAMETRIZATIONS, 'optimizer': OPTIMIZERS, 'depth_rule': DEPTH_ALPHA,
           'weight_decay_rule': WEIGHT_DECAY_RULES}

def check(**choices):
    """Each choice (key=value) is one of CHOICES[key]; else a ValueError that lists them."""
    for key, value in choices.items():
        if value not in CHOICES[key]:
            raise ValueError(f"{key}={value!r}: choose from {', '.join(CHOICES[key])}")

def init_std(c, group):
    """The init std of a group's matrices for config c (model.GDNConfig); None = the group's own init."""
    exp = INIT_EXP[c.parametrization][group]
    return None if exp is None else c.init_std * (c.width / c.base_width) ** exp

def multipliers(c):
    """Constant multipliers in the forward pass."""
    m, m_L = c.width / c.base_width, c.n_layer / c.base_depth
    branch = m_L ** -DEPTH_ALPHA[c.depth_rule]
    if c.parametrization == 'sp':
        return {'logits': c.output_mult, 'readout': 1 / math.sqrt(c.head_k), 'branch': branch}
    return {
        # Tied embedding: Θ(1) entries, so W x has Θ(d) correlated terms: scale logits by 1/m
        # (TP5 Table 3, output weights in the multiplier form, which lets them stay tied).
        'logits': c.output_mult / m,
        # L2-normalised q, k have Θ(1/sqrt d) entries, so the state S and the readout S q are Θ(1/sqrt d):
        # multiply by sqrt(m) before the head RMSNorm, i.e. keep the readout scale at its base-width value
        # 1/sqrt(d_k0) (paper §4). The norm is scale-free but for its eps, so the rule acts through eps: o_t's
        # size against it stays as at the base width. The coordinate check picked sqrt(m) over §4's other
        # reading, m (docs/rules.md).
        'readout': math.sqrt(m) / math.sqrt(c.head_k),
        'branch': branch,
    }

def lr_mult(c, optimizer, group, branch=True):
    """A group's LR relative to the base LR: its base value (embed_lr_mult, gate_lr_mult), the width rule and,
    inside the residual branches, the depth rule."""
    base = {'embedding': c.embed_lr_mult, 'gate': c.gate_lr_mult, 'scalar': c.gate_lr_mult}.get(group, 1.0)
    m, m_L = c.width / c.base_width, c.n_layer / c.base_depth
    depth = m_L ** depth_lr_exp(optimizer, c.depth_rule) if branch else 1.0
    return base * m ** LR_EXP[c.parametrization][optimizer][group] * depth

def decay(c, optimizer, group, branch, weight_decay, rule='paper'):
    """A group's decoupled decay coefficient (PyTorch's: the decay a step is lr_group * this)."""
    if optimizer == 'sgd' or not DECAY[group]:  # the paper's SGD runs use none; PyTorch's SGD decay is not
        return 0.0                              # decoupled (an L2 term that momentum amplifies)
    m, m_L = c.width / c.base_width, c.n_layer / c.base_depth
    width_exp = LR_EXP[c.parametrization][optimizer][group]
    depth_exp = depth_lr_exp(optimizer, c.depth_rule) if branch and rule != 'sqrt_width' else 0
    return weight_decay * (m ** width_exp * m_L ** depth_exp) ** WEIGHT_DECAY_RULES[rule]

def eps_mult(c, branch=True):
    """Adam's epsilon relative to its base value."""
    return (c.n_layer / c.base_depth) ** (DEPTH_EPS_EXP * DEPTH_ALPHA[c.depth_rule]) if branch else 1.0

def param_groups(model, optimizer, weight_decay, weight_decay_rule='paper', eps=1e-8):
    """Optimizer groups of model.py's model: dicts with params, lr_mult (the trainer sets lr = lr_mult *
    schedule), weight_decay and, for AdamW, eps. One group per (group, inside a branch or not)."""
    return groups_of(model.named_parameters(), model.config, 'gdn', optimizer, weight_decay, weight_decay_rule, eps)

def groups_of(named_parameters, c, names, optimizer, weight_decay, weight_decay_rule='paper', eps=1e-8):
    """param_groups for any model: its (name, parameter) pairs, its shape c and its name map (NAMES)."""
    check(optimizer=optimizer, weight_decay_rule=weight_decay_rule)  # c's parametrization: checked where c was made
    groups = {}
    for name, p in named_parameters:
        if p.requires_grad:
            groups.setdefault((group_of(name, names, True), in_branch(name, names)), []).append(p)
    first = list(dict.fromkeys(g for g, _ in groups))  # a group's two halves side by side: the parameters keep
    out = []                                           # the order of one group per name (clipping sums them)
    for (g, branch), ps in sorted(groups.items(), key=lambda kv: (first.index(kv[0][0]), not kv[0][1])):
        d = {'name': g if branch or g == 'embedding' else f'{g} (outside the blocks)', 'params': ps,
             'lr_mult': lr_mult(c, optimizer, g, branch),
             'weight_decay': decay(c, optimizer, g, branch, weight_decay, weight_decay_rule)}
        if optimizer == 'adamw':
            d['eps'] = eps * eps_mult(c, branch)
        out.append(d)
    return out

# ---- init -----------------------------------------------------------------------------------------------
def own_init(name, t, gen=None):
    """Fill t, a CPU fp32 tensor of the parameter's shape, with the init of a group that INIT_EXP leaves to its
    own: the same at every width, in SP and μP."""
    if name.endswith('A_log'):
        # decay rate exp(A_log) ~ U(0, 16), as in the GDN paper (clamped away from log 0)
        t.uniform_(0, 16, generator=gen).clamp_(min=1e-4).log_()
    elif name.endswith('dt_bias'):
        # softplus(dt_bias) = dt ~ logU(1e-3, 1e-1): the initial step sizes span two decades
        dt = t.uniform_(math.log(1e-3), math.log(1e-1), generator=gen).exp_().clamp_(min=1e-4)
        t.copy_(dt + torch.log(-torch.expm1(-dt)))
    elif 'norm' in name:
        t.fill_(1.0)
    elif 'conv' in name:
        bound = 1 / math.sqrt(t.size(-1))  # depthwise: each channel sees only its own kernel_size taps
        t.uniform_(-bound, bound, generator=gen)
    else:
        raise RuntimeError(f"no init rule for parameter {name}")

@torch.no_grad()
def init_parameters(named_parameters, c, names='gdn', seed=None):
    """Initialise every parameter by the rules: N(0, init_std(c, group)²) or its group's own init. With a seed
    the draws come from a generator of their own (on the CPU, then copied), so the init depends on the seed
    alone: the same whatever the device, and whatever was drawn before."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    for name, p in named_parameters:
        t = torch.empty(p.shape)
        std = init_std(c, group_of(name, names, True))
        if std is None:
            own_init(name, t, gen)
        else:
            t.normal_(0.0, std, generator=gen)
        p.copy_(t)

if __name__ == '__main__':
    import sys
    from types import SimpleNamespace

    from configurator import configure
    cfg = dict(
        width=768,                   # the model's width
        base_width=256,              # μP's base width: at width == base_width μP is SP
        n_layer=8,
        base_depth=8,                # the depth rules' base depth
        optimizer='adamw',           # one of OPTIMIZERS: 'adamw', 'sgd'
        parametrization='mup',       # one of PARAMETRIZATIONS
        depth_rule='none',           # one of DEPTH_ALPHA: 'none', 'depth_mup', 'completep'
        weight_decay=0.1,            # AdamW's (the paper's SGD runs use none: 0 under SGD)
        weight_decay_rule='paper',   # one of WEIGHT_DECAY_RULES
        **BASE_HPARAMS,              # output_mult, init_std, embed_lr_mult, gate_lr_mult at the base width
    )
    configure(cfg)
    try:
        check(**{k: cfg[k] for k in ('parametrization', 'depth_rule', 'weight_decay_rule', 'optimizer')})
    except ValueError as e:
        sys.exit(f"error: {e}")
    c = SimpleNamespace(**cfg, head_k=cfg['width'] // 8)
    wd = 0.0 if c.optimizer == 'sgd' else c.weight_decay  # as decay() has it
    m, m_L = c.width / c.base_width, c.n_layer / c.base_depth
    print(f"{c.parametrization}, {c.optimizer}, width {c.width} (m = {m:g}), depth {c.n_layer} (m_L = {m_L:g}), "
          f"depth rule {c.depth_rule}, weight decay {wd:g} by rule {c.weight_decay_rule}; "
          + ', '.join(f'{k} {getattr(c, k):g}' for k in BASE_HPARAMS) + ' at the base shape')
    print(f"{'group':10s} {'parameters':52s} {'init std':>9s} {'LR mult':>8s} {'wd':>7s} {'eps mult':>8s}")
    for g, what in GROUPS.items():
        for branch in ([False] if g == 'embedding' else [True, False] if g == 'vector' else [True]):
            std = init_std(c, g)
            std = 'own' if std is None else f'{std:.5f}'
            name = g if branch or g == 'embedding' else 'final norm'
            what = what if branch or g == 'embedding' else 'the final RMSNorm gain (outside the blocks)'
            print(f"{name:10s} {what:52s} {std:>9s} {lr_mult(c, c.optimizer, g, branch):8.4f} "
                  f"{decay(c, c.optimizer, g, branch, wd, c.weight_decay_rule):7.4f} {eps_mult(c, branch):8.4f}")
    mult = multipliers(c)
    print(f"forward: logits x {mult['logits']:.4f}; readout scale {mult['readout']:.4f} "
          f"(SP: 1/sqrt(d_k) = {1 / math.sqrt(c.head_k):.4f}, d_k = {c.head_k}); residual branches x {mult['branch']:.4f}")
    print("'own' init: A_log = log U(0,16), dt_bias = softplus^-1(dt), dt ~ logU(1e-3,1e-1); "
          "gains 1; conv taps U(+-1/2) (fan-in 4)")
