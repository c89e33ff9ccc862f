"""Held-out evaluation of the default ``parley train`` policy beside the scripted suite.

    python benchmarks/heldout.py                        # train with parley train's defaults, then evaluate
    python benchmarks/heldout.py --policy runs/NAME     # evaluate a policy trained before
    python benchmarks/heldout.py --train "framework=native,iterations=60"   # other training settings
    python benchmarks/heldout.py --no-corpus --no-append --episodes 50      # a quick look, print only
    python benchmarks/heldout.py --policy runs/NAME --protocol validation    # the table settings are chosen on

The protocol is :func:`parley.agents.heldout.evaluate_heldout`: the held-out partner families (random
parameters per member), and with the corpus (default: the shared copy, when present) contexts from its
test split and the supervised corpus partner trained on the other dialogues. Every scripted partner of
the suite plays the same games in the agent's seat; the table shows, per family, the agent's score,
the best scripted partner's score and the gap, then the agent's and the best scripted partner's
agreement, Pareto-optimal share of deals and Nash product over all families. It writes its section of
``benchmarks/RESULTS.md`` (replacing the one an earlier run wrote) with the command, the machine and the
training time. ``--protocol validation`` plays the training families on their validation games instead
(and, with the corpus, a corpus partner trained without ``val.txt`` on the validation contexts): the
table for choosing settings, written to a section of its own.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from common import machine, parse_overrides, write_results_section  # noqa: E402

from parley.agents.heldout import (  # noqa: E402
    CORPUS_FAMILY,
    HELDOUT_FAMILIES,
    VALIDATION_CORPUS_FAMILY,
    evaluate_heldout,
    evaluate_validation,
    heldout_table,
    train_corpus_partner,
)
from parley.agents.nn.torch_policy import load_policy  # noqa: E402
from parley.agents.training.run import CONFIG_FILE, TrainConfig, read_progress, train  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = HERE.parent.parent / "shared" / "data" / "dealornodeal"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", type=Path, default=None, help="evaluate this run or policy instead of training")
    p.add_argument("--train", default="", help="TrainConfig settings over parley train's defaults, 'key=value,...'")
    p.add_argument("--corpus", type=Path, default=None, help="corpus directory with test.txt (default: the shared copy)")
    p.add_argument("--no-corpus", action="store_true", help="generated contexts, no corpus partner")
    p.add_argument("--episodes", type=int, default=300, help="games per family")
    p.add_argument("--members", type=int, default=12, help="partners drawn per family")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=Path, default=Path("runs") / "bench-heldout", help="where training writes its run")
    p.add_argument("--protocol", choices=("heldout", "validation"), default="heldout",
                   help="heldout: the final table; validation: the training families' validation games")
    p.add_argument("--no-append", action="store_true", help="print only; leave RESULTS.md alone")
    return p.parse_args(argv)


def fmt(x: float, pct: bool = False) -> str:
    if math.isnan(x):
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.2f}"


def markdown(report, agent_name: str) -> str:
    families = [name for name in report.rows if name != "all"]
    head = ["partner in the agent's seat", *families, "all", "agreement %", "Pareto %", "Nash product"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    agent = [report.rows[f].agent for f in families] + [report.rows["all"].agent]
    lines.append(f"| **{agent_name}** | " + " | ".join(f"**{fmt(r.score)}**" for r in agent)
                 + f" | {fmt(agent[-1].agreement, True)} | {fmt(agent[-1].pareto, True)} | {fmt(agent[-1].nash_product)} |")
    for name, rows in report.scripted.items():
        lines.append(f"| {name} | " + " | ".join(fmt(r.score) for r in rows)
                     + f" | {fmt(rows[-1].agreement, True)} | {fmt(rows[-1].pareto, True)} | {fmt(rows[-1].nash_product)} |")
    best = [report.rows[f] for f in [*families, "all"]]
    lines.append("| best scripted (per column) | " + " | ".join(f"{fmt(r.best_scripted_row.score)} ({r.best_scripted})"
                                                        for r in best) + " | | | |")
    lines.append("| **gap** (agent - best scripted) | " + " | ".join(f"**{r.gap:+.2f}**" for r in best) + " | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    train_note = ""
    if args.policy is not None:
        policy_path = args.policy
        agent_name = str(args.policy)
        progress = read_progress(args.policy)
        if (args.policy / CONFIG_FILE).is_file() and progress:
            trained = TrainConfig.from_yaml(args.policy / CONFIG_FILE)
            last = progress[-1]
            agent_name = f"parley train --framework {trained.framework} ({int(last['env_steps']):,} env steps)"
            train_note = (f"Training (read from {args.policy}): {trained.framework}, partners "
                          f"{','.join(trained.partners)}, {last['iteration']} iterations, "
                          f"{int(last['env_steps']):,} env steps, {float(last['elapsed_s']) / 60:.1f} min.  \n")
    else:
        overrides = parse_overrides(args.train, TrainConfig, "--train")
        config = TrainConfig(out=str(args.runs), live=False, heldout_episodes=0, **overrides)
        clock = time.perf_counter()
        result = train(config)
        minutes = (time.perf_counter() - clock) / 60
        policy_path = result.run_dir
        agent_name = "parley train" + (f" ({args.train})" if args.train else " (defaults)")
        train_note = (f"Training: {config.framework}, {result.iterations} iterations, {result.env_steps:,} env steps, "
                      f"{minutes:.1f} min including its suite evaluation.  \n")
    policy = load_policy(policy_path, device="cpu")
    corpus = None if args.no_corpus else (args.corpus or (DEFAULT_CORPUS if (DEFAULT_CORPUS / "test.txt").is_file()
                                                            else None))
    validation = args.protocol == "validation"
    corpus_partner = (train_corpus_partner(corpus, seed=args.seed, validation=validation)
                      if corpus is not None else None)
    if validation:
        report = evaluate_validation(policy, episodes=args.episodes, seed=args.seed, members=args.members,
                                     corpus=corpus, corpus_partner=corpus_partner)
    else:
        families = [*HELDOUT_FAMILIES, *([CORPUS_FAMILY] if corpus_partner is not None else [])]
        report = evaluate_heldout(policy, families=families, episodes=args.episodes, seed=args.seed,
                                  members=args.members, corpus=corpus, corpus_partner=corpus_partner)
    from rich.console import Console

    which = "training families, validation games" if validation else "held-out partner families"
    Console(width=160).print(heldout_table(report, title=f"{agent_name} vs {which}"))
    table = markdown(report, agent_name)
    print(table)
    elapsed = (time.perf_counter() - started) / 60
    print(f"total {elapsed:.1f} min")
    if args.no_append:
        return
    stand_in = (f" ({VALIDATION_CORPUS_FAMILY}: trained without the val.txt and test.txt dialogues, playing on "
                "the val.txt contexts)" if validation and corpus_partner is not None else "")
    note = (f"{train_note}Contexts: {report.contexts}; {args.episodes} games per family, {args.members} partners "
            f"drawn per family (seed {report.seed}); the corpus partner samples its acts{stand_in}. Scores are "
            "points out of 10 (no deal: 0), greedy agent; every scripted partner plays the same games in the "
            f"agent's seat. Total {elapsed:.1f} min.")
    section = ("Validation partner families: parley train vs the scripted suite" if validation
               else "Held-out partner families: parley train vs the scripted suite")
    write_results_section(section, machine(), note, table)


if __name__ == "__main__":
    sys.exit(main())
