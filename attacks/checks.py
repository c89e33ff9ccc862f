"""Argument checks shared by the attack configs, the poisoning env and the benchmark.

Every public entry point checks what it is given when it is given, so a wrong type or value fails at
once with a message naming what is allowed, instead of deep inside a victim's training.

:func:`check_dataclass_types` checks every field of a config dataclass against its annotation (``int``,
``float``, ``bool``, ``str``, ``tuple[X, ...]``, ``X | None`` and classes); the range helpers check
values.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from collections.abc import Iterable
from typing import Any

__all__ = ["check_dataclass_types", "check_type", "require_choice", "require_range", "type_name"]


def type_name(annotation: Any) -> str:
    """A readable name for a type annotation (``int``, ``tuple of float``, ``int or None``)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is tuple:
        args = typing.get_args(annotation)
        return f"tuple of {type_name(args[0])}" if args else "tuple"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _convert(value: Any, annotation: Any) -> tuple[bool, Any]:
    """(matches, value converted to the annotation's canonical form)."""
    if annotation is Any:
        return True, value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            ok, converted = _convert(value, option)
            if ok:
                return True, converted
        return False, value
    if annotation is type(None):
        return value is None, value
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            return False, value
        args = typing.get_args(annotation)
        item_type = args[0] if args else Any
        out = []
        for item in value:
            ok, converted = _convert(item, item_type)
            if not ok:
                return False, value
            out.append(converted)
        return True, tuple(out)
    if origin is dict or annotation is dict:
        return isinstance(value, dict), value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return ok, int(value) if ok else value
    if annotation is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if isinstance(annotation, type):
        return isinstance(value, annotation), value
    return True, value  # an annotation this checker does not model: accept


def check_type(owner: str, name: str, value: Any, annotation: Any) -> Any:
    """Return ``value`` converted to ``annotation`` (ints accepted as floats, lists as tuples), or raise
    ``TypeError`` naming the expected type."""
    ok, converted = _convert(value, annotation)
    if not ok:
        raise TypeError(f"{owner}.{name} must be {type_name(annotation)}, got {value!r} "
                        f"({type(value).__name__})")
    return converted


def check_dataclass_types(obj: Any) -> None:
    """Check (and normalise in place) every field of the dataclass instance ``obj`` against its annotation."""
    cls = type(obj)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        object.__setattr__(obj, field.name, check_type(cls.__name__, field.name, value, hints[field.name]))


def require_range(owner: str, name: str, value: float, low: float | None = None, high: float | None = None, *,
                  low_open: bool = False, high_open: bool = False) -> None:
    """Raise ``ValueError`` unless ``low <= value <= high`` (strict where ``*_open``)."""
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if high is None:
            bound = f"be {'>' if low_open else '>='} {low}"
        elif low is None:
            bound = f"be {'<' if high_open else '<='} {high}"
        else:
            bound = f"lie in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{owner}.{name} must {bound}, got {value}")


def require_choice(owner: str, name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{owner}.{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
