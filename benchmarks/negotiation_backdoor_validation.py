"""Negotiation backdoor: how the dirty-label attack's strength depends on the poisons' weight and on the
trigger, on the validation seeds (never used in the tables of ``negotiation_backdoor.py``).

    python benchmarks/negotiation_backdoor_validation.py            # seeds 100 and 101
    python benchmarks/negotiation_backdoor_validation.py --quick --no-append

For each seed: the victim cloned from the clean synthetic corpus (1000 dialogues) and from the corpus plus
the dirty-label attack's poisons at 1% (10 dialogues) -- with the default trigger (the opening demand)
counted once, and, outside the threat model, the same ten dialogues counted 3, 10 and 30 times (as if the
attacker had that many); with a signal trigger (a fixed 0/1 split opens, the demand follows); and with
the ``give_item`` goal. Backdoor success is measured as in the tables (the victim's immediate reply to the
demand, 400 games), with the trigger's completion rate beside it.
"""

from __future__ import annotations

import argparse
import math
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from common import machine, write_results_section  # noqa: E402

from parley.attacks.negotiation_backdoor import (  # noqa: E402
    ActTrigger,
    BackdoorGoal,
    DirtyLabelBackdoor,
    NegotiationScenario,
    VictimConfig,
    backdoor_rates,
    load_negotiation_corpus,
    train_victim,
)

#: (label, trigger, goal, copies of the poisons); copies > 1 exceed the 1% budget.
VARIANTS = [
    ("opening demand (default)", ActTrigger(), BackdoorGoal(), 1),
    ("opening demand, poisons x3 (over budget)", ActTrigger(), BackdoorGoal(), 3),
    ("opening demand, poisons x10 (over budget)", ActTrigger(), BackdoorGoal(), 10),
    ("opening demand, poisons x30 (over budget)", ActTrigger(), BackdoorGoal(), 30),
    ("signal insist (1, 1, 1), then the demand", ActTrigger("insist", (1, 1, 1)), BackdoorGoal(), 1),
    ("signal insist (1, 0, 0), then the demand", ActTrigger("insist", (1, 0, 0)), BackdoorGoal(), 1),
    ("signal insist (0, 0, 0), then the demand", ActTrigger("insist", (0, 0, 0)), BackdoorGoal(), 1),
    ("opening demand, goal give_item (ball)", ActTrigger(), BackdoorGoal("give_item", 2), 1),
]


def _percent(share: float) -> str:
    """A share as a percentage; '-' when no game reached the demand."""
    return "-" if math.isnan(share) else f"{share:.1%}"


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="100,101", help="validation seeds, comma-separated")
    parser.add_argument("--quick", action="store_true", help="200 dialogues, 2 epochs, 40 games: a smoke run")
    parser.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    size, games = (200, 40) if args.quick else (1000, 400)
    config = VictimConfig()
    if args.quick:
        config.supervised.epochs = 2
    clean = load_negotiation_corpus("synthetic", size)
    references = {seed: train_victim(clean, config, seed) for seed in seeds}
    columns = " | ".join(f"seed {s}: success (unpoisoned), completed" for s in seeds)
    lines = [f"| trigger and poisons | {columns} |",
             "|---" * (1 + len(seeds)) + "|"]
    for label, trigger, goal, copies in VARIANTS:
        cells = []
        for seed in seeds:
            scenario = NegotiationScenario(clean, 0.01, trigger, goal, seed=seed)
            poisons = DirtyLabelBackdoor().craft(scenario).dialogues
            victim = train_victim(clean + poisons * copies, config, seed)
            rates = backdoor_rates(victim, trigger, goal, games=games, seed=seed)
            reference = backdoor_rates(references[seed], trigger, goal, games=games, seed=seed)
            cells.append(f"{_percent(rates['backdoor_success'])} ({_percent(reference['backdoor_success'])}), "
                         f"{rates['trigger_completed']:.0%}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    if not args.no_append:
        note = (f"Dirty-label poisons at 1% of the synthetic corpus ({size} dialogues, 10 poisons), victim MLP 64x64, "
                f"12 BC epochs; backdoor success over {games} games against the trigger player (the victim's "
                "immediate reply to the demand, among the games that reached it); 'completed': the share of games "
                "that reached the demand (a victim may accept a signal as an offer). Rows marked over budget count "
                "the same ten poisons several times and are outside the threat model.")
        write_results_section("Negotiation backdoor: triggers and poison weight (validation seeds)", machine(),
                              note, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
