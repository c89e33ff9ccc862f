"""Attacks (and defenses) on the default poisoning scenario, mnist5k, as ``parley bench attacks`` cells.

Every cell is one ``poisoning_v0`` episode: the attack crafts from the env's scenario, the defense
answers, a victim trained from scratch on the result is scored on the test split, and a victim of the
same seed trained on the clean set gives the clean-accuracy drop and the share of patched images the
patch alone sends to the target. The table gives means over source/target pairs with 95% confidence
intervals; it is printed and replaces this run's own section of benchmarks/RESULTS.md::

    python benchmarks/poisoning_mnist.py --attacks badnets --budget 0.05 --pairs 10
    python benchmarks/poisoning_mnist.py --attacks badnets --budget 0.01 --trigger-placement fixed
    python benchmarks/poisoning_mnist.py --attacks sleeper_agent,htba,random --budget 0.05 --pairs 10

The GPU recipe (Souri et al.'s CIFAR-10 / ResNet-18 setting, 1% budget, 40-epoch victims)::

    python benchmarks/poisoning_mnist.py --dataset cifar10 --data-path /data/cifar-10-batches-py \
        --victim resnet18 --recipe paper --budget 0.01 --attacks sleeper_agent,htba,random --device cuda

Results (resumable) live under ``--out``; a rerun skips finished cells.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from common import machine, write_results_section

from parley.attacks.bench import BenchConfig, grid_cells, read_rows, run_grid, summarize, summary_markdown
from parley.attacks.datasets import load_dataset


def _options(items: list[str]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for item in items:
        name, _, rest = item.partition(".")
        key, eq, raw = rest.partition("=")
        if not eq:
            raise SystemExit(f"--attack-option {item!r}: expected ATTACK.OPTION=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(name, {})[key] = value
    return out


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k", help="mnist5k, digits, cifar10 or mnist (with --data-path)")
    parser.add_argument("--data-path", default=None, help="folder of the local CIFAR-10 / MNIST files")
    parser.add_argument("--victim", default="small_cnn")
    parser.add_argument("--recipe", default="dataset", help="tiny, dataset or paper (the 40-epoch CIFAR schedule)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--attacks", default="badnets")
    parser.add_argument("--defenses", default="none")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--pair-seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=0.05)
    parser.add_argument("--eps", type=float, default=16.0, help="in 1/255 units")
    parser.add_argument("--width", type=int, default=None, help="victim width (default: the victim's own)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--trigger-placement", default="random")
    parser.add_argument("--attack-option", action="append", default=[])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--table-only", action="store_true",
                        help="tabulate the cells already finished in --out, run none (each row's cells column "
                             "says how many it has)")
    args = parser.parse_args(argv)
    config = BenchConfig(
        dataset=args.dataset, attacks=tuple(args.attacks.split(",")), defenses=tuple(args.defenses.split(",")),
        pairs=args.pairs, seeds=args.seeds, pair_seed=args.pair_seed, budget=args.budget, eps=args.eps / 255,
        victim=args.victim, recipe=args.recipe, dataset_kwargs={"path": args.data_path} if args.data_path else {},
        victim_kwargs={"width": args.width} if args.width else {}, epochs=args.epochs,
        attack_kwargs=_options(args.attack_option), trigger_placement=args.trigger_placement,
        workers=args.workers, threads_per_worker=args.threads, device=args.device,
        out=args.out or f"bench-{args.dataset}-{args.attacks.replace(',', '-')}-{args.defenses.replace(',', '-')}"
                        f"-{args.budget:g}-{args.trigger_placement}")
    if args.table_only:
        rows = [r for r in read_rows(Path(config.out) / "results.csv")
                if r["config_id"] == config.config_id() and not r.get("error")]
    else:
        rows = run_grid(config)
    # The folder may hold cells of a larger grid (more pairs, other attacks): the table covers this one.
    cells = {(c.attack, c.defense, str(c.source_class), str(c.target_class), str(c.seed))
             for c in grid_cells(config, load_dataset(config.dataset, **config.dataset_kwargs).num_classes)}
    rows = [r for r in rows if (r["attack"], r["defense"], r["source_class"], r["target_class"], r["seed"]) in cells]
    minutes = sum(float(r["episode_time_s"]) for r in rows if r.get("episode_time_s")) / 60
    table = summary_markdown(summarize(rows, config), config)
    print(table)
    if not args.no_write:
        width = args.width or "default"
        note = (f"Victims: {args.victim} width {width}, recipe {args.recipe}, trained from scratch; "
                f"one victim per cell; {minutes:.1f} min of episode time over all cells ({args.workers} worker(s), torch "
                f"{torch.__version__}). Source ASR: patched source-class test images sent to the target; full "
                "ASR: patched test images of every non-target class; clean-acc drop: against a victim of the "
                "same seed trained on the clean set; patch alone: that clean victim's source ASR.")
        if args.table_only:
            note += (" Table of the cells finished when the grid was stopped (the cells column); rows with "
                     "fewer cells cover the first pairs of the draw.")
        title = (f"Poisoning on {args.dataset}: {args.attacks} vs {args.defenses}, budget {args.budget:.0%}, "
                 f"eps {args.eps:g}/255, {args.trigger_placement} trigger")
        where = machine()
        if args.device != "cpu" and torch.cuda.is_available():
            where = f"{torch.cuda.get_device_name(0)} (device {args.device}), {os.cpu_count()} CPU cores"
        write_results_section(title, where, note, table)
    return table


if __name__ == "__main__":
    main()
