"""Deal or No Deal bargaining as a single-agent Gymnasium environment: a learner against a partner policy.

+--------------------+----------------------------------------------------------------+
| Gymnasium id       | ``parley/Negotiation-v0`` (``import parley`` registers it)     |
+--------------------+----------------------------------------------------------------+
| Actions            | Discrete(252), same layout as ``negotiation_v0``               |
+--------------------+----------------------------------------------------------------+
| Observations       | Dict: ``observation`` (16 + 2 * max_turns,) float32,           |
|                    | ``action_mask`` (252,) int8 -- the learner's view              |
+--------------------+----------------------------------------------------------------+
| Reward             | the learner's score at the end (0..10), ``no_deal_reward``     |
|                    | without a deal, 0 before the end                               |
+--------------------+----------------------------------------------------------------+
| Action masking     | ``env.action_masks()`` (sb3-contrib ``MaskablePPO``)           |
+--------------------+----------------------------------------------------------------+
| Vector version     | ``gymnasium.make_vec("parley/Negotiation-v0", num_envs=N,      |
|                    | vectorization_mode="vector_entry_point")``                     |
+--------------------+----------------------------------------------------------------+

The game, the action indices and the observation layout are those of :mod:`parley.envs.negotiation_v0`
(see its env card). Here the learner plays one side -- drawn per episode unless ``learner_side`` fixes
it -- and a partner policy plays the other: any object with the :class:`~parley.envs.policy.Policy`
interface. ``gymnasium.make("parley/Negotiation-v0", partner="boulware")`` also takes a scripted
partner's name: the registered entry point (:func:`parley.entry_points.make_negotiation_env`) builds it
with :func:`parley.agents.partners.scripted.make_partner` (``partner_kwargs`` are its parameters).

Each ``step`` applies the learner's act and then, if the game goes on, the partner's reply, so every
observation is taken when it is the learner's turn. When the partner opens, ``reset`` plays its first
act. A game the partner ends before the learner's first act (it walks away at once) is replayed with a
freshly drawn context; ``info["replayed_games"]`` counts them.

Every ending is a termination (deal, walk-away, or ``max_turns`` acts); ``truncated`` is always False.
The final ``info`` holds the outcome metrics of ``negotiation_v0`` plus ``learner_side``, ``score``
(the learner's), ``partner_score`` and ``partner``.

Arguments
---------
``NegotiationGymEnv(partner, learner_side=None, max_turns=10, contexts=None, first_player=None,
no_deal_reward=0.0, illegal_action="raise", illegal_penalty=-1.0, render_mode=None)``

* ``partner``: a Policy (``gymnasium.make`` also takes a scripted partner's name, ``partner="random"``
  by default, and ``partner_kwargs`` for ``make_partner``);
* ``learner_side``: None (drawn per episode), 0 (the learner is ``agent_0``) or 1;
* ``first_player``: None (drawn per episode) or which side opens (0 or 1);
* ``illegal_action``: ``"raise"`` (an illegal learner act raises ``IllegalActionError``) or
  ``"penalize"`` (the episode ends with reward ``illegal_penalty``);
* the rest as in ``negotiation_v0``.

``reset(seed=...)`` seeds the context, side and first-mover draws and re-seeds the partner (when it has
a ``seed`` method). ``options`` may fix ``context``, ``first_player`` and ``learner_side`` for one episode.

Version history
---------------
* v0: initial release.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from parley.envs._adapter_common import (
    MAX_REPLAYS,
    check_common_args,
    check_partner,
    context_header,
    draw_context,
    observation_space,
    outcome_info,
    partner_name,
    render_text,
    resolve_contexts,
)
from parley.envs.negotiation import (
    DEFAULT_MAX_TURNS,
    NUM_ACTIONS,
    Context,
    IllegalActionError,
    NegotiationState,
    decode_act,
)
from parley.envs.policy import Policy

__all__ = ["NegotiationGymEnv"]


class NegotiationGymEnv(gymnasium.Env):
    """A learner negotiating with a partner policy (see the module docstring for the env card).

    :param partner: the partner's :class:`~parley.envs.policy.Policy` (for a scripted partner by name use
        ``gymnasium.make("parley/Negotiation-v0", partner=name)`` or ``make_partner(name)``)
    :param learner_side: the learner's side (0 or 1), or None to draw it per episode
    :param max_turns: acts before the game ends without a deal
    :param contexts: None (sampled), a context file path, or a list of :class:`Context`
    :param first_player: the side that opens (0 or 1), or None to draw it per episode
    :param no_deal_reward: both sides' score without a deal
    :param illegal_action: ``"raise"`` or ``"penalize"``
    :param illegal_penalty: the learner's reward for an illegal act under ``"penalize"``
    :param render_mode: ``"ansi"``, ``"human"`` or None
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi", "human"]}

    def __init__(self, partner: Policy, *, learner_side: int | None = None, max_turns: int = DEFAULT_MAX_TURNS,
                 contexts: None | str | Path | Sequence[Context] = None, first_player: int | None = None,
                 no_deal_reward: float = 0.0, illegal_action: str = "raise", illegal_penalty: float = -1.0,
                 render_mode: str | None = None) -> None:
        check_common_args(max_turns, first_player, illegal_action, render_mode)
        if learner_side not in (None, 0, 1):
            raise ValueError(f"learner_side must be None (drawn per episode), 0 or 1; got {learner_side!r}")
        self.partner = check_partner(partner)
        self.learner_side = learner_side
        self.max_turns = int(max_turns)
        self.contexts = resolve_contexts(contexts)
        self.first_player = first_player
        self.no_deal_reward = float(no_deal_reward)
        self.illegal_action = illegal_action
        self.illegal_penalty = float(illegal_penalty)
        self.render_mode = render_mode
        self.observation_space = observation_space(self.max_turns)
        self.action_space = spaces.Discrete(NUM_ACTIONS)
        self.state: NegotiationState | None = None
        self.side = 0
        self.illegal = False
        self.replayed_games = 0

    # ---------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None and callable(getattr(self.partner, "seed", None)):
            self.partner.seed(int(self.np_random.integers(2**31)))
        options = options or {}
        side = options.get("learner_side", self.learner_side)
        first = options.get("first_player", self.first_player)
        for value, what in ((side, "learner_side"), (first, "first_player")):
            if value not in (None, 0, 1):
                raise ValueError(f"{what} must be None, 0 or 1; got {value!r}")
        fixed_ctx = options.get("context")
        if fixed_ctx is not None and not isinstance(fixed_ctx, Context):
            raise TypeError(f"options['context'] must be a Context, got {type(fixed_ctx).__name__}")
        self.replayed_games = 0
        for _ in range(MAX_REPLAYS):
            ctx = fixed_ctx if fixed_ctx is not None else draw_context(self.np_random, self.contexts)
            self.side = int(self.np_random.integers(2)) if side is None else int(side)
            opener = int(self.np_random.integers(2)) if first is None else int(first)
            self.state = NegotiationState(ctx, max_turns=self.max_turns, first_player=opener,
                                          no_deal_reward=self.no_deal_reward)
            self.illegal = False
            self._partner_turn()
            if not self.state.terminal:
                break
            self.replayed_games += 1
        else:
            raise RuntimeError(f"the partner {partner_name(self.partner)!r} ended {MAX_REPLAYS} games in a row "
                               "before the learner could act")
        if self.render_mode == "human":
            self.render()
        return self._obs(), {"learner_side": self.side, "replayed_games": self.replayed_games}

    def step(self, action):
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        if self.state.terminal:
            raise RuntimeError("the episode is over; call reset() to start a new one")
        try:
            self.state.apply_action(action)
        except IllegalActionError:
            if self.illegal_action == "raise":
                raise
            self.illegal = True
            self.state.terminal = True
        self._partner_turn()
        terminated = self.state.terminal
        reward = 0.0
        info: dict[str, Any] = {}
        if terminated:
            reward = self.illegal_penalty if self.illegal else float(self.state.returns()[self.side])
            info = self._final_info()
        if self.render_mode == "human":
            self.render()
        return self._obs(), reward, terminated, False, info

    def action_masks(self) -> np.ndarray:
        """Bool mask (252,) of the learner's legal actions, for sb3-contrib's MaskablePPO."""
        if self.state is None:
            raise RuntimeError("call reset() before action_masks()")
        return self.state.legal_action_mask(self.side).astype(bool)

    def render(self) -> str | None:
        return render_text(self.render_mode, self._transcript)

    def _transcript(self) -> str:
        if self.state is None:
            return "(no game yet: call reset())"
        names = ["", ""]
        names[self.side] = "learner"
        names[1 - self.side] = f"partner ({partner_name(self.partner)})"
        parts = [context_header(self.state.ctx, names), self.state.transcript(names)]
        if self.illegal:
            parts.append("No deal: the learner made an illegal move.")
        return "\n".join(p for p in parts if p)

    # ---------------------------------------------------------------------------------------------

    def _obs(self) -> dict[str, np.ndarray]:
        return {"observation": self.state.observation(self.side),
                "action_mask": self.state.legal_action_mask(self.side)}

    def _partner_turn(self) -> None:
        state = self.state
        if state.terminal or state.current_player == self.side:
            return
        other = 1 - self.side
        action = int(self.partner.act(state.observation(other), state.legal_action_mask(other)))
        try:
            state.apply_action(action)
        except IllegalActionError as err:
            kind, split = decode_act(action) if 0 <= action < NUM_ACTIONS else (f"action {action}", None)
            raise RuntimeError(f"partner {partner_name(self.partner)!r} chose an illegal act "
                               f"({kind}{'' if split is None else ' ' + str(split)}): {err}") from err

    def _final_info(self) -> dict[str, Any]:
        info = outcome_info(self.state, ("agent_0", "agent_1")[self.side] if self.illegal else None)
        scores = info["scores"]
        info.update(learner_side=self.side, score=self.illegal_penalty if self.illegal else scores[self.side],
                    partner_score=self.no_deal_reward if self.illegal else scores[1 - self.side],
                    partner=partner_name(self.partner))
        return info
