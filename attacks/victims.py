"""Victim models and their training from scratch.

Victims
-------
``small_cnn``    three conv blocks (BatchNorm, ReLU), global average pooling, a linear head; ``width``
                 sets the first block's channels (default 32). Seconds per epoch on CPU for digits.
``resnet18``     a CIFAR-style ResNet-18 (3x3 stem, four stages of two basic blocks, strides 1/2/2/2);
                 ``width`` is the first stage's channels (64 in the paper; 16 makes a fast variant).
``invertible``   :class:`parley.agents.nn.invertible.InvertibleImageClassifier` (invertible attention
                 blocks over image patches), registered when that module is importable.

Every victim maps ``(N, C, H, W)`` images in [0, 1] to logits and exposes ``features(x)`` (the
penultimate representation) for feature-space attacks and defenses. ``make_victim(name, dataset)`` builds
one; :data:`VICTIMS` maps names to factories ``factory(in_channels, num_classes, image_size, **kwargs)``.

Training
--------
:class:`TrainingRecipe` holds the schedule (SGD with Nesterov momentum, step-wise lr drops, weight decay,
random-crop and flip augmentation, and the hooks training-time defenses use: gradient clipping and
noise, mixup, cutout). ``train_victim(dataset, model, recipe, device="auto")`` trains from scratch on the
dataset's training split; :func:`evaluate` and :func:`predict` read the test split.

>>> model = make_victim("small_cnn", ds)
>>> train_victim(ds, model, TrainingRecipe.for_dataset(ds))
>>> evaluate(model, ds.x_test, ds.y_test)
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from parley.utils import resolve_device

__all__ = [
    "SmallCNN",
    "ResNet18",
    "VICTIMS",
    "available_victims",
    "make_victim",
    "TrainingRecipe",
    "augment",
    "train_model",
    "train_victim",
    "predict",
    "evaluate",
]


class SmallCNN(nn.Module):
    """Three 3x3 conv blocks (width, 2*width, 4*width), max-pooling after the first two, global average
    pooling, linear head."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int = 32, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        pool = (lambda: nn.MaxPool2d(2)) if image_size >= 8 else nn.Identity
        self.body = nn.Sequential(block(in_channels, width), pool(), block(width, 2 * width), pool(),
                                  block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * width, num_classes)
        self.feature_dim = 4 * width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for small images (He et al. 2016, CIFAR variant): 3x3 stem without max-pooling, stages
    of (width, 2w, 4w, 8w) channels with two basic blocks each, global average pooling, linear head."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int = 32, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        layers, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2 ** i
            # Tiny images cannot be halved four times; later stages keep the resolution instead.
            stride = stride if image_size // (2 ** i) >= 2 else 1
            layers += [_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, num_classes)
        self.feature_dim = cin

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layers(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _make_invertible(in_channels: int, num_classes: int, image_size: int, **kwargs) -> nn.Module:
    module = importlib.import_module("parley.agents.nn.invertible")
    cls = module.InvertibleImageClassifier
    try:
        return cls(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)
    except TypeError as exc:
        raise TypeError(f"InvertibleImageClassifier rejected in_channels/num_classes/image_size/{sorted(kwargs)}: "
                        f"{exc}") from exc


#: Victim factories: ``factory(in_channels, num_classes, image_size, **kwargs) -> nn.Module``.
VICTIMS: dict[str, Callable[..., nn.Module]] = {"small_cnn": SmallCNN, "resnet18": ResNet18}


def _register_optional_victims() -> None:
    if "invertible" in VICTIMS:
        return
    try:
        module = importlib.import_module("parley.agents.nn.invertible")
    except ImportError:
        return
    if hasattr(module, "InvertibleImageClassifier"):
        VICTIMS["invertible"] = _make_invertible


def available_victims() -> list[str]:
    """Names accepted by :func:`make_victim` on this installation."""
    _register_optional_victims()
    return list(VICTIMS)


def make_victim(name: str, dataset=None, *, shape: tuple[int, int, int] | None = None,
                num_classes: int | None = None, **kwargs) -> nn.Module:
    """Build a freshly initialised victim for ``dataset`` (or for an explicit ``shape`` and ``num_classes``)."""
    _register_optional_victims()
    if name not in VICTIMS:
        hint = " ('invertible' needs parley.agents.nn.invertible)" if name == "invertible" else ""
        raise ValueError(f"unknown victim {name!r}; available: {', '.join(VICTIMS)}{hint}")
    if dataset is not None:
        shape, num_classes = dataset.shape, dataset.num_classes
    if shape is None or num_classes is None:
        raise ValueError("make_victim needs a dataset or both shape=(C, H, W) and num_classes")
    channels, height, _ = shape
    return VICTIMS[name](channels, num_classes, image_size=height, **kwargs)


@dataclass
class TrainingRecipe:
    """How a victim (or an attacker's surrogate) is trained from scratch.

    The defaults are the CIFAR-10 ResNet-18 schedule used by Sleeper Agent (Souri et al. 2022): SGD with
    Nesterov momentum 0.9, lr 0.1 dropped x0.1 at epochs 14, 25 and 35 of 40, weight decay 5e-4, batch
    128, random crop (4-pixel zero padding) and horizontal flips.

    :param epochs: training epochs.
    :param lr: initial learning rate.
    :param milestones: epochs after which the lr is multiplied by ``gamma``.
    :param gamma: lr drop factor.
    :param momentum: SGD momentum (Nesterov when ``nesterov``).
    :param weight_decay: L2 penalty.
    :param batch_size: mini-batch size.
    :param crop_padding: random-crop translation in pixels (0 disables).
    :param flip: random horizontal flips (off for digits, whose mirror images are other shapes).
    :param grad_clip: clip the mini-batch gradient to this L2 norm (DP-SGD-style defense); None disables.
    :param grad_noise: std of Gaussian noise added to the clipped gradient, relative to ``grad_clip``.
    :param mixup_alpha: Beta(alpha, alpha) mixup of images and labels (0 disables).
    :param cutout: side of a square zeroed at a random place in every image (0 disables).
    """

    epochs: int = 40
    lr: float = 0.1
    milestones: tuple[int, ...] = (14, 25, 35)
    gamma: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    batch_size: int = 128
    crop_padding: int = 4
    flip: bool = True
    grad_clip: float | None = None
    grad_noise: float = 0.0
    mixup_alpha: float = 0.0
    cutout: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("TrainingRecipe needs epochs >= 1, batch_size >= 1 and lr > 0")
        self.milestones = tuple(int(m) for m in self.milestones)

    @classmethod
    def paper_cifar10(cls) -> TrainingRecipe:
        """Sleeper Agent's ResNet-18 schedule on CIFAR-10 (40 epochs)."""
        return cls()

    @classmethod
    def for_dataset(cls, dataset) -> TrainingRecipe:
        """A scaled default: the paper's schedule on 32x32 colour images; a short one on small grey digits."""
        channels, height, _ = dataset.shape
        if height >= 32 and channels == 3:
            return cls()
        padding = 1 if height <= 8 else 2
        return cls(epochs=15, lr=0.05, milestones=(8, 12), batch_size=64, crop_padding=padding, flip=False)

    @classmethod
    def tiny(cls, dataset=None) -> TrainingRecipe:
        """Two epochs: for tests and smoke runs only."""
        padding = 1 if dataset is None or dataset.shape[1] <= 8 else 2
        return cls(epochs=2, lr=0.05, milestones=(), batch_size=64, crop_padding=padding, flip=False)

    def replace(self, **changes) -> TrainingRecipe:
        """A copy with some fields changed (unknown names raise)."""
        return dataclasses.replace(self, **changes)

    def scaled(self, epochs: int) -> TrainingRecipe:
        """The same schedule stretched or squeezed to ``epochs``, milestones moved proportionally."""
        ms = tuple(sorted({max(1, int(round(m * epochs / self.epochs))) for m in self.milestones if m < self.epochs}))
        return dataclasses.replace(self, epochs=epochs, milestones=ms)


def augment(x: torch.Tensor, crop_padding: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random translation by up to ``crop_padding`` pixels (zero fill) and random horizontal flips.

    Written with ``grid_sample`` at whole-pixel offsets, so it equals pad-and-crop exactly and is
    differentiable in ``x`` -- the same code augments training batches and poisons during crafting.
    """
    if crop_padding <= 0 and not flip:
        return x
    n, _, h, w = x.shape
    device = x.device
    shifts = torch.randint(-crop_padding, crop_padding + 1, (n, 2), generator=generator).to(device, x.dtype) \
        if crop_padding > 0 else torch.zeros(n, 2, device=device, dtype=x.dtype)
    sign = torch.ones(n, device=device, dtype=x.dtype)
    if flip:
        sign = torch.where(torch.rand(n, generator=generator).to(device) < 0.5, -sign, sign)
    theta = torch.zeros(n, 2, 3, device=device, dtype=x.dtype)
    theta[:, 0, 0] = sign
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = sign * 2.0 * shifts[:, 1] / w  # flip first, then shift
    theta[:, 1, 2] = 2.0 * shifts[:, 0] / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    rows = torch.randint(0, h, (n,), generator=generator)
    cols = torch.randint(0, w, (n,), generator=generator)
    yy = torch.arange(h).view(1, h, 1)
    xx = torch.arange(w).view(1, 1, w)
    inside = ((yy - rows.view(n, 1, 1)).abs() <= size // 2) & ((xx - cols.view(n, 1, 1)).abs() <= size // 2)
    return x * (~inside).unsqueeze(1).to(x.device, x.dtype)


def train_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: TrainingRecipe, device: str = "auto",
                seed: int | None = None,
                on_epoch_end: Callable[[int, nn.Module], None] | None = None) -> nn.Module:
    """Train ``model`` on ``(x, y)`` following ``recipe``; returns it in eval mode on ``device``.

    ``on_epoch_end(epoch, model)`` (epochs counted from 1), when given, is called after every epoch, with
    the model still in training mode; it must not change the model.
    """
    device = resolve_device(device)
    generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                nesterov=recipe.nesterov and recipe.momentum > 0, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(recipe.milestones), gamma=recipe.gamma)
    x, y = x.to(device), y.to(device)
    n = len(x)
    model.train()
    for epoch in range(recipe.epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, recipe.batch_size):
            idx = order[start:start + recipe.batch_size]
            if len(idx) < 2:  # BatchNorm cannot normalise a single image
                continue
            xb = augment(x[idx], recipe.crop_padding, recipe.flip, generator)
            yb = y[idx]
            if recipe.cutout > 0:
                xb = _cutout(xb, recipe.cutout, generator)
            if recipe.mixup_alpha > 0:
                lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=generator))).beta(
                    recipe.mixup_alpha, recipe.mixup_alpha))
                perm = torch.randperm(len(idx), generator=generator).to(device)
                logits = model(lam * xb + (1 - lam) * xb[perm])
                loss = lam * F.cross_entropy(logits, yb) + (1 - lam) * F.cross_entropy(logits, yb[perm])
            else:
                loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                if recipe.grad_noise > 0:
                    for p in model.parameters():
                        if p.grad is not None:
                            noise = torch.randn(p.grad.shape, generator=generator).to(device)
                            p.grad.add_(noise * recipe.grad_noise * recipe.grad_clip / math.sqrt(len(idx)))
            optimizer.step()
        scheduler.step()
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, model)
    model.eval()
    return model


def train_victim(dataset, model: nn.Module | str, recipe: TrainingRecipe | None = None, device: str = "auto",
                 seed: int | None = None) -> nn.Module:
    """Train a victim from scratch on ``dataset``'s training split.

    :param dataset: an :class:`~parley.attacks.datasets.ImageDataset` (poisoned or clean).
    :param model: a freshly initialised network, or a victim name for :func:`make_victim`.
    :param recipe: the schedule; ``TrainingRecipe.for_dataset(dataset)`` when None.
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    :param seed: seeds batch order and augmentation (weights are initialised by the caller).
    :returns: the trained model, in eval mode.
    """
    if isinstance(model, str):
        model = make_victim(model, dataset)
    recipe = recipe or TrainingRecipe.for_dataset(dataset)
    return train_model(model, dataset.x_train, dataset.y_train, recipe, device=device, seed=seed)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: str = "auto", batch_size: int = 512) -> np.ndarray:
    """Predicted class per image, as an int64 numpy array."""
    device = resolve_device(device)
    model = model.to(device).eval()
    out = [model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str = "auto") -> float:
    """Accuracy of ``model`` on ``(x, y)``."""
    if len(x) == 0:
        return float("nan")
    return float((predict(model, x, device) == np.asarray(y)).mean())
