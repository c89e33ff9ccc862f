"""Invertible attention (Zha et al. 2021) as residual blocks, with memory-saving backprop.

Each block computes ``y = x + g(x)`` on a token sequence ``x`` of shape (B, T, D). When the Lipschitz
constant of ``g`` is below 1 the block is invertible (Banach fixed point, as in i-ResNet, Behrmann et
al. 2019): ``x = y - g(x)`` is solved by iterating ``x <- y - g(x)``, which converges geometrically at
rate ``Lip(g)``. :meth:`InvertibleResidualBlock.inverse` stops at a relative-residual tolerance and
reports the iterations used and the final residual.

Lipschitz control
-----------------
* Every linear map is spectrally normalised: ``W / max(1, sigma(W) / c)`` with ``sigma`` from power
  iteration and coefficient ``c < 1`` (default 0.9), so ``||W||_2 <= c``.
* ``variant="dot"`` (Zha et al.): dot-product scores passed through ``ELU + 1`` instead of softmax and
  normalised by 1.5 times their sum over keys; the value map has coefficient 0.5. Dot-product attention
  is not globally Lipschitz (Kim et al. 2021), so this variant's bound holds only on bounded inputs;
  the test suite checks it empirically on the inputs parley feeds it.
* ``variant="l2"``: L2-distance (Gaussian) attention with tied query/key maps (Kim, Papamakarios and
  Mnih, "The Lipschitz Constant of Self-Attention", ICML 2021). Their Theorem 3.2 bounds the
  Lipschitz constant (in the Frobenius norm) of multi-head L2 attention by
  ``sqrt(N / (D/H)) * (4 W0((N-1)/e) + 1) * sqrt(sum_h ||W_Q,h||^2 ||W_V,h||^2) * ||W_O||``;
  we divide the output by that factor (with ``||W|| <= c``) so ``Lip(g) <= c^3`` holds provably.
* Feed-forward blocks ``g(x) = W2 ELU(W1 x)`` have ``Lip(g) <= c^2``.

Memory-saving backprop
----------------------
:class:`InvertibleSequential` keeps only its final output for the backward pass; the backward pass
walks the blocks in reverse, recomputing each block's input from its output by the fixed-point
inverse and then re-running that block with autograd (as in reversible networks; Gomez et al. 2017,
MemCNN). Activation memory no longer grows with depth. ``memory_saving=False`` uses plain autograd.
Spectral-norm power iterations run once at the start of each training-mode forward pass, never inside
the inverse, so the recomputation sees exactly the weights of the forward pass; call ``backward``
before the next training forward pass.

Models
------
``make_backbone("invertible_attention", space)``: negotiation tokens (as in the transformer backbone)
-> invertible blocks -> LayerNorm -> mean over played tokens.
:class:`InvertibleImageClassifier`: squeeze (space-to-depth) -> invertible blocks -> linear head; a
victim model for the poisoning scenario.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from parley.agents.nn.backbones import (
    Backbone,
    NegotiationTokenizer,
    ObservationSpec,
    masked_mean,
    register_backbone,
    require_negotiation,
)

VARIANTS = ("dot", "l2")
DEFAULT_COEFF = 0.9


# --------------------------------------------------------------------------------------------------
# Spectral normalisation
# --------------------------------------------------------------------------------------------------


class SpectralLinear(nn.Module):
    """A linear map whose weight is scaled to spectral norm at most ``coeff``.

    ``sigma`` is estimated by power iteration; the vectors ``u``, ``v`` are buffers refreshed only by
    :meth:`power_iteration` (called by :func:`update_spectral_norms`), so that the map stays fixed
    while a block is being inverted.
    """

    def __init__(self, in_features: int, out_features: int, coeff: float = DEFAULT_COEFF, bias: bool = True,
                 init_iterations: int = 50) -> None:
        super().__init__()
        if not 0 < coeff:
            raise ValueError(f"spectral-norm coefficient must be positive, got {coeff}")
        self.in_features, self.out_features, self.coeff = in_features, out_features, coeff
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.register_buffer("u", F.normalize(torch.randn(out_features), dim=0))
        self.register_buffer("v", F.normalize(torch.randn(in_features), dim=0))
        self.power_iteration(init_iterations)

    @torch.no_grad()
    def power_iteration(self, iterations: int) -> None:
        w = self.weight.detach()
        u, v = self.u, self.v
        for _ in range(iterations):
            v = F.normalize(w.T @ u, dim=0, eps=1e-12)
            u = F.normalize(w @ v, dim=0, eps=1e-12)
        self.u.copy_(u)
        self.v.copy_(v)

    def sigma(self) -> torch.Tensor:
        """The spectral-norm estimate ``u^T W v`` (differentiable in W, as in Miyato et al. 2018)."""
        # Always in full precision: under bf16 autocast the estimate would be off by ~1e-2.
        with torch.autocast(device_type=self.weight.device.type, enabled=False):
            return torch.dot(self.u, self.weight @ self.v)

    def normalized_weight(self) -> torch.Tensor:
        return self.weight / torch.clamp(self.sigma() / self.coeff, min=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, coeff={self.coeff}"


def update_spectral_norms(module: nn.Module, iterations: int = 1) -> None:
    """Run ``iterations`` power-iteration steps in every :class:`SpectralLinear` inside ``module``."""
    for m in module.modules():
        if isinstance(m, SpectralLinear):
            m.power_iteration(iterations)


# --------------------------------------------------------------------------------------------------
# Residual functions g with Lip(g) < 1
# --------------------------------------------------------------------------------------------------


def _lambert_w0(x: float) -> float:
    """Principal branch of Lambert W for x >= 0 (Newton's method)."""
    w = math.log1p(x)
    for _ in range(50):
        ew = math.exp(w)
        step = (w * ew - x) / (ew * (w + 1))
        w -= step
        if abs(step) < 1e-14:
            break
    return w


def l2_attention_lipschitz_factor(n_tokens: int, dim: int, n_heads: int) -> float:
    """Kim et al. (2021, Thm 3.2) bound for L2 multi-head attention with all weight norms equal to 1."""
    head_dim = dim / n_heads
    return math.sqrt(n_tokens / head_dim) * (4 * _lambert_w0(max(n_tokens - 1, 0) / math.e) + 1) * math.sqrt(n_heads)


class LipschitzAttention(nn.Module):
    """Multi-head self-attention with spectrally normalised maps: the ``g`` of an attention block."""

    def __init__(self, dim: int, n_heads: int = 4, coeff: float = DEFAULT_COEFF, variant: str = "dot",
                 value_coeff: float = 0.5) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown invertible attention variant {variant!r}; use one of {', '.join(VARIANTS)}")
        if dim % n_heads:
            raise ValueError(f"token width ({dim}) must be divisible by n_heads ({n_heads})")
        self.dim, self.n_heads, self.head_dim, self.variant = dim, n_heads, dim // n_heads, variant
        self.query = SpectralLinear(dim, dim, coeff, bias=False)
        if variant == "dot":
            self.key = SpectralLinear(dim, dim, coeff, bias=False)
            self.value = SpectralLinear(dim, dim, value_coeff, bias=False)
        else:  # Kim et al.: keys tied to queries; values come from X A W_V with A = W_Q W_Q^T / sqrt(D/H)
            self.key = None
            self.value = SpectralLinear(dim, dim, coeff, bias=False)
        self.out = SpectralLinear(dim, dim, coeff)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, dh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = self._heads(self.query(x))
        if self.variant == "dot":
            k = self._heads(self.key(x))
            v = self._heads(self.value(x))
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
            weights = F.elu(scores) + 1.0  # positive, like softmax, but with bounded slope
            weights = weights / (1.5 * weights.sum(-1, keepdim=True))
            y = weights @ v
        else:
            # P_ij = softmax_j(-||q_i - q_j||^2 / sqrt(dh)); output P X A W_V per head (Kim et al. 2021).
            sq = (q * q).sum(-1)
            dist = sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2 * q @ q.transpose(-1, -2)
            weights = torch.softmax(-dist / math.sqrt(self.head_dim), dim=-1)
            wq = self.query.normalized_weight().view(self.n_heads, self.head_dim, d)  # per-head rows of W_Q
            xa = torch.einsum("btd,hed,hef->bhtf", x, wq, wq) / math.sqrt(self.head_dim)  # X A_h, (B,H,T,D)
            wv = self.value.normalized_weight().view(self.n_heads, self.head_dim, d)
            y = torch.einsum("bhts,bhsf,hef->bhte", weights, xa, wv)  # (B, H, T, dh)
            y = y / l2_attention_lipschitz_factor(t, d, self.n_heads)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class LipschitzFeedForward(nn.Module):
    """``W2 ELU(W1 x)`` with spectrally normalised W1, W2: Lip <= coeff^2."""

    def __init__(self, dim: int, hidden: int, coeff: float = DEFAULT_COEFF) -> None:
        super().__init__()
        self.fc1 = SpectralLinear(dim, hidden, coeff)
        self.fc2 = SpectralLinear(hidden, dim, coeff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.elu(self.fc1(x)))


# --------------------------------------------------------------------------------------------------
# Blocks and the sequential container
# --------------------------------------------------------------------------------------------------


class InvertibleResidualBlock(nn.Module):
    """``y = x + g(x)`` with ``Lip(g) < 1``; :meth:`inverse` solves for ``x`` by fixed-point iteration."""

    def __init__(self, g: nn.Module) -> None:
        super().__init__()
        self.g = g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.g(x)

    @torch.no_grad()
    def inverse(self, y: torch.Tensor, tol: float = 1e-6, max_iter: int = 100) -> tuple[torch.Tensor, int, float]:
        """``(x, iterations, residual)`` with ``residual = ||x + g(x) - y|| / ||y||``.

        Iterates ``x <- y - g(x)`` from ``x = y`` until the relative residual is at most ``tol`` or
        ``max_iter`` updates were made. ``iterations`` counts the updates.
        """
        if max_iter < 0 or tol < 0:
            raise ValueError(f"tol and max_iter must be non-negative, got tol={tol}, max_iter={max_iter}")
        scale = torch.linalg.vector_norm(y).clamp_min(torch.finfo(y.dtype).tiny)
        x = y
        iterations = 0
        while True:
            gx = self.g(x)
            residual = float(torch.linalg.vector_norm(x + gx - y) / scale)
            if residual <= tol or iterations >= max_iter:
                return x, iterations, residual
            x = y - gx
            iterations += 1


class _RecomputeFromOutputs(torch.autograd.Function):
    """Runs the blocks without storing activations; backward recomputes inputs by inversion."""

    @staticmethod
    def forward(ctx, x, seq, *params):  # noqa: ANN001 - autograd signature
        ctx.seq, ctx.seq_params = seq, params
        ctx.autocast = (x.device.type, torch.is_autocast_enabled(x.device.type),
                        torch.get_autocast_dtype(x.device.type))
        with torch.no_grad():
            y = x
            for block in seq.blocks:
                y = block(y)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_y):  # noqa: ANN001
        if torch.is_grad_enabled():
            # autograd runs backward in grad mode only for create_graph=True (double backward). The
            # recomputed inputs are detached from the original ones, so second-order terms would be lost.
            raise RuntimeError("memory-saving backprop does not support higher-order gradients "
                               "(create_graph=True); build the network with memory_saving=False")
        (y,) = ctx.saved_tensors
        seq = ctx.seq
        device_type, autocast_on, autocast_dtype = ctx.autocast
        # Under reduced-precision autocast g itself is only accurate to ~1e-3, so ask for no more.
        default_tol = 1e-3 if autocast_on else (1e-12 if y.dtype == torch.float64 else 1e-6)
        tol = seq.recompute_tol if seq.recompute_tol is not None else default_tol
        fail_above = 3e-2 if autocast_on else seq.recompute_fail_above
        grads: dict[int, torch.Tensor] = {}
        y = y.detach()
        with torch.autocast(device_type=device_type, dtype=autocast_dtype, enabled=autocast_on):
            for block in reversed(seq.blocks):
                x, _, residual = block.inverse(y, tol=tol, max_iter=seq.recompute_max_iter)
                if not residual <= fail_above:
                    raise RuntimeError(
                        f"memory-saving backprop could not recompute a block input (relative residual "
                        f"{residual:.2e} after {seq.recompute_max_iter} iterations): Lip(g) >= 1 at this "
                        "input. Use variant='l2' (provably Lipschitz), smaller inputs, or memory_saving=False.")
                x = x.detach().requires_grad_(True)
                params = [p for p in block.parameters() if p.requires_grad]
                with torch.enable_grad():
                    out = block(x)
                    got = torch.autograd.grad(out, [x, *params], grad_y, allow_unused=True)
                grad_y = got[0]
                for p, g in zip(params, got[1:], strict=True):
                    if g is not None:
                        grads[id(p)] = grads[id(p)] + g if id(p) in grads else g
                y = x.detach()
        return (grad_y, None, *[grads.get(id(p)) for p in ctx.seq_params])


class InvertibleSequential(nn.Module):
    """A chain of invertible residual blocks.

    ``memory_saving=True`` stores only the final output for backward and recomputes each block's input
    from its output (fixed-point inverse with ``recompute_tol``, default 1e-6 in float32 and 1e-12 in
    float64). It supports first-order gradients only (no ``create_graph=True``). In training mode each forward pass first runs ``n_power_iterations`` spectral-norm
    power-iteration steps.
    """

    def __init__(self, blocks: Sequence[InvertibleResidualBlock], memory_saving: bool = True,
                 n_power_iterations: int = 5, recompute_tol: float | None = None,
                 recompute_max_iter: int = 100) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.memory_saving = memory_saving
        self.n_power_iterations = n_power_iterations
        self.recompute_tol = recompute_tol
        self.recompute_max_iter = recompute_max_iter
        self.recompute_fail_above = 1e-3  # relative residual beyond which recomputed inputs are wrong

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.n_power_iterations > 0:
            update_spectral_norms(self, self.n_power_iterations)
        params = [p for p in self.parameters() if p.requires_grad]
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or bool(params))
        if self.memory_saving and needs_grad:
            return _RecomputeFromOutputs.apply(x, self, *params)
        for block in self.blocks:
            x = block(x)
        return x

    @torch.no_grad()
    def inverse(self, y: torch.Tensor, tol: float = 1e-6, max_iter: int = 100) -> tuple[torch.Tensor, int, float]:
        """``(x, iterations, residual)``: the largest per-block iteration count and residual.

        Per-block figures are kept in :attr:`last_inverse_stats` as ``[(iterations, residual), ...]``
        in block order.
        """
        stats = []
        for block in reversed(self.blocks):
            y, iterations, residual = block.inverse(y, tol=tol, max_iter=max_iter)
            stats.append((iterations, residual))
        self.last_inverse_stats = stats[::-1]
        return y, max(s[0] for s in stats), max(s[1] for s in stats)


def saved_activation_bytes(forward: Callable[[], object]) -> int:
    """Bytes of tensors autograd saves for the backward pass while ``forward()`` runs.

    The measure of activation memory used to compare memory-saving backprop with plain autograd
    (parameters and inputs that autograd saves count too; they are the same in both).
    """
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return total


def invertible_attention_blocks(dim: int, depth: int, n_heads: int = 4, ff_mult: int = 2,
                                coeff: float = DEFAULT_COEFF, variant: str = "dot") -> list[InvertibleResidualBlock]:
    """``depth`` layers, each an attention block followed by a feed-forward block (2 * depth blocks)."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    if not 0 < coeff < 1:
        raise ValueError(f"the Lipschitz coefficient must be in (0, 1) for invertibility, got {coeff}")
    blocks: list[InvertibleResidualBlock] = []
    for _ in range(depth):
        blocks.append(InvertibleResidualBlock(LipschitzAttention(dim, n_heads, coeff, variant)))
        blocks.append(InvertibleResidualBlock(LipschitzFeedForward(dim, ff_mult * dim, coeff)))
    return blocks


# --------------------------------------------------------------------------------------------------
# The ``invertible_attention`` backbone
# --------------------------------------------------------------------------------------------------


@dataclass
class InvertibleConfig:
    """Hyperparameters of the ``invertible_attention`` backbone."""

    d_model: int = 64
    n_heads: int = 4
    depth: int = 2  # each layer = attention block + feed-forward block
    ff_mult: int = 2
    variant: str = "dot"
    coeff: float = DEFAULT_COEFF
    n_power_iterations: int = 5
    memory_saving: bool = True


class InvertibleAttentionBackbone(Backbone):
    """Negotiation tokens -> unit norm -> invertible attention blocks -> LayerNorm -> mean over played tokens.

    Padding slots stay in the sequence as "empty" tokens (position embedding only): masking keys would
    make ``g`` depend on the mask, and the Lipschitz bounds are stated for the unmasked map.
    """

    def __init__(self, spec: ObservationSpec, config: InvertibleConfig | None = None, bf16: bool = False) -> None:
        super().__init__(spec, bf16)
        self.config = config = config or InvertibleConfig()
        layout = require_negotiation(spec, "invertible_attention")
        self.tokenizer = NegotiationTokenizer(layout, config.d_model)
        # Unit-norm tokens keep the dot-product variant inside the range where Lip(g) < 1 holds.
        self.token_norm = nn.LayerNorm(config.d_model, elementwise_affine=False)
        self.blocks = InvertibleSequential(
            invertible_attention_blocks(config.d_model, config.depth, config.n_heads, config.ff_mult,
                                        config.coeff, config.variant),
            memory_saving=config.memory_saving, n_power_iterations=config.n_power_iterations)
        self.norm = nn.LayerNorm(config.d_model)
        self.out_dim = config.d_model

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        tokens, pad = self.tokenizer(obs)
        tokens = self.token_norm(tokens) / math.sqrt(self.config.d_model)
        return masked_mean(self.norm(self.blocks(tokens)), pad)


@register_backbone("invertible_attention", InvertibleConfig,
                   "invertible residual attention blocks (Lip(g) < 1) with memory-saving backprop")
def _build_invertible(spec: ObservationSpec, config: InvertibleConfig, bf16: bool) -> Backbone:
    return InvertibleAttentionBackbone(spec, config, bf16)


# --------------------------------------------------------------------------------------------------
# Image classifier
# --------------------------------------------------------------------------------------------------


def squeeze(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Space-to-depth: (B, C, H, W) -> (B, (H/f)(W/f), C f^2) tokens, one per f x f patch (invertible)."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // factor, factor, w // factor, factor)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // factor) * (w // factor), c * factor * factor)


def unsqueeze(tokens: torch.Tensor, channels: int, image_size: int, factor: int) -> torch.Tensor:
    """Inverse of :func:`squeeze`."""
    b = tokens.shape[0]
    side = image_size // factor
    x = tokens.reshape(b, side, side, channels, factor, factor)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, channels, image_size, image_size)


class InvertibleImageClassifier(nn.Module):
    """An image classifier whose feature extractor is invertible.

    ``InvertibleImageClassifier(in_channels=3, num_classes=10, image_size=32)`` takes images (B, C, H, H)
    with pixel values in [0, 1] and returns logits (B, num_classes). Pipeline: centre the pixels,
    squeeze each ``patch_size`` x ``patch_size`` patch into one token (C * patch_size^2 wide),
    zero-pad tokens to ``width`` if given (an injective lift, as in i-RevNet), add a learned position
    embedding, run ``depth`` invertible layers (attention + feed-forward blocks), then LayerNorm, mean
    over tokens and a linear head.

    :meth:`encode` / :meth:`decode` map images to the invertible features and back
    (``decode(encode(x)) == x`` up to the fixed-point tolerance). :meth:`features` gives the pooled
    penultimate features (``feature_dim`` wide).

    ``memory_saving`` is off by default here: poisoning attacks such as Sleeper Agent differentiate
    through parameter gradients (``create_graph=True``), which memory-saving backprop cannot do.
    Turn it on for plain training of deep models.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32, *, patch_size: int = 4,
                 width: int | None = None, depth: int = 2, n_heads: int = 4, ff_mult: int = 2,
                 variant: str = "dot", coeff: float = DEFAULT_COEFF, memory_saving: bool = False) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2:
            raise ValueError(f"need in_channels >= 1 and num_classes >= 2, got {in_channels}, {num_classes}")
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size})")
        token_dim = in_channels * patch_size**2
        width = token_dim if width is None else width
        if width < token_dim:
            raise ValueError(f"width ({width}) must be at least in_channels * patch_size^2 = {token_dim}")
        if width % n_heads:
            raise ValueError(f"width ({width}) must be divisible by n_heads ({n_heads}); pass width=")
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size
        self.patch_size, self.token_dim, self.width = patch_size, token_dim, width
        self.n_tokens = (image_size // patch_size) ** 2
        self.feature_dim = width
        self.position = nn.Parameter(torch.zeros(self.n_tokens, width))
        self.blocks = InvertibleSequential(
            invertible_attention_blocks(width, depth, n_heads, ff_mult, coeff, variant), memory_saving=memory_saving)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def _check(self, images: torch.Tensor) -> None:
        expected = (self.in_channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, expected))}), got {tuple(images.shape)}")

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> block-input tokens (B, T, width): an invertible affine map."""
        self._check(images)
        tokens = squeeze(images - 0.5, self.patch_size)
        if self.width > self.token_dim:
            tokens = F.pad(tokens, (0, self.width - self.token_dim))
        return tokens + self.position

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> invertible features (B, T, width)."""
        return self.blocks(self.embed(images))

    @torch.no_grad()
    def decode(self, features: torch.Tensor, tol: float = 1e-6, max_iter: int = 100) -> torch.Tensor:
        """Invertible features -> images (the inverse of :meth:`encode`)."""
        tokens, _, _ = self.blocks.inverse(features, tol=tol, max_iter=max_iter)
        tokens = (tokens - self.position)[..., : self.token_dim]
        return unsqueeze(tokens, self.in_channels, self.image_size, self.patch_size) + 0.5

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, width) fed to the linear head."""
        return self.norm(self.encode(images)).mean(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


__all__ = [
    "InvertibleAttentionBackbone",
    "InvertibleConfig",
    "InvertibleImageClassifier",
    "InvertibleResidualBlock",
    "InvertibleSequential",
    "LipschitzAttention",
    "LipschitzFeedForward",
    "SpectralLinear",
    "invertible_attention_blocks",
    "l2_attention_lipschitz_factor",
    "squeeze",
    "unsqueeze",
    "update_spectral_norms",
]
