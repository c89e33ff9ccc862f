"""The attack x defense benchmark grid behind ``parley bench attacks``.

Every cell of the grid -- one attack, one defense, one source/target pair, one seed -- is one episode
of :mod:`parley.envs.poisoning_v0`: the attacker crafts its submission from the env's scenario, the
defender answers with the training indices it removes (filter defenses), the env trains the victim
from scratch and reports clean accuracy, attack success rate (ASR) and robust accuracy. Training-time
defenses change the victim's recipe; STRIP, an inference-time defense, removes nothing and adds its
detection rate on patched source-class test images.

Cells run on Ray tasks (``executor="ray"``, or ``"auto"`` with a Ray address), on local processes
(``"process"``; ``"auto"`` with ``workers > 1``) or in this process (``"serial"``; ``"auto"`` with one
worker). Each finished cell is appended to ``results.csv`` at once, so an interrupted run resumes where
it stopped: cells already in the CSV with the same configuration are skipped. The summary table
(``summary.md``: mean over source/target pairs with a 95% confidence interval) and plots (``asr.png``) are rewritten at the end.

>>> from parley.attacks.bench import BenchConfig, run_grid
>>> rows = run_grid(BenchConfig(dataset="digits", attacks=("sleeper_agent", "random"),
...                             defenses=("none", "spectral"), pairs=5, seeds=3, out="bench-out"))
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import time
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from parley.attacks._cells import executor_problems, run_cells
from parley.attacks.checks import check_type

__all__ = [
    "BenchConfig",
    "Cell",
    "RECIPES",
    "validate",
    "draw_pairs",
    "grid_cells",
    "play_episode",
    "strip_rates",
    "run_cell",
    "run_grid",
    "read_rows",
    "summarize",
    "summary_markdown",
    "mean_ci95",
    "plot_summary",
]

#: Victim training schedules selectable by name (``TrainingRecipe`` class methods).
RECIPES = ("tiny", "dataset", "paper")

#: Columns of ``results.csv``, in order.
COLUMNS = (
    "config_id", "dataset", "victim", "recipe", "attack", "defense", "pair", "source_class", "target_class",
    "seed", "attack_success_rate", "full_attack_success_rate", "clean_accuracy", "clean_accuracy_drop",
    "reference_clean_accuracy", "reference_attack_success_rate", "robust_accuracy", "full_robust_accuracy",
    "craft_time_s", "defense_time_s", "train_time_s", "episode_time_s", "poisons", "removed", "poison_precision",
    "poison_recall", "strip_detection_rate", "strip_false_rejection_rate", "attacker_reward", "defender_reward",
    "error",
)
_KEY = ("config_id", "attack", "defense", "source_class", "target_class", "seed")


#: Bumped when the attacks' default schedules change, so that cells crafted under the old ones are rerun
#: (2: Sleeper Agent takes its schedule for the dataset, see ``make_attack_for``; 3: the small-image
#: schedule became ART's short un-augmented one, see ``SleeperAgentConfig.small_images``; 4: that
#: schedule matches an ensemble of two surrogates; 5: stamp attacks paste a full-contrast trigger,
#: BadNets is all-to-one, and the metrics gained full ASR and the clean reference).
ATTACK_SCHEDULE = 5

@dataclass
class BenchConfig:
    """One benchmark grid.

    Args:
        dataset: Dataset name for :func:`~parley.attacks.datasets.load_dataset` (``digits``, ``mnist5k``,
            ``synthetic``; ``cifar10`` and ``mnist`` need ``dataset_kwargs={"path": ...}``).
        attacks: Attack names (aliases such as ``random`` and ``sleeper`` allowed).
        defenses: Defense names (see :func:`~parley.attacks.defenses.list_defenses`).
        pairs: Number of (source, target) class pairs, drawn once from ``pair_seed`` and shared by every
            attack, defense and seed.
        seeds: Seeds per pair (0, 1, ...): they seed the env (trigger, victim training) and the attack.
        budget: Poison budget as a fraction of the training set.
        eps: l-infinity bound of each perturbation.
        victim: Victim architecture (``small_cnn``, ``resnet18``, ...).
        victim_kwargs: Keyword arguments of the victim factory (e.g. ``{"width": 16}``).
        recipe: Victim schedule: ``tiny`` (2 epochs, smoke runs), ``dataset`` (scaled default) or
            ``paper`` (Sleeper Agent's 40-epoch CIFAR-10 schedule); ``recipe_overrides`` edits fields.
        epochs: Stretch or squeeze the recipe to this many epochs (lr drops moved proportionally).
        attack_kwargs: Per-attack config overrides, ``{"sleeper_agent": {"steps": 60}}``.
        defense_kwargs: Per-defense constructor arguments.
        pair_seed: Seed of the pair draw.
        trigger_placement: ``random`` (a fresh place per image, as in Sleeper Agent) or ``fixed`` (the
            bottom-right corner, as BackdoorBench places BadNets' patch).
        dataset_kwargs: Keyword arguments of the dataset loader.
        train_subset: Keep this many training images per class (stratified), or None for all.
        workers: Parallel cells.
        executor: ``auto``, ``ray``, ``process`` or ``serial``.
        ray_address: Address of a running Ray cluster (implies the Ray executor under ``auto``).
        threads_per_worker: torch threads inside each cell.
        device: Where victims and attacks compute (``auto`` picks CUDA when present).
        out: Output folder for ``results.csv``, ``summary.md`` and plots.
    """

    dataset: str = "mnist5k"
    attacks: tuple[str, ...] = ("sleeper_agent", "badnets", "htba", "random")
    defenses: tuple[str, ...] = ("none", "spectral")
    pairs: int = 10
    seeds: int = 1
    budget: float = 0.05
    eps: float = 16 / 255
    victim: str = "small_cnn"
    victim_kwargs: dict[str, Any] = field(default_factory=dict)
    recipe: str = "dataset"
    recipe_overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    attack_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    defense_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pair_seed: int = 0
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    train_subset: int | None = None
    workers: int = 1
    executor: str = "auto"
    ray_address: str | None = None
    threads_per_worker: int = 1
    device: str = "auto"
    out: str = "bench-attacks"
    trigger_placement: str = "random"

    def __post_init__(self) -> None:
        self.attacks = tuple(self.attacks)
        self.defenses = tuple(self.defenses)

    def config_id(self) -> str:
        """Hash of everything that changes a cell's result (not the grid size, workers or output)."""
        relevant = {k: getattr(self, k) for k in (
            "dataset", "budget", "eps", "victim", "victim_kwargs", "recipe", "recipe_overrides", "epochs",
            "attack_kwargs", "defense_kwargs", "dataset_kwargs", "train_subset", "trigger_placement")}
        relevant["attack_schedule"] = ATTACK_SCHEDULE
        blob = json.dumps(relevant, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Cell:
    """One episode of the grid."""

    attack: str
    defense: str
    pair: int
    source_class: int
    target_class: int
    seed: int

    def key(self, config_id: str) -> tuple[str, ...]:
        return (config_id, self.attack, self.defense, str(self.source_class), str(self.target_class),
                str(self.seed))


# ------------------------------------------------------------------------------------------- validation

def validate(config: BenchConfig) -> None:
    """Raise ``ValueError`` naming every unknown attack, defense, dataset or option -- before any work."""
    from parley.attacks.base import ATTACK_ALIASES, list_attacks
    from parley.attacks.datasets import DATASETS
    from parley.attacks.defenses import list_defenses
    from parley.attacks.victims import available_victims

    problems: list[str] = []
    hints = typing.get_type_hints(BenchConfig)
    for item in dataclasses.fields(config):
        try:
            check_type("BenchConfig", item.name, getattr(config, item.name), hints[item.name])
        except TypeError as error:
            problems.append(str(error))
    if problems:  # wrong types make the value checks below meaningless
        raise ValueError("; ".join(problems))
    from parley.attacks.triggers import PLACEMENTS

    if config.trigger_placement not in PLACEMENTS:
        problems.append(f"unknown trigger placement {config.trigger_placement!r}; choose from {', '.join(PLACEMENTS)}")
    if config.threads_per_worker < 1:
        problems.append(f"threads_per_worker must be >= 1, got {config.threads_per_worker}")
    if config.train_subset is not None and config.train_subset < 1:
        problems.append(f"train_subset must be >= 1 image per class, got {config.train_subset}")
    if config.device != "auto" and config.device != "cpu" and not config.device.startswith("cuda"):
        problems.append(f"unknown device {config.device!r}; choose from auto, cpu, cuda, cuda:N")
    if config.recipe_overrides:
        from parley.attacks.victims import TrainingRecipe

        try:
            TrainingRecipe().replace(**config.recipe_overrides)
        except (TypeError, ValueError) as error:
            problems.append(f"recipe_overrides: {error}")
    if config.dataset not in DATASETS:
        problems.append(f"unknown dataset {config.dataset!r}; choose one of {', '.join(DATASETS)}")
    elif config.dataset in ("cifar10", "mnist") and "path" not in config.dataset_kwargs:
        problems.append(f"dataset {config.dataset!r} is read from local files: give its folder as a path")
    known_attacks = list_attacks()
    bad_attacks = [a for a in config.attacks if ATTACK_ALIASES.get(a, a) not in known_attacks]
    if bad_attacks:
        problems.append(f"unknown attack(s) {', '.join(map(repr, bad_attacks))}; choose from {', '.join(known_attacks)} "
                        f"(aliases: {', '.join(f'{k}={v}' for k, v in ATTACK_ALIASES.items())})")
    bad_defenses = [d for d in config.defenses if d not in list_defenses()]
    if bad_defenses:
        problems.append(f"unknown defense(s) {', '.join(map(repr, bad_defenses))}; choose from {', '.join(list_defenses())}")
    if not config.attacks or not config.defenses:
        problems.append("give at least one attack and one defense")
    if len(set(config.attacks)) != len(config.attacks) or len(set(config.defenses)) != len(config.defenses):
        problems.append("attack and defense names must not repeat")
    if not bad_attacks and not bad_defenses:
        from parley.attacks.base import make_attack
        from parley.attacks.defenses import make_defense

        for kind, names, options, factory in (("attack", config.attacks, config.attack_kwargs, make_attack),
                                              ("defense", config.defenses, config.defense_kwargs, make_defense)):
            unused = set(options) - set(names)
            if unused:
                problems.append(f"options given for {kind}(s) not in the grid: {', '.join(sorted(unused))}")
            for name in names:
                try:
                    factory(name, **options.get(name, {}))
                except (TypeError, ValueError) as error:
                    problems.append(f"{kind} {name!r}: {error}")
    if config.victim not in available_victims():
        problems.append(f"unknown victim {config.victim!r}; choose from {', '.join(available_victims())}")
    if config.recipe not in RECIPES:
        problems.append(f"unknown recipe {config.recipe!r}; choose from {', '.join(RECIPES)}")
    if config.epochs is not None and config.epochs < 1:
        problems.append(f"epochs must be >= 1, got {config.epochs}")
    if config.pairs < 1 or config.seeds < 1:
        problems.append("pairs and seeds must be >= 1")
    problems += executor_problems(config.executor, config.workers, config.ray_address)
    if not 0 < config.budget <= 1:
        problems.append(f"budget is a fraction of the training set in (0, 1], got {config.budget}")
    if not 0 < config.eps <= 1:
        problems.append(f"eps is an l-infinity bound in (0, 1], got {config.eps}")
    if problems:
        raise ValueError("; ".join(problems))


# ------------------------------------------------------------------------------------------------ cells

def draw_pairs(num_classes: int, pairs: int, seed: int = 0) -> list[tuple[int, int]]:
    """``pairs`` distinct (source, target) class pairs, source != target, in a seeded order."""
    every = [(s, t) for s in range(num_classes) for t in range(num_classes) if s != t]
    if pairs > len(every):
        raise ValueError(f"{pairs} pairs requested but {num_classes} classes give only {len(every)}")
    order = np.random.default_rng(seed).permutation(len(every))[:pairs]
    return [every[i] for i in order]


def grid_cells(config: BenchConfig, num_classes: int) -> list[Cell]:
    """Every cell of the grid, pair-major so early results already cover every attack and defense."""
    pairs = draw_pairs(num_classes, config.pairs, config.pair_seed)
    return [Cell(attack, defense, p, source, target, seed)
            for seed in range(config.seeds)
            for p, (source, target) in enumerate(pairs)
            for attack in config.attacks
            for defense in config.defenses]


def _load(config: BenchConfig):
    from parley.attacks.datasets import load_dataset

    dataset = load_dataset(config.dataset, **config.dataset_kwargs)
    if config.train_subset is not None:
        dataset = dataset.subset(config.train_subset)
    return dataset


def _recipe(config: BenchConfig, dataset):
    from parley.attacks.victims import TrainingRecipe

    base = {"tiny": lambda: TrainingRecipe.tiny(dataset), "dataset": lambda: TrainingRecipe.for_dataset(dataset),
            "paper": TrainingRecipe.paper_cifar10}[config.recipe]()
    if config.epochs is not None:
        base = base.scaled(config.epochs)
    return base.replace(**config.recipe_overrides) if config.recipe_overrides else base


def play_episode(env, attack, defense, *, source_class: int, target_class: int, seed: int,
                 strip_eval: bool = False) -> dict[str, Any]:
    """One ``poisoning_v0`` episode: the attack crafts from the env's scenario, the defense answers as
    the defender; returns the final infos flattened, plus both rewards (and STRIP's rates when asked)."""
    from parley.attacks.defenses import defender_action

    raw = env.unwrapped
    env.reset(seed=seed, options={"source_class": source_class, "target_class": target_class})
    final: dict[str, Any] = {}
    for agent in env.agent_iter():
        observation, reward, terminated, truncated, info = env.last()
        if terminated or truncated:
            final = {**info, **final, f"{agent}_reward": reward}
            env.step(None)
            continue
        if agent == "attacker":
            env.step(attack.craft(raw.attacker_scenario()))
        else:
            env.step(defender_action(defense, observation, make_model=lambda: raw.attacker_scenario().make_model(),
                                     recipe=raw.recipe, seed=raw.episode_seed + 7, device=raw.device))
    final["craft_time_s"] = final.get("attack_info", {}).get("craft_time_s", final.get("attacker_time_s"))
    final["defense_time_s"] = final.get("defender_time_s", 0.0)
    final["poisons"] = final.get("num_poisons")
    final["removed"] = final.get("num_removed")
    if strip_eval:
        final.update(strip_rates(defense, raw.last_model, raw, seed))
    return final


def strip_rates(strip, model, raw_env, seed: int) -> dict[str, float]:
    """STRIP's detection rate on patched source-class test images and its false rejection rate on clean
    test images. Half of the test set (even positions) is the clean overlay and calibration pool, the
    other half is scored."""
    import torch

    dataset = raw_env.dataset
    x_test, y_test = dataset.x_test, dataset.y_test.numpy()
    pool = x_test[0::2]
    held_out = np.arange(1, len(x_test), 2)
    source = held_out[y_test[held_out] == raw_env.source_class]
    patched = raw_env.trigger.apply(x_test[torch.as_tensor(source)], seed=seed)
    clean = x_test[torch.as_tensor(held_out[y_test[held_out] != raw_env.target_class])]
    return {"strip_detection_rate": float(strip.detect(model, patched, pool).mean()) if len(source) else math.nan,
            "strip_false_rejection_rate": float(strip.detect(model, clean, pool).mean())}


def run_cell(config: BenchConfig, cell: Cell, dataset=None) -> dict[str, Any]:
    """Play one cell as a ``poisoning_v0`` episode and return its CSV row."""
    import torch

    from parley.attacks.base import make_attack_for
    from parley.attacks.defenses import make_defense
    from parley.envs import poisoning_v0

    torch.set_num_threads(max(1, config.threads_per_worker))
    start = time.perf_counter()
    dataset = dataset if dataset is not None else _load(config)
    defense = make_defense(cell.defense, **config.defense_kwargs.get(cell.defense, {}))
    attack = make_attack_for(cell.attack, dataset, **config.attack_kwargs.get(cell.attack, {}))
    env = poisoning_v0.env(
        dataset=dataset, budget=config.budget, eps=config.eps, recipe=_recipe(config, dataset),
        defense_enabled=True, seed=cell.seed, victim=config.victim, victim_kwargs=config.victim_kwargs,
        allow_relabel=True, training_defense=defense if defense.stage == "training" else None,
        device=config.device, trigger_placement=config.trigger_placement)
    episode = play_episode(env, attack, defense, source_class=cell.source_class, target_class=cell.target_class,
                           seed=cell.seed, strip_eval=defense.stage == "inference")
    env.close()
    row = {column: "" for column in COLUMNS}
    row.update({k: v for k, v in episode.items() if k in COLUMNS})
    row.update({
        "config_id": config.config_id(), "dataset": config.dataset, "victim": config.victim,
        "recipe": config.recipe, "attack": cell.attack, "defense": cell.defense, "pair": cell.pair,
        "source_class": cell.source_class, "target_class": cell.target_class, "seed": cell.seed,
        "episode_time_s": time.perf_counter() - start,
    })
    return row


def _error_row(config: BenchConfig, cell: Cell, error: BaseException) -> dict[str, Any]:
    row = {column: "" for column in COLUMNS}
    row.update({"config_id": config.config_id(), "dataset": config.dataset, "victim": config.victim,
                "recipe": config.recipe, "attack": cell.attack, "defense": cell.defense, "pair": cell.pair,
                "source_class": cell.source_class, "target_class": cell.target_class, "seed": cell.seed,
                "error": f"{type(error).__name__}: {error}"[:500]})
    return row


def _safe_run_cell(config: BenchConfig, cell: Cell) -> dict[str, Any]:
    """Worker entry point: a failing cell becomes a row with ``error`` set instead of killing the grid."""
    try:
        return run_cell(config, cell)
    except Exception as error:  # noqa: BLE001 -- reported in the CSV and retried on the next run
        return _error_row(config, cell, error)


# ------------------------------------------------------------------------------------------------- grid

def read_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of a ``results.csv`` (empty when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def append_row(path: Path, row: dict[str, Any], columns: Sequence[str]) -> None:
    """Append ``row`` to a ``results.csv`` with ``columns`` (the header is written first into a new file);
    floats keep 6 significant digits and NaN is written empty."""
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: _fmt(v) for k, v in row.items()})


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def run_grid(config: BenchConfig, *, progress: bool = True,
             on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, str]]:
    """Run every cell not yet in ``<out>/results.csv``, then rewrite the summary and plots.

    Returns:
        All rows of this configuration in the CSV (earlier runs' and this run's).
    """
    validate(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    dataset = _load(config)
    cells = grid_cells(config, dataset.num_classes)
    config_id = config.config_id()
    done = {tuple(row[k] for k in _KEY) for row in read_rows(csv_path) if not row.get("error")}
    todo = [cell for cell in cells if cell.key(config_id) not in done]
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config) | {"config_id": config_id},
                                                indent=2, default=str))
    if todo:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("[bold]attacks bench[/]"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("{task.description}"), disable=not progress) as bar:
            task = bar.add_task(f"{len(cells) - len(todo)} cells already done", total=len(todo))
            for row in run_cells(_safe_run_cell, config, todo, executor=config.executor, workers=config.workers,
                                 ray_address=config.ray_address):
                append_row(csv_path, row, COLUMNS)
                if on_row is not None:
                    on_row(row)
                status = "error" if row.get("error") else f"ASR {float(row['attack_success_rate']):.2f}"
                bar.update(task, advance=1, description=f"{row['attack']} / {row['defense']}: {status}")
    rows = [row for row in read_rows(csv_path) if row["config_id"] == config_id]
    summary = summarize(rows, config)
    (out / "summary.md").write_text(summary_markdown(summary, config))
    plot_summary(summary, out / "asr.png")
    return rows


# ---------------------------------------------------------------------------------------------- summary

_METRICS = ("attack_success_rate", "full_attack_success_rate", "clean_accuracy", "clean_accuracy_drop",
            "robust_accuracy", "full_robust_accuracy", "reference_attack_success_rate", "craft_time_s",
            "poison_recall", "strip_detection_rate", "strip_false_rejection_rate")


def _floats(rows: list[dict[str, str]], column: str) -> np.ndarray:
    values = [float(r[column]) for r in rows if r.get(column) not in (None, "")]
    return np.array([v for v in values if not math.isnan(v)])


def mean_ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (Student's t); the half-width is NaN for
    fewer than two values, both are NaN for none."""
    values = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(values) == 0:
        return math.nan, math.nan
    if len(values) == 1:
        return float(values[0]), math.nan
    from scipy.stats import t

    half = float(t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return float(values.mean()), half


def summarize(rows: list[dict[str, str]], config: BenchConfig | None = None) -> list[dict[str, Any]]:
    """Per (attack, defense): each metric averaged over the seeds of a source/target pair, then its mean
    over pairs with a 95% confidence interval (``(mean, half_width)``; the pairs are the units, so the
    interval speaks for new pairs). Failed cells are counted apart and left out. Entries follow the
    config's attack and defense order when a config is given, else the order of first appearance."""
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    if config is not None:
        groups = {(a, d): [] for a in config.attacks for d in config.defenses}
    for row in rows:
        groups.setdefault((row["attack"], row["defense"]), []).append(row)
    groups = {key: members for key, members in groups.items() if members}
    summary = []
    for (attack, defense), members in groups.items():
        ok = [r for r in members if not r.get("error")]
        by_pair: dict[tuple[str, str], list[dict[str, str]]] = {}
        for row in ok:
            by_pair.setdefault((str(row.get("source_class")), str(row.get("target_class"))), []).append(row)
        entry: dict[str, Any] = {"attack": attack, "defense": defense, "cells": len(ok),
                                 "failed": len(members) - len(ok), "pairs": len(by_pair)}
        for metric in _METRICS:
            pair_means = [float(values.mean()) for values in (_floats(r, metric) for r in by_pair.values())
                          if len(values)]
            entry[metric] = mean_ci95(pair_means)
        summary.append(entry)
    return summary


def _pm(stat: tuple[float, float], percent: bool) -> str:
    mean, half = stat
    if math.isnan(mean):
        return "–"
    scale = 100 if percent else 1
    digits = 1 if percent or abs(mean) >= 10 else 2
    text = f"{scale * mean:.{digits}f}"
    return text if math.isnan(half) else f"{text} ± {scale * half:.{digits}f}"


def summary_markdown(summary: list[dict[str, Any]], config: BenchConfig | None = None) -> str:
    """The summary as a markdown table: means over source/target pairs ± the 95% confidence interval's
    half-width (percentages for rates, points for the clean-accuracy drop, seconds for crafting)."""
    lines = []
    if config is not None:
        lines.append(f"Dataset {config.dataset}, victim {config.victim}, recipe {config.recipe}, budget "
                     f"{config.budget:.2%}, eps {config.eps * 255:.0f}/255, trigger {config.trigger_placement}, "
                     f"{config.pairs} pairs x {config.seeds} seeds (config {config.config_id()}); mean over pairs "
                     "± 95% CI.\n")
    lines.append("| attack | defense | cells | source ASR % | full ASR % | clean acc % | clean-acc drop (points) "
                 "| R-Acc % | patch alone ASR % | crafting s | poison recall % | STRIP detection % "
                 "| STRIP false rejection % |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for e in summary:
        cells = f"{e['cells']}" + (f" ({e['failed']} failed)" if e["failed"] else "")
        lines.append(f"| {e['attack']} | {e['defense']} | {cells} | {_pm(e['attack_success_rate'], True)} | "
                     f"{_pm(e['full_attack_success_rate'], True)} | {_pm(e['clean_accuracy'], True)} | "
                     f"{_pm(e['clean_accuracy_drop'], True)} | {_pm(e['robust_accuracy'], True)} | "
                     f"{_pm(e['reference_attack_success_rate'], True)} | {_pm(e['craft_time_s'], False)} | "
                     f"{_pm(e['poison_recall'], True)} | {_pm(e['strip_detection_rate'], True)} | "
                     f"{_pm(e['strip_false_rejection_rate'], True)} |")
    return "\n".join(lines) + "\n"


def plot_summary(summary: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Grouped bar charts of ASR and clean accuracy (mean ± 95% CI) per attack and defense, saved as PNG.
    Returns None (and draws nothing) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    attacks = list(dict.fromkeys(e["attack"] for e in summary))
    defenses = list(dict.fromkeys(e["defense"] for e in summary))
    lookup = {(e["attack"], e["defense"]): e for e in summary}
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.6 * len(attacks) * 2), 3.6), sharey=True)
    width = 0.8 / max(1, len(defenses))
    for ax, metric, title in zip(axes, ("attack_success_rate", "clean_accuracy"), ("ASR", "clean accuracy"),
                                 strict=True):
        for j, defense in enumerate(defenses):
            stats = [lookup.get((a, defense), {}).get(metric, (math.nan, math.nan)) for a in attacks]
            xs = np.arange(len(attacks)) + (j - (len(defenses) - 1) / 2) * width
            ax.bar(xs, [100 * s[0] for s in stats], width, yerr=[100 * np.nan_to_num(s[1]) for s in stats], label=defense,
                   capsize=2)
        ax.set_xticks(np.arange(len(attacks)), attacks, rotation=20)
        ax.set_title(f"{title} (%)")
        ax.set_ylim(0, 100)
    axes[0].legend(title="defense", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
