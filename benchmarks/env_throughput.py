"""Agent-steps per second of the negotiation environments under random legal play, next to OpenSpiel.

Measured in one run, side by side, so the ratios hold even on a busy machine:

* OpenSpiel ``bargaining`` through pyspiel (from the ``bench`` extra): a Python loop that reads the
  mover's observation tensor and its legal actions and applies a uniformly drawn one;
* the PettingZoo AEC env (``negotiation_v0.env()``): ``agent_iter`` / ``last()`` (which builds the
  observation dict) / ``step``, picking uniformly among the mask's legal actions;
* the Gymnasium env: the learner picks as above, a random-legal partner answers through ``act``;
* the vector env at several batch sizes: learner and partner pick uniformly among the legal actions of
  every game at once (batched rejection sampling from the masks).

An agent-step is one act by either side (pyspiel: one ``apply_action`` at a decision node). Chance
nodes, resets and action picking count in the time. Results are appended to ``benchmarks/RESULTS.md``.

    python benchmarks/env_throughput.py [--seconds 3] [--batches 1 64 1024 4096] [--no-append]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from parley.agents.policy import BatchPolicy
from parley.envs import negotiation_v0
from parley.envs.negotiation_gym import NegotiationGymEnv
from parley.envs.negotiation_vector import NegotiationVectorEnv

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TARGET_AEC = 0.3
TARGET_VECTOR = 10.0


class RandomLegalPolicy(BatchPolicy):
    """Uniform over each row's legal actions: draw candidates, keep the legal ones, redraw the rest.

    A few rounds settle almost every row at O(B) cost; the rows left then draw from random keys.
    """

    name = "random_legal"

    def act_batch(self, observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        masks = np.asarray(action_masks)
        out = np.empty(len(masks), dtype=np.int64)
        pending = np.arange(len(masks))
        for _ in range(8):
            candidates = self.rng.integers(masks.shape[1], size=pending.size)
            ok = masks[pending, candidates] > 0
            out[pending[ok]] = candidates[ok]
            pending = pending[~ok]
            if pending.size == 0:
                return out
        keys = np.where(masks[pending] > 0, self.rng.random((pending.size, masks.shape[1])), -1.0)
        out[pending] = keys.argmax(axis=1)
        return out


def bench_pyspiel(seconds: float) -> float | None:
    try:
        import pyspiel
    except ImportError:
        print("pyspiel is not installed (open-spiel comes with the bench extra: pip install 'parley[bench]'); "
              "the OpenSpiel row and the ratios are left out.", file=sys.stderr)
        return None
    game = pyspiel.load_game("bargaining")
    rng = random.Random(0)
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        state = game.new_initial_state()
        while not state.is_terminal():
            if state.is_chance_node():
                outcomes = state.chance_outcomes()
                state.apply_action(outcomes[rng.randrange(len(outcomes))][0])
                continue
            state.observation_tensor(state.current_player())
            legal = state.legal_actions()
            state.apply_action(legal[rng.randrange(len(legal))])
            steps += 1
    return steps / (time.perf_counter() - start)


def bench_aec(seconds: float) -> float:
    env = negotiation_v0.env()
    env.reset(seed=0)
    rng = random.Random(0)
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in env.agent_iter():
            obs, _, terminated, truncated, _ = env.last()
            if terminated or truncated:
                env.step(None)
                continue
            legal = np.flatnonzero(obs["action_mask"])
            env.step(int(legal[rng.randrange(len(legal))]))
            steps += 1
        env.reset()
    return steps / (time.perf_counter() - start)


def bench_gym(seconds: float) -> float:
    env = NegotiationGymEnv(RandomLegalPolicy(seed=1))
    obs, _ = env.reset(seed=0)
    rng = random.Random(0)
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        legal = np.flatnonzero(obs["action_mask"])
        turn = env.state.turn
        obs, _, terminated, _, _ = env.step(int(legal[rng.randrange(len(legal))]))
        steps += env.state.turn - turn
        if terminated:
            obs, _ = env.reset()
            steps += env.state.turn  # the partner's opening act, if it opened
    return steps / (time.perf_counter() - start)


def bench_vector(batch: int, seconds: float) -> tuple[float, float]:
    env = NegotiationVectorEnv(batch, partner=RandomLegalPolicy(seed=1))
    learner = RandomLegalPolicy(seed=2)
    obs, _ = env.reset(seed=0)
    for _ in range(50):  # warm-up: per-context caches fill on first use
        obs, *_ = env.step(learner.act_batch(obs["observation"], obs["action_mask"]))
    acts = env.acts_applied
    calls = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        obs, *_ = env.step(learner.act_batch(obs["observation"], obs["action_mask"]))
        calls += 1
    elapsed = time.perf_counter() - start
    return (env.acts_applied - acts) / elapsed, 1000 * elapsed / calls


def machine() -> str:
    mem = ""
    try:
        kb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f} at the start"
    return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores{mem}, no GPU used; "
            f"Python {platform.python_version()}, numpy {np.__version__}{load}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024, 4096])
    parser.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    where = machine()

    rows: list[tuple[str, float, str]] = []
    spiel = bench_pyspiel(args.seconds)
    if spiel is not None:
        rows.append(("OpenSpiel bargaining (pyspiel, Python loop)", spiel, ""))
    rows.append(("PettingZoo AEC negotiation_v0.env()", bench_aec(args.seconds), f"target >= {TARGET_AEC}x"))
    rows.append(("Gymnasium NegotiationGymEnv (learner + partner)", bench_gym(args.seconds), ""))
    for batch in args.batches:
        rate, ms = bench_vector(batch, args.seconds)
        note = f"{ms:.2f} ms per step" + (f"; target >= {TARGET_VECTOR:g}x" if batch >= 1024 else "")
        rows.append((f"NegotiationVectorEnv, batch {batch}", rate, note))

    header = "| environment | agent-steps/s | vs pyspiel | notes |\n|---|---:|---:|---|"
    lines = [header]
    for name, rate, note in rows:
        ratio = f"{rate / spiel:.2f}x" if spiel else "n/a"
        lines.append(f"| {name} | {rate:,.0f} | {ratio} | {note} |")
    table = "\n".join(lines)
    print(table)

    if not args.no_append:
        command = "python benchmarks/env_throughput.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        section = (f"\n## Negotiation env throughput ({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
                   f"Command: `{command.strip()}`  \nMachine: {where}  \n"
                   f"Random legal play, {args.seconds:g} s per row, all rows in one run. An agent-step is one act "
                   f"by either side.\n\n{table}\n")
        with RESULTS.open("a") as fh:
            fh.write(section)
        print(f"\nappended to {RESULTS}")


if __name__ == "__main__":
    main()
