"""Every defense against an attack on digits, as ``parley bench attacks`` grid cells (env episodes).

Runs :func:`parley.attacks.bench.run_grid` (results under ``--out``, resumable) and appends the
summary table to benchmarks/RESULTS.md with the date, command and machine::

    python benchmarks/defenses_grid.py --attacks badnets,random --pairs 5 --seeds 1 --budget 0.05
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import torch

from parley.attacks.bench import BenchConfig, run_grid, summarize, summary_markdown
from parley.attacks.defenses import list_defenses

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--attacks", default="badnets,random")
    parser.add_argument("--defenses", default=",".join(list_defenses()))
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--budget", type=float, default=0.05)
    parser.add_argument("--recipe", default="dataset")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="bench-defenses")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    config = BenchConfig(dataset=args.dataset, attacks=tuple(args.attacks.split(",")),
                         defenses=tuple(args.defenses.split(",")), pairs=args.pairs, seeds=args.seeds,
                         budget=args.budget, recipe=args.recipe, workers=args.workers, out=args.out, device="cpu")
    start = time.perf_counter()
    rows = run_grid(config)
    minutes = (time.perf_counter() - start) / 60
    table = "\n".join([
        f"## Defenses against {args.attacks} on {args.dataset} (parley bench attacks grid)",
        "",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Command: `python benchmarks/defenses_grid.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPU cores visible (shared), CPU only, torch "
        f"{torch.__version__}; {args.workers} worker processes, {minutes:.1f} min for the cells run now",
        "- Each cell is one poisoning_v0 episode (victim trained from scratch on what the defender kept); ± is "
        "the std over pairs and seeds. Filter defenses assume the budget's poison count.",
        "",
        summary_markdown(summarize(rows, config), config),
    ])
    print(table)
    if not args.no_write:
        with RESULTS.open("a") as handle:
            handle.write("\n" + table)
    return table


if __name__ == "__main__":
    main()
