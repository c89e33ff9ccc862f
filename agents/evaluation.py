"""Evaluating a policy against scripted partners: one row of measures per partner.

``evaluate_policy(policy, ["boulware", "conceder"], episodes=200)`` plays ``episodes`` games against
each partner on the batched rules (the policy in seat 0, the partner in seat 1; contexts and first
movers drawn from ``seed``, the same for every partner) and reports, per partner and over all of them:

``score``          the policy's mean points
``partner_score``  the partner's mean points
``agreement``      fraction of games ending in a deal
``pareto``         fraction of deals that are Pareto-optimal (NaN without deals)
``nash_product``   mean Nash product of the outcome
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from parley.envs.negotiation import DEFAULT_MAX_TURNS, sample_context_arrays
from parley.envs.policy import Policy

ALL_PARTNERS_ROW = "all"


@dataclass(frozen=True)
class EvalRow:
    """The policy against one partner (or ``"all"``: every game against every partner)."""

    partner: str
    games: int
    score: float
    partner_score: float
    agreement: float
    pareto: float
    nash_product: float


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if np.size(x) else math.nan


def evaluate_policy(policy: Policy, partners: Sequence[str] | str = "suite", *, episodes: int = 200, seed: int = 0,
                    max_turns: int = DEFAULT_MAX_TURNS) -> list[EvalRow]:
    """Rows for each partner, then the ``"all"`` row; partners are names, ``"suite"`` or Policy objects."""
    from parley.agents.partners.pool import resolve_partner_names
    from parley.agents.partners.scripted import make_partner
    from parley.agents.partners.tournament import play_games

    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if isinstance(partners, str):
        partners = resolve_partner_names(partners)
    rng = np.random.default_rng(seed)
    counts, values = sample_context_arrays(rng, episodes)
    first = rng.integers(2, size=episodes)
    rows, pooled = [], {"score": [], "partner_score": [], "agreement": [], "pareto": [], "nash": []}
    for index, partner in enumerate(partners):
        if isinstance(partner, str):
            partner = make_partner(partner, seed=seed + index)
        reseed = getattr(policy, "seed", None)
        if callable(reseed):
            reseed(seed + 1000 + index)
        m = play_games(policy, partner, counts, values, first, max_turns=max_turns)
        agreed = m["agreement"] > 0
        pieces = {"score": m["scores"][:, 0], "partner_score": m["scores"][:, 1], "agreement": m["agreement"],
                  "pareto": m["pareto_optimal"][agreed].astype(np.float64), "nash": m["nash_product"]}
        for key, value in pieces.items():
            pooled[key].append(value)
        rows.append(EvalRow(str(getattr(partner, "name", type(partner).__name__)), episodes,
                            _mean(pieces["score"]), _mean(pieces["partner_score"]), _mean(pieces["agreement"]),
                            _mean(pieces["pareto"]), _mean(pieces["nash"])))
    cat = {key: np.concatenate(value) for key, value in pooled.items()}
    rows.append(EvalRow(ALL_PARTNERS_ROW, episodes * len(partners), _mean(cat["score"]), _mean(cat["partner_score"]),
                        _mean(cat["agreement"]), _mean(cat["pareto"]), _mean(cat["nash"])))
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
    for column in ("games", "score", "partner score", "agreement %", "Pareto %", "Nash product"):
        table.add_column(column, justify="right")
    for row in rows:
        style = "bold" if row.partner == ALL_PARTNERS_ROW else None
        table.add_row(row.partner, str(row.games), num(row.score), num(row.partner_score), pct(row.agreement),
                      pct(row.pareto), num(row.nash_product, 1), style=style)
    return table
