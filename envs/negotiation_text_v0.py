"""Deal or No Deal in natural language, after Lewis et al. (2017): talk, then secret selections.

+--------------------+----------------------------------------------------------------+
| Import             | ``from parley.envs import negotiation_text_v0``                |
+--------------------+----------------------------------------------------------------+
| Agents             | ``agents = ["agent_0", "agent_1"]``                            |
+--------------------+----------------------------------------------------------------+
| Actions            | Text: an utterance (at most ``max_utterance_chars``),          |
|                    | ``<selection>`` to end the talk, then a selection such as      |
|                    | ``book=1 hat=0 ball=2`` or ``<no_agreement>``                  |
+--------------------+----------------------------------------------------------------+
| Observations       | Text: ``<input> c v c v c v </input> <dialogue> YOU: ... <eos> |
|                    | THEM: ... <eos> </dialogue>`` (the corpus's own format)        |
+--------------------+----------------------------------------------------------------+
| PettingZoo id      | ``parley/negotiation-text-v0`` (``pettingzoo.make("aec", ...)``)|
+--------------------+----------------------------------------------------------------+
| Gymnasium id       | ``parley/NegotiationText-v0``: a learner against a text        |
|                    | partner (:class:`NegotiationTextGymEnv`)                       |
+--------------------+----------------------------------------------------------------+

The game
--------
The context and scores are those of :mod:`parley.envs.negotiation` (three item types, 1-4 of each, each
side's items worth 10 to it). The protocol is that of Lewis et al.'s corpus:

1. **Talk.** Players take turns sending one utterance each, starting with ``first_player`` (drawn per
   episode unless fixed). Either player may end the talk by sending ``<selection>`` instead of an
   utterance. After ``max_messages`` utterances the talk ends by itself, as if the next player had sent
   ``<selection>`` (the dialogue shows it so).
2. **Select.** Each player privately submits what it keeps -- ``book=1 hat=0 ball=2`` (also accepted:
   ``item0=1 item1=0 item2=2``, ``1 0 2``, plural names) -- or ``<no_agreement>``. The player who did not
   end the talk selects first; neither sees the other's selection.
3. **Outcome.** There is a deal only when the selections are complementary (they add up to the item
   counts); then each scores the value of what it keeps. Otherwise both score ``no_deal_reward``.

Utterances are normalised (unicode quotes and dashes to ASCII, other characters outside printable ASCII
dropped, ``<`` and ``>`` dropped so no one can forge a ``<selection>`` or ``<eos>`` inside a message,
whitespace collapsed). An utterance that is empty after that or longer than ``max_utterance_chars``,
a selection that cannot be read or keeps more than the counts, and an utterance in the selection phase
are bad input: ``bad_input="raise"`` (default) raises :class:`TextInputError` (a ``ValueError``) saying
what is allowed and leaves the game unchanged; ``"penalize"`` ends the game, the offender receiving
``illegal_penalty`` and the other ``no_deal_reward``.

Observations
------------
One string per agent, seen from that agent (``YOU`` is the observer, ``THEM`` the partner)::

    <input> 1 4 4 1 1 2 </input> <dialogue> THEM: i want the hats . <eos> YOU: <selection> <eos> </dialogue>

``<input>`` holds ``count value`` for book, hat and ball (the observer's own values; the partner's are
private). Once a ``<selection>`` message is in the dialogue the observer's next action is its
selection. :func:`parse_observation` reads an observation back; :func:`format_observation` writes one.

Rewards and infos
-----------------
Zero until the end; then each agent's score. ``infos[agent]`` holds the outcome metrics of the coarse
game (:func:`~parley.envs.negotiation.outcome_metrics`: ``scores``, ``joint``, ``agreement``,
``pareto_optimal``, ``pareto_distance``, ``nash_product``, ``max_nash_product``, ``turns`` = utterances
sent) plus ``deal`` (what agent_0 keeps, or None), ``selections`` (each agent's, None for
``<no_agreement>``), ``messages`` (utterances), ``parse_failures`` and ``parse_failure_rate`` (the share
of utterances that :func:`~parley.envs.corpus.parse_utterance` cannot read as a coarse act) and
``bad_input`` (the offending agent, or None). Every ending is a termination.

Arguments
---------
``negotiation_text_v0.env(max_messages=20, max_utterance_chars=400, contexts=None, first_player=None,
no_deal_reward=0.0, bad_input="raise", illegal_penalty=-1.0, render_mode=None)``

* ``contexts``: None (sampled), a context file path or a list of :class:`~parley.envs.negotiation.Context`;
* ``render_mode``: ``"ansi"`` (``render()`` returns the transcript with both sides' values) or ``"human"``.

``reset(seed=None, options=None)``; ``options`` may fix ``{"context": Context, "first_player": 0 | 1}``.

Version history
---------------
* v0: initial release.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv
from pettingzoo.utils import wrappers

from parley.envs._adapter_common import (
    RENDER_MODES,
    check_render_mode,
    context_header,
    draw_context,
    render_text,
    resolve_contexts,
)
from parley.envs.corpus import parse_utterance_cached
from parley.envs.negotiation import ITEM_NAMES, NUM_ITEM_TYPES, Context, outcome_metrics
from parley.envs.policy import Policy
from parley.envs.realiser import TextPolicy, as_text_player

__all__ = ["env", "raw_env", "NegotiationTextGymEnv", "TextNegotiationState", "TextInputError", "TextObservation",
           "format_observation", "parse_observation", "format_selection", "parse_selection",
           "normalise_utterance", "SELECTION_TOKEN", "NO_AGREEMENT", "TEXT_CHARSET"]

AGENTS: tuple[str, str] = ("agent_0", "agent_1")
SELECTION_TOKEN = "<selection>"
NO_AGREEMENT = "<no_agreement>"
DEFAULT_MAX_MESSAGES = 20
DEFAULT_MAX_UTTERANCE_CHARS = 400
BAD_INPUT_MODES = ("raise", "penalize")
#: Characters of observations and actions: printable ASCII without tabs and line breaks.
TEXT_CHARSET = "".join(c for c in string.printable if c not in "\t\n\r\x0b\x0c")
_SPEAKERS = ("YOU", "THEM")
_UNICODE_PUNCTUATION = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-", "…": "..."})


class TextObservationString(str):
    """An observation string that also carries the ``dtype`` of Gymnasium's ``Text`` space (``<U``), which
    PettingZoo's API checks read from every observation; it is a ``str`` in every other respect."""

    __slots__ = ()
    dtype = np.dtype("<U")


class TextInputError(ValueError):
    """An utterance or selection the text protocol does not allow."""


# --------------------------------------------------------------------------------------------------
# Text formats
# --------------------------------------------------------------------------------------------------


# ASCII characters that an utterance drops (everything outside TEXT_CHARSET, and the tag brackets).
_DROPPED_ASCII = str.maketrans("", "", "".join(chr(i) for i in range(128) if chr(i) not in TEXT_CHARSET or chr(i) in "<>"))


@functools.lru_cache(maxsize=65536)
def _normalised(text: str) -> str:
    """Unicode punctuation to ASCII, other characters outside TEXT_CHARSET and '<', '>' dropped, whitespace
    collapsed. Cached: template players say the same sentences over and over."""
    text = unicodedata.normalize("NFKC", text.translate(_UNICODE_PUNCTUATION))
    text = text.encode("ascii", "ignore").decode("ascii").translate(_DROPPED_ASCII)
    return " ".join(text.split())


def normalise_utterance(text: str, max_chars: int = DEFAULT_MAX_UTTERANCE_CHARS) -> str:
    """The utterance as the game records it (see the module docstring); raises :class:`TextInputError`
    when it is not a string, is empty after normalising or is longer than ``max_chars``."""
    if not isinstance(text, str):
        raise TextInputError(f"an utterance must be a string, got {type(text).__name__}")
    text = _normalised(text)
    if not text:
        raise TextInputError("an utterance must say something (it is empty after dropping characters outside "
                             "printable ASCII and '<', '>')")
    if len(text) > max_chars:
        raise TextInputError(f"an utterance may hold at most {max_chars} characters, got {len(text)}")
    return text


def format_selection(split: Sequence[int] | None) -> str:
    """``book=1 hat=0 ball=2`` for what the selecting player keeps; ``<no_agreement>`` for None."""
    if split is None:
        return NO_AGREEMENT
    return " ".join(f"{name}={int(k)}" for name, k in zip(ITEM_NAMES, split))


_SELECTION_NAMES = {**{name: i for i, name in enumerate(ITEM_NAMES)}, **{f"{n}s": i for i, n in enumerate(ITEM_NAMES)},
                    **{f"item{i}": i for i in range(NUM_ITEM_TYPES)}}


def parse_selection(text: str, counts: Sequence[int]) -> tuple[int, int, int] | None:
    """What a selection keeps, or None for ``<no_agreement>``; raises :class:`TextInputError` otherwise.

    Accepted: ``book=1 hat=0 ball=2`` (singular or plural names, ``:`` or ``=``, any order, commas),
    ``item0=1 item1=0 item2=2`` (the corpus's format), or three numbers ``1 0 2``; each between 0 and the
    item's count.
    """
    if not isinstance(text, str):
        raise TextInputError(f"a selection must be a string, got {type(text).__name__}")
    counts = tuple(int(c) for c in counts)
    cleaned = text.strip().lower()
    if cleaned in (NO_AGREEMENT, "no_agreement", "no agreement"):
        return None
    allowed = (f"'book=k hat=k ball=k' (e.g. {format_selection(tuple(c // 2 for c in counts))!r}), "
               f"'item0=k item1=k item2=k', three numbers, or {NO_AGREEMENT!r}")
    pairs = re.findall(r"([a-z]+\d?)\s*[=:]\s*(-?\d+)", cleaned)
    if pairs:
        keep: dict[int, int] = {}
        for name, number in pairs:
            if name not in _SELECTION_NAMES or _SELECTION_NAMES[name] in keep:
                raise TextInputError(f"cannot read the selection {text!r}: unknown or repeated item {name!r}; "
                                     f"expected {allowed}")
            keep[_SELECTION_NAMES[name]] = int(number)
        if len(keep) != NUM_ITEM_TYPES or re.sub(r"([a-z]+\d?)\s*[=:]\s*(-?\d+)|[\s,;]", "", cleaned):
            raise TextInputError(f"cannot read the selection {text!r}: expected {allowed}")
        split = tuple(keep[i] for i in range(NUM_ITEM_TYPES))
    elif re.fullmatch(r"-?\d+[\s,]+-?\d+[\s,]+-?\d+", cleaned):
        split = tuple(int(n) for n in re.split(r"[\s,]+", cleaned))
    else:
        raise TextInputError(f"cannot read the selection {text!r}: expected {allowed}")
    if any(not 0 <= k <= c for k, c in zip(split, counts)):
        raise TextInputError(f"the selection {text!r} does not fit the items: keep between 0 and the count of each "
                             f"type; counts (book, hat, ball) are {counts}")
    return split  # type: ignore[return-value]


@dataclass(frozen=True)
class TextObservation:
    """A text observation read back: counts, the observer's values, messages (0 = the observer, 1 = the
    partner) and whether the observer's next action is its selection."""

    counts: tuple[int, int, int]
    values: tuple[int, int, int]
    messages: tuple[tuple[int, str], ...]
    selecting: bool


def format_observation(counts: Sequence[int], values: Sequence[int], messages: Sequence[tuple[int, str]]) -> str:
    """The observation string for an observer with ``values``; ``messages`` are (0 = observer, 1 = partner,
    text) pairs, ``<selection>`` included."""
    head = " ".join(f"{int(c)} {int(v)}" for c, v in zip(counts, values))
    body = " ".join(f"{_SPEAKERS[s]}: {text} <eos>" for s, text in messages)
    return f"<input> {head} </input> <dialogue> {body + ' ' if body else ''}</dialogue>"


_OBSERVATION = re.compile(r"\s*<input>(?P<input>[^<]*)</input>\s*<dialogue>(?P<dialogue>.*)</dialogue>\s*", re.S)


def parse_observation(text: str) -> TextObservation:
    """Read an observation written by :func:`format_observation`; raises :class:`TextInputError` when
    ``text`` is not one."""
    match = _OBSERVATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise TextInputError("expected '<input> c v c v c v </input> <dialogue> YOU: ... <eos> THEM: ... <eos> "
                             "</dialogue>'")
    try:
        numbers = [int(t) for t in match["input"].split()]
    except ValueError:
        numbers = []
    if len(numbers) != 2 * NUM_ITEM_TYPES:
        raise TextInputError(f"<input> must hold 'count value' for book, hat and ball (6 integers), "
                             f"got {match['input'].strip()!r}")
    messages = []
    for chunk in match["dialogue"].split("<eos>"):
        chunk = chunk.strip()
        if not chunk:
            continue
        speaker, sep, body = chunk.partition(":")
        if not sep or speaker not in _SPEAKERS:
            raise TextInputError(f"each message must start with 'YOU:' or 'THEM:', got {chunk[:40]!r}")
        messages.append((_SPEAKERS.index(speaker), body.strip()))
    counts, values = tuple(numbers[0::2]), tuple(numbers[1::2])
    selecting = any(body == SELECTION_TOKEN for _, body in messages)
    return TextObservation(counts, values, tuple(messages), selecting)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# One game
# --------------------------------------------------------------------------------------------------


@dataclass
class TextNegotiationState:
    """One text game: talk, then secret selections (see the module docstring). Pure Python."""

    ctx: Context
    first_player: int = 0
    max_messages: int = DEFAULT_MAX_MESSAGES
    max_utterance_chars: int = DEFAULT_MAX_UTTERANCE_CHARS
    no_deal_reward: float = 0.0
    messages: list[tuple[int, str]] = field(default_factory=list)  # (speaker, text), <selection> included
    selections: list[Any] = field(default_factory=lambda: [None, None])  # split, or NO_AGREEMENT
    current_player: int = 0
    selecting: bool = False
    terminal: bool = False
    ended_talk: int | None = None

    def __post_init__(self) -> None:
        if self.first_player not in (0, 1):
            raise ValueError(f"first_player must be 0 or 1, got {self.first_player!r}")
        if self.max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {self.max_messages}")
        self.current_player = self.first_player

    @property
    def utterances(self) -> list[tuple[int, str]]:
        return [(s, t) for s, t in self.messages if t != SELECTION_TOKEN]

    def observation(self, player: int) -> str:
        """``player``'s observation string."""
        seen = [(0 if s == player else 1, t) for s, t in self.messages]
        return format_observation(self.ctx.counts, self.ctx.values[player], seen)

    def send(self, text: str) -> None:
        """The current player's action: an utterance or ``<selection>`` while talking, a selection after.

        Raises :class:`TextInputError` (the game unchanged) for bad input.
        """
        if self.terminal:
            raise TextInputError("the game is over")
        player = self.current_player
        if self.selecting:
            split = parse_selection(text, self.ctx.counts)
            self.selections[player] = NO_AGREEMENT if split is None else split
            if all(s is not None for s in self.selections):
                self.terminal = True
            self.current_player = 1 - player
            return
        if isinstance(text, str) and text.strip() == SELECTION_TOKEN:
            self.messages.append((player, SELECTION_TOKEN))
            self.ended_talk = player
            self.selecting = True
            self.current_player = 1 - player
            return
        self.messages.append((player, normalise_utterance(text, self.max_utterance_chars)))
        if len(self.messages) >= self.max_messages:
            # The limit ends the talk as if the next player had sent <selection>; the sender selects first.
            self.messages.append((1 - player, SELECTION_TOKEN))
            self.ended_talk = 1 - player
            self.selecting = True
            return
        self.current_player = 1 - player

    def deal(self) -> tuple[int, int, int] | None:
        """What agent 0 keeps when both selections are complementary, else None."""
        a, b = self.selections
        if not self.terminal or a == NO_AGREEMENT or b == NO_AGREEMENT or a is None or b is None:
            return None
        if all(x + y == c for x, y, c in zip(a, b, self.ctx.counts)):
            return tuple(a)
        return None

    def returns(self) -> tuple[float, float]:
        metrics = outcome_metrics(self.ctx, self.deal(), no_deal_reward=self.no_deal_reward)
        return metrics["scores"]

    def metrics(self) -> dict[str, Any]:
        """Outcome metrics of the coarse game, the selections and the parse-failure rate of the talk."""
        utterances = self.utterances
        failures = sum(parse_utterance_cached(t, self.ctx.counts) is None for _, t in utterances)
        info = dict(outcome_metrics(self.ctx, self.deal(), turns=len(utterances), no_deal_reward=self.no_deal_reward))
        info.update(deal=self.deal(), messages=len(utterances), parse_failures=failures,
                    parse_failure_rate=failures / len(utterances) if utterances else 0.0,
                    selections=tuple(None if s in (None, NO_AGREEMENT) else tuple(s) for s in self.selections))
        return info

    def transcript(self, names: Sequence[str] = AGENTS) -> str:
        lines = [f"{names[s]}: {t}" for s, t in self.messages]
        for player in (0, 1):
            sel = self.selections[player]
            if sel is not None:
                lines.append(f"{names[player]} selects: {format_selection(None if sel == NO_AGREEMENT else sel)}")
        if self.terminal:
            deal = self.deal()
            if deal is None:
                lines.append("No deal: the selections are not complementary.")
            else:
                s0, s1 = self.returns()
                lines.append(f"Deal: {names[0]} {s0:g} points, {names[1]} {s1:g} points.")
        return "\n".join(lines)


def observation_length(max_messages: int, max_utterance_chars: int) -> int:
    """The longest observation string a game with these limits can produce."""
    head = len(format_observation((4, 4, 4), (10, 10, 10), []))
    return head + (max_messages + 1) * (len("THEM: ") + max(max_utterance_chars, len(SELECTION_TOKEN)) + len(" <eos> "))


def _check_args(max_messages: int, max_utterance_chars: int, first_player: int | None, bad_input: str,
                render_mode: str | None) -> None:
    for value, what in ((max_messages, "max_messages"), (max_utterance_chars, "max_utterance_chars")):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if first_player not in (None, 0, 1):
        raise ValueError(f"first_player must be None (drawn per episode), 0 or 1; got {first_player!r}")
    if bad_input not in BAD_INPUT_MODES:
        raise ValueError(f"bad_input must be one of {BAD_INPUT_MODES}, got {bad_input!r}")
    check_render_mode(render_mode)


class _TextGameBase:
    """Arguments, spaces, seeding and rendering shared by the PettingZoo and Gymnasium text envs."""

    def _setup(self, max_messages: int, max_utterance_chars: int, contexts, first_player: int | None,
               no_deal_reward: float, bad_input: str, illegal_penalty: float, render_mode: str | None) -> None:
        _check_args(max_messages, max_utterance_chars, first_player, bad_input, render_mode)
        self.max_messages = int(max_messages)
        self.max_utterance_chars = int(max_utterance_chars)
        self.contexts = resolve_contexts(contexts)
        self.first_player = first_player
        self.no_deal_reward = float(no_deal_reward)
        self.bad_input = bad_input
        self.illegal_penalty = float(illegal_penalty)
        self.render_mode = render_mode
        self.text_observation_space = spaces.Text(observation_length(self.max_messages, self.max_utterance_chars),
                                                  min_length=0, charset=TEXT_CHARSET)
        self.text_action_space = spaces.Text(max(self.max_utterance_chars, len(NO_AGREEMENT)), charset=TEXT_CHARSET)
        self.state: TextNegotiationState | None = None
        self.bad_input_by: int | None = None

    def _new_state(self, rng: np.random.Generator, options: dict | None) -> TextNegotiationState:
        options = options or {}
        ctx = options.get("context")
        if ctx is None:
            ctx = draw_context(rng, self.contexts)
        elif not isinstance(ctx, Context):
            raise TypeError(f"options['context'] must be a Context, got {type(ctx).__name__}")
        first = options.get("first_player", self.first_player)
        if first is None:
            first = int(rng.integers(2))
        elif first not in (0, 1):
            raise ValueError(f"first_player must be 0 or 1, got {first!r}")
        self.bad_input_by = None
        self.state = TextNegotiationState(ctx, int(first), self.max_messages, self.max_utterance_chars,
                                          self.no_deal_reward)
        return self.state

    def _send(self, text: Any) -> None:
        """The current player's action; bad input raises or ends the game with the penalty."""
        try:
            self.state.send(text)
        except TextInputError:
            if self.bad_input == "raise":
                raise
            self.bad_input_by = self.state.current_player
            self.state.terminal = True

    def _final_rewards(self) -> tuple[float, float]:
        if self.bad_input_by is not None:
            return tuple(self.illegal_penalty if p == self.bad_input_by else self.no_deal_reward for p in (0, 1))
        return self.state.returns()

    def _final_info(self) -> dict[str, Any]:
        info = self.state.metrics()
        info["bad_input"] = None if self.bad_input_by is None else AGENTS[self.bad_input_by]
        if self.bad_input_by is not None:
            info["deal"] = None
        return info

    def _render_text(self, names: Sequence[str] = AGENTS) -> str:
        if self.state is None:
            return "(no game yet: call reset())"
        parts = [context_header(self.state.ctx, names), self.state.transcript(names)]
        if self.bad_input_by is not None:
            parts.append(f"No deal: {names[self.bad_input_by]} sent bad input.")
        return "\n".join(p for p in parts if p)

    def render(self) -> str | None:
        return render_text(self.render_mode, lambda: self._render_text(self._render_names()))

    def _render_names(self) -> Sequence[str]:
        return AGENTS

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------------
# PettingZoo AEC
# --------------------------------------------------------------------------------------------------


class raw_env(_TextGameBase, AECEnv):  # noqa: N801 -- PettingZoo naming convention
    """Deal or No Deal in text, two agents taking turns (PettingZoo AEC). See the module docstring."""

    metadata: dict[str, Any] = {"render_modes": list(RENDER_MODES), "name": "negotiation_text_v0",
                                "is_parallelizable": False}

    def __init__(self, max_messages: int = DEFAULT_MAX_MESSAGES,
                 max_utterance_chars: int = DEFAULT_MAX_UTTERANCE_CHARS,
                 contexts: None | str | Path | Sequence[Context] = None, first_player: int | None = None,
                 no_deal_reward: float = 0.0, bad_input: str = "raise", illegal_penalty: float = -1.0,
                 render_mode: str | None = None) -> None:
        AECEnv.__init__(self)
        self._setup(max_messages, max_utterance_chars, contexts, first_player, no_deal_reward, bad_input,
                    illegal_penalty, render_mode)
        self.possible_agents = list(AGENTS)
        self.observation_spaces = dict.fromkeys(self.possible_agents, self.text_observation_space)
        self.action_spaces = dict.fromkeys(self.possible_agents, self.text_action_space)
        self.np_random, self.np_random_seed = seeding.np_random(None)

    def observation_space(self, agent: str) -> spaces.Text:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Text:
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None:
            self.np_random, self.np_random_seed = seeding.np_random(seed)
        state = self._new_state(self.np_random, options)
        self.agents = self.possible_agents[:]
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {a: {} for a in self.agents}
        self.agent_selection = self.agents[state.current_player]

    def observe(self, agent: str) -> str:
        return TextObservationString(self.state.observation(self.possible_agents.index(agent)))

    def step(self, action) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        player = self.possible_agents.index(agent)
        self._send(action)
        state = self.state
        if state.terminal:
            self.rewards = dict(zip(self.agents, self._final_rewards()))
            self.terminations = dict.fromkeys(self.agents, True)
            info = self._final_info()
            self.infos = {a: dict(info) for a in self.agents}
            self.agent_selection = self.agents[1 - player]
        else:
            self.agent_selection = self.agents[state.current_player]
        self._accumulate_rewards()
        if self.render_mode == "human":
            self.render()


def env(**kwargs) -> AECEnv:
    """The AEC environment in PettingZoo's order-enforcing wrapper (see the module docstring)."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))


# --------------------------------------------------------------------------------------------------
# Gymnasium: a learner against a text partner
# --------------------------------------------------------------------------------------------------


class NegotiationTextGymEnv(_TextGameBase, gymnasium.Env):
    """A learner negotiating in text with a partner (``parley/NegotiationText-v0``).

    :param partner: a text player (``reply(observation) -> str``, see
        :class:`~parley.envs.realiser.TextPolicy`) or a coarse-act :class:`~parley.envs.policy.Policy`,
        which plays through the realiser (:class:`~parley.envs.realiser.ActTextPlayer`). Partners named by
        a string are resolved by ``gymnasium.make("parley/NegotiationText-v0", partner="boulware")``
        through :func:`parley.text.make_text_env`, not here.
    :param learner_side: 0, 1 or None (drawn per episode)

    Observations and actions are text, as in the PettingZoo env; every observation is taken when the
    learner is to act (an utterance, ``<selection>``, or its selection). The reward is the learner's
    score at the end; the final ``info`` adds ``score``, ``partner_score``, ``learner_side`` and
    ``partner`` to the metrics. The other arguments are those of the PettingZoo env.
    """

    metadata: dict[str, Any] = {"render_modes": list(RENDER_MODES)}

    def __init__(self, partner: TextPolicy | Policy, *, learner_side: int | None = None,
                 max_messages: int = DEFAULT_MAX_MESSAGES, max_utterance_chars: int = DEFAULT_MAX_UTTERANCE_CHARS,
                 contexts: None | str | Path | Sequence[Context] = None, first_player: int | None = None,
                 no_deal_reward: float = 0.0, bad_input: str = "raise", illegal_penalty: float = -1.0,
                 render_mode: str | None = None) -> None:
        if isinstance(partner, str):
            raise TypeError(f"partner {partner!r} is a name: build the env with gymnasium.make("
                            "'parley/NegotiationText-v0', partner=NAME), which resolves names, or pass a player")
        if learner_side not in (None, 0, 1):
            raise ValueError(f"learner_side must be None (drawn per episode), 0 or 1; got {learner_side!r}")
        self._setup(max_messages, max_utterance_chars, contexts, first_player, no_deal_reward, bad_input,
                    illegal_penalty, render_mode)
        self.partner = as_text_player(partner)
        self.learner_side = learner_side
        self.side = 0
        self.observation_space = self.text_observation_space
        self.action_space = self.text_action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None and callable(getattr(self.partner, "seed", None)):
            self.partner.seed(int(self.np_random.integers(2**31)))
        options = dict(options or {})
        side = options.pop("learner_side", self.learner_side)
        if side not in (None, 0, 1):
            raise ValueError(f"learner_side must be None, 0 or 1; got {side!r}")
        self.side = int(self.np_random.integers(2)) if side is None else int(side)
        self._new_state(self.np_random, options)
        self._partner_turns()
        return self.state.observation(self.side), {"learner_side": self.side}

    def step(self, action: str):
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        if self.state.terminal:
            raise RuntimeError("the episode is over; call reset() to start a new one")
        self._send(action)
        self._partner_turns()
        terminated = self.state.terminal
        reward, info = 0.0, {}
        if terminated:
            rewards = self._final_rewards()
            reward = float(rewards[self.side])
            info = self._final_info()
            info.update(learner_side=self.side, score=reward, partner_score=float(rewards[1 - self.side]),
                        partner=str(getattr(self.partner, "name", type(self.partner).__name__)))
        if self.render_mode == "human":
            self.render()
        return self.state.observation(self.side), reward, terminated, False, info

    def _partner_turns(self) -> None:
        state = self.state
        while not state.terminal and state.current_player != self.side:
            reply = self.partner.reply(state.observation(state.current_player))
            try:
                state.send(reply)
            except TextInputError as err:
                name = getattr(self.partner, "name", type(self.partner).__name__)
                raise RuntimeError(f"partner {name!r} sent bad input {reply!r}: {err}") from err

    def _render_names(self) -> Sequence[str]:
        names = ["", ""]
        names[self.side] = "learner"
        names[1 - self.side] = f"partner ({getattr(self.partner, 'name', 'partner')})"
        return names
