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
    parallel_entry_point: str | None = None  # PettingZoo parallel API, where the env has one


ENV_SPECS: tuple[EnvSpec, ...] = (
    EnvSpec(
        env_id="parley/Negotiation-v0",
        api="gymnasium",
        entry_point="parley.entry_points:make_negotiation_env",
        vector_entry_point="parley.entry_points:make_negotiation_vector_env",
        summary="Deal or No Deal bargaining, one learner vs a partner policy (Dict obs with action mask).",
    ),
    EnvSpec(
        env_id="parley/negotiation-v0",
        api="pettingzoo-aec",
        entry_point="parley.envs.negotiation_v0:env",
        parallel_entry_point="parley.envs.negotiation_v0:parallel_env",
        summary="Deal or No Deal bargaining, two agents taking turns (PettingZoo AEC).",
    ),
    EnvSpec(
        env_id="parley/NegotiationText-v0",
        api="gymnasium",
        entry_point="parley.text:make_text_env",
        summary="Deal or No Deal in natural language, one learner vs a text partner (text obs and actions).",
    ),
    EnvSpec(
        env_id="parley/negotiation-text-v0",
        api="pettingzoo-aec",
        entry_point="parley.envs.negotiation_text_v0:env",
        summary="Deal or No Deal in natural language: talk, then secret selections (PettingZoo AEC).",
    ),
    EnvSpec(
        env_id="parley/poisoning-v0",
        api="pettingzoo-aec",
        entry_point="parley.envs.poisoning_v0:env",
        summary="Data poisoning: attacker perturbs training data, defender filters it, a victim trains from scratch.",
    ),
    EnvSpec(
        env_id="parley/negotiation-poisoning-v0",
        api="pettingzoo-aec",
        entry_point="parley.envs.negotiation_poisoning_v0:env",
        summary="A backdoor in a negotiation agent: attacker poisons dialogues or oracle answers, defender filters.",
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
    """Add the AEC (and parallel, where there is one) entry points to PettingZoo's registry.

    PettingZoo 1.27 has ``pettingzoo.register(env_type, id, entry_point)`` with separate AEC and
    parallel registries; older releases have no registry, and then there is nothing to do.
    """
    try:
        import pettingzoo
    except ImportError:
        return
    register = getattr(pettingzoo, "register", None)
    aec_registry = getattr(pettingzoo, "aec_registry", None)
    parallel_registry = getattr(pettingzoo, "parallel_registry", None)
    if register is None or aec_registry is None:
        return
    for spec in ENV_SPECS:
        if spec.api != "pettingzoo-aec":
            continue
        if spec.env_id not in aec_registry:
            register("aec", spec.env_id, entry_point=spec.entry_point)
        if (spec.parallel_entry_point is not None and parallel_registry is not None
                and spec.env_id not in parallel_registry):
            register("parallel", spec.env_id, entry_point=spec.parallel_entry_point)
