"""Bridges between coarse acts and text: a realiser that says acts as varied sentences, and a text player
that lets any coarse-act policy play the text game.

* :func:`realise` turns an act (``propose`` / ``insist`` a split, ``agree``, ``walk_away``) into one of
  several sentence templates, drawn from a seeded generator. Every sentence reads back to the same act
  through the corpus parser (:func:`parley.envs.corpus.parse_utterance`); the test suite checks this for
  every act over many seeds.
* :class:`ActTextPlayer` wraps a :class:`~parley.envs.policy.Policy` (scripted partners, trained
  policies) as a :class:`TextPolicy`: it reads the text observation of
  :mod:`parley.envs.negotiation_text_v0`, parses every message into acts, replays them on the coarse
  rules to build the policy's observation and mask, and realises the policy's answer. A message the
  parser cannot read passes the turn without an act; an act the rules do not allow there (``agree``
  with nothing on the table) is ignored. When the coarse game is over (a deal, a walk-away or the
  policy's turn limit) the player ends the talk with ``<selection>``; its selection is the agreed split,
  or -- if the talk ended with the partner's offer on the table -- that offer when the policy would
  agree to it, else ``<no_agreement>``.
* :func:`replay_dialogue` is that replay for any talk, and :func:`read_deal` reads from it the deal a
  talk reached (what the dialogue model selects).

Pure Python and numpy: no torch, nothing from ``parley.agents``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from parley.envs.corpus import parse_utterance_cached
from parley.envs.negotiation import (
    AGREE_ACTION,
    DEFAULT_MAX_TURNS,
    ITEM_NAMES,
    Context,
    IllegalActionError,
    NegotiationState,
    decode_act,
    valid_value_pairs,
)
from parley.envs.policy import Policy

if TYPE_CHECKING:  # the text env imports this module
    from parley.envs.negotiation_text_v0 import TextObservation

__all__ = ["TextPolicy", "ActTextPlayer", "realise", "as_text_player", "tracking_state", "replay_dialogue",
           "read_deal"]

_NUMBER_NAMES = {2: "two", 3: "three", 4: "four"}


@runtime_checkable
class TextPolicy(Protocol):
    """A player of the text game: one reply (an utterance, ``<selection>`` or a selection) per observation."""

    name: str

    def reply(self, observation: str) -> str:
        """The answer to a text observation of :mod:`parley.envs.negotiation_text_v0`."""
        ...


def _items(items: Sequence[int], counts: Sequence[int], rng: np.random.Generator) -> str:
    """Items in words with some variety: "2 books and the ball", "both hats", "all the books", "one hat"."""
    parts = []
    for name, k, n in zip(ITEM_NAMES, items, counts):
        if k == 0:
            continue
        if k == 1:
            options = [f"the {name}"] if n == 1 else [f"a {name}", f"one {name}", f"1 {name}"]
        elif k == n:
            options = [f"{k} {name}s", f"all the {name}s", f"the {name}s", f"all {k} {name}s"]
            if k == 2:
                options.append(f"both {name}s")
        else:
            options = [f"{k} {name}s", f"{_NUMBER_NAMES[k]} {name}s"]
        parts.append(options[int(rng.integers(len(options)))])
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


_KEEP_AND_REST = ("I'd like {keep} and you can have the rest.", "I need {keep}; you take the rest.",
                  "Give me {keep} and you can have the rest.", "I want {keep}, you get everything else.")
_BOTH_SIDES = ("I'll take {keep} and you get {give}.", "How about I get {keep} and you get {give}?",
               "{Keep} for me, {give} for you.", "I need {keep}. You can have {give}.",
               "You can have {give} if I get {keep}.", "You take {give} and I'll take {keep}.")
_GIVE_AND_REST = ("You can have {give} and I'll keep the rest.", "You take {give}, I get the rest.")
_EVERYTHING = ("I'd like everything.", "I need everything.", "Give me everything.")
_NOTHING = ("You can have everything.", "You take everything.")
_FIRM = (" That's my final offer.", " Take it or leave it.", " That's the best I can do.")
_AGREE = ("Deal.", "Ok, deal.", "Sounds good.", "That works for me.", "I agree.", "Great, deal!", "Okay.")
_WALK_AWAY = ("No deal.", "No deal, I'm walking away.", "I'll walk away. No deal.")


def _pick(options: Sequence[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def realise(action: int, counts: Sequence[int], rng: np.random.Generator) -> str:
    """One sentence for coarse act ``action`` (an index of :mod:`parley.envs.negotiation`), drawn with ``rng``.

    ``counts`` are the item counts (quantities such as "the ball" or "both hats" depend on them). The
    sentence parses back to the same act with :func:`parley.envs.corpus.parse_utterance`.
    """
    kind, split = decode_act(action)
    if kind == "agree":
        return _pick(_AGREE, rng)
    if kind == "walk_away":
        return _pick(_WALK_AWAY, rng)
    counts = tuple(int(c) for c in counts)
    if any(k > c for k, c in zip(split, counts)):
        raise ValueError(f"split {split} keeps more than the counts {counts}")
    give = tuple(c - k for c, k in zip(counts, split))
    if sum(give) == 0:
        text = _pick(_EVERYTHING, rng)
    elif sum(split) == 0:
        text = _pick(_NOTHING, rng)
    else:
        keep_words, give_words = _items(split, counts, rng), _items(give, counts, rng)
        templates = _KEEP_AND_REST + _BOTH_SIDES + _GIVE_AND_REST
        template = _pick(templates, rng)
        text = template.format(keep=keep_words, give=give_words, Keep=keep_words[0].upper() + keep_words[1:])
        text = text[0].upper() + text[1:]
    if kind == "insist":
        text += _pick(_FIRM, rng)
    return text


def tracking_state(counts: Sequence[int], own_values: Sequence[int], *, first_player: int,
                   max_turns: int = DEFAULT_MAX_TURNS) -> NegotiationState:
    """A coarse game state seen from one side (seat 0) when only its own values are known.

    The partner's values do not enter seat 0's observation or legal acts; any valuation that makes a
    valid context stands in for them. Raises ``ValueError`` when no valid context has these counts and
    values.
    """
    ctx = _tracking_context(tuple(int(c) for c in counts), tuple(int(v) for v in own_values))
    return NegotiationState(ctx, max_turns=max_turns, first_player=first_player)


@functools.lru_cache(maxsize=4096)
def _tracking_context(counts: tuple[int, int, int], own: tuple[int, int, int]) -> Context:
    """The context of :func:`tracking_state` (validated once per counts and values: contexts are immutable)."""
    try:
        partner = next(b for a, b in valid_value_pairs(counts) if a == own)
    except StopIteration:
        raise ValueError(f"no valid negotiation has counts {counts} and values {own}: counts are 1-4 of each type, "
                         "5-7 in all, and the values must make the items worth 10") from None
    return Context(counts, (own, partner))


def replay_dialogue(view: TextObservation, max_turns: int | None = None,
                    resume: tuple[NegotiationState, int] | None = None) -> NegotiationState:
    """The coarse game that the talk of ``view`` (a parsed text observation) amounts to, from the
    observer's side (seat 0).

    Every message is read with the corpus parser and applied in order; a message the parser cannot read
    passes the turn without an act, and an act the rules do not allow there is skipped. ``max_turns``
    is the coarse game's turn limit; by default it is long enough for every message, so the replay
    reads the whole talk. ``agreed_split`` of the result is what the observer keeps under the deal the
    talk reached (None without one); both sides reading the same talk get complementary splits.

    ``resume`` = (state, n) continues a replay whose state already holds the first ``n`` messages of
    this talk (a player's previous turn of the same game), instead of starting over; the state is
    updated in place.
    """
    from parley.envs.negotiation_text_v0 import SELECTION_TOKEN

    talk = [(speaker, text) for speaker, text in view.messages if text != SELECTION_TOKEN]
    if resume is not None:
        state, done = resume
    else:
        first = talk[0][0] if talk else 0
        limit = len(talk) + 1 if max_turns is None else max_turns
        state, done = tracking_state(view.counts, view.values, first_player=first, max_turns=limit), 0
    for speaker, text in talk[done:]:
        if state.is_terminal():
            break
        act = parse_utterance_cached(text, view.counts)
        if act is None:
            continue  # unread: the turn passes without an act
        state.current_player = speaker
        try:
            state.apply_action(act.action())
        except IllegalActionError:
            continue
    return state


def read_deal(view: TextObservation) -> tuple[int, int, int] | None:
    """What the observer keeps under the deal that the talk of ``view`` reached, read with the corpus
    parser, or None.

    The deal is the agreed split of :func:`replay_dialogue`; without one, a talk that a side ended with
    ``<selection>`` while the other side's offer was on the table ends on that offer, taken as accepted.
    Both sides of a game read the same talk, so their readings complement each other.
    """
    from parley.envs.negotiation_text_v0 import SELECTION_TOKEN

    state = replay_dialogue(view)
    if state.agreed_split is not None or state.terminal:
        return state.agreed_split
    ender = next((speaker for speaker, text in view.messages if text == SELECTION_TOKEN), None)
    if ender is None or state.standing_offer is None:
        return None
    proposer, kept = state.standing_offer
    if proposer == ender:
        return None
    return tuple(kept) if proposer == 0 else tuple(c - k for c, k in zip(view.counts, kept))


class ActTextPlayer:
    """A coarse-act :class:`~parley.envs.policy.Policy` playing the text game (see the module docstring).

    :param policy: the coarse-act policy
    :param seed: seeds the realiser's choice of sentences (and the policy, when it has ``seed``)
    :param max_turns: the coarse game's turn limit the policy was built for (its observation size)
    :param name: defaults to the policy's name
    """

    def __init__(self, policy: Policy, *, seed: int | None = None, max_turns: int = DEFAULT_MAX_TURNS,
                 name: str | None = None) -> None:
        if not callable(getattr(policy, "act", None)):
            raise TypeError(f"policy must have act(observation, action_mask); got {type(policy).__name__}")
        self.policy = policy
        self.max_turns = int(max_turns)
        self.name = name or str(getattr(policy, "name", type(policy).__name__))
        self.rng = np.random.default_rng(seed)
        if seed is not None and callable(getattr(policy, "seed", None)):
            policy.seed(seed)
        self._replay: tuple[tuple, tuple, NegotiationState] | None = None  # the previous turn's replay

    def seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)
        if callable(getattr(self.policy, "seed", None)):
            self.policy.seed(seed)

    def state_of(self, observation: str) -> tuple[NegotiationState, bool]:
        """The coarse game replayed from a text observation, and whether the talk has ended.

        When the observation continues the one of the player's previous turn (same context, the earlier
        messages unchanged), only the new messages are replayed.
        """
        from parley.envs.negotiation_text_v0 import SELECTION_TOKEN, parse_observation

        view = parse_observation(observation)
        key, messages = (view.counts, view.values), view.messages
        resume = None
        if self._replay is not None:
            last_key, last_messages, last_state = self._replay
            # A replay that has read a message knows who opened the game, so it can go on.
            if last_key == key and last_messages and messages[:len(last_messages)] == last_messages:
                resume = (last_state, sum(text != SELECTION_TOKEN for _, text in last_messages))
        state = replay_dialogue(view, max_turns=self.max_turns, resume=resume)
        self._replay = (key, messages, state)
        return state, view.selecting

    def reply(self, observation: str) -> str:
        from parley.envs.negotiation_text_v0 import NO_AGREEMENT, SELECTION_TOKEN, format_selection

        state, selecting = self.state_of(observation)
        if selecting:
            if state.agreed_split is not None:
                return format_selection(state.agreed_split)
            offer = state.standing_offer
            if not state.is_terminal() and offer is not None and offer[0] == 1:
                state.current_player = 0
                if int(self.policy.act(state.observation(0), state.legal_action_mask(0))) == AGREE_ACTION:
                    return format_selection(tuple(c - k for c, k in zip(state.ctx.counts, offer[1])))
            return NO_AGREEMENT
        if state.is_terminal():
            return SELECTION_TOKEN
        state.current_player = 0
        action = int(self.policy.act(state.observation(0), state.legal_action_mask(0)))
        return realise(action, state.ctx.counts, self.rng)

    def __repr__(self) -> str:
        return f"ActTextPlayer({self.name!r})"


def as_text_player(player: TextPolicy | Policy, *, seed: int | None = None,
                   max_turns: int = DEFAULT_MAX_TURNS) -> TextPolicy:
    """``player`` itself when it already speaks text (has ``reply``), else a coarse policy wrapped in
    :class:`ActTextPlayer`."""
    if callable(getattr(player, "reply", None)):
        return player
    if callable(getattr(player, "act", None)):
        return ActTextPlayer(player, seed=seed, max_turns=max_turns)
    raise TypeError(f"expected a text player (reply(observation) -> str) or a coarse-act Policy (act(obs, mask)); "
                    f"got {type(player).__name__}")

