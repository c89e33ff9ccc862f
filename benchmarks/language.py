"""Text negotiation: the dialogue model's results and the text env's throughput.

1. The dialogue model written by ``parley train-lm`` plays ``negotiation_text_v0`` against itself and
   against every scripted partner through the realiser; for each pairing: the model's mean score, the
   partner's, agreement %, Pareto-optimal % of agreed deals, and the parse-failure rate of the
   game's utterances (both sides). Contexts are sampled; each pairing plays the same contexts, sides alternating.
2. Throughput of the text env with template players (scripted partners through the realiser on both
   sides), in games per minute, in one process and in ``--processes`` processes.

Writes its section of benchmarks/RESULTS.md with the date, the command and the machine.

    parley train-lm --corpus ../shared/data/dealornodeal --out runs/lm --max-minutes 10
    python benchmarks/language.py --model runs/lm [--games 100] [--seconds 10] [--no-append]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import numpy as np
from common import machine, write_results_section

from parley.agents.lm.player import LanguageModelPlayer
from parley.agents.partners.scripted import list_partners
from parley.envs.negotiation import sample_context
from parley.envs.negotiation_text_v0 import TextNegotiationState
from parley.text import make_text_player

# Lewis et al. (2017): the supervised (likelihood) model against itself, score and agreement as reported;
# its Pareto share is left out here rather than quoted without the table at hand.
LEWIS_SL = {"score": "5.4 vs 5.5", "agreement": 87.9, "pareto": "-"}


def play_games(players, contexts, first_players) -> list[dict]:
    """One text game per context; ``players[0]`` is seat 0. Returns each game's metrics."""
    out = []
    for ctx, first in zip(contexts, first_players):
        state = TextNegotiationState(ctx, first_player=int(first))
        while not state.terminal:
            player = players[state.current_player]
            state.send(player.reply(state.observation(state.current_player)))
        out.append(state.metrics())
    return out


SELF_OWN_PICK = "self, each side selecting with the model alone"


def pairing_row(model_dir: str, partner: str, games: int, seed: int) -> list[str]:
    """The model against ``partner`` (a scripted partner's name, "self", or :data:`SELF_OWN_PICK`: itself,
    both sides selecting with the network after ``<selection>`` rather than reading the deal)."""
    rng = np.random.default_rng(seed)
    contexts = [sample_context(rng) for _ in range(games)]
    if partner == SELF_OWN_PICK:
        model = LanguageModelPlayer.load(model_dir, seed=seed, read_deal=False)
        other = LanguageModelPlayer.load(model_dir, seed=seed + 1, read_deal=False)
    else:
        model = make_text_player(model_dir, seed=seed)
        other = make_text_player(model_dir, seed=seed + 1) if partner == "self" else make_text_player(partner, seed=seed)
    results = []
    for swap in (0, 1):  # the model plays seat 0, then seat 1 with the roles swapped
        ctxs = contexts if not swap else [c.swapped() for c in contexts]
        players = (model, other) if not swap else (other, model)
        for m in play_games(players, ctxs, rng.integers(2, size=games)):
            seat = swap
            results.append((m["scores"][seat], m["scores"][1 - seat], m["agreement"], m["pareto_optimal"],
                            m["parse_failures"], m["messages"]))
    arr = np.array(results, dtype=float)
    agreed = arr[:, 2] > 0
    pareto = 100 * arr[agreed, 3].mean() if agreed.any() else float("nan")
    return [partner, str(len(arr)), f"{arr[:, 0].mean():.2f}", f"{arr[:, 1].mean():.2f}", f"{100 * agreed.mean():.1f}",
            f"{pareto:.1f}", f"{100 * arr[:, 4].sum() / max(arr[:, 5].sum(), 1):.1f}"]


def _throughput_worker(args) -> int:
    seconds, seed = args
    rng = np.random.default_rng(seed)
    names = list_partners()
    names = [n for n in names if n != "random"]
    players = [make_text_player(n, seed=seed + i) for i, n in enumerate(names)]
    games, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a, b = rng.integers(len(players), size=2)
        play_games((players[a], players[b]), [sample_context(rng)], [rng.integers(2)])
        games += 1
    return games


def throughput(seconds: float, processes: int) -> tuple[float, float]:
    """Games per minute in one process, and in ``processes`` processes together."""
    _throughput_worker((1.0, 99))  # warm the parser cache and imports
    one = _throughput_worker((seconds, 0)) * 60 / seconds
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        many = sum(pool.map(_throughput_worker, [(seconds, 1 + i) for i in range(processes)])) * 60 / seconds
    return one, many


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a directory written by parley train-lm")
    parser.add_argument("--games", type=int, default=100, help="contexts per pairing (each played from both seats)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each throughput measurement")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-append", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    import json
    from pathlib import Path

    import torch

    torch.set_num_threads(1)
    training = json.loads((Path(args.model) / "lm.json").read_text()).get("training", {})
    pairings = ["self", SELF_OWN_PICK, *list_partners()]
    rows = [pairing_row(args.model, partner, args.games, args.seed) for partner in pairings]
    header = ["partner", "games", "model score", "partner score", "agreement %", "Pareto % of deals",
              "unparsed utterances %"]
    table = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    table += "\n".join("| " + " | ".join(r) + " |" for r in rows)
    table += (f"\n| Lewis et al. 2017, supervised model vs itself (paper) | - | {LEWIS_SL['score']} | | "
              f"{LEWIS_SL['agreement']} | {LEWIS_SL['pareto']} | - |")
    one, many = throughput(args.seconds, args.processes)
    table += (f"\n\nText env throughput with template players (scripted partners through the realiser on both "
              f"sides): {one:,.0f} games/min in one process, {many:,.0f} games/min in {args.processes} processes.")
    note = (f"Model: {args.model}, trained {training.get('minutes', float('nan')):.1f} min on "
            f"{training.get('train_views', '?')} dialogue views, validation perplexity "
            f"{training.get('valid_perplexity', float('nan')):.2f}; sampled contexts, seed {args.seed}, the model in "
            "each seat for every context. Scores are the model's and the partner's mean points (0 without a deal). "
            "The model selects the deal it reads from the talk with the corpus parser, or its own pick when it reads "
            f"none; the row '{SELF_OWN_PICK}' selects with the network alone.")
    print(table)
    if not args.no_append:
        write_results_section("Text negotiation: the dialogue model and the text env", machine(), note, table)


if __name__ == "__main__":
    main()
