"""Held-out evaluation: partner families with randomised parameters, and the gap to the best scripted partner.

A trained agent must hold up against partners it never met. This module defines partner **families**
-- distributions over the parameters of parley's scripted partners -- split into families that training
and the choice of settings may use (:data:`TRAIN_FAMILIES`) and families read only for the final table
(:data:`HELDOUT_FAMILIES`); the two sets are disjoint (see :func:`check_split`). With a corpus, the
supervised corpus partner joins the held-out families and the contexts come from the corpus test split.

=================  ======  ==========================================================================
family             split   members (each game meets one member; parameters drawn per member)
=================  ======  ==========================================================================
tactic             train   time-dependent tactic, exponent e log-uniform in [0.2, 3], reservation
                           in [3, 7], k in [0, 0.2]; concedes until the last act
fair_split         train   asks for a share in [0.4, 0.7] of its value with an even item split
pareto             train   Pareto-aware, uniform prior, e in [0.3, 3], reservation in [3, 7],
                           rationality one of 0.5, 0.7, 1, 1.4, 2
stochastic         train   agrees to an offer with probability in [0.1, 0.4] (+ up to 0.05 per point above
                           its reservation), walks away with probability in [0, 0.1], else a
                           time-dependent tactic (e log-uniform in [0.3, 3], reservation in [2, 7])
erratic            train   agrees to an offer with probability in [0.1, 0.4] whatever it is worth,
                   only    walks away with probability in [0, 0.1], else proposes a random split
                           worth at least its reservation (in [2, 7]) to it: the kind of partner the
                           supervised corpus partner is (not on the validation table)
deadline_tactic    held    time-dependent tactic with its own deadline in [0.3, 0.9] of the game,
                   out     e log-uniform in [0.1, 10], reservation in [2, 8], k in [0, 0.3], final
                           offers accepted or not
tit_for_tat        held    tit-for-tat, reservation in [2, 8], opening concession in [0, 3],
                   out     kindness in [0, 1.5]
pareto_prior       held    Pareto-aware with a random prior (a leaning per item type, normal, sd 0.5),
                   out     rationality one of 0.3, 0.55, 0.9, 1.6, 3, e in [0.2, 5], reservation in [3, 8],
                           deadline in [0.5, 1]
corpus_sl          held    the supervised partner trained on the corpus's training dialogues,
                   out     sampling its acts (only when a corpus partner is given)
=================  ======  ==========================================================================

Validation: settings are chosen on the validation families (:data:`VALIDATION_FAMILIES`, the training
families but ``erratic``, which stands in for the corpus partner's kind in training only) with :data:`VALIDATION_SEED_OFFSET` added to
the seed (other members, other contexts) and, with a corpus, on a stand-in for the corpus partner
trained without the ``val.txt`` dialogues, playing on the ``val.txt`` contexts
(:func:`evaluate_validation`); the held-out families are read for the final table.

Contexts: from the corpus test split (``test.txt``, :func:`corpus_test_contexts`) when a corpus is
given; otherwise generated from a stream of their own (:data:`HELDOUT_CONTEXT_STREAM`), separate from
the streams training draws from. (The rules allow a few thousand contexts in all, so only a test split
guarantees contexts that training never saw.)

:func:`evaluate_heldout` plays the agent and every scripted partner of the suite against each family
on the same games (:func:`~parley.agents.evaluation.evaluate_policy` with the same seed, contexts and
members) and reports, per family, the agent's :class:`~parley.agents.evaluation.EvalRow`, the best
scripted partner's row on those games and the gap between their scores::

    report = evaluate_heldout(policy, episodes=200)
    console.print(heldout_table(report))
    report.rows["tit_for_tat"].gap
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from parley.agents.evaluation import ALL_PARTNERS_ROW, EvalRow, PartnerGroup, evaluate_policy
from parley.envs.negotiation import DEFAULT_MAX_TURNS, sample_context_arrays
from parley.envs.policy import Policy

__all__ = ["CORPUS_FAMILY", "FAMILIES", "HELDOUT_FAMILIES", "TRAIN_FAMILIES", "VALIDATION_CORPUS_FAMILY",
           "VALIDATION_FAMILIES", "VALIDATION_SEED_OFFSET", "FamilyResult", "HeldoutReport", "PartnerFamily", "check_split",
           "corpus_test_contexts", "corpus_validation_contexts", "evaluate_heldout", "evaluate_validation",
           "family_groups", "family_members", "heldout_table", "pool_rows", "train_corpus_partner",
           "write_heldout_csv"]

#: Seed-sequence tags that keep the protocol's random streams apart from training's.
HELDOUT_CONTEXT_STREAM = 0x48454C44  # "HELD"
FAMILY_MEMBER_STREAM = 0x46414D49  # "FAMI"
#: Added to the seed when the training families serve as validation partners.
VALIDATION_SEED_OFFSET = 50_000
CORPUS_FAMILY = "corpus_sl"
#: The validation stand-in for the corpus partner (trained without the val.txt dialogues).
VALIDATION_CORPUS_FAMILY = "corpus_sl_validation"
DEFAULT_MEMBERS = 12


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


@dataclass(frozen=True)
class PartnerFamily:
    """A distribution over one scripted partner's parameters: ``draw(rng)`` gives (builder name, params)."""

    name: str
    description: str
    draw: Callable[[np.random.Generator], tuple[str, dict[str, Any]]]

    def member(self, rng: np.random.Generator) -> Policy:
        """One partner with parameters drawn from the family; ``member.params`` holds them."""
        from parley.agents.partners.scripted import ParetoPartner, TimeDependentPartner, make_partner

        kind, params = self.draw(rng)
        if kind == "time_dependent":
            partner = TimeDependentPartner(**params)
        elif kind == "pareto":
            partner = ParetoPartner(**params)
        elif kind == "stochastic":
            from parley.agents.partners.stochastic import StochasticPartner

            partner = StochasticPartner(**params)
        else:
            partner = make_partner(kind, **params)
        partner.name = self.name
        partner.params = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in params.items()}
        return partner


def _rationality(rng: np.random.Generator, grid: Sequence[float]) -> float:
    # A few values, so the Pareto-aware members share their belief tables (built once per rationality).
    return float(rng.choice(grid))


def _tactic(rng):
    return "time_dependent", {"exponent": _log_uniform(rng, 0.2, 3.0), "reservation": rng.uniform(3, 7),
                              "k": rng.uniform(0, 0.2)}


def _fair(rng):
    return "fair_split", {"share": rng.uniform(0.4, 0.7)}


def _pareto(rng):
    return "pareto", {"exponent": _log_uniform(rng, 0.3, 3.0), "reservation": rng.uniform(3, 7),
                      "rationality": _rationality(rng, (0.5, 0.7, 1.0, 1.4, 2.0))}


def _stochastic(rng):
    return "stochastic", {"accept_probability": rng.uniform(0.1, 0.4), "accept_slope": rng.uniform(0.0, 0.05),
                          "walk_away_probability": rng.uniform(0.0, 0.1), "exponent": _log_uniform(rng, 0.3, 3.0),
                          "reservation": rng.uniform(2, 7)}


def _erratic(rng):
    return "stochastic", {"accept_probability": rng.uniform(0.1, 0.4), "walk_away_probability": rng.uniform(0.0, 0.1),
                          "reservation": rng.uniform(2, 7), "random_proposal_probability": 1.0}


def _deadline_tactic(rng):
    return "time_dependent", {"exponent": _log_uniform(rng, 0.1, 10.0), "reservation": rng.uniform(2, 8),
                              "k": rng.uniform(0, 0.3), "deadline": rng.uniform(0.3, 0.9),
                              "accept_final_offers": bool(rng.integers(2))}


def _tit_for_tat(rng):
    return "tit_for_tat", {"reservation": rng.uniform(2, 8), "opening_concession": rng.uniform(0, 3),
                           "kindness": rng.uniform(0, 1.5)}


def _pareto_prior(rng):
    return "pareto", {"prior": rng.normal(0.0, 0.5, size=3), "rationality": _rationality(rng, (0.3, 0.55, 0.9, 1.6, 3.0)),
                      "exponent": _log_uniform(rng, 0.2, 5.0), "reservation": rng.uniform(3, 8),
                      "deadline": rng.uniform(0.5, 1.0)}


#: Every family by name (the corpus partner is added by :func:`family_groups` when given).
FAMILIES: dict[str, PartnerFamily] = {f.name: f for f in (
    PartnerFamily("tactic", "time-dependent tactic, random exponent, reservation and k", _tactic),
    PartnerFamily("fair_split", "even item split, random share", _fair),
    PartnerFamily("pareto", "Pareto-aware, uniform prior, random exponent, reservation and rationality", _pareto),
    PartnerFamily("deadline_tactic", "time-dependent tactic with its own deadline; wider exponents and "
                  "reservations", _deadline_tactic),
    PartnerFamily("tit_for_tat", "tit-for-tat, random reservation, opening concession and kindness", _tit_for_tat),
    PartnerFamily("pareto_prior", "Pareto-aware with a random prior over the partner's values and a "
                  "deadline", _pareto_prior),
    # Later families go last: a family's members are drawn from a stream keyed by its position.
    PartnerFamily("stochastic", "agrees and walks away at random, else a time-dependent tactic", _stochastic),
    PartnerFamily("erratic", "agrees and walks away at random whatever the offer, proposes random splits worth "
                  "its reservation", _erratic),
)}
#: The families of the validation table (with the corpus stand-in, when a corpus is given).
VALIDATION_FAMILIES = ("tactic", "fair_split", "pareto", "stochastic")
#: Families training (and the choice of its settings) may use.
TRAIN_FAMILIES = (*VALIDATION_FAMILIES, "erratic")
#: Families read only for the final table (plus :data:`CORPUS_FAMILY` when a corpus partner is given).
HELDOUT_FAMILIES = ("deadline_tactic", "tit_for_tat", "pareto_prior")


def check_split(train: Sequence[str] = TRAIN_FAMILIES, heldout: Sequence[str] = HELDOUT_FAMILIES) -> None:
    """Raise ValueError unless both sets name known families and share none."""
    for name in (*train, *heldout):
        if name not in (*FAMILIES, CORPUS_FAMILY, VALIDATION_CORPUS_FAMILY):
            raise ValueError(f"unknown partner family {name!r}; known families: {', '.join(FAMILIES)}, "
                             f"{CORPUS_FAMILY}, {VALIDATION_CORPUS_FAMILY}")
    shared = sorted(set(train) & set(heldout))
    if shared:
        raise ValueError(f"families {shared} are both training and held-out families")


def family_members(name: str, count: int = DEFAULT_MEMBERS, seed: int = 0) -> list[Policy]:
    """``count`` partners of family ``name`` with parameters drawn from ``seed``'s stream for that family."""
    if name not in FAMILIES:
        raise ValueError(f"unknown partner family {name!r}; known families: {', '.join(FAMILIES)}")
    if count < 1:
        raise ValueError(f"a family needs at least 1 member, got {count}")
    index = list(FAMILIES).index(name)
    rng = np.random.default_rng([FAMILY_MEMBER_STREAM, seed, index])
    return [FAMILIES[name].member(rng) for _ in range(count)]


def family_groups(names: Sequence[str], *, members: int = DEFAULT_MEMBERS, seed: int = 0,
                  corpus_partner: Policy | None = None) -> dict[str, PartnerGroup]:
    """One :class:`~parley.agents.evaluation.PartnerGroup` per family (``corpus_sl`` needs ``corpus_partner``)."""
    groups = {}
    for name in names:
        if name in (CORPUS_FAMILY, VALIDATION_CORPUS_FAMILY):
            if corpus_partner is None:
                raise ValueError(f"the {name} family needs a corpus partner (train_corpus_partner)")
            groups[name] = PartnerGroup(name, (corpus_partner,))
        else:
            groups[name] = PartnerGroup(name, tuple(family_members(name, members, seed)))
    return groups


def corpus_test_contexts(corpus: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(counts, values) of every context in the corpus test split (``test.txt`` in ``corpus`` or beside it)."""
    path = Path(corpus)
    path = path / "test.txt" if path.is_dir() else path.parent / "test.txt" if path.name != "test.txt" else path
    return _split_contexts(path)


def _split_contexts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from parley.envs.contexts import load_contexts

    if not path.is_file():
        split = {"test.txt": "test", "val.txt": "validation"}.get(path.name, path.stem)
        raise FileNotFoundError(f"no corpus {split} split at {path} (give the corpus directory holding {path.name})")
    contexts = load_contexts(path, skip_invalid=True)
    if not contexts:
        raise ValueError(f"{path} holds no valid context")
    counts = np.array([c.counts for c in contexts], dtype=np.int64)
    values = np.array([c.values for c in contexts], dtype=np.int64)
    return counts, values


def corpus_validation_contexts(corpus: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(counts, values) of every context in the corpus validation split (``val.txt`` in ``corpus``)."""
    return _split_contexts(Path(corpus) / "val.txt")


def train_corpus_partner(corpus: str | Path, *, epochs: int = 10, seed: int = 0, device: str = "cpu",
                         validation: bool = False) -> Policy:
    """The supervised corpus partner: behaviour cloning on the corpus's training dialogues, sampling its acts.

    Dialogues of ``test.txt`` are left out (:func:`~parley.envs.corpus.load_corpus` drops them). With
    ``validation`` the dialogues of ``val.txt`` are left out too and the partner is named
    :data:`VALIDATION_CORPUS_FAMILY`: the stand-in for the held-out corpus partner that choosing
    settings may use (it plays on the validation contexts, :func:`evaluate_validation`).
    """
    from parley.agents.training.supervised import SupervisedConfig, train_supervised
    from parley.envs.corpus import corpus_dataset, load_corpus

    dialogues = load_corpus(corpus)
    if validation:
        validation_keys = {d.key() for d in load_corpus(Path(corpus) / "val.txt", parse=False)}
        dialogues = [d for d in dialogues if d.key() not in validation_keys]
    data = corpus_dataset(dialogues)
    config = SupervisedConfig(epochs=epochs, seed=seed, device=device)
    name = VALIDATION_CORPUS_FAMILY if validation else CORPUS_FAMILY
    policy = train_supervised(data, config, name=name).policy
    policy.deterministic = False
    return policy


@dataclass(frozen=True)
class FamilyResult:
    """The agent against one family, and the best scripted partner of the suite on the same games."""

    family: str
    agent: EvalRow
    best_scripted: str
    best_scripted_row: EvalRow

    @property
    def gap(self) -> float:
        """The agent's score minus the best scripted partner's score."""
        return self.agent.score - self.best_scripted_row.score


@dataclass(frozen=True)
class HeldoutReport:
    """Per family (and ``"all"``): the agent's row, the best scripted partner's and the gap."""

    rows: dict[str, FamilyResult]
    scripted: dict[str, list[EvalRow]]  # every scripted partner's rows against the families
    contexts: str  # where the contexts came from
    episodes: int
    members: int
    seed: int


def _best(name: str, agent: EvalRow, scripted: Mapping[str, Sequence[EvalRow]], row: int) -> FamilyResult:
    best = max(scripted, key=lambda partner: scripted[partner][row].score)
    return FamilyResult(name, agent, best, scripted[best][row])


def evaluate_heldout(policy: Policy, *, families: Sequence[str] | None = None, episodes: int = 200,
                     seed: int = 0, members: int = DEFAULT_MEMBERS, corpus: str | Path | None = None,
                     corpus_partner: Policy | None = None, scripted: str | Sequence[str] = "suite",
                     max_turns: int = DEFAULT_MAX_TURNS,
                     corpus_contexts: tuple[np.ndarray, np.ndarray] | None = None) -> HeldoutReport:
    """The held-out table of ``policy``: each family's rows and the gap to the best scripted partner.

    ``families`` defaults to :data:`HELDOUT_FAMILIES` (plus ``corpus_sl`` when ``corpus_partner`` is
    given). With ``corpus`` the contexts are the corpus test split's, else drawn from the held-out
    context stream; ``corpus_contexts`` (counts, values) gives the contexts directly (the validation
    table passes the corpus validation split's). ``episodes`` games per family; every scripted partner in
    ``scripted`` plays the same games in the agent's seat.
    """
    from parley.agents.partners.pool import resolve_partner_names
    from parley.agents.partners.scripted import make_partner

    if families is None:
        families = [*HELDOUT_FAMILIES, *([CORPUS_FAMILY] if corpus_partner is not None else [])]
    families = list(families)
    if not families:
        raise ValueError("name at least one partner family")
    check_split([], families)
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    groups = family_groups(families, members=members, seed=seed, corpus_partner=corpus_partner)
    if corpus_contexts is not None:
        contexts = corpus_contexts
        source = f"corpus ({len(contexts[0])} contexts)"
    elif corpus is not None:
        contexts = corpus_test_contexts(corpus)
        source = f"corpus test split ({len(contexts[0])} contexts)"
    else:
        contexts = sample_context_arrays(np.random.default_rng([HELDOUT_CONTEXT_STREAM, seed]), episodes)
        source = f"generated (the protocol's context stream, seed {seed})"

    def rows_of(agent: Policy) -> list[EvalRow]:
        return evaluate_policy(agent, groups, episodes=episodes, seed=seed, max_turns=max_turns, contexts=contexts)

    agent_rows = rows_of(policy)
    scripted_rows = {name: rows_of(make_partner(name, seed=seed)) for name in resolve_partner_names(scripted)}
    names = [*families, ALL_PARTNERS_ROW]
    results = {name: _best(name, agent_rows[i], scripted_rows, i) for i, name in enumerate(names)}
    return HeldoutReport(results, scripted_rows, source, episodes, members, seed)


def pool_rows(rows: Sequence[EvalRow], name: str = ALL_PARTNERS_ROW) -> EvalRow:
    """One row over every game of ``rows`` (means weighted by games; Pareto % by deals)."""
    games = np.array([r.games for r in rows], dtype=np.float64)
    deals = games * np.array([r.agreement for r in rows])

    def mean(field: str, weights: np.ndarray) -> float:
        values = np.array([getattr(r, field) for r in rows], dtype=np.float64)
        keep = weights > 0
        return float(np.average(values[keep], weights=weights[keep])) if keep.any() else math.nan

    return EvalRow(name, int(games.sum()), *(mean(f, games) for f in ("score", "partner_score", "joint", "agreement")),
                   mean("pareto", deals), mean("nash_product", games), mean("turns", games))


def evaluate_validation(policy: Policy, *, episodes: int = 200, seed: int = 0, members: int = DEFAULT_MEMBERS,
                        corpus: str | Path | None = None, corpus_partner: Policy | None = None,
                        scripted: str | Sequence[str] = "suite", max_turns: int = DEFAULT_MAX_TURNS) -> HeldoutReport:
    """The table settings are chosen on: the validation families on validation games, gap per family.

    Members and contexts come from ``seed + VALIDATION_SEED_OFFSET`` (other members and games than
    training draws). With ``corpus_partner`` (:func:`train_corpus_partner` with ``validation=True``)
    and ``corpus``, that partner joins as :data:`VALIDATION_CORPUS_FAMILY`, playing on the contexts of
    the corpus validation split; ``"all"`` then pools every game.
    """
    seed = seed + VALIDATION_SEED_OFFSET
    common = dict(episodes=episodes, seed=seed, members=members, scripted=scripted, max_turns=max_turns)
    report = evaluate_heldout(policy, families=list(VALIDATION_FAMILIES), **common)
    if corpus_partner is None:
        return report
    if corpus is None:
        raise ValueError("the validation corpus partner plays on the corpus validation contexts: give corpus")
    contexts = corpus_validation_contexts(corpus)
    corpus_report = evaluate_heldout(policy, families=[VALIDATION_CORPUS_FAMILY], corpus_contexts=contexts,
                                     corpus_partner=corpus_partner, **common)
    rows = {name: result for name, result in report.rows.items() if name != ALL_PARTNERS_ROW}
    rows[VALIDATION_CORPUS_FAMILY] = corpus_report.rows[VALIDATION_CORPUS_FAMILY]
    scripted_rows = {name: [*report.scripted[name][:-1], corpus_report.scripted[name][0]] for name in report.scripted}
    scripted_rows = {name: [*each, pool_rows(each)] for name, each in scripted_rows.items()}
    agent_all = pool_rows([result.agent for result in rows.values()])
    rows[ALL_PARTNERS_ROW] = _best(ALL_PARTNERS_ROW, agent_all, scripted_rows, len(rows))
    return HeldoutReport(rows, scripted_rows, f"{report.contexts}; corpus validation split ({len(contexts[0])} "
                         f"contexts) for {VALIDATION_CORPUS_FAMILY}", episodes, members, seed)


def heldout_table(report: HeldoutReport, title: str = "Held-out partner families"):
    """A rich table: per family the agent's measures, the best scripted partner and the gap."""
    from rich.table import Table

    def num(x: float, digits: int = 2) -> str:
        return "-" if math.isnan(x) else f"{x:.{digits}f}"

    def pct(x: float) -> str:
        return "-" if math.isnan(x) else f"{100 * x:.1f}"

    table = Table(title=f"{title} ({report.episodes} games each, {report.contexts} contexts)")
    for column in ("family", "score", "partner score", "agreement %", "Pareto %", "Nash product",
                   "best scripted", "its score", "gap"):
        table.add_column(column, justify="left" if column in ("family", "best scripted") else "right")
    for name, result in report.rows.items():
        a = result.agent
        gap = result.gap
        table.add_row(name, num(a.score), num(a.partner_score), pct(a.agreement), pct(a.pareto),
                      num(a.nash_product, 1), result.best_scripted, num(result.best_scripted_row.score),
                      f"[{'green' if gap >= 0 else 'red'}]{gap:+.2f}[/]",
                      style="bold" if name == ALL_PARTNERS_ROW else None)
    return table


def write_heldout_csv(report: HeldoutReport, path: str | Path, *, policy: str = "") -> Path:
    """One row per family: the agent's measures, the best scripted partner, its score and the gap."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = None
        for name, result in report.rows.items():
            row = {"policy": policy, **asdict(result.agent), "family": name, "best_scripted": result.best_scripted,
                   "best_scripted_score": result.best_scripted_row.score, "gap": result.gap,
                   "contexts": report.contexts}
            row.pop("partner")
            if writer is None:
                writer = csv.DictWriter(handle, fieldnames=list(row))
                writer.writeheader()
            writer.writerow(row)
    return path
