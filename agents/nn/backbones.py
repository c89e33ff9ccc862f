"""Policy backbones: networks that turn an observation vector into a feature vector.

Every backbone is built through one registry::

    from parley.agents.nn.backbones import make_backbone, list_backbones

    net = make_backbone("transformer", env.observation_space, d_model=64, n_layers=2)
    features = net(observations)          # (B, D) float observations -> (B, net.out_dim)

``observation_space`` is the negotiation env's ``Dict`` space (``{"observation": Box(D,),
"action_mask": Box(252,)}``) or just its ``Box``; the backbone reads the float observation tensor, never
the mask (policy heads apply the mask to their logits). A plain ``Box`` of any other size -- an
observation from some other environment -- is read as a flat vector by ``mlp``.

Backbones
---------
``mlp``                   fully connected network. On negotiation observations it scales the header
                          fields by their known ranges and embeds the act-history tokens; on other
                          observations it maps finite ``Box`` bounds to [-1, 1].
``transformer``           reads the observation as a token sequence: three item tokens (count, own
                          value, standing offers), one state token (turn, who moved first, offer flags)
                          and the padded act history (act + speaker + position embeddings, pads masked
                          out of attention); pre-LayerNorm blocks; masked mean pooling.
``compacter``             the transformer with Compacter adapters (Mahabadi et al. 2021) injected and
                          everything else frozen; see :mod:`parley.agents.nn.compacter`.
``invertible_attention``  the same tokens fed through invertible residual attention blocks
                          (Zha et al. 2021) with memory-saving backprop; see
                          :mod:`parley.agents.nn.invertible`.

Common options accepted by every backbone: ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``),
``bf16`` (run the forward pass under bfloat16 autocast; features come back as float32) and
``layout`` (``"auto"``, ``"negotiation"`` or ``"flat"``: how to read the observation vector).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from parley.envs.negotiation import (
    MAX_ITEM_COUNT,
    NUM_ACTIONS,
    NUM_ITEM_TYPES,
    VALUE_TOTAL,
    ObservationLayout,
)
from parley.utils import resolve_device

LAYOUTS = ("auto", "negotiation", "flat")
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}


# --------------------------------------------------------------------------------------------------
# Observation spaces
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObservationSpec:
    """What a backbone needs to know about its input: the vector size and how to read it."""

    size: int
    layout: ObservationLayout | None  # None: a flat vector from some other environment
    low: np.ndarray | None = None
    high: np.ndarray | None = None


def _box_parts(space: Any) -> tuple[Any, Any | None]:
    """(observation Box, action-mask space or None) from a Dict space or a Box."""
    spaces = getattr(space, "spaces", None)
    if isinstance(spaces, dict):
        if "observation" not in spaces:
            raise ValueError(f"a Dict observation space needs an 'observation' entry; got keys {sorted(spaces)}")
        return spaces["observation"], spaces.get("action_mask")
    return space, None


def observation_spec(observation_space: Any, layout: str = "auto") -> ObservationSpec:
    """Read an observation space (negotiation ``Dict``, a ``Box``, or an int size) into a spec.

    With ``layout="auto"`` a vector is read as a negotiation observation when its size fits
    ``16 + 2 * max_turns`` and either the space carries a 252-entry action mask or its bounds allow the
    raw act tokens (non-negative, history entries up to 252). ``"negotiation"`` insists on it (and
    raises if the size does not fit); ``"flat"`` always reads a plain vector.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if isinstance(observation_space, (int, np.integer)):
        size, low, high, mask_space = int(observation_space), None, None, None
    else:
        box, mask_space = _box_parts(observation_space)
        shape = getattr(box, "shape", None)
        if shape is None or len(shape) != 1:
            raise ValueError(f"backbones read 1-D observation vectors; got a space with shape {shape!r} ({box!r})")
        size = int(shape[0])
        low = np.asarray(box.low, dtype=np.float64).reshape(size) if hasattr(box, "low") else None
        high = np.asarray(box.high, dtype=np.float64).reshape(size) if hasattr(box, "high") else None
    if size < 1:
        raise ValueError(f"observation size must be positive, got {size}")

    fits = (size - ObservationLayout.header_size) % 2 == 0 and size >= ObservationLayout.header_size + 2
    if layout == "flat":
        return ObservationSpec(size, None, low, high)
    if layout == "negotiation":
        return ObservationSpec(size, ObservationLayout.from_size(size), low, high)
    if not fits:
        return ObservationSpec(size, None, low, high)
    neg = ObservationLayout.from_size(size)
    mask_size = int(np.prod(mask_space.shape)) if mask_space is not None and getattr(mask_space, "shape", None) else None
    if mask_size == NUM_ACTIONS:
        return ObservationSpec(size, neg, low, high)
    if low is not None and high is not None:
        tokens_fit = bool(np.all(low >= 0) and np.all(high[neg.history_acts] >= NUM_ACTIONS))
        return ObservationSpec(size, neg if tokens_fit else None, low, high)
    return ObservationSpec(size, neg, low, high)


# --------------------------------------------------------------------------------------------------
# Base class and registry
# --------------------------------------------------------------------------------------------------


class Backbone(nn.Module):
    """A module mapping float observations ``(B, D)`` to features ``(B, out_dim)``.

    Subclasses implement :meth:`features`. ``bf16=True`` runs it under bfloat16 autocast on the
    input's device; the output is cast back to float32 so heads and losses stay in full precision.
    """

    out_dim: int

    def __init__(self, spec: ObservationSpec, bf16: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.obs_size = spec.size
        self.bf16 = bf16

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement features")

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.dim() != 2 or obs.shape[-1] != self.obs_size:
            raise ValueError(f"expected observations of shape (B, {self.obs_size}), got {tuple(obs.shape)}")
        obs = obs.float() if not torch.is_floating_point(obs) else obs
        if self.bf16:
            with torch.autocast(device_type=obs.device.type, dtype=torch.bfloat16):
                out = self.features(obs)
            return out.float()
        return self.features(obs)


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., Backbone]
    config_cls: type
    description: str


_REGISTRY: dict[str, _Entry] = {}
COMMON_OPTIONS = ("device", "bf16", "layout")


def register_backbone(name: str, config_cls: type, description: str) -> Callable:
    """Decorator: register ``builder(spec, config, bf16) -> Backbone`` under ``name``."""

    def wrap(builder: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _REGISTRY:
            raise ValueError(f"a backbone named {name!r} is already registered")
        _REGISTRY[name] = _Entry(builder, config_cls, description)
        return builder

    return wrap


def list_backbones() -> list[str]:
    """Names accepted by :func:`make_backbone`."""
    _load_optional_backbones()
    return sorted(_REGISTRY)


def describe_backbones() -> dict[str, str]:
    """Name -> one-line description."""
    _load_optional_backbones()
    return {name: _REGISTRY[name].description for name in sorted(_REGISTRY)}


def backbone_config(name: str, **config: Any) -> Any:
    """The config dataclass of backbone ``name`` with ``config`` applied (unknown keys are an error)."""
    _load_optional_backbones()
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    cls = _REGISTRY[name].config_cls
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for backbone {name!r}; allowed: "
                         f"{sorted(allowed | set(COMMON_OPTIONS))}")
    return cls(**config)


def make_backbone(name: str, observation_space: Any, *, device: str = "auto", bf16: bool = False,
                  layout: str = "auto", **config: Any) -> Backbone:
    """Build backbone ``name`` for ``observation_space``; the result has an ``out_dim`` attribute.

    ``config`` sets fields of that backbone's config dataclass (e.g. ``hidden_sizes`` for ``mlp``,
    ``d_model`` for ``transformer``); unknown names raise a ``ValueError`` listing the allowed ones.
    """
    cfg = backbone_config(name, **config)
    spec = observation_spec(observation_space, layout)
    net = _REGISTRY[name].builder(spec, cfg, bf16)
    return net.to(resolve_device(device))


_BACKBONE_MODULES = ("parley.agents.nn.compacter", "parley.agents.nn.invertible")


def _load_optional_backbones() -> None:
    # compacter and invertible_attention live in their own modules, which register on import.
    import importlib

    for module in _BACKBONE_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise


# --------------------------------------------------------------------------------------------------
# Input encodings
# --------------------------------------------------------------------------------------------------


def _header_scales(layout: ObservationLayout) -> torch.Tensor:
    """Divisors that bring each header field to roughly [0, 1]."""
    scales = torch.ones(layout.header_size)
    scales[layout.counts] = MAX_ITEM_COUNT
    scales[layout.values] = VALUE_TOTAL
    scales[layout.partner_offer] = MAX_ITEM_COUNT
    scales[layout.own_offer] = MAX_ITEM_COUNT
    return scales


class NegotiationFlatEncoder(nn.Module):
    """Scaled header fields followed by one (act + speaker) embedding per history slot, concatenated."""

    def __init__(self, layout: ObservationLayout, act_embedding_dim: int) -> None:
        super().__init__()
        self.layout = layout
        self.register_buffer("scales", _header_scales(layout), persistent=False)
        self.act_embedding = nn.Embedding(NUM_ACTIONS + 1, act_embedding_dim, padding_idx=0)
        self.speaker_embedding = nn.Embedding(3, act_embedding_dim, padding_idx=0)
        self.out_dim = layout.header_size + layout.max_turns * act_embedding_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        lay = self.layout
        header = obs[:, : lay.header_size] / self.scales
        acts = obs[:, lay.history_acts].round().long().clamp(0, NUM_ACTIONS)
        speakers = obs[:, lay.history_speakers].round().long().clamp(0, 2)
        history = self.act_embedding(acts) + self.speaker_embedding(speakers)
        return torch.cat([header, history.flatten(1)], dim=1)


class FlatEncoder(nn.Module):
    """Maps a plain vector to [-1, 1] where the Box bounds are finite; leaves unbounded entries as they are."""

    def __init__(self, spec: ObservationSpec) -> None:
        super().__init__()
        center = torch.zeros(spec.size)
        half_range = torch.ones(spec.size)
        if spec.low is not None and spec.high is not None:
            low, high = spec.low, spec.high
            finite = np.isfinite(low) & np.isfinite(high) & (high > low)
            center[finite] = torch.as_tensor((high[finite] + low[finite]) / 2, dtype=torch.float32)
            half_range[finite] = torch.as_tensor((high[finite] - low[finite]) / 2, dtype=torch.float32)
        self.register_buffer("center", center, persistent=False)
        self.register_buffer("half_range", half_range, persistent=False)
        self.out_dim = spec.size

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.center) / self.half_range


class NegotiationTokenizer(nn.Module):
    """Turns a negotiation observation into ``d_model`` tokens plus a padding mask.

    Tokens, in order: three item tokens (count, own value, the partner's standing offer and our own
    last proposal for that item, each scaled, plus an item-type embedding), one state token (turn
    fraction, who moved first, both offer flags), then ``max_turns`` history tokens (act embedding +
    speaker embedding + position embedding). ``pad_mask`` is True at history slots not yet played.
    """

    n_context_tokens = NUM_ITEM_TYPES + 1

    def __init__(self, layout: ObservationLayout, d_model: int) -> None:
        super().__init__()
        self.layout = layout
        self.d_model = d_model
        self.item_proj = nn.Linear(4, d_model)
        self.item_type = nn.Parameter(torch.randn(NUM_ITEM_TYPES, d_model) * 0.02)
        self.state_proj = nn.Linear(4, d_model)
        self.act_embedding = nn.Embedding(NUM_ACTIONS + 1, d_model, padding_idx=0)
        self.speaker_embedding = nn.Embedding(3, d_model, padding_idx=0)
        self.position = nn.Parameter(torch.randn(layout.max_turns, d_model) * 0.02)
        nn.init.normal_(self.act_embedding.weight, std=0.02)
        nn.init.normal_(self.speaker_embedding.weight, std=0.02)
        with torch.no_grad():
            self.act_embedding.weight[0].zero_()
            self.speaker_embedding.weight[0].zero_()

    @property
    def n_tokens(self) -> int:
        return self.n_context_tokens + self.layout.max_turns

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lay = self.layout
        items = torch.stack([
            obs[:, lay.counts] / MAX_ITEM_COUNT,
            obs[:, lay.values] / VALUE_TOTAL,
            obs[:, lay.partner_offer] / MAX_ITEM_COUNT,
            obs[:, lay.own_offer] / MAX_ITEM_COUNT,
        ], dim=-1)  # (B, 3, 4)
        item_tokens = self.item_proj(items) + self.item_type
        state = obs[:, [lay.turn_fraction, lay.moved_first, lay.partner_offer_flag, lay.own_offer_flag]]
        state_token = self.state_proj(state).unsqueeze(1)
        acts = obs[:, lay.history_acts].round().long().clamp(0, NUM_ACTIONS)
        speakers = obs[:, lay.history_speakers].round().long().clamp(0, 2)
        history = self.act_embedding(acts) + self.speaker_embedding(speakers) + self.position
        tokens = torch.cat([item_tokens, state_token, history], dim=1)
        pad = torch.cat([torch.zeros_like(acts[:, : self.n_context_tokens], dtype=torch.bool), acts == 0], dim=1)
        return tokens, pad


def masked_mean(tokens: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens where ``pad_mask`` is False."""
    keep = (~pad_mask).unsqueeze(-1).to(tokens.dtype)
    return (tokens * keep).sum(1) / keep.sum(1).clamp_min(1.0)


def require_negotiation(spec: ObservationSpec, name: str) -> ObservationLayout:
    if spec.layout is None:
        raise ValueError(
            f"backbone {name!r} reads negotiation observations (size 16 + 2 * max_turns with raw act tokens); "
            f"got a flat observation of size {spec.size}. Use 'mlp' for other environments, or pass "
            f"layout='negotiation' if this is a negotiation observation with unusual bounds.")
    return spec.layout


def sample_observations(n: int, *, max_turns: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` negotiation observations and their action masks from games played with random legal acts.

    Each game is cut at a random turn, so histories of every length appear. Used by tests, benchmarks
    and distillation examples; returns float32 (n, D) observations and int8 (n, 252) masks.
    """
    from parley.envs.negotiation import BatchedNegotiation, sample_context_arrays

    rng = np.random.default_rng(seed)
    games = BatchedNegotiation(n, max_turns=max_turns)
    counts, values = sample_context_arrays(rng, n)
    games.reset_games(np.arange(n), counts, values, rng.integers(0, 2, size=n))
    stop_at = rng.integers(0, max_turns, size=n)
    obs = np.zeros((n, ObservationLayout(max_turns).size), dtype=np.float32)
    masks = np.zeros((n, NUM_ACTIONS), dtype=np.int8)
    taken = np.zeros(n, dtype=bool)
    for turn in range(max_turns):
        legal = games.legal_masks()
        now = (stop_at == turn) & ~taken & ~games.done
        if now.any():
            obs[now] = games.observations(games.current_player)[now]
            masks[now] = legal[now]
            taken |= now
        if taken.all():
            break
        # Random legal acts; ending acts (agree, walk away) are rare so histories get long.
        weights = legal.astype(np.float64)
        weights[:, -2:] *= 0.05
        weights /= np.maximum(weights.sum(1, keepdims=True), 1e-12)
        choice = (weights.cumsum(1) > rng.random((n, 1))).argmax(1)
        games.apply_actions(np.where(games.done, 0, choice))
    # Games that ended before their cut turn: observe the finished game from the current player's side.
    rest = ~taken
    if rest.any():
        obs[rest] = games.observations(games.current_player)[rest]
        masks[rest] = games.legal_masks()[rest]
    return obs, masks


# --------------------------------------------------------------------------------------------------
# mlp
# --------------------------------------------------------------------------------------------------


@dataclass
class MLPConfig:
    """Hyperparameters of the ``mlp`` backbone."""

    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "tanh"
    act_embedding_dim: int = 8  # per history slot, negotiation observations only
    layer_norm: bool = False  # LayerNorm after each hidden linear layer


class MLPBackbone(Backbone):
    """Encoder (scaled header + act embeddings, or bounded-box scaling) followed by linear layers."""

    def __init__(self, spec: ObservationSpec, config: MLPConfig | None = None, bf16: bool = False) -> None:
        super().__init__(spec, bf16)
        self.config = config = config or MLPConfig()
        if config.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {config.activation!r}; use one of {', '.join(ACTIVATIONS)}")
        if not config.hidden_sizes or any(int(h) < 1 for h in config.hidden_sizes):
            raise ValueError(f"hidden_sizes must be a non-empty sequence of positive ints, got {config.hidden_sizes!r}")
        if spec.layout is not None:
            self.encoder: nn.Module = NegotiationFlatEncoder(spec.layout, config.act_embedding_dim)
        else:
            self.encoder = FlatEncoder(spec)
        layers: list[nn.Module] = []
        width = self.encoder.out_dim
        for hidden in config.hidden_sizes:
            layers.append(nn.Linear(width, int(hidden)))
            if config.layer_norm:
                layers.append(nn.LayerNorm(int(hidden)))
            layers.append(ACTIVATIONS[config.activation]())
            width = int(hidden)
        self.layers = nn.Sequential(*layers)
        self.out_dim = width

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return self.layers(self.encoder(obs))


@register_backbone("mlp", MLPConfig, "fully connected network; any 1-D observation")
def _build_mlp(spec: ObservationSpec, config: MLPConfig, bf16: bool) -> Backbone:
    return MLPBackbone(spec, config, bf16)


__all__ = [
    "Backbone",
    "MLPBackbone",
    "MLPConfig",
    "NegotiationTokenizer",
    "ObservationSpec",
    "backbone_config",
    "describe_backbones",
    "list_backbones",
    "make_backbone",
    "masked_mean",
    "observation_spec",
    "register_backbone",
    "sample_observations",
    "TransformerBackbone",
    "TransformerConfig",
]


# --------------------------------------------------------------------------------------------------
# transformer
# --------------------------------------------------------------------------------------------------


@dataclass
class TransformerConfig:
    """Hyperparameters of the ``transformer`` backbone (and of ``compacter``'s base transformer)."""

    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    ff_mult: int = 4  # feed-forward width = ff_mult * d_model
    dropout: float = 0.0


class SelfAttention(nn.Module):
    """Multi-head self-attention whose output already includes the output projection.

    ``pad_mask`` (B, T) is True where a token is padding; such tokens are never attended to.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        attend = None if pad_mask is None else (~pad_mask)[:, None, None, :]
        y = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=attend, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: ``x + attn(ln1(x))`` then ``x + ff(ln2(x))``.

    ``attn`` and ``ff`` return the sublayer output before the residual add, which is where Compacter
    adapters go (:func:`parley.agents.nn.compacter.add_adapters` wraps these two modules by name).
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d = config.d_model
        self.ln1 = nn.LayerNorm(d)
        self.attn = SelfAttention(d, config.n_heads, config.dropout)
        self.ln2 = nn.LayerNorm(d)
        self.ff = FeedForward(d, config.ff_mult * d, config.dropout)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), pad_mask)
        return x + self.ff(self.ln2(x))


class TransformerBackbone(Backbone):
    """Negotiation tokens -> pre-LN transformer blocks -> final LayerNorm -> masked mean pooling."""

    def __init__(self, spec: ObservationSpec, config: TransformerConfig | None = None, bf16: bool = False,
                 name: str = "transformer") -> None:
        super().__init__(spec, bf16)
        self.config = config = config or TransformerConfig()
        if config.n_layers < 1 or config.d_model < 1 or config.n_heads < 1:
            raise ValueError(f"d_model, n_heads and n_layers must be positive, got {config}")
        layout = require_negotiation(spec, name)
        self.tokenizer = NegotiationTokenizer(layout, config.d_model)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.out_dim = config.d_model

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        tokens, pad = self.tokenizer(obs)
        for block in self.blocks:
            tokens = block(tokens, pad)
        return masked_mean(self.norm(tokens), pad)


@register_backbone("transformer", TransformerConfig, "pre-LN transformer over context tokens and the act history")
def _build_transformer(spec: ObservationSpec, config: TransformerConfig, bf16: bool) -> Backbone:
    return TransformerBackbone(spec, config, bf16)
