"""Small utilities shared across parley: device choice, seeding, lazy package exports."""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from typing import Any

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


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a module path) only when ``name`` is used.

    Lets a package list its public names without importing heavy dependencies (torch, FastAPI) when
    only part of it is needed.
    """

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
