"""Deal or No Deal bargaining as a two-player PettingZoo environment (AEC and parallel).

+--------------------+----------------------------------------------------------------+
| Import             | ``from parley.envs import negotiation_v0``                     |
+--------------------+----------------------------------------------------------------+
| Actions            | Discrete(252)                                                  |
+--------------------+----------------------------------------------------------------+
| Parallel API       | Yes (``negotiation_v0.parallel_env``; only the mover's act     |
|                    | counts in each step)                                           |
+--------------------+----------------------------------------------------------------+
| Agents             | ``agents = ["agent_0", "agent_1"]``                            |
+--------------------+----------------------------------------------------------------+
| Action shape       | (1,)                                                           |
+--------------------+----------------------------------------------------------------+
| Action values      | 0 .. 251                                                       |
+--------------------+----------------------------------------------------------------+
| Observation shape  | Dict: ``observation`` (16 + 2 * max_turns,) float32,           |
|                    | ``action_mask`` (252,) int8                                    |
+--------------------+----------------------------------------------------------------+
| PettingZoo id      | ``parley/negotiation-v0`` (``pettingzoo.make("aec", ...)``)    |
+--------------------+----------------------------------------------------------------+

Two agents split three item types (book, hat, ball) by exchanging coarse dialogue acts, following the
rules of Lewis et al. (2017), "Deal or No Deal? End-to-End Learning for Negotiation Dialogues", played
with dialogue acts as Kwon et al. (2021) do. The rules themselves live in :mod:`parley.envs.negotiation`;
this module only adapts them to PettingZoo.

Each episode draws a context: item counts (1-4 of each type, 5-7 items) and each agent's private values
(each agent's items are worth 10 in total). ``agent_0`` holds ``ctx.values[0]`` and ``agent_1`` holds
``ctx.values[1]``. The first mover is drawn from the seed unless ``first_player`` fixes it; turns
alternate.

Actions
-------
One Discrete(252) space with a fixed layout (independent of the context):

* ``0 .. 124``    ``propose`` split ``(a, b, c)`` at index ``25 a + 5 b + c``; the split is what the
  speaker keeps, the partner would get the rest;
* ``125 .. 249``  ``insist`` on split ``(a, b, c)`` at index ``125 + 25 a + 5 b + c`` (a firm proposal);
* ``250``         ``agree`` -- accept the partner's standing proposal (legal only when there is one);
* ``251``         ``walk_away`` -- end the game with no deal.

A split is legal when each entry is at most that item's count. ``encode_act`` / ``decode_act`` in
:mod:`parley.envs.negotiation` convert between acts and indices.

Observations
------------
A dict ``{"observation": float32 (16 + 2H,), "action_mask": int8 (252,)}`` with ``H = max_turns``;
the vector is seen from the observing agent:

* ``[0:3]`` item counts; ``[3:6]`` own values;
* ``[6]`` 1 if the partner has a standing proposal; ``[7:10]`` the items the observer would receive
  under it (0 if none);
* ``[10]`` 1 if the observer has proposed; ``[11:14]`` the observer's last proposal (items it keeps);
* ``[14]`` turn fraction (acts so far / ``max_turns``); ``[15]`` 1 if the observer moved first;
* ``[16:16+H]`` act history, oldest first, as action index + 1 (0 = padding);
* ``[16+H:16+2H]`` who sent each act: 1 = the observer, 2 = the partner, 0 = padding.

The action mask marks the legal actions of the agent to move; the waiting agent's mask is all zero.

Rewards
-------
Zero until the game ends. With a deal each agent receives the value of the items it gets (0..10);
without one (walk away, or ``max_turns`` acts without agreement) both receive ``no_deal_reward``.
Every ending is a termination (the rules end the game; nothing is cut short), so ``truncations`` stay
False. At the end ``infos[agent]`` holds the outcome metrics (scores, joint, agreement,
pareto_optimal, pareto_distance, nash_product, max_nash_product, turns) plus ``deal`` (what agent_0
keeps, or None), ``walked_away_by`` and ``illegal_action``.

Illegal actions
---------------
``illegal_action="raise"`` (default) raises :class:`~parley.envs.negotiation.IllegalActionError` (a
``ValueError``) naming the act and the legal ones, leaving the game unchanged.
``illegal_action="penalize"`` ends the game without a deal instead: the offender receives
``illegal_penalty`` and the other agent ``no_deal_reward``.

Arguments
---------
``negotiation_v0.env(max_turns=10, contexts=None, render_mode=None, first_player=None,
no_deal_reward=0.0, illegal_action="raise", illegal_penalty=-1.0)``

* ``max_turns``: acts before the game ends without a deal;
* ``contexts``: None (sample with :func:`~parley.envs.negotiation.sample_context`), a path read by
  :func:`~parley.envs.contexts.load_contexts`, or a list of :class:`Context` (one is drawn per episode;
  a single one is used every episode);
* ``render_mode``: ``"ansi"`` (``render()`` returns the transcript), ``"human"`` (prints it) or None;
* ``first_player``: None (drawn per episode), 0 or 1;
* ``no_deal_reward``, ``illegal_action``, ``illegal_penalty``: see above.

``reset(seed=None, options=None)`` seeds the context and first-mover draws; ``options`` may hold
``{"context": Context, "first_player": 0 | 1}`` for one episode.

Version history
---------------
* v0: initial release.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import wrappers
from pettingzoo.utils.env_logger import EnvLogger

from parley.envs._adapter_common import (
    AGENTS,
    RENDER_MODES,
    check_common_args,
    context_header,
    draw_context,
    observation_space,
    outcome_info,
    render_text,
    resolve_contexts,
)
from parley.envs.negotiation import (
    DEFAULT_MAX_TURNS,
    NUM_ACTIONS,
    Context,
    IllegalActionError,
    NegotiationState,
)

__all__ = ["env", "raw_env", "parallel_env", "NegotiationParallelEnv", "observation_space",
           "resolve_contexts", "IllegalActionError"]


class _NegotiationBase:
    """Construction, seeding and episode set-up shared by the AEC and parallel environments."""

    metadata: dict[str, Any] = {"render_modes": list(RENDER_MODES), "name": "negotiation_v0",
                                "is_parallelizable": False}

    def _setup(self, max_turns: int, contexts, render_mode: str | None, first_player: int | None,
               no_deal_reward: float, illegal_action: str, illegal_penalty: float) -> None:
        check_common_args(max_turns, first_player, illegal_action, render_mode)
        self.max_turns = int(max_turns)
        self.contexts = resolve_contexts(contexts)
        self.render_mode = render_mode
        self.first_player = first_player
        self.no_deal_reward = float(no_deal_reward)
        self.illegal_action = illegal_action
        self.illegal_penalty = float(illegal_penalty)
        self.possible_agents = list(AGENTS)
        self._obs_spaces = {a: observation_space(self.max_turns) for a in self.possible_agents}
        self._act_spaces = {a: spaces.Discrete(NUM_ACTIONS) for a in self.possible_agents}
        self.np_random, self.np_random_seed = seeding.np_random(None)
        self.state: NegotiationState | None = None
        self.illegal_by: str | None = None

    def observation_space(self, agent: str) -> spaces.Dict:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self._act_spaces[agent]

    def _new_game(self, seed: int | None, options: dict | None) -> NegotiationState:
        if seed is not None:
            self.np_random, self.np_random_seed = seeding.np_random(seed)
        options = options or {}
        ctx = options.get("context")
        if ctx is None:
            ctx = draw_context(self.np_random, self.contexts)
        elif not isinstance(ctx, Context):
            raise TypeError(f"options['context'] must be a Context, got {type(ctx).__name__}")
        first = options.get("first_player", self.first_player)
        if first is None:
            first = int(self.np_random.integers(2))
        elif first not in (0, 1):
            raise ValueError(f"first_player must be 0 or 1, got {first!r}")
        self.illegal_by = None
        self.state = NegotiationState(ctx, max_turns=self.max_turns, first_player=int(first),
                                      no_deal_reward=self.no_deal_reward)
        return self.state

    def _observe(self, player: int) -> dict[str, np.ndarray]:
        return {"observation": self.state.observation(player), "action_mask": self.state.legal_action_mask(player)}

    def _play(self, agent: str, action) -> None:
        """Apply ``agent``'s act; on an illegal act raise, or end the game with the penalty."""
        if action is None:
            raise ValueError(f"{agent} must act (0..{NUM_ACTIONS - 1}); None is only for agents that are done")
        try:
            self.state.apply_action(action)
        except IllegalActionError:
            if self.illegal_action == "raise":
                raise
            self.illegal_by = agent
            self.state.terminal = True

    def _final_rewards(self) -> dict[str, float]:
        if self.illegal_by is not None:
            return {a: (self.illegal_penalty if a == self.illegal_by else self.no_deal_reward)
                    for a in self.possible_agents}
        r0, r1 = self.state.returns()
        return {"agent_0": r0, "agent_1": r1}

    def _transcript(self) -> str:
        if self.state is None:
            return "(no game yet: call reset())"
        lines = [context_header(self.state.ctx), self.state.transcript(self.possible_agents)]
        if self.illegal_by is not None:
            lines.append(f"No deal: {self.illegal_by} made an illegal move.")
        return "\n".join(line for line in lines if line)

    def render(self) -> str | None:
        return render_text(self.render_mode, self._transcript)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------------
# AEC
# --------------------------------------------------------------------------------------------------


class raw_env(_NegotiationBase, AECEnv):  # noqa: N801 -- PettingZoo naming convention
    """Deal or No Deal bargaining, two agents taking turns (PettingZoo AEC). See the module docstring."""

    def __init__(self, max_turns: int = DEFAULT_MAX_TURNS, contexts: None | str | Path | Sequence[Context] = None,
                 render_mode: str | None = None, first_player: int | None = None, no_deal_reward: float = 0.0,
                 illegal_action: str = "raise", illegal_penalty: float = -1.0) -> None:
        AECEnv.__init__(self)
        self._setup(max_turns, contexts, render_mode, first_player, no_deal_reward, illegal_action,
                    illegal_penalty)

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        state = self._new_game(seed, options)
        self.agents = self.possible_agents[:]
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {a: {} for a in self.agents}
        self.agent_selection = self.agents[state.current_player]

    def observe(self, agent: str) -> dict[str, np.ndarray]:
        return self._observe(self.possible_agents.index(agent))

    def step(self, action) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        self._play(agent, action)
        state = self.state
        if state.terminal:
            self.rewards = self._final_rewards()
            self.terminations = dict.fromkeys(self.agents, True)
            info = outcome_info(state, self.illegal_by)
            self.infos = {a: dict(info) for a in self.agents}
        self.agent_selection = self.agents[state.current_player if not state.terminal
                                           else 1 - self.possible_agents.index(agent)]
        self._accumulate_rewards()
        if self.render_mode == "human":
            self.render()


class _OrderEnforcingWrapper(wrappers.OrderEnforcingWrapper):
    """PettingZoo's public order-enforcing wrapper with direct ``last``, ``step`` and ``agent_iter``.

    The generic versions read each attribute through the wrapper's ``__getattr__`` checks, which costs
    more than a whole step of this small game (``benchmarks/env_throughput.py`` measures both: the
    generic wrapper gives about a quarter fewer agent-steps per second). These make the same checks once
    and call the env directly. ``tests/test_negotiation_envs.py`` plays many random games through this
    wrapper and through ``pettingzoo.utils.wrappers.OrderEnforcingWrapper`` side by side and checks that
    observations, rewards, terminations, truncations, infos and the misuse errors are the same.
    """

    def last(self, observe: bool = True):
        if not self._has_reset:
            raise AttributeError("last() cannot be called before reset()")
        return self.env.last(observe)

    def step(self, action) -> None:
        if not self._has_reset:
            EnvLogger.error_step_before_reset()
        elif not self.env.agents:
            self._has_updated = True
            EnvLogger.warn_step_after_terminated_truncated()
        else:
            self._has_updated = True
            self.env.step(action)

    def __str__(self) -> str:
        return str(self.env)

    def agent_iter(self, max_iter: int = 2**63) -> _AgentIterator:
        if not self._has_reset:
            EnvLogger.error_agent_iter_before_reset()
        return _AgentIterator(self, max_iter)


class _AgentIterator:
    """``agent_iter`` with the contract of PettingZoo's order-enforcing iterator: the agent to move until
    no agent is left or ``max_iter`` agents were given, with a ``step`` or ``reset`` between two agents."""

    def __init__(self, wrapper: _OrderEnforcingWrapper, max_iter: int) -> None:
        self.wrapper = wrapper
        self.inner = wrapper.env
        self.iters_til_term = max_iter

    def __iter__(self) -> _AgentIterator:
        return self

    def __next__(self) -> str:
        inner = self.inner
        if not inner.agents or self.iters_til_term <= 0:
            raise StopIteration
        self.iters_til_term -= 1
        assert self.wrapper._has_updated, "need to call step() or reset() in a loop over `agent_iter`"
        self.wrapper._has_updated = False
        return inner.agent_selection


def env(**kwargs) -> AECEnv:
    """The AEC environment wrapped in PettingZoo's order-enforcing wrapper (see the module docstring)."""
    return _OrderEnforcingWrapper(raw_env(**kwargs))


# --------------------------------------------------------------------------------------------------
# Parallel
# --------------------------------------------------------------------------------------------------


class NegotiationParallelEnv(_NegotiationBase, ParallelEnv):
    """The same game through PettingZoo's parallel API.

    Both agents stay in ``agents`` until the game ends and both receive observations every step, but the
    game is turn-based: only the act of the agent to move (``infos[agent]["active_agent"]``, the agent
    whose ``action_mask`` is non-zero) is applied; the waiting agent's action is ignored and may be left
    out of the ``actions`` dict.
    """

    def __init__(self, max_turns: int = DEFAULT_MAX_TURNS, contexts: None | str | Path | Sequence[Context] = None,
                 render_mode: str | None = None, first_player: int | None = None, no_deal_reward: float = 0.0,
                 illegal_action: str = "raise", illegal_penalty: float = -1.0) -> None:
        self._setup(max_turns, contexts, render_mode, first_player, no_deal_reward, illegal_action,
                    illegal_penalty)
        self.agents: list[str] = []

    def reset(self, seed: int | None = None, options: dict | None = None):
        state = self._new_game(seed, options)
        self.agents = self.possible_agents[:]
        active = self.agents[state.current_player]
        observations = {a: self._observe(i) for i, a in enumerate(self.agents)}
        infos = {a: {"active_agent": active} for a in self.agents}
        return observations, infos

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise RuntimeError("the game is over; call reset() to start a new one")
        mover = self.agents[self.state.current_player]
        if mover not in actions:
            raise ValueError(f"it is {mover}'s turn, but actions has no entry for it (got {sorted(actions)})")
        self._play(mover, actions[mover])
        state = self.state
        observations = {a: self._observe(i) for i, a in enumerate(self.agents)}
        if state.terminal:
            rewards = self._final_rewards()
            info = outcome_info(state, self.illegal_by)
            infos = {a: dict(info) for a in self.agents}
            terminations = dict.fromkeys(self.agents, True)
        else:
            rewards = dict.fromkeys(self.agents, 0.0)
            active = self.agents[state.current_player]
            infos = {a: {"active_agent": active} for a in self.agents}
            terminations = dict.fromkeys(self.agents, False)
        truncations = dict.fromkeys(self.agents, False)
        if state.terminal:
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return observations, rewards, terminations, truncations, infos


def parallel_env(**kwargs) -> NegotiationParallelEnv:
    """The parallel-API environment (see :class:`NegotiationParallelEnv` and the module docstring)."""
    return NegotiationParallelEnv(**kwargs)
