"""Measuring negotiating agents: one seat convention, one set of measure names, for every report.

``evaluate_policy(policy, ["boulware", "conceder"], episodes=200)`` plays ``episodes`` games against
each partner with :func:`parley.envs.play.play_batch` and returns one :class:`EvalRow` per partner and
one over all of them (``"all"``). ``parley eval``, training runs' tables, tournaments
(:mod:`parley.agents.partners.tournament`), targeted data acquisition (:mod:`parley.oracles.tda`) and
its benchmark all report these rows or the same measures.

Seat convention: the evaluated agent sits in seat 0 and its partner in seat 1; who moves first is
drawn per game from ``seed``, and every partner plays the same contexts and first movers. (Contexts
are drawn from a distribution symmetric in the two seats, so seat 0 loses no generality.)

Measures (:data:`MEASURES`), from the evaluated agent's side, computed from the rules'
:func:`~parley.envs.negotiation.outcome_metrics_batch`:

``score``          the agent's mean points (no deal scores ``no_deal_reward``)
``partner_score``  the partner's mean points
``joint``          mean of the two scores' sum
``agreement``      fraction of games ending in a deal
``pareto``         fraction of *deals* that are Pareto-optimal (as Lewis et al. 2017 report it; NaN
                   without deals)
``nash_product``   mean Nash product of the outcome
``turns``          mean acts per game

:func:`game_measures` gives them per game (from either seat), :func:`mean_measures` pools games.

A partner may also be a :class:`PartnerGroup` -- several policies, one drawn per game from ``seed``
(a partner *family* with randomised parameters, :mod:`parley.agents.heldout`) -- and ``contexts``
may fix the pool the games' contexts are drawn from (e.g. a corpus test split). Two evaluations with
the same partners, ``episodes``, ``seed`` and ``contexts`` play the same games: the same contexts,
first movers and group members, whatever the evaluated policy; the held-out protocol relies on this
to compare an agent with scripted partners on the same games.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from parley.envs.negotiation import DEFAULT_MAX_TURNS, sample_context_arrays
from parley.envs.play import GameBatch, play_batch
from parley.envs.policy import Policy

__all__ = ["ALL_PARTNERS_ROW", "MEASURES", "EvalRow", "Measures", "PartnerGroup", "eval_table", "evaluate_policy",
           "game_measures", "mean_measures", "write_eval_csv"]

ALL_PARTNERS_ROW = "all"

#: The measure names and what they mean, in table order.
MEASURES: dict[str, str] = {
    "score": "the agent's mean points",
    "partner_score": "the partner's mean points",
    "joint": "mean of both scores' sum",
    "agreement": "fraction of games ending in a deal",
    "pareto": "fraction of deals that are Pareto-optimal",
    "nash_product": "mean Nash product of the outcome",
    "turns": "mean acts per game",
}


def game_measures(games: GameBatch, seat: int | np.ndarray = 0) -> dict[str, np.ndarray]:
    """Per-game :data:`MEASURES` from the side of ``seat`` (one seat, or one per game).

    ``pareto`` is 1.0 / 0.0 for deals and NaN for games without a deal.
    """
    m = games.metrics
    rows = np.arange(len(games))
    seat = np.broadcast_to(np.asarray(seat, dtype=np.int64), rows.shape)
    if np.any((seat != 0) & (seat != 1)):
        raise ValueError("seat must be 0 or 1")
    agreed = m["agreement"] > 0
    return {
        "score": m["scores"][rows, seat],
        "partner_score": m["scores"][rows, 1 - seat],
        "joint": m["joint"],
        "agreement": m["agreement"],
        "pareto": np.where(agreed, m["pareto_optimal"].astype(np.float64), np.nan),
        "nash_product": m["nash_product"],
        "turns": m["turns"],
    }


def mean_measures(*per_game: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Means of :func:`game_measures` pooled over every game given (``pareto`` over deals; NaN if none)."""
    out = {}
    for key in MEASURES:
        x = np.concatenate([np.asarray(part[key], dtype=np.float64) for part in per_game]) if per_game \
            else np.zeros(0)
        if key == "pareto":
            x = x[~np.isnan(x)]
        out[key] = float(x.mean()) if x.size else math.nan
    return out


@dataclass(frozen=True)
class Measures:
    """The :data:`MEASURES` of a set of games, in table order (the base of every result row)."""

    score: float
    partner_score: float
    joint: float
    agreement: float
    pareto: float
    nash_product: float
    turns: float


@dataclass(frozen=True)
class _PartnerGames:
    partner: str
    games: int


# Measures comes first among the bases so that its fields come last: dataclasses collect fields from the
# bases in reverse order, and rows keep their identifying fields first (positional use, CSV columns).
@dataclass(frozen=True)
class EvalRow(Measures, _PartnerGames):
    """The agent against one partner (or ``"all"``: every game against every partner): ``partner``,
    ``games``, then the :class:`Measures`."""


@dataclass(frozen=True)
class PartnerGroup:
    """Several partner policies played as one row: each game's partner is one member, drawn per game."""

    name: str
    members: tuple[Policy, ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError(f"partner group {self.name!r} has no members")
        for member in self.members:
            if not callable(getattr(member, "act_batch", None)):
                raise TypeError(f"partner group {self.name!r}: members are Policy objects, got "
                                f"{type(member).__name__}")


def _named_partners(partners: Sequence[str | Policy] | Mapping[str, Policy] | str,
                    seed: int) -> list[tuple[str, Policy]]:
    from parley.agents.partners.pool import resolve_partner_names
    from parley.agents.partners.scripted import make_partner

    if isinstance(partners, str):
        partners = resolve_partner_names(partners)
    items = list(partners.items()) if isinstance(partners, Mapping) else list(partners)
    if not items:
        raise ValueError("name at least one partner to evaluate against")
    named = []
    for index, item in enumerate(items):
        name, partner = item if isinstance(partners, Mapping) else (None, item)
        if isinstance(partner, PartnerGroup):
            name = partner.name if name is None else name
        elif isinstance(partner, str):
            name, partner = partner, make_partner(partner, seed=seed + index)
        elif not callable(getattr(partner, "act_batch", None)):
            raise TypeError(f"partners are scripted partner names or Policy objects, got {type(partner).__name__}")
        else:
            reseed = getattr(partner, "seed", None)
            if callable(reseed):
                reseed(seed + index)
        named.append((str(name if name is not None else getattr(partner, "name", type(partner).__name__)),
                      partner))
    return named


def _game_contexts(rng: np.random.Generator, episodes: int,
                   contexts: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    if contexts is None:
        return sample_context_arrays(rng, episodes)
    counts = np.asarray(contexts[0], dtype=np.int64).reshape(-1, 3)
    values = np.asarray(contexts[1], dtype=np.int64)
    if len(counts) == 0 or values.shape != (len(counts), 2, 3):
        raise ValueError("contexts are (counts (N, 3), values (N, 2, 3)) with N >= 1, got shapes "
                         f"{counts.shape} and {values.shape}")
    # Without replacement while the pool lasts, so a test split is covered before any context repeats.
    picks = np.concatenate([rng.permutation(len(counts)) for _ in range(-(-episodes // len(counts)))])[:episodes]
    return counts[picks], values[picks]


def evaluate_policy(policy: Policy,
                    partners: Sequence[str | Policy | PartnerGroup] | Mapping[str, Policy | PartnerGroup] | str
                    = "suite", *, episodes: int = 200, seed: int = 0, max_turns: int = DEFAULT_MAX_TURNS,
                    no_deal_reward: float = 0.0,
                    contexts: tuple[np.ndarray, np.ndarray] | None = None) -> list[EvalRow]:
    """Rows for each partner, then the ``"all"`` row pooling every game (see the module docstring).

    ``partners``: ``"suite"`` or ``"a,b"``, a list of scripted partner names, Policy objects and
    :class:`PartnerGroup` objects, or a mapping from row names to either. Named partners are built with
    seeds ``seed + index``; the policy and partner objects with a ``seed(int)`` method are reseeded, so
    evaluations repeat. ``contexts`` (counts (N, 3), values (N, 2, 3)) is the pool each game's context
    is drawn from (default: the rules' context distribution).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    named = _named_partners(partners, seed)
    rng = np.random.default_rng(seed)
    counts, values = _game_contexts(rng, episodes, contexts)
    first = rng.integers(2, size=episodes)
    rows, pooled = [], []
    for index, (name, partner) in enumerate(named):
        reseed = getattr(policy, "seed", None)
        if callable(reseed):
            reseed(seed + 1000 + index)
        if isinstance(partner, PartnerGroup):
            # Members are drawn from their own stream, so every evaluated policy meets the same ones.
            member_rng = np.random.default_rng([seed, index, len(partner.members)])
            member = member_rng.integers(len(partner.members), size=episodes)
            for offset, each in enumerate(partner.members):
                if callable(getattr(each, "seed", None)):
                    each.seed(seed * 7919 + 100 * index + offset)
            games = play_batch((policy, *partner.members), counts, values, first, max_turns=max_turns,
                               no_deal_reward=no_deal_reward, seating=np.stack([np.zeros_like(member), 1 + member], 1))
        else:
            games = play_batch((policy, partner), counts, values, first, max_turns=max_turns,
                               no_deal_reward=no_deal_reward)
        measures = game_measures(games, seat=0)
        pooled.append(measures)
        rows.append(EvalRow(name, episodes, **mean_measures(measures)))
    rows.append(EvalRow(ALL_PARTNERS_ROW, episodes * len(named), **mean_measures(*pooled)))
    return rows


def write_eval_csv(rows: Sequence[EvalRow], path: str | Path, *, policy: str = "") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["policy", *(f.name for f in fields(EvalRow))])
        writer.writeheader()
        for row in rows:
            writer.writerow({"policy": policy, **asdict(row)})
    return path


def eval_table(rows: Sequence[EvalRow], title: str = "Evaluation"):
    """A rich table of evaluation rows."""
    from rich.table import Table

    def num(x: float, digits: int = 2) -> str:
        return "-" if math.isnan(x) else f"{x:.{digits}f}"

    def pct(x: float) -> str:
        return "-" if math.isnan(x) else f"{100 * x:.1f}"

    table = Table(title=title)
    table.add_column("partner")
    for column in ("games", "score", "partner score", "agreement %", "Pareto %", "Nash product", "turns"):
        table.add_column(column, justify="right")
    for row in rows:
        style = "bold" if row.partner == ALL_PARTNERS_ROW else None
        table.add_row(row.partner, str(row.games), num(row.score), num(row.partner_score), pct(row.agreement),
                      pct(row.pareto), num(row.nash_product, 1), num(row.turns, 1), style=style)
    return table
