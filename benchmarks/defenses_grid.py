"""Every defense against each attack on the default poisoning scenario (mnist5k), as ``parley bench
attacks`` grid cells (env episodes).

Runs :func:`parley.attacks.bench.run_grid` (results under ``--out``, resumable) and replaces this
benchmark's section of benchmarks/RESULTS.md with the table, date, command and machine::

    python benchmarks/defenses_grid.py --attacks badnets,sleeper_agent --pairs 10 --budget 0.05
    python benchmarks/defenses_grid.py --dataset digits --pairs 5     # the fast smoke setting
"""

from __future__ import annotations

import argparse

from common import machine, write_results_section

from parley.attacks.bench import BenchConfig, run_grid, summarize, summary_markdown
from parley.attacks.defenses import list_defenses


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--attacks", default="badnets,random")
    parser.add_argument("--defenses", default=",".join(list_defenses()))
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--budget", type=float, default=0.05)
    parser.add_argument("--recipe", default="dataset")
    parser.add_argument("--width", type=int, default=None, help="victim width (default: the victim's own)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="bench-defenses")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    config = BenchConfig(dataset=args.dataset, attacks=tuple(args.attacks.split(",")),
                         defenses=tuple(args.defenses.split(",")), pairs=args.pairs, seeds=args.seeds,
                         budget=args.budget, recipe=args.recipe, workers=args.workers, out=args.out, device="cpu",
                         victim_kwargs={"width": args.width} if args.width else {})
    rows = run_grid(config)
    minutes = sum(float(r["episode_time_s"]) for r in rows if r.get("episode_time_s")) / 60
    table = summary_markdown(summarize(rows, config), config)
    print(table)
    if not args.no_write:
        note = (f"Each cell is one poisoning_v0 episode (victim trained from scratch on what the defender kept); "
                f"means over pairs ± 95% CI; clean-acc drop against an undefended victim of the same seed trained "
                f"on clean data. Filter defenses assume the budget's poison count. {minutes:.1f} min of episode "
                f"time over all cells.")
        write_results_section(f"Defenses against {args.attacks} on {args.dataset} (parley bench attacks grid)",
                              machine(), note, table)
    return table


if __name__ == "__main__":
    main()
