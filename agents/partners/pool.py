"""A pool of scripted partners, one drawn per episode, for the single-agent negotiation envs.

``make_pool_env(["boulware", "conceder"])`` is ``parley/Negotiation-v0`` whose partner is redrawn
uniformly from the pool at every ``reset``; the final ``info["partner"]`` names the one played.
:class:`PartnerPoolVectorEnv` is the batched vector env with a partner drawn per game whenever a game
starts; each partner answers all of its games in one ``act_batch`` call. RLlib (setup 1) trains on the
vector env, Stable-Baselines3 on the single env.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np

from parley.envs.negotiation_vector import NegotiationVectorEnv
from parley.envs.policy import Policy


def resolve_partner_names(partners: str | Sequence[str]) -> list[str]:
    """Partner names from ``"a,b"``, ``"suite"``/``"all"`` (every scripted partner) or a list; checked."""
    from parley.agents.partners.scripted import list_partners

    known = list(list_partners())
    if isinstance(partners, str):
        partners = [p.strip() for p in partners.split(",") if p.strip()]
    names: list[str] = []
    for name in partners:
        if name in ("suite", "all"):
            names.extend(known)
        elif name not in known:
            raise ValueError(f"unknown partner {name!r}; known partners: {', '.join(known)} (or 'suite' for all)")
        else:
            names.append(name)
    if not names:
        raise ValueError(f"name at least one partner; known partners: {', '.join(known)} (or 'suite')")
    return list(dict.fromkeys(names))


class PartnerPoolEnv(gymnasium.Wrapper):
    """Draws the partner of each episode uniformly from ``pool`` (Policy objects) before resetting."""

    def __init__(self, env: gymnasium.Env, pool: Sequence[Policy]) -> None:
        super().__init__(env)
        if not pool:
            raise ValueError("the partner pool is empty")
        self.pool = list(pool)
        self._pool_rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._pool_rng = np.random.default_rng(seed)
            for i, partner in enumerate(self.pool):
                if callable(getattr(partner, "seed", None)):
                    partner.seed(seed * 7919 + i)
        self.env.unwrapped.partner = self.pool[int(self._pool_rng.integers(len(self.pool)))]
        return self.env.reset(seed=seed, options=options)

    def action_masks(self) -> np.ndarray:
        return self.env.unwrapped.action_masks()


def make_pool_env(partners: str | Sequence[str], **env_kwargs: Any) -> PartnerPoolEnv:
    """``parley/Negotiation-v0`` against a partner drawn per episode from ``partners`` (names)."""
    from parley.agents.partners.scripted import make_partner
    from parley.envs.negotiation_gym import NegotiationGymEnv

    names = resolve_partner_names(partners)
    pool = [make_partner(name) for name in names]
    return PartnerPoolEnv(NegotiationGymEnv(partner=pool[0], **env_kwargs), pool)


def _group_by_partner(which: np.ndarray, pool_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The order that groups games by their partner's index ``which`` (row order kept within a group),
    and the group boundaries: partner ``k``'s games sit at ``bounds[k]:bounds[k + 1]`` of that order."""
    order = np.argsort(which, kind="stable")
    return order, np.searchsorted(which[order], np.arange(pool_size + 1))


def _answer_by_partner(pool: Sequence[Policy], bounds: np.ndarray, observations: np.ndarray,
                       action_masks: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Acts for games grouped by :func:`_group_by_partner` (see
    :func:`~parley.agents.partners.scripted.act_batch_by_partner`), returned in the original order."""
    from parley.agents.partners.scripted import act_batch_by_partner

    answered = np.empty(len(order), dtype=np.int64)
    answered[order] = act_batch_by_partner(pool, bounds, observations, action_masks)
    return answered


class _PoolDispatcher:
    """The vector env's partner: answers each waiting game with that game's partner from the pool.

    ``act_batch`` takes the observations of the games where the partner is to move, in row order, and
    recomputes those rows from the env's state to know which game each observation belongs to. The env
    itself reads the observations already grouped by partner (``PartnerPoolVectorEnv._partner_acts``);
    both give the same acts.
    """

    def __init__(self, env: PartnerPoolVectorEnv) -> None:
        self.env = env
        self.name = "pool(" + ",".join(getattr(p, "name", type(p).__name__) for p in env.pool) + ")"

    def seed(self, seed: int) -> None:
        for i, partner in enumerate(self.env.pool):
            if callable(getattr(partner, "seed", None)):
                partner.seed(seed * 7919 + i)

    def act_batch(self, observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        game = self.env.game
        rows = np.flatnonzero(~game.done & (game.current_player != self.env.side))
        if len(rows) != len(observations):
            raise RuntimeError("the partner pool lost track of which games it is answering")
        order, bounds = _group_by_partner(self.env.assignment[rows], len(self.env.pool))
        return _answer_by_partner(self.env.pool, bounds, np.take(np.asarray(observations), order, axis=0),
                                  np.take(np.asarray(action_masks), order, axis=0), order)

    def act(self, observation: np.ndarray, action_mask: np.ndarray) -> int:
        raise RuntimeError("the partner pool only answers batched calls from its vector env")


class PartnerPoolVectorEnv(NegotiationVectorEnv):
    """The batched vector env with each game's partner drawn from ``pool`` whenever the game starts.

    ``partners`` are scripted partner names (or Policy objects); rewards are multiplied by
    ``reward_scale`` (the infos keep the points); other keyword arguments are those of
    :class:`~parley.envs.negotiation_vector.NegotiationVectorEnv`.
    """

    def __init__(self, num_envs: int, partners: Sequence[str | Policy], reward_scale: float = 1.0,
                 **kwargs: Any) -> None:
        from parley.agents.partners.scripted import make_partner

        self.reward_scale = float(reward_scale)

        self.pool = [make_partner(p) if isinstance(p, str) else p for p in partners]
        if not self.pool:
            raise ValueError("the partner pool is empty")
        self.assignment = np.zeros(num_envs, dtype=np.int64)
        super().__init__(num_envs=num_envs, partner=self.pool[0], **kwargs)
        self.partner = _PoolDispatcher(self)

    def _start_games(self, rows: np.ndarray) -> None:
        super()._start_games(rows)
        self.assignment[rows] = self._np_random.integers(len(self.pool), size=len(rows))

    def _partner_acts(self, rows: np.ndarray) -> np.ndarray:
        """Each partner answers its games in one ``act_batch`` call; the games' observations and masks
        are read grouped by partner, so each partner gets one contiguous block."""
        order, bounds = _group_by_partner(self.assignment[rows], len(self.pool))
        grouped = rows[order]
        obs = self.game.observations(1 - self.side[grouped], grouped)
        return _answer_by_partner(self.pool, bounds, obs, self.game.legal_masks(grouped), order)

    def step(self, actions):
        obs, rewards, terminated, truncated, infos = super().step(actions)
        return obs, rewards * self.reward_scale, terminated, truncated, infos
