"""Poisoning defenses behind one small interface.

A defense acts at one of three points of the victim's life, named by :attr:`Defense.stage`:

``"filter"``
    Before training: :meth:`Defense.select_removals` looks at the (possibly poisoned) training set,
    usually through the penultimate features of a model trained on it, and returns the training
    indices to remove. The victim is then trained from scratch on what is left.
``"training"``
    During training: :meth:`Defense.training_hooks` returns :class:`TrainingHooks` that
    ``train_victim`` applies to every mini-batch (``batch_transform``: inputs and targets before the
    forward pass; ``grad_hook``: the model after ``backward()`` and before the optimiser step).
``"inference"``
    After training: :meth:`Defense.detect` flags test-time inputs as trojaned; it removes nothing from
    the training set and is reported as a detection rate.

``"none"`` is the no-op defense every benchmark grid compares against. Build defenses by name::

    from parley.attacks.defenses import make_defense, list_defenses
    defense = make_defense("none")
    removed = defense.select_removals(x_train, y_train, model)   # -> np.ndarray of int64 indices
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

#: ``batch_transform(inputs, labels, num_classes, generator) -> (inputs, targets)``. ``labels`` are class
#: indices (int64, shape ``(B,)``); the returned ``targets`` are either class indices or class
#: probabilities (float, shape ``(B, num_classes)``) -- ``torch.nn.functional.cross_entropy`` accepts both.
BatchTransform = Callable[[torch.Tensor, torch.Tensor, int, torch.Generator],
                          tuple[torch.Tensor, torch.Tensor]]
#: ``grad_hook(model, generator)``: called after ``loss.backward()``, before ``optimizer.step()``; it
#: edits the ``.grad`` of the model's parameters in place.
GradHook = Callable[[nn.Module, torch.Generator], None]


@dataclass
class TrainingHooks:
    """What a training-time defense changes in the victim's training loop.

    Attributes:
        batch_transform: Applied to each augmented mini-batch before the forward pass, or None.
        grad_hook: Applied to the model after the backward pass of each mini-batch, or None.
    """

    batch_transform: BatchTransform | None = None
    grad_hook: GradHook | None = None


class Defense:
    """Base class of every defense. Subclasses set :attr:`name` and :attr:`stage` and override the
    method of their stage; the others keep their no-op defaults so a caller can run any defense
    through the same three calls."""

    name: ClassVar[str] = "base"
    stage: ClassVar[str] = "none"  # "none" | "filter" | "training" | "inference"

    def select_removals(self, x: torch.Tensor, y: torch.Tensor, model: nn.Module | None = None, *,
                        expected_poisons: int | None = None,
                        features: np.ndarray | None = None) -> np.ndarray:
        """Training indices to remove before the victim is trained.

        Args:
            x: Training images, float ``(N, C, H, W)`` in [0, 1].
            y: Training labels, int ``(N,)``.
            model: A model trained on ``(x, y)`` whose penultimate features the defense inspects
                (filter defenses need it unless ``features`` is given).
            expected_poisons: How many poisons the defender assumes (e.g. the attack budget).
            features: Precomputed penultimate features ``(N, D)``; skips the forward passes.

        Returns:
            Sorted unique int64 indices into the training set (empty for defenses that remove nothing).
        """
        return np.zeros(0, dtype=np.int64)

    def training_hooks(self) -> TrainingHooks:
        """Hooks for ``train_victim``; empty for defenses that do not act during training."""
        return TrainingHooks()

    def detect(self, model: nn.Module, inputs: torch.Tensor, clean_inputs: torch.Tensor) -> np.ndarray:
        """Boolean flags, one per input: True where the input is judged trojaned (inference defenses)."""
        return np.zeros(len(inputs), dtype=bool)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, stage={self.stage!r})"


class NoDefense(Defense):
    """Removes nothing, changes nothing: the baseline cell of every comparison."""

    name = "none"
    stage = "none"


DEFENSES: dict[str, type[Defense]] = {"none": NoDefense}


def list_defenses() -> list[str]:
    """Names accepted by :func:`make_defense`, sorted."""
    return sorted(DEFENSES)


def make_defense(name: str, **cfg: Any) -> Defense:
    """Build a defense by name; ``cfg`` goes to its constructor.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; known defenses: {', '.join(list_defenses())}")
    return DEFENSES[name](**cfg)
