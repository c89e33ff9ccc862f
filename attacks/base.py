"""The attack interface, the attacker's view of a scenario, submissions, budget checks and metrics.

One interface for every attack (compare ART's ``poison()``)::

    from parley.attacks import make_attack
    attack = make_attack("sleeper_agent", steps=100)      # config fields as keyword arguments
    submission = attack.craft(scenario)                   # -> Submission
    x_poisoned, y_poisoned = submission.apply(scenario.x_train, scenario.y_train)

:class:`Scenario` is everything the attacker's threat model lets it see: the training set (images and
labels; it chooses which to perturb), the source and target classes, the trigger, the poison budget and
``eps``, whether labels may change, and -- gray-box, as in Sleeper Agent's main setting -- the victim's
architecture and training recipe (for surrogates). It never holds the test set or the defender's
choices. ``poisoning_v0`` builds it with ``env.unwrapped.attacker_scenario()``; tests and benchmarks
build it with :meth:`Scenario.from_dataset`.

:class:`Submission` holds the chosen training indices, one perturbation ``delta`` per index and, for
dirty-label attacks, new labels. :func:`check_submission` enforces the limits (count <= budget,
``|delta| <= eps``, pixels in [0, 1], indices valid and unique, label rules) and raises
:class:`BudgetError` naming the limit broken.

Adding an attack: subclass :class:`Attack`, give it a ``Config`` dataclass and ``name``, implement
``craft``, and decorate with :func:`register_attack`. Metrics follow BackdoorBench: clean accuracy, attack
success rate (ASR) and robust accuracy (R-Acc).
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from parley.attacks.triggers import Trigger, default_patch_size, make_trigger
from parley.attacks.victims import TrainingRecipe, make_victim, predict

__all__ = [
    "BudgetError",
    "Scenario",
    "Submission",
    "Attack",
    "ATTACKS",
    "register_attack",
    "make_attack",
    "make_attack_for",
    "list_attacks",
    "check_submission",
    "apply_checked",
    "max_poisons_for",
    "clean_accuracy",
    "attack_success_rate",
    "robust_accuracy",
    "poison_precision_recall",
    "backdoor_metrics",
]

#: Slack for float round-off when comparing a perturbation with eps or pixels with [0, 1].
TOLERANCE = 1e-5


class BudgetError(ValueError):
    """A submission broke a limit of the threat model; ``limit`` names it (``"budget"``, ``"eps"``,
    ``"pixel_range"``, ``"indices"``, ``"labels"`` or ``"shape"``)."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(f"{limit}: {message}")
        self.limit = limit


def max_poisons_for(num_train: int, budget: float) -> int:
    """The number of training images a budget fraction allows (at least one)."""
    if not 0 < budget <= 1:
        raise ValueError(f"budget is a fraction of the training set in (0, 1], got {budget}")
    return max(1, int(np.floor(budget * num_train + 1e-9)))


@dataclass
class Scenario:
    """What the attacker sees (see the module docstring for the threat model).

    :param x_train: the clean training images ``(N, C, H, W)`` in [0, 1].
    :param y_train: their labels ``(N,)``.
    :param num_classes: number of classes.
    :param source_class: images of this class should, once patched, be classified as ``target_class``.
    :param target_class: the class the backdoor leads to.
    :param trigger: the patch the attack plants (it is applied only at test time for hidden-trigger attacks).
    :param max_poisons: how many training images may be submitted.
    :param eps: l-infinity bound on each perturbation.
    :param recipe: the victim's training recipe (attacks train surrogates with it).
    :param victim: the victim architecture name (for :func:`~parley.attacks.victims.make_victim`).
    :param victim_kwargs: keyword arguments for the victim factory (e.g. ``width``).
    :param allow_relabel: whether submissions may change labels (dirty-label threat model).
    :param seed: seeds the attack's own randomness.
    :param device: where attacks compute (``"auto"`` picks CUDA when present).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    num_classes: int
    source_class: int
    target_class: int
    trigger: Trigger
    max_poisons: int
    eps: float
    recipe: TrainingRecipe
    victim: str = "small_cnn"
    victim_kwargs: dict[str, Any] = field(default_factory=dict)
    allow_relabel: bool = True
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.source_class == self.target_class:
            raise ValueError("source_class and target_class must differ")
        for c in (self.source_class, self.target_class):
            if not 0 <= c < self.num_classes:
                raise ValueError(f"class {c} outside [0, {self.num_classes - 1}]")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def class_indices(self, label: int) -> np.ndarray:
        return np.flatnonzero(self.y_train.numpy() == label)

    def make_model(self) -> nn.Module:
        """A freshly initialised network of the victim's architecture (a surrogate)."""
        return make_victim(self.victim, shape=self.shape, num_classes=self.num_classes, **self.victim_kwargs)

    @classmethod
    def from_dataset(cls, dataset, source_class: int, target_class: int, *, budget: float = 0.01,
                     eps: float = 16 / 255, recipe: TrainingRecipe | None = None, trigger: Trigger | None = None,
                     victim: str = "small_cnn", victim_kwargs: dict | None = None, allow_relabel: bool = True,
                     seed: int = 0, device: str = "auto") -> Scenario:
        """The attacker's view of ``dataset`` (its training split only)."""
        channels, height, _ = dataset.shape
        trigger = trigger or make_trigger(channels, default_patch_size(height), seed=seed)
        return cls(dataset.x_train, dataset.y_train, dataset.num_classes, int(source_class), int(target_class),
                   trigger, max_poisons_for(dataset.num_train, budget), float(eps),
                   recipe or TrainingRecipe.for_dataset(dataset), victim, dict(victim_kwargs or {}),
                   allow_relabel, seed, device)


@dataclass
class Submission:
    """An attacker's move: perturb ``x_train[indices]`` by ``delta`` and (optionally) set new labels.

    :param indices: int64 ``(k,)`` training indices, unique.
    :param delta: float32 ``(k, C, H, W)`` perturbations.
    :param labels: int64 ``(k,)`` new labels, or None to keep the current ones (clean-label).
    :param info: free-form details from the attack (name, crafting time, final loss ...).
    """

    indices: np.ndarray
    delta: np.ndarray
    labels: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64).reshape(-1)
        self.delta = np.asarray(self.delta, dtype=np.float32)
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.indices)

    def apply(self, x_train: torch.Tensor, y_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Poisoned copies of the training images and labels."""
        x, y = x_train.clone(), y_train.clone()
        if len(self.indices):
            idx = torch.as_tensor(self.indices)
            x[idx] = (x[idx] + torch.as_tensor(self.delta)).clamp(0.0, 1.0)
            if self.labels is not None:
                y[idx] = torch.as_tensor(self.labels)
        return x, y

    def to_action(self, max_poisons: int, y_train: torch.Tensor | np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The env's Dict action: slots padded with index -1, zero delta; unchanged labels where none given."""
        k = len(self.indices)
        if k > max_poisons:
            raise BudgetError("budget", f"{k} poisons submitted but the budget allows {max_poisons}")
        shape = self.delta.shape[1:]
        indices = np.full(max_poisons, -1, dtype=np.int64)
        delta = np.zeros((max_poisons, *shape), dtype=np.float32)
        labels = np.zeros(max_poisons, dtype=np.int64)
        indices[:k], delta[:k] = self.indices, self.delta
        if self.labels is not None:
            labels[:k] = self.labels
        elif y_train is not None and k:
            labels[:k] = np.asarray(y_train)[self.indices]
        else:
            labels[:k] = -1  # keep
        return {"indices": indices, "delta": delta, "labels": labels}

    @classmethod
    def from_action(cls, action: dict[str, Any]) -> Submission:
        """Parse the env's Dict action (slots with index -1 are unused; label -1 keeps the label)."""
        missing = {"indices", "delta"} - set(action)
        if missing:
            raise BudgetError("shape", f"attacker action lacks {sorted(missing)}; expected keys indices, delta, labels")
        indices = np.asarray(action["indices"], dtype=np.int64).reshape(-1)
        used = indices >= 0
        delta = np.asarray(action["delta"], dtype=np.float32)
        if delta.shape[0] != len(indices):
            raise BudgetError("shape", f"delta has {delta.shape[0]} rows but indices has {len(indices)} slots")
        labels = action.get("labels")
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64).reshape(-1)
            if len(labels) != len(indices):
                raise BudgetError("shape", f"labels has {len(labels)} slots but indices has {len(indices)}")
            labels = labels[used]
        return cls(indices[used], delta[used], labels)


def check_submission(submission: Submission, x_train: torch.Tensor, y_train: torch.Tensor, *, max_poisons: int,
                     eps: float, num_classes: int, allow_relabel: bool = True) -> None:
    """Raise :class:`BudgetError` when ``submission`` breaks a limit; return None when it is valid.

    Labels equal to -1 mean "keep the current label"; with ``allow_relabel=False`` any other label must
    equal the current one.
    """
    n = len(x_train)
    k = len(submission.indices)
    if k > max_poisons:
        raise BudgetError("budget", f"{k} poisons submitted but the budget allows at most {max_poisons} "
                                    f"({max_poisons / n:.2%} of {n} training images)")
    expected = (k, *x_train.shape[1:])
    if submission.delta.shape != expected:
        raise BudgetError("shape", f"delta must have shape {expected} (one perturbation per index), "
                                   f"got {submission.delta.shape}")
    if k == 0:
        return
    idx = submission.indices
    if idx.min() < 0 or idx.max() >= n:
        bad = idx[(idx < 0) | (idx >= n)][:5].tolist()
        raise BudgetError("indices", f"indices must lie in [0, {n - 1}]; got {bad}")
    if len(np.unique(idx)) != k:
        values, counts = np.unique(idx, return_counts=True)
        raise BudgetError("indices", f"indices must be unique; repeated: {values[counts > 1][:5].tolist()}")
    if not np.isfinite(submission.delta).all():
        raise BudgetError("eps", "delta contains NaN or infinite values")
    largest = float(np.abs(submission.delta).max())
    if largest > eps + TOLERANCE:
        raise BudgetError("eps", f"max |delta| = {largest:.5f} exceeds eps = {eps:.5f} (l-infinity bound)")
    poisoned = x_train[torch.as_tensor(idx)].numpy() + submission.delta
    if poisoned.min() < -TOLERANCE or poisoned.max() > 1 + TOLERANCE:
        raise BudgetError("pixel_range", f"x + delta must stay in [0, 1]; got values in "
                                         f"[{poisoned.min():.4f}, {poisoned.max():.4f}]")
    if submission.labels is not None:
        labels = submission.labels
        if len(labels) != k:
            raise BudgetError("shape", f"labels has {len(labels)} entries but {k} indices were submitted")
        given = labels >= 0
        if (labels[given] >= num_classes).any() or (labels < -1).any():
            raise BudgetError("labels", f"labels must be -1 (keep) or lie in [0, {num_classes - 1}]")
        changed = given & (labels != y_train.numpy()[idx])
        if changed.any() and not allow_relabel:
            raise BudgetError("labels", f"{int(changed.sum())} labels changed but this clean-label threat model "
                                        "forbids relabelling (allow_relabel=False)")


def _keep_labels(labels: np.ndarray | None, y_train: torch.Tensor, idx: np.ndarray) -> np.ndarray | None:
    if labels is None:
        return None
    current = y_train.numpy()[idx]
    return np.where(labels >= 0, labels, current)


def apply_checked(submission: Submission, x_train: torch.Tensor, y_train: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a submission that passed :func:`check_submission` (label -1 resolved to "keep")."""
    resolved = Submission(submission.indices, submission.delta,
                          _keep_labels(submission.labels, y_train, submission.indices), submission.info)
    return resolved.apply(x_train, y_train)


# --------------------------------------------------------------------------------------------------- metrics

def clean_accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Share of clean test images classified correctly (BackdoorBench C-Acc)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return float((predictions == labels).mean()) if len(labels) else float("nan")


def attack_success_rate(triggered_predictions: np.ndarray, true_labels: np.ndarray, target_class: int) -> float:
    """Share of triggered images whose true class is not the target that are classified as the target."""
    predictions, labels = np.asarray(triggered_predictions), np.asarray(true_labels)
    keep = labels != target_class
    return float((predictions[keep] == target_class).mean()) if keep.any() else float("nan")


def robust_accuracy(triggered_predictions: np.ndarray, true_labels: np.ndarray, target_class: int) -> float:
    """BackdoorBench R-Acc: share of triggered non-target images still given their true label."""
    predictions, labels = np.asarray(triggered_predictions), np.asarray(true_labels)
    keep = labels != target_class
    return float((predictions[keep] == labels[keep]).mean()) if keep.any() else float("nan")


def poison_precision_recall(removed: np.ndarray, poisoned: np.ndarray) -> tuple[float, float]:
    """Precision and recall of a defender's removals against the poisoned indices.

    Precision is NaN when nothing was removed; recall is NaN when nothing was poisoned.
    """
    removed_set, poisoned_set = set(np.asarray(removed).tolist()), set(np.asarray(poisoned).tolist())
    hits = len(removed_set & poisoned_set)
    precision = hits / len(removed_set) if removed_set else float("nan")
    recall = hits / len(poisoned_set) if poisoned_set else float("nan")
    return precision, recall


def backdoor_metrics(model: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor, source_class: int,
                     target_class: int, trigger: Trigger, seed: int = 0, device: str = "auto") -> dict[str, float]:
    """Clean accuracy on the whole test set; ASR and R-Acc on patched source-class test images."""
    clean = predict(model, x_test, device)
    source = np.flatnonzero(y_test.numpy() == source_class)
    patched = trigger.apply(x_test[torch.as_tensor(source)], seed=seed)
    triggered = predict(model, patched, device)
    true = y_test.numpy()[source]
    return {
        "clean_accuracy": clean_accuracy(clean, y_test.numpy()),
        "attack_success_rate": attack_success_rate(triggered, true, target_class),
        "robust_accuracy": robust_accuracy(triggered, true, target_class),
    }


# ---------------------------------------------------------------------------------------------- interface

class Attack(ABC):
    """A poisoning attack. Subclasses set ``name`` and ``Config`` (a dataclass) and implement ``craft``."""

    name: ClassVar[str] = ""
    #: Whether the attack changes labels (needs ``scenario.allow_relabel``).
    relabels: ClassVar[bool] = False
    Config: ClassVar[type] = object

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def _craft(self, scenario: Scenario) -> Submission:
        """Build the submission; :meth:`craft` adds timing and validation."""

    def craft(self, scenario: Scenario) -> Submission:
        """Craft poisons for ``scenario``; the result always passes :func:`check_submission`."""
        if self.relabels and not scenario.allow_relabel:
            raise ValueError(f"{self.name} is a dirty-label attack; the scenario forbids relabelling "
                             "(allow_relabel=False)")
        start = time.perf_counter()
        submission = self._craft(scenario)
        submission.info.setdefault("attack", self.name)
        submission.info["craft_time_s"] = time.perf_counter() - start
        check_submission(submission, scenario.x_train, scenario.y_train, max_poisons=scenario.max_poisons,
                         eps=scenario.eps, num_classes=scenario.num_classes, allow_relabel=scenario.allow_relabel)
        return submission

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


#: Registered attacks by name.
ATTACKS: dict[str, type[Attack]] = {}
#: Short names accepted by :func:`make_attack`.
ATTACK_ALIASES: dict[str, str] = {"random": "random_noise", "hidden_trigger": "htba", "sleeper": "sleeper_agent"}


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator adding an attack to :data:`ATTACKS` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty name")
    ATTACKS[cls.name] = cls
    return cls


def _load_builtin_attacks() -> None:
    import parley.attacks.baselines  # noqa: F401
    import parley.attacks.sleeper_agent  # noqa: F401


def list_attacks() -> list[str]:
    _load_builtin_attacks()
    return sorted(ATTACKS)


def make_attack(name: str, **config: Any) -> Attack:
    """Build a registered attack; keyword arguments set fields of its ``Config`` dataclass."""
    _load_builtin_attacks()
    name = ATTACK_ALIASES.get(name, name)
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; available: {', '.join(sorted(ATTACKS))}")
    cls = ATTACKS[name]
    allowed = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = set(config) - allowed
    if unknown:
        raise ValueError(f"{name} has no option(s) {sorted(unknown)}; options: {', '.join(sorted(allowed))}")
    return cls(cls.Config(**config))


def make_attack_for(name: str, dataset: Any, **config: Any) -> Attack:
    """Like :func:`make_attack`, but starting from the attack's schedule for ``dataset`` where it declares one.

    An attack whose ``Config`` defines ``for_dataset`` itself (Sleeper Agent: the paper's schedule on
    32x32 colour images, :meth:`~parley.attacks.sleeper_agent.SleeperAgentConfig.small_images` on smaller
    ones) gets those defaults; keyword arguments override them. A schedule inherited from a parent
    config is not used: it was chosen for the parent attack. Other attacks get their dataclass defaults.
    """
    _load_builtin_attacks()
    name = ATTACK_ALIASES.get(name, name)
    config_cls = ATTACKS[name].Config if name in ATTACKS else None
    if config_cls is not None and "for_dataset" in vars(config_cls):
        schedule = config_cls.for_dataset(dataset)
        config = {**{f.name: getattr(schedule, f.name) for f in dataclasses.fields(schedule)}, **config}
    return make_attack(name, **config)  # checks the name and the option names


def random_generator(scenario: Scenario, salt: int) -> tuple[np.random.Generator, torch.Generator]:
    """Numpy and torch generators derived from the scenario seed (``salt`` separates attacks)."""
    seed = (int(scenario.seed) * 1_000_003 + salt) % 2**31
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed)

