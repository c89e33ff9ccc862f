"""Registration of parley's environments with Gymnasium and PettingZoo.

Every registered environment is listed in :data:`ENV_SPECS` with a one-line summary; ``parley envs``
prints that table.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium


@dataclass(frozen=True)
class EnvSpec:
    """One environment parley registers."""

    env_id: str
    api: str  # "gymnasium" or "pettingzoo-aec"
    entry_point: str
    summary: str
    vector_entry_point: str | None = None


ENV_SPECS: tuple[EnvSpec, ...] = (
    EnvSpec(
        env_id="parley/Negotiation-v0",
        api="gymnasium",
        entry_point="parley.envs.negotiation_gym:NegotiationGymEnv",
        vector_entry_point="parley.envs.negotiation_vector:NegotiationVectorEnv",
        summary="Deal or No Deal bargaining, one learner vs a partner policy (Dict obs with action mask).",
    ),
    EnvSpec(
        env_id="parley/negotiation-v0",
        api="pettingzoo-aec",
        entry_point="parley.envs.negotiation_v0:env",
        summary="Deal or No Deal bargaining, two agents taking turns (PettingZoo AEC).",
    ),
    EnvSpec(
        env_id="parley/poisoning-v0",
        api="pettingzoo-aec",
        entry_point="parley.envs.poisoning_v0:env",
        summary="Data poisoning: attacker perturbs training data, defender filters it, a victim trains from scratch.",
    ),
)


def register_envs() -> None:
    """Register parley's ids; safe to call more than once."""
    for spec in ENV_SPECS:
        if spec.api == "gymnasium" and spec.env_id not in gymnasium.registry:
            gymnasium.register(
                id=spec.env_id,
                entry_point=spec.entry_point,
                vector_entry_point=spec.vector_entry_point,
                disable_env_checker=True,
            )
    _register_pettingzoo()


def _register_pettingzoo() -> None:
    try:
        from pettingzoo.utils import registration as pz_registration  # type: ignore[attr-defined]
    except ImportError:  # PettingZoo without a registry
        return
    register = getattr(pz_registration, "register", None)
    registry = getattr(pz_registration, "registry", None)
    if register is None:
        return
    for spec in ENV_SPECS:
        if spec.api != "pettingzoo-aec":
            continue
        if registry is not None and _pz_known(registry, spec.env_id):
            continue
        try:
            register("aec", spec.env_id, spec.entry_point)
        except (TypeError, ValueError):  # a registry with another signature, or the id already taken
            return


def _pz_known(registry, env_id: str) -> bool:
    try:
        return env_id in registry or ("aec", env_id) in registry
    except TypeError:
        return False
