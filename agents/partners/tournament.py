"""Round-robin tournaments between negotiating agents on the batched rules.

Every ordered pair of agents (self-play included) plays the same seeded sample of contexts, all games
of a pair at once with :func:`parley.envs.play.play_batch`, the agents acting through ``act_batch``.
The first agent of a pair sits in seat 0, the second in seat 1; who moves first is drawn
per context from the seed, so seats matter little and each unordered pair is played both ways.

::

    from parley.agents.partners.tournament import run_tournament
    result = run_tournament(["boulware", "conceder", "pareto"], contexts=200, seed=0)
    for row in result.agents:
        print(row.agent, row.score, row.agreement, row.pareto)
    result.write_csv("results.csv")

Agents are scripted partner names (see :func:`parley.agents.partners.scripted.list_partners`), any object
implementing :class:`~parley.envs.policy.Policy`, or a path to a saved policy (loaded with
:func:`parley.agents.load_policy`).

Measures are :data:`parley.agents.evaluation.MEASURES` (``score``, ``partner_score``, ``joint``,
``agreement``, ``pareto``, ``nash_product``, ``turns``), per pair from the first agent's side and per
agent over all its games, in both seats (``partner_score`` is then what its partners scored).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from parley.agents.evaluation import Measures, game_measures, mean_measures
from parley.agents.partners.scripted import PARTNERS, make_partner
from parley.envs.negotiation import (
    DEFAULT_MAX_TURNS,
    Context,
    contexts_to_arrays,
    sample_context_arrays,
)
from parley.envs.play import play_batch
from parley.envs.policy import Policy

__all__ = ["PairResult", "AgentResult", "TournamentResult", "resolve_agent", "run_tournament"]


@dataclass(frozen=True)
class _AgentPartnerGames:
    agent: str
    partner: str
    games: int


@dataclass(frozen=True)
class _AgentGames:
    agent: str
    games: int


# Measures is the first base so that the identifying fields come first (see EvalRow).
@dataclass(frozen=True)
class PairResult(Measures, _AgentPartnerGames):
    """``agent`` (seat 0) against ``partner`` (seat 1) over ``games`` contexts; measures from ``agent``'s side."""


@dataclass(frozen=True)
class AgentResult(Measures, _AgentGames):
    """One agent over every game it played, in either seat (self-play games count once per seat)."""


@dataclass
class TournamentResult:
    """Per-pair and per-agent results of :func:`run_tournament`, plus the settings that produced them."""

    pairs: list[PairResult]
    agents: list[AgentResult]
    contexts: int
    seed: int
    max_turns: int
    names: list[str] = field(default_factory=list)

    def pair(self, agent: str, partner: str) -> PairResult:
        for row in self.pairs:
            if row.agent == agent and row.partner == partner:
                return row
        raise KeyError(f"no pair {agent!r} vs {partner!r}; agents are {', '.join(self.names)}")

    def agent(self, name: str) -> AgentResult:
        for row in self.agents:
            if row.agent == name:
                return row
        raise KeyError(f"no agent {name!r}; agents are {', '.join(self.names)}")

    def rows(self) -> list[dict]:
        """Flat rows for tables and CSV: ``scope`` is ``"agent"`` (partner ``"*"``) or ``"pair"``."""
        rows = []
        for a in self.agents:
            rows.append({"scope": "agent", "agent": a.agent, "partner": "*", **asdict(a)})
        for p in self.pairs:
            rows.append({"scope": "pair", **asdict(p)})
        return rows

    def write_csv(self, path: str | Path) -> Path:
        """Write :meth:`rows` (with the seed, contexts and max_turns on every row) to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = ["scope", *(f.name for f in fields(PairResult)), "seed", "contexts", "max_turns"]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in self.rows():
                writer.writerow({**row, "seed": self.seed, "contexts": self.contexts, "max_turns": self.max_turns})
        return path


def resolve_agent(spec: str | Policy, *, seed: int | None = None, **params) -> Policy:
    """An agent from a scripted partner name, a saved policy's path, or a Policy object (returned as is)."""
    if not isinstance(spec, str):
        if not hasattr(spec, "act_batch"):
            raise TypeError(f"an agent must be a partner name, a policy path or a Policy, got {type(spec).__name__}")
        return spec
    if spec in PARTNERS:
        return make_partner(spec, seed=seed, **params)
    if Path(spec).exists():
        from parley.agents import load_policy

        return load_policy(spec, **params)
    raise ValueError(f"unknown agent {spec!r}: not a partner name ({', '.join(PARTNERS)}) nor a saved policy path")


def _seed_for(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def _agent_names(agents: Sequence[Policy]) -> list[str]:
    names, seen = [], {}
    for agent in agents:
        base = str(getattr(agent, "name", type(agent).__name__))
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return names


def run_tournament(
    agents: Sequence[str | Policy] | None = None,
    *,
    contexts: int | Sequence[Context] = 200,
    seed: int = 0,
    max_turns: int = DEFAULT_MAX_TURNS,
    no_deal_reward: float = 0.0,
    self_play: bool = True,
    first_player: int | None = None,
    progress: Callable[[int, int, str, str], None] | None = None,
) -> TournamentResult:
    """Play every ordered pair of ``agents`` (default: every scripted partner) on the same contexts.

    ``contexts`` is a number of contexts to sample (seeded by ``seed``) or a list of contexts. Scripted
    partners named by string are built once per pair and seat with seeds derived from ``seed``; agent
    objects with a ``seed(int)`` method (every :class:`~parley.envs.policy.BatchPolicy`) are reseeded
    the same way, so a tournament is reproducible. ``first_player`` fixes which seat moves first (None:
    drawn per context). ``progress(done, total, agent, partner)`` is called after each pair.
    """
    specs = list(PARTNERS) if agents is None else list(agents)
    if not specs:
        raise ValueError("a tournament needs at least one agent")
    if max_turns < 1:
        raise ValueError(f"max_turns must be at least 1, got {max_turns}")
    rng = np.random.default_rng(seed)
    if isinstance(contexts, int):
        if contexts < 1:
            raise ValueError(f"contexts must be at least 1, got {contexts}")
        counts, values = sample_context_arrays(rng, contexts)
    else:
        if len(contexts) == 0:
            raise ValueError("the context list is empty")
        counts, values = contexts_to_arrays(list(contexts))
    n = counts.shape[0]
    if first_player is None:
        first_movers = rng.integers(2, size=n)
    elif first_player in (0, 1):
        first_movers = np.full(n, first_player, dtype=np.int64)
    else:
        raise ValueError(f"first_player must be 0, 1 or None (drawn per context), got {first_player}")

    built = [resolve_agent(spec, seed=_seed_for(seed, i)) for i, spec in enumerate(specs)]
    names = _agent_names(built)
    order = [(i, j) for i in range(len(built)) for j in range(len(built)) if self_play or i != j]
    if not order:
        raise ValueError("without self-play a tournament needs at least two agents")

    pairs: list[PairResult] = []
    per_agent: dict[int, list[dict[str, np.ndarray]]] = {i: [] for i in range(len(built))}
    for done, (i, j) in enumerate(order, start=1):
        seats = []
        for seat, k in enumerate((i, j)):
            if isinstance(specs[k], str) and specs[k] in PARTNERS:
                seats.append(make_partner(specs[k], seed=_seed_for(seed, done, seat)))
            else:
                reseed = getattr(built[k], "seed", None)
                if callable(reseed):
                    reseed(_seed_for(seed, done, seat))
                seats.append(built[k])
        games = play_batch(seats, counts, values, first_movers, max_turns=max_turns, no_deal_reward=no_deal_reward)
        pairs.append(PairResult(agent=names[i], partner=names[j], games=n,
                                **mean_measures(game_measures(games, seat=0))))
        for seat, k in enumerate((i, j)):
            per_agent[k].append(game_measures(games, seat=seat))
        if progress is not None:
            progress(done, len(order), names[i], names[j])

    agent_rows = [AgentResult(agent=name, games=n * len(per_agent[k]), **mean_measures(*per_agent[k]))
                  for k, name in enumerate(names)]
    return TournamentResult(pairs=pairs, agents=agent_rows, contexts=n, seed=seed, max_turns=max_turns, names=names)
