"""
A Gated DeltaNet (GDN) language model, nanoGPT-style, under standard parametrization or μP.

Every width-dependent constant comes from mup.py (init stds, the logits and readout multipliers);
`grep mup model.py` shows all of them. References:
1) Yang, Kautz, Hatamizadeh, "Gated Delta Networks" (2024), the layer.
2) Liu & Gu, "Unlocking Feature Learning in Gated Delta Networks at Scale" (arXiv 2606.04048), μP for it.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernel
import mup
from kernel import causal_conv_silu, chunk_gated_delta_rule


def padded_vocab(vocab_size):
    """The embedding's row count for a tokenizer's vocabulary: BPE vocabularies padded up to a multiple
    of 64 for the matmul units (GPT-2's 50257 -> 50304); small character vocabularies as they are."""
    return vocab_size if vocab_size < 1024 else 64 * math.ceil(vocab_size / 64)


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
    # base hyper-parameters: their values at base_width (mup.py scales them with width under μP)
    output_mult: float = 1.0     # logits multiplier
    init_std: float = 0.02       # init std of the matrices
    embed_lr_mult: float = 1.0   # the embedding's LR relative to the base LR
    gate_lr_mult: float = 1.0    # the gates' and their scalars' LR relative to the base LR
    kernel_backend: str = ''     # '' = best available (Triton on CUDA), or 'torch' / 'triton'
    fused: bool = False          # True: three matmuls for the six input projections, the conv and the linear
                                 # cross-entropy fused (Triton on CUDA: TRITON_CONV, TRITON_CE below); same
                                 # math. False: the reference ops, which the tests compare against
                                 # (train.py and sweep.py turn it on: 35.2 vs 50.1 ms a step, BENCH.md runs 6, 9)

    def __post_init__(self):
        mup.check(self.parametrization)
        self.head_k = self.head_k or self.width // 8
        self.head_v = self.head_v or self.width // 4
        if self.width % 8:
            raise ValueError(f"width={self.width}: the head dims d_k = width/8 and d_v = width/4 must be "
                             "whole numbers; use a multiple of 8 (of 128 for the Triton kernel, which needs "
                             "head dims that are multiples of 16), or set head_k/head_v explicitly")

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


def probe(module, name, x):
    # coord_check.py sets `module.probes = {}` to record intermediate activations; otherwise a no-op
    if module.probes is not None:
        module.probes[name] = x.detach()


TRITON_CONV = True  # fused conv: Triton on CUDA; False: the torch ops (bench A/B); 'force': any device (tests)


def use_triton(switch, x):
    """A fused op's Triton switch (TRITON_CONV, TRITON_CE): True runs it on CUDA, 'force' on any device."""
    return kernel.HAS_TRITON and (switch == 'force' or (switch and x.is_cuda))


class CausalConv(nn.Module):
    """Depthwise causal conv over time + SiLU, on [B, T, C]; carries the last kernel_size - 1 inputs as its
    state [B, kernel_size - 1, C] (zeros at a sequence's start). One module for q, k and v together: the
    output is split into `parts` (their channel counts), and with norm = (n, K) its first n channels (the
    q and k heads) are L2-normalised in groups of K. Returns the parts and the new state."""

    def __init__(self, channels, kernel_size, parts=None, norm=(0, 1)):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, kernel_size))
        self.parts, self.norm = parts or [channels], norm

    def forward(self, x, state=None, fused=False):
        if fused and use_triton(TRITON_CONV, x):  # the kernel writes each part contiguous, normalised
            return causal_conv_silu(x, self.weight, state, self.parts, self.norm)
        B, T, C = x.shape
        W = self.weight.size(1)
        if state is None:
            state = x.new_zeros(B, W - 1, C)
        xs = torch.cat([state.to(x.dtype), x], dim=1)  # [B, T + W - 1, C]
        if fused:
            # W shifted multiply-adds in fp32: torch.compile fuses them, the SiLU and the cast into one
            # kernel (and the backward into few), where aten's depthwise conv and its two backward
            # kernels took 14% of a compiled step (issue 12)
            w = self.weight.float()
            y = F.silu(sum(xs[:, j:j + T].float() * w[:, j] for j in range(W))).to(x.dtype)
        else:
            y = F.silu(F.conv1d(xs.transpose(1, 2), self.weight[:, None], groups=C)).transpose(1, 2)
        parts = list(y.split(self.parts, dim=-1))
        n, K, c0 = *self.norm, 0
        for i, p in enumerate(parts):  # the parts before channel n, normalised in fp32, cast back
            if c0 < n:
                parts[i] = F.normalize(p.reshape(B, T, -1, K).float(), dim=-1).view(B, T, -1).to(y.dtype)
            c0 += p.size(-1)
        return tuple(parts), xs[:, T:]


# fused: the six input projections in three matmuls, q k v | g | alpha beta (False), or one (True, bench A/B).
# One matmul's backward concatenates the four gradients, and compile fused that cat with the gates' and the
# output norm's backward into one pointwise kernel at a fifth of the memory bandwidth: 39.9 against 35.9 ms
# a step at width 768 on an H200 (BENCH.md run 9)
ONE_PROJ_MATMUL = False


class GatedDeltaNet(nn.Module):
    def __init__(self, config):
        super().__init__()
        d, H, K, V = config.width, config.n_head, config.head_k, config.head_v
        self.n_head, self.head_k, self.head_v = H, K, V
        self.backend = config.kernel_backend or None
        self.fused = config.fused
        self.q_proj = nn.Linear(d, H * K, bias=False)
        self.k_proj = nn.Linear(d, H * K, bias=False)
        self.v_proj = nn.Linear(d, H * V, bias=False)
        # q's, k's, v's channels; unit-norm keys keep (I - beta k k^T) a contraction, unit-norm queries
        # keep S q bounded: the conv normalises q and k per head (in its kernel on the GPU)
        self.qkv_conv = CausalConv(2 * H * K + H * V, config.conv_size, [H * K, H * K, H * V], (2 * H * K, K))
        self.a_proj = nn.Linear(d, H, bias=False)  # W_alpha: decay gate
        self.b_proj = nn.Linear(d, H, bias=False)  # W_beta: write strength
        self.A_log = nn.Parameter(torch.zeros(H))
        self.dt_bias = nn.Parameter(torch.zeros(H))
        self.g_proj = nn.Linear(d, H * V, bias=False)  # output gate
        self.o_norm = RMSNorm(V)                         # per-head norm, gain shared across heads
        self.o_proj = nn.Linear(H * V, d, bias=False)
        self.readout_scale = mup.multipliers(config.parametrization, config.width,
                                             config.base_width, K)['readout']
        self.probes = None

    def forward(self, x, state=None, need_state=False):
        B, T, _ = x.shape
        H, K, V = self.n_head, self.head_k, self.head_v
        state = state or {}
        # q, k, v in one matmul (the conv takes them together); fused: alpha and beta in one too (or all six
        # in one: ONE_PROJ_MATMUL). The weights stay separate parameters (μP groups them), concatenated
        qkv_w = [self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]
        if self.fused and ONE_PROJ_MATMUL:
            w = torch.cat(qkv_w + [self.g_proj.weight, self.a_proj.weight, self.b_proj.weight])
            qkv, gate, a, b = F.linear(x, w).split([2 * H * K + H * V, H * V, H, H], dim=-1)
        else:
            qkv, gate = F.linear(x, torch.cat(qkv_w)), self.g_proj(x)
            if self.fused:
                a, b = F.linear(x, torch.cat([self.a_proj.weight, self.b_proj.weight])).split([H, H], dim=-1)
            else:
                a, b = self.a_proj(x), self.b_proj(x)
        (q, k, v), conv = self.qkv_conv(qkv, state.get('conv'), self.fused)
        q, k, v = q.view(B, T, H, K), k.view(B, T, H, K), v.view(B, T, H, V)
        beta = torch.sigmoid(b.float())
        g = -self.A_log.float().exp() * F.softplus(a.float() + self.dt_bias)  # log alpha
        probe(self, 'q', q); probe(self, 'k', k); probe(self, 'v', v)
        probe(self, 'beta', beta); probe(self, 'alpha', g.exp())
        o, S = chunk_gated_delta_rule(q, k, v, g, beta, self.readout_scale,
                                      initial_state=state.get('S'),
                                      output_final_state=need_state or self.probes is not None,
                                      backend=self.backend)
        probe(self, 'readout', o)
        if S is not None:
            probe(self, 'state', S)
        o = self.o_norm(o) * F.silu(gate.view(B, T, H, V))
        new_state = dict(conv=conv, S=S)
        return self.o_proj(o.reshape(B, T, H * V)), new_state


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
        self.probes = None

    def forward(self, x, state=None, need_state=False):
        h, state = self.mixer(self.mixer_norm(x), state, need_state)
        probe(self, 'mixer_out', h)
        x = x + h
        h = self.mlp(self.mlp_norm(x))
        probe(self, 'mlp_out', h)
        x = x + h
        probe(self, 'residual', x)
        return x, state


CE_CHUNK = 2 ** 27  # logits per chunk of the fused cross-entropy: 512 MB in fp32
TRITON_CE = True  # the fused CE's softmax in kernel.linear_ce on CUDA (False: torch; 'force': also CPU, tests)


class LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of the logits (x @ weight^T) * mult against targets (-1: ignored), without a
    [B*T, vocab] fp32 tensor of the logits (3.3 GB at 16K tokens and GPT-2's vocabulary; their softmax took
    11% of a compiled step: issue 12). The logits' gradient is formed in the forward pass and kept in x's
    dtype; the backward is two matmuls. The arithmetic is the reference's: logits rounded to x's dtype, then
    * mult, softmax in fp32. Two paths: torch (CPU, the tests' oracle) takes chunks of rows, so that only
    one chunk's fp32 logits exist at a time, and stores the gradient with its 1/n (n = the targets not
    ignored); triton (kernel.linear_ce, one op) has the matmul write all the logits in x's dtype and one
    kernel overwrite them with their gradient without the 1/n, which the backward's scalar carries in fp32.
    Without need_grad (evaluation) neither keeps a gradient buffer."""

    @staticmethod
    def forward(ctx, x, weight, mult, targets, chunk, need_grad, triton=False):
        N = x.size(0)
        acc = torch.promote_types(x.dtype, torch.float32)  # softmax in fp32 (fp64 stays fp64)
        valid = targets != -1
        n = valid.sum().clamp(min=1).to(acc)
        if triton:
            loss, dlogits = kernel.linear_ce(x, weight, float(mult), targets, need_grad, chunk)
            ctx.save_for_backward(x, weight, dlogits if need_grad else None, n)
            return loss / n
        dlogits = x.new_empty(N, weight.size(0)) if need_grad else None
        loss = x.new_zeros((), dtype=acc)
        for i in range(0, N, chunk):
            logits = ((x[i:i + chunk] @ weight.t()) * mult).to(acc)
            t, ok = targets[i:i + chunk].clamp(min=0)[:, None], valid[i:i + chunk, None]
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            loss += ((lse - logits.gather(1, t)) * ok).sum()
            if need_grad:  # d loss / d logits = (softmax - onehot) / n, times mult for the scale
                p = logits.sub_(lse).exp_().scatter_add_(1, t, -torch.ones_like(lse))
                dlogits[i:i + chunk] = p.mul_(ok * (mult / n))
        ctx.save_for_backward(x, weight, dlogits)
        return loss / n

    @staticmethod
    def backward(ctx, dloss):
        x, weight, dlogits, *n = ctx.saved_tensors
        if n:  # triton: dlogits lacks the 1/n, applied in fp32 (a bf16 scalar would be off by up to 2^-9)
            s = dloss / n[0]
            dx, dw = ((dlogits @ weight).float() * s), ((dlogits.t() @ x).float() * s)
            return dx.to(x.dtype), dw.to(weight.dtype), None, None, None, None, None
        s = dloss.to(x.dtype)  # scales the two small products, not the [N, vocab] buffer
        return (dlogits @ weight) * s, (dlogits.t() @ x) * s, None, None, None, None, None


def fused_cross_entropy(x, weight, mult, targets):
    """The tied head's loss, mean cross-entropy of (x @ weight^T) * mult, by LinearCrossEntropy."""
    if torch.is_autocast_enabled(x.device.type):  # the matmuls in autocast's dtype, as F.linear's would be
        dt = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dt), weight.to(dt)
    chunk = max(1, CE_CHUNK // weight.size(0))  # rows
    need_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)  # else no buffer
    triton = use_triton(TRITON_CE, x) and x.dtype in (torch.bfloat16, torch.float16, torch.float32)
    return LinearCrossEntropy.apply(x.reshape(-1, x.size(-1)), weight, mult, targets.reshape(-1), chunk,
                                    need_grad, triton)


class GDN(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.width)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.norm_f = RMSNorm(config.width)
        self.logit_mult = mup.multipliers(config.parametrization, config.width, config.base_width,
                                          config.head_k, config.output_mult)['logits']
        self.probes = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, seed=None):
        """Initialise every parameter by mup.py's rules. With a seed the draws come from a generator of
        their own (on the CPU, then copied), so the init depends on the seed alone: the same whatever the
        device, and whatever was drawn before (train.py, sweep.py and coord_check.py rely on it)."""
        c = self.config
        gen = torch.Generator().manual_seed(seed) if seed is not None else None

        def draw(p, fill):  # fill a CPU fp32 tensor of p's shape with gen's draws, then copy into p
            t = torch.empty(p.shape)
            fill(t)
            p.copy_(t)
        for name, p in self.named_parameters():
            std = mup.init_std(mup.group_of(name), c.parametrization, c.width, c.base_width, c.init_std)
            if std is not None:
                draw(p, lambda t: t.normal_(0.0, std, generator=gen))
            elif name.endswith('A_log'):
                # decay rate exp(A_log) ~ U(0, 16), as in the GDN paper (clamped away from log 0)
                draw(p, lambda t: t.uniform_(0, 16, generator=gen).clamp_(min=1e-4).log_())
            elif name.endswith('dt_bias'):
                # softplus(dt_bias) = dt ~ logU(1e-3, 1e-1): the initial step sizes span two decades
                def inv_softplus_dt(t):
                    dt = t.uniform_(math.log(1e-3), math.log(1e-1), generator=gen).exp_().clamp_(min=1e-4)
                    t.copy_(dt + torch.log(-torch.expm1(-dt)))
                draw(p, inv_softplus_dt)
            elif 'norm' in name:
                p.fill_(1.0)
            elif 'conv' in name:
                bound = 1 / math.sqrt(p.size(-1))  # depthwise: each channel sees only its own kernel_size taps
                draw(p, lambda t: t.uniform_(-bound, bound, generator=gen))
            else:
                raise RuntimeError(f"no init rule for parameter {name}")

    def num_params(self, non_embedding=True):
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if non_embedding else n

    def forward(self, idx, targets=None, state=None, return_state=False):
        """idx: [B, T] token ids. state: the per-layer list returned by an earlier call, to continue a
        sequence (conv inputs and delta-rule state). Returns (logits, loss) or, with return_state,
        (logits, loss, state). Without targets only the last position's logits are computed; with targets
        and config.fused, none (the loss is computed without them)."""
        x = self.wte(idx)
        probe(self, 'embed', x)
        new_state = []
        for i, block in enumerate(self.blocks):
            x, s = block(x, state[i] if state else None, return_state)
            new_state.append(s)
        x = self.norm_f(x)
        if targets is None and not return_state and self.probes is None:
            x = x[:, -1:]  # generation only needs the last position
        # tied embedding as lm_head; μP scales the logits by 1/m (mup.multipliers)
        if targets is not None and self.config.fused and self.probes is None:
            # training and evaluation: the loss without the full logits (they are not returned)
            loss = fused_cross_entropy(x, self.wte.weight, self.logit_mult, targets)
            return (None, loss, new_state) if return_state else (None, loss)
        logits = F.linear(x, self.wte.weight) * self.logit_mult
        probe(self, 'logits', logits)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-1)
        return (logits, loss, new_state) if return_state else (logits, loss)

    def flops_per_token(self, T):
        """Training FLOPs per token (forward + backward = 3x forward): 6 per matmul parameter, plus
        the chunked delta rule. Per token and head, chunk C = 64, the kernel does matmuls worth
        3CK + 2CV + 3KV multiply-adds (K K^T, Q K^T, A K, A V, P V_new; W H, Q H, K^T V_new); we count
        the full (not triangular) chunk products, as the tensor cores do."""
        c, C = self.config, min(64, T)
        K, V = c.head_k, c.head_v
        delta = 2 * (3 * C * K + 2 * C * V + 3 * K * V) * c.n_head * c.n_layer
        return 6 * self.num_params(non_embedding=False) + 3 * delta

    def configure_optimizer(self, optimizer, learning_rate, weight_decay, betas, momentum, device_type):
        """AdamW or SGD (Nesterov) over mup.py's parameter groups. Each group keeps its 'lr_mult':
        the trainer sets group['lr'] = lr_mult * schedule(it)."""
        c = self.config
        groups = mup.param_groups(self, c.parametrization, optimizer, c.width, c.base_width, weight_decay,
                                  c.embed_lr_mult, c.gate_lr_mult)
        for g in groups:
            g['lr'] = learning_rate * g['lr_mult']
        if optimizer == 'adamw':
            return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type == 'cuda')
        if optimizer == 'sgd':
            return torch.optim.SGD(groups, lr=learning_rate, momentum=momentum, nesterov=momentum > 0)
        raise ValueError(f"optimizer={optimizer!r}: use 'adamw' or 'sgd'")

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
