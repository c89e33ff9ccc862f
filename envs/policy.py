"""The one policy interface every negotiating agent in parley implements.

Scripted partners, supervised and RL policies, and the agents served to human participants all act
through ``act(observation, action_mask) -> int`` on one observation vector (see
:mod:`parley.envs.negotiation` for its layout) and ``act_batch`` on a batch of them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    """A negotiating agent: picks a legal action index from an observation and its action mask."""

    name: str

    def act(self, observation: np.ndarray, action_mask: np.ndarray) -> int:
        """One action index for one observation vector (float32, shape (D,)) and mask (int8, (252,))."""
        ...

    def act_batch(self, observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        """Action indices (B,) for observations (B, D) and masks (B, 252)."""
        ...


class BatchPolicy:
    """Base class for policies written batched: ``act`` calls :meth:`act_batch` on a batch of one.

    Subclasses set :attr:`name` and implement :meth:`act_batch`. Policies with randomness take a
    ``seed`` and keep their own ``numpy`` generator so games are reproducible.
    """

    name: str = "policy"

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, observation: np.ndarray, action_mask: np.ndarray) -> int:
        obs = np.asarray(observation, dtype=np.float32)[None]
        mask = np.asarray(action_mask, dtype=np.int8)[None]
        return int(self.act_batch(obs, mask)[0])

    def act_batch(self, observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement act_batch")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
