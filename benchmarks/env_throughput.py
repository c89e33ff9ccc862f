"""Agent-steps per second of the negotiation environments under random legal play, next to OpenSpiel.

Measured in one run, in interleaved time slices, so the ratios hold even on a busy machine:

* OpenSpiel ``bargaining`` through pyspiel (from the ``bench`` extra): a Python loop that reads the
  mover's observation tensor and its legal actions and applies a uniformly drawn one;
* the PettingZoo AEC env (``negotiation_v0.env()``): ``agent_iter`` / ``last()`` (which builds the
  observation dict) / ``step``, picking uniformly among the mask's legal actions; and the same game under
  PettingZoo's own ``OrderEnforcingWrapper`` in place of the env's faster subclass of it, to show what
  that subclass is worth;
* the Gymnasium env: the learner picks as above, a random-legal partner answers through ``act``;
* the vector env at several batch sizes: learner and partner pick uniformly among the legal actions of
  every game at once (:class:`RandomLegalPolicy`, checked for legality and uniformity first).

An agent-step is one act by either side (pyspiel: one ``apply_action`` at a decision node). Chance
nodes, resets and action picking count in the time. The table replaces its section of
``benchmarks/RESULTS.md``.

    python benchmarks/env_throughput.py [--seconds 4] [--rounds 8] [--batches 1 64 1024 4096] [--no-append]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time

import numpy as np
from common import machine, write_results_section
from pettingzoo.utils.wrappers import OrderEnforcingWrapper

from parley.envs import negotiation_v0
from parley.envs.negotiation import (
    AGREE_ACTION,
    NUM_ACTIONS,
    WALK_AWAY_ACTION,
    ObservationLayout,
    _context_table,
    legal_action_mask,
    pareto_frontier_masks,
    sample_context_arrays,
)
from parley.envs.negotiation_gym import NegotiationGymEnv
from parley.envs.negotiation_vector import NegotiationVectorEnv
from parley.envs.policy import BatchPolicy

COUNTS = ObservationLayout.counts
TARGET_AEC = 0.3
TARGET_VECTOR = 10.0


class RandomLegalPolicy(BatchPolicy):
    """Uniform over each game's legal actions, drawn without scanning the 252-wide masks.

    With item counts (a, b, c) the legal acts are the (a+1)(b+1)(c+1) splits as propose and as insist,
    walk away, and agree when the mask allows it (see the env card). One uniform number per game picks
    among them; :func:`check_sampler` confirms legality and uniformity before the timings.
    """

    name = "random_legal"

    def act_batch(self, observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        sizes = np.asarray(observations)[:, COUNTS].astype(np.int64) + 1
        n_splits = sizes[:, 0] * sizes[:, 1] * sizes[:, 2]
        can_agree = np.asarray(action_masks)[:, AGREE_ACTION] > 0
        pick = (self.rng.random(len(sizes)) * (2 * n_splits + 1 + can_agree)).astype(np.int64)
        j = pick % n_splits
        per_book = sizes[:, 1] * sizes[:, 2]
        split = 25 * (j // per_book) + 5 * ((j // sizes[:, 2]) % sizes[:, 1]) + j % sizes[:, 2]
        split_action = np.where(pick >= n_splits, 125, 0) + split
        other = np.where(can_agree & (pick == 2 * n_splits), AGREE_ACTION, WALK_AWAY_ACTION)
        return np.where(pick < 2 * n_splits, split_action, other)


def check_sampler(samples: int = 200_000) -> None:
    """The benchmark's sampler only draws legal acts, and each legal act about equally often."""
    rng = np.random.default_rng(0)
    counts, values = sample_context_arrays(rng, samples)
    offer = rng.random(samples) < 0.5
    masks = legal_action_mask(counts, offer, np.zeros(samples, dtype=bool))
    obs = np.zeros((samples, 16), dtype=np.float32)
    obs[:, COUNTS] = counts
    actions = RandomLegalPolicy(seed=0).act_batch(obs, masks)
    assert masks[np.arange(samples), actions].all(), "the sampler drew an illegal act"
    one = (counts == counts[0]).all(axis=1) & (offer == offer[0])
    freq = np.bincount(actions[one], minlength=NUM_ACTIONS)[masks[0] > 0]
    assert freq.min() > 0.5 * freq.mean(), "the sampler is far from uniform"


class Runner:
    """One environment under random legal play, advanced in time slices; counts agent-steps and time."""

    name = ""

    def __init__(self) -> None:
        self.steps = 0
        self.seconds = 0.0
        self.calls = 0

    def run(self, seconds: float) -> None:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            self.steps += self.advance()
            self.calls += 1
        self.seconds += time.perf_counter() - start

    def advance(self) -> int:
        """Play a little; return the number of agent-steps taken."""
        raise NotImplementedError

    @property
    def rate(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0


class PySpielRunner(Runner):
    """OpenSpiel bargaining: read the mover's observation tensor and legal actions, apply a random one."""

    name = "OpenSpiel bargaining (pyspiel, Python loop)"

    def __init__(self) -> None:
        super().__init__()
        import pyspiel

        self.game = pyspiel.load_game("bargaining")
        self.rng = random.Random(0)

    def advance(self) -> int:
        state, rng, steps = self.game.new_initial_state(), self.rng, 0
        while not state.is_terminal():
            if state.is_chance_node():
                outcomes = state.chance_outcomes()
                state.apply_action(outcomes[rng.randrange(len(outcomes))][0])
                continue
            state.observation_tensor(state.current_player())
            legal = state.legal_actions()
            state.apply_action(legal[rng.randrange(len(legal))])
            steps += 1
        return steps


class AECRunner(Runner):
    """``agent_iter`` / ``last()`` (which builds the observation dict) / ``step`` over one game.

    ``pettingzoo_wrapper=True`` wraps the raw env in PettingZoo's own ``OrderEnforcingWrapper`` instead of
    the faster subclass ``negotiation_v0.env()`` uses.
    """

    def __init__(self, pettingzoo_wrapper: bool = False) -> None:
        super().__init__()
        self.pettingzoo_wrapper = pettingzoo_wrapper
        if pettingzoo_wrapper:
            self.name = "PettingZoo AEC, PettingZoo's OrderEnforcingWrapper(negotiation_v0.raw_env())"
            self.env = OrderEnforcingWrapper(negotiation_v0.raw_env())
        else:
            self.name = "PettingZoo AEC negotiation_v0.env()"
            self.env = negotiation_v0.env()
        self.env.reset(seed=0)
        self.rng = random.Random(0)

    def advance(self) -> int:
        env, rng, steps = self.env, self.rng, 0
        for _ in env.agent_iter():
            obs, _, terminated, truncated, _ = env.last()
            if terminated or truncated:
                env.step(None)
                continue
            legal = np.flatnonzero(obs["action_mask"])
            env.step(int(legal[rng.randrange(len(legal))]))
            steps += 1
        env.reset()
        return steps


class GymRunner(Runner):
    """One learner step (the learner's act and the partner's reply); resets count the partner's opening."""

    name = "Gymnasium NegotiationGymEnv (learner + partner)"

    def __init__(self) -> None:
        super().__init__()
        self.env = NegotiationGymEnv(RandomLegalPolicy(seed=1))
        self.obs, _ = self.env.reset(seed=0)
        self.rng = random.Random(0)

    def advance(self) -> int:
        env = self.env
        legal = np.flatnonzero(self.obs["action_mask"])
        turn = env.state.turn
        self.obs, _, terminated, _, _ = env.step(int(legal[self.rng.randrange(len(legal))]))
        steps = env.state.turn - turn
        if terminated:
            self.obs, _ = env.reset()
            steps += env.state.turn  # the partner's opening act, if it opened
        return steps


class VectorRunner(Runner):
    """One vector step: the learner's acts for every game, then the partner's batched replies."""

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.name = f"NegotiationVectorEnv, batch {batch}"
        self.batch = batch
        self.env = NegotiationVectorEnv(batch, partner=RandomLegalPolicy(seed=1))
        self.learner = RandomLegalPolicy(seed=2)
        self.obs, _ = self.env.reset(seed=0)
        for _ in range(20):
            self.advance()

    def advance(self) -> int:
        before = self.env.acts_applied
        self.obs, *_ = self.env.step(self.learner.act_batch(self.obs["observation"], self.obs["action_mask"]))
        return self.env.acts_applied - before


def busy_note() -> str:
    """A warning for the record when other work shared the machine (absolute rates then drop)."""
    if not hasattr(os, "getloadavg") or os.getloadavg()[0] <= (os.cpu_count() or 1):
        return ""
    return (" The machine was busy with other work (load above its core count): absolute rates are below an "
            "idle machine's; the interleaved ratios are the comparison.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="time per environment, in total")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved slices per environment")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024, 4096])
    parser.add_argument("--no-append", action="store_true", help="print only; do not write RESULTS.md")
    args = parser.parse_args()
    where = machine(f"; Python {platform.python_version()}, numpy {np.__version__}")
    check_sampler()

    # Pareto frontiers (reported at each game's end) are computed once per context on first use; fill that
    # cache for every context up front so the timings show the steady state.
    pareto_frontier_masks(*_context_table()[:2])
    runners: list[Runner] = []
    try:
        runners.append(PySpielRunner())
    except ImportError:
        print("pyspiel is not installed (open-spiel comes with the bench extra: pip install 'parley[bench]'); "
              "the OpenSpiel row and the ratios are left out.", file=sys.stderr)
    runners += [AECRunner(), AECRunner(pettingzoo_wrapper=True), GymRunner()]
    runners += [VectorRunner(batch) for batch in args.batches]
    # Interleaved slices: every runner sees the same share of a busy machine's ups and downs.
    for _ in range(args.rounds):
        for runner in runners:
            runner.run(args.seconds / args.rounds)

    spiel = runners[0].rate if isinstance(runners[0], PySpielRunner) else None
    aec = next(r.rate for r in runners if isinstance(r, AECRunner) and not r.pettingzoo_wrapper)
    rows: list[tuple[str, float, str]] = []
    for runner in runners:
        note = ""
        if isinstance(runner, AECRunner) and runner.pettingzoo_wrapper:
            note = f"{runner.rate / aec:.2f}x the rate of negotiation_v0.env()"
        elif isinstance(runner, AECRunner):
            note = f"target >= {TARGET_AEC}x"
        elif isinstance(runner, VectorRunner):
            note = f"{1000 * runner.seconds / runner.calls:.2f} ms per step"
            if runner.batch >= 1024:
                note += f"; target >= {TARGET_VECTOR:g}x"
        rows.append((runner.name, runner.rate, note))

    header = "| environment | agent-steps/s | vs pyspiel | notes |\n|---|---:|---:|---|"
    lines = [header]
    for name, rate, note in rows:
        ratio = f"{rate / spiel:.2f}x" if spiel else "n/a"
        lines.append(f"| {name} | {rate:,.0f} | {ratio} | {note} |")
    table = "\n".join(lines)
    print(table)

    if not args.no_append:
        write_results_section("Negotiation env throughput", where,
                       f"Random legal play, {args.seconds:g} s per row in {args.rounds} interleaved slices, all rows "
                       f"in one run. An agent-step is one act by either side.{busy_note()}", table)


if __name__ == "__main__":
    main()
