"""Model compression from the efficient-deep-learning toolbox (Menghani 2021): int8 quantization,
magnitude pruning and distillation.

Quantization
------------
:func:`quantize_int8` converts every ``nn.Linear`` to int8 weights with dynamically quantized
activations (and embedding tables to 8-bit rows), for CPU inference. Two backends:

* ``"dynamic"`` (the default, also what ``"auto"`` picks): ``torch.ao.quantization.quantize_dynamic``
  (fbgemm/qnnpack kernels). It is deprecated upstream in favour of torchao but still ships with our
  torch, and it is the backend that is faster than float32 on CPU (see ``benchmarks/backbones.py``);
  its deprecation warnings are silenced inside this function only.
* ``"torchao"``: ``torchao.quantization.quantize_`` with ``Int8DynamicActivationInt8WeightConfig``
  (``pip install torchao``). Its int8 kernels pay off on GPU or under ``torch.compile``; in eager mode
  on CPU it measured slower than float32, so it is opt-in.

Other layers (layer norms, spectrally normalised or PHM layers) stay in float32;
call :func:`parley.agents.nn.compacter.merge_adapters` first to turn PHM layers into ``nn.Linear``.

Pruning
-------
:func:`prune_global_unstructured` zeroes the smallest-magnitude weights across all chosen layers
together; :func:`prune_structured` removes whole output rows (neurons) by L_n norm in each layer.
Both keep a mask (``torch.nn.utils.prune``) until :func:`make_pruning_permanent`.
:func:`sparsity_report` counts zeros exactly, per tensor and overall.

Distillation
------------
:func:`distill` trains a student to match a teacher's action distribution on collected observations
(:func:`collect_observations` plays games with any :class:`~parley.envs.policy.Policy`), minimising
KL(teacher || student) over the LEGAL actions only (:func:`masked_kl`), with Hinton et al.'s
temperature and its T^2 gradient scale.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from parley.envs.negotiation import NUM_ACTIONS, sample_context_arrays
from parley.envs.play import PlayStep, play_batch
from parley.utils import resolve_device

QUANT_BACKENDS = ("auto", "dynamic", "torchao")


# --------------------------------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------------------------------


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of the serialized ``state_dict`` (what a checkpoint of the model weighs)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def quantize_int8(model: nn.Module, backend: str = "auto", inplace: bool = False, embeddings: bool = True) -> nn.Module:
    """An int8 copy of ``model`` for CPU inference; see the module doc.

    Every ``nn.Linear`` gets int8 weights and dynamically quantized int8 activations; with
    ``embeddings=True`` (``"dynamic"`` backend) ``nn.Embedding`` tables are stored as 8-bit rows too.
    """
    if backend not in QUANT_BACKENDS:
        raise ValueError(f"unknown quantization backend {backend!r}; use one of {', '.join(QUANT_BACKENDS)}")
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no nn.Linear layers to quantize")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 dynamic quantization runs on CPU; move the model with .cpu() first")
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    if backend == "torchao":
        try:
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
        except ImportError as err:
            raise ImportError("backend='torchao' needs the torchao package: pip install torchao") from err
        quantize_(target, Int8DynamicActivationInt8WeightConfig())
        return target
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao on every call; the API still works.
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\..*")
        from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig

        spec: dict[type, Any] = {nn.Linear: default_dynamic_qconfig}
        if embeddings:
            spec[nn.Embedding] = float_qparams_weight_only_qconfig  # 8-bit rows with per-row scales
        return torch.ao.quantization.quantize_dynamic(target, spec, dtype=torch.qint8, inplace=True)


# --------------------------------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------------------------------


def _prunable(model: nn.Module, module_types: tuple[type, ...], exclude: Iterable[str]) -> list[tuple[str, nn.Module]]:
    excluded = set(exclude)
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, module_types) and name not in excluded and isinstance(getattr(m, "weight", None), torch.Tensor)]
    if not found:
        raise ValueError(f"no {', '.join(t.__name__ for t in module_types)} layers to prune in {type(model).__name__}")
    return found


def prune_global_unstructured(model: nn.Module, amount: float, *, module_types: tuple[type, ...] = (nn.Linear,),
                              exclude: Iterable[str] = ()) -> nn.Module:
    """Zero the ``amount`` fraction of smallest-|w| weights across all chosen layers at once (in place).

    ``round(amount * total)`` weights are pruned. ``exclude`` names modules to leave dense (e.g. the
    policy head).
    """
    if not 0 <= amount <= 1:
        raise ValueError(f"amount must be a fraction in [0, 1], got {amount}")
    layers = _prunable(model, module_types, exclude)
    prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured, amount=amount)
    return model


def prune_structured(model: nn.Module, amount: float, *, norm: int | float = 2, dim: int = 0,
                     module_types: tuple[type, ...] = (nn.Linear,), exclude: Iterable[str] = ()) -> nn.Module:
    """In every chosen layer zero the ``amount`` fraction of weight slices along ``dim`` with the
    smallest L_norm (``dim=0``: output neurons of a Linear). In place; biases are kept."""
    if not 0 <= amount <= 1:
        raise ValueError(f"amount must be a fraction in [0, 1], got {amount}")
    for _, m in _prunable(model, module_types, exclude):
        prune.ln_structured(m, "weight", amount=amount, n=norm, dim=dim)
    return model


def make_pruning_permanent(model: nn.Module) -> nn.Module:
    """Fold pruning masks into the weights and drop the re-parametrisation (zeros stay zeros)."""
    for m in model.modules():
        for name in [n.removesuffix("_orig") for n, _ in m.named_parameters(recurse=False) if n.endswith("_orig")]:
            prune.remove(m, name)
    return model


@dataclass
class SparsityReport:
    """Exact zero counts: ``per_tensor`` maps ``module.weight`` names to (zeros, total)."""

    per_tensor: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def zeros(self) -> int:
        return sum(z for z, _ in self.per_tensor.values())

    @property
    def total(self) -> int:
        return sum(t for _, t in self.per_tensor.values())

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0

    def table(self) -> str:
        lines = [f"{'tensor':40s} {'zeros':>10s} {'total':>10s} {'sparsity':>9s}"]
        for name, (z, t) in self.per_tensor.items():
            lines.append(f"{name:40s} {z:10d} {t:10d} {z / t:9.4f}")
        lines.append(f"{'all':40s} {self.zeros:10d} {self.total:10d} {self.sparsity:9.4f}")
        return "\n".join(lines)


def sparsity_report(model: nn.Module, module_types: tuple[type, ...] = (nn.Linear,)) -> SparsityReport:
    """Count zero weights (the effective, masked weights while pruning is pending) in the chosen layers."""
    report = SparsityReport()
    for name, m in model.named_modules():
        weight = getattr(m, "weight", None)
        if isinstance(m, module_types) and isinstance(weight, torch.Tensor):
            report.per_tensor[f"{name}.weight" if name else "weight"] = (int((weight == 0).sum()), weight.numel())
    return report


# --------------------------------------------------------------------------------------------------
# Distillation
# --------------------------------------------------------------------------------------------------


def masked_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, action_mask: torch.Tensor,
              temperature: float = 1.0) -> torch.Tensor:
    """Mean over the batch of KL(teacher || student), both softmaxes taken over legal actions only.

    Scaled by ``temperature**2`` so gradients keep their size across temperatures (Hinton et al. 2015).
    Rows without any legal action contribute zero.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.shape != action_mask.shape:
        raise ValueError(f"logits and mask must share a shape; got student {tuple(student_logits.shape)}, "
                         f"teacher {tuple(teacher_logits.shape)}, mask {tuple(action_mask.shape)}")
    legal = action_mask.bool()
    floor = torch.finfo(student_logits.dtype).min
    log_p_student = torch.log_softmax((student_logits / temperature).masked_fill(~legal, floor), dim=-1)
    log_p_teacher = torch.log_softmax((teacher_logits / temperature).masked_fill(~legal, floor), dim=-1)
    terms = torch.where(legal, log_p_teacher.exp() * (log_p_teacher - log_p_student), torch.zeros_like(log_p_student))
    has_legal = legal.any(-1)
    return terms.sum(-1).mul(has_legal).sum() / has_legal.sum().clamp_min(1) * temperature**2


def _logits(model: Callable[[torch.Tensor], Any], obs: torch.Tensor) -> torch.Tensor:
    out = model(obs)
    return out[0] if isinstance(out, tuple) else out  # actor-critic modules return (logits, value)


def collect_observations(policy: Any, n_games: int, *, max_turns: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Observations and action masks met by ``policy`` in ``n_games`` games of self-play.

    ``policy`` implements ``act_batch(observations, action_masks)``; the games run on
    :func:`parley.envs.play.play_batch`, so an illegal act raises. Returns float32 (N, D) and int8
    (N, 252) arrays, one row per act taken.
    """
    rng = np.random.default_rng(seed)
    counts, values = sample_context_arrays(rng, n_games)
    observations, masks = [], []

    def keep(step: PlayStep) -> None:
        observations.append(step.observations)
        masks.append(step.masks)

    # One agent in both seats: each step's acts come from one act_batch call over every live game.
    play_batch([policy], counts, values, rng.integers(0, 2, size=n_games),
               seating=np.zeros((n_games, 2), dtype=np.int64), max_turns=max_turns, on_step=keep)
    return np.concatenate(observations), np.concatenate(masks)


@dataclass
class DistillResult:
    """Per-epoch mean masked KL on the training observations, and the argmax agreement at the end."""

    losses: list[float]
    initial_kl: float
    final_kl: float
    agreement: float


@torch.no_grad()
def _evaluate(teacher: Callable, student: nn.Module, obs: torch.Tensor, masks: torch.Tensor, temperature: float,
              batch_size: int) -> tuple[float, float]:
    kl_sum, agree, n = 0.0, 0.0, len(obs)
    for start in range(0, n, batch_size):
        o, m = obs[start : start + batch_size], masks[start : start + batch_size]
        t, s = _logits(teacher, o), _logits(student, o)
        kl_sum += float(masked_kl(s, t, m, temperature)) * len(o)
        floor = torch.finfo(t.dtype).min
        agree += float((t.masked_fill(~m.bool(), floor).argmax(-1) == s.masked_fill(~m.bool(), floor).argmax(-1)).sum())
    return kl_sum / n, agree / n


def distill(teacher: Callable[[torch.Tensor], Any], student: nn.Module, observations: np.ndarray | torch.Tensor,
            action_masks: np.ndarray | torch.Tensor, *, epochs: int = 10, batch_size: int = 256, lr: float = 1e-3,
            temperature: float = 1.0, device: str = "auto", seed: int = 0) -> DistillResult:
    """Train ``student`` (in place) so its masked action distribution matches ``teacher``'s.

    Both map a float observation batch (B, D) to logits (B, 252) (or to ``(logits, value)``). The
    teacher is only evaluated, under ``torch.no_grad``.
    """
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    device = resolve_device(device)
    obs = torch.as_tensor(np.asarray(observations), dtype=torch.float32, device=device)
    masks = torch.as_tensor(np.asarray(action_masks), device=device)
    if obs.dim() != 2 or masks.shape != (len(obs), NUM_ACTIONS):
        raise ValueError(f"need observations (N, D) and masks (N, {NUM_ACTIONS}); got {tuple(obs.shape)}, {tuple(masks.shape)}")
    student.to(device)
    if isinstance(teacher, nn.Module):
        teacher.to(device).eval()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    initial_kl, _ = _evaluate(teacher, student, obs, masks, temperature, batch_size)
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(epochs):
        student.train()
        order = torch.randperm(len(obs), generator=generator).to(device)
        total = 0.0
        for start in range(0, len(obs), batch_size):
            idx = order[start : start + batch_size]
            with torch.no_grad():
                target = _logits(teacher, obs[idx])
            loss = masked_kl(_logits(student, obs[idx]), target, masks[idx], temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        losses.append(total / len(obs))
    student.eval()
    final_kl, agreement = _evaluate(teacher, student, obs, masks, temperature, batch_size)
    return DistillResult(losses, initial_kl, final_kl, agreement)


__all__ = [
    "DistillResult",
    "SparsityReport",
    "collect_observations",
    "distill",
    "make_pruning_permanent",
    "masked_kl",
    "model_size_bytes",
    "prune_global_unstructured",
    "prune_structured",
    "quantize_int8",
    "sparsity_report",
]
