"""
μP for flash-linear-attention's Gated DeltaNet (fla.models.GatedDeltaNetForCausalLM), by mup.py's rules:

    groups = fla_mup.apply(model, base_width=256, lr=3e-3, weight_decay=0.1)   # init, multipliers, groups
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.95))                 # then DDP / torch.compile

apply() reads mup.py's one table through fla's name map (mup.NAMES['fla']). It stores nothing on the parameters
(microsoft/mup's attributes there are lost under FSDP and torch.compile): the multipliers are forward hooks on
modules and one eps, so DDP, FSDP and torch.compile see a plain fla model. fla_config() builds fla's config at
model.py's shapes; FlaLM puts fla's model behind model.GDN's training interface, so the sweeps and the
coordinate check train either; train_on_this_kernel() lets it train where fla's own backward refuses to run.
"""
import math
import weakref

import torch
import torch.nn.functional as F

from fused_ops import linear_cross_entropy
from kernel import chunk_gated_delta_rule
from model import make_optimizer
from mup import BASE_HPARAMS, check, group_of, groups_of, init_parameters, multipliers

_HOOKS = weakref.WeakKeyDictionary()    # module -> the handle of the multiplier hook apply() put on it
_OWN_EPS = weakref.WeakKeyDictionary()  # o_norm -> its eps before apply() set it


def fla_config(c, **extra):
    """fla's GatedDeltaNetConfig with the shapes of model.py's config c (a model.GDNConfig): n_head heads of
    head_k and head_v, its SwiGLU width, its conv, a tied embedding; `extra` sets fla's other keys."""
    from fla.models import GatedDeltaNetConfig
    return GatedDeltaNetConfig(
        hidden_size=c.width, num_hidden_layers=c.n_layer, num_heads=c.n_head, head_dim=c.head_k,
        expand_v=c.head_v / c.head_k, intermediate_size=c.mlp_hidden, conv_size=c.conv_size, vocab_size=c.vocab_size,
        tie_word_embeddings=True, use_gate=True, use_short_conv=True, hidden_act='swish', **extra)


def apply(model, base_width, lr, parametrization='mup', optimizer='adamw', weight_decay=0.0,
          weight_decay_rule='paper', eps=1e-8, depth_rule='none', base_depth=None, seed=None, init=True,
          output_mult=BASE_HPARAMS['output_mult'], init_std=BASE_HPARAMS['init_std'],
          embed_lr_mult=BASE_HPARAMS['embed_lr_mult'], gate_lr_mult=BASE_HPARAMS['gate_lr_mult']):
    """μP for flash-linear-attention's Gated DeltaNet LM (fla.models.GatedDeltaNetForCausalLM, or its
    GatedDeltaNetModel), in one call before the optimizer, DDP or torch.compile:

        groups = fla_mup.apply(model, base_width=256, lr=3e-3, weight_decay=0.1)
        optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.95))

    It initialises every parameter as model.py's (init=False keeps the weights; seed as init_parameters), puts
    in the multipliers and returns the optimizer groups of param_groups, each with lr = lr * lr_mult. Widths
    scale as in model.py (num_heads fixed; head_dim, the value dim and the MLP ∝ width); base_depth (default:
    the model's depth) is the depth rule's base. A second call undoes the first (hooks and eps) and applies
    itself. An fla model outside the rules' shapes raises ValueError naming what is unsupported."""
    from types import SimpleNamespace
    inner = getattr(model, 'model', model)
    unsupported = _fla_unsupported(model, inner)
    if unsupported:
        raise ValueError("fla_mup.apply: this fla model has what the μP rules do not cover: " + '; '.join(unsupported))
    check(parametrization=parametrization, optimizer=optimizer, depth_rule=depth_rule,
          weight_decay_rule=weight_decay_rule)
    attn = inner.layers[0].attn
    c = SimpleNamespace(parametrization=parametrization, depth_rule=depth_rule,
                        width=inner.embeddings.embedding_dim, base_width=base_width, n_layer=len(inner.layers),
                        base_depth=base_depth or len(inner.layers), head_k=attn.head_k_dim, output_mult=output_mult,
                        init_std=init_std, embed_lr_mult=embed_lr_mult, gate_lr_mult=gate_lr_mult)
    if init:
        init_parameters(model.named_parameters(), c, 'fla', seed)
    mult = multipliers(c)
    # for a tied, bias-free head, the final norm's output times c is the logits times c (and fla's fused linear
    # cross-entropy takes that output, not the logits)
    _multiply_output(inner.norm, mult['logits'])
    for layer in inner.layers:
        # fla's kernel scales S q by K^-1/2 and o_norm, an RMSNorm, takes it: RMSNorm(s o; ε) = RMSNorm(o; ε/s²),
        # so the readout multiplier s (the readout relative to K^-1/2: sqrt(m) under μP) is exactly eps ε/s²
        s = mult['readout'] * math.sqrt(layer.attn.head_k_dim)
        layer.attn.o_norm.eps = _OWN_EPS.setdefault(layer.attn.o_norm, layer.attn.o_norm.eps) / s ** 2
        # the branch multiplier on each branch's output (the MLP's whole: fla's fused SwiGLU calls down_proj's
        # weight without its module)
        _multiply_output(layer.attn.o_proj, mult['branch'])
        _multiply_output(layer.mlp, mult['branch'])
    groups = groups_of(model.named_parameters(), c, 'fla', optimizer, weight_decay, weight_decay_rule, eps)
    for g in groups:
        g['lr'] = lr * g['lr_mult']
    return groups


def _multiply_output(module, mult):
    """module's output times mult, by a forward hook that replaces the one an earlier apply() put there."""
    handle = _HOOKS.pop(module, None)
    if handle is not None:
        handle.remove()
    if mult != 1:
        _HOOKS[module] = module.register_forward_hook(lambda mod, args, out: out * mult)


def _fla_unsupported(model, inner):
    """What of an fla model the rules do not cover (model.py's shapes), one phrase each; [] if nothing."""
    from fla.layers import GatedDeltaNet
    if not all(hasattr(inner, key) for key in ('embeddings', 'layers', 'norm')):
        return [f"{type(model).__name__} is not laid out as fla's GatedDeltaNetModel (embeddings, layers, norm)"]
    config, head = getattr(model, 'config', None), getattr(model, 'lm_head', None)
    why = []
    if getattr(config, 'attn', None) is not None:
        why.append("hybrid attention layers (config.attn)")
    if getattr(config, 'attnres_block_size', None) is not None:
        why.append("attention residuals (attnres_block_size)")
    if head is not None and (head.weight is not inner.embeddings.weight or head.bias is not None):
        why.append("an untied lm_head (tie_word_embeddings=False): the rules are for a tied embedding")
    for i, layer in enumerate(inner.layers):
        a = getattr(layer, 'attn', None)
        if not isinstance(a, GatedDeltaNet):
            why.append(f"a mixer that is not fla.layers.GatedDeltaNet ({type(a).__name__}, layer {i})")
            continue
        for bad, what in [(a.num_v_heads != a.num_heads, f"grouped value heads (num_v_heads={a.num_v_heads} "
                                                           f"!= num_heads={a.num_heads})"),
                          (not a.use_gate, "no output gate (use_gate=False)"),
                          (not a.use_short_conv, "no short convolution (use_short_conv=False)"),
                          (a.conv_bias, "conv biases (conv_bias=True)"),
                          (a.allow_neg_eigval, "negative eigenvalues (allow_neg_eigval=True)"),
                          (getattr(layer.mlp, 'hidden_act', 'swish') != 'swish',
                           f"an MLP activation other than SwiGLU (hidden_act={getattr(layer.mlp, 'hidden_act', '')})")]:
            if bad:
                why.append(what)
    unnamed = [name for name, _ in model.named_parameters() if group_of(name, 'fla') is None]
    if unnamed:
        why.append(f"parameters the rules do not name ({', '.join(unnamed[:3])}{', ...' if unnamed[3:] else ''})")
    return list(dict.fromkeys(why))


def fla_delta_rule(q, k, v, g, beta, initial_state=None, output_final_state=False, A_log=None, dt_bias=None,
                   scale=None, use_gate_in_kernel=False, use_qk_l2norm_in_kernel=False,
                   use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False, state_v_first=False, cu_seqlens=None):
    """fla's chunk_gated_delta_rule, computed by kernel.py: the gate from A_log and dt_bias, q and k
    L2-normalised, β = σ(beta) (2σ with negative eigenvalues), as fla's flags ask; the state is [B, H, K, V],
    or [B, H, V, K] with state_v_first (fla's layer passes it, so its cache keeps fla's layout)."""
    if cu_seqlens is not None:
        raise NotImplementedError("fla_mup.fla_delta_rule: packed sequences (cu_seqlens) run on fla's own kernel")
    if use_gate_in_kernel:
        g = -A_log.float().exp() * F.softplus(g.float() + dt_bias)
    if use_qk_l2norm_in_kernel:
        q, k = F.normalize(q, dim=-1, eps=1e-6), F.normalize(k, dim=-1, eps=1e-6)
    q, k = q.to(v.dtype), k.to(v.dtype)  # the kernel takes one dtype; CUDA autocast runs the norm in fp32
    if use_beta_sigmoid_in_kernel:
        beta = beta.float().sigmoid() * (2 if allow_neg_eigval else 1)
    flip = (lambda s: s.transpose(-1, -2)) if state_v_first else (lambda s: s)
    o, state = chunk_gated_delta_rule(q, k, v, g, beta, scale or q.size(-1) ** -0.5,
                                      None if initial_state is None else flip(initial_state), output_final_state)
    return o, None if state is None else flip(state)


def train_on_this_kernel():
    """fla 0.6 refuses its own backward with Triton < 3.7.1 on Hopper (its gradients there are wrong): make fla's
    GatedDeltaNet layers run the same math on this repo's kernel, whose gradients are checked against float64."""
    import fla.layers.gated_deltanet
    fla.layers.gated_deltanet.chunk_gated_delta_rule = fla_delta_rule


class FlaLM(torch.nn.Module):
    """fla's GatedDeltaNetForCausalLM at the shapes and μP settings of a model.GDNConfig, trained as model.GDN
    is: forward(idx, targets) -> (logits, loss) with this repo's loss over every position (fused_ops),
    reset_parameters(seed), configure_optimizer(...). fla's model is .fla; its delta rule runs on this repo's
    kernel (train_on_this_kernel)."""

    def __init__(self, config):
        from fla.models import GatedDeltaNetForCausalLM
        super().__init__()
        if config.depth_rule != 'none' or config.embed_lr_mult != 1 or config.gate_lr_mult != 1:
            raise ValueError("FlaLM: depth rules and LR multipliers go to apply() directly, not through a config")
        train_on_this_kernel()
        self.config = config
        self.fla = GatedDeltaNetForCausalLM(fla_config(config, use_cache=False))
        self.reset_parameters()

    def rules(self, **kw):
        c = self.config
        return apply(self.fla, c.base_width, parametrization=c.parametrization, output_mult=c.output_mult,
                     init_std=c.init_std, **kw)

    def reset_parameters(self, seed=None):
        self.rules(lr=0.0, seed=seed)

    def logits(self, h):
        return F.linear(h, self.fla.model.embeddings.weight)  # the final norm's hook holds the multiplier

    def forward(self, idx, targets=None):
        h = self.fla.model(input_ids=idx).last_hidden_state
        if targets is None:
            return self.logits(h), None
        return None, linear_cross_entropy(h, self.fla.model.embeddings.weight, 1.0, targets,
                                          self.config.kernel_backend)

    def configure_optimizer(self, optimizer, learning_rate, weight_decay, betas, momentum, device_type,
                            weight_decay_rule='paper'):
        groups = self.rules(lr=learning_rate, optimizer=optimizer, weight_decay=weight_decay,
                            weight_decay_rule=weight_decay_rule, init=False)
        return make_optimizer(groups, optimizer, learning_rate, betas, momentum, device_type)
