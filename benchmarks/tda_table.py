"""Targeted data acquisition against its baselines: the comparison of Kwon et al. (2021), in one table.

    python benchmarks/tda_table.py                       # corpus at ../shared/data/dealornodeal if present
    python benchmarks/tda_table.py --corpus PATH         # a Deal-or-No-Deal data.txt (or its directory)
    python benchmarks/tda_table.py --synthetic           # the synthetic corpus of scripted dialogues
    python benchmarks/tda_table.py --quick --no-append   # a smoke run of the script itself

What it does, per seed:

1. parse the corpus into coarse acts (dialogues of ``test.txt`` are dropped from ``data.txt``) and split
   it by scenario: 70% train the SL policy -- the starting point of every method and the fixed partner
   model of the RL baselines -- and 30%, never seen by any method, train a **held-out SL partner**;
2. train every method of :data:`parley.oracles.tda.METHODS` from that SL policy under one harness
   (``sl``, ``rl``, ``sl+rl``, ``rl_pareto``, ``rl_prosocial``, ``rl_fair``, ``tda`` with the scripted
   expert oracle); the RL methods get the TDA learner's game budget;
3. evaluate each with :func:`parley.agents.evaluation.evaluate_policy` against (i) the scripted
   partner suite (every game against every partner pooled), (ii) the held-out SL partner and (iii) the
   held-out scripted families of :mod:`parley.agents.heldout` (random parameters per member, pooled):
   score, partner score, agreement % and Pareto-optimal % of deals.

It prints a markdown table (mean and 95% confidence half-width over seeds, Student t), compares TDA with
RL (score) and SL (Pareto %) by the paired per-seed differences and their 95% intervals, saves a scatter
plot of utility against Pareto %,
writes both to its section of ``benchmarks/RESULTS.md`` (one per ``--selection``) with the date, the
command and the machine, and states
whether TDA got both high utility and Pareto-optimal deals where SL and RL each got one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

from parley.agents.evaluation import evaluate_policy  # noqa: E402
from parley.agents.heldout import HELDOUT_FAMILIES, family_groups  # noqa: E402
from parley.agents.partners.synthetic import synthetic_corpus  # noqa: E402
from parley.agents.training.ppo import PPOConfig  # noqa: E402
from parley.agents.training.supervised import SupervisedConfig, clone_policy, train_supervised  # noqa: E402
from parley.envs.corpus import (  # noqa: E402
    corpus_dataset,
    coverage_report,
    load_corpus,
    split_by_scenario,
)
from parley.oracles.expert import ScriptedExpert  # noqa: E402
from parley.oracles.tda import METHODS, TDAConfig, train_method  # noqa: E402

HERE = Path(__file__).resolve().parent
FIGURE = HERE / "figures" / "tda_scatter.png"
DEFAULT_CORPUS = HERE.parent.parent / "shared" / "data" / "dealornodeal"
MEASURES = ("score", "partner_score", "agreement", "pareto")
#: Partner sets in table order: key, column label.
PARTNER_SETS = (("suite", "suite"), ("heldout", "held-out SL"), ("families", "held-out families"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", type=Path, default=None, help="data.txt or its directory (default: the shared copy)")
    p.add_argument("--synthetic", action="store_true", help="use the synthetic scripted-dialogue corpus")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--games-per-round", type=int, default=6000)
    p.add_argument("--queries-per-round", type=int, default=300)
    p.add_argument("--oracle-weight", type=float, default=30.0)
    p.add_argument("--partner-epochs", type=int, default=5)
    p.add_argument("--selection", default="likelihood")
    p.add_argument("--sl-epochs", type=int, default=8)
    p.add_argument("--eval-games", type=int, default=500, help="games per scripted partner and vs held-out SL")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--runs", type=Path, default=Path("/tmp/parley_tda_table"), help="where runs are written")
    p.add_argument("--quick", action="store_true", help="tiny settings: checks the script, not the claim")
    p.add_argument("--no-append", action="store_true", help="print only; leave RESULTS.md and the figure alone")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.rounds, args.games_per_round, args.queries_per_round = 2, 1, 512, 20
        args.sl_epochs, args.eval_games = 1, 50
    return args


def load_dialogues(args: argparse.Namespace):
    if args.synthetic or (args.corpus is None and not (DEFAULT_CORPUS / "data.txt").is_file()):
        dialogues = synthetic_corpus(4000 if not args.quick else 300, seed=0)
        return dialogues, f"synthetic corpus ({len(dialogues)} scripted-partner dialogues)"
    path = args.corpus or DEFAULT_CORPUS
    dialogues = load_corpus(path)
    return dialogues, f"Deal or No Deal `{Path(path).name}` minus test.txt dialogues: {coverage_report(dialogues)}"


def run_seed(seed: int, train_data, heldout_data, args, methods: list[str]) -> dict[str, dict]:
    sup = SupervisedConfig(epochs=args.sl_epochs, seed=seed, device="cpu")
    config = TDAConfig(rounds=args.rounds, queries_per_round=args.queries_per_round, selection=args.selection,
                       oracle_weight=args.oracle_weight, partner_epochs=args.partner_epochs, ppo=PPOConfig(total_games=args.games_per_round),
                       supervised=sup, seed=seed)
    torch.manual_seed(seed)
    sl = train_supervised(train_data, sup, name="sl").policy
    heldout = train_supervised(heldout_data, replace(sup, seed=seed + 100), name="heldout-sl").policy
    heldout_partner = clone_policy(heldout, deterministic=False, seed=seed + 200)
    out = {}
    for method in methods:
        started = time.perf_counter()
        policy = train_method(method, sl, train_data, config, args.runs / f"seed{seed}", oracle=ScriptedExpert())
        policy.deterministic = True  # evaluated agents act greedily; the held-out SL partner samples
        suite_result = evaluate_policy(policy, "suite", episodes=args.eval_games, seed=10_000 + seed)[-1]
        (heldout_result, _) = evaluate_policy(policy, {"held-out SL": heldout_partner}, episodes=2 * args.eval_games,
                                              seed=20_000 + seed)
        families = evaluate_policy(policy, family_groups(HELDOUT_FAMILIES, seed=seed), episodes=args.eval_games,
                                   seed=30_000 + seed)[-1]
        out[method] = {"suite": asdict(suite_result), "heldout": asdict(heldout_result),
                       "families": asdict(families), "seconds": time.perf_counter() - started}
        print(f"seed {seed} {method:>12}: suite score {suite_result.score:.2f} pareto {suite_result.pareto:.2f} | "
              f"held-out score {heldout_result.score:.2f} pareto {heldout_result.pareto:.2f} | "
              f"families score {families.score:.2f} pareto {families.pareto:.2f} "
              f"({out[method]['seconds']:.0f}s)", flush=True)
    return out


def half_width(xs: np.ndarray) -> float:
    """Half-width of the 95% confidence interval of the mean of ``xs`` (Student t; NaN below 2 values)."""
    from scipy import stats

    xs = xs[~np.isnan(xs)]
    if len(xs) < 2:
        return math.nan
    return float(stats.t.ppf(0.975, len(xs) - 1) * xs.std(ddof=1) / math.sqrt(len(xs)))


def aggregate(per_seed: list[dict], methods: list[str]) -> dict:
    """(mean, 95% half-width) per method, partner set and measure; ``("diff", a, b, set, k)`` paired."""
    table = {}
    for m in methods:
        table[m] = {}
        for partner, _ in PARTNER_SETS:
            for k in MEASURES:
                xs = np.array([s[m][partner][k] for s in per_seed], dtype=float)
                table[m][(partner, k)] = (float(np.nanmean(xs)), half_width(xs))
    for a, b, k in (("tda", "rl", "score"), ("tda", "sl", "pareto")):
        if a in methods and b in methods:
            for partner, _ in PARTNER_SETS:
                d = np.array([s[a][partner][k] - s[b][partner][k] for s in per_seed], dtype=float)
                table[("diff", a, b, partner, k)] = (float(np.nanmean(d)), half_width(d))
    return table


def fmt(mean_ci: tuple[float, float], percent: bool) -> str:
    mean, ci = mean_ci
    if math.isnan(mean):
        return "-"
    scale = 100 if percent else 1
    if math.isnan(ci):
        return f"{scale * mean:.1f}" if percent else f"{mean:.2f}"
    return f"{scale * mean:.1f} ± {scale * ci:.1f}" if percent else f"{mean:.2f} ± {ci:.2f}"


def markdown_table(table: dict, methods: list[str]) -> str:
    head = "| method | " + " | ".join(f"{label}: {name}" for _, label in PARTNER_SETS
                                      for name in ("score", "partner score", "agree %", "Pareto %")) + " |"
    lines = [head, "|---|" + "---:|" * (4 * len(PARTNER_SETS))]
    for m in methods:
        cells = [fmt(table[m][(p, k)], k in ("agreement", "pareto")) for p, _ in PARTNER_SETS for k in MEASURES]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(table: dict) -> str:
    """Whether TDA got both utility and Pareto-optimality where SL and RL each got one, per partner set."""
    sentences = []
    for partner, label in (("families", "the held-out scripted families"), ("heldout", "the held-out SL partner"),
                           ("suite", "the scripted suite")):
        methods = [m for m in table if isinstance(m, str)]  # the other keys hold paired differences
        own = {m: table[m][(partner, "score")] for m in methods}
        par = {m: table[m][(partner, "pareto")] for m in methods}
        if not {"sl", "rl", "tda"} <= set(methods):
            return "sl, rl and tda are needed for the comparison."
        sl_rl_split = own["rl"][0] > own["sl"][0] and par["sl"][0] >= par["rl"][0]
        tda_utility = own["tda"][0] >= own["rl"][0] - max(own["rl"][1], own["tda"][1])
        tda_pareto = par["tda"][0] >= par["sl"][0] - max(par["sl"][1], par["tda"][1])
        best_own = max(methods, key=lambda m: own[m][0])
        best_par = max(methods, key=lambda m: par[m][0])
        s = (f"Against {label}: SL {own['sl'][0]:.2f} points / {100 * par['sl'][0]:.1f}% Pareto, "
             f"RL {own['rl'][0]:.2f} / {100 * par['rl'][0]:.1f}%, TDA {own['tda'][0]:.2f} / {100 * par['tda'][0]:.1f}%. ")
        s += ("SL and RL split the two goals (RL more utility, SL at least as Pareto-optimal). " if sl_rl_split else
              "SL and RL did not split the two goals the way the paper describes. ")
        if tda_utility and tda_pareto:
            s += "TDA got both: utility within the 95% half-width of RL's or above, and Pareto % within that of SL's or above. "
        else:
            s += (f"TDA did not get both (utility {'matches' if tda_utility else 'falls short of'} RL's, "
                  f"Pareto % {'matches' if tda_pareto else 'falls short of'} SL's). ")
        s += f"Highest utility: {best_own}; highest Pareto %: {best_par}."
        for (a, b, k, what) in (("tda", "rl", "score", "score"), ("tda", "sl", "pareto", "Pareto %")):
            key = ("diff", a, b, partner, k)
            if key in table:
                d, ci = table[key]
                scale, unit = (100, " points of %") if k == "pareto" else (1, "")
                sure = not math.isnan(ci) and d - ci > 0
                s += (f" {a.upper()} - {b.upper()} {what}: {scale * d:+.2f} ± {scale * ci:.2f}{unit} (paired, 95%)"
                      f" -- {'ahead at 95% confidence' if sure else 'not ahead at 95% confidence'}.")
        sentences.append(s)
    return "\n\n".join(sentences)


def scatter(table: dict, methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, (partner, title) in zip(axes, (("families", "vs held-out scripted families"),
                                           ("heldout", "vs held-out SL partner"), ("suite", "vs scripted suite"))):
        for m in methods:
            (x, xs), (y, ys) = table[m][(partner, "pareto")], table[m][(partner, "score")]
            ax.errorbar(100 * x, y, xerr=100 * xs, yerr=ys, fmt="o", capsize=3, label=m)
            ax.annotate(m, (100 * x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xlabel("Pareto-optimal deals (%)")
        ax.set_ylabel("score (points)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle("Utility vs Pareto-optimality (mean and 95% confidence interval over seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    started = time.perf_counter()
    dialogues, description = load_dialogues(args)
    train_part, heldout_part = split_by_scenario(dialogues, [0.7, 0.3], seed=0)
    train_data, heldout_data = corpus_dataset(train_part), corpus_dataset(heldout_part)
    print(description)
    print(f"{len(train_data)} training acts, {len(heldout_data)} acts for the held-out partner", flush=True)
    per_seed = [run_seed(seed, train_data, heldout_data, args, methods) for seed in range(args.seeds)]
    table = aggregate(per_seed, methods)
    text = markdown_table(table, methods)
    conclusion = verdict(table)
    elapsed = time.perf_counter() - started
    print(text)
    print(conclusion)
    print(f"total {elapsed / 60:.1f} min")
    if args.no_append:
        return
    args.runs.mkdir(parents=True, exist_ok=True)
    (args.runs / "tda_table.json").write_text(json.dumps(per_seed, indent=2, default=float))
    figure = FIGURE if args.selection == "likelihood" else FIGURE.with_name(f"tda_scatter_{args.selection}.png")
    scatter(table, methods, figure)
    command = "python benchmarks/tda_table.py " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores visible, Python {platform.python_version()}, "
               f"torch {torch.__version__}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from common import save_results_section  # this folder is on the path when run as a script

    # One section per selection rule: a rerun replaces the section of its own rule.
    title = "Targeted data acquisition vs baselines" + ("" if args.selection == "likelihood"
                                                        else f", {args.selection} selection")
    save_results_section(f"## {title} ({now})\n\n"
                f"Command: `{command.strip()}`  \nMachine: {machine}  \n"
                f"Corpus: {description}  \n"
                f"Settings: {args.seeds} seeds; {args.rounds} rounds x {args.games_per_round} PPO games (RL baselines: "
                f"the same {args.rounds * args.games_per_round} games); {args.queries_per_round} scripted-expert "
                f"queries per round ({args.selection} selection, oracle weight {args.oracle_weight}, {args.partner_epochs} partner epochs per round); evaluation: "
                f"{args.eval_games} games per scripted partner (pooled over the suite), {args.eval_games} per held-out family "
                f"(pooled over {', '.join(HELDOUT_FAMILIES)}; 12 random members each) and {2 * args.eval_games} vs "
                f"the held-out SL partner (trained on a disjoint 30% of scenarios); evaluated agents act greedily, the held-out partner samples. "
                f"Pareto % is the share of deals that are Pareto-optimal. Total {elapsed / 60:.1f} min.\n\n"
                f"{text}\n\n{conclusion}\n\n![utility vs Pareto %](figures/{figure.name})\n")
    print(f"figure {figure}")


if __name__ == "__main__":
    main()
