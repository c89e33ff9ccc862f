"""Small utilities shared across parley: device choice, seeding, lazy package exports, moved-module aliases."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import random
import sys
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


class _ModuleAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import finder that answers an old module path with the module now at its new path."""

    def __init__(self, aliases: dict[str, str]) -> None:
        self.aliases = aliases

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in self.aliases:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default empty module; exec_module swaps in the real one

    def exec_module(self, module: Any) -> None:
        # The import system returns whatever sys.modules holds under the name once exec_module returns,
        # so the old name resolves to the very module object at the new path (same classes, same state).
        sys.modules[module.__name__] = importlib.import_module(self.aliases[module.__name__])


def alias_modules(aliases: dict[str, str]) -> None:
    """Make each old module path in ``aliases`` import the module at its new path.

    Used for modules that moved inside a package, so code and pickles that name the old path (saved
    checkpoints record their classes' modules) keep working. Safe to call more than once.
    """
    for finder in sys.meta_path:
        if isinstance(finder, _ModuleAlias):
            finder.aliases.update(aliases)
            return
    sys.meta_path.append(_ModuleAlias(dict(aliases)))
