"""Scripted negotiation partners: rule-based opponents for training, evaluation and tournaments.

Every partner implements the :class:`~parley.envs.policy.Policy` interface (``act`` and a batched
``act_batch`` written with numpy array operations) and reads **only** the observation vector of
:mod:`parley.envs.negotiation` -- item counts, its own values, the partner's standing proposal, its own
last proposal, the turn fraction and the act history. None of them ever sees the partner's values.

Build them by name::

    from parley.agents.partners.scripted import make_partner, list_partners
    partner = make_partner("boulware", reservation=4)
    action = partner.act(observation, action_mask)

=============  ==================================================================================
name           strategy
=============  ==================================================================================
random         uniform over the legal acts (seeded)
hardliner      insists on every item it values; accepts only offers worth ``accept_at`` (10)
fair_split     asks for about half of its total value, splitting each item type evenly
boulware       time-dependent, e = 0.2: holds out and concedes late
linear         time-dependent, e = 1: concedes at a constant rate
conceder       time-dependent, e = 2: concedes early
tit_for_tat    nice tit-for-tat: mirrors the partner's concessions, measured in its own utility
pareto         keeps a belief over the partner's values; proposes splits on the believed Pareto frontier
=============  ==================================================================================

Shared conventions
------------------
* Utilities are the partner's own points, 0..10 (every agent's items are worth 10 in total).
* Time runs from ``t = 0`` at the first act of a game to ``t = 1`` at the last act allowed
  (``t = turn / (max_turns - 1)``; ``max_turns`` is read from the observation length). The agent that
  sends the last act cannot expect another exchange, so target-driven partners reach their reservation
  value exactly there.
* Target-driven partners propose the split whose own utility is the smallest one at or above their
  target; among splits of equal utility they keep the fewest items, i.e. they concede the items least
  valuable to themselves first (items worth nothing to them are always given away). Remaining ties go to
  the lowest action index, so they are deterministic and ``act`` equals ``act_batch`` row by row.
* They accept the partner's standing proposal when it is worth at least their current target -- the
  utility of the proposal they would send next (the "AC_next" acceptance condition of GENIUS agents).
  The time-dependent, tit-for-tat and Pareto-aware partners read an ``insist`` as a final offer and
  accept it when it is worth at least their reservation value (``accept_final_offers=False`` turns
  that off); the hardliner sends its demands as ``insist``.
* Every act is checked against the action mask; a row whose mask is empty (the game is over) gets
  ``walk_away``, which the rules ignore for finished games.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from parley.envs.negotiation import (
    AGREE_ACTION,
    ALL_SPLITS,
    INSIST_OFFSET,
    MAX_ITEM_COUNT,
    NUM_ITEM_TYPES,
    NUM_SPLITS,
    PROPOSE_OFFSET,
    VALUE_TOTAL,
    WALK_AWAY_ACTION,
    ObservationLayout,
    _valid_count_vectors,
    _valuations,
    valid_value_pairs,
)
from parley.envs.policy import BatchPolicy

__all__ = [
    "ScriptedPartner",
    "RandomPartner",
    "HardlinerPartner",
    "FairSplitPartner",
    "TimeDependentPartner",
    "TitForTatPartner",
    "ParetoPartner",
    "ObservationView",
    "make_partner",
    "list_partners",
    "PARTNERS",
]

_EPS = 1e-4  # utilities are integers held in float32; anything below 1 point apart is a tie
_MAX_UTILITY = float(VALUE_TOTAL)
_SPLITS_F32 = ALL_SPLITS.astype(np.float32)
_ITEMS_KEPT = ALL_SPLITS.sum(axis=1).astype(np.float32)
_SPLIT_RADIX = MAX_ITEM_COUNT + 1  # split (a, b, c) sits at index (a * 5 + b) * 5 + c


# --------------------------------------------------------------------------------------------------
# Reading observations
# --------------------------------------------------------------------------------------------------


class ObservationView:
    """Integer views of a batch of observation vectors (B, D), decoded once per ``act_batch`` call.

    Attributes: ``counts`` (B, 3); ``values`` (B, 3) own values; ``has_offer`` (B,) whether the partner
    has a standing proposal; ``offer_items`` (B, 3) what this agent would receive under it;
    ``has_own`` / ``own_kept`` its own last proposal; ``turn`` (B,) acts sent so far; ``time`` (B,) in
    [0, 1]; ``history`` (B, H) action indices (-1 = padding); ``from_partner`` (B, H) bool.
    """

    def __init__(self, observations: np.ndarray) -> None:
        obs = np.asarray(observations, dtype=np.float32)
        if obs.ndim != 2:
            raise ValueError(f"observations must have shape (B, D), got {obs.shape}")
        self.layout = ObservationLayout.from_size(obs.shape[1])
        self.max_turns = self.layout.max_turns
        self.observations = obs

    # Fields are decoded on first use: a partner pays only for what it reads.
    def _ints(self, where: slice | int) -> np.ndarray:
        return np.rint(self.observations[:, where]).astype(np.int64)

    @functools.cached_property
    def counts(self) -> np.ndarray:
        return self._ints(self.layout.counts)

    @functools.cached_property
    def values(self) -> np.ndarray:
        return self._ints(self.layout.values)

    @functools.cached_property
    def has_offer(self) -> np.ndarray:
        return self.observations[:, self.layout.partner_offer_flag] > 0.5

    @functools.cached_property
    def offer_items(self) -> np.ndarray:
        return self._ints(self.layout.partner_offer)

    @functools.cached_property
    def has_own(self) -> np.ndarray:
        return self.observations[:, self.layout.own_offer_flag] > 0.5

    @functools.cached_property
    def own_kept(self) -> np.ndarray:
        return self._ints(self.layout.own_offer)

    @functools.cached_property
    def turn(self) -> np.ndarray:
        return np.rint(self.observations[:, self.layout.turn_fraction] * self.max_turns).astype(np.int64)

    @functools.cached_property
    def time(self) -> np.ndarray:
        return np.clip(self.turn / max(self.max_turns - 1, 1), 0.0, 1.0)

    @functools.cached_property
    def history(self) -> np.ndarray:
        return self._ints(self.layout.history_acts) - 1

    @functools.cached_property
    def from_partner(self) -> np.ndarray:
        return self._ints(self.layout.history_speakers) == 2

    @property
    def batch_size(self) -> int:
        return self.observations.shape[0]

    @property
    def last_act(self) -> np.ndarray:
        """Whether the act about to be sent is the last one the game allows."""
        return self.turn >= self.max_turns - 1

    @functools.cached_property
    def value_key(self) -> np.ndarray:
        v = np.clip(self.values, 0, VALUE_TOTAL)
        return (v[:, 0] * (VALUE_TOTAL + 1) + v[:, 1]) * (VALUE_TOTAL + 1) + v[:, 2]

    @functools.cached_property
    def own_split_utilities(self) -> np.ndarray:
        """(B, 125) float32 own utility of keeping each split (whether or not it fits the counts)."""
        return _utility_table()[self.value_key]

    @functools.cached_property
    def partner_insisted(self) -> np.ndarray:
        """(B,) whether the partner's standing proposal was sent as ``insist``."""
        _, is_offer = self.partner_offers
        rank = np.cumsum(is_offer, axis=1)
        latest = is_offer & (rank == rank[:, -1:])
        return self.has_offer & np.any(latest & (self.history >= INSIST_OFFSET), axis=1)

    def offer_utility(self) -> np.ndarray:
        """(B,) own utility of the partner's standing proposal (0 where there is none)."""
        return np.where(self.has_offer, (self.offer_items * self.values).sum(-1), 0)

    def own_last_utility(self) -> np.ndarray:
        """(B,) own utility of this agent's last proposal (10 where it has made none)."""
        return np.where(self.has_own, (self.own_kept * self.values).sum(-1), VALUE_TOTAL)

    @functools.cached_property
    def partner_offers(self) -> tuple[np.ndarray, np.ndarray]:
        """The partner's proposals in the history: split indices it kept (B, H) and a validity mask (B, H)."""
        is_offer = self.from_partner & (self.history >= 0) & (self.history < AGREE_ACTION)
        return np.where(is_offer, self.history % NUM_SPLITS, 0), is_offer


# --------------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------------


def _closest_above(utilities: np.ndarray, feasible: np.ndarray, target: np.ndarray,
                   tie_break: np.ndarray) -> np.ndarray:
    """Per row, the feasible split of smallest utility >= target, ties to the smallest ``tie_break``.

    ``utilities`` and ``tie_break`` are (B, 125) with tie-break values in [0, 1000). Rows where no split
    reaches the target take their best feasible split.
    """
    reaches = feasible & (utilities >= (target.astype(np.float32) - _EPS)[:, None])
    none = ~reaches.any(axis=1)
    if none.any():
        sub_feasible, sub_utils = feasible[none], utilities[none]
        best = np.where(sub_feasible, sub_utils, -np.inf).max(axis=1)
        reaches[none] = sub_feasible & (sub_utils >= best[:, None] - _EPS)
    score = np.where(reaches, utilities * np.float32(1000.0) + tie_break, np.float32(np.inf))
    return score.argmin(axis=1)


def _finalize(actions: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Replace any act the mask forbids by walk_away (or the first legal act if that is forbidden)."""
    rows = np.arange(actions.shape[0])
    ok = masks[rows, actions] > 0
    if ok.all():
        return actions
    fallback = np.where(masks[:, WALK_AWAY_ACTION] > 0, WALK_AWAY_ACTION, masks.argmax(axis=1))
    fallback = np.where(masks.any(axis=1), fallback, WALK_AWAY_ACTION)
    return np.where(ok, actions, fallback)


def _check_batch(observations: np.ndarray, action_masks: np.ndarray) -> tuple[ObservationView, np.ndarray]:
    masks = np.asarray(action_masks)
    if masks.ndim != 2 or masks.shape[1] != WALK_AWAY_ACTION + 1:
        raise ValueError(f"action masks must have shape (B, {WALK_AWAY_ACTION + 1}), got {masks.shape}")
    view = ObservationView(observations)
    if view.batch_size != masks.shape[0]:
        raise ValueError(f"{view.batch_size} observations but {masks.shape[0]} action masks")
    return view, masks


def _check_reservation(reservation: float) -> float:
    if not 0.0 <= reservation <= _MAX_UTILITY:
        raise ValueError(f"reservation must be between 0 and {VALUE_TOTAL} points, got {reservation}")
    return float(reservation)


class ScriptedPartner(BatchPolicy):
    """Base class of the target-driven partners: propose near a target, accept offers that reach it.

    Subclasses implement :meth:`targets` (the own utility aimed at, per row) and may override
    :meth:`tie_break` and :meth:`choose_splits`. ``insist`` selects whether proposals are sent as
    ``insist`` instead of ``propose``. With ``accept_final_offers`` an offer the partner sent as
    ``insist`` is taken as final -- no further concessions will come -- and accepted when it is worth
    at least the reservation value.
    """

    name = "scripted"
    insist = False

    def __init__(self, reservation: float = 5.0, seed: int | None = None, accept_final_offers: bool = False) -> None:
        super().__init__(seed)
        self.reservation = _check_reservation(reservation)
        self.accept_final_offers = bool(accept_final_offers)

    def targets(self, view: ObservationView) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement targets")

    def tie_break(self, view: ObservationView) -> np.ndarray:
        """(B, 125) secondary preference among splits of equal own utility, smaller first."""
        return _ITEMS_KEPT[None]

    def choose_splits(self, view: ObservationView, feasible: np.ndarray, target: np.ndarray) -> np.ndarray:
        """(B,) split indices to propose."""
        return _closest_above(view.own_split_utilities, feasible, target, self.tie_break(view))

    #: Rows decided per pass: keeps the (rows, 125) working arrays in cache at large batches.
    chunk_size = 1024

    def act_batch(self, observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        observations, masks = np.asarray(observations), np.asarray(action_masks)
        if observations.ndim == 2 and observations.shape[0] > self.chunk_size:
            return np.concatenate([self._act_chunk(observations[i:i + self.chunk_size], masks[i:i + self.chunk_size])
                                   for i in range(0, observations.shape[0], self.chunk_size)])
        return self._act_chunk(observations, masks)

    def _act_chunk(self, observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        view, masks = _check_batch(observations, action_masks)
        target = np.asarray(self.targets(view), dtype=np.float64)
        feasible = masks[:, PROPOSE_OFFSET:PROPOSE_OFFSET + NUM_SPLITS] > 0
        splits = self.choose_splits(view, feasible, target)
        offset = INSIST_OFFSET if self.insist else PROPOSE_OFFSET
        accept_at = target
        if self.accept_final_offers:
            accept_at = np.where(view.partner_insisted, np.minimum(target, self.reservation), target)
        accept = (masks[:, AGREE_ACTION] > 0) & view.has_offer & (view.offer_utility() >= accept_at - _EPS)
        actions = np.where(accept, AGREE_ACTION, offset + splits)
        return _finalize(actions, masks)


# --------------------------------------------------------------------------------------------------
# The partners
# --------------------------------------------------------------------------------------------------


class RandomPartner(BatchPolicy):
    """Uniform over the legal acts, seeded.

    Parameters
    ----------
    seed:
        Seed of its numpy generator; the same seed and the same observations give the same acts.
    walk_away:
        Whether ``walk_away`` is among the acts it picks from (default True: every legal act).
    """

    name = "random"

    def __init__(self, seed: int | None = None, walk_away: bool = True) -> None:
        super().__init__(seed)
        self.walk_away = bool(walk_away)

    def act_batch(self, observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        view, masks = _check_batch(observations, action_masks)
        b = view.batch_size
        # Fast path for masks as the rules make them: every split within the counts (as propose and as
        # insist), agree when offered, walk away. Number the legal acts and draw one number per row.
        radix = view.counts + 1
        n_splits = radix.prod(axis=1)
        can_agree = masks[:, AGREE_ACTION] > 0
        can_walk = (masks[:, WALK_AWAY_ACTION] > 0) & self.walk_away
        n_legal = 2 * n_splits + can_agree + can_walk
        draw = (self.rng.random(b) * n_legal).astype(np.int64)
        j = draw % n_splits
        split = ((j // (radix[:, 1] * radix[:, 2])) * _SPLIT_RADIX + (j // radix[:, 2]) % radix[:, 1]) * _SPLIT_RADIX \
            + j % radix[:, 2]
        actions = np.where(draw < n_splits, PROPOSE_OFFSET + split, INSIST_OFFSET + split)
        extra = draw - 2 * n_splits  # 0 -> agree when it is legal, else walk away
        actions = np.where(extra >= 0, np.where(can_agree & (extra == 0), AGREE_ACTION, WALK_AWAY_ACTION), actions)

        expected = np.count_nonzero(masks, axis=1) - (~can_walk & (masks[:, WALK_AWAY_ACTION] > 0))
        odd = (expected != n_legal) | (masks[np.arange(b), actions] == 0)
        if odd.any():  # any other mask: count its allowed acts and take the k-th
            allowed = masks[odd] > 0
            if not self.walk_away:
                others = allowed.copy()
                others[:, WALK_AWAY_ACTION] = False
                allowed = np.where(others.any(axis=1, keepdims=True), others, allowed)
            running = np.cumsum(allowed, axis=1, dtype=np.int16)
            rank = (self.rng.random(allowed.shape[0]) * running[:, -1]).astype(np.int16)
            actions[odd] = (running > rank[:, None]).argmax(axis=1)
        return _finalize(actions, masks)


class HardlinerPartner(ScriptedPartner):
    """Insists on every item it values, every turn; never concedes.

    It keeps all items worth something to it (giving away only the worthless ones), sends that as
    ``insist``, and accepts only offers worth at least ``accept_at`` points.

    Parameters
    ----------
    accept_at:
        Smallest offer it accepts, 0..10 (default 10: only offers as good as its own demand).
    seed:
        Unused (the hardliner is deterministic); accepted so every partner takes a seed.
    """

    name = "hardliner"
    insist = True

    def __init__(self, accept_at: float = 10.0, seed: int | None = None) -> None:
        super().__init__(reservation=accept_at, seed=seed)
        self.accept_at = self.reservation

    def targets(self, view: ObservationView) -> np.ndarray:
        return np.full(view.batch_size, self.accept_at)

    def choose_splits(self, view: ObservationView, feasible: np.ndarray, target: np.ndarray) -> np.ndarray:
        return super().choose_splits(view, feasible, np.full(view.batch_size, _MAX_UTILITY))


class FairSplitPartner(ScriptedPartner):
    """Asks for a ``share`` of its total value with an even division of the items; accepts the same.

    It proposes the split of smallest own utility at or above ``share * 10``, preferring among those the
    one closest to splitting every item type in half, and accepts offers worth at least ``share * 10``.

    Parameters
    ----------
    share:
        Fraction of its total value it asks for, in [0, 1] (default 0.5).
    seed:
        Unused (deterministic).
    """

    name = "fair_split"

    def __init__(self, share: float = 0.5, seed: int | None = None) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {share}")
        super().__init__(reservation=share * _MAX_UTILITY, seed=seed)
        self.share = float(share)

    def targets(self, view: ObservationView) -> np.ndarray:
        return np.full(view.batch_size, self.reservation)

    def tie_break(self, view: ObservationView) -> np.ndarray:
        return _fair_tie_break_table()[_count_key(view.counts)]


class TimeDependentPartner(ScriptedPartner):
    """The time-dependent tactic of GENIUS agents (Boulware, Linear, Conceder).

    Target utility ``target(t) = r + (10 - r) * (1 - f(t))`` with ``f(t) = k + (1 - k) * t ** (1 / e)``:
    it starts at ``10 - k (10 - r)`` and reaches the reservation value ``r`` at the last act. Small ``e``
    (Boulware, 0.2) holds out until late; ``e = 1`` concedes linearly; large ``e`` (Conceder, 2) concedes
    early.

    Parameters
    ----------
    exponent:
        ``e`` > 0 (``boulware`` 0.2, ``linear`` 1, ``conceder`` 2).
    reservation:
        ``r``, the lowest utility it ever asks for or accepts, 0..10 (default 5).
    k:
        ``f(0)``, the concession already made at the start, in [0, 1] (default 0).
    accept_final_offers:
        Take an offer sent as ``insist`` as final and accept it when worth at least ``reservation``
        (default True).
    deadline:
        Its own deadline as a fraction of the game, in (0, 1] (default 1: the last act allowed). Time
        is read as ``t / deadline``, so it reaches its reservation value at the deadline and holds it
        afterwards.
    seed:
        Unused (deterministic).
    """

    name = "time_dependent"

    def __init__(self, exponent: float = 1.0, reservation: float = 5.0, k: float = 0.0,
                 accept_final_offers: bool = True, deadline: float = 1.0, seed: int | None = None) -> None:
        if exponent <= 0:
            raise ValueError(f"exponent must be positive, got {exponent}")
        if not 0.0 <= k <= 1.0:
            raise ValueError(f"k must be in [0, 1], got {k}")
        if not 0.0 < deadline <= 1.0:
            raise ValueError(f"deadline must be in (0, 1] (a fraction of the game), got {deadline}")
        super().__init__(reservation=reservation, seed=seed, accept_final_offers=accept_final_offers)
        self.exponent = float(exponent)
        self.k = float(k)
        self.deadline = float(deadline)

    def target_utility(self, t: np.ndarray | float) -> np.ndarray:
        """The own utility aimed at when time ``t`` in [0, 1] has passed (reservation from the deadline on)."""
        t = np.clip(np.asarray(t, dtype=np.float64) / self.deadline, 0.0, 1.0)
        f = self.k + (1.0 - self.k) * t ** (1.0 / self.exponent)
        return self.reservation + (_MAX_UTILITY - self.reservation) * (1.0 - f)

    def targets(self, view: ObservationView) -> np.ndarray:
        return self.target_utility(view.time)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, exponent={self.exponent}, reservation={self.reservation})"


class TitForTatPartner(ScriptedPartner):
    """Nice tit-for-tat: mirrors the partner's concessions, measured in its own utility.

    It opens by asking for everything it values. Afterwards its target is the utility of its own last
    proposal minus what the partner's latest proposal conceded compared with the partner's previous one
    (both valued with its own values; a partner that asks for more is not punished, its target just
    holds). Being nice, it answers the partner's first proposal with a concession of ``opening_concession``
    points, and ``kindness`` points are added to every reciprocated concession. The target never drops
    below ``reservation``; it accepts offers worth at least the target, and at the last act of a game any
    offer worth at least ``reservation``.

    Parameters
    ----------
    reservation:
        Lowest utility it asks for or accepts, 0..10 (default 5).
    opening_concession:
        Points conceded in answer to the partner's first proposal (default 1).
    kindness:
        Extra points conceded whenever it reciprocates (default 0).
    accept_final_offers:
        Take an offer sent as ``insist`` as final and accept it when worth at least ``reservation``
        (default True).
    seed:
        Unused (deterministic).
    """

    name = "tit_for_tat"

    def __init__(self, reservation: float = 5.0, opening_concession: float = 1.0, kindness: float = 0.0,
                 accept_final_offers: bool = True, seed: int | None = None) -> None:
        if opening_concession < 0 or kindness < 0:
            raise ValueError("opening_concession and kindness must be non-negative")
        super().__init__(reservation=reservation, seed=seed, accept_final_offers=accept_final_offers)
        self.opening_concession = float(opening_concession)
        self.kindness = float(kindness)

    def partner_concession(self, view: ObservationView) -> np.ndarray:
        """(B,) own-utility gain from the partner's previous proposal to its latest (NaN if < 2 proposals)."""
        kept, is_offer = view.partner_offers
        total = (view.counts * view.values).sum(-1)[:, None]
        received_utility = total - np.take_along_axis(view.own_split_utilities, kept, axis=1)  # (B, H)
        rank = np.cumsum(is_offer, axis=1)
        n = rank[:, -1]
        latest = np.where(is_offer & (rank == n[:, None]), received_utility, 0).sum(axis=1)
        previous = np.where(is_offer & (rank == (n - 1)[:, None]), received_utility, 0).sum(axis=1)
        return np.where(n >= 2, (latest - previous).astype(np.float64), np.nan)

    def targets(self, view: ObservationView) -> np.ndarray:
        concession = self.partner_concession(view)
        _, is_offer = view.partner_offers
        n_partner = is_offer.sum(axis=1)
        step = np.where(n_partner >= 2, np.maximum(np.nan_to_num(concession), 0.0) + self.kindness,
                        np.where(n_partner == 1, self.opening_concession, 0.0))
        target = np.where(view.has_own, view.own_last_utility() - step, _MAX_UTILITY)
        target = np.maximum(target, self.reservation)
        return np.where(view.last_act, self.reservation, target)


class ParetoPartner(TimeDependentPartner):
    """Pareto-aware: proposes splits on the Pareto frontier of a belief over the partner's values.

    Belief: every valuation the partner could have (non-negative integers worth 10 over the counts that
    make a valid context with its own values), uniform a priori, weighted by how well it explains the
    partner's proposals so far -- each proposal ``s`` (what the partner keeps) has likelihood
    ``exp(rationality * u(s)) / sum_s' exp(rationality * u(s'))`` under a valuation with utility ``u``.
    The expected partner utility of each split under the belief gives a believed Pareto frontier (with
    its own utilities); it proposes the frontier split of smallest own utility at or above its target,
    and accepts offers worth at least its target. The target follows the time-dependent tactic of
    :class:`TimeDependentPartner` with exponent ``exponent``.

    Parameters
    ----------
    exponent:
        Concession exponent ``e`` of its target curve (default 1, linear).
    reservation:
        Lowest utility it asks for or accepts, 0..10 (default 5).
    rationality:
        How strongly proposals are taken to favour the proposer's own values (default 1 per point).
    prior:
        Three numbers, a prior leaning per item type (default none: uniform). A valuation ``v`` of the
        partner gets prior weight ``exp(prior . v)``: a positive entry expects the partner to value
        that item type, a negative one not to.
    k, accept_final_offers, deadline, seed:
        As for :class:`TimeDependentPartner`.
    """

    name = "pareto"
    chunk_size = 256

    def __init__(self, exponent: float = 1.0, reservation: float = 5.0, rationality: float = 1.0,
                 k: float = 0.0, accept_final_offers: bool = True, prior=None, deadline: float = 1.0,
                 seed: int | None = None) -> None:
        if rationality < 0:
            raise ValueError(f"rationality must be non-negative, got {rationality}")
        super().__init__(exponent=exponent, reservation=reservation, k=k, accept_final_offers=accept_final_offers,
                         deadline=deadline, seed=seed)
        self.rationality = float(rationality)
        if prior is not None:
            prior = np.asarray(prior, dtype=np.float64)
            if prior.shape != (NUM_ITEM_TYPES,) or not np.all(np.isfinite(prior)):
                raise ValueError(f"prior must be {NUM_ITEM_TYPES} finite numbers (one per item type), got {prior}")
        self.prior = prior
        self._table = _belief_table(self.rationality)

    def _table_rows(self, view: ObservationView) -> np.ndarray:
        rows = self._table.lookup[_context_key(view.counts, view.values)]
        if np.any(rows < 0):
            bad = int(np.flatnonzero(rows < 0)[0])
            raise ValueError(f"observation {bad} holds no valid context: counts {view.counts[bad].tolist()}, "
                             f"values {view.values[bad].tolist()}")
        return rows

    def belief(self, view: ObservationView) -> tuple[np.ndarray, np.ndarray]:
        """Candidate partner valuations (B, K, 3) and their posterior weights (B, K) (0 on padding)."""
        table = self._table
        rows = self._table_rows(view)
        cand, ok = table.candidates[rows], table.valid[rows]  # (B, K, 3), (B, K)
        kept, is_offer = view.partner_offers
        # Utilities are linear in the items, so the proposals' total utility is that of their summed items.
        kept_total = (ALL_SPLITS[kept] * is_offer[:, :, None]).sum(axis=1).astype(np.float64)  # (B, 3)
        total_utility = (cand * kept_total[:, None, :]).sum(axis=-1)  # (B, K)
        log_lik = self.rationality * total_utility - is_offer.sum(axis=1)[:, None] * table.log_norm[rows]
        if self.prior is not None:
            log_lik = log_lik + cand @ self.prior
        log_lik = np.where(ok, log_lik, -np.inf)
        weights = np.exp(log_lik - log_lik.max(axis=1, keepdims=True))
        return cand, weights / weights.sum(axis=1, keepdims=True)

    def expected_partner_values(self, view: ObservationView) -> np.ndarray:
        """(B, 3) the partner's values expected under the belief."""
        cand, weights = self.belief(view)
        return (weights[:, :, None] * cand).sum(axis=1)

    def believed_frontier(self, view: ObservationView, feasible: np.ndarray) -> np.ndarray:
        """(B, 125) feasible splits that no feasible split beats for both sides under the belief."""
        table = self._table
        rows = self._table_rows(view)
        expected = self.expected_partner_values(view)
        partner = (view.counts * expected).sum(axis=1)[:, None] - expected @ ALL_SPLITS.T  # (B, 125)
        # Walk the splits from the highest own utility down (a fixed order per context): a split is on the
        # frontier when it beats, for the partner, every split worth strictly more to self and no split
        # worth the same to self is better for the partner.
        order = table.order[rows]
        ranked = np.take_along_axis(partner, order, axis=1)
        usable = table.sorted_feasible[rows] & np.take_along_axis(feasible, order, axis=1)
        ranked = np.where(usable, ranked, -np.inf)
        best_so_far = np.maximum.accumulate(ranked, axis=1)
        start, end = table.level_start[rows], table.level_end[rows]
        above = np.where(start > 0, np.take_along_axis(best_so_far, np.maximum(start - 1, 0), axis=1), -np.inf)
        level_best = np.take_along_axis(best_so_far, end, axis=1)
        on_front = usable & (ranked > above + _PARTNER_TIE) & (ranked >= level_best - _PARTNER_TIE)
        frontier = np.zeros_like(on_front)
        np.put_along_axis(frontier, order, on_front, axis=1)
        return frontier

    def choose_splits(self, view: ObservationView, feasible: np.ndarray, target: np.ndarray) -> np.ndarray:
        frontier = self.believed_frontier(view, feasible)
        return _closest_above(view.own_split_utilities, frontier, target, self.tie_break(view))


# --------------------------------------------------------------------------------------------------
# Lookup tables keyed by context
# --------------------------------------------------------------------------------------------------

_KEY_BASE_COUNT = 5
_KEY_BASE_VALUE = VALUE_TOTAL + 1
_PARTNER_TIE = 1e-6


def _count_key(counts: np.ndarray) -> np.ndarray:
    c = np.clip(counts, 0, _KEY_BASE_COUNT - 1)
    return (c[..., 0] * _KEY_BASE_COUNT + c[..., 1]) * _KEY_BASE_COUNT + c[..., 2]


def _context_key(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    v = np.clip(values, 0, _KEY_BASE_VALUE - 1)
    value_key = (v[..., 0] * _KEY_BASE_VALUE + v[..., 1]) * _KEY_BASE_VALUE + v[..., 2]
    return _count_key(counts) * _KEY_BASE_VALUE**NUM_ITEM_TYPES + value_key


@functools.lru_cache(maxsize=1)
def _utility_table() -> np.ndarray:
    """(11**3 value keys, 125 splits) float32: what keeping each split is worth under each valuation."""
    values = np.array(list(itertools.product(range(VALUE_TOTAL + 1), repeat=NUM_ITEM_TYPES)), dtype=np.float32)
    return values @ _SPLITS_F32.T


@functools.lru_cache(maxsize=1)
def _fair_tie_break_table() -> np.ndarray:
    """(125 count keys, 125 splits): 10 x distance from halving every type, plus items kept."""
    table = np.zeros((_KEY_BASE_COUNT**NUM_ITEM_TYPES, NUM_SPLITS), dtype=np.float32)
    for counts in itertools.product(range(_KEY_BASE_COUNT), repeat=NUM_ITEM_TYPES):
        unevenness = np.abs(2 * ALL_SPLITS - np.array(counts)).sum(axis=1)
        table[int(_count_key(np.array(counts)))] = unevenness * 10.0 + _ITEMS_KEPT
    return table


@dataclass(frozen=True)
class _BeliefTable:
    """Per (counts, own values) row: the partner's possible valuations and the splits ranked by own utility.

    ``lookup`` maps a context key to a row (-1: not a valid context). ``candidates`` (N, K, 3) with
    ``valid`` (N, K); ``log_norm`` (N, K) = log sum over feasible splits of exp(rationality * utility).
    ``order`` (N, 125) lists split indices by decreasing own utility (infeasible last);
    ``sorted_feasible`` follows that order; ``level_start`` / ``level_end`` give, per ranked position,
    the first and last position holding the same own utility.
    """

    lookup: np.ndarray
    candidates: np.ndarray
    valid: np.ndarray
    log_norm: np.ndarray
    order: np.ndarray
    sorted_feasible: np.ndarray
    level_start: np.ndarray
    level_end: np.ndarray


@functools.lru_cache(maxsize=16)
def _belief_table(rationality: float) -> _BeliefTable:
    groups: list[tuple[tuple[int, int, int], tuple[int, int, int], list[tuple[int, int, int]]]] = []
    for counts in _valid_count_vectors():
        pairs = valid_value_pairs(counts)
        for own in _valuations(counts):
            partners = [b for a, b in pairs if a == own]
            if partners:
                groups.append((counts, own, partners))
    k_max = max(len(p) for _, _, p in groups)
    n = len(groups)
    candidates = np.zeros((n, k_max, NUM_ITEM_TYPES), dtype=np.float64)
    valid = np.zeros((n, k_max), dtype=bool)
    log_norm = np.zeros((n, k_max), dtype=np.float64)
    order = np.zeros((n, NUM_SPLITS), dtype=np.int64)
    sorted_feasible = np.zeros((n, NUM_SPLITS), dtype=bool)
    level_start = np.zeros((n, NUM_SPLITS), dtype=np.int64)
    level_end = np.zeros((n, NUM_SPLITS), dtype=np.int64)
    lookup = np.full(_KEY_BASE_COUNT**NUM_ITEM_TYPES * _KEY_BASE_VALUE**NUM_ITEM_TYPES, -1, dtype=np.int64)
    for row, (counts, own, partners) in enumerate(groups):
        candidates[row, :len(partners)] = partners
        valid[row, :len(partners)] = True
        feasible = np.all(ALL_SPLITS <= np.array(counts), axis=1)
        scaled = rationality * (ALL_SPLITS[feasible] @ np.array(partners).T)  # (S, K)
        peak = scaled.max(axis=0)
        log_norm[row, :len(partners)] = peak + np.log(np.exp(scaled - peak).sum(axis=0))

        own_utility = ALL_SPLITS @ np.array(own)
        level = np.where(feasible, own_utility, -1)  # infeasible splits share one level, ranked last
        order[row] = np.lexsort((np.arange(NUM_SPLITS), -level))
        ranked_level = level[order[row]]
        sorted_feasible[row] = ranked_level >= 0
        first = np.r_[True, ranked_level[1:] != ranked_level[:-1]]
        level_start[row] = np.maximum.accumulate(np.where(first, np.arange(NUM_SPLITS), 0))
        last = np.r_[ranked_level[1:] != ranked_level[:-1], True]
        level_end[row] = np.minimum.accumulate(np.where(last, np.arange(NUM_SPLITS), NUM_SPLITS)[::-1])[::-1]
        lookup[int(_context_key(np.array(counts), np.array(own)))] = row
    return _BeliefTable(lookup, candidates, valid, log_norm, order, sorted_feasible, level_start, level_end)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def _time_dependent(name: str, exponent: float) -> Callable[..., TimeDependentPartner]:
    def build(reservation: float = 5.0, k: float = 0.0, accept_final_offers: bool = True, deadline: float = 1.0,
              seed: int | None = None) -> TimeDependentPartner:
        partner = TimeDependentPartner(exponent=exponent, reservation=reservation, k=k,
                                       accept_final_offers=accept_final_offers, deadline=deadline, seed=seed)
        partner.name = name
        return partner

    build.__doc__ = f"Time-dependent partner with e = {exponent}."
    return build


#: name -> (builder, one-line description)
PARTNERS: dict[str, tuple[Callable[..., BatchPolicy], str]] = {
    "random": (RandomPartner, "uniform over the legal acts (seeded)"),
    "hardliner": (HardlinerPartner, "insists on every item it values; accepts only offers worth accept_at (10)"),
    "fair_split": (FairSplitPartner, "asks for half its value with an even item split; accepts >= half"),
    "boulware": (_time_dependent("boulware", 0.2), "time-dependent e=0.2: holds out, concedes late"),
    "linear": (_time_dependent("linear", 1.0), "time-dependent e=1: concedes at a constant rate"),
    "conceder": (_time_dependent("conceder", 2.0), "time-dependent e=2: concedes early"),
    "tit_for_tat": (TitForTatPartner, "nice tit-for-tat: mirrors the partner's concessions in own utility"),
    "pareto": (ParetoPartner, "believes the partner's values from its proposals; offers believed-Pareto splits"),
}


def list_partners() -> dict[str, str]:
    """Partner name -> one-line description, for every name :func:`make_partner` accepts."""
    return {name: description for name, (_, description) in PARTNERS.items()}


def make_partner(name: str, **params) -> BatchPolicy:
    """Build a scripted partner by name, e.g. ``make_partner("boulware", reservation=4)``.

    Raises ValueError for an unknown name (listing the known ones) or a parameter the partner does not
    take (listing the ones it does).
    """
    if name not in PARTNERS:
        raise ValueError(f"unknown partner {name!r}; known partners: {', '.join(PARTNERS)}")
    builder, _ = PARTNERS[name]
    accepted = [p for p in inspect.signature(builder).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"partner {name!r} takes no parameter {', '.join(map(repr, unknown))}; "
                         f"its parameters are: {', '.join(accepted)}")
    return builder(**params)
