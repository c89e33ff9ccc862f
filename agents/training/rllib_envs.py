"""Negotiation environments as RLlib sees them.

:class:`NegotiationMultiAgentEnv` is our own thin adapter from the PettingZoo AEC env
(:mod:`parley.envs.negotiation_v0`) to RLlib's :class:`MultiAgentEnv`. RLlib's ``PettingZooEnv``
wrapper falls short in two ways we depend on: its ``reset()`` returns infos not keyed by agent, and its
``render()`` passes an argument PettingZoo no longer takes. The adapter also never reports an agent
that has not observed anything yet (an agent whose partner walked away on the first move simply does
not appear in the episode), which RLlib's episode bookkeeping requires.

Turn order: only the agent to move gets an observation each step. ``reward_scale`` in the config
multiplies the rewards (the infos keep the points). When the game ends, every agent that
has acted gets its final observation, its reward and ``terminated=True``.

``partner_pool_env_creator`` builds the single-agent Gymnasium env (``parley/Negotiation-v0``, the
partner inside) -- or its batched vector version when RLlib asks for ``num_envs`` -- with the partner
drawn per episode from a pool of scripted partners. It is registered with Ray as
:data:`PARTNER_POOL_ENV`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from ray.rllib.env.multi_agent_env import MultiAgentEnv

MULTI_AGENT_ENV = "parley_negotiation_multi_agent"
PARTNER_POOL_ENV = "parley_negotiation_partner_pool"


class NegotiationMultiAgentEnv(MultiAgentEnv):
    """The AEC negotiation env behind RLlib's multi-agent interface.

    Args:
        config: keyword arguments for :func:`parley.envs.negotiation_v0.env` (e.g. ``max_turns``).
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        from parley.envs import negotiation_v0

        config = dict(config or {})
        self.reward_scale = float(config.pop("reward_scale", 1.0))
        self.render_mode = config.get("render_mode")
        self.env = negotiation_v0.env(**config)
        self.env.reset()
        self.possible_agents = list(self.env.possible_agents)
        self.agents = list(self.possible_agents)
        self.observation_spaces = {a: self.env.observation_space(a) for a in self.possible_agents}
        self.action_spaces = {a: self.env.action_space(a) for a in self.possible_agents}
        self._observed: set[str] = set()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.env.reset(seed=seed, options=options)
        self.agents = list(self.env.agents)
        agent = self.env.agent_selection
        self._observed = {agent}
        return {agent: self.env.observe(agent)}, {agent: dict(self.env.infos.get(agent, {}))}

    def step(self, action_dict: dict[str, Any]):
        agent = self.env.agent_selection
        if agent not in action_dict:
            raise ValueError(f"it is {agent}'s turn, but the actions were for {sorted(action_dict)}")
        self.env.step(int(action_dict[agent]))
        over = all(self.env.terminations.get(a, True) or self.env.truncations.get(a, True)
                   for a in self.possible_agents) or not self.env.agents
        if not over:
            nxt = self.env.agent_selection
            self._observed.add(nxt)
            rewards = {a: self.reward_scale * float(self.env.rewards[a]) for a in self._observed
                       if self.env.rewards.get(a)}
            return ({nxt: self.env.observe(nxt)}, rewards, {"__all__": False}, {"__all__": False},
                    {nxt: dict(self.env.infos.get(nxt, {}))})
        obs, rewards, terminated, truncated, infos = {}, {}, {}, {}, {}
        for a in sorted(self._observed):
            obs[a] = self.env.observe(a)
            rewards[a] = self.reward_scale * float(self.env._cumulative_rewards.get(a, 0.0))
            terminated[a] = bool(self.env.terminations.get(a, True))
            truncated[a] = bool(self.env.truncations.get(a, False)) and not terminated[a]
            infos[a] = dict(self.env.infos.get(a, {}))
        terminated["__all__"] = all(terminated[a] for a in self._observed)
        truncated["__all__"] = not terminated["__all__"]
        self.agents = []
        return obs, rewards, terminated, truncated, infos

    def render(self):
        return self.env.render()

    def close(self) -> None:
        self.env.close()


def multi_agent_env_creator(config: dict[str, Any]) -> NegotiationMultiAgentEnv:
    return NegotiationMultiAgentEnv(dict(config))


def partner_pool_env_creator(config: dict[str, Any]) -> gym.Env | gym.vector.VectorEnv:
    """The learner-vs-scripted-partners env; the batched vector env of ``num_envs`` games when RLlib asks."""
    from parley.agents.partners.pool import make_pool_env

    config = dict(config)
    partners = config.pop("partners")
    num_envs = config.pop("num_envs", None)
    if num_envs is None:
        config.pop("reward_scale", None)  # RLlib only probes the single env for its spaces
        return make_pool_env(partners, **config)
    from parley.agents.partners.pool import PartnerPoolVectorEnv, resolve_partner_names

    return PartnerPoolVectorEnv(int(num_envs), resolve_partner_names(partners), **config)


def register_rllib_envs() -> None:
    """Register the env creators with Ray's registry (cheap; safe to call repeatedly)."""
    from ray.tune.registry import register_env

    register_env(MULTI_AGENT_ENV, multi_agent_env_creator)
    register_env(PARTNER_POOL_ENV, partner_pool_env_creator)
