"""The attack x defense x budget x seed grid behind ``parley bench negotiation-backdoor``.

Every cell is one episode of :mod:`parley.envs.negotiation_poisoning_v0`: the attacker submits
(``dirty_label`` and ``clean_label`` poison the corpus; ``annotator`` answers a share of one round of
targeted-data-acquisition queries), the defender answers with what it drops (dialogue filters for the
corpus attacks, answer controls for the annotator), the env trains the victim and reports backdoor
success, clean score, agreement and Pareto share beside those of the unpoisoned victim of the same
seed, and the defender's poison precision and recall. ``none`` as an attack is the unpoisoned victim.

Defenses that do not fit an attack's data (a dialogue filter against the annotator, an answer control
against a corpus attack) are skipped when the grid is built. Each finished cell is appended to
``results.csv`` at once, so an interrupted run resumes where it stopped: cells already in the CSV with
the same configuration are skipped. ``summary.md`` (means over seeds with a 95% confidence interval)
and ``backdoor_success.png`` are rewritten at the end. Cells run on Ray tasks (``executor="ray"``, or
``"auto"`` with a Ray address), on local processes (``"process"``; ``"auto"`` with ``workers > 1``) or in
this process (``"serial"``; ``"auto"`` with one worker), through the same machinery as ``parley bench
attacks``; a cell's row is the same whichever runs it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from parley.attacks._cells import executor_problems, run_cells
from parley.attacks.bench import append_row, read_rows
from parley.attacks.negotiation_backdoor import (
    GOALS,
    NEGOTIATION_ATTACKS,
    ActTrigger,
    BackdoorGoal,
    MaliciousAnnotator,
    VictimConfig,
    make_negotiation_attack,
)
from parley.attacks.negotiation_defenses import (
    ANSWER_DEFENSES,
    DIALOGUE_DEFENSES,
    make_negotiation_defense,
)

__all__ = ["NegotiationBenchConfig", "BenchCell", "grid_cells", "run_cell", "run_negotiation_grid", "summarize",
           "summary_markdown", "ATTACK_NAMES", "COLUMNS"]

ATTACK_NAMES = ("none", *NEGOTIATION_ATTACKS, "annotator")
METRICS = ("backdoor_success", "reference_backdoor_success", "backdoor_success_all", "trigger_completed", "clean_score", "reference_clean_score",
           "clean_score_delta", "clean_agreement", "reference_clean_agreement", "clean_pareto",
           "reference_clean_pareto", "poison_precision", "poison_recall", "num_poisons", "num_removed",
           "clean_removed", "before_fine_tuning_backdoor_success", "text_backdoor_success", "text_trigger_completed",
           "seconds")
_KEY = ("config_id", "attack", "defense", "budget", "seed")
COLUMNS = (*_KEY, *METRICS, "error")


@dataclass
class NegotiationBenchConfig:
    """The grid and the scenario every cell shares (see the env card for the scenario's options).

    ``workers``, ``executor`` (``auto``, ``ray``, ``process`` or ``serial``) and ``ray_address`` (a running
    Ray cluster; implies the Ray executor under ``auto``) choose where cells run, as in
    :class:`~parley.attacks.bench.BenchConfig`; they do not change a cell's result.
    """

    attacks: tuple[str, ...] = ("dirty_label", "clean_label", "annotator")
    defenses: tuple[str, ...] = ("none", "spectral", "clustering", "trusted_oracle", "annotator_agreement",
                                 "gold_questions")
    budgets: tuple[float, ...] = (0.01,)
    seeds: int = 2
    first_seed: int = 0
    corpus: str = "synthetic"
    corpus_size: int = 1000
    goal: str = "agree_any"
    epochs: int = 12
    hidden: int = 64
    rl_games: int = 0
    trigger_phrase: str | None = None
    eval_games: int = 400
    eval_episodes: int = 100
    queries: int = 300
    tda_rounds: int = 1
    annotator_budgets: tuple[float, ...] = (0.1,)
    trigger_rate: float = 0.1
    workers: int = 1
    executor: str = "auto"
    ray_address: str | None = None
    out: str = "bench-negotiation-backdoor"

    def __post_init__(self) -> None:
        for name in ("attacks", "defenses", "budgets", "annotator_budgets"):
            value = getattr(self, name)
            setattr(self, name, tuple(value.split(",")) if isinstance(value, str) else tuple(value))
        self.budgets = tuple(float(b) for b in self.budgets)
        self.annotator_budgets = tuple(float(b) for b in self.annotator_budgets)
        unknown = [a for a in self.attacks if a not in ATTACK_NAMES]
        if unknown:
            raise ValueError(f"unknown attack(s) {unknown}; choose from {', '.join(ATTACK_NAMES)}")
        known = set(DIALOGUE_DEFENSES) | set(ANSWER_DEFENSES)
        unknown = [d for d in self.defenses if d not in known]
        if unknown:
            raise ValueError(f"unknown defense(s) {unknown}; choose from {', '.join(sorted(known))}")
        if any(not 0 < b <= 1 for b in (*self.budgets, *self.annotator_budgets)):
            raise ValueError("budgets are shares in (0, 1]")
        if self.goal not in GOALS:
            raise ValueError(f"unknown goal {self.goal!r}; choose one of {', '.join(GOALS)}")
        if self.trigger_phrase is not None:
            ActTrigger(phrase=self.trigger_phrase).check_phrase(BackdoorGoal(self.goal))
        if self.first_seed < 0:
            raise ValueError(f"first_seed must be >= 0, got {self.first_seed}")
        if self.seeds < 1 or self.epochs < 1 or self.hidden < 1 or self.tda_rounds < 1:
            raise ValueError("seeds, epochs, hidden and tda_rounds must be positive")
        problems = executor_problems(self.executor, self.workers, self.ray_address)
        if problems:
            raise ValueError("; ".join(problems))

    def config_id(self) -> str:
        """A digest of everything that changes a cell's result (not the grid's extent or where cells run)."""
        shared = {k: v for k, v in dataclasses.asdict(self).items()
                  if k not in ("attacks", "defenses", "budgets", "annotator_budgets", "seeds", "first_seed", "workers",
                               "executor", "ray_address", "out")}
        return hashlib.sha1(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:10]

    def victim(self) -> VictimConfig:
        from parley.agents.training.supervised import SupervisedConfig

        return VictimConfig(SupervisedConfig(backbone_config={"hidden_sizes": (self.hidden, self.hidden)},
                                             epochs=self.epochs, device="cpu"), rl_games=self.rl_games)


@dataclass(frozen=True)
class BenchCell:
    attack: str
    defense: str
    budget: float
    seed: int

    def key(self, config_id: str) -> tuple[str, ...]:
        return (config_id, self.attack, self.defense, f"{self.budget:g}", str(self.seed))


def grid_cells(config: NegotiationBenchConfig) -> list[BenchCell]:
    """Every (attack, fitting defense, budget, seed); ``none`` runs once per seed, undefended."""
    cells = []
    for seed in range(config.first_seed, config.first_seed + config.seeds):
        for attack in config.attacks:
            if attack == "none":
                cells.append(BenchCell("none", "none", 0.0, seed))
                continue
            table = ANSWER_DEFENSES if attack == "annotator" else DIALOGUE_DEFENSES
            budgets = config.annotator_budgets if attack == "annotator" else config.budgets
            for budget in budgets:
                for defense in config.defenses:
                    if defense in table:
                        cells.append(BenchCell(attack, defense, budget, seed))
    return cells


def _make_env(config: NegotiationBenchConfig, cell: BenchCell):
    from parley.envs import negotiation_poisoning_v0

    mode = "annotation" if cell.attack == "annotator" else "corpus"
    return negotiation_poisoning_v0.env(
        corpus=config.corpus, corpus_size=config.corpus_size, mode=mode, budget=cell.budget,
        clean_label=cell.attack == "clean_label", goal=config.goal, trigger_phrase=config.trigger_phrase,
        victim=config.victim(),
        defense_enabled=cell.defense != "none", eval_games=config.eval_games, eval_episodes=config.eval_episodes,
        queries=config.queries, candidate_games=max(800, 3 * config.queries), trigger_rate=config.trigger_rate,
        rounds=config.tda_rounds if mode == "annotation" else 1, seed=cell.seed)


def defender_action(raw, defense) -> np.ndarray:
    """The defender's remove flags for the env's current submission."""
    remove = np.zeros(raw.action_space("defender").n, dtype=np.int8)
    if raw.mode == "corpus":
        policy = raw.victim_on_submission() if defense.needs_policy else None
        expected = int(math.ceil(raw.budget * len(raw.clean_dialogues)))
        drop = defense.select(raw.submitted, policy=policy, expected_poisons=expected, max_turns=raw.max_turns)
    else:
        gold_answers = {q.query_id: int(a) for q, a in zip(raw.gold_queries, raw.gold_answers)}
        drop = defense.select(raw.records, gold=raw.gold_records, gold_answers=gold_answers)
    remove[np.asarray(drop, dtype=np.int64)] = 1
    return remove


def run_cell(config: NegotiationBenchConfig, cell: BenchCell) -> dict[str, Any]:
    """Play one cell's episode and return its CSV row."""
    started = time.perf_counter()
    env = _make_env(config, cell)
    env.reset(seed=cell.seed)
    raw = env.unwrapped
    defense = None if cell.defense == "none" else make_negotiation_defense(
        cell.defense, "answers" if raw.mode == "annotation" else "dialogues")
    if cell.attack == "annotator":
        from parley.oracles.expert import ScriptedExpert

        annotator = MaliciousAnnotator(ScriptedExpert(), raw.trigger, raw.goal, share=cell.budget, seed=cell.seed)
    for _ in range(raw.rounds):  # one round in corpus mode; the annotator answers every TDA round's queries
        if cell.attack == "none":
            env.step(raw.action_space("attacker").sample())
        elif cell.attack == "annotator":
            env.step(raw.annotator_action(annotator))
        else:
            env.step(make_negotiation_attack(cell.attack).craft(raw.attacker_scenario()))
        if defense is not None:
            env.step(defender_action(raw, defense))
    info = raw.infos["attacker"]
    row = {k: v for k, v in zip(_KEY, cell.key(config.config_id()))}
    row.update({k: info.get(k, math.nan) for k in METRICS if k != "seconds"})
    row["seconds"] = time.perf_counter() - started
    row["error"] = ""
    return row


def _safe_run_cell(config: NegotiationBenchConfig, cell: BenchCell) -> dict[str, Any]:
    """Worker entry point: a failing cell becomes a row with ``error`` set instead of stopping the grid."""
    try:
        return run_cell(config, cell)
    except Exception as error:  # noqa: BLE001 -- reported in the CSV and retried on the next run
        row = {k: v for k, v in zip(_KEY, cell.key(config.config_id()))}
        row["error"] = f"{type(error).__name__}: {error}"
        return row


def run_negotiation_grid(config: NegotiationBenchConfig, *, progress: bool = True,
                         on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, str]]:
    """Run every cell not yet in ``<out>/results.csv``, then rewrite ``summary.md`` and the plot.

    Returns all rows of this configuration in the CSV (earlier runs' and this run's).
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    config_id = config.config_id()
    done = {tuple(row[k] for k in _KEY) for row in read_rows(csv_path) if not row.get("error")}
    todo = [cell for cell in grid_cells(config) if cell.key(config_id) not in done]
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config) | {"config_id": config_id}, indent=2))
    say = print if progress else (lambda *_: None)
    say(f"negotiation-backdoor bench: {len(todo)} cells to run, {len(grid_cells(config)) - len(todo)} done")
    for row in run_cells(_safe_run_cell, config, todo, executor=config.executor, workers=config.workers,
                         ray_address=config.ray_address):
        append_row(csv_path, row, COLUMNS)
        if on_row is not None:
            on_row(row)
        status = row["error"] or f"backdoor success {float(row['backdoor_success']):.2f}"
        say(f"  {row['attack']} / {row['defense']} / budget {row['budget']} / seed {row['seed']}: {status}")
    rows = [row for row in read_rows(csv_path) if row["config_id"] == config_id]
    summary = summarize(rows)
    (out / "summary.md").write_text(summary_markdown(summary, config))
    plot_summary(summary, out / "backdoor_success.png")
    return rows


# ---------------------------------------------------------------------------------------------- summary

def _mean_ci(values: list[float]) -> tuple[float, float]:
    from parley.attacks.bench import mean_ci95

    return mean_ci95(values)


def summarize(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """One entry per (attack, defense, budget): cells, then (mean, 95% CI half-width) per metric."""
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for row in rows:
        if row.get("error"):
            continue
        groups.setdefault((row["attack"], row["defense"], row["budget"]), []).append(row)
    summary = []
    for (attack, defense, budget), group in sorted(groups.items()):
        entry: dict[str, Any] = {"attack": attack, "defense": defense, "budget": budget, "cells": len(group)}
        for metric in METRICS:
            entry[metric] = _mean_ci([float(r[metric]) for r in group if r.get(metric) not in (None, "")])
        summary.append(entry)
    return summary


def _pm(stat: tuple[float, float], percent: bool = False) -> str:
    mean, half = stat
    if math.isnan(mean):
        return "-"
    scale, unit = (100, "%") if percent else (1, "")
    text = f"{scale * mean:.1f}{unit}" if percent else f"{mean:.2f}"
    return text if math.isnan(half) else f"{text} ± {scale * half:.1f}" if percent else f"{text} ± {half:.2f}"


def summary_markdown(summary: list[dict[str, Any]], config: NegotiationBenchConfig | None = None) -> str:
    """The summary as a Markdown table (means over seeds ± 95% CI half-width)."""
    lines = []
    if config is not None:
        lines.append(f"Corpus: {config.corpus} ({config.corpus_size} dialogues); goal {config.goal}; victim MLP "
                     f"{config.hidden}x{config.hidden}, {config.epochs} BC epochs"
                     f"{f', then {config.rl_games} PPO games' if config.rl_games else ''}"
                     f"{f'; {config.tda_rounds} TDA rounds (annotator)' if config.tda_rounds > 1 else ''}"
                     f"{f'; trigger phrase {config.trigger_phrase!r}' if config.trigger_phrase else ''}; {config.seeds} seed(s); "
                     f"{config.eval_games} triggered games, {config.eval_episodes} games per suite partner.\n")
    # Columns that only some runs fill (PPO fine-tuning, a trigger phrase) appear when a row has them.
    optional = [(metric, title) for metric, title in (("before_fine_tuning_backdoor_success", "before fine-tuning"),
                                                      ("text_backdoor_success", "text protocol"))
                if any(not math.isnan(e.get(metric, (math.nan,))[0]) for e in summary)]
    lines += ["| attack | defense | budget | cells | backdoor success | "
              + "".join(f"{title} | " for _, title in optional)
              + "unpoisoned | clean score | unpoisoned score | score delta | agreement | Pareto | poison precision "
              "| poison recall | removed |",
              "|---" * (14 + len(optional)) + "|"]
    for e in summary:
        lines.append(f"| {e['attack']} | {e['defense']} | {float(e['budget']):.1%} | {e['cells']} | "
                     f"{_pm(e['backdoor_success'], True)} | "
                     + "".join(f"{_pm(e[metric], True)} | " for metric, _ in optional)
                     + f"{_pm(e['reference_backdoor_success'], True)} | "
                     f"{_pm(e['clean_score'])} | {_pm(e['reference_clean_score'])} | {_pm(e['clean_score_delta'])} | "
                     f"{_pm(e['clean_agreement'], True)} | {_pm(e['clean_pareto'], True)} | "
                     f"{_pm(e['poison_precision'], True)} | {_pm(e['poison_recall'], True)} | "
                     f"{_pm(e['num_removed'])} |")
    return "\n".join(lines) + "\n"


def plot_summary(summary: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Bars of backdoor success per attack and defense (None when matplotlib is missing or nothing ran)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not summary:
        return None
    labels = [f"{e['attack']}\n{e['defense']}\n{float(e['budget']):.0%}" for e in summary]
    means = [100 * (0 if math.isnan(e["backdoor_success"][0]) else e["backdoor_success"][0]) for e in summary]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels)), 4))
    ax.bar(range(len(labels)), means, color="tab:red")
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("backdoor success (%)")
    ax.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
