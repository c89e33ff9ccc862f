"""Helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, which puts this folder
on the import path): the machine line, writing a benchmark's section of RESULTS.md, best-of-N timing."""

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


# A section heading is "## Title (YYYY-MM-DD HH:MM UTC)"; the title alone names the benchmark.
_HEADING_DATE = re.compile(r" \(\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\)\s*$")


def section_title(heading: str) -> str:
    """The title of a ``## Title (date)`` heading line, without the ``## `` and the date."""
    return _HEADING_DATE.sub("", heading[3:]).strip()


def replace_section(text: str, title: str, section: str) -> str:
    """``text`` (a RESULTS.md) with every section titled ``title`` replaced by ``section``, in the place
    of the first one; ``section`` is appended when no section has that title. A section runs from its
    ``## `` heading to the next ``## `` heading or the end."""
    if not section.startswith("## ") or section_title(section.split("\n", 1)[0]) != title:
        raise ValueError(f"section must start with a '## {title}' heading; got {section[:60]!r}")
    lines = text.rstrip("\n").split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")] + [len(lines)]
    kept, placed = lines[:starts[0]], False
    for begin, end in zip(starts, starts[1:]):
        if section_title(lines[begin]) != title:
            kept += lines[begin:end]
        elif not placed:
            kept += section.rstrip("\n").split("\n") + [""]
            placed = True
    if not placed:
        kept += ["", *section.rstrip("\n").split("\n")]
    return "\n".join(kept).rstrip("\n") + "\n"


def save_results_section(section: str, results: Path | None = None) -> None:
    """Put ``section`` (a ``## Title (date)`` heading and its text) into ``results`` (default RESULTS.md),
    replacing the section with the same title, or after the last section if there is none."""
    results = RESULTS if results is None else results
    section = section.lstrip("\n")
    title = section_title(section.split("\n", 1)[0])
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    partial = results.with_name(results.name + ".partial")
    partial.write_text(replace_section(text, title, section))
    partial.replace(results)
    print(f"wrote the section '{title}' of {results}")


def write_results_section(title: str, where: str, note: str, table: str, results: Path | None = None) -> None:
    """Write a dated section -- the exact command, the machine, a note, the table -- to ``results``
    (default RESULTS.md), replacing the section with the same title, so that the file holds the latest
    run of each benchmark."""
    command = "python benchmarks/" + " ".join([Path(sys.argv[0]).name, *(shlex.quote(a) for a in sys.argv[1:])])
    save_results_section(f"## {title} ({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
                         f"Command: `{command}`  \nMachine: {where}  \n{note}\n\n{table}\n", results)


append_results = write_results_section  # the name the benchmark scripts have used


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
