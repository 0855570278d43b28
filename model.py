"""
A Gated DeltaNet (GDN) language model, nanoGPT-style, under standard parametrization or μP.

Every width- and depth-dependent constant comes from mup.py (init stds, the logits, readout and residual
branch multipliers); `grep mup model.py` shows all of them. The delta rule runs in kernel.py, the conv and
the loss in fused_ops.py, each on Triton (CUDA) or PyTorch by one argument, config.kernel_backend. References:
1) Yang, Kautz, Hatamizadeh, "Gated Delta Networks" (2024), the layer.
2) Liu & Gu, "Unlocking Feature Learning in Gated Delta Networks at Scale" (arXiv 2606.04048), μP for it.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import mup
from fused_ops import conv_silu, linear_cross_entropy
from kernel import chunk_gated_delta_rule


def padded_vocab(vocab_size):
    """The embedding's row count for a tokenizer's vocabulary: BPE vocabularies padded up to a multiple
    of 64 for the matmul units (GPT-2's 50257 -> 50304); small character vocabularies as they are."""
    return vocab_size if vocab_size < 1024 else 64 * math.ceil(vocab_size / 64)


def make_optimizer(groups, optimizer, learning_rate, betas, momentum, device_type):
    """AdamW or SGD (Nesterov) over parameter groups that carry their 'lr_mult' (mup.py's)."""
    mup.check(optimizer=optimizer)
    for g in groups:
        g['lr'] = learning_rate * g['lr_mult']
    if optimizer == 'adamw':
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type == 'cuda')
    return torch.optim.SGD(groups, lr=learning_rate, momentum=momentum, nesterov=momentum > 0)


@dataclass
class GDNConfig:
    vocab_size: int = 50304      # GPT-2's 50257 padded up to a multiple of 64
    width: int = 256             # d, the residual stream width
    n_layer: int = 8
    n_head: int = 6              # fixed across widths, as in the paper; head dims grow with d
    head_k: int = 0              # key head dim; 0 = width // 8
    head_v: int = 0              # value head dim; 0 = width // 4
    conv_size: int = 4
    parametrization: str = 'sp'  # one of mup.PARAMETRIZATIONS: 'sp', 'mup', 'mup_fixed_fanout', 'mup_nogdn'
    base_width: int = 256
    depth_rule: str = 'none'     # one of mup.DEPTH_ALPHA: 'none', 'depth_mup', 'completep'
    base_depth: int = 8
    # base hyper-parameters: their values at the base shape (mup.py scales them under μP)
    output_mult: float = 1.0     # logits multiplier
    init_std: float = 0.02       # init std of the matrices
    embed_lr_mult: float = 1.0   # the embedding's LR relative to the base LR
    gate_lr_mult: float = 1.0    # the gates' and their scalars' LR relative to the base LR
    kernel_backend: str = ''     # the delta rule, conv and loss: '' = Triton on CUDA, PyTorch elsewhere;
                                 # 'torch' or 'triton' to force one (kernel.py, fused_ops.py)

    def __post_init__(self):
        mup.check(parametrization=self.parametrization, depth_rule=self.depth_rule)
        for key in ('width', 'n_layer', 'n_head', 'base_width', 'base_depth', 'conv_size', 'vocab_size'):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}={getattr(self, key)}: must be a positive whole number")
        if self.kernel_backend not in ('', 'torch', 'triton'):
            raise ValueError(f"kernel_backend={self.kernel_backend!r}: use '' (Triton on CUDA), 'torch' or 'triton'")
        if self.width % 8 and not (self.head_k and self.head_v):
            raise ValueError(f"width={self.width}: the head dims d_k = width/8 and d_v = width/4 must be "
                             "whole numbers; use a multiple of 8 (of 128 for the Triton kernel, which needs "
                             "head dims that are multiples of 16), or set head_k/head_v explicitly")
        self.head_k, self.head_v = self.head_k or self.width // 8, self.head_v or self.width // 4

    @property
    def mlp_hidden(self):
        # SwiGLU with ~8d/3 hidden units (the parameter count of a 4d GELU MLP), rounded up to a
        # multiple of 64 for the matmul units
        return 64 * math.ceil(8 * self.width / 3 / 64)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x.float(), (x.size(-1),), self.weight.float(), self.eps).type_as(x)


class CausalConv(nn.Module):
    """Depthwise causal conv over time + SiLU, on [B, T, C], with its state: the last kernel_size - 1 inputs
    (zeros at a sequence's start). One module for q, k and v together: the output is split into `parts`,
    and with norm = (n, K) its first n channels (the q and k heads) are L2-normalised in groups of K: unit-norm
    keys keep (I - beta k k^T) a contraction and unit-norm queries keep S q bounded."""

    def __init__(self, channels, kernel_size, parts, norm):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, kernel_size))
        self.parts, self.norm = parts, norm

    def forward(self, x, state=None, backend=''):
        return conv_silu(x, self.weight, state, self.parts, self.norm, backend)


class DeltaRule(nn.Module):
    """The gated delta rule (kernel.py) as a module of its own, without parameters: a forward hook sees its
    inputs (q, k, v, log alpha, beta) and its readout o as the layer computes them (coord_check.py)."""

    def __init__(self, scale, backend):
        super().__init__()
        self.scale, self.backend = scale, backend

    def forward(self, q, k, v, g, beta, initial_state=None, output_final_state=False):
        return chunk_gated_delta_rule(q, k, v, g, beta, self.scale, initial_state, output_final_state, self.backend)


class GatedDeltaNet(nn.Module):
    def __init__(self, config):
        super().__init__()
        d, H, K, V = config.width, config.n_head, config.head_k, config.head_v
        self.n_head, self.head_k, self.head_v = H, K, V
        self.backend = config.kernel_backend
        self.q_proj = nn.Linear(d, H * K, bias=False)
        self.k_proj = nn.Linear(d, H * K, bias=False)
        self.v_proj = nn.Linear(d, H * V, bias=False)
        self.qkv_conv = CausalConv(2 * H * K + H * V, config.conv_size, [H * K, H * K, H * V], (2 * H * K, K))
        self.a_proj = nn.Linear(d, H, bias=False)  # W_alpha: decay gate
        self.b_proj = nn.Linear(d, H, bias=False)  # W_beta: write strength
        self.A_log = nn.Parameter(torch.zeros(H))
        self.dt_bias = nn.Parameter(torch.zeros(H))
        self.g_proj = nn.Linear(d, H * V, bias=False)  # output gate
        self.o_norm = RMSNorm(V)                         # per-head norm, gain shared across heads
        self.o_proj = nn.Linear(H * V, d, bias=False)
        self.delta_rule = DeltaRule(mup.multipliers(config)['readout'], config.kernel_backend)

    def forward(self, x, state=None, need_state=False):
        B, T, _ = x.shape
        H, K, V = self.n_head, self.head_k, self.head_v
        state = state or {}
        # the six input projections in three matmuls: q k v (the conv takes them together), the output gate,
        # and alpha beta. The weights stay separate parameters (μP groups them), concatenated per call
        qkv = F.linear(x, torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]))
        gate = self.g_proj(x)
        a, b = F.linear(x, torch.cat([self.a_proj.weight, self.b_proj.weight])).split([H, H], dim=-1)
        (q, k, v), conv_state = self.qkv_conv(qkv, state.get('conv'), self.backend)
        q, k, v = q.view(B, T, H, K), k.view(B, T, H, K), v.view(B, T, H, V)
        beta = torch.sigmoid(b.float())
        g = -self.A_log.float().exp() * F.softplus(a.float() + self.dt_bias)  # log alpha
        o, S = self.delta_rule(q, k, v, g, beta, state.get('S'), need_state)
        o = self.o_norm(o) * F.silu(gate.view(B, T, H, V))
        return self.o_proj(o.reshape(B, T, H * V)), dict(conv=conv_state, S=S)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.width, config.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(config.width, config.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(config.mlp_hidden, config.width, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.mixer_norm = RMSNorm(config.width)
        self.mixer = GatedDeltaNet(config)
        self.mlp_norm = RMSNorm(config.width)
        self.mlp = MLP(config)
        self.branch_mult = mup.multipliers(config)['branch']  # 1 unless a depth rule scales the branches (exact)

    def forward(self, x, state=None, need_state=False):
        h, state = self.mixer(self.mixer_norm(x), state, need_state)
        x = x + self.branch_mult * h
        return x + self.branch_mult * self.mlp(self.mlp_norm(x)), state


class GDN(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.width)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.norm_f = RMSNorm(config.width)
        self.logit_mult = mup.multipliers(config)['logits']
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, seed=None):
        """Initialise every parameter by mup.py's rules (mup.init_parameters: with a seed, the init depends on the
        seed alone; train.py, the study's runs and coord_check.py rely on it)."""
        mup.init_parameters(self.named_parameters(), self.config, seed=seed)

    def num_params(self, non_embedding=True):
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if non_embedding else n

    def forward(self, idx, targets=None, state=None, return_state=False):
        """idx: [B, T] token ids. state: the per-layer list returned by an earlier call, to continue a sequence (conv
        inputs and delta-rule state). Returns (logits, loss) or, with return_state, (logits, loss, state). With targets,
        the loss and no logits (fused_ops computes the loss without them); without, the logits at every position."""
        x = self.wte(idx)
        new_state = []
        for i, block in enumerate(self.blocks):
            x, s = block(x, state[i] if state else None, return_state)
            new_state.append(s)
        x = self.norm_f(x)
        logits = loss = None
        if targets is not None:
            loss = linear_cross_entropy(x, self.wte.weight, self.logit_mult, targets, self.config.kernel_backend)
        else:
            logits = self.logits(x)
        return (logits, loss, new_state) if return_state else (logits, loss)

    def logits(self, x):
        """The logits of the final norm's output x: the tied embedding as the head, times μP's 1/m
        (mup.multipliers). The loss computes this product chunk by chunk without keeping it (fused_ops)."""
        return F.linear(x, self.wte.weight) * self.logit_mult

    def flops_per_token(self, T):
        """Training FLOPs per token (forward + backward = 3x forward): 6 per matmul parameter, plus
        the chunked delta rule. Per token and head, chunk C = 64, the kernel does matmuls worth
        3CK + 2CV + 3KV multiply-adds (K K^T, Q K^T, A K, A V, P V_new; W H, Q H, K^T V_new); we count
        the full (not triangular) chunk products, as the tensor cores do."""
        c, C = self.config, min(64, T)
        K, V = c.head_k, c.head_v
        delta = 2 * (3 * C * K + 2 * C * V + 3 * K * V) * c.n_head * c.n_layer
        return 6 * self.num_params(non_embedding=False) + 3 * delta

    def configure_optimizer(self, optimizer, learning_rate, weight_decay, betas, momentum, device_type,
                            weight_decay_rule='paper'):
        """AdamW or SGD (Nesterov) over mup.py's parameter groups; the trainer sets group['lr'] = lr_mult * schedule."""
        groups = mup.param_groups(self, optimizer, weight_decay, weight_decay_rule)
        return make_optimizer(groups, optimizer, learning_rate, betas, momentum, device_type)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Sample max_new_tokens after idx, carrying the recurrent state: constant memory per token,
        the prefix is read once."""
        was_training = self.training
        self.eval()
        logits, _, state = self(idx, return_state=True)
        out = [idx]
        for _ in range(max_new_tokens):
            logits = logits[:, -1, :].float() / max(temperature, 1e-8)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float('inf')
            nxt = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            out.append(nxt)
            logits, _, state = self(nxt, state=state, return_state=True)
        self.train(was_training)
        return torch.cat(out, dim=1)
