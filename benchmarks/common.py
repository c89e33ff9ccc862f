"""Helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, which puts this folder
on the import path): the machine line and the appending of a RESULTS.md section, best-of-N timing."""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine(extra: str = "") -> str:
    """Architecture, OS, CPU cores, memory, ``extra``, and the load average when the run started."""
    memory = ""
    try:
        with open("/proc/meminfo") as handle:
            kib = int(next(line for line in handle if line.startswith("MemTotal")).split()[1])
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    load = f", load average {os.getloadavg()[0]:.1f} at the start" if hasattr(os, "getloadavg") else ""
    return f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores{memory}, no GPU used{extra}{load}"


def best_time(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones, in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def append_results(title: str, where: str, note: str, table: str) -> None:
    """Append a dated section -- the exact command, the machine, a note, the table -- to RESULTS.md."""
    command = "python benchmarks/" + " ".join([Path(sys.argv[0]).name, *(shlex.quote(a) for a in sys.argv[1:])])
    section = (f"\n## {title} ({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
               f"Command: `{command}`  \nMachine: {where}  \n{note}\n\n{table}\n")
    with RESULTS.open("a") as handle:
        handle.write(section)
    print(f"appended to {RESULTS}")


def parse_overrides(text: str, config_class: type, option: str) -> dict:
    """``"field=value,field=value"`` -> ``{field: value}`` for fields of the dataclass ``config_class``.

    Values are Python literals; commas inside brackets belong to a tuple value, as in
    ``lr_drops=(0.6,0.8,0.88)``. A wrong field or value exits with a message naming ``option``.
    """
    fields = {f.name for f in dataclasses.fields(config_class)}
    overrides = {}
    for assignment in filter(None, (a.strip() for a in re.split(r",(?![^()]*\))", text))):
        key, sep, value = assignment.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise SystemExit(f"{option}: {assignment!r} must be field=value with a {config_class.__name__} field "
                             f"({', '.join(sorted(fields))})")
        try:
            overrides[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise SystemExit(f"{option}: the value in {assignment!r} must be a Python literal") from None
    return overrides
