"""Sleeper Agent vs the random-noise control and Hidden Trigger Backdoor on scikit-learn digits.

Victims are trained from scratch (small CNN, ``TrainingRecipe.for_dataset``) on the poisoned training
split; ASR is measured on patched source-class images of the held-out test split, clean accuracy on the
whole test split. For every source/target pair and attack the poisons are crafted once and
``--victim-seeds`` victims are trained on them; the table gives mean +- std over pairs (each pair's
value averaged over victim seeds) and the clean-accuracy drop against victims trained on clean data
with the same seeds.

    python benchmarks/poisoning_digits.py                      # 5 pairs, budgets 1% and 5%
    python benchmarks/poisoning_digits.py --pairs 2 --budgets 0.01 --no-append   # quick look
    python benchmarks/poisoning_digits.py --budgets 0.05 --variant no_aug:augment=False   # extra Sleeper Agent row
    python benchmarks/poisoning_digits.py --variant paper:preset=paper   # the paper's schedule as an extra row

Sleeper Agent runs with ``SleeperAgentConfig.for_dataset`` (on digits ``small_images()``: ART's short
schedule without retraining or crafting augmentation, matched against two surrogates; see its
docstring); ``--variant`` rows change fields of that, or of a named preset.

The table is printed and appended to benchmarks/RESULTS.md (unless --no-append).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from common import parse_overrides

from parley.attacks.base import Scenario, apply_checked, backdoor_metrics, make_attack
from parley.attacks.datasets import load_dataset
from parley.attacks.sleeper_agent import SleeperAgentConfig
from parley.attacks.victims import TrainingRecipe, make_victim, train_model

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def draw_pairs(num_classes: int, count: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    pairs: list[tuple[int, int]] = []
    while len(pairs) < count:
        s, t = (int(v) for v in rng.choice(num_classes, size=2, replace=False))
        if (s, t) not in pairs:
            pairs.append((s, t))
    return pairs


PRESETS = {"paper": SleeperAgentConfig.paper, "small_images": SleeperAgentConfig.small_images}


def parse_variant(text: str, dataset) -> tuple[str, SleeperAgentConfig]:
    """``"label:[preset=NAME,]field=value,..."`` -> (label, config): fields changed on ``for_dataset``'s
    schedule, or on the named preset (``paper`` or ``small_images``)."""
    label, _, assignments = text.partition(":")
    if not label or not assignments:
        raise SystemExit(f"--variant expects LABEL:FIELD=VALUE[,FIELD=VALUE], got {text!r}")
    preset, _, rest = assignments.partition(",") if assignments.startswith("preset=") else ("", "", assignments)
    if preset:
        name = preset.partition("=")[2].strip()
        if name not in PRESETS:
            raise SystemExit(f"--variant: preset must be one of {', '.join(PRESETS)}, got {name!r}")
        base = PRESETS[name]()
    else:
        base = SleeperAgentConfig.for_dataset(dataset)
    return label, dataclasses.replace(base, **parse_overrides(rest, SleeperAgentConfig, "--variant"))


def describe(config: SleeperAgentConfig) -> str:
    """The crafting schedule in words, for the RESULTS.md header."""
    lr = config.tanh_lr if config.parametrisation == "tanh" else config.lr
    drops = "/".join(f"{round(f * config.steps)}" for f in config.lr_drops)
    augment = "differentiable crop augmentation while crafting" if config.augment else "no augmentation while crafting"
    return (f"{config.steps} steps, signed Adam ({config.parametrisation} parametrisation, lr {lr}, divided by 10 "
            f"at steps {drops}), matched against {config.ensemble} surrogate(s), {config.retrain_times} "
            f"surrogate retrainings, {config.restarts} restart(s), poisons chosen by gradient norm, {augment}")


def train_and_measure(dataset, x, y, scenario, recipe, width, seed, device):
    torch.manual_seed(seed)
    model = train_model(make_victim("small_cnn", dataset, width=width), x, y, recipe, device=device, seed=seed)
    return backdoor_metrics(model, dataset.x_test, dataset.y_test, scenario.source_class, scenario.target_class,
                            scenario.trigger, seed=seed + 1, device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--budgets", default="0.01,0.05", help="comma-separated poison fractions")
    parser.add_argument("--eps", type=float, default=16 / 255)
    parser.add_argument("--victim-seeds", type=int, default=2)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--pair-seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variant", action="append", default=[],
                        help="extra Sleeper Agent row: LABEL:[preset=paper|small_images,]FIELD=VALUE[,FIELD=VALUE] "
                             "(SleeperAgentConfig fields, changed on for_dataset's schedule or the preset)")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    dataset = load_dataset("digits")
    recipe = TrainingRecipe.for_dataset(dataset)
    pairs = draw_pairs(dataset.num_classes, args.pairs, args.pair_seed)
    budgets = [float(b) for b in args.budgets.split(",")]
    attacks = {
        "sleeper_agent": lambda: make_attack("sleeper_agent", **vars(SleeperAgentConfig.for_dataset(dataset))),
        **{f"sleeper_agent {label}": (lambda c=config: make_attack("sleeper_agent", **vars(c)))
           for label, config in (parse_variant(v, dataset) for v in args.variant)},
        "htba": lambda: make_attack("htba"),
        "random_noise": lambda: make_attack("random_noise"),
    }
    seeds = [1000 + i for i in range(args.victim_seeds)]
    start = time.perf_counter()

    clean: dict[tuple[int, int], dict[str, float]] = {}
    for s, t in pairs:
        scenario = Scenario.from_dataset(dataset, s, t, budget=budgets[0], eps=args.eps, recipe=recipe,
                                         victim_kwargs={"width": args.width}, seed=100 * s + t)
        runs = [train_and_measure(dataset, dataset.x_train, dataset.y_train, scenario, recipe, args.width, sd,
                                  args.device) for sd in seeds]
        clean[(s, t)] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        print(f"clean {s}->{t}: {clean[(s, t)]}", flush=True)

    rows = []
    for budget in budgets:
        for name, build in attacks.items():
            per_pair, craft_times = [], []
            for s, t in pairs:
                scenario = Scenario.from_dataset(dataset, s, t, budget=budget, eps=args.eps, recipe=recipe,
                                                 victim_kwargs={"width": args.width}, seed=100 * s + t,
                                                 device=args.device)
                submission = build().craft(scenario)
                craft_times.append(submission.info["craft_time_s"])
                x, y = apply_checked(submission, dataset.x_train, dataset.y_train)
                runs = [train_and_measure(dataset, x, y, scenario, recipe, args.width, sd, args.device)
                        for sd in seeds]
                pair = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
                pair["drop"] = clean[(s, t)]["clean_accuracy"] - pair["clean_accuracy"]
                pair["clean_asr"] = clean[(s, t)]["attack_success_rate"]
                per_pair.append(pair)
                print(f"{name} budget={budget} {s}->{t}: ASR {pair['attack_success_rate']:.3f} "
                      f"(clean model {pair['clean_asr']:.3f}), acc {pair['clean_accuracy']:.3f}, "
                      f"craft {craft_times[-1]:.1f}s", flush=True)
            asr = np.array([p["attack_success_rate"] for p in per_pair])
            rows.append({
                "attack": name, "budget": budget, "poisons": scenario.max_poisons,
                "asr": (asr.mean(), asr.std()),
                "clean_asr": float(np.mean([p["clean_asr"] for p in per_pair])),
                "best_pair": asr.max(),
                "acc": float(np.mean([p["clean_accuracy"] for p in per_pair])),
                "drop": (float(np.mean([p["drop"] for p in per_pair])), float(np.std([p["drop"] for p in per_pair]))),
                "r_acc": float(np.mean([p["robust_accuracy"] for p in per_pair])),
                "craft": float(np.mean(craft_times)),
            })
    total = time.perf_counter() - start
    clean_acc = float(np.mean([c["clean_accuracy"] for c in clean.values()]))

    lines = [
        "| attack | budget (images) | ASR mean ± std | ASR best pair | ASR of clean victims | clean acc | "
        "clean-acc drop | R-Acc | craft time (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['attack']} | {r['budget']:.0%} ({r['poisons']}) | {r['asr'][0]:.1%} ± {r['asr'][1]:.1%} | "
                     f"{r['best_pair']:.1%} | {r['clean_asr']:.1%} | {r['acc']:.1%} | "
                     f"{r['drop'][0]:+.1%} ± {r['drop'][1]:.1%} | {r['r_acc']:.1%} | {r['craft']:.1f} |")
    table = "\n".join(lines)
    print(table)
    print(f"clean victims: accuracy {clean_acc:.1%}; total {total / 60:.1f} min")
    if args.no_append:
        return
    command = "python benchmarks/poisoning_digits.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("no_append", "variant"))
    command += "".join(f" --variant {v}" for v in args.variant)
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores visible, torch {torch.__version__}, "
               f"device {args.device}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    sa = SleeperAgentConfig.for_dataset(dataset)
    variants = "".join(f"; row `sleeper_agent {v.partition(':')[0]}`: `{v.partition(':')[2]}`" for v in args.variant)
    text = f"""
## Sleeper Agent on digits, victims trained from scratch ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)

Command: `{command}`

Machine: {machine}

Data: scikit-learn digits 8x8 ({dataset.num_train} train / {dataset.num_test} test, fixed stratified split);
victim: small CNN (width {args.width}) trained from scratch, {recipe.epochs} epochs, SGD lr {recipe.lr},
crop padding {recipe.crop_padding}, no flips; eps = {args.eps * 255:.0f}/255; a {scenario.trigger.size}x{scenario.trigger.size}
binary patch at a random location. Pairs (source->target): {', '.join(f'{s}->{t}' for s, t in pairs)};
{args.victim_seeds} victim seeds per pair. Sleeper Agent (`SleeperAgentConfig.for_dataset`): {describe(sa)}{variants}.
"ASR of clean victims" is the share of patched source images that victims trained on clean data already
send to the target (the patch alone). Clean accuracy of clean victims: {clean_acc:.1%}.
Total wall time {total / 60:.1f} min.

{table}
"""
    with open(RESULTS, "a") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
