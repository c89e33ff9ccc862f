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
from collections.abc import Callable, Sequence
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
    "act_batch_by_partner",
    "make_partner",
    "list_partners",
    "PARTNERS",
]

_EPS = 1e-4  # utilities are integers held in float32; anything below 1 point apart is a tie
_MAX_UTILITY = float(VALUE_TOTAL)
_SPLITS_F32 = ALL_SPLITS.astype(np.float32)
_ITEMS_KEPT = ALL_SPLITS.sum(axis=1).astype(np.float32)
_SPLIT_RADIX = MAX_ITEM_COUNT + 1  # split (a, b, c) sits at index (a * 5 + b) * 5 + c
#: The split index of each propose or insist action index.
_ACTION_SPLIT = np.arange(AGREE_ACTION) % NUM_SPLITS
#: _SPLIT_ITEMS[i][s]: how many items of type i split s keeps.
_SPLIT_ITEMS = np.ascontiguousarray(ALL_SPLITS.T)


def _dot3(items: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(B,) ``(items * values).sum(-1)`` for (B, 3) arrays, written out (a reduction over a length-3 axis
    costs more than the arithmetic)."""
    return items[:, 0] * values[:, 0] + items[:, 1] * values[:, 1] + items[:, 2] * values[:, 2]


# --------------------------------------------------------------------------------------------------
# Reading observations
# --------------------------------------------------------------------------------------------------


class _decoded_field:  # noqa: N801 -- used as a decorator, like functools.cached_property
    """A field of :class:`ObservationView` computed on first read and then stored on the view (the view
    is used by one thread; ``functools.cached_property`` takes a lock on every first read, a cost that
    shows at the small batches of a partner pool)."""

    def __init__(self, compute: Callable) -> None:
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, view: ObservationView | None, owner: type | None = None):
        if view is None:
            return self
        value = view.__dict__[self.name] = self.compute(view)
        return value


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

    def select(self, rows: slice | np.ndarray) -> ObservationView:
        """The view of some rows (a slice or indices), with what this view has decoded in one pass."""
        chosen = ObservationView(self.observations[rows])
        decoded = self.__dict__.get("_all_ints")
        if decoded is not None:
            chosen._all_ints = decoded[rows]
        return chosen

    # Fields are decoded on first use: a partner pays only for what it reads. Partners that read most
    # fields decode them all in one pass first (decode_all).
    def decode_all(self) -> ObservationView:
        """Decode every integer field in one pass (cheaper than field by field when most are read). The
        result is stored column by column (Fortran order), so that each field's columns are contiguous
        and arithmetic on them runs in long inner loops."""
        self._all_ints = np.rint(self.observations).T.astype(np.int64, order="C").T
        return self

    def _ints(self, where: slice | int) -> np.ndarray:
        decoded = self.__dict__.get("_all_ints")
        if decoded is None:
            return np.rint(self.observations[:, where]).astype(np.int64)
        return decoded[:, where]

    @_decoded_field
    def counts(self) -> np.ndarray:
        return self._ints(self.layout.counts)

    @_decoded_field
    def values(self) -> np.ndarray:
        return self._ints(self.layout.values)

    @_decoded_field
    def has_offer(self) -> np.ndarray:
        return self.observations[:, self.layout.partner_offer_flag] > 0.5

    @_decoded_field
    def offer_items(self) -> np.ndarray:
        return self._ints(self.layout.partner_offer)

    @_decoded_field
    def has_own(self) -> np.ndarray:
        return self.observations[:, self.layout.own_offer_flag] > 0.5

    @_decoded_field
    def own_kept(self) -> np.ndarray:
        return self._ints(self.layout.own_offer)

    @_decoded_field
    def turn(self) -> np.ndarray:
        return np.rint(self.observations[:, self.layout.turn_fraction] * self.max_turns).astype(np.int64)

    @_decoded_field
    def time(self) -> np.ndarray:
        return np.minimum(np.maximum(self.turn / max(self.max_turns - 1, 1), 0.0), 1.0)

    @_decoded_field
    def history(self) -> np.ndarray:
        return self._ints(self.layout.history_acts) - 1

    @_decoded_field
    def from_partner(self) -> np.ndarray:
        return self._ints(self.layout.history_speakers) == 2

    @property
    def batch_size(self) -> int:
        return self.observations.shape[0]

    @property
    def last_act(self) -> np.ndarray:
        """Whether the act about to be sent is the last one the game allows."""
        return self.turn >= self.max_turns - 1

    @_decoded_field
    def value_key(self) -> np.ndarray:
        return _digits_key(self.values, VALUE_TOTAL + 1)

    @_decoded_field
    def own_split_utilities(self) -> np.ndarray:
        """(B, 125) float32 own utility of keeping each split (whether or not it fits the counts)."""
        return _utility_table()[self.value_key]

    @_decoded_field
    def partner_insisted(self) -> np.ndarray:
        """(B,) whether the partner's standing proposal was sent as ``insist``."""
        latest = self.latest_partner_offers(1)[0]
        history = self.history
        latest_act = np.take(history.reshape(-1), np.arange(self.batch_size) * history.shape[1] + np.maximum(latest, 0))
        return self.has_offer & (latest >= 0) & (latest_act >= INSIST_OFFSET)

    def latest_partner_offers(self, n: int) -> list[np.ndarray]:
        """History positions (B,) of the partner's last ``n`` proposals, latest first (-1 where it made fewer)."""
        offers = self._partner_offer_mask
        # Each proposal's position + 1 (0 elsewhere): the latest is the row maximum, cleared before the next.
        ranks = offers * np.arange(1, offers.shape[1] + 1)
        found = []
        for i in range(n):
            top = ranks.max(axis=1) if ranks.shape[1] else np.zeros(self.batch_size, dtype=np.int64)
            found.append(top - 1)
            if i + 1 < n:
                ranks = np.where(ranks == top[:, None], 0, ranks)
        return found

    def offer_utility(self) -> np.ndarray:
        """(B,) own utility of the partner's standing proposal (0 where there is none)."""
        return np.where(self.has_offer, _dot3(self.offer_items, self.values), 0)

    def own_last_utility(self) -> np.ndarray:
        """(B,) own utility of this agent's last proposal (10 where it has made none)."""
        return np.where(self.has_own, _dot3(self.own_kept, self.values), VALUE_TOTAL)

    @_decoded_field
    def partner_offers(self) -> tuple[np.ndarray, np.ndarray]:
        """The partner's proposals in the history: split indices it kept (B, H) and a validity mask (B, H)."""
        is_offer = self._partner_offer_mask
        # A table lookup instead of the (slower) integer modulo; rows that are no proposal read 0 either way.
        return np.where(is_offer, np.take(_ACTION_SPLIT, self.history, mode="clip"), 0), is_offer

    @_decoded_field
    def partner_kept_total(self) -> np.ndarray:
        """(B, 3) the items the partner kept, summed over all its proposals so far (int64)."""
        kept, is_offer = self.partner_offers
        total = np.empty((self.batch_size, NUM_ITEM_TYPES), dtype=np.int64)
        for item in range(NUM_ITEM_TYPES):  # one item type at a time: (B, H) work, no (B, H, 3) arrays
            total[:, item] = (np.take(_SPLIT_ITEMS[item], kept) * is_offer).sum(axis=1)
        return total

    @_decoded_field
    def _partner_offer_mask(self) -> np.ndarray:
        history = self.history
        return self.from_partner & (history >= 0) & (history < AGREE_ACTION)


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

    #: Rows decided per pass at large batches (the tables need no (rows, 125) working arrays, so passes
    #: can be large).
    chunk_size = 4096

    def act_batch(self, observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        observations, masks = np.asarray(observations), np.asarray(action_masks)
        if observations.ndim == 2 and observations.shape[0] > self.chunk_size:
            return np.concatenate([self._act_chunk(observations[i:i + self.chunk_size], masks[i:i + self.chunk_size])
                                   for i in range(0, observations.shape[0], self.chunk_size)])
        return self._act_chunk(observations, masks)

    def _act_chunk(self, observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        return _act_together([self], np.array([0, len(observations)]), observations, action_masks)

    def _proposal_splits(self, view: ObservationView, masks: np.ndarray, target: np.ndarray) -> np.ndarray:
        """:meth:`choose_splits` over the mask's splits, read from a per-context table where it gives the
        same answer (the partner's own rule, a valid own context and a mask as the rules make it)."""
        table = _split_choice_table(type(self))
        if table is None:
            return self.choose_splits(view, masks[:, PROPOSE_OFFSET:PROPOSE_OFFSET + NUM_SPLITS] > 0, target)
        keys, ok = _own_context_keys(view, masks)
        aim = target if self._proposal_target is None else np.full(view.batch_size, self._proposal_target)
        if ok.all():
            return table.lookup(keys, _utility_thresholds(aim))
        splits = np.zeros(view.batch_size, dtype=np.int64)
        splits[ok] = table.lookup(keys[ok], _utility_thresholds(aim[ok]))
        self._choose_off_table(view, masks, target, np.flatnonzero(~ok), splits)
        return splits

    def _choose_off_table(self, view: ObservationView, masks: np.ndarray, target: np.ndarray, rows: np.ndarray,
                          splits: np.ndarray) -> None:
        """Fill ``splits[rows]`` through :meth:`choose_splits`; rows with no split to propose (finished
        games) keep their 0, as :func:`_closest_above` gives them."""
        feasible = masks[rows, PROPOSE_OFFSET:PROPOSE_OFFSET + NUM_SPLITS] > 0
        some = feasible.any(axis=1)
        if some.any():
            rows, feasible = rows[some], feasible[some]
            splits[rows] = self.choose_splits(ObservationView(view.observations[rows]), feasible, target[rows])

    #: The own utility every proposal aims at, whatever the target (None: the target).
    _proposal_target: float | None = None


def act_batch_by_partner(partners: Sequence[BatchPolicy], bounds: np.ndarray, observations: np.ndarray,
                         action_masks: np.ndarray) -> np.ndarray:
    """(B,) acts for observations grouped by partner: ``partners[k]`` answers rows ``bounds[k]:bounds[k + 1]``.

    The acts are those of each partner's own ``act_batch`` on its rows, called in pool order. Runs of
    consecutive partners that act by :class:`ScriptedPartner`'s rule answer in one pass (decoding the
    observations and applying the acceptance rule once for the whole run), which saves the fixed cost of
    a call per partner when each has few rows.
    """
    observations, masks = np.asarray(observations), np.asarray(action_masks)
    acts = np.zeros(len(observations), dtype=np.int64)
    first = 0
    while first < len(partners):
        end = first
        while end < len(partners) and _answers_together(partners[end]):
            end += 1
        end = max(end, first + 1)  # a partner that cannot join a run answers alone
        lo, hi = int(bounds[first]), int(bounds[end])
        if hi > lo:
            if end - first > 1:
                acts[lo:hi] = _act_together(partners[first:end], np.asarray(bounds[first:end + 1]) - lo,
                                            observations[lo:hi], masks[lo:hi])
            else:
                acts[lo:hi] = partners[first].act_batch(observations[lo:hi], masks[lo:hi])
        first = end
    return acts


def _answers_together(partner: BatchPolicy) -> bool:
    """Whether ``partner`` acts by :class:`ScriptedPartner`'s rule (:func:`_act_together`)."""
    cls = type(partner)
    return (isinstance(partner, ScriptedPartner) and cls.act_batch is ScriptedPartner.act_batch
            and cls._act_chunk is ScriptedPartner._act_chunk)


def _act_together(partners: Sequence[ScriptedPartner], bounds: np.ndarray, observations: np.ndarray,
                  action_masks: np.ndarray) -> np.ndarray:
    """The rule of target-driven partners, for one partner or several at once (``partners[k]`` answers
    rows ``bounds[k]:bounds[k + 1]``): each partner's targets and proposals on its rows, its settings
    as per-row arrays, then the acceptance rule once for all rows."""
    view, masks = _check_batch(observations, action_masks)
    view.decode_all()
    n = view.batch_size
    target, reservation = np.empty(n), np.empty(n)
    final_offers = np.zeros(n, dtype=bool)
    offset = np.empty(n, dtype=np.int64)
    splits = np.zeros(n, dtype=np.int64)
    for partner, lo, hi in zip(partners, bounds[:-1], bounds[1:]):
        if hi > lo:
            block = view if (lo, hi) == (0, n) else view.select(slice(lo, hi))
            target[lo:hi] = np.asarray(partner.targets(block), dtype=np.float64)
            splits[lo:hi] = partner._proposal_splits(block, masks[lo:hi], target[lo:hi])
            reservation[lo:hi] = partner.reservation
            final_offers[lo:hi] = partner.accept_final_offers
            offset[lo:hi] = INSIST_OFFSET if partner.insist else PROPOSE_OFFSET
    # An offer sent as insist is final: accepted when worth the reservation value, if the partner says so.
    accept_at = np.where(final_offers & view.partner_insisted, np.minimum(target, reservation), target)
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

    _proposal_target = _MAX_UTILITY

    def choose_splits(self, view: ObservationView, feasible: np.ndarray, target: np.ndarray) -> np.ndarray:
        return super().choose_splits(view, feasible, np.full(view.batch_size, self._proposal_target))


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
        kept, _ = view.partner_offers
        latest, previous = view.latest_partner_offers(2)
        rows = np.arange(view.batch_size)
        total = (view.counts * view.values).sum(-1)
        own = _utility_table()[view.value_key[:, None], kept[rows[:, None], np.stack([latest, previous], axis=1)]]  # (B, 2)
        received_latest, received_previous = total - own[:, 0], total - own[:, 1]
        return np.where(previous >= 0, (received_latest - received_previous).astype(np.float64), np.nan)

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
    #: Rows per pass when believed frontiers are computed: keeps the (rows, 125) arrays in cache.
    frontier_chunk_size = 256

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
        self._memos: dict[tuple, _AnswerMemo] = {}

    def _table_rows(self, view: ObservationView) -> np.ndarray:
        cached = view.__dict__.get("_belief_table_rows")
        if cached is not None and cached[0] is self._table:  # read several times per view
            return cached[1]
        rows = self._table.lookup[_context_key(view.counts, view.values)]
        if np.any(rows < 0):
            bad = int(np.flatnonzero(rows < 0)[0])
            raise ValueError(f"observation {bad} holds no valid context: counts {view.counts[bad].tolist()}, "
                             f"values {view.values[bad].tolist()}")
        view.__dict__["_belief_table_rows"] = (self._table, rows)
        return rows

    def _proposal_splits(self, view: ObservationView, masks: np.ndarray, target: np.ndarray) -> np.ndarray:
        """:meth:`choose_splits`, remembered per (own context, the partner's proposals so far, threshold).

        The believed frontier depends on the partner's proposals only through their number and their
        summed items, and the choice on it only through the integer threshold the target rounds up to,
        so each answer is computed once and then read back. Subclasses that change the belief or the
        choice get :meth:`choose_splits` itself.
        """
        if any(getattr(type(self), name) is not getattr(ParetoPartner, name) for name in _PARETO_RULE):
            return super()._proposal_splits(view, masks, target)
        table_rows = self._table_rows(view)
        _, ok = _own_context_keys(view, masks)
        kept, is_offer = view.partner_offers
        kept_total = view.partner_kept_total
        turns = view.max_turns
        base = MAX_ITEM_COUNT * turns + 1
        keys = ((table_rows * base + kept_total[:, 0]) * base + kept_total[:, 1]) * base + kept_total[:, 2]
        keys = (keys * (turns + 1) + is_offer.sum(axis=1)) * _NUM_THRESHOLDS + _utility_thresholds(target)
        if self.__dict__.get("_memos_table") is not self._table:  # answers hold for one belief table only
            self._memos, self._memos_table = {}, self._table
        memo_key = (self.rationality, None if self.prior is None else tuple(self.prior), turns)
        memo = self._memos.setdefault(memo_key, _AnswerMemo())

        splits = np.zeros(view.batch_size, dtype=np.int64)
        known = np.flatnonzero(ok)
        answers, found = memo.get(keys[known])
        splits[known[found]] = answers[found]
        new = known[~found]
        if new.size:
            _, first, inverse = np.unique(keys[new], return_index=True, return_inverse=True)
            sample = new[first]
            chosen = np.concatenate([
                self.choose_splits(self._rows_view(view, table_rows, part),
                                   masks[part, PROPOSE_OFFSET:PROPOSE_OFFSET + NUM_SPLITS] > 0, target[part])
                for part in np.array_split(sample, -(-sample.size // self.frontier_chunk_size))])
            memo.add(keys[sample], chosen)
            splits[new] = chosen[inverse.reshape(-1)]
        self._choose_off_table(view, masks, target, np.flatnonzero(~ok), splits)
        return splits

    def _rows_view(self, view: ObservationView, table_rows: np.ndarray, rows: np.ndarray) -> ObservationView:
        """``view.select(rows)`` that also knows its rows of the belief table."""
        chosen = view.select(rows)
        chosen.__dict__["_belief_table_rows"] = (self._table, table_rows[rows])
        return chosen

    def belief(self, view: ObservationView) -> tuple[np.ndarray, np.ndarray]:
        """Candidate partner valuations (B, K, 3) and their posterior weights (B, K) (0 on padding)."""
        table = self._table
        rows = self._table_rows(view)
        cand, ok = np.take(table.candidates, rows, axis=0), np.take(table.valid, rows, axis=0)  # (B, K, 3), (B, K)
        kept, is_offer = view.partner_offers
        # Utilities are linear in the items, so the proposals' total utility is that of their summed items.
        kept_total = view.partner_kept_total.astype(np.float64)  # (B, 3)
        # (B, K), written out per item type; whole numbers, so exactly the sum over the item axis.
        total_utility = (cand[:, :, 0] * kept_total[:, 0:1] + cand[:, :, 1] * kept_total[:, 1:2]
                         + cand[:, :, 2] * kept_total[:, 2:3])
        log_lik = self.rationality * total_utility - is_offer.sum(axis=1)[:, None] * np.take(table.log_norm, rows, axis=0)
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
        # Only the ranked positions of splits that fit can be on the frontier (the others rank last), so
        # the walk covers the widest such prefix among these rows. Per-row gathers are flat takes (row
        # offset + column): the same values as take_along_axis, cheaper.
        width = int(table.fit_count[rows].max()) if len(rows) else 0
        row_base = (np.arange(len(rows)) * NUM_SPLITS)[:, None]
        order = np.take(table.order[:, :width], rows, axis=0) + row_base
        ranked = partner.reshape(-1)[order]
        usable = np.take(table.sorted_feasible[:, :width], rows, axis=0) & np.ascontiguousarray(feasible).reshape(-1)[order]
        ranked = np.where(usable, ranked, -np.inf)
        best_so_far = np.maximum.accumulate(ranked, axis=1).reshape(-1)
        ranked_base = (np.arange(len(rows)) * width)[:, None]
        start = np.take(table.level_start[:, :width], rows, axis=0)
        end = np.take(table.level_end[:, :width], rows, axis=0)
        above = np.where(start > 0, best_so_far[np.maximum(start - 1, 0) + ranked_base], -np.inf)
        level_best = best_so_far[np.minimum(end, width - 1) + ranked_base]  # past a row's fits: unusable anyway
        on_front = usable & (ranked > above + _PARTNER_TIE) & (ranked >= level_best - _PARTNER_TIE)
        frontier = np.zeros(len(rows) * NUM_SPLITS, dtype=bool)
        frontier[order] = on_front
        return frontier.reshape(len(rows), NUM_SPLITS)

    def choose_splits(self, view: ObservationView, feasible: np.ndarray, target: np.ndarray) -> np.ndarray:
        frontier = self.believed_frontier(view, feasible)
        return _closest_above(view.own_split_utilities, frontier, target, self.tie_break(view))


# --------------------------------------------------------------------------------------------------
# Lookup tables keyed by context
# --------------------------------------------------------------------------------------------------

_KEY_BASE_COUNT = 5
_KEY_BASE_VALUE = VALUE_TOTAL + 1
_PARTNER_TIE = 1e-6


def _digits_key(digits: np.ndarray, base: int) -> np.ndarray:
    """``(d0 * base + d1) * base + d2`` over the last axis, each digit clipped to 0..base-1. Column by
    column: elementwise work on a short last axis costs more than on whole columns."""
    key = None
    for i in range(NUM_ITEM_TYPES):
        digit = np.minimum(np.maximum(digits[..., i], 0), base - 1)
        key = digit if key is None else key * base + digit
    return key


def _count_key(counts: np.ndarray) -> np.ndarray:
    return _digits_key(counts, _KEY_BASE_COUNT)


def _context_key(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    return _count_key(counts) * _KEY_BASE_VALUE**NUM_ITEM_TYPES + _digits_key(values, _KEY_BASE_VALUE)


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


_NUM_THRESHOLDS = int(VALUE_TOTAL) + 2  # thresholds 0..10, and 11: no split reaches the target
_SPLIT_FITS = np.all(ALL_SPLITS[None, :, :] <= ALL_SPLITS[:, None, :], axis=2)  # [count code, split]
# The first 120 entries of each row of _SPLIT_FITS as 0/1 bytes read eight at a time (PROPOSE_OFFSET is 0),
# and the remaining 5 entries as bytes.
_FIT_WORDS = np.ascontiguousarray(_SPLIT_FITS[:, :NUM_SPLITS // 8 * 8].astype(np.int8)).view(np.int64)
_FIT_TAIL = np.ascontiguousarray(_SPLIT_FITS[:, NUM_SPLITS // 8 * 8:].astype(np.int8))


# [count code * 11**3 + value key]: whether those counts (0..4) and values (0..10) are worth 10 in all.
_VALID_OWN_CONTEXT = (ALL_SPLITS @ np.array(list(itertools.product(range(_KEY_BASE_VALUE), repeat=NUM_ITEM_TYPES))).T
                      == VALUE_TOTAL).reshape(-1)


def _utility_thresholds(target: np.ndarray) -> np.ndarray:
    """(B,) the smallest integer own utility that reaches each target as :func:`_closest_above` compares
    (in float32, with its tolerance); 11 where none can (no valid context has a split worth more than 10)."""
    lowest = np.ceil(np.asarray(target, dtype=np.float64).astype(np.float32) - _EPS)
    lowest = np.where(np.isnan(lowest), _NUM_THRESHOLDS - 1, lowest)
    return np.minimum(np.maximum(lowest, 0), _NUM_THRESHOLDS - 1).astype(np.int64)


def _own_context_keys(view: ObservationView, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's own context as ``count code * 11**3 + value key`` (counts clipped to 0..4, values to
    0..10, as :func:`_count_key` and :attr:`ObservationView.value_key` do), and whether the row can be
    answered from the tables: those counts and values worth 10 in all, and a mask that allows exactly the
    splits that fit the counts (as the rules make it)."""
    codes = _count_key(view.counts)
    keys = codes * _KEY_BASE_VALUE**NUM_ITEM_TYPES + view.value_key
    # The general path reads utilities and tie-breaks through the same clipped keys, so the clipped counts
    # and values decide: worth 10 in all, no split that fits is worth more than 10.
    ok = _VALID_OWN_CONTEXT[keys]
    if masks.dtype == np.int8 and masks.flags.c_contiguous:
        # The rules' masks hold 0/1 bytes: compare the propose block eight bytes at a time, over the whole
        # batch first (one reduction) and row by row only when some row differs.
        words = masks[:, :_FIT_WORDS.shape[1] * 8].view(np.int64)
        same = words == np.take(_FIT_WORDS, codes, axis=0)
        ok &= same.all(axis=1) if not same.all() else True
        tail = masks[:, _FIT_WORDS.shape[1] * 8:NUM_SPLITS]
        same = tail == np.take(_FIT_TAIL, codes, axis=0)
        ok &= same.all(axis=1) if not same.all() else True
    else:
        ok &= np.all((masks[:, PROPOSE_OFFSET:PROPOSE_OFFSET + NUM_SPLITS] > 0) == _SPLIT_FITS[codes], axis=1)
    return keys, ok


class _SplitChoiceTable:
    """:func:`_closest_above` answered once per own context and integer threshold, filled on first use.

    ``tie_breaks`` (125 count keys, 125 splits) is the partner's tie-break by count vector. An entry is the
    split the partner proposes in that context when its target rounds up to that threshold, over the
    splits that fit the counts; -1 until computed.
    """

    def __init__(self, tie_breaks: np.ndarray) -> None:
        self.tie_breaks = tie_breaks
        self.choice = np.full((_KEY_BASE_COUNT**NUM_ITEM_TYPES * _KEY_BASE_VALUE**NUM_ITEM_TYPES, _NUM_THRESHOLDS),
                              -1, dtype=np.int8)

    def lookup(self, keys: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        """(B,) split indices for own-context keys (see :func:`_own_context_keys`) and thresholds."""
        flat = self.choice.reshape(-1)
        entries = keys * _NUM_THRESHOLDS
        missing = flat[entries] < 0
        if missing.any():
            self._fill(np.unique(keys[missing]))
        return flat[entries + thresholds].astype(np.int64)

    def _fill(self, keys: np.ndarray) -> None:
        codes, value_keys = np.divmod(keys, _KEY_BASE_VALUE**NUM_ITEM_TYPES)
        rows = np.repeat(np.arange(len(keys)), _NUM_THRESHOLDS)
        thresholds = np.tile(np.arange(_NUM_THRESHOLDS, dtype=np.float64), len(keys))
        chosen = _closest_above(_utility_table()[value_keys[rows]], _SPLIT_FITS[codes[rows]], thresholds,
                                self.tie_breaks[codes[rows]])
        self.choice[keys] = chosen.reshape(len(keys), _NUM_THRESHOLDS)


def _split_choice_table(partner_class: type) -> _SplitChoiceTable | None:
    """The table that answers ``partner_class``'s proposals, or None when its rule is not table-backed
    (a :meth:`ScriptedPartner.choose_splits` or tie-break of its own)."""
    if partner_class.choose_splits not in _TABLE_BACKED_CHOOSERS:
        return None
    build = _COUNT_TIE_BREAKS.get(partner_class.tie_break)
    return None if build is None else _split_choice_cache(build)


@functools.cache
def _split_choice_cache(tie_break_table: Callable[[], np.ndarray]) -> _SplitChoiceTable:
    return _SplitChoiceTable(tie_break_table())


class _AnswerMemo:
    """Small answers (split indices) stored under int64 keys and looked up for a whole batch at once.

    Keys are kept sorted in two levels: a large array and a small one that takes new answers. A lookup
    is one ``searchsorted`` in each; an insert rewrites only the small array, which is merged into the
    large one once it holds an eighth as many keys (so a growing memo is not copied at every insert).
    The memo starts over when it holds ``max_size`` answers, so memory stays bounded whatever the games.
    """

    max_size = 1 << 21
    #: The small level is merged into the large one when it holds this many keys, or an eighth of the
    #: large one's if more.
    merge_at = 1 << 12

    def __init__(self) -> None:
        self._levels = [(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int8))] * 2  # large, small

    @property
    def keys(self) -> np.ndarray:
        """Every stored key, sorted."""
        return np.sort(np.concatenate([keys for keys, _ in self._levels]))

    def get(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stored answers (int64) for ``keys`` and whether each key was found."""
        answers = np.zeros(len(keys), dtype=np.int64)
        found = np.zeros(len(keys), dtype=bool)
        for stored, values in self._levels:
            if stored.size:
                pos = np.minimum(np.searchsorted(stored, keys), stored.size - 1)
                hit = stored[pos] == keys
                answers[hit] = values[pos[hit]]
                found |= hit
        return answers, found

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Store answers under new keys (distinct, and not stored yet)."""
        (large, large_values), (small, small_values) = self._levels
        if large.size + small.size + len(keys) > self.max_size:
            large, large_values, small, small_values = large[:0], large_values[:0], small[:0], small_values[:0]
        order = np.argsort(keys)
        keys, values = keys[order], np.asarray(values, dtype=np.int8)[order]
        pos = np.searchsorted(small, keys)
        small, small_values = np.insert(small, pos, keys), np.insert(small_values, pos, values)
        if small.size >= max(self.merge_at, large.size // 8):
            merged = np.concatenate([large, small])
            order = np.argsort(merged, kind="stable")
            large, large_values = merged[order], np.concatenate([large_values, small_values])[order]
            small, small_values = small[:0], small_values[:0]
        self._levels = [(large, large_values), (small, small_values)]


def _items_kept_tie_break_table() -> np.ndarray:
    """(125 count keys, 125 splits): the default tie-break, fewest items kept, for every count vector."""
    return np.broadcast_to(_ITEMS_KEPT, (_KEY_BASE_COUNT**NUM_ITEM_TYPES, NUM_SPLITS))


@dataclass(frozen=True)
class _BeliefTable:
    """Per (counts, own values) row: the partner's possible valuations and the splits ranked by own utility.

    ``lookup`` maps a context key to a row (-1: not a valid context). ``candidates`` (N, K, 3) with
    ``valid`` (N, K); ``log_norm`` (N, K) = log sum over feasible splits of exp(rationality * utility).
    ``order`` (N, 125) lists split indices by decreasing own utility (infeasible last);
    ``sorted_feasible`` follows that order; ``level_start`` / ``level_end`` give, per ranked position,
    the first and last position holding the same own utility; ``fit_count`` (N,) how many splits fit
    (they come first in ``order``).
    """

    lookup: np.ndarray
    candidates: np.ndarray
    valid: np.ndarray
    log_norm: np.ndarray
    order: np.ndarray
    sorted_feasible: np.ndarray
    level_start: np.ndarray
    level_end: np.ndarray
    fit_count: np.ndarray


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
    return _BeliefTable(lookup, candidates, valid, log_norm, order, sorted_feasible, level_start, level_end,
                        sorted_feasible.sum(axis=1))


#: The choose_splits rules that are :func:`_closest_above` over the splits that fit, answered by the tables.
_TABLE_BACKED_CHOOSERS = (ScriptedPartner.choose_splits, HardlinerPartner.choose_splits)
#: The methods that make ParetoPartner's proposals; a subclass that overrides one is not memoised.
_PARETO_RULE = ("choose_splits", "tie_break", "believed_frontier", "expected_partner_values", "belief", "_table_rows")
#: tie_break rules that depend on the count vector only, with the table of their values.
_COUNT_TIE_BREAKS: dict[Callable, Callable[[], np.ndarray]] = {
    ScriptedPartner.tie_break: _items_kept_tie_break_table,
    FairSplitPartner.tie_break: _fair_tie_break_table,
}


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
