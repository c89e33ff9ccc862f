"""Sleeper Agent: parley's implementation side by side with IBM ART 1.20's ``SleeperAgentAttack``.

Both attacks get the same dataset, victim architecture and training recipe, poison budget, eps,
trigger patch, source/target pairs, number of crafting steps, learning-rate drops and surrogate
retrainings. Each poisoned training set is then judged the same way: a fresh victim trained from scratch
on it, ASR on patched source-class test images, clean accuracy on the whole test set. A row for the
unpoisoned training set shows what the patch alone does.

Crafting time counts everything an attack needs from the clean data onwards. Ours trains its own
surrogate inside ``craft``; ART's ``poison()`` expects a trained classifier, so its time is the same
surrogate training (our ``train_model``, same recipe) plus ``poison()`` -- both parts are also reported.
(In ART 1.20 the surrogate retrained inside ``poison()`` is not used by the matching loop, whose
``BackdoorModel`` keeps the initial classifier and source gradient; the retrainings still cost time.)

``--ours matched`` (the default) gives our attack ART's steps and retrainings with the paper's other
settings; ``--ours for_dataset`` uses :meth:`SleeperAgentConfig.for_dataset` (our schedule for the
dataset, see its docstring; ``--ours-steps`` changes its step count) while ART keeps ``--steps`` and
``--retrain-times``. Time ART spends
retraining its surrogate is measured separately, since those retrainings do not change its poisons.

Choosing settings: ``--split validation`` carves a stratified 20% (seed 1) out of the *training* split,
trains victims and surrogates on the other 80% and measures ASR on the carved part, so the test split is
never read; ``--variants "base;draws8:trigger_draws=8"`` crafts several variants of ours (fields of
:class:`SleeperAgentConfig` on top of ``--ours``) side by side on the same pairs; ``--pair-list 2->3,8->4``
fixes the pairs; ``--eval-draws 4`` patches each source image at four random places when measuring ASR
(finer resolution on small test sets); ``--no-art`` leaves ART out. The table gives, per variant, the
per-pair ASR difference to ART (mean ± standard error over pairs).

Needs the ``bench`` extra (``pip install 'parley[bench]'``). Prints the table and writes its section of
benchmarks/RESULTS.md after every pair, so a run stopped early keeps the pairs it finished::

    python benchmarks/sleeper_vs_art.py --dataset digits --pairs 5 --budget 0.05 --steps 120
    python benchmarks/sleeper_vs_art.py --dataset digits --pairs 5 --budget 0.05 --steps 120 --ours for_dataset
    python benchmarks/sleeper_vs_art.py --dataset digits --split validation --pair-list 2->3,8->4,4->7 --ours for_dataset --variants "base;noaug:augment=False"
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import io
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from common import parse_overrides, save_results_section
from torch import nn

from parley.attacks.base import Scenario, Submission, backdoor_metrics, check_submission, make_attack
from parley.attacks.bench import draw_pairs
from parley.attacks.datasets import load_dataset
from parley.attacks.sleeper_agent import SleeperAgentConfig
from parley.attacks.victims import TrainingRecipe, train_model, train_victim

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass
class Settings:
    dataset: str = "digits"
    pairs: int = 5
    seed: int = 0
    budget: float = 0.05
    eps: float = 16 / 255
    steps: int = 120
    retrain_times: int = 4
    victim: str = "small_cnn"
    width: int = 32
    epochs: int | None = None
    poison_batch: int = 512
    victim_seeds: int = 2
    threads: int = 1  # more threads than free cores slows torch down sharply on a shared machine
    write: bool = True
    ours: str = "matched"  # "matched": ART's steps/retrainings; "for_dataset": SleeperAgentConfig.for_dataset
    ours_steps: int | None = None  # with --ours for_dataset: crafting steps instead of the schedule's own
    # "test" judges on the dataset's test split; "validation" carves a stratified 20% (seed 1) out of the
    # training split, trains on the rest and judges there -- the test split is then never read.
    split: str = "test"
    pair_list: str = ""  # e.g. "2->3,8->4"; replaces the seeded draw of --pairs pairs
    # Variants of ours side by side, ";"-separated, each "name" or "name:field=value,field=value" (fields of
    # SleeperAgentConfig, applied on top of --ours), e.g. "base;draws8:trigger_draws=8".
    variants: str = ""
    eval_draws: int = 1  # random trigger placements per source image when measuring ASR
    art: bool = True  # --no-art leaves ART out (variants of ours only)


def _import_art():
    try:
        import art
        from art.attacks.poisoning import SleeperAgentAttack
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        sys.exit("This benchmark needs IBM's adversarial-robustness-toolbox (ART) >= 1.17: "
                 "pip install 'parley[bench]'")
    return art.__version__, SleeperAgentAttack, PyTorchClassifier


def _onehot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[labels]


def ours_config(dataset, s: Settings) -> SleeperAgentConfig:
    if s.ours == "matched":
        return SleeperAgentConfig(steps=s.steps, retrain_times=s.retrain_times, restarts=1,
                                  poison_batch_size=s.poison_batch)
    if s.ours == "for_dataset":
        steps = {} if s.ours_steps is None else {"steps": s.ours_steps}
        return SleeperAgentConfig.for_dataset(dataset, poison_batch_size=s.poison_batch, **steps)
    raise SystemExit(f"--ours must be 'matched' or 'for_dataset', got {s.ours!r}")


def craft_ours(scenario: Scenario, config: SleeperAgentConfig) -> tuple[Submission, dict[str, float]]:
    attack = make_attack("sleeper_agent", **vars(config))
    submission = attack.craft(scenario)
    return submission, {"craft_time_s": submission.info["craft_time_s"]}


def craft_art(scenario: Scenario, dataset, s: Settings) -> tuple[Submission, dict[str, float]]:
    """ART's SleeperAgentAttack with the same settings; returns a checked Submission."""
    _, SleeperAgentAttack, PyTorchClassifier = _import_art()
    recipe = scenario.recipe
    random.seed(scenario.seed)  # ART draws trigger locations and poison indices from the global generators
    np.random.seed(scenario.seed)
    torch.manual_seed(scenario.seed)
    start = time.perf_counter()
    surrogate = train_model(scenario.make_model(), scenario.x_train, scenario.y_train, recipe, device="cpu",
                            seed=scenario.seed)
    pretrain = time.perf_counter() - start
    optimizer = torch.optim.SGD(surrogate.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
    classifier = PyTorchClassifier(surrogate, loss=nn.CrossEntropyLoss(), optimizer=optimizer,
                                   input_shape=scenario.shape, nb_classes=scenario.num_classes,
                                   clip_values=(0.0, 1.0), preprocessing=(0.0, 1.0), device_type="cpu")
    x_train = scenario.x_train.numpy().astype(np.float32)
    y_train = scenario.y_train.numpy()
    target_idx = scenario.class_indices(scenario.target_class)
    source_idx = scenario.class_indices(scenario.source_class)
    # ART counts poisons as a share of the target class; +0.5 keeps int() from rounding one away, and the
    # share cannot pass 1 (a budget larger than the target class poisons all of it, as ours does).
    percent = min(1.0, (scenario.max_poisons + 0.5) / len(target_idx))
    # ART's default drops are at epochs 100/150/200/220 of 250; scaled to the same step count as ours.
    milestones = [max(1, round(f * s.steps)) for f in (100 / 250, 150 / 250, 200 / 250, 220 / 250)]
    attack = SleeperAgentAttack(
        classifier, percent_poison=percent, patch=scenario.trigger.patch, indices_target=target_idx,
        epsilon=scenario.eps, max_trials=1, max_epochs=s.steps,
        learning_rate_schedule=([1e-1, 1e-2, 1e-3, 1e-4], milestones), batch_size=s.poison_batch,
        clip_values=(0.0, 1.0), verbose=0, patching_strategy="random", selection_strategy="max-norm",
        retraining_factor=s.retrain_times + 1, model_retrain=s.retrain_times > 0,
        model_retraining_epoch=recipe.epochs, class_source=scenario.source_class,
        class_target=scenario.target_class, device_name="cpu", retrain_batch_size=recipe.batch_size)
    retraining = {"s": 0.0}
    retrain_surrogate = attack._model_retraining

    def timed_retraining(*args, **kwargs):
        begin = time.perf_counter()
        retrain_surrogate(*args, **kwargs)
        retraining["s"] += time.perf_counter() - begin

    attack._model_retraining = timed_retraining
    x_trigger = x_train[source_idx].copy()
    y_trigger = _onehot(np.full(len(source_idx), scenario.target_class), scenario.num_classes)
    # ART only logs the retrained surrogate's accuracy on (x_test, y_test); give it training data so the
    # attacker never touches the test split.
    with contextlib.redirect_stderr(io.StringIO()):  # ART's surrogate retraining draws tqdm bars at verbose=0
        x_poisoned, _ = attack.poison(x_trigger, y_trigger, x_train, _onehot(y_train, scenario.num_classes),
                                      x_train[:256], _onehot(y_train[:256], scenario.num_classes))
    elapsed = time.perf_counter() - start
    idx = np.sort(target_idx[np.asarray(attack.get_poison_indices())])
    delta = np.clip(x_poisoned[idx] - x_train[idx], -scenario.eps, scenario.eps)
    submission = Submission(idx, delta, None, {"attack": "art_sleeper_agent"})
    check_submission(submission, scenario.x_train, scenario.y_train, max_poisons=scenario.max_poisons,
                     eps=scenario.eps, num_classes=scenario.num_classes, allow_relabel=False)
    return submission, {"craft_time_s": elapsed, "pretrain_s": pretrain, "poison_s": elapsed - pretrain,
                        "retrain_s": retraining["s"]}


def parse_variants(text: str, base: SleeperAgentConfig) -> list[tuple[str, SleeperAgentConfig]]:
    """``"name;name:field=value,field=value"`` -> named configs (overrides applied to ``base``)."""
    if not text.strip():
        return [("parley", base)]
    variants = []
    for item in text.split(";"):
        name, _, assignments = item.strip().partition(":")
        overrides = parse_overrides(assignments, SleeperAgentConfig, "--variants")
        variants.append((f"parley {name}", dataclasses.replace(base, **overrides)))
    return variants


def parse_pairs(text: str, num_classes: int) -> list[tuple[int, int]]:
    pairs = []
    for item in text.split(","):
        source, sep, target = item.strip().partition("->")
        if not sep or not source.isdigit() or not target.isdigit() or source == target:
            raise SystemExit(f"--pair-list: {item!r} must look like 2->3 (two different class numbers)")
        if max(int(source), int(target)) >= num_classes:
            raise SystemExit(f"--pair-list: {item!r} names a class outside 0..{num_classes - 1}")
        pairs.append((int(source), int(target)))
    return pairs


def judge(dataset, scenario: Scenario, submission: Submission | None, seed: int,
          victim_seeds: int, eval_draws: int = 1) -> dict[str, float]:
    """Train ``victim_seeds`` fresh victims on the (poisoned) training set; their mean metrics (ASR and
    R-Acc averaged over ``eval_draws`` random trigger placements per source image)."""
    x, y = (submission.apply(dataset.x_train, dataset.y_train) if submission is not None
            else (dataset.x_train, dataset.y_train))
    runs = []
    for k in range(victim_seeds):
        victim_seed = 10_000 + 100 * seed + k
        torch.manual_seed(victim_seed)
        victim = train_victim(dataset.with_train(x, y), scenario.make_model(), scenario.recipe, device="cpu",
                              seed=victim_seed)
        for draw in range(eval_draws):
            runs.append(backdoor_metrics(victim, dataset.x_test, dataset.y_test, scenario.source_class,
                                         scenario.target_class, scenario.trigger, seed=victim_seed + 1000 * draw,
                                         device="cpu"))
    return {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}


def _pm(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    arr = np.asarray(values, dtype=float) * scale
    return f"{arr.mean():.{digits}f} ± {arr.std():.{digits}f}"


def _difference(ours: list[float], theirs: list[float]) -> str:
    """Per-pair ASR difference in points: mean ± standard error over pairs."""
    diff = 100 * (np.asarray(ours) - np.asarray(theirs))
    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    return f"{diff.mean():+.1f} ± {se:.1f}"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in vars(Settings()).items():
        if isinstance(default, bool):
            parser.add_argument(f"--{name.replace('_', '-')}", action=argparse.BooleanOptionalAction,
                                default=default)
        else:
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(default) if default is not None else int,
                                default=default)
    s = Settings(**vars(parser.parse_args(argv)))
    if s.split not in ("test", "validation"):
        raise SystemExit(f"--split must be 'test' or 'validation', got {s.split!r}")
    art_version, _, _ = _import_art()
    torch.set_num_threads(s.threads)
    load = os.getloadavg()[0]
    # The first optimiser built in a process imports torch._dynamo (seconds); pay that before any timing.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)

    dataset = load_dataset(s.dataset)
    if s.split == "validation":
        dataset = dataset.validation_split(0.2, seed=1)
    recipe = TrainingRecipe.for_dataset(dataset)
    if s.epochs is not None:
        recipe = recipe.scaled(s.epochs)
    variants = parse_variants(s.variants, ours_config(dataset, s))
    pairs = parse_pairs(s.pair_list, dataset.num_classes) if s.pair_list else draw_pairs(dataset.num_classes,
                                                                                          s.pairs, s.seed)
    methods = ["none", *(name for name, _ in variants), *(["art"] if s.art else [])]
    results: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    per_pair: list[str] = []

    def render() -> str:
        """The section for the pairs finished so far (written after every pair, so a stopped run
        keeps what it measured)."""
        n_poison = scenario.max_poisons
        pairs_text = (f"{len(pairs)} source/target pairs" if len(per_pair) == len(pairs) else
                      f"the first {len(per_pair)} of {len(pairs)} source/target pairs drawn (the run was stopped)")
        base_config = variants[0][1]
        ours_text = (f"ours `{s.ours}`: {base_config.steps} steps, {base_config.ensemble} surrogate(s), "
                     f"{base_config.retrain_times} surrogate retrainings, "
                     f"{base_config.restarts} restart(s), {base_config.parametrisation} parametrisation, crafting "
                     f"augmentation {'on' if base_config.augment else 'off'}, {base_config.trigger_draws} trigger "
                     "placement(s) per source image")
        if s.variants:
            base = ours_config(dataset, s)
            described = []
            for name, config in variants:
                changed = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                           if getattr(config, f.name) != getattr(base, f.name)}
                described.append(f"`{name}` = {', '.join(f'{k}={v}' for k, v in changed.items()) or 'as is'}")
            ours_text = f"ours `{s.ours}` with variants: " + "; ".join(described)
        split_text = ("validation split carved from the training split (stratified 20%, seed 1; the test split "
                      "is not read)" if s.split == "validation" else "test split")
        art_text = (f"ART: {s.steps} crafting steps, {s.retrain_times} surrogate retrainings, 1 restart; "
                    if s.art else "ART not run; ")
        lines = [
            f"## Sleeper Agent vs ART {art_version} SleeperAgentAttack on {s.dataset}, {s.split} split "
            f"({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)",
            "",
            f"- Command: `python benchmarks/sleeper_vs_art.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
            f"- Machine: {platform.machine()}, {os.cpu_count()} CPU cores visible, torch threads {s.threads}, "
            f"CPU only, Python {platform.python_version()}, torch {torch.__version__}, load average {load:.1f} at the "
            "start",
            f"- Setting: {s.dataset} ({dataset.num_train} train / {dataset.num_test} judged on: {split_text}), "
            f"victim {s.victim} width {s.width}, recipe {recipe.epochs} epochs; budget {s.budget:.0%} of the "
            f"training set ({n_poison} poisons), eps {s.eps * 255:.0f}/255, trigger {scenario.trigger.size}x"
            f"{scenario.trigger.size} random-placement patch; {art_text}{ours_text}; max-gradient-norm poison "
            f"selection for both; {pairs_text}, {s.victim_seeds} victims trained from scratch per "
            f"poisoned set, ASR over {s.eval_draws} trigger placement(s) per source image (metrics averaged per "
            "pair; ± is the std over pairs).",
            "",
            "| method | ASR % | clean acc % | crafting s | of which surrogate pretraining s | of which retraining s |"
            + (" ASR − ART per pair, points (mean ± SE) |" if s.art else ""),
            "|---|---|---|---|---|---|" + ("---|" if s.art else ""),
            f"| no poisons (patch only) | {_pm(results['none']['attack_success_rate'])} | "
            f"{_pm(results['none']['clean_accuracy'])} | – | – | – |" + (" – |" if s.art else ""),
        ]
        for name, _ in variants:
            r = results[name]
            diff = f" {_difference(r['attack_success_rate'], results['art']['attack_success_rate'])} |" if s.art else ""
            label = "parley sleeper_agent" if name == "parley" else name
            lines.append(f"| {label} | {_pm(r['attack_success_rate'])} | {_pm(r['clean_accuracy'])} | "
                         f"{_pm(r['craft_time_s'], 1.0)} | (inside) | (inside) |{diff}")
        if s.art:
            lines.append(f"| ART SleeperAgentAttack | {_pm(results['art']['attack_success_rate'])} | "
                         f"{_pm(results['art']['clean_accuracy'])} | {_pm(results['art']['craft_time_s'], 1.0)} | "
                         f"{_pm(results['art']['pretrain_s'], 1.0)} | {_pm(results['art']['retrain_s'], 1.0)} | – |")
        lines.append("")
        if s.art:
            art_time = np.mean(results["art"]["craft_time_s"])
            art_without = np.mean(np.asarray(results["art"]["craft_time_s"]) - np.asarray(results["art"]["retrain_s"]))
            ratios = ", ".join(f"{'parley' if name == 'parley' else name} "
                               f"{np.mean(results[name]['craft_time_s']) / art_time:.2f}x "
                               f"({np.mean(results[name]['craft_time_s']) / art_without:.2f}x)" for name, _ in variants)
            lines.append(f"Crafting-time ratio parley / ART: {ratios} (in brackets: against ART's time without its "
                         "surrogate retrainings, which ART 1.20's matching loop does not use).")
            lines.append("")
        lines += [
            "Per pair (ASR / crafting time):",
            "",
            "| pair | no poisons | " + " | ".join(m for m in methods[1:]) + " |",
            "|---|" + "---|" * len(methods),
            *per_pair,
            "",
        ]
        return "\n".join(lines)

    for p, (source, target) in enumerate(pairs):
        seed = s.seed + p
        scenario = Scenario.from_dataset(dataset, source, target, budget=s.budget, eps=s.eps, recipe=recipe,
                                         victim=s.victim, victim_kwargs={"width": s.width}, allow_relabel=False,
                                         seed=seed, device="cpu")
        crafted: list[tuple[str, Submission | None, dict[str, float]]] = [("none", None, {"craft_time_s": 0.0})]
        for name, config in variants:
            crafted.append((name, *craft_ours(scenario, config)))
        if s.art:
            crafted.append(("art", *craft_art(scenario, dataset, s)))
        row = [f"{source}->{target}"]
        for method, submission, timing in crafted:
            metrics = judge(dataset, scenario, submission, seed, s.victim_seeds, s.eval_draws) | timing
            for key, value in metrics.items():
                results[method].setdefault(key, []).append(value)
            if method != "none":
                row.append(f"{100 * metrics['attack_success_rate']:.0f}% / {metrics['craft_time_s']:.0f}s")
            else:
                row.append(f"{100 * metrics['attack_success_rate']:.0f}%")
            print(f"pair {source}->{target} {method:6s} " + " ".join(f"{k}={v:.3g}" for k, v in metrics.items()),
                  flush=True)
        per_pair.append("| " + " | ".join(row) + " |")
        if s.write:
            save_results_section(render(), RESULTS)

    table = render()
    print(table)
    return table


if __name__ == "__main__":
    main()
