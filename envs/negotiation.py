"""Rules of Deal or No Deal bargaining (Lewis et al. 2017) played with coarse dialogue acts.

Pure numpy: no torch, no environment framework. The PettingZoo, Gymnasium and vector environments in
``parley.envs`` are thin adapters over this module, in the way OpenSpiel pairs a game with its states.

The game
--------
Two agents divide a pool of three item types (book, hat, ball). A :class:`Context` holds the item counts
(1-4 of each, 5-7 in total) and each agent's private integer values (``sum(count * value) == 10`` for
both; every type is worth something to at least one agent; some type is worth something to both).

Agents take turns sending one act each:

* ``propose(split)``  -- ``split`` is what the speaker keeps, e.g. ``(2, 0, 1)``; the partner would get
  the rest. It becomes the speaker's standing proposal.
* ``insist(split)``   -- the same move, marked as firm (scripted partners read it as "no more
  concessions"); it also becomes the standing proposal.
* ``agree``           -- accept the partner's standing proposal; legal only when the last proposal on the
  table was made by the partner. The game ends with that deal.
* ``walk_away``       -- end the game with no deal.

After ``max_turns`` acts without agreement the game ends with no deal. With a deal each agent scores
``sum(value * items received)`` (0..10); without one both score ``no_deal_reward``.

Action indices (fixed, independent of the context)
--------------------------------------------------
``0 .. 124``   propose split ``(a, b, c)`` at index ``25 a + 5 b + c`` (each entry 0..4)
``125 .. 249`` insist on split ``(a, b, c)`` at index ``125 + 25 a + 5 b + c``
``250``        agree
``251``        walk away

A split is legal only when each entry is at most that item's count. Legality lives in
:func:`legal_action_mask`, which both the scalar :class:`NegotiationState` and the batched
:class:`BatchedNegotiation` read; the Pareto frontier of a context in :func:`pareto_frontier_masks`, which
every outcome metric reads. Context files are read by :mod:`parley.envs.contexts`.

Observation vector (float32, observer-relative; see :class:`ObservationLayout`)
-------------------------------------------------------------------------------
``[0:3]``   item counts
``[3:6]``   the observer's own values
``[6]``     1 if the partner has a standing proposal, else 0
``[7:10]``  items the observer would receive under the partner's standing proposal (0 if none)
``[10]``    1 if the observer has made a proposal, else 0
``[11:14]`` the observer's own last proposal: items it would keep (0 if none)
``[14]``    turn fraction: acts sent so far / ``max_turns``
``[15]``    1 if the observer moved first, else 0
``[16:16+H]``      act history tokens, oldest first: action index + 1, 0 = padding (``H = max_turns``)
``[16+H:16+2H]``   who sent each act: 1 = the observer, 2 = the partner, 0 = padding

All numbers are stored raw (counts, values, act tokens as integers in float32) so sequence backbones can
read them back as tokens; neural backbones scale them themselves.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ITEM_NAMES: tuple[str, str, str] = ("book", "hat", "ball")
NUM_ITEM_TYPES = 3
MIN_ITEM_COUNT = 1
MAX_ITEM_COUNT = 4
MIN_TOTAL_ITEMS = 5
MAX_TOTAL_ITEMS = 7
VALUE_TOTAL = 10

ACT_KINDS: tuple[str, ...] = ("propose", "insist", "agree", "walk_away")
_SPLIT_BASE = MAX_ITEM_COUNT + 1
NUM_SPLITS = _SPLIT_BASE**NUM_ITEM_TYPES  # 125
PROPOSE_OFFSET = 0
INSIST_OFFSET = NUM_SPLITS
AGREE_ACTION = 2 * NUM_SPLITS  # 250
WALK_AWAY_ACTION = AGREE_ACTION + 1  # 251
NUM_ACTIONS = WALK_AWAY_ACTION + 1  # 252
DEFAULT_MAX_TURNS = 10

#: Every split (a, b, c) with entries 0..4, in action-index order; shape (125, 3).
ALL_SPLITS: np.ndarray = np.array(list(itertools.product(range(_SPLIT_BASE), repeat=NUM_ITEM_TYPES)), dtype=np.int64)
ALL_SPLITS.setflags(write=False)


class IllegalActionError(ValueError):
    """An act that the rules do not allow in the current state."""


class InvalidContextError(ValueError):
    """Item counts or values that break the Deal-or-No-Deal rules."""


# --------------------------------------------------------------------------------------------------
# Contexts
# --------------------------------------------------------------------------------------------------


def context_problem(counts: Sequence[int], values: Sequence[Sequence[int]]) -> str | None:
    """Say what is wrong with a context, or return None when it is valid."""
    if len(counts) != NUM_ITEM_TYPES or len(values) != 2 or any(len(v) != NUM_ITEM_TYPES for v in values):
        return "a context needs 3 item counts and two value vectors of 3 entries"
    if any(int(c) != c for c in counts) or any(int(x) != x for v in values for x in v):
        return "counts and values must be integers"
    if not all(MIN_ITEM_COUNT <= c <= MAX_ITEM_COUNT for c in counts):
        return f"each item count must be {MIN_ITEM_COUNT}-{MAX_ITEM_COUNT}, got {tuple(counts)}"
    if not MIN_TOTAL_ITEMS <= sum(counts) <= MAX_TOTAL_ITEMS:
        return f"the counts must total {MIN_TOTAL_ITEMS}-{MAX_TOTAL_ITEMS} items, got {sum(counts)}"
    for agent, vals in enumerate(values):
        if any(x < 0 for x in vals):
            return f"agent {agent}'s values must be non-negative, got {tuple(vals)}"
        total = sum(c * x for c, x in zip(counts, vals))
        if total != VALUE_TOTAL:
            return f"agent {agent}'s items must be worth {VALUE_TOTAL} in total, got {total}"
    if any(values[0][i] == 0 and values[1][i] == 0 for i in range(NUM_ITEM_TYPES)):
        return "every item type must be worth something to at least one agent"
    if not any(values[0][i] > 0 and values[1][i] > 0 for i in range(NUM_ITEM_TYPES)):
        return "at least one item type must be worth something to both agents"
    return None


@dataclass(frozen=True)
class Context:
    """One negotiation: item counts and both agents' private values.

    ``Context(counts=(3, 1, 2), values=((1, 3, 2), (2, 0, 2)))`` -- three books, a hat and two balls;
    agent 0 values a book at 1, a hat at 3, a ball at 2. Construction validates the rules and raises
    :class:`InvalidContextError` with the reason.
    """

    counts: tuple[int, int, int]
    values: tuple[tuple[int, int, int], tuple[int, int, int]]

    def __post_init__(self) -> None:
        counts = tuple(int(c) for c in self.counts)
        values = tuple(tuple(int(x) for x in v) for v in self.values)
        problem = context_problem(self.counts, self.values)
        if problem is not None:
            raise InvalidContextError(f"invalid context counts={self.counts} values={self.values}: {problem}")
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "values", values)

    def swapped(self) -> Context:
        """The same context seen with the agents' roles exchanged."""
        return Context(self.counts, (self.values[1], self.values[0]))

    def score(self, agent: int, items: Sequence[int]) -> int:
        """What ``items`` are worth to ``agent``."""
        return int(sum(v * k for v, k in zip(self.values[agent], items)))


@functools.lru_cache(maxsize=1)
def _valid_count_vectors() -> tuple[tuple[int, int, int], ...]:
    ranges = [range(MIN_ITEM_COUNT, MAX_ITEM_COUNT + 1)] * NUM_ITEM_TYPES
    return tuple(c for c in itertools.product(*ranges) if MIN_TOTAL_ITEMS <= sum(c) <= MAX_TOTAL_ITEMS)


@functools.cache
def _valuations(counts: tuple[int, int, int]) -> tuple[tuple[int, int, int], ...]:
    ranges = [range(VALUE_TOTAL // c + 1) for c in counts]
    return tuple(v for v in itertools.product(*ranges) if sum(c * x for c, x in zip(counts, v)) == VALUE_TOTAL)


@functools.cache
def valid_value_pairs(counts: tuple[int, int, int]) -> tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...]:
    """Every ordered pair of valuations that makes a valid context with these counts."""
    vals = _valuations(tuple(counts))
    return tuple((a, b) for a in vals for b in vals if context_problem(counts, (a, b)) is None)


def sample_context(rng: np.random.Generator) -> Context:
    """Draw a valid context.

    The distribution: the count vector is uniform over all vectors with 1-4 of each type and 5-7 items
    in total; given the counts, the ordered pair of valuations is uniform over all pairs that make a
    valid context (non-negative integers, each side's items worth 10, every type worth something to at
    least one side, some type worth something to both). Deterministic for a seeded ``rng``.
    """
    count_vectors = _valid_count_vectors()
    counts = count_vectors[int(rng.integers(len(count_vectors)))]
    pairs = valid_value_pairs(counts)
    values = pairs[int(rng.integers(len(pairs)))]
    return _known_context(counts, values)


@functools.cache
def _known_context(counts: tuple[int, int, int], values: tuple[tuple[int, int, int], tuple[int, int, int]]) -> Context:
    # One validated object per valid context: sampling reuses it instead of validating again.
    return Context(counts, values)


def contexts_to_arrays(contexts: Sequence[Context]) -> tuple[np.ndarray, np.ndarray]:
    """Stack contexts into ``counts`` (B, 3) and ``values`` (B, 2, 3) int64 arrays."""
    counts = np.array([c.counts for c in contexts], dtype=np.int64).reshape(-1, NUM_ITEM_TYPES)
    values = np.array([c.values for c in contexts], dtype=np.int64).reshape(-1, 2, NUM_ITEM_TYPES)
    return counts, values


# --------------------------------------------------------------------------------------------------
# Acts
# --------------------------------------------------------------------------------------------------


def split_index(split: Sequence[int]) -> int:
    """Position of a split among :data:`ALL_SPLITS`."""
    if len(split) != NUM_ITEM_TYPES or any(not 0 <= int(k) <= MAX_ITEM_COUNT for k in split):
        raise ValueError(f"a split is 3 item counts, each 0..{MAX_ITEM_COUNT}; got {tuple(split)}")
    a, b, c = (int(k) for k in split)
    return (a * _SPLIT_BASE + b) * _SPLIT_BASE + c


def encode_act(kind: str, split: Sequence[int] | None = None) -> int:
    """Action index of an act. ``split`` (what the speaker keeps) is needed for propose and insist."""
    if kind in ("propose", "insist"):
        if split is None:
            raise ValueError(f"{kind} needs a split: the items the speaker keeps, e.g. (2, 0, 1)")
        offset = PROPOSE_OFFSET if kind == "propose" else INSIST_OFFSET
        return offset + split_index(split)
    if kind in ("agree", "walk_away"):
        if split is not None:
            raise ValueError(f"{kind} takes no split")
        return AGREE_ACTION if kind == "agree" else WALK_AWAY_ACTION
    raise ValueError(f"unknown act kind {kind!r}; kinds are {', '.join(ACT_KINDS)}")


def decode_act(action: int) -> tuple[str, tuple[int, int, int] | None]:
    """``(kind, split)`` of an action index; ``split`` is what the speaker keeps, None for agree/walk_away."""
    action = int(action)
    if not 0 <= action < NUM_ACTIONS:
        raise ValueError(f"action index must be in 0..{NUM_ACTIONS - 1}, got {action}")
    if action == AGREE_ACTION:
        return "agree", None
    if action == WALK_AWAY_ACTION:
        return "walk_away", None
    kind = "propose" if action < INSIST_OFFSET else "insist"
    split = ALL_SPLITS[action % NUM_SPLITS]
    return kind, (int(split[0]), int(split[1]), int(split[2]))


def describe_items(items: Sequence[int], counts: Sequence[int] | None = None) -> str:
    """Items in words: "2 books and the ball". "the" marks a type's only item, "a" one of several."""
    parts = []
    for i, (name, k) in enumerate(zip(ITEM_NAMES, items)):
        if k == 0:
            continue
        if k == 1:
            parts.append(f"the {name}" if counts is not None and counts[i] == 1 else f"a {name}")
        else:
            parts.append(f"{k} {name}s")
    if not parts:
        return "nothing"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def verbalize_act(action: int, counts: Sequence[int]) -> str:
    """The act as the speaker would say it, e.g. "I'd like 2 books and the ball; you take the rest"."""
    kind, split = decode_act(action)
    if kind == "agree":
        return "Deal."
    if kind == "walk_away":
        return "No deal, I'm walking away."
    give = tuple(int(c) - k for c, k in zip(counts, split))
    if sum(give) == 0:
        text = "I'd like everything"
    elif sum(split) == 0:
        text = "You can have everything"
    else:
        text = f"I'd like {describe_items(split, counts)}; you take the rest"
    return text + (" -- that's my final offer." if kind == "insist" else ".")


def _split_fits(counts: np.ndarray) -> np.ndarray:
    """(..., 125) bool: which splits keep at most ``counts`` of each type."""
    return np.all(ALL_SPLITS <= np.asarray(counts)[..., None, :], axis=-1)


def _legality_rule(counts: np.ndarray, partner_has_offer: np.ndarray, done: np.ndarray) -> np.ndarray:
    """The rule itself, evaluated directly (see :func:`legal_action_mask`)."""
    counts = np.asarray(counts)
    shape = np.broadcast_shapes(counts.shape[:-1], np.shape(partner_has_offer), np.shape(done))
    counts = np.broadcast_to(counts, shape + counts.shape[-1:])
    partner_has_offer = np.broadcast_to(np.asarray(partner_has_offer, dtype=bool), shape)
    live = ~np.broadcast_to(np.asarray(done, dtype=bool), shape)
    split_ok = _split_fits(counts) & live[..., None]
    mask = np.zeros(counts.shape[:-1] + (NUM_ACTIONS,), dtype=np.int8)
    mask[..., PROPOSE_OFFSET:PROPOSE_OFFSET + NUM_SPLITS] = split_ok
    mask[..., INSIST_OFFSET:INSIST_OFFSET + NUM_SPLITS] = split_ok
    mask[..., AGREE_ACTION] = partner_has_offer & live
    mask[..., WALK_AWAY_ACTION] = live
    return mask


# The rule evaluated once for every count vector (a, b, c) with entries 0..4 (row 25 a + 5 b + c), with and
# without a partner proposal, live and over: masks for whole batches are then a single lookup.
_MASK_TABLE: np.ndarray = _legality_rule(
    ALL_SPLITS[:, None, None, :], np.array([False, True])[None, :, None],
    np.array([False, True])[None, None, :])
_MASK_TABLE.setflags(write=False)  # (125, 2, 2, 252): [count code, partner has offer, done, action]
_MASK_ROWS = _MASK_TABLE.reshape(-1, NUM_ACTIONS)

# Row ``25 a + 5 b + c``: which splits fit within counts (a, b, c).
_SPLIT_FITS: np.ndarray = _split_fits(ALL_SPLITS)
_SPLIT_FITS.setflags(write=False)


def _count_codes(counts: np.ndarray) -> np.ndarray | None:
    """``25 a + 5 b + c`` for each count vector (a, b, c), or None if some count lies outside 0..4."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size and (counts.min() < 0 or counts.max() > MAX_ITEM_COUNT):
        return None
    return (counts[..., 0] * _SPLIT_BASE + counts[..., 1]) * _SPLIT_BASE + counts[..., 2]


def legal_action_mask(counts: np.ndarray, partner_has_offer: np.ndarray, done: np.ndarray) -> np.ndarray:
    """The one place legality is decided, for one state or a batch.

    ``counts`` (..., 3), ``partner_has_offer`` (...) -- the last proposal on the table is the partner's --
    and ``done`` (...). Returns an int8 mask (..., 252): propose/insist of a split within the counts,
    agree when the partner has a standing proposal, walk away; nothing once the game is over.

    :meth:`NegotiationState.legal_action_mask`, :meth:`BatchedNegotiation.legal_masks` and
    :meth:`BatchedNegotiation.legal_taken` answer this question for their games; all of them read one
    table of this rule precomputed for every count vector.
    """
    codes = _count_codes(counts)
    if codes is None:
        return _legality_rule(counts, partner_has_offer, done)
    return _MASK_TABLE[codes, np.asarray(partner_has_offer, dtype=np.int64), np.asarray(done, dtype=np.int64)]


def _table_rows(codes: np.ndarray, partner_has_offer: np.ndarray, done: np.ndarray) -> np.ndarray:
    # One row index into the flattened table: a single take is much cheaper than a three-array gather.
    return codes * 4 + np.asarray(partner_has_offer, dtype=np.int64) * 2 + np.asarray(done, dtype=np.int64)


def _masks_from_codes(codes: np.ndarray, partner_has_offer: np.ndarray, done: np.ndarray) -> np.ndarray:
    """:func:`legal_action_mask` for count codes (see :func:`_count_codes`) computed beforehand."""
    return np.take(_MASK_ROWS, _table_rows(codes, partner_has_offer, done), axis=0)


def _legal_taken(codes: np.ndarray, partner_has_offer: np.ndarray, done: np.ndarray,
                 actions: np.ndarray) -> np.ndarray:
    """``legal_action_mask(...)[i, actions[i]]`` for count codes, without building the full masks (the
    batched rules check one action per game at every step). Out-of-range indices are illegal."""
    actions = np.asarray(actions, dtype=np.int64)
    in_range = (actions >= 0) & (actions < NUM_ACTIONS)
    rows = _table_rows(codes, partner_has_offer, done)
    return in_range & _MASK_ROWS[rows, np.where(in_range, actions, 0)].astype(bool)


@functools.lru_cache(maxsize=4096)
def _scalar_mask(counts: tuple[int, int, int], partner_has_offer: bool, done: bool) -> np.ndarray:
    # A read-only cached array: one game's states repeat a handful of (counts, offer, done) combinations.
    mask = legal_action_mask(np.array(counts), np.array(partner_has_offer), np.array(done)).copy()
    mask.setflags(write=False)
    return mask


def describe_legal(mask: np.ndarray, counts: Sequence[int]) -> str:
    """A short human description of what a legality mask allows."""
    if not mask.any():
        return "nothing: the game is over"
    parts = []
    if mask[PROPOSE_OFFSET:INSIST_OFFSET].any():
        parts.append(f"propose/insist (indices 0-249) with a split keeping at most {tuple(int(c) for c in counts)}")
    if mask[AGREE_ACTION]:
        parts.append(f"agree ({AGREE_ACTION})")
    if mask[WALK_AWAY_ACTION]:
        parts.append(f"walk_away ({WALK_AWAY_ACTION})")
    return "; ".join(parts)


def illegal_act_message(who: str, action: int, turn: int, mask: np.ndarray, counts: Sequence[int]) -> str:
    """The error for ``who`` sending ``action`` where ``mask`` does not allow it: the act and what is legal."""
    if 0 <= action < NUM_ACTIONS:
        kind, split = decode_act(action)
        what = f"{kind}{'' if split is None else ' ' + str(split)} (action {action})"
    else:
        what = f"action {action} (indices are 0..{NUM_ACTIONS - 1})"
    return f"{who} cannot play {what} at turn {turn}; legal: {describe_legal(mask, counts)}"


# --------------------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------------------


def _pareto_frontier(all_s0: np.ndarray, all_s1: np.ndarray, feasible: np.ndarray) -> np.ndarray:
    """(B, 125) bool: the feasible splits that no feasible split dominates (at least as good for both
    sides and better for one). The one Pareto computation; everything else reads its results.

    A sweep rather than a comparison of every pair: with the splits sorted by (s0, s1), both descending,
    a split is undominated when its s1 is the best among the splits with the same s0 and beats the s1 of
    every split with a larger s0.
    """
    s0 = np.where(feasible, all_s0, -np.inf)
    s1 = np.where(feasible, all_s1, -np.inf)
    order = np.lexsort((-s1, -s0), axis=-1)  # infeasible splits (-inf) sort last
    s0 = np.take_along_axis(s0, order, -1)
    s1 = np.take_along_axis(s1, order, -1)
    new_group = np.ones(s0.shape, dtype=bool)
    new_group[:, 1:] = s0[:, 1:] != s0[:, :-1]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(s0.shape[1]), 0), axis=-1)
    best_before = np.full(s1.shape, -np.inf)
    best_before[:, 1:] = np.maximum.accumulate(s1, axis=-1)[:, :-1]
    group_best = np.take_along_axis(s1, group_start, -1)
    best_with_larger_s0 = np.take_along_axis(best_before, group_start, -1)
    undominated = (s1 == group_best) & (s1 > best_with_larger_s0)
    frontier = np.zeros(feasible.shape, dtype=bool)
    np.put_along_axis(frontier, order, undominated, -1)
    return frontier & feasible


def _context_keys(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """One integer per (counts, values); counts 0..4 and values 0..10 give distinct keys."""
    key = (counts[:, 0] * _SPLIT_BASE + counts[:, 1]) * _SPLIT_BASE + counts[:, 2]
    for v in values.reshape(-1, 2 * NUM_ITEM_TYPES).T:
        key = key * (VALUE_TOTAL + 1) + v
    return key


@functools.lru_cache(maxsize=1)
def _sorted_context_keys() -> tuple[np.ndarray, np.ndarray]:
    counts, values, _, _ = _context_table()
    keys = _context_keys(counts, values)
    order = np.argsort(keys)
    return keys[order], order


def context_ids(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Row of each context in the table of all valid contexts (the support of :func:`sample_context`),
    or -1 where ``counts``/``values`` do not form a valid context. Shapes (B, 3) and (B, 2, 3)."""
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, NUM_ITEM_TYPES)
    values = np.asarray(values, dtype=np.int64).reshape(-1, 2, NUM_ITEM_TYPES)
    in_range = (np.all((counts >= 0) & (counts <= MAX_ITEM_COUNT), axis=1)
                & np.all((values >= 0) & (values <= VALUE_TOTAL), axis=(1, 2)))
    keys = _context_keys(np.where(in_range[:, None], counts, 0), np.where(in_range[:, None, None], values, 0))
    sorted_keys, order = _sorted_context_keys()
    pos = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
    found = in_range & (sorted_keys[pos] == keys)
    return np.where(found, order[pos], -1)


def _split_scores(counts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores of every split for both sides, (B, 125) each, and which splits are feasible (B, 125)."""
    codes = _count_codes(counts)
    feasible = _split_fits(counts) if codes is None else _SPLIT_FITS[codes]
    # Small matrix products, exact in float64.
    splits_t = ALL_SPLITS.T.astype(np.float64)
    all_s0 = values[:, 0].astype(np.float64) @ splits_t
    all_s1 = (counts * values[:, 1]).sum(-1, keepdims=True) - values[:, 1].astype(np.float64) @ splits_t
    return all_s0, all_s1, feasible


class _FrontierCache:
    """Pareto frontiers of valid contexts, computed the first time each context is scored."""

    def __init__(self) -> None:
        self.frontier: np.ndarray | None = None
        self.known: np.ndarray | None = None

    def lookup(self, ids: np.ndarray, counts: np.ndarray, values: np.ndarray) -> np.ndarray:
        """(B, 125) frontier masks of contexts ``ids`` (with their counts and values, to fill gaps)."""
        self._fill(ids, counts, values)
        return self.frontier[ids]

    def lookup_splits(self, ids: np.ndarray, split_idx: np.ndarray, counts: np.ndarray,
                      values: np.ndarray) -> np.ndarray:
        """(B,) whether split ``split_idx[i]`` is on the frontier of context ``ids[i]``."""
        self._fill(ids, counts, values)
        return self.frontier[ids, split_idx]

    def _fill(self, ids: np.ndarray, counts: np.ndarray, values: np.ndarray) -> None:
        if self.frontier is None or self.known is None:
            n = len(_context_table()[0])
            self.frontier = np.zeros((n, NUM_SPLITS), dtype=bool)
            self.known = np.zeros(n, dtype=bool)
        missing = ~self.known[ids]
        if missing.any():
            new_ids, first = np.unique(ids[missing], return_index=True)
            rows = np.flatnonzero(missing)[first]
            self.frontier[new_ids] = _pareto_frontier(*_split_scores(counts[rows], values[rows]))
            self.known[new_ids] = True


_FRONTIERS = _FrontierCache()


def pareto_frontier_masks(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(B, 125) bool: the splits (what agent 0 keeps) on each context's Pareto frontier.

    Cached per context for valid contexts, so scoring many finished games stays cheap.
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, NUM_ITEM_TYPES)
    values = np.asarray(values, dtype=np.int64).reshape(-1, 2, NUM_ITEM_TYPES)
    ids = context_ids(counts, values)
    valid = ids >= 0
    if valid.all():
        return _FRONTIERS.lookup(ids, counts, values)
    out = np.zeros((len(ids), NUM_SPLITS), dtype=bool)
    if valid.any():
        out[valid] = _FRONTIERS.lookup(ids[valid], counts[valid], values[valid])
    out[~valid] = _pareto_frontier(*_split_scores(counts[~valid], values[~valid]))
    return out


def _split_indices(splits: np.ndarray) -> np.ndarray:
    """(B,) position of each split among :data:`ALL_SPLITS`; entries are clipped to 0..4 so that rows
    without a deal (whose split is ignored) still index safely."""
    kept = np.clip(np.asarray(splits, dtype=np.int64).reshape(-1, NUM_ITEM_TYPES), 0, MAX_ITEM_COUNT)
    return (kept[:, 0] * _SPLIT_BASE + kept[:, 1]) * _SPLIT_BASE + kept[:, 2]


def pareto_optimal_batch(counts: np.ndarray, values: np.ndarray, splits: np.ndarray,
                         agreed: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
    """(B,) bool: agreed deals on the Pareto frontier of :func:`pareto_frontier_masks`.

    ``outcome_metrics_batch(...)["pareto_optimal"]`` without the other metrics: one lookup per game.
    ``ids``, optional, are the contexts' :func:`context_ids` when the caller keeps them.
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, NUM_ITEM_TYPES)
    values = np.asarray(values, dtype=np.int64).reshape(-1, 2, NUM_ITEM_TYPES)
    agreed = np.asarray(agreed, dtype=bool).reshape(-1)
    idx = _split_indices(splits)
    if ids is None:
        return agreed & pareto_frontier_masks(counts, values)[np.arange(len(idx)), idx]
    ids = np.asarray(ids, dtype=np.int64)
    return agreed & _FRONTIERS.lookup_splits(ids, idx, counts, values)


def outcome_metrics_batch(
    counts: np.ndarray,
    values: np.ndarray,
    splits: np.ndarray,
    agreed: np.ndarray,
    no_deal_reward: float = 0.0,
) -> dict[str, np.ndarray]:
    """Outcome metrics for a batch of games.

    ``counts`` (B, 3), ``values`` (B, 2, 3), ``splits`` (B, 3) items agent 0 keeps (ignored where not
    agreed), ``agreed`` (B,) bool. Returns arrays of shape (B,) (``scores`` is (B, 2)):

    * ``scores``: each agent's points (``no_deal_reward`` without a deal); ``joint``: their sum;
    * ``pareto_optimal``: a deal no other split makes at least as good for both and better for one
      (False without a deal);
    * ``pareto_distance``: Euclidean distance in score space to the nearest Pareto-optimal split;
    * ``nash_product``: (s0 - d)(s1 - d) with d = ``no_deal_reward``; ``max_nash_product`` over splits;
    * ``agreement``: the ``agreed`` flag as float.
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, NUM_ITEM_TYPES)
    values = np.asarray(values, dtype=np.int64).reshape(-1, 2, NUM_ITEM_TYPES)
    splits = np.asarray(splits, dtype=np.int64).reshape(-1, NUM_ITEM_TYPES)
    agreed = np.asarray(agreed, dtype=bool).reshape(-1)
    if np.any(agreed & np.any((splits < 0) | (splits > counts), axis=1)):
        raise ValueError("an agreed split must keep between 0 and the item count of each type")

    all_s0, all_s1, feasible = _split_scores(counts, values)  # (B, 125) each
    s0 = (splits * values[:, 0]).sum(-1)
    s1 = ((counts - splits) * values[:, 1]).sum(-1)

    on_frontier = pareto_frontier_masks(counts, values)
    split_idx = _split_indices(splits)

    d = float(no_deal_reward)
    score0 = np.where(agreed, s0, d).astype(np.float64)
    score1 = np.where(agreed, s1, d).astype(np.float64)
    dist = np.sqrt((all_s0 - score0[:, None]) ** 2 + (all_s1 - score1[:, None]) ** 2)
    pareto_distance = np.where(on_frontier, dist, np.inf).min(axis=1)
    nash = (score0 - d) * (score1 - d)
    all_nash = np.where(feasible, (all_s0 - d) * (all_s1 - d), -np.inf).max(axis=1)
    return {
        "scores": np.stack([score0, score1], axis=1),
        "joint": score0 + score1,
        "pareto_optimal": agreed & on_frontier[np.arange(len(split_idx)), split_idx],
        "pareto_distance": pareto_distance,
        "nash_product": nash,
        "max_nash_product": all_nash,
        "agreement": agreed.astype(np.float64),
    }


def outcome_metrics(ctx: Context, split: Sequence[int] | None, *, turns: int | None = None,
                    no_deal_reward: float = 0.0) -> dict:
    """Metrics of one outcome; ``split`` is what agent 0 keeps, None for no deal.

    Returns ``{"scores": (s0, s1), "joint", "pareto_optimal", "pareto_distance", "nash_product",
    "max_nash_product", "agreement", "turns"}``.
    """
    agreed = split is not None
    if agreed:
        if (len(split) != NUM_ITEM_TYPES or any(int(k) != k for k in split)
                or any(not 0 <= k <= c for k, c in zip(split, ctx.counts, strict=True))):
            raise ValueError(f"split {tuple(split)} must keep 0..count items of each type; "
                             f"counts are {ctx.counts}")
    # The score pairs of every split, the frontier and the best Nash product depend only on the context:
    # computed once per context with the batched code, then reused.
    _, frontier_scores, pareto_splits = _context_outcomes(ctx)
    d = float(no_deal_reward)
    if agreed:
        kept = tuple(int(k) for k in split)
        s0 = float(ctx.score(0, kept))
        s1 = float(ctx.score(1, tuple(c - k for c, k in zip(ctx.counts, kept, strict=True))))
    else:
        kept, s0, s1 = None, d, d
    return {
        "scores": (s0, s1),
        "joint": s0 + s1,
        "pareto_optimal": agreed and kept in pareto_splits,
        "pareto_distance": min(math.hypot(f0 - s0, f1 - s1) for f0, f1 in frontier_scores),
        "nash_product": (s0 - d) * (s1 - d),
        "max_nash_product": _max_nash_product(ctx, d),
        "agreement": agreed,
        "turns": turns,
    }


@functools.lru_cache(maxsize=16384)
def _max_nash_product(ctx: Context, no_deal_reward: float) -> float:
    return max((f0 - no_deal_reward) * (f1 - no_deal_reward) for f0, f1 in _context_outcomes(ctx)[0])


@functools.lru_cache(maxsize=8192)
def _context_outcomes(ctx: Context) -> tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...],
                                             frozenset[tuple[int, int, int]]]:
    """Score pairs of all feasible splits, of the frontier splits, and the frontier splits themselves,
    for one context: :func:`pareto_frontier_masks` read into Python values once per context."""
    counts, values = contexts_to_arrays([ctx])
    all_s0, all_s1, feasible = _split_scores(counts, values)
    frontier = pareto_frontier_masks(counts, values)[0]
    points = {(float(a), float(b)) for a, b in zip(all_s0[0, feasible[0]], all_s1[0, feasible[0]])}
    frontier_points = {(float(a), float(b)) for a, b in zip(all_s0[0, frontier], all_s1[0, frontier])}
    pareto_splits = frozenset(tuple(int(k) for k in ALL_SPLITS[j]) for j in np.flatnonzero(frontier))
    return tuple(sorted(points)), tuple(sorted(frontier_points)), pareto_splits


# --------------------------------------------------------------------------------------------------
# Observations
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObservationLayout:
    """Where each field sits in the observation vector for a given ``max_turns``.

    Every observation is written through these names: :class:`NegotiationState` and
    :class:`BatchedNegotiation` update both seats' vectors field by field as acts are applied;
    :meth:`assemble` joins whole columns into vectors.
    """

    max_turns: int = DEFAULT_MAX_TURNS

    #: The fields in vector order (each field's slice follows the previous one's).
    FIELD_ORDER = ("counts", "values", "partner_offer_flag", "partner_offer", "own_offer_flag", "own_offer",
                   "turn_fraction", "moved_first", "history_acts", "history_speakers")

    counts = slice(0, 3)
    values = slice(3, 6)
    partner_offer_flag = 6
    partner_offer = slice(7, 10)
    own_offer_flag = 10
    own_offer = slice(11, 14)
    turn_fraction = 14
    moved_first = 15
    header_size = 16

    @property
    def history_acts(self) -> slice:
        return slice(self.header_size, self.header_size + self.max_turns)

    @property
    def history_speakers(self) -> slice:
        return slice(self.header_size + self.max_turns, self.header_size + 2 * self.max_turns)

    @property
    def size(self) -> int:
        return self.header_size + 2 * self.max_turns

    @classmethod
    def from_size(cls, size: int) -> ObservationLayout:
        """The layout of an observation vector of ``size`` entries."""
        turns, rem = divmod(size - cls.header_size, 2)
        if rem or turns < 1:
            raise ValueError(f"{size} is not a negotiation observation size (16 + 2 * max_turns)")
        return cls(max_turns=turns)

    def assemble(self, **columns: np.ndarray) -> np.ndarray:
        """(B, size) float32 observations from each field's values: (B, width) arrays, or (B,) for the
        one-entry fields, passed by field name (:attr:`FIELD_ORDER`)."""
        if set(columns) != set(self.FIELD_ORDER):
            missing, extra = set(self.FIELD_ORDER) - set(columns), set(columns) - set(self.FIELD_ORDER)
            raise ValueError(f"assemble needs exactly the fields {self.FIELD_ORDER}; "
                             f"missing {sorted(missing)}, unknown {sorted(extra)}")
        # Joined in one call: cheaper than writing the fields into a preallocated array one by one.
        pieces = [columns[name] for name in self.FIELD_ORDER]
        pieces = [p[:, None] if np.ndim(p) == 1 else p for p in pieces]
        out = np.concatenate(pieces, axis=1, dtype=np.float32)
        if out.shape[1] != self.size:
            raise ValueError(f"the fields make {out.shape[1]} entries; the layout has {self.size}")
        return out


@functools.lru_cache(maxsize=64)
def _layout(max_turns: int) -> ObservationLayout:
    return ObservationLayout(max_turns)


def observation_size(max_turns: int = DEFAULT_MAX_TURNS) -> int:
    return ObservationLayout(max_turns).size


# --------------------------------------------------------------------------------------------------
# One game (scalar)
# --------------------------------------------------------------------------------------------------


class NegotiationState:
    """The state of one game, advanced by :meth:`apply_action` (like an OpenSpiel state).

    ``first_player`` is 0 or 1. Rewards and outcome are available once :meth:`is_terminal`.
    """

    def __init__(self, ctx: Context, *, max_turns: int = DEFAULT_MAX_TURNS, first_player: int = 0,
                 no_deal_reward: float = 0.0) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        if first_player not in (0, 1):
            raise ValueError(f"first_player must be 0 or 1, got {first_player}")
        self.ctx = ctx
        self.max_turns = max_turns
        self.first_player = first_player
        self.no_deal_reward = float(no_deal_reward)
        self.current_player = first_player
        self.history: list[tuple[int, int]] = []  # (speaker, action)
        self.standing_offer: tuple[int, tuple[int, int, int]] | None = None  # (proposer, kept split)
        self.last_proposals: list[tuple[int, int, int] | None] = [None, None]
        self.terminal = False
        self.agreed_split: tuple[int, int, int] | None = None  # what agent 0 keeps
        self.walked_away_by: int | None = None
        # Both players' observation vectors, kept up to date act by act (cheaper than rebuilding them).
        # Plain lists: a game this small spends more time in numpy's per-call overhead than in arithmetic.
        lay = _layout(max_turns)
        self._layout = lay
        self._obs = [[0.0] * lay.size, [0.0] * lay.size]
        for player in (0, 1):
            self._obs[player][lay.counts] = ctx.counts
            self._obs[player][lay.values] = ctx.values[player]
        self._obs[first_player][lay.moved_first] = 1.0

    @property
    def turn(self) -> int:
        return len(self.history)

    def is_terminal(self) -> bool:
        return self.terminal

    def legal_action_mask(self, player: int | None = None) -> np.ndarray:
        """int8 mask (252,) of ``player``'s legal actions (all zero when it is not their turn)."""
        return self._mask(player).copy()

    def _mask(self, player: int | None = None) -> np.ndarray:
        # A read-only cached array: states repeat a handful of (counts, offer, done) combinations.
        player = self.current_player if player is None else player
        partner_offer = self.standing_offer is not None and self.standing_offer[0] != player
        live = not self.terminal and player == self.current_player
        return _scalar_mask(self.ctx.counts, partner_offer, not live)

    def apply_action(self, action: int) -> None:
        """Send ``action`` for :attr:`current_player`; raises :class:`IllegalActionError` if not legal."""
        action = int(action)
        mask = self._mask()
        if not 0 <= action < NUM_ACTIONS or not mask[action]:
            raise IllegalActionError(illegal_act_message(f"player {self.current_player}", action, self.turn, mask,
                                                         self.ctx.counts))
        player = self.current_player
        other = 1 - player
        kind, split = decode_act(action)
        turn = len(self.history)
        self.history.append((player, action))
        mine, theirs, lay = self._obs[player], self._obs[other], self._layout
        act_at, speaker_at = lay.history_acts.start + turn, lay.history_speakers.start + turn
        mine[act_at] = theirs[act_at] = action + 1
        mine[speaker_at] = 1
        theirs[speaker_at] = 2
        mine[lay.turn_fraction] = theirs[lay.turn_fraction] = (turn + 1) / self.max_turns
        if kind in ("propose", "insist"):
            self.standing_offer = (player, split)
            self.last_proposals[player] = split
            counts = self.ctx.counts
            # The speaker's proposal replaces whatever the partner had on the table.
            mine[lay.partner_offer_flag] = 0
            mine[lay.partner_offer] = (0, 0, 0)
            mine[lay.own_offer_flag] = 1
            mine[lay.own_offer] = split
            theirs[lay.partner_offer_flag] = 1
            theirs[lay.partner_offer] = (counts[0] - split[0], counts[1] - split[1], counts[2] - split[2])
        elif kind == "agree":
            proposer, kept = self.standing_offer
            self.agreed_split = kept if proposer == 0 else tuple(c - k for c, k in zip(self.ctx.counts, kept))
            self.terminal = True
        else:
            self.walked_away_by = player
            self.terminal = True
        if not self.terminal and self.turn >= self.max_turns:
            self.terminal = True
        self.current_player = 1 - player

    def returns(self) -> tuple[float, float]:
        """Each agent's score; (no_deal_reward, no_deal_reward) without a deal or before the end."""
        if self.agreed_split is None:
            return (self.no_deal_reward, self.no_deal_reward)
        kept = self.agreed_split
        other = tuple(c - k for c, k in zip(self.ctx.counts, kept))
        return (float(self.ctx.score(0, kept)), float(self.ctx.score(1, other)))

    def metrics(self) -> dict:
        return outcome_metrics(self.ctx, self.agreed_split, turns=self.turn, no_deal_reward=self.no_deal_reward)

    def observation(self, player: int) -> np.ndarray:
        """``player``'s observation vector (float32; layout in :class:`ObservationLayout`)."""
        return np.array(self._obs[player], dtype=np.float32)

    def transcript(self, names: Sequence[str] = ("agent_0", "agent_1")) -> str:
        """A readable transcript with acts verbalised."""
        lines = []
        for speaker, action in self.history:
            lines.append(f"{names[speaker]}: {verbalize_act(action, self.ctx.counts)}")
        if self.terminal:
            if self.agreed_split is not None:
                s0, s1 = self.returns()
                other = tuple(c - k for c, k in zip(self.ctx.counts, self.agreed_split))
                lines.append(f"Deal: {names[0]} gets {describe_items(self.agreed_split, self.ctx.counts)} ({s0:g} points), "
                             f"{names[1]} gets {describe_items(other, self.ctx.counts)} ({s1:g} points).")
            elif self.walked_away_by is not None:
                lines.append(f"No deal: {names[self.walked_away_by]} walked away.")
            else:
                lines.append(f"No deal after {self.max_turns} turns.")
        return "\n".join(lines)

    def clone(self) -> NegotiationState:
        other = NegotiationState.__new__(NegotiationState)
        other.__dict__.update(self.__dict__)
        other.history = list(self.history)
        other.last_proposals = list(self.last_proposals)
        other._obs = [list(self._obs[0]), list(self._obs[1])]
        return other


# --------------------------------------------------------------------------------------------------
# Many games at once (batched)
# --------------------------------------------------------------------------------------------------


#: How BatchedNegotiation keeps observations (all fields but the turn fraction are small integers).
_SEAT_OBS_DTYPE = np.int16

#: The split index (row of ALL_SPLITS) of each propose/insist action index.
_ACTION_SPLIT_INDEX: np.ndarray = np.arange(AGREE_ACTION) % NUM_SPLITS
_ACTION_SPLIT_INDEX.setflags(write=False)


def _row_elements(array: np.ndarray) -> np.ndarray:
    """A C-contiguous array seen as (N,) opaque (void) elements, one per row: gathering or scattering
    whole rows is then a 1-d operation, several times cheaper than numpy's (rows, columns) indexing."""
    if not array.flags.c_contiguous:
        raise ValueError("row elements need a C-contiguous array")
    width = array.itemsize * (array.size // max(array.shape[0], 1))
    return array.reshape(array.shape[0], -1).view(np.dtype((np.void, width)))[:, 0]


@functools.lru_cache(maxsize=16)
def _turn_fractions(max_turns: int) -> np.ndarray:
    """float32 turn fraction of the observations after ``turn`` acts: ``turn / max_turns``, 0..max_turns."""
    fractions = (np.arange(max_turns + 1) / max_turns).astype(np.float32)
    fractions.setflags(write=False)
    return fractions


def _offer_blocks(seat_obs: np.ndarray, layout: ObservationLayout) -> tuple[np.ndarray, np.ndarray]:
    """Views of (N, D) stored observations holding, as one opaque (void) element per row, the fields a
    proposal's speaker rewrites (partner offer flag through own offer) and those its listener rewrites
    (partner offer flag and items)."""
    raw, width = seat_obs.view(np.uint8), seat_obs.itemsize
    start = width * layout.partner_offer_flag
    speaker = raw[:, start:width * layout.own_offer.stop]
    listener = raw[:, start:width * layout.partner_offer.stop]
    return (speaker.view(np.dtype((np.void, speaker.shape[1])))[:, 0],
            listener.view(np.dtype((np.void, listener.shape[1])))[:, 0])


@functools.lru_cache(maxsize=16)
def _offer_block_tables(max_turns: int) -> tuple[np.ndarray, np.ndarray]:
    """What :func:`_offer_blocks` receives for a proposal: the speaker's block by split index (no partner
    offer, its own proposal) and the listener's by ``count code * 125 + split index`` (the partner's
    offer: the items left to it)."""
    lay = ObservationLayout(max_turns)
    speaker = np.zeros((1, NUM_SPLITS, lay.size), dtype=_SEAT_OBS_DTYPE)
    speaker[0, :, lay.own_offer_flag] = 1
    speaker[0, :, lay.own_offer] = ALL_SPLITS
    listener = np.zeros((NUM_SPLITS, NUM_SPLITS, lay.size), dtype=_SEAT_OBS_DTYPE)  # [count code, split]
    listener[:, :, lay.partner_offer_flag] = 1
    listener[:, :, lay.partner_offer] = ALL_SPLITS[:, None, :] - ALL_SPLITS[None, :, :]
    speaker_blocks, _ = _offer_blocks(speaker.reshape(-1, lay.size), lay)
    _, listener_blocks = _offer_blocks(listener.reshape(-1, lay.size), lay)
    speaker_blocks, listener_blocks = speaker_blocks.copy(), listener_blocks.copy()
    speaker_blocks.setflags(write=False)
    listener_blocks.setflags(write=False)
    return speaker_blocks, listener_blocks


class BatchedNegotiation:
    """B games advanced in lock-step with numpy array operations.

    Same rules and observations as :class:`NegotiationState`; the test suite checks that both agree
    exactly on random games. Games that are over ignore further actions until :meth:`reset_games`.
    """

    def __init__(self, batch_size: int, *, max_turns: int = DEFAULT_MAX_TURNS, no_deal_reward: float = 0.0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        self.batch_size = batch_size
        self.max_turns = max_turns
        self.no_deal_reward = float(no_deal_reward)
        self.layout = ObservationLayout(max_turns)
        b = batch_size
        self.counts = np.zeros((b, NUM_ITEM_TYPES), dtype=np.int64)
        self.count_codes = np.zeros(b, dtype=np.int64)  # see _count_codes(); indexes the legality table
        self.values = np.zeros((b, 2, NUM_ITEM_TYPES), dtype=np.int64)
        self.first_player = np.zeros(b, dtype=np.int64)
        self.current_player = np.zeros(b, dtype=np.int64)
        self.turn = np.zeros(b, dtype=np.int64)
        self.offer_proposer = np.full(b, -1, dtype=np.int64)  # -1: no standing proposal
        # Proposals are kept as split indices (rows of ALL_SPLITS): one number per proposal to write.
        self.offer_split_index = np.zeros(b, dtype=np.int64)  # what the proposer keeps
        self.has_proposed = np.zeros((b, 2), dtype=bool)
        self.last_proposal_index = np.zeros((b, 2), dtype=np.int64)
        self.history_actions = np.full((b, max_turns), -1, dtype=np.int64)
        self.history_speakers = np.full((b, max_turns), -1, dtype=np.int64)
        self.done = np.ones(b, dtype=bool)
        self.agreed = np.zeros(b, dtype=bool)
        self.agreed_split = np.zeros((b, NUM_ITEM_TYPES), dtype=np.int64)  # what agent 0 keeps
        self.walked_away_by = np.full(b, -1, dtype=np.int64)
        # Both seats' observation vectors, kept up to date by reset_games and apply_actions (as the scalar
        # state does): reading observations is then one gather instead of assembling every field anew.
        # Every field but the turn fraction is a small integer, so they are kept as int16 (half the memory
        # to write) and the fraction is filled in from the turn when observations are read.
        self._seat_obs = np.zeros((b, 2, self.layout.size), dtype=_SEAT_OBS_DTYPE)

    def reset_games(self, idx: np.ndarray, counts: np.ndarray, values: np.ndarray, first_player: np.ndarray) -> None:
        """Start new games at indices ``idx`` with the given contexts and first movers."""
        idx = np.asarray(idx, dtype=np.int64)
        codes = _count_codes(counts)
        if codes is None:
            raise ValueError(f"item counts must be 0..{MAX_ITEM_COUNT} for the batched rules")
        counts = np.ascontiguousarray(np.broadcast_to(np.asarray(counts, dtype=np.int64), (len(idx), NUM_ITEM_TYPES)))
        values = np.ascontiguousarray(np.broadcast_to(np.asarray(values, dtype=np.int64), (len(idx), 2, NUM_ITEM_TYPES)))
        _row_elements(self.counts)[idx] = _row_elements(counts)
        self.count_codes[idx] = codes
        _row_elements(self.values)[idx] = _row_elements(values)
        self.first_player[idx] = first_player
        self.current_player[idx] = first_player
        self.turn[idx] = 0
        self.offer_proposer[idx] = -1
        self.offer_split_index[idx] = 0
        _row_elements(self.has_proposed)[idx] = _row_elements(np.zeros((1, 2), dtype=bool))[0]
        _row_elements(self.last_proposal_index)[idx] = _row_elements(np.zeros((1, 2), dtype=np.int64))[0]
        no_acts = _row_elements(np.full((1, self.max_turns), -1, dtype=np.int64))[0]
        _row_elements(self.history_actions)[idx] = no_acts
        _row_elements(self.history_speakers)[idx] = no_acts
        self.done[idx] = False
        self.agreed[idx] = False
        _row_elements(self.agreed_split)[idx] = _row_elements(np.zeros((1, NUM_ITEM_TYPES), dtype=np.int64))[0]
        self.walked_away_by[idx] = -1
        lay = self.layout
        fresh = np.zeros((len(idx), 2, lay.size), dtype=_SEAT_OBS_DTYPE)
        fresh[:, :, lay.counts] = counts[:, None, :]
        fresh[:, :, lay.values] = values
        first = self.first_player[idx]
        fresh[:, 0, lay.moved_first] = first == 0
        fresh[:, 1, lay.moved_first] = first == 1
        _row_elements(self._seat_obs)[idx] = _row_elements(fresh)

    @property
    def offer_split(self) -> np.ndarray:
        """(B, 3) what the proposer of each game's standing proposal keeps (zeros where there is none)."""
        return np.take(ALL_SPLITS, self.offer_split_index, axis=0)

    @property
    def last_proposals(self) -> np.ndarray:
        """(B, 2, 3) each side's last proposal: the items it would keep (zeros where it made none)."""
        return np.take(ALL_SPLITS, self.last_proposal_index, axis=0)

    @property
    def _seat_obs_flat(self) -> np.ndarray:
        """(2 B, D) view of both seats' observations: row 2 i + p is game i seen by seat p. Derived on use
        rather than stored, so that copies and pickles of the game keep a single array."""
        return self._seat_obs.reshape(2 * self.batch_size, self.layout.size)

    def partner_has_offer(self) -> np.ndarray:
        """(B,) whether the last proposal on the table is the current player's partner's."""
        return (self.offer_proposer >= 0) & (self.offer_proposer != self.current_player)

    def legal_masks(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(B, 252) masks for each game's current player (all zero where the game is over); with
        ``rows``, only those games."""
        if rows is None:
            return _masks_from_codes(self.count_codes, self.partner_has_offer(), self.done)
        proposer = self.offer_proposer[rows]
        offer = (proposer >= 0) & (proposer != self.current_player[rows])
        return _masks_from_codes(self.count_codes[rows], offer, self.done[rows])

    def legal_taken(self, actions: np.ndarray) -> np.ndarray:
        """(B,) whether each game's current player may play ``actions[i]`` (False where the game is over)."""
        return _legal_taken(self.count_codes, self.partner_has_offer(), self.done, actions)

    def apply_actions(self, actions: np.ndarray, active: np.ndarray | None = None,
                      legal: np.ndarray | None = None) -> np.ndarray:
        """Apply one act per live game for its current player.

        ``active`` (B,) bool, optional, limits the call to those games (the others keep their turn), e.g.
        to let only the games where a given side is to move act. ``legal``, optional, is
        :meth:`legal_taken` of these same actions when the caller has just computed it. Returns a bool
        array (B,) marking games whose action was illegal; those games are left unchanged so the caller
        can decide (raise, or end them with a penalty via :meth:`end_games`).
        """
        actions = np.asarray(actions, dtype=np.int64).reshape(self.batch_size)
        live = ~self.done
        if active is not None:
            live &= np.asarray(active, dtype=bool).reshape(self.batch_size)
        if legal is None:
            legal = self.legal_taken(actions)
        illegal = live & ~legal
        act = live & legal
        rows = np.flatnonzero(act)
        if rows.size == 0:
            return illegal
        a = actions[rows]
        player = self.current_player[rows]
        turn = self.turn[rows]
        # Per-row writes go through flat views with computed offsets: a 1-d scatter is several times
        # cheaper than numpy's multi-index assignment.
        at = rows * self.max_turns + turn
        self.history_actions.reshape(-1)[at] = a
        self.history_speakers.reshape(-1)[at] = player

        ends = a >= AGREE_ACTION
        any_end = bool(ends.any())
        if any_end:
            is_offer = ~ends
            offer_rows, proposer, offer_acts = rows[is_offer], player[is_offer], a[is_offer]
        else:
            offer_rows, proposer, offer_acts = rows, player, a
        split = _ACTION_SPLIT_INDEX[offer_acts]
        self.offer_proposer[offer_rows] = proposer
        self.offer_split_index[offer_rows] = split
        seat = 2 * offer_rows + proposer
        self.has_proposed.reshape(-1)[seat] = True
        self.last_proposal_index.reshape(-1)[seat] = split

        if any_end:
            agree_rows = rows[a == AGREE_ACTION]
            kept = np.take(ALL_SPLITS, self.offer_split_index[agree_rows], axis=0)
            by_zero = self.offer_proposer[agree_rows] == 0
            self.agreed_split[agree_rows] = np.where(by_zero[:, None], kept, self.counts[agree_rows] - kept)
            self.agreed[agree_rows] = True
            walk = a == WALK_AWAY_ACTION
            self.walked_away_by[rows[walk]] = player[walk]

        # Whole-batch updates in place (cheaper than scattering to the acting rows).
        self.turn += act
        over = self.turn >= self.max_turns
        if any_end:
            over |= actions >= AGREE_ACTION
        over &= act
        self.done |= over
        self.current_player ^= act
        self._record_observations(rows, player, turn, a, offer_rows, proposer, split)
        return illegal

    def _record_observations(self, rows: np.ndarray, player: np.ndarray, turn: np.ndarray, a: np.ndarray,
                             offer_rows: np.ndarray, proposer: np.ndarray, split: np.ndarray) -> None:
        """Write the acts just applied into both seats' observation vectors."""
        lay = self.layout
        size, flat = lay.size, self._seat_obs.reshape(-1)
        # Positions in the flat array: game r seen by seat p starts at (2 r + p) * size.
        seat0 = rows * (2 * size)
        at = seat0 + turn
        token = (a + 1).astype(_SEAT_OBS_DTYPE)
        flat[at + lay.history_acts.start] = token
        flat[at + (lay.history_acts.start + size)] = token
        spoke = at + player * size + lay.history_speakers.start
        flat[spoke] = 1
        flat[spoke + (1 - 2 * player) * size] = 2
        if offer_rows.size:
            # The speaker's proposal replaces whatever the partner had on the table; the listener sees it
            # as the partner's standing proposal. Both blocks are read from tables (by split, and by count
            # vector and split) and written as one element per row (see _offer_blocks).
            speaker_view, listener_view = _offer_blocks(self._seat_obs_flat, lay)
            speaker_table, listener_table = _offer_block_tables(lay.max_turns)
            seat = 2 * offer_rows + proposer
            speaker_view[seat] = np.take(speaker_table, split)
            listener_view[seat ^ 1] = np.take(listener_table, self.count_codes[offer_rows] * NUM_SPLITS + split)

    def end_games(self, idx: np.ndarray) -> None:
        """End games at ``idx`` with no deal (used for illegal-action penalties)."""
        self.done[np.asarray(idx, dtype=np.int64)] = True

    def returns(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(B, 2) scores; ``no_deal_reward`` where there is no deal (or the game is still running).

        With ``rows`` (indices), only those games, one score row each.
        """
        if rows is None:
            rows = np.arange(self.batch_size)
        kept = np.take(self.agreed_split, rows, axis=0)
        values = np.take(self.values, rows, axis=0)
        given = np.take(self.counts, rows, axis=0) - kept
        # Written out per item type: a reduction over a length-3 axis costs more than the arithmetic.
        scores = np.empty((len(rows), 2), dtype=np.float64)
        scores[:, 0] = kept[:, 0] * values[:, 0, 0] + kept[:, 1] * values[:, 0, 1] + kept[:, 2] * values[:, 0, 2]
        scores[:, 1] = given[:, 0] * values[:, 1, 0] + given[:, 1] * values[:, 1, 1] + given[:, 2] * values[:, 1, 2]
        return np.where(np.take(self.agreed, rows)[:, None], scores, self.no_deal_reward)

    def metrics(self) -> dict[str, np.ndarray]:
        m = outcome_metrics_batch(self.counts, self.values, self.agreed_split, self.agreed, self.no_deal_reward)
        m["turns"] = self.turn.astype(np.float64)
        return m

    def observations(self, players: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """(B, D) float32 observations, game ``i`` seen by ``players[i]``.

        With ``rows`` (indices), only those games: ``players`` then has one entry per row and the result
        has ``len(rows)`` rows.
        """
        players = np.asarray(players, dtype=np.int64).reshape(-1)
        n = self.batch_size if rows is None else len(rows)
        if players.shape != (n,) or (n and (players.min() < 0 or players.max() > 1)):
            raise ValueError(f"players must hold one seat (0 or 1) per game, {n} in all; got shape {players.shape}"
                             f"{f', values {players.min()}..{players.max()}' if players.size else ''}")
        games = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
        observations = np.take(self._seat_obs_flat, players + 2 * games, axis=0).astype(np.float32)
        turns = self.turn if rows is None else self.turn[games]
        observations[:, self.layout.turn_fraction] = np.take(_turn_fractions(self.max_turns), turns)
        return observations


@functools.lru_cache(maxsize=1)
def _context_table() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All valid contexts grouped by count vector: counts, values, group offsets and group sizes."""
    counts, values, offsets, sizes = [], [], [], []
    for c in _valid_count_vectors():
        pairs = valid_value_pairs(c)
        offsets.append(len(values))
        sizes.append(len(pairs))
        counts.extend([c] * len(pairs))
        values.extend(pairs)
    return (np.array(counts, dtype=np.int64), np.array(values, dtype=np.int64),
            np.array(offsets, dtype=np.int64), np.array(sizes, dtype=np.int64))


def sample_context_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` rows of the table of all valid contexts (see :func:`context_arrays`), drawn from the
    distribution of :func:`sample_context`."""
    _, _, offsets, sizes = _context_table()
    group = rng.integers(len(offsets), size=n)
    return offsets[group] + (rng.random(n) * sizes[group]).astype(np.int64)


def context_arrays(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts (n, 3) and values (n, 2, 3) of rows ``ids`` of the table of all valid contexts."""
    counts, values, _, _ = _context_table()
    return np.take(counts, ids, axis=0), np.take(values, ids, axis=0)


def sample_context_arrays(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` contexts from the distribution of :func:`sample_context`, drawn vectorised.

    Returns (n, 3) counts and (n, 2, 3) values. The random stream differs from ``n`` calls of
    :func:`sample_context`; the distribution is the same.
    """
    return context_arrays(sample_context_ids(rng, n))
