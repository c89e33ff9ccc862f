"""Scripted partners' act_batch throughput, and a full round-robin tournament's wall time.

For each partner: rows per second of ``act_batch`` at batch 1, 64, 1024 and 4096 on states taken from
real games (a random mix of partners drives them), next to the batched rules' own cost per step
(observations + legality masks + applying the acts) at the same batch, as a ratio. Then the time of
``run_tournament`` over every scripted partner at the given number of contexts. Prints a table and
writes it to its section of benchmarks/RESULTS.md with the date, the command and the machine.

    python benchmarks/partner_throughput.py [--contexts 200] [--repeats 7] [--no-append]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from common import best_time, save_results_section

from parley.agents.partners.scripted import list_partners, make_partner
from parley.agents.partners.tournament import run_tournament
from parley.envs.negotiation import WALK_AWAY_ACTION, BatchedNegotiation, sample_context_arrays

BATCHES = (1, 64, 1024, 4096)


def sample_states(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, BatchedNegotiation]:
    """Observations and masks of ``batch`` live games a few acts in, and the game itself."""
    rng = np.random.default_rng(seed)
    drivers = [make_partner(n, seed=seed) for n in list_partners()]
    game = BatchedNegotiation(batch)
    counts, values = sample_context_arrays(rng, batch)
    game.reset_games(np.arange(batch), counts, values, rng.integers(2, size=batch))
    for _ in range(int(rng.integers(2, 5))):
        obs, masks = game.observations(game.current_player), game.legal_masks()
        choice = rng.integers(len(drivers), size=batch)
        actions = np.full(batch, WALK_AWAY_ACTION)
        for k, driver in enumerate(drivers):
            rows = np.flatnonzero((choice == k) & ~game.done)
            if rows.size:
                actions[rows] = driver.act_batch(obs[rows], masks[rows])
        game.apply_actions(actions)
    # Restart finished games so every row is a live state.
    done = np.flatnonzero(game.done)
    c, v = sample_context_arrays(rng, done.size)
    game.reset_games(done, c, v, rng.integers(2, size=done.size))
    return game.observations(game.current_player), game.legal_masks(), game


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, default=200, help="contexts per pair in the tournament timing")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats; the best is kept")
    parser.add_argument("--no-append", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    names = list(list_partners())
    rows = []
    for batch in BATCHES:
        obs, masks, game = sample_states(batch)
        snapshot = {k: getattr(game, k).copy() for k in ("current_player", "turn", "done")}

        def rules_step(game=game, snapshot=snapshot, batch=batch) -> None:
            for key, value in snapshot.items():
                getattr(game, key)[:] = value
            game.observations(game.current_player)
            game.legal_masks()
            game.apply_actions(np.full(batch, WALK_AWAY_ACTION))

        rules = best_time(rules_step, args.repeats, warmup=1)
        for name in names:
            partner = make_partner(name, seed=0)
            seconds = best_time(lambda p=partner, o=obs, m=masks: p.act_batch(o, m), args.repeats, warmup=1)
            rows.append((name, batch, batch / seconds, seconds / rules))

    start = time.perf_counter()
    run_tournament(names, contexts=args.contexts, seed=0)
    tournament_seconds = time.perf_counter() - start

    header = "| partner | " + " | ".join(f"rows/s @ {b}" for b in BATCHES) + " | partner / rules step @ 4096 |"
    lines = [header, "|---|" + "---:|" * (len(BATCHES) + 1)]
    for name in names:
        cells = [f"{r[2]:,.0f}" for r in rows if r[0] == name]
        ratio = next(r[3] for r in rows if r[0] == name and r[1] == BATCHES[-1])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    table = "\n".join(lines)
    summary = (f"Round-robin tournament, {len(names)} partners ({len(names) ** 2} ordered pairs) x "
               f"{args.contexts} contexts: {tournament_seconds:.2f} s.")
    print(table)
    print(summary)
    if args.no_append:
        return

    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores visible, Python {platform.python_version()}, "
               f"numpy {np.__version__}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    save_results_section(f"\n## Scripted partner throughput ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
                     f"Command: `{command}`  \nMachine: {machine}  \n"
                     "Best of repeated timings of `act_batch` on live game states; the last column divides a "
                     "partner's time by one step of the batched rules (observations + masks + apply) at 4096.\n\n"
                     f"{table}\n\n{summary}\n")


if __name__ == "__main__":
    main()
