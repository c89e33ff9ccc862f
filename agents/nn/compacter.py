"""Compacter adapters (Mahabadi, Henderson and Ruder, NeurIPS 2021), injected by module name.

A Compacter adapter is a bottleneck ``adapter(x) = x + up(act(down(x)))`` whose two projections are
parameterised hypercomplex multiplication (PHM) layers::

    W = sum_{i=1..n} A_i (x) B_i          (x) = Kronecker product, W has shape (in, out)
    A_i : (n, n)       "slow" weights, ONE set shared by every adapter layer of the model
    B_i = s_i t_i^T    "fast" weights, rank ``rank``, s_i : (in/n, rank), t_i : (out/n, rank), per layer

so a PHM layer holds ``rank * (in + out)`` weights plus ``out`` biases instead of ``in * out``.
Initialisation follows the paper's code: A ~ N(0, std 1e-4), s and t Glorot-uniform (gain sqrt 2),
biases zero -- the adapter starts out (almost exactly) as the identity.

Placement: *Compacter* puts an adapter after the self-attention sublayer and after the feed-forward
sublayer (on their outputs, before the residual add); *Compacter++* only after the feed-forward
sublayer. Everything else is frozen except, by default, the layer norms. ``placement="parallel"``
puts each adapter beside its module instead of after it (He et al. 2022, *Towards a Unified View of
Parameter-Efficient Transfer Learning*): ``y = module(x) + up(act(down(x)))``, reading the module's
input. A parallel adapter's widths follow the module's input and output, so it fits a head whose
output width differs from its input's.

The API follows peft::

    model = make_backbone("transformer", space)
    add_adapters(model, CompacterConfig(n=4, rank=1, reduction=32, plus_plus=False))
    print(trainable_fraction(model))
    save_adapters(model, "adapters.pt")          # adapters (and trained layer norms) only
    load_adapters(other_model, "adapters.pt")    # injects them first if needed
    merge_adapters(model)                        # PHM layers -> plain dense Linear for inference

``make_backbone("compacter", space, ...)`` builds the transformer backbone with adapters in one go.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parley.agents.nn.backbones import (
    ACTIVATIONS,
    Backbone,
    ObservationSpec,
    TransformerBackbone,
    TransformerConfig,
    register_backbone,
)

ADAPTER_FORMAT = "parley-compacter-adapters-v1"
PLACEMENTS = ("sequential", "parallel")


@dataclass
class CompacterConfig:
    """Where and how big the adapters are.

    ``target_modules``: module names (exact, a dotted suffix such as ``"ff"``, or a regular expression
    matched against the full name) whose OUTPUT passes through an adapter. ``None`` uses the model's
    own defaults (for parley's transformer: ``attn`` and ``ff`` of every block, or ``ff`` only with
    ``plus_plus=True``); explicit targets are used as given.
    ``reduction``: bottleneck width = model width / reduction, rounded up to a multiple of ``n``.
    ``placement``: ``"sequential"`` (the paper's: the adapter transforms the module's output) or
    ``"parallel"`` (the adapter reads the module's first input and its output is added to the module's).
    """

    n: int = 4
    rank: int = 1
    reduction: int = 32
    target_modules: list[str] | None = None
    plus_plus: bool = False
    train_layer_norms: bool = True
    activation: str = "gelu"
    slow_init_std: float = 1e-4
    placement: str = "sequential"

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ValueError(f"unknown adapter placement {self.placement!r}; use one of {', '.join(PLACEMENTS)}")
        if self.n < 1 or self.rank < 1 or self.reduction < 1:
            raise ValueError(f"n, rank and reduction must be positive integers, got n={self.n}, "
                             f"rank={self.rank}, reduction={self.reduction}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; use one of {', '.join(ACTIVATIONS)}")
        if self.target_modules is not None:
            self.target_modules = list(self.target_modules)


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------


class PHMRule(nn.Module):
    """The shared "slow" weights: ``n`` matrices A_i of shape (n, n)."""

    def __init__(self, n: int, init_std: float = 1e-4) -> None:
        super().__init__()
        self.n = n
        self.weight = nn.Parameter(torch.randn(n, n, n) * init_std)


class PHMLinear(nn.Module):
    """``y = x W + b`` with ``W = sum_i A_i (x) (s_i t_i^T)``; ``A`` comes from a (possibly shared) rule."""

    def __init__(self, in_features: int, out_features: int, n: int, rank: int = 1,
                 rule: PHMRule | None = None) -> None:
        super().__init__()
        if in_features % n or out_features % n:
            raise ValueError(f"PHM layer sizes must be divisible by n={n}; got {in_features} -> {out_features}")
        if rule is not None and rule.n != n:
            raise ValueError(f"the shared rule has n={rule.n} but this layer was asked for n={n}")
        self.in_features, self.out_features, self.n, self.rank = in_features, out_features, n, rank
        self.rule = rule if rule is not None else PHMRule(n)
        self.s = nn.Parameter(torch.empty(n, in_features // n, rank))
        self.t = nn.Parameter(torch.empty(n, out_features // n, rank))
        self.bias = nn.Parameter(torch.zeros(out_features))
        for i in range(n):
            nn.init.xavier_uniform_(self.s[i], gain=math.sqrt(2))
            nn.init.xavier_uniform_(self.t[i], gain=math.sqrt(2))

    def fast_weights(self) -> torch.Tensor:
        """B_i = s_i t_i^T, shape (n, in/n, out/n)."""
        return self.s @ self.t.transpose(1, 2)

    def weight(self) -> torch.Tensor:
        """The assembled (in, out) matrix sum_i kron(A_i, B_i)."""
        a, b = self.rule.weight, self.fast_weights()
        n, p, q = b.shape
        # kron(A, B)[(r, p), (c, q)] = A[r, c] * B[p, q]
        return torch.einsum("irc,ipq->rpcq", a, b).reshape(n * p, n * q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight() + self.bias

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, n={self.n}, rank={self.rank}"


class CompacterAdapter(nn.Module):
    """``x + up(act(down(x)))`` with PHM projections; without ``residual`` just ``up(act(down(x)))``.

    ``out_features`` (default ``d_model``) may differ from ``d_model`` only without the residual.
    """

    def __init__(self, d_model: int, bottleneck: int, n: int, rank: int, rule: PHMRule, activation: str = "gelu",
                 out_features: int | None = None, residual: bool = True) -> None:
        super().__init__()
        out_features = d_model if out_features is None else out_features
        if residual and out_features != d_model:
            raise ValueError(f"a residual adapter maps {d_model} features to {d_model}, not to {out_features}")
        self.residual = residual
        self.down = PHMLinear(d_model, bottleneck, n, rank, rule)
        self.act = ACTIVATIONS[activation]()
        self.up = PHMLinear(bottleneck, out_features, n, rank, rule)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        change = self.up(self.act(self.down(x)))
        return x + change if self.residual else change


class AdaptedModule(nn.Module):
    """Wraps a target module: its output goes through ``adapter`` (arguments pass through unchanged).

    With ``parallel`` the adapter reads the module's first input instead, and its output is added to
    the module's.
    """

    def __init__(self, base: nn.Module, adapter: nn.Module, parallel: bool = False) -> None:
        super().__init__()
        self.base = base
        self.adapter = adapter
        self.parallel = parallel

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.parallel:
            return self.base(*args, **kwargs) + self.adapter(args[0])
        return self.adapter(self.base(*args, **kwargs))


# --------------------------------------------------------------------------------------------------
# Injection, counting, saving
# --------------------------------------------------------------------------------------------------


def default_targets(model: nn.Module, plus_plus: bool) -> list[str]:
    """The model's own adapter placement, or an error that says to pass ``target_modules``."""
    targets = getattr(model, "compacter_targets", None)
    if targets is None:
        if isinstance(model, TransformerBackbone):
            targets = {"attention": [r"blocks\.\d+\.attn"], "feed_forward": [r"blocks\.\d+\.ff"]}
        else:
            raise ValueError(f"{type(model).__name__} has no default adapter placement; pass "
                             "CompacterConfig(target_modules=[...]) with the names of the modules to adapt")
    return list(targets["feed_forward"]) if plus_plus else list(targets["attention"]) + list(targets["feed_forward"])


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or name.endswith("." + pattern) or re.fullmatch(pattern, name) is not None


def _width(module: nn.Module, name: str, side: str) -> int:
    """The ``side`` ("in" or "out") feature width of a target module."""
    if isinstance(module, nn.LayerNorm):  # e.g. a backbone's final norm: an adapter right before the heads
        return int(module.normalized_shape[-1])
    width = getattr(module, f"{side}_features", None)
    if width is None:
        linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"cannot tell the {side}put width of target module {name!r} ({type(module).__name__}); "
                             "targets must be Linear or LayerNorm layers, or modules built of Linear layers")
        width = linears[0].in_features if side == "in" else linears[-1].out_features
    return int(width)


def bottleneck_width(d_model: int, reduction: int, n: int) -> int:
    """``d_model / reduction`` rounded up to a positive multiple of ``n`` (PHM sizes must divide by n)."""
    return max(n, math.ceil(d_model / reduction / n) * n)


def add_adapters(model: nn.Module, config: CompacterConfig | None = None) -> nn.Module:
    """Inject Compacter adapters after the target modules, freeze everything else; returns ``model``.

    One :class:`PHMRule` (the slow weights) is shared by all adapters. Layer norms stay trainable when
    ``config.train_layer_norms``. Raises if no module matches or the model already has adapters.
    """
    config = config or CompacterConfig()
    if getattr(model, "compacter_config", None) is not None:
        raise ValueError("this model already has Compacter adapters")
    patterns = config.target_modules if config.target_modules is not None else default_targets(model, config.plus_plus)
    targets = [(name, module) for name, module in model.named_modules()
               if name and any(_matches(name, p) for p in patterns)]
    # Do not adapt a module inside another target (the outer adapter already covers it).
    names = [name for name, _ in targets]
    targets = [(name, m) for name, m in targets if not any(name.startswith(o + ".") for o in names if o != name)]
    if not targets:
        raise ValueError(f"no module of {type(model).__name__} matches target_modules={patterns}; "
                         f"module names look like {[n for n, _ in model.named_modules() if n][:8]}")

    freeze_all_but_layer_norms(model, config)
    rule = PHMRule(config.n, config.slow_init_std)
    for name, module in targets:
        wrap_with_adapter(model, name, module, config, rule)
    model.compacter_config = config
    return model


def freeze_all_but_layer_norms(model: nn.Module, config: CompacterConfig) -> None:
    """Freeze every parameter of ``model``, except its layer norms when ``config.train_layer_norms``."""
    for param in model.parameters():
        param.requires_grad_(False)
    if config.train_layer_norms:
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.requires_grad_(True)


def wrap_with_adapter(model: nn.Module, name: str, module: nn.Module, config: CompacterConfig, rule: PHMRule) -> None:
    """Replace ``model``'s submodule ``name`` by ``module`` with a fresh adapter after it (or beside it)."""
    parallel = config.placement == "parallel"
    out_width = _width(module, name, "out")
    in_width = _width(module, name, "in") if parallel else out_width
    for width in (in_width, out_width):
        if width % config.n:
            # e.g. a one-wide value head: say so instead of failing on the PHM shapes.
            raise ValueError(f"cannot adapt {name!r}: its width {width} is not divisible by n={config.n}")
    # The bottleneck follows the width the adapter reads, as in the paper (d_model / reduction).
    adapter = CompacterAdapter(in_width, bottleneck_width(in_width, config.reduction, config.n), config.n,
                               config.rank, rule, config.activation, out_features=out_width, residual=not parallel)
    reference = next(model.parameters(), None)
    if reference is not None:
        adapter.to(device=reference.device, dtype=reference.dtype)
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, AdaptedModule(module, adapter, parallel=parallel))


def adapter_modules(model: nn.Module) -> list[tuple[str, AdaptedModule]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AdaptedModule)]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared parameters count once."""
    params = list(model.parameters())  # parameters() already skips repeated (shared) tensors
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def trainable_fraction(model: nn.Module) -> float:
    """Share of the model's parameters that will be trained."""
    trainable, total = count_parameters(model)
    return trainable / total if total else 0.0


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors (adapters, and layer norms if trained), keyed by parameter name."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def save_adapters(model: nn.Module, path: str | Path) -> Path:
    """Write the adapters alone (plus trained layer norms and the config) to ``path``."""
    config = getattr(model, "compacter_config", None)
    if config is None:
        raise ValueError("this model has no Compacter adapters to save; call add_adapters first")
    path = Path(path)
    torch.save({"format": ADAPTER_FORMAT, "config": dataclasses.asdict(config),
                "state": adapter_state_dict(model)}, path)
    return path


def load_adapters(model: nn.Module, path: str | Path) -> nn.Module:
    """Load adapters saved by :func:`save_adapters` into ``model`` (injecting them first if needed)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{path} is not a parley Compacter adapter file")
    config = CompacterConfig(**payload["config"])
    if getattr(model, "compacter_config", None) is None:
        add_adapters(model, config)
    elif model.compacter_config != config:
        raise ValueError(f"the model's adapters ({model.compacter_config}) differ from the saved ones ({config})")
    params = dict(model.named_parameters())
    expected = {name for name, p in params.items() if p.requires_grad}
    missing, unexpected = sorted(expected - set(payload["state"])), sorted(set(payload["state"]) - expected)
    if missing or unexpected:
        raise ValueError(f"adapter file does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, value in payload["state"].items():
            if params[name].shape != value.shape:
                raise ValueError(f"shape mismatch for {name}: model {tuple(params[name].shape)}, file {tuple(value.shape)}")
            params[name].copy_(value)
    return model


def merge_adapters(model: nn.Module) -> nn.Module:
    """Replace every PHM layer by a dense ``nn.Linear`` holding its assembled weight (same outputs).

    For inference: the Kronecker sums are no longer recomputed on each call. The merged layers are
    frozen; merged models cannot be saved with :func:`save_adapters`.
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, PHMLinear)]
    if not layers:
        raise ValueError("this model has no Compacter adapters to merge")
    for name, phm in layers:
        dense = nn.Linear(phm.in_features, phm.out_features)
        with torch.no_grad():
            dense.weight.copy_(phm.weight().T)
            dense.bias.copy_(phm.bias)
        dense.to(device=phm.bias.device, dtype=phm.bias.dtype).requires_grad_(False)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, dense)
    model.compacter_config = None
    return model


def remove_adapters(model: nn.Module) -> nn.Module:
    """Take adapters out again, restoring the wrapped modules (they stay frozen)."""
    for name, wrapped in adapter_modules(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, wrapped.base)
    model.compacter_config = None
    return model


# --------------------------------------------------------------------------------------------------
# The ``compacter`` backbone
# --------------------------------------------------------------------------------------------------


@dataclass
class CompacterBackboneConfig(TransformerConfig):
    """The transformer's hyperparameters plus the adapters'; ``pretrained`` loads transformer weights first."""

    n: int = 4
    rank: int = 1
    reduction: int = 32
    plus_plus: bool = False
    train_layer_norms: bool = True
    target_modules: list[str] | None = field(default=None)
    placement: str = "sequential"  # or "parallel": adapters beside their modules (see CompacterConfig)
    pretrained: str | None = None  # path to a state_dict of a transformer backbone of the same shape
    #: Parameters of the actor-critic network trained in full beside the adapters (like peft's
    #: ``modules_to_save``), by name or module prefix: ``value_head``, ``value_head.bias``. They count as
    #: trainable. Fine-tuning for a new partner pool leaves a frozen critic predicting the old pool's
    #: returns; its bias alone is one parameter.
    also_train: list[str] | None = field(default=None)


# Heads of the actor-critic network around the backbone that ``target_modules`` may also name.
HEAD_TARGETS = ("policy_head", "value_head")


@register_backbone("compacter", CompacterBackboneConfig, "transformer with Compacter adapters; only adapters train")
def _build_compacter(spec: ObservationSpec, config: CompacterBackboneConfig, bf16: bool) -> Backbone:
    base_fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    base = TransformerConfig(**{k: v for k, v in dataclasses.asdict(config).items() if k in base_fields})
    model = TransformerBackbone(spec, base, bf16, name="compacter")
    if config.pretrained:
        model.load_state_dict(torch.load(config.pretrained, map_location="cpu", weights_only=True))
    adapter_config = CompacterConfig(n=config.n, rank=config.rank, reduction=config.reduction,
                                     target_modules=config.target_modules, plus_plus=config.plus_plus,
                                     train_layer_norms=config.train_layer_norms, placement=config.placement)
    targets = adapter_config.target_modules
    head_targets = [t for t in targets or [] if t in HEAD_TARGETS]
    backbone_targets = [t for t in targets or [] if t not in HEAD_TARGETS]
    if head_targets and not backbone_targets:
        freeze_all_but_layer_norms(model, adapter_config)
        model.compacter_config = dataclasses.replace(adapter_config, target_modules=[])
    else:
        add_adapters(model, dataclasses.replace(adapter_config, target_modules=backbone_targets)
                     if head_targets else adapter_config)
    # The heads belong to the network around the backbone, which adapts them (see adapt_heads).
    model.head_adapter_targets = head_targets
    model.also_train = list(config.also_train or [])
    return model


def is_adapter_parameter(name: str) -> bool:
    """Whether the parameter called ``name`` belongs to a Compacter adapter (those always train)."""
    return "adapter" in name.lower()


def trained_beside_adapters(network: nn.Module) -> list[str]:
    """Names of ``network``'s parameters that its ``compacter`` backbone's ``also_train`` selects.

    An entry selects the parameter of that name or every parameter under that module; adapter
    parameters under it are left out, since they train anyway. Raises when an entry selects nothing,
    listing the names that exist.
    """
    backbone = getattr(network, "backbone", None)
    entries = list(getattr(backbone, "also_train", None) or [])
    names = [name for name, _ in network.named_parameters()]
    selected = []
    for entry in entries:
        matches = [n for n in names if n == entry or n.startswith(entry + ".")]
        if not matches:
            heads = sorted({n for n in names if not n.startswith("backbone.") and not is_adapter_parameter(n)})
            raise ValueError(f"also_train entry {entry!r} names no parameter of {type(network).__name__}; "
                             f"the heads' parameters are {', '.join(heads)} (backbone ones start with 'backbone.')")
        selected.extend(m for m in matches if m not in selected and not is_adapter_parameter(m))
    return selected


def freeze_all_but_adapters(model: nn.Module) -> int:
    """Leave only Compacter adapter parameters trainable; return how many parameters stay trainable.

    Adapter parameters are those :func:`is_adapter_parameter` names. Everything else -- the transformer,
    its layer norms, the policy and value heads -- is frozen: fine-tuning changes nothing but the adapters,
    and the parameters the backbone's ``also_train`` names (see :class:`CompacterBackboneConfig`).
    Raises ``ValueError`` when nothing would train.
    """
    also = set(trained_beside_adapters(model))
    trainable = 0
    for name, param in model.named_parameters():
        keep = is_adapter_parameter(name) or name in also
        param.requires_grad_(keep)
        trainable += param.numel() if keep else 0
    if trainable == 0:
        raise ValueError("the network has no adapter parameters to train; use the 'compacter' backbone")
    return trainable


def adapt_heads(network: nn.Module, backbone: nn.Module) -> nn.Module:
    """Give ``network``'s heads the Compacter adapters the ``compacter`` backbone was configured with.

    Called by the actor-critic network once its heads exist: ``target_modules`` naming ``policy_head``
    (or ``value_head``) puts an adapter on that head's output -- for the policy, on the 252 action
    logits before masking -- or, with ``placement="parallel"``, beside the head, from its input features
    to a change of its output. Head adapters share the backbone adapters' slow weights, so one PHM rule
    serves the whole network. The heads themselves stay frozen.
    """
    targets = list(getattr(backbone, "head_adapter_targets", None) or [])
    if not targets:
        return network
    config = backbone.compacter_config
    rules = [m for m in backbone.modules() if isinstance(m, PHMRule)]
    rule = rules[0] if rules else PHMRule(config.n, config.slow_init_std)
    for name in targets:
        head = getattr(network, name, None)
        if not isinstance(head, nn.Linear):
            raise ValueError(f"adapter target {name!r} is not a linear head of {type(network).__name__}")
        head.requires_grad_(False)
        wrap_with_adapter(network, name, head, config, rule)
    return network


__all__ = [
    "AdaptedModule",
    "CompacterAdapter",
    "CompacterBackboneConfig",
    "CompacterConfig",
    "PHMLinear",
    "PHMRule",
    "adapter_state_dict",
    "adapt_heads",
    "add_adapters",
    "trained_beside_adapters",
    "bottleneck_width",
    "count_parameters",
    "is_adapter_parameter",
    "load_adapters",
    "merge_adapters",
    "remove_adapters",
    "save_adapters",
    "trainable_fraction",
]
