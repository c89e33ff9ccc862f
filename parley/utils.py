"""Small utilities shared across parley: device choice and seeding."""

from __future__ import annotations

import random

import numpy as np

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> str:
    """Return a torch device string for ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    ``"auto"`` picks CUDA when a GPU is visible, else CPU. Asking for CUDA without one is an error.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but no CUDA device is available; use 'auto' or 'cpu'")
        return device
    raise ValueError(f"unknown device {device!r}; use one of {', '.join(DEVICES)} (or 'cuda:N')")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, numpy and torch (if installed); return a numpy generator on that seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass
    return np.random.default_rng(seed)
