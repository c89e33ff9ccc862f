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
pixels in [0, 1], indices valid and unique, label rules, and the perturbation bound of the submission's
threat model) and raises :class:`BudgetError` naming the limit broken.

Two threat models bound what a poison may change, as in the attacks' papers:

``perturbation`` (Sleeper Agent, Hidden Trigger Backdoor, Witches' Brew, random noise)
    clean-label poisons: every pixel moves by at most ``eps`` (l-infinity).
``stamp`` (BadNets, the clean-label backdoor of Turner et al.)
    a visible trigger is stamped at full contrast: inside one trigger-sized square per image the
    pixels may take any value in [0, 1]; outside it the ``eps`` bound still holds. These attacks are
    bounded by the poison count, not by ``eps``. A scenario with ``allow_stamp=False`` refuses them.

Submissions persist: :meth:`Submission.save` writes an ``.npz`` file with a JSON header (attack, config,
trigger, scenario) and :meth:`Submission.load` reads it back bit for bit (see :func:`load_submission`).

Adding an attack: subclass :class:`Attack`, give it a ``Config`` dataclass and ``name``, implement
``craft``, and decorate with :func:`register_attack`. Metrics follow BackdoorBench: clean accuracy, attack
success rate (ASR) and robust accuracy (R-Acc).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
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
    "patched_test_set",
    "THREAT_MODELS",
    "load_submission",
    "save_submission",
]

#: What bounds a poison's pixels: see the module docstring.
THREAT_MODELS = ("perturbation", "stamp")

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
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError(f"budget is a fraction of the training set in (0, 1], got {budget!r}")
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
    :param allow_stamp: whether ``stamp`` submissions (a full-contrast trigger-sized square per image)
        are allowed; otherwise every pixel obeys ``eps``.
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
    allow_stamp: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.eps <= 1:
            raise ValueError(f"eps is an l-infinity bound in [0, 1] pixel units, in (0, 1]; got {self.eps}")
        if self.max_poisons < 1:
            raise ValueError(f"max_poisons must be >= 1, got {self.max_poisons}")
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
                     seed: int = 0, device: str = "auto", allow_stamp: bool = True) -> Scenario:
        """The attacker's view of ``dataset`` (its training split only)."""
        channels, height, _ = dataset.shape
        trigger = trigger or make_trigger(channels, default_patch_size(height), seed=seed)
        return cls(dataset.x_train, dataset.y_train, dataset.num_classes, int(source_class), int(target_class),
                   trigger, max_poisons_for(dataset.num_train, budget), float(eps),
                   recipe or TrainingRecipe.for_dataset(dataset), victim, dict(victim_kwargs or {}),
                   allow_relabel, seed, device, allow_stamp)


@dataclass
class Submission:
    """An attacker's move: perturb ``x_train[indices]`` by ``delta`` and (optionally) set new labels.

    :param indices: int64 ``(k,)`` training indices, unique.
    :param delta: float32 ``(k, C, H, W)`` perturbations.
    :param labels: int64 ``(k,)`` new labels, or None to keep the current ones (clean-label).
    :param info: free-form details from the attack (name, config, crafting time, final loss ...).
    :param stamp: the threat model: False for ``perturbation`` (``|delta| <= eps`` everywhere), True for
        ``stamp`` (one trigger-sized square per image may change freely; see the module docstring).
    """

    indices: np.ndarray
    delta: np.ndarray
    labels: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    stamp: bool = False

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64).reshape(-1)
        self.delta = np.asarray(self.delta, dtype=np.float32)
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.stamp = bool(self.stamp)

    @property
    def threat_model(self) -> str:
        return "stamp" if self.stamp else "perturbation"

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

    def to_action(self, max_poisons: int, y_train: torch.Tensor | np.ndarray | None = None) -> dict[str, Any]:
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
        return {"indices": indices, "delta": delta, "labels": labels, "stamp": int(self.stamp)}

    @classmethod
    def from_action(cls, action: dict[str, Any]) -> Submission:
        """Parse the env's Dict action (slots with index -1 are unused; label -1 keeps the label; ``stamp``
        1 selects the stamp threat model, absent or 0 the perturbation one)."""
        if not isinstance(action, dict):
            raise BudgetError("shape", f"the attacker's action must be a Submission or a dict with keys indices, "
                                       f"delta, labels, stamp; got {type(action).__name__}")
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
        stamp = int(np.asarray(action.get("stamp", 0)).reshape(-1)[0]) if "stamp" in action else 0
        if stamp not in (0, 1):
            raise BudgetError("stamp", f"'stamp' must be 0 (perturbation) or 1 (stamp), got {stamp}")
        return cls(indices[used], delta[used], labels, stamp=bool(stamp))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, trigger: Trigger | None = None, scenario: Scenario | None = None,
             x_train: torch.Tensor | None = None) -> Path:
        """Write this submission to ``path`` (``.npz``); see :func:`save_submission`."""
        return save_submission(path, self, trigger=trigger, scenario=scenario, x_train=x_train)

    @classmethod
    def load(cls, path: str | Path, x_train: torch.Tensor | None = None) -> Submission:
        """Read a submission written by :meth:`save`; the header is in ``info["saved"]``. With ``x_train``,
        check that the clean images at the poisoned indices are those the poisons were crafted on."""
        submission, _ = load_submission(path, x_train=x_train)
        return submission


#: Marks parley's submission files; bumped when the layout changes.
SUBMISSION_FORMAT = "parley-submission"
SUBMISSION_VERSION = 1


def _json_safe(value: Any) -> Any:
    """``value`` as plain JSON types (dataclasses, tuples, numpy scalars and arrays converted)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json_safe(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _base_digest(x_train: torch.Tensor, indices: np.ndarray) -> str:
    """SHA-1 of the clean images at ``indices``: ties saved poisons to the images they were crafted on."""
    images = np.ascontiguousarray(x_train[torch.as_tensor(indices)].numpy().astype(np.float32))
    return hashlib.sha1(images.tobytes()).hexdigest()


def save_submission(path: str | Path, submission: Submission, *, trigger: Trigger | None = None,
                    scenario: Scenario | None = None, x_train: torch.Tensor | None = None) -> Path:
    """Write ``submission`` to an ``.npz`` file: the arrays exactly (float32 deltas, not rounded images)
    and a JSON header with the attack name, its config, the threat model, the trigger and -- when a
    ``scenario`` is given -- its classes, budget, eps, seed and a digest of the clean images at the
    poisoned indices (``x_train`` alone gives the digest too). Returns the path written."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    trigger = trigger if trigger is not None else (scenario.trigger if scenario is not None else None)
    header: dict[str, Any] = {
        "format": SUBMISSION_FORMAT, "version": SUBMISSION_VERSION,
        "attack": submission.info.get("attack"), "config": _json_safe(submission.info.get("config")),
        "threat_model": submission.threat_model,
        "info": _json_safe({k: v for k, v in submission.info.items() if k not in ("config", "saved")}),
        "trigger": None if trigger is None else {"placement": trigger.placement,
                                                 "location": _json_safe(trigger.location)},
        "scenario": None,
    }
    base = x_train if x_train is not None else (scenario.x_train if scenario is not None else None)
    if scenario is not None:
        header["scenario"] = {
            "source_class": scenario.source_class, "target_class": scenario.target_class,
            "num_classes": scenario.num_classes, "num_train": len(scenario.x_train), "shape": list(scenario.shape),
            "max_poisons": scenario.max_poisons, "eps": scenario.eps, "seed": scenario.seed,
            "victim": scenario.victim, "victim_kwargs": _json_safe(scenario.victim_kwargs),
            "recipe": _json_safe(scenario.recipe),
        }
    header["base_digest"] = _base_digest(base, submission.indices) if base is not None and len(submission) else None
    arrays = {
        "header": np.array(json.dumps(header)),
        "indices": submission.indices,
        "delta": submission.delta,
        "labels": submission.labels if submission.labels is not None else np.zeros(0, np.int64),
        "has_labels": np.array(submission.labels is not None),
    }
    if trigger is not None:
        arrays["trigger_patch"] = trigger.patch
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def load_submission(path: str | Path, x_train: torch.Tensor | None = None) -> tuple[Submission, dict[str, Any]]:
    """Read a file written by :func:`save_submission`: ``(submission, header)``. The header's
    ``"trigger"`` entry is rebuilt as a :class:`Trigger` (None if none was saved). With ``x_train``,
    raise ``ValueError`` if the clean images at the poisoned indices differ from those the poisons were
    crafted on (another dataset, split or order would silently weaken the poisons)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no submission file at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path} is not an .npz submission file: {exc}") from exc
    if "header" not in arrays:
        raise ValueError(f"{path} has no header; expected a file written by Submission.save")
    header = json.loads(str(arrays["header"]))
    if header.get("format") != SUBMISSION_FORMAT or header.get("version") != SUBMISSION_VERSION:
        raise ValueError(f"{path}: expected format {SUBMISSION_FORMAT!r} version {SUBMISSION_VERSION}, "
                         f"found {header.get('format')!r} version {header.get('version')!r}")
    labels = arrays["labels"] if bool(arrays["has_labels"]) else None
    info = dict(header.get("info") or {})
    info["config"] = header.get("config")
    info["saved"] = {k: v for k, v in header.items() if k not in ("info",)}
    submission = Submission(arrays["indices"], arrays["delta"], labels, info,
                            stamp=header.get("threat_model") == "stamp")
    trig = header.get("trigger")
    if trig is not None and "trigger_patch" in arrays:
        location = tuple(trig["location"]) if trig.get("location") is not None else None
        header["trigger"] = Trigger(arrays["trigger_patch"], placement=trig["placement"], location=location)
    else:
        header["trigger"] = None
    if x_train is not None and header.get("base_digest") is not None:
        if len(submission) and (submission.indices.max() >= len(x_train)):
            raise ValueError(f"{path}: poisoned indices reach {int(submission.indices.max())} but the training set "
                             f"has {len(x_train)} images")
        if _base_digest(x_train, submission.indices) != header["base_digest"]:
            raise ValueError(f"{path}: the clean images at the poisoned indices differ from those the poisons were "
                             "crafted on (another dataset, split or order)")
    return submission, header


def check_submission(submission: Submission, x_train: torch.Tensor, y_train: torch.Tensor, *, max_poisons: int,
                     eps: float, num_classes: int, allow_relabel: bool = True, stamp_size: int | None = None,
                     allow_stamp: bool = True) -> None:
    """Raise :class:`BudgetError` when ``submission`` breaks a limit; return None when it is valid.

    Labels equal to -1 mean "keep the current label"; with ``allow_relabel=False`` any other label must
    equal the current one. A ``stamp`` submission (needs ``allow_stamp`` and ``stamp_size``, the trigger's
    side) may change the pixels of one ``stamp_size`` square per image freely; elsewhere ``|delta| <= eps``.
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
    if submission.stamp:
        if not allow_stamp:
            raise BudgetError("stamp", "this scenario allows only perturbation poisons (allow_stamp=False); "
                                       "a stamp submission was given")
        if stamp_size is None:
            raise BudgetError("stamp", "a stamp submission needs the trigger's size (stamp_size) to be checked")
        _check_stamp_region(submission.delta, eps, stamp_size)
    else:
        largest = float(np.abs(submission.delta).max())
        if largest > eps + TOLERANCE:
            raise BudgetError("eps", f"max |delta| = {largest:.5f} exceeds eps = {eps:.5f} (l-infinity bound of "
                                     "the perturbation threat model)")
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


def _check_stamp_region(delta: np.ndarray, eps: float, stamp_size: int) -> None:
    """Every image's pixels that move by more than ``eps`` must fit in one ``stamp_size`` square."""
    beyond = (np.abs(delta) > eps + TOLERANCE).any(axis=1)  # (k, H, W)
    for axis, name in ((2, "rows"), (1, "columns")):
        hit = beyond.any(axis=axis)  # (k, H) rows hit, or (k, W) columns hit
        length = hit.shape[1]
        first = np.where(hit.any(1), hit.argmax(1), 0)
        last = np.where(hit.any(1), length - 1 - hit[:, ::-1].argmax(1), -1)
        span = last - first + 1
        if (span > stamp_size).any():
            bad = int(np.flatnonzero(span > stamp_size)[0])
            raise BudgetError("stamp", f"poison {bad} changes pixels by more than eps over {int(span[bad])} {name}; "
                                       f"a stamp may exceed eps only inside one {stamp_size}x{stamp_size} square")


def _keep_labels(labels: np.ndarray | None, y_train: torch.Tensor, idx: np.ndarray) -> np.ndarray | None:
    if labels is None:
        return None
    current = y_train.numpy()[idx]
    return np.where(labels >= 0, labels, current)


def apply_checked(submission: Submission, x_train: torch.Tensor, y_train: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a submission that passed :func:`check_submission` (label -1 resolved to "keep")."""
    resolved = Submission(submission.indices, submission.delta,
                          _keep_labels(submission.labels, y_train, submission.indices), submission.info,
                          stamp=submission.stamp)
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


def patched_test_set(x_test: torch.Tensor, trigger: Trigger, seed: int = 0) -> torch.Tensor:
    """Every test image with the trigger pasted in; with random placement the locations are drawn once
    from ``seed``, so every model evaluated with the same seed sees the same patched images."""
    return trigger.apply(x_test, seed=seed)


def backdoor_metrics(model: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor, source_class: int,
                     target_class: int, trigger: Trigger, seed: int = 0, device: str = "auto",
                     patched: torch.Tensor | None = None) -> dict[str, float]:
    """Clean accuracy on the whole test set and, on patched test images:

    - ``attack_success_rate`` (source ASR): patched source-class images classified as the target;
    - ``full_attack_success_rate``: patched images of every non-target class classified as the target;
    - ``robust_accuracy`` (R-Acc, source) and ``full_robust_accuracy``: patched images still given
      their true class.

    ``patched`` (from :func:`patched_test_set`) skips pasting the trigger again.
    """
    labels = y_test.numpy()
    clean = predict(model, x_test, device)
    patched = patched if patched is not None else patched_test_set(x_test, trigger, seed)
    triggered = predict(model, patched, device)
    source = labels == source_class
    return {
        "clean_accuracy": clean_accuracy(clean, labels),
        "attack_success_rate": attack_success_rate(triggered[source], labels[source], target_class),
        "robust_accuracy": robust_accuracy(triggered[source], labels[source], target_class),
        "full_attack_success_rate": attack_success_rate(triggered, labels, target_class),
        "full_robust_accuracy": robust_accuracy(triggered, labels, target_class),
    }


# ---------------------------------------------------------------------------------------------- interface

class Attack(ABC):
    """A poisoning attack. Subclasses set ``name`` and ``Config`` (a dataclass) and implement ``craft``."""

    name: ClassVar[str] = ""
    #: Whether the attack changes labels (needs ``scenario.allow_relabel``).
    relabels: ClassVar[bool] = False
    #: ``"perturbation"`` (bounded by eps) or ``"stamp"`` (a full-contrast trigger; needs ``allow_stamp``).
    threat_model: ClassVar[str] = "perturbation"
    Config: ClassVar[type] = object

    def __init__(self, config: Any | None = None) -> None:
        if config is not None and not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def _craft(self, scenario: Scenario) -> Submission:
        """Build the submission; :meth:`craft` adds timing and validation."""

    def craft(self, scenario: Scenario) -> Submission:
        """Craft poisons for ``scenario``; the result always passes :func:`check_submission`."""
        if not isinstance(scenario, Scenario):
            raise TypeError(f"{self.name}.craft takes a Scenario (env.unwrapped.attacker_scenario() or "
                            f"Scenario.from_dataset(...)), got {type(scenario).__name__}")
        if self.relabels and not scenario.allow_relabel:
            raise ValueError(f"{self.name} is a dirty-label attack; the scenario forbids relabelling "
                             "(allow_relabel=False)")
        if self.threat_model == "stamp" and not scenario.allow_stamp:
            raise ValueError(f"{self.name} stamps a full-contrast trigger; the scenario allows only eps-bounded "
                             "perturbations (allow_stamp=False)")
        start = time.perf_counter()
        submission = self._craft(scenario)
        submission.stamp = self.threat_model == "stamp"
        submission.info.setdefault("attack", self.name)
        submission.info.setdefault("config", _json_safe(self.config))
        submission.info["craft_time_s"] = time.perf_counter() - start
        check_submission(submission, scenario.x_train, scenario.y_train, max_poisons=scenario.max_poisons,
                         eps=scenario.eps, num_classes=scenario.num_classes, allow_relabel=scenario.allow_relabel,
                         stamp_size=scenario.trigger.size, allow_stamp=scenario.allow_stamp)
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
    if not isinstance(name, str):
        raise TypeError(f"the attack name must be a str; available: {', '.join(sorted(ATTACKS))}")
    name = ATTACK_ALIASES.get(name, name)
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; available: {', '.join(sorted(ATTACKS))} "
                         f"(aliases: {', '.join(f'{k}={v}' for k, v in ATTACK_ALIASES.items())})")
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

