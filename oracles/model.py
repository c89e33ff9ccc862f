"""The model oracle: a stronger held-out policy (an RL or SL checkpoint) answers for the partner's side.

The policy sees exactly what an agent in the game would see -- the responder's observation vector and
legal-action mask -- so any :class:`~parley.envs.policy.Policy` works, loaded from a path with
:func:`parley.agents.nn.torch_policy.load_policy` or passed in. Its ``acceptable`` annotation is whether it
agrees to the standing proposal; it offers no counter-offer annotation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parley.envs.negotiation import AGREE_ACTION
from parley.envs.policy import Policy
from parley.oracles.base import Oracle, OracleAnswer, OracleQuery


class ModelOracle(Oracle):
    """Answers queries with a policy's acts. ``policy`` is a Policy or a path to a saved one."""

    def __init__(self, policy: Policy | str | Path, name: str | None = None) -> None:
        if isinstance(policy, (str, Path)):
            from parley.agents.nn.torch_policy import load_policy

            policy = load_policy(policy)
        if not hasattr(policy, "act_batch"):
            raise TypeError(f"the model oracle needs a Policy with act_batch, got {type(policy).__name__}")
        self.policy = policy
        self.name = name or f"model:{getattr(policy, 'name', type(policy).__name__)}"

    def answer(self, queries: Sequence[OracleQuery]) -> list[OracleAnswer | None]:
        if not queries:
            return []
        obs = np.stack([q.observation() for q in queries]).astype(np.float32)
        masks = np.stack([q.legal_mask() for q in queries]).astype(np.int8)
        actions = np.asarray(self.policy.act_batch(obs, masks)).reshape(-1)
        answers: list[OracleAnswer | None] = []
        for query, action in zip(queries, actions):
            has_offer = query.standing_offer_for_responder() is not None
            acceptable = bool(action == AGREE_ACTION) if has_offer else None
            answers.append(OracleAnswer(int(action), acceptable, None, self.name))
        return answers
