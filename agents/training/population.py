"""The partners ``parley train`` draws from: scripted partners and members of the training families.

``--partners`` names entries of the population. An entry is a scripted partner (``boulware``,
``pareto``, ..., ``suite`` for all of them, ``default`` for ``parley train``'s default partners) or
``family:NAME``, a training family of
:mod:`parley.agents.heldout` (``family:tactic``, ``family:stochastic``, ...), which contributes
``family_members`` partners with parameters drawn from the family. Every game meets one partner drawn
uniformly from the expanded population, so a family weighs ``family_members`` times a scripted partner.

Held-out families cannot be named: they are read only for final tables (:func:`resolve_population`
refuses them). Family members are drawn from a stream of their own (:data:`TRAINING_MEMBER_SEED`
plus the run's seed), apart from the validation members (``VALIDATION_SEED_OFFSET``) and from the
members the held-out table draws.

With ``parley train --partner-sampling prioritised`` (native trainer) the partners are not drawn
uniformly: :func:`reference_scores` measures the best scripted partner's score against each member of
the population before training, and :class:`~parley.agents.training.ppo.PrioritisedSampling` draws
each game's partner by how far the learner trails that score against it (refreshed every few
iterations).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from parley.envs.policy import Policy

__all__ = ["FAMILY_PREFIX", "REFERENCE_SEED", "TRAINING_MEMBER_SEED", "build_population", "make_population_env",
           "reference_scores", "resolve_population"]

FAMILY_PREFIX = "family:"
#: Added to the run's seed for the family members a population draws.
TRAINING_MEMBER_SEED = 20_000
#: Added to the run's seed for the games :func:`reference_scores` plays (apart from training's and evaluation's).
REFERENCE_SEED = 30_000


def resolve_population(partners: str | Sequence[str]) -> list[str]:
    """Checked population entries from ``"a,family:b"`` or a list: scripted names (``suite`` and
    ``default`` expanded) and ``family:NAME`` of a training family; raises ValueError naming what is
    allowed."""
    from parley.agents.heldout import CORPUS_FAMILY, HELDOUT_FAMILIES, TRAIN_FAMILIES
    from parley.agents.partners.pool import resolve_partner_names
    from parley.agents.training.run import DEFAULT_PARTNERS

    if isinstance(partners, str):
        partners = [p.strip() for p in partners.split(",") if p.strip()]
    partners = [name for entry in partners for name in (DEFAULT_PARTNERS if entry == "default" else [entry])]
    entries: list[str] = []
    scripted: list[str] = []
    for entry in partners:
        if not entry.startswith(FAMILY_PREFIX):
            scripted.append(entry)
            entries.append(entry)
            continue
        family = entry[len(FAMILY_PREFIX):]
        if family in (*HELDOUT_FAMILIES, CORPUS_FAMILY):
            raise ValueError(f"{entry}: {family!r} is a held-out family, kept for final tables; training may "
                             f"use the training families: {', '.join(FAMILY_PREFIX + f for f in TRAIN_FAMILIES)}")
        if family not in TRAIN_FAMILIES:
            raise ValueError(f"unknown partner family {family!r}; training families: "
                             f"{', '.join(FAMILY_PREFIX + f for f in TRAIN_FAMILIES)}")
        entries.append(entry)
    if not entries:
        raise ValueError("name at least one partner or family:NAME")
    names = resolve_partner_names(scripted) if scripted else []
    resolved: list[str] = []
    for entry in entries:  # keep the given order, with 'suite' expanded in place
        if entry.startswith(FAMILY_PREFIX):
            resolved.append(entry)
        elif entry in ("suite", "all"):
            resolved.extend(names)
        else:
            resolved.append(entry)
    return list(dict.fromkeys(resolved))


def build_population(partners: str | Sequence[str], *, family_members: int, seed: int = 0) -> list[Policy]:
    """The partner objects of a population: one per scripted entry, ``family_members`` per family.

    Partners with randomness are seeded from ``seed``; family members are drawn from
    ``TRAINING_MEMBER_SEED + seed``.
    """
    from parley.agents.heldout import family_members as draw_members
    from parley.agents.partners.scripted import make_partner

    if family_members < 1:
        raise ValueError(f"family_members must be at least 1, got {family_members}")
    population: list[Policy] = []
    for entry in resolve_population(partners):
        if entry.startswith(FAMILY_PREFIX):
            population.extend(draw_members(entry[len(FAMILY_PREFIX):], family_members, seed=TRAINING_MEMBER_SEED + seed))
        else:
            population.append(make_partner(entry))
    for index, partner in enumerate(population):
        if callable(getattr(partner, "seed", None)):
            partner.seed(seed * 7919 + index)
    return population


def reference_scores(population: Sequence[Policy], *, episodes: int = 200, seed: int = 0,
                     scripted: str | Sequence[str] = "suite") -> np.ndarray:
    """Per partner of ``population``: the best score a scripted partner of ``scripted`` reaches against it.

    Every scripted partner plays ``episodes`` games against each population partner (the same
    contexts and first movers for all, drawn from ``REFERENCE_SEED + seed``); the reference prioritised
    sampling measures the learner's gap against.
    """
    from parley.agents.evaluation import evaluate_policy
    from parley.agents.partners.pool import resolve_partner_names
    from parley.agents.partners.scripted import make_partner

    if not population:
        raise ValueError("the population is empty; give at least one partner")
    named = {f"{index}:{getattr(partner, 'name', type(partner).__name__)}": partner
             for index, partner in enumerate(population)}
    best = np.full(len(population), -np.inf)
    for name in resolve_partner_names(scripted):
        rows = evaluate_policy(make_partner(name, seed=seed), named, episodes=episodes, seed=REFERENCE_SEED + seed)
        best = np.maximum(best, [row.score for row in rows[:len(population)]])
    return best


def make_population_env(partners: str | Sequence[str], *, family_members: int, seed: int = 0, **env_kwargs: Any):
    """``parley/Negotiation-v0`` against a partner drawn per episode from the population."""
    from parley.agents.partners.pool import PartnerPoolEnv
    from parley.envs.negotiation_gym import NegotiationGymEnv

    pool = build_population(partners, family_members=family_members, seed=seed)
    return PartnerPoolEnv(NegotiationGymEnv(partner=pool[0], **env_kwargs), pool)
