"""The scripted expert oracle: knows both valuations; self-interested but Pareto-aware.

For a query it plays the responder with full knowledge of both agents' values:

* **Target.** Its aspiration falls linearly in time from the best it can get (10) to ``reservation``
  at the last act: ``target(t) = reservation + (10 - reservation) * (1 - t)``, ``t = turn / (max_turns - 1)``.
* **Proposals** are always Pareto-optimal: among the splits on the Pareto frontier worth at least the
  target to itself, it proposes the one worth the least to itself (the most generous one at its
  target), ties broken towards the partner's utility. A repeat of its own last proposal is sent as
  ``insist``.
* **Answering a standing proposal** worth ``u`` to itself: if ``u >= target`` and the proposal is
  Pareto-optimal, it agrees. If ``u >= target`` but another split is at least as good for both and
  better for one, it never accepts the dominated split: it proposes the dominating frontier split
  best for itself (a Pareto-improving counter-offer). If ``u < target`` it proposes at its target.
* **Final act** (``turn == max_turns - 1``): no counter-offer could be answered any more, so it agrees
  to any proposal worth at least ``reservation`` and walks away otherwise.

Annotations: ``acceptable`` is ``u >= target`` (None without a standing proposal); ``counter_offer``
is the Pareto-improving split when the standing proposal is dominated, else None.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from parley.envs.negotiation import ALL_SPLITS, encode_act, pareto_frontier_masks
from parley.oracles.base import Oracle, OracleAnswer, OracleQuery


def _split_utilities(counts: Sequence[int], own_values: Sequence[int], other_values: Sequence[int]):
    """Feasible splits (what the responder keeps), both utilities for each, and the Pareto frontier.

    The frontier is the rules' :func:`~parley.envs.negotiation.pareto_frontier_masks` of the context
    seen from the responder's seat (the responder's values first).
    """
    counts = np.asarray(counts)
    feasible = np.all(ALL_SPLITS <= counts, axis=1)
    splits = ALL_SPLITS[feasible]
    own = splits @ np.asarray(own_values)
    other = (counts - splits) @ np.asarray(other_values)
    frontier = pareto_frontier_masks(counts[None], np.array([[own_values, other_values]]))[0][feasible]
    return splits, own, other, frontier


class ScriptedExpert(Oracle):
    """A scripted expert oracle (see the module docstring for its rules)."""

    name = "scripted"

    def __init__(self, reservation: float = 5.0) -> None:
        if not 0 <= reservation <= 10:
            raise ValueError(f"reservation must be within 0..10 points, got {reservation}")
        self.reservation = float(reservation)

    def target(self, turn: int, max_turns: int) -> float:
        t = min(1.0, turn / max(max_turns - 1, 1))
        return self.reservation + (10.0 - self.reservation) * (1.0 - t)

    def answer(self, queries: Sequence[OracleQuery]) -> list[OracleAnswer | None]:
        return [self.answer_one(q) for q in queries]

    def answer_one(self, query: OracleQuery) -> OracleAnswer:
        r = query.responder
        state = query.state()
        splits, own, other, frontier = _split_utilities(query.counts, query.values[r], query.values[1 - r])
        turn = len(query.history)
        target = self.target(turn, query.max_turns)
        offer = query.standing_offer_for_responder()

        acceptable = counter = None
        if offer is not None:
            offer_arr = np.asarray(offer)
            u_own = float(offer_arr @ np.asarray(query.values[r]))
            u_other = float((np.asarray(query.counts) - offer_arr) @ np.asarray(query.values[1 - r]))
            acceptable = u_own >= target
            dominating = (own >= u_own) & (other >= u_other) & ((own > u_own) | (other > u_other))
            if dominating.any():
                best = np.flatnonzero(dominating)[np.lexsort((-other[dominating], -own[dominating]))[0]]
                counter = tuple(int(k) for k in splits[best])
            if turn == query.max_turns - 1:
                action = encode_act("agree") if u_own >= self.reservation else encode_act("walk_away")
                return OracleAnswer(action, acceptable, counter, self.name)
            if acceptable and counter is None:
                return OracleAnswer(encode_act("agree"), acceptable, None, self.name)
            if acceptable:
                return OracleAnswer(self._proposal(state, r, counter), acceptable, counter, self.name)

        at_target = frontier & (own >= target - 1e-9)
        if not at_target.any():  # the target is above every frontier split: ask for the best one
            at_target = frontier & (own == own[frontier].max())
        candidates = np.flatnonzero(at_target)
        best = candidates[np.lexsort((-other[candidates], own[candidates]))[0]]
        return OracleAnswer(self._proposal(state, r, tuple(int(k) for k in splits[best])), acceptable, counter,
                            self.name)

    @staticmethod
    def _proposal(state, responder: int, split: tuple[int, int, int]) -> int:
        kind = "insist" if state.last_proposals[responder] == split else "propose"
        return encode_act(kind, split)
