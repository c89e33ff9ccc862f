"""Poisoning defenses behind one small interface.

A defense acts at one of three points of the victim's life, named by :attr:`Defense.stage`:

``"filter"``
    Before training: :meth:`Defense.select_removals` looks at the (possibly poisoned) training set,
    usually through the penultimate features of a model trained on it, and returns the training
    indices to remove. The victim is then trained from scratch on what is left.
``"training"``
    During training: :meth:`Defense.adjust_recipe` returns the victim's
    :class:`~parley.attacks.victims.TrainingRecipe` with the defense switched on (gradient clipping and
    noise, mixup, cutout are fields of the recipe, applied by ``train_victim`` to every mini-batch).
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
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn


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

    def adjust_recipe(self, recipe, image_size: int | None = None):
        """The victim's training recipe with this defense applied (unchanged for other stages).

        Args:
            recipe: A :class:`~parley.attacks.victims.TrainingRecipe`.
            image_size: Side of the training images, for defenses whose default scales with it.
        """
        return recipe

    def detect(self, model: nn.Module, inputs: torch.Tensor, clean_inputs: torch.Tensor) -> np.ndarray:
        """Boolean flags, one per input: True where the input is judged trojaned (inference defenses)."""
        return np.zeros(len(inputs), dtype=bool)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, stage={self.stage!r})"


class NoDefense(Defense):
    """Removes nothing, changes nothing: the baseline cell of every comparison."""

    name = "none"
    stage = "none"



# ---------------------------------------------------------------------------------------------------
# Features shared by the filtering defenses


def penultimate_features(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> np.ndarray:
    """Penultimate-layer activations of ``model`` on ``x``, as a float64 array ``(N, D)``.

    Uses ``model.features(x)`` when the model has such a method; otherwise it reads the input of the
    model's last ``nn.Linear`` layer through a forward pre-hook, which is the penultimate representation
    of any classifier that ends in a linear head.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks: list[np.ndarray] = []
    captured: list[torch.Tensor] = []
    handle = None
    if not callable(getattr(model, "features", None)):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"{type(model).__name__} has neither a features() method nor an nn.Linear head; "
                             "pass precomputed features= instead")
        handle = linears[-1].register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                batch = x[start:start + batch_size].to(device)
                if handle is None:
                    feats = model.features(batch)
                else:
                    captured.clear()
                    model(batch)
                    feats = captured[-1]
                chunks.append(feats.flatten(1).double().cpu().numpy())
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    return np.concatenate(chunks) if chunks else np.zeros((0, 0))


def _features_for(x: torch.Tensor, model: nn.Module | None, features: np.ndarray | None,
                  defense: str) -> np.ndarray:
    if features is not None:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) != len(x):
            raise ValueError(f"{defense}: features must have shape (N, D) with N = {len(x)} training images, "
                             f"got {features.shape}")
        return features
    if model is None:
        raise ValueError(f"{defense} needs a model trained on the data (model=...) or features=...")
    return penultimate_features(model, x)


def _expected(expected_poisons: int | None, n: int, assumed_fraction: float) -> int:
    if expected_poisons is not None:
        if expected_poisons < 0:
            raise ValueError(f"expected_poisons must be >= 0, got {expected_poisons}")
        return int(expected_poisons)
    return int(np.ceil(assumed_fraction * n))


# ---------------------------------------------------------------------------------------------------
# Filter defenses


class SpectralSignatures(Defense):
    """Spectral signatures (Tran, Li and Madry, NeurIPS 2018).

    Poisons that a model has learned to map to a class leave a trace along the top singular direction of
    that class's centred feature matrix. For every class: centre its penultimate features, score each
    image by its squared projection on the top right singular vector, and remove the
    ``overestimation * expected_poisons`` highest scores (at most half the class).

    Args:
        overestimation: Multiple of the expected poison count removed per class (1.5 in the paper).
        assumed_fraction: Poison share of the training set assumed when ``expected_poisons`` is None.
    """

    name = "spectral"
    stage = "filter"

    def __init__(self, overestimation: float = 1.5, assumed_fraction: float = 0.01) -> None:
        if overestimation <= 0:
            raise ValueError(f"overestimation must be > 0, got {overestimation}")
        self.overestimation = overestimation
        self.assumed_fraction = assumed_fraction

    def scores(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Outlier score of every image within its class (larger = more suspicious)."""
        scores = np.zeros(len(features))
        for cls in np.unique(labels):
            idx = np.flatnonzero(labels == cls)
            if len(idx) < 2:
                continue
            centred = features[idx] - features[idx].mean(axis=0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            scores[idx] = (centred @ vt[0]) ** 2
        return scores

    def select_removals(self, x, y, model=None, *, expected_poisons=None, features=None):
        feats = _features_for(x, model, features, self.name)
        labels = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
        scores = self.scores(feats, labels)
        per_class = int(np.ceil(self.overestimation * _expected(expected_poisons, len(x), self.assumed_fraction)))
        removed: list[np.ndarray] = []
        for cls in np.unique(labels):
            idx = np.flatnonzero(labels == cls)
            k = min(per_class, len(idx) // 2)
            if k > 0:
                removed.append(idx[np.argsort(-scores[idx], kind="stable")[:k]])
        return np.unique(np.concatenate(removed)).astype(np.int64) if removed else np.zeros(0, np.int64)


class ActivationClustering(Defense):
    """Activation clustering (Chen et al., 2018).

    For every class: reduce its penultimate features to ``n_components`` dimensions (PCA or ICA),
    split them into two clusters with k-means, and flag the smaller cluster when it holds at most
    ``max_cluster_share`` of the class -- a clean class tends to split evenly, a poisoned one into a
    large clean cluster and a small poison cluster.

    Args:
        n_components: Dimensions kept before clustering (10 in the paper).
        reduction: ``"pca"`` or ``"ica"``.
        max_cluster_share: Largest relative size of a cluster that is still flagged.
        seed: Seed of the reduction and of k-means.
    """

    name = "activation_clustering"
    stage = "filter"

    def __init__(self, n_components: int = 10, reduction: str = "pca", max_cluster_share: float = 0.35,
                 seed: int = 0) -> None:
        if reduction not in ("pca", "ica"):
            raise ValueError(f"reduction must be 'pca' or 'ica', got {reduction!r}")
        if not 0 < max_cluster_share <= 0.5:
            raise ValueError(f"max_cluster_share must be in (0, 0.5], got {max_cluster_share}")
        self.n_components = n_components
        self.reduction = reduction
        self.max_cluster_share = max_cluster_share
        self.seed = seed

    def _reduce(self, feats: np.ndarray) -> np.ndarray:
        from sklearn.decomposition import PCA, FastICA

        k = max(1, min(self.n_components, feats.shape[0] - 1, feats.shape[1]))
        if self.reduction == "ica":
            return FastICA(n_components=k, whiten="unit-variance", random_state=self.seed, max_iter=1000, tol=1e-3).fit_transform(feats)
        return PCA(n_components=k, random_state=self.seed).fit_transform(feats)

    def select_removals(self, x, y, model=None, *, expected_poisons=None, features=None):
        from sklearn.cluster import KMeans

        feats = _features_for(x, model, features, self.name)
        labels = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
        removed: list[np.ndarray] = []
        for cls in np.unique(labels):
            idx = np.flatnonzero(labels == cls)
            if len(idx) < 4:
                continue
            reduced = self._reduce(feats[idx] - feats[idx].mean(axis=0))
            assignment = KMeans(n_clusters=2, n_init=10, random_state=self.seed).fit_predict(reduced)
            sizes = np.bincount(assignment, minlength=2)
            small = int(np.argmin(sizes))
            if sizes[small] / len(idx) <= self.max_cluster_share:
                removed.append(idx[assignment == small])
        return np.unique(np.concatenate(removed)).astype(np.int64) if removed else np.zeros(0, np.int64)


# ---------------------------------------------------------------------------------------------------
# Training-time defenses


class GradientClippingNoise(Defense):
    """DP-SGD-style training: clip the mini-batch gradient and add Gaussian noise.

    As in the Sleeper Agent reference code the clipping is per mini-batch, not per example: after each
    backward pass the gradient of all parameters together is scaled to an l2 norm of at most
    ``clip_norm``, then Gaussian noise of standard deviation ``noise_multiplier * clip_norm / sqrt(B)``
    (``B`` the batch size) is added to every entry. It bounds how far any one batch -- poisoned or
    not -- can move the weights, which blunts gradient-matching poisons at some cost in clean accuracy.
    Per-example clipping would give a formal differential-privacy guarantee but costs one backward pass
    per example.

    Args:
        clip_norm: Largest l2 norm of the clipped mini-batch gradient.
        noise_multiplier: Noise scale relative to ``clip_norm`` (see above).
    """

    name = "dp_sgd"
    stage = "training"

    def __init__(self, clip_norm: float = 1.0, noise_multiplier: float = 0.01) -> None:
        if clip_norm <= 0:
            raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
        if noise_multiplier < 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
        self.clip_norm = clip_norm
        self.noise_multiplier = noise_multiplier

    def adjust_recipe(self, recipe, image_size=None):
        return recipe.replace(grad_clip=self.clip_norm, grad_noise=self.noise_multiplier)


class Mixup(Defense):
    """Mixup (Zhang et al., ICLR 2018) as a poisoning defense (Borgnia et al., ICASSP 2021).

    Each mini-batch is blended with a shuffled copy of itself, ``lam * x_i + (1 - lam) * x_j`` with
    ``lam ~ Beta(alpha, alpha)``, and the loss is blended the same way between the two labels; a
    perturbation tied to one image is diluted by its partner.
    """

    name = "mixup"
    stage = "training"

    def __init__(self, alpha: float = 1.0) -> None:
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha = alpha

    def adjust_recipe(self, recipe, image_size=None):
        return recipe.replace(mixup_alpha=self.alpha)


class Cutout(Defense):
    """Cutout (DeVries and Taylor, 2017): zero one random square of every training image (it may hang
    over the border), so a small trigger or perturbation is often erased.

    Args:
        size: Side of the square in pixels; None means half the image side (16 on CIFAR-10, as in the
            paper; 4 when the image size is unknown).
    """

    name = "cutout"
    stage = "training"

    def __init__(self, size: int | None = None) -> None:
        if size is not None and size < 1:
            raise ValueError(f"size must be >= 1 pixel, got {size}")
        self.size = size

    def adjust_recipe(self, recipe, image_size=None):
        size = self.size or (max(1, image_size // 2) if image_size else 4)
        return recipe.replace(cutout=size)


# ---------------------------------------------------------------------------------------------------
# Inference-time defense


class Strip(Defense):
    """STRIP (Gao et al., ACSAC 2019): a trojaned input keeps its (target) prediction when it is
    superimposed on unrelated clean images, so its predictions have low entropy; a clean input's do not.

    Each input is superimposed on ``n_overlays`` clean images,
    ``clip(input_weight * input + overlay_weight * clean, 0, 1)``, and scored by the mean entropy of the
    model's softmax over the superimposed images. The default weights (1, 1) add the two images and clip,
    as the reference code does (``cv2.addWeighted(background, 1, overlay, 1, 0)`` on 8-bit images): a
    full-contrast patch survives the overlay intact. A convex blend (weights 0.5, 0.5) halves the patch's
    contrast, and a victim that learned the full-contrast patch (BadNets) no longer answers to it, so
    its blends look as uncertain as a clean input's.

    The detection threshold is the ``false_rejection_rate`` quantile of the scores of held-out clean
    inputs (each superimposed on other clean images), so that share of clean inputs is wrongly flagged --
    the paper fixes this rate (1%) and reports the false acceptance rate (trojaned inputs let through)
    that results.

    Args:
        n_overlays: Clean images superimposed on each input (the paper uses 100).
        input_weight: Weight of the input in each superimposed image.
        overlay_weight: Weight of the clean overlay.
        false_rejection_rate: Share of clean inputs the threshold may flag.
        seed: Seed of the overlay draw.
    """

    name = "strip"
    stage = "inference"

    def __init__(self, n_overlays: int = 32, input_weight: float = 1.0, overlay_weight: float = 1.0,
                 false_rejection_rate: float = 0.05, seed: int = 0) -> None:
        if n_overlays < 1:
            raise ValueError(f"n_overlays must be >= 1, got {n_overlays}")
        for label, weight in (("input_weight", input_weight), ("overlay_weight", overlay_weight)):
            if not 0 < weight <= 1:
                raise ValueError(f"{label} must be in (0, 1], got {weight}")
        if not 0 <= false_rejection_rate < 1:
            raise ValueError(f"false_rejection_rate must be in [0, 1), got {false_rejection_rate}")
        self.n_overlays = n_overlays
        self.input_weight = input_weight
        self.overlay_weight = overlay_weight
        self.false_rejection_rate = false_rejection_rate
        self.seed = seed
        self.threshold_: float | None = None

    def superimpose(self, inputs: torch.Tensor, overlays: torch.Tensor) -> torch.Tensor:
        """``inputs`` superimposed on ``overlays`` (broadcast), clipped to valid pixels."""
        return (self.input_weight * inputs + self.overlay_weight * overlays).clamp(0.0, 1.0)

    def entropies(self, model: nn.Module, inputs: torch.Tensor, overlays: torch.Tensor, *,
                  exclude_self: bool = False, batch_size: int = 1024) -> np.ndarray:
        """Mean prediction entropy (nats) of each input over its superimpositions on randomly drawn
        overlays; ``exclude_self`` (inputs and overlays are the same images) never draws an input's own
        image."""
        if len(overlays) < 1 + int(exclude_self):
            raise ValueError("STRIP needs at least two clean images to superimpose on")
        gen = torch.Generator().manual_seed(self.seed)
        picks = torch.randint(0, len(overlays) - int(exclude_self), (len(inputs), self.n_overlays), generator=gen)
        if exclude_self:  # skip the input's own index: shift picks at or above it by one
            picks = picks + (picks >= torch.arange(len(inputs)).unsqueeze(1)).long()
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        per_chunk = max(1, batch_size // self.n_overlays)
        out = np.zeros(len(inputs))
        try:
            with torch.no_grad():
                for start in range(0, len(inputs), per_chunk):
                    chunk = inputs[start:start + per_chunk].unsqueeze(1)      # (b, 1, C, H, W)
                    images = self.superimpose(chunk, overlays[picks[start:start + per_chunk]]).flatten(0, 1)
                    probs = torch.softmax(model(images.to(device)).float(), dim=1)
                    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=1)
                    out[start:start + len(chunk)] = entropy.view(len(chunk), self.n_overlays).mean(dim=1).cpu().numpy()
        finally:
            model.train(was_training)
        return out

    def calibrate(self, model: nn.Module, clean_inputs: torch.Tensor) -> float:
        """Set and return the entropy threshold from held-out clean inputs."""
        clean_scores = self.entropies(model, clean_inputs, clean_inputs, exclude_self=True)
        self.threshold_ = float(np.quantile(clean_scores, self.false_rejection_rate))
        return self.threshold_

    def detect(self, model: nn.Module, inputs: torch.Tensor, clean_inputs: torch.Tensor) -> np.ndarray:
        """True where an input's entropy falls below the threshold calibrated on ``clean_inputs``
        (which also serve as the overlay pool)."""
        threshold = self.calibrate(model, clean_inputs)
        return self.entropies(model, inputs, clean_inputs) < threshold


# ---------------------------------------------------------------------------------------------------
# Playing the defender in poisoning_v0


def defense_action(indices: np.ndarray | list[int], num_train: int) -> dict[str, np.ndarray]:
    """The ``poisoning_v0`` defender action removing ``indices``: ``{"remove": int8 mask (num_train,)}``."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(indices) and (indices.min() < 0 or indices.max() >= num_train):
        raise ValueError(f"removal indices must lie in [0, {num_train - 1}]")
    mask = np.zeros(num_train, dtype=np.int8)
    mask[indices] = 1
    return {"remove": mask}


def defender_action(defense: Defense, observation: dict[str, Any], *, make_model: Callable[[], nn.Module],
                    recipe, seed: int = 0, device: str = "auto") -> dict[str, np.ndarray]:
    """The defender's move in ``poisoning_v0`` for ``defense``.

    A filter defense trains ``make_model()`` from scratch on the training set it observes (the same
    recipe the victim will get), reads its penultimate features and removes what
    :meth:`Defense.select_removals` flags, assuming ``observation["max_poisons"]`` poisons. Other
    defenses remove nothing here (training-time defenses act through the env's ``training_defense``).
    """
    from parley.attacks.victims import train_model

    x = torch.as_tensor(observation["x_train"])
    y = torch.as_tensor(observation["y_train"])
    if defense.stage != "filter":
        return defense_action([], len(x))
    model = train_model(make_model(), x, y, recipe, device=device, seed=seed)
    removals = defense.select_removals(x, y, model, expected_poisons=int(observation["max_poisons"]))
    return defense_action(removals, len(x))


DEFENSES: dict[str, type[Defense]] = {
    cls.name: cls
    for cls in (NoDefense, SpectralSignatures, ActivationClustering, GradientClippingNoise, Mixup, Cutout, Strip)
}


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
