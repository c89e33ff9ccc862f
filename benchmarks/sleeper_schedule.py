"""Sleeper Agent schedules on validation pairs of mnist5k: ASR against budget, eps and schedule.

Everything here is chosen and measured on a validation split carved from the *training* images
(``validation_split(0.2, seed=1)``: 3,200 training, 800 held-out images); the test split is never
used. For each pair the poisons are crafted once, one victim (small CNN, ``TrainingRecipe.for_dataset``)
is trained from scratch on the poisoned set, and the source ASR is measured on the patched held-out
source-class images. Rows accumulate in ``--log`` (JSON lines); the table of every row there replaces
this benchmark's section of benchmarks/RESULTS.md::

    python benchmarks/sleeper_schedule.py --schedule small_images --budget 0.05 --eps 16 --pairs 3-8,6-1
    python benchmarks/sleeper_schedule.py --schedule paper --budget 0.05 --eps 16 --pairs 3-8 --set ensemble=2
    python benchmarks/sleeper_schedule.py --schedule none --pairs 3-8,6-1     # the patch alone
    python benchmarks/sleeper_schedule.py --pairs ""                         # rewrite the table from --log
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import machine, parse_overrides, write_results_section

from parley.attacks.base import Scenario, backdoor_metrics
from parley.attacks.datasets import load_dataset
from parley.attacks.sleeper_agent import SleeperAgent, SleeperAgentConfig
from parley.attacks.triggers import make_trigger
from parley.attacks.victims import TrainingRecipe, make_victim, train_model

SCHEDULES = {"paper": SleeperAgentConfig.paper, "small_images": SleeperAgentConfig.small_images}


def run_pair(dataset, schedule: str, overrides: dict, source: int, target: int, budget: float, eps: float,
             width: int) -> dict:
    recipe = TrainingRecipe.for_dataset(dataset)
    trigger = make_trigger(1, 7, seed=100 + source)
    scenario = Scenario.from_dataset(dataset, source, target, budget=budget, eps=eps, recipe=recipe,
                                     trigger=trigger, victim_kwargs={"width": width}, seed=source * 10 + target,
                                     device="cpu")
    start = time.perf_counter()
    if schedule == "none":  # the patch alone: a victim trained on the clean set
        x, y, info = dataset.x_train, dataset.y_train, {}
    else:
        submission = SleeperAgent(SCHEDULES[schedule](**overrides)).craft(scenario)
        x, y = submission.apply(dataset.x_train, dataset.y_train)
        info = submission.info
    craft_s = time.perf_counter() - start
    torch.manual_seed(0)
    victim = train_model(make_victim("small_cnn", dataset, width=width), x, y, recipe, device="cpu", seed=0)
    metrics = backdoor_metrics(victim, dataset.x_test, dataset.y_test, source, target, trigger, seed=5, device="cpu")
    return {"schedule": schedule, "overrides": overrides, "budget": budget, "eps_255": round(eps * 255, 3),
            "pair": [source, target], "craft_s": round(craft_s, 1), "asr": metrics["attack_success_rate"],
            "clean_accuracy": metrics["clean_accuracy"], "matching_loss": info.get("matching_loss"),
            "width": width}


def table(rows: list[dict]) -> str:
    lines = ["| schedule | changes | budget | eps | victim width | pair | source ASR % (validation) | clean acc % "
             "| crafting s |",
             "|---|---|---|---|---:|---|---:|---:|---:|"]
    for r in rows:
        changes = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "–"
        budget, eps = ("–", "–") if r["schedule"] == "none" else (f"{r['budget']:.0%}", f"{r['eps_255']:g}/255")
        lines.append(f"| {r['schedule']} | {changes} | {budget} | {eps} | {r['width']} | "
                     f"{r['pair'][0]}->{r['pair'][1]} | {100 * r['asr']:.1f} | {100 * r['clean_accuracy']:.1f} | "
                     f"{r['craft_s']:.0f} |")
    return "\n".join(lines)


def _setting_order(item: tuple) -> tuple:
    (schedule, changes, budget, eps, width), _ = item
    return schedule, changes, -1 if budget == "–" else budget, -1 if eps == "–" else eps, width


def curve(rows: list[dict]) -> str:
    """Mean source ASR and clean accuracy over the validation pairs of each setting (the curve)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        changes = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "–"
        key = (r["schedule"], changes, "–" if r["schedule"] == "none" else r["budget"],
               "–" if r["schedule"] == "none" else r["eps_255"], r["width"])
        groups.setdefault(key, []).append(r)
    lines = ["| schedule | changes | budget | eps | victim width | pairs | mean source ASR % | min-max % "
             "| mean clean acc % |",
             "|---|---|---|---|---:|---|---:|---:|---:|"]
    for (schedule, changes, budget, eps, width), group in sorted(groups.items(), key=_setting_order):
        asr = [100 * r["asr"] for r in group]
        pairs = ", ".join(f"{r['pair'][0]}->{r['pair'][1]}" for r in group)
        budget_text = budget if budget == "–" else f"{budget:.0%}"
        eps_text = eps if eps == "–" else f"{eps:g}/255"
        lines.append(f"| {schedule} | {changes} | {budget_text} | {eps_text} | {width} | {pairs} | "
                     f"{sum(asr) / len(asr):.1f} | {min(asr):.1f}-{max(asr):.1f} | "
                     f"{100 * sum(r['clean_accuracy'] for r in group) / len(group):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedule", choices=[*sorted(SCHEDULES), "none"], default="small_images",
                        help="a Sleeper Agent preset, or none (no poisons: what the patch alone does)")
    parser.add_argument("--set", default="", help="field=value,... changes to the schedule")
    parser.add_argument("--budget", type=float, default=0.05)
    parser.add_argument("--eps", type=float, default=16.0, help="in 1/255 units")
    parser.add_argument("--pairs", default="3-8,6-1", help="source-target pairs, comma-separated")
    parser.add_argument("--width", type=int, default=16, help="victim and surrogate width")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log", default="bench-sleeper-schedule.jsonl")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = parse_overrides(args.set, SleeperAgentConfig, "--set")
    # An empty --pairs runs nothing and only rewrites the table from --log.
    pairs = [tuple(int(c) for c in p.split("-")) for p in args.pairs.split(",") if p.strip()]
    dataset = load_dataset("mnist5k").validation_split(0.2, seed=1)
    log = Path(args.log)
    for source, target in pairs:
        row = run_pair(dataset, args.schedule, overrides, source, target, args.budget, args.eps / 255, args.width)
        print(json.dumps(row), flush=True)
        with log.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    text = f"Every row:\n\n{table(rows)}\n\nThe curve (means over the validation pairs of each setting):\n\n{curve(rows)}"
    print(text)
    if not args.no_write:
        note = ("Rows: `--schedule paper --budget 0.1 --width 32 --pairs 3-8`; `--schedule paper --pairs 3-8,6-1`; "
                "`--schedule small_images --pairs 3-8,6-1` at `--eps` 16, `--eps 32 --pairs 3-8`; `--schedule "
                "small_images` at `--eps` 64, 128 and 255 on `--pairs 3-8,6-1,7-1`; `--schedule small_images --budget "
                "0.1` at `--eps` 32 and 64 on `--pairs 3-8,6-1,7-1`; `--schedule none --pairs 3-8,6-1,7-1`. Validation pairs only "
                "(mnist5k training split carved 80/20, seed 1; 7->1 is the first pair of `draw_pairs(10, 10, seed=1)` "
                "that is not a test pair); one crafting and one victim per row (small CNN, 15 epochs, from scratch); "
                "trigger 7x7 at random places. Crafting times depend on the load other jobs put on the two cores "
                "(load average 2-15 during these rows; 147-265 s per row at load 2-8). At a 10% budget the poisons "
                "are nearly every target-class training image, and the victim's clean accuracy falls by about 9 "
                "points. Rows accumulate from several invocations of this command.")
        write_results_section("Sleeper Agent schedules on mnist5k validation pairs", machine(), note, text)


if __name__ == "__main__":
    main()
