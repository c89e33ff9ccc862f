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


#: The number formats the forward and backward passes of a training update may run in.
PRECISIONS = ("auto", "float32", "bfloat16")
#: What :func:`resolve_precision` returns: the formats a training update is set up with.
RESOLVED_PRECISIONS = ("float32", "bfloat16")


def resolve_precision(precision: str = "auto", device: str = "cpu") -> str:
    """Return ``"float32"`` or ``"bfloat16"``: the format a training update's matrix products run in.

    ``"auto"`` picks bfloat16 where the hardware multiplies it natively (a CPU with AMX tiles or AVX-512
    bfloat16 instructions, a CUDA GPU that supports it), else float32. Losses, log-probabilities and the
    optimizer's state stay float32 either way; acting is always float32.
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if str(device).startswith("cuda"):
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    cpu = getattr(torch, "cpu", None)
    native = any(getattr(cpu, probe, lambda: False)() for probe in ("_is_amx_tile_supported",
                                                                     "_is_avx512_bf16_supported"))
    return "bfloat16" if native else "float32"


def training_autocast(precision: str, device: str = "cpu"):
    """A context in which a training forward pass runs its matrix products in ``precision`` (a resolved
    precision: ``"float32"`` or ``"bfloat16"``)."""
    import torch

    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


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
