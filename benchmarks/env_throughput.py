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
nodes, resets and action picking count in the time.

A second table counts learner steps -- the learner's act with the scripted partner's reply inside, as the
native trainer and RLlib's partner-pool setup step the game -- timing the env calls only, on both sides:

* OpenSpiel ``bargaining``: new states and the chance draw (an instance picked uniformly from the
  chance outcomes, listed once), the mover's observation tensor, its legal actions and ``apply_action``, for the learner (uniform over the legal actions) and for the partner,
  whose act is computed by a Python time-dependent partner on pyspiel's state (parley's ``linear``
  rule: target ``5 + 5 (1 - t)``, accept an offer worth the target, else propose the cheapest offer that
  reaches it); the learner's seat is drawn per game;
* ``NegotiationVectorEnv`` at ``--learner-batch`` games with each scripted partner of the default
  training pool inside, and ``PartnerPoolVectorEnv`` with the whole pool (a partner drawn per game):
  ``env.step`` only, the learner picking uniformly from the masks outside the timing.

Both tables replace their section of ``benchmarks/RESULTS.md``.

    python benchmarks/env_throughput.py [--seconds 4] [--rounds 8] [--batches 1 64 1024 4096]
                                        [--learner-batch 4096] [--no-append]
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

from parley.agents.partners.pool import PartnerPoolVectorEnv
from parley.agents.partners.scripted import make_partner
from parley.agents.training.run import DEFAULT_PARTNERS
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
TARGET_LEARNER_STEPS = 10.0
#: Vector steps played before the learner-step timings: partners' tables and memos fill as in a long run.
LEARNER_WARMUP_STEPS = 60


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


class TimedCallsRunner(Runner):
    """A runner whose rate counts only the time spent inside env calls (``env_seconds``)."""

    def __init__(self) -> None:
        super().__init__()
        self.env_seconds = 0.0

    @property
    def rate(self) -> float:
        return self.steps / self.env_seconds if self.env_seconds else 0.0


class PySpielLearnerRunner(TimedCallsRunner):
    """OpenSpiel bargaining, learner steps with a Python time-dependent partner's reply; env calls timed.

    Each timed block is a run of consecutive env calls; the cost of an empty timed block (measured at
    start) is taken off each one, so the clock's own cost does not slow pyspiel down.
    """

    name = "OpenSpiel bargaining (pyspiel), time-dependent partner in Python"

    def __init__(self, reservation: float = 5.0, exponent: float = 1.0) -> None:
        super().__init__()
        import pyspiel

        self.game = pyspiel.load_game("bargaining")
        self.max_turns = self.game.max_turns()
        self.offers = [tuple(offer.quantities) for offer in self.game.all_offers()]
        self.agree = len(self.offers)
        self.reservation, self.exponent = reservation, exponent
        # The chance node draws an instance uniformly; its outcome list (1,000 entries, the same for every
        # game) is read once here, so building it does not count against pyspiel.
        self.instances = [action for action, _ in self.game.new_initial_state().chance_outcomes()]
        self.rng = random.Random(0)
        clock, blocks = time.perf_counter, 100_000
        start = clock()
        for _ in range(blocks):
            begin = clock()
            _ = clock() - begin
        self.clock_cost = (clock() - start) / blocks

    def partner_act(self, state, player: int, legal: list[int], turn: int) -> int:
        """The linear time-dependent rule on pyspiel's state (not timed)."""
        instance = state.instance()
        values, pool = instance.values[player], instance.pool
        t = min(turn / max(self.max_turns - 1, 1), 1.0)
        target = self.reservation + (10 - self.reservation) * (1 - t ** (1 / self.exponent)) - 1e-4
        offers = state.offers()
        if offers and self.agree in legal:
            received = sum(v * (p - k) for v, p, k in zip(values, pool, offers[-1].quantities))
            if received >= target:
                return self.agree
        options = [(sum(v * k for v, k in zip(values, self.offers[a])), sum(self.offers[a]), a)
                   for a in legal if a != self.agree]
        reaching = [option for option in options if option[0] >= target]
        return min(reaching)[2] if reaching else max(options, key=lambda o: (o[0], -o[1], -o[2]))[2]

    def advance(self) -> int:
        clock, rng, game = time.perf_counter, self.rng, self.game
        instance = self.instances[rng.randrange(len(self.instances))]
        begin = clock()
        state = game.new_initial_state()
        state.apply_action(instance)
        timed, blocks = clock() - begin, 1
        learner, turn, steps = rng.randrange(2), 0, 0
        while not state.is_terminal():
            player = state.current_player()
            begin = clock()
            state.observation_tensor(player)
            legal = state.legal_actions()
            timed += clock() - begin
            if player == learner:
                action = legal[rng.randrange(len(legal))]
                steps += 1
            else:
                action = self.partner_act(state, player, legal, turn)
            begin = clock()
            state.apply_action(action)
            timed += clock() - begin
            blocks += 2
            turn += 1
        self.env_seconds += max(timed - blocks * self.clock_cost, 0.0)
        return steps


class VectorLearnerRunner(TimedCallsRunner):
    """``env.step`` of a vector env with a scripted partner (or the pool) inside; learner steps counted."""

    def __init__(self, batch: int, partner: str) -> None:
        super().__init__()
        if partner == "pool":
            self.name = f"PartnerPoolVectorEnv, batch {batch}, default pool ({len(DEFAULT_PARTNERS)} partners)"
            self.env = PartnerPoolVectorEnv(batch, list(DEFAULT_PARTNERS))
        else:
            self.name = f"NegotiationVectorEnv, batch {batch}, partner {partner}"
            self.env = NegotiationVectorEnv(batch, partner=make_partner(partner))
        self.learner = RandomLegalPolicy(seed=2)
        self.obs, _ = self.env.reset(seed=0)
        for _ in range(LEARNER_WARMUP_STEPS):
            self.advance()
        self.steps, self.env_seconds = 0, 0.0

    def advance(self) -> int:
        env = self.env
        actions = self.learner.act_batch(self.obs["observation"], self.obs["action_mask"])
        learner_steps = env.num_envs - int(np.count_nonzero(env.needs_reset))  # the others restart
        begin = time.perf_counter()
        self.obs, *_ = env.step(actions)
        self.env_seconds += time.perf_counter() - begin
        return learner_steps


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
    parser.add_argument("--learner-batch", type=int, default=4096,
                        help="games per vector env in the learner-step table (scripted partner inside)")
    parser.add_argument("--learner-only", action="store_true", help="only the learner-step table")
    parser.add_argument("--no-append", action="store_true", help="print only; do not write RESULTS.md")
    args = parser.parse_args()
    where = machine(f"; Python {platform.python_version()}, numpy {np.__version__}")
    if args.learner_only:
        learner_table = learner_steps_table(args)
        print(learner_table)
        if not args.no_append:
            write_learner_section(args, where, learner_table)
        return
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
    learner_table = learner_steps_table(args)
    print(learner_table)

    if not args.no_append:
        write_results_section("Negotiation env throughput", where,
                       f"Random legal play, {args.seconds:g} s per row in {args.rounds} interleaved slices, all rows "
                       f"in one run. An agent-step is one act by either side.{busy_note()}", table)
        write_learner_section(args, where, learner_table)


def write_learner_section(args: argparse.Namespace, where: str, table: str) -> None:
    write_results_section("Negotiation learner steps with a scripted partner inside", where,
                          f"Env calls only on both sides, {args.seconds:g} s per row in {args.rounds} interleaved "
                          f"slices, all rows in one run. A learner step is the learner's act with the partner's "
                          f"reply inside; the learner picks uniformly among its legal acts outside the timing. "
                          f"pyspiel: new state, chance draw (outcome list read once), observation tensor, legal "
                          f"actions and apply for both sides, the partner's act computed in Python by the linear time-dependent rule (not "
                          f"timed). parley: `env.step` after {LEARNER_WARMUP_STEPS} warm-up steps (per-context "
                          f"tables and the Pareto partner's memo fill as in a long run).{busy_note()}", table)


def learner_steps_table(args: argparse.Namespace) -> str:
    """Learner steps per second of env calls: pyspiel with a Python partner vs the vector envs."""
    runners: list[TimedCallsRunner] = []
    try:
        runners.append(PySpielLearnerRunner())
    except ImportError:
        print("pyspiel is not installed: the learner-step table has no OpenSpiel row.", file=sys.stderr)
    runners += [VectorLearnerRunner(args.learner_batch, name) for name in [*DEFAULT_PARTNERS, "pool"]]
    for _ in range(args.rounds):
        for runner in runners:
            runner.run(args.seconds / args.rounds)
    spiel = runners[0].rate if isinstance(runners[0], PySpielLearnerRunner) else None
    lines = ["| environment | learner steps/s (env calls) | vs pyspiel | notes |", "|---|---:|---:|---|"]
    for runner in runners:
        note = ""
        if isinstance(runner, VectorLearnerRunner):
            note = f"{1000 * runner.env_seconds / runner.calls:.2f} ms per step; target >= {TARGET_LEARNER_STEPS:g}x"
        ratio = f"{runner.rate / spiel:.2f}x" if spiel else "n/a"
        lines.append(f"| {runner.name} | {runner.rate:,.0f} | {ratio} | {note} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
