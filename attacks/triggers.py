"""Patch triggers: a small seeded pattern pasted onto images at a fixed or random location.

Sleeper Agent and Hidden Trigger Backdoor use a square patch (8x8 on 32x32 CIFAR-10, i.e. a quarter of
the side) pasted at a random location of each test image; :func:`default_patch_size` keeps that ratio
with a floor of 3 pixels so the pattern stays visible on 8x8 digits.

>>> trig = make_trigger(channels=1, size=3, seed=0)
>>> patched = trig.apply(images, seed=1)           # random location per image, reproducible
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Trigger", "make_trigger", "default_patch_size", "PLACEMENTS"]

PLACEMENTS = ("random", "fixed")


def default_patch_size(image_size: int) -> int:
    """A quarter of the image side (8 on 32x32, 7 on 28x28), at least 3 pixels."""
    return max(3, int(round(image_size / 4)))


@dataclass
class Trigger:
    """A patch trigger.

    :param patch: float32 array ``(C, p, p)`` with values in [0, 1].
    :param placement: ``"random"`` (a fresh location per image, drawn from the seed given to
        :meth:`apply`) or ``"fixed"`` (always at ``location``).
    :param location: top-left ``(row, col)`` used by fixed placement; default is the bottom-right corner.
    """

    patch: np.ndarray
    placement: str = "random"
    location: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.patch = np.asarray(self.patch, dtype=np.float32)
        if self.patch.ndim != 3 or self.patch.shape[1] != self.patch.shape[2]:
            raise ValueError(f"patch must be a square (C, p, p) array, got shape {self.patch.shape}")
        if self.patch.min() < 0 or self.patch.max() > 1:
            raise ValueError("patch values must lie in [0, 1]")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")

    @property
    def size(self) -> int:
        return int(self.patch.shape[1])

    def locations(self, n: int, height: int, width: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """Top-left corners ``(n, 2)`` where the patch lands; the patch always lies fully inside the image."""
        p = self.size
        if p > height or p > width:
            raise ValueError(f"a {p}x{p} patch does not fit into {height}x{width} images")
        if self.placement == "fixed":
            row, col = self.location if self.location is not None else (height - p, width - p)
            if not (0 <= row <= height - p and 0 <= col <= width - p):
                raise ValueError(f"fixed location {(row, col)} puts the {p}x{p} patch outside {height}x{width}")
            return np.tile(np.array([[row, col]], dtype=np.int64), (n, 1))
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        rows = rng.integers(0, height - p + 1, size=n)
        cols = rng.integers(0, width - p + 1, size=n)
        return np.stack([rows, cols], axis=1).astype(np.int64)

    def apply(self, images: torch.Tensor, seed: int | np.random.Generator | None = None,
              locations: np.ndarray | None = None) -> torch.Tensor:
        """Return a copy of ``images`` ``(N, C, H, W)`` with the patch pasted in (replacing the pixels)."""
        if images.ndim != 4 or images.shape[1] != self.patch.shape[0]:
            raise ValueError(f"images must be (N, {self.patch.shape[0]}, H, W); got {tuple(images.shape)}")
        n, _, h, w = images.shape
        locs = self.locations(n, h, w, seed) if locations is None else np.asarray(locations)
        out = images.clone()
        patch = torch.as_tensor(self.patch, dtype=images.dtype, device=images.device)
        p = self.size
        for i, (r, c) in enumerate(locs):
            out[i, :, r:r + p, c:c + p] = patch
        return out


def make_trigger(channels: int, size: int, seed: int = 0, placement: str = "random",
                 location: tuple[int, int] | None = None) -> Trigger:
    """A seeded high-contrast random patch: each pixel (and channel) is 0 or 1.

    A binary pattern keeps the trigger distinct from natural strokes and textures; the Hidden Trigger
    Backdoor patch used by Sleeper Agent is likewise a random colour pattern.
    """
    if size < 1:
        raise ValueError(f"patch size must be >= 1, got {size}")
    rng = np.random.default_rng(seed)
    patch = rng.integers(0, 2, size=(channels, size, size)).astype(np.float32)
    if patch.min() == patch.max():  # an all-black or all-white draw would be a poor trigger
        patch[:, ::2, ::2] = 1.0 - patch[:, ::2, ::2]
    return Trigger(patch, placement=placement, location=location)
