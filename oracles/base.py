"""The oracle interface: given dialogue states, return the expert's response act for the partner's side.

An :class:`OracleQuery` is one state of a negotiation, fully specified: the item counts, *both* agents'
values, who moved first, the acts sent so far and which side (``responder``) must answer. An oracle
answers it with an :class:`OracleAnswer`: a legal action index for the responder and, optionally, two
annotations --

* ``acceptable``: would the responder accept the partner's standing proposal?
* ``counter_offer``: a split (what the responder keeps) that makes neither side worse off than the
  standing proposal and one side better off -- a Pareto-improving counter-offer -- when there is one.

Every answer passes :func:`validate_answer` before it is used; an illegal act or an impossible
annotation raises :class:`IllegalOracleAnswerError` saying what was wrong and what is allowed, and
the answer is never added to any dataset. Oracles may return ``None`` for a query they cannot answer
yet (the human oracle, whose answers arrive later through a queue).

Implementations: :class:`parley.oracles.expert.ScriptedExpert`, :class:`parley.oracles.model.ModelOracle`,
:class:`parley.oracles.human.HumanOracle`.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parley.envs.corpus import ActDataset
from parley.envs.negotiation import (
    AGREE_ACTION,
    DEFAULT_MAX_TURNS,
    Context,
    IllegalActionError,
    NegotiationState,
    decode_act,
    describe_legal,
    verbalize_act,
)


class IllegalOracleAnswerError(ValueError):
    """An oracle answer the rules do not allow in the queried state (never added to data)."""


@dataclass(frozen=True)
class OracleQuery:
    """One negotiation state to be answered for ``responder``.

    ``values[0]`` and ``values[1]`` are agent 0's and agent 1's values; ``history`` the action indices
    sent so far, alternating from ``first_player``. ``meta`` carries free-form facts (round, selection
    score) that do not change the query's identity.
    """

    counts: tuple[int, int, int]
    values: tuple[tuple[int, int, int], tuple[int, int, int]]
    first_player: int
    history: tuple[int, ...]
    responder: int
    max_turns: int = DEFAULT_MAX_TURNS
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts", tuple(int(c) for c in self.counts))
        object.__setattr__(self, "values", tuple(tuple(int(x) for x in v) for v in self.values))
        object.__setattr__(self, "history", tuple(int(a) for a in self.history))
        state = self.state()  # validates the context and replays the history
        if state.is_terminal():
            raise ValueError("the queried game is already over: there is nothing to respond to")
        if state.current_player != self.responder:
            raise ValueError(f"it is agent {state.current_player}'s turn, not the responder {self.responder}'s")

    @property
    def context(self) -> Context:
        return Context(self.counts, self.values)

    @property
    def query_id(self) -> str:
        """A stable id from the query's content (the same state always gets the same id)."""
        key = json.dumps([self.counts, self.values, self.first_player, self.history, self.responder,
                          self.max_turns])
        return hashlib.sha1(key.encode()).hexdigest()[:16]

    def state(self) -> NegotiationState:
        """The game state, replayed from the history (raises ValueError if the history is illegal)."""
        state = NegotiationState(Context(self.counts, self.values), max_turns=self.max_turns,
                                 first_player=self.first_player)
        for t, action in enumerate(self.history):
            try:
                state.apply_action(action)
            except IllegalActionError as err:
                raise ValueError(f"the query's history is not a legal game at act {t}: {err}") from None
        return state

    def observation(self) -> np.ndarray:
        return self.state().observation(self.responder)

    def legal_mask(self) -> np.ndarray:
        return self.state().legal_action_mask(self.responder)

    def standing_offer_for_responder(self) -> tuple[int, int, int] | None:
        """Items the responder would receive under the partner's standing proposal, or None."""
        state = self.state()
        if state.standing_offer is None or state.standing_offer[0] == self.responder:
            return None
        return tuple(c - k for c, k in zip(self.counts, state.standing_offer[1]))

    def describe(self) -> str:
        """A readable account for a human annotator."""
        r = self.responder
        lines = [f"Items: {self.counts[0]} books, {self.counts[1]} hats, {self.counts[2]} balls.",
                 f"You answer as agent {r}; your values (book, hat, ball): {self.values[r]}; "
                 f"the other agent's values: {self.values[1 - r]}.",
                 f"Turn {len(self.history) + 1} of {self.max_turns}."]
        speaker = self.first_player
        for action in self.history:
            who = "you" if speaker == r else "them"
            lines.append(f"  {who}: {verbalize_act(action, self.counts)}")
            speaker = 1 - speaker
        lines.append("Legal: " + describe_legal(self.legal_mask(), self.counts))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "values": [list(v) for v in self.values],
                "first_player": self.first_player, "history": list(self.history), "responder": self.responder,
                "max_turns": self.max_turns, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OracleQuery:
        return cls(tuple(data["counts"]), tuple(tuple(v) for v in data["values"]), int(data["first_player"]),
                   tuple(data["history"]), int(data["responder"]), int(data.get("max_turns", DEFAULT_MAX_TURNS)),
                   dict(data.get("meta", {})))


@dataclass(frozen=True)
class OracleAnswer:
    """The expert's act for the responder, with optional annotations (see the module docstring)."""

    action: int
    acceptable: bool | None = None
    counter_offer: tuple[int, int, int] | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "acceptable": self.acceptable,
                "counter_offer": None if self.counter_offer is None else list(self.counter_offer),
                "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OracleAnswer:
        counter = data.get("counter_offer")
        return cls(int(data["action"]), data.get("acceptable"), None if counter is None else tuple(counter),
                   data.get("source", ""))


def validate_answer(query: OracleQuery, answer: OracleAnswer) -> None:
    """Raise :class:`IllegalOracleAnswerError` unless ``answer`` is legal in ``query``'s state."""
    mask = query.legal_mask()
    action = answer.action
    if not isinstance(action, (int, np.integer)) or not 0 <= int(action) < len(mask):
        raise IllegalOracleAnswerError(f"query {query.query_id}: action {action!r} is not an action index "
                                       f"(0..{len(mask) - 1}); legal: {describe_legal(mask, query.counts)}")
    if not mask[int(action)]:
        kind, split = decode_act(int(action))
        what = kind if split is None else f"{kind} {split}"
        raise IllegalOracleAnswerError(f"query {query.query_id}: {what} (action {int(action)}) is illegal here; "
                                       f"legal: {describe_legal(mask, query.counts)}")
    offer = query.standing_offer_for_responder()
    if answer.acceptable is not None and offer is None:
        raise IllegalOracleAnswerError(f"query {query.query_id}: 'acceptable' annotates the partner's standing "
                                       "proposal, but there is none in this state; leave it empty")
    if answer.counter_offer is not None:
        split = tuple(answer.counter_offer)
        if len(split) != 3 or any(not 0 <= int(k) <= c for k, c in zip(split, query.counts)):
            raise IllegalOracleAnswerError(f"query {query.query_id}: counter-offer {split} must keep 0..count "
                                           f"items of each type; counts are {query.counts}")
        if offer is None:
            raise IllegalOracleAnswerError(f"query {query.query_id}: a counter-offer needs a standing proposal "
                                           "to improve on, and there is none")
    if int(action) == AGREE_ACTION and answer.acceptable is False:
        raise IllegalOracleAnswerError(f"query {query.query_id}: the answer agrees to a proposal it marks "
                                       "as not acceptable")


class Oracle(ABC):
    """Answers negotiation states for the partner's side. Subclasses set ``name`` and ``answer``."""

    name: str = "oracle"

    @abstractmethod
    def answer(self, queries: Sequence[OracleQuery]) -> list[OracleAnswer | None]:
        """One answer per query, in order; ``None`` where no answer is available (yet)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


@dataclass
class AnswerBatch:
    """Answers sorted into accepted (validated) pairs, rejected ones with the reason, and unanswered queries."""

    accepted: list[tuple[OracleQuery, OracleAnswer]] = field(default_factory=list)
    rejected: list[tuple[OracleQuery, OracleAnswer, str]] = field(default_factory=list)
    pending: list[OracleQuery] = field(default_factory=list)


def collect_answers(oracle: Oracle, queries: Sequence[OracleQuery]) -> AnswerBatch:
    """Ask ``oracle`` and validate every answer; illegal answers are set aside with their error message."""
    answers = oracle.answer(list(queries))
    if len(answers) != len(queries):
        raise ValueError(f"oracle {oracle.name!r} returned {len(answers)} answers for {len(queries)} queries")
    batch = AnswerBatch()
    for query, answer in zip(queries, answers):
        if answer is None:
            batch.pending.append(query)
            continue
        try:
            validate_answer(query, answer)
        except IllegalOracleAnswerError as err:
            batch.rejected.append((query, answer, str(err)))
            continue
        batch.accepted.append((query, answer))
    return batch


def answers_to_dataset(pairs: Sequence[tuple[OracleQuery, OracleAnswer]], weight: float = 1.0) -> ActDataset:
    """Behaviour-cloning examples from answered queries; every answer is validated first (raises if illegal)."""
    if not pairs:
        return ActDataset.empty(16 + 2 * DEFAULT_MAX_TURNS)
    obs, masks, actions = [], [], []
    for query, answer in pairs:
        validate_answer(query, answer)
        obs.append(query.observation())
        masks.append(query.legal_mask())
        actions.append(int(answer.action))
    return ActDataset(np.stack(obs).astype(np.float32), np.stack(masks).astype(np.int8),
                      np.array(actions, dtype=np.int64), np.full(len(actions), weight, np.float32))
