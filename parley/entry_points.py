"""The Gymnasium entry points of ``parley/Negotiation-v0``: partner names become partner policies here.

The env adapters in :mod:`parley.envs` take a partner :class:`~parley.envs.policy.Policy` object only
(the adapters import nothing from :mod:`parley.agents`). ``gymnasium.make("parley/Negotiation-v0",
partner="boulware")`` and ``gymnasium.make_vec(..., vectorization_mode="vector_entry_point",
partner="pareto")`` reach these functions, which build a named scripted partner with
:func:`parley.agents.partners.scripted.make_partner` (``partner_kwargs`` are its parameters) and hand it
to the adapter. A Policy object passes through unchanged.
"""

from __future__ import annotations

from typing import Any

from parley.envs.negotiation_gym import NegotiationGymEnv
from parley.envs.negotiation_vector import NegotiationVectorEnv
from parley.envs.policy import Policy

__all__ = ["make_negotiation_env", "make_negotiation_vector_env", "resolve_partner"]


def resolve_partner(partner: str | Policy, partner_kwargs: dict[str, Any] | None = None) -> Policy:
    """A partner policy from a scripted partner's name (with ``partner_kwargs``) or a Policy object."""
    if isinstance(partner, str):
        from parley.agents.partners.scripted import make_partner

        return make_partner(partner, **(partner_kwargs or {}))
    if partner_kwargs:
        raise ValueError("partner_kwargs only applies when partner is a scripted partner's name; "
                         f"got a {type(partner).__name__} object")
    return partner


def make_negotiation_env(partner: str | Policy = "random", partner_kwargs: dict[str, Any] | None = None,
                         **kwargs: Any) -> NegotiationGymEnv:
    """``gymnasium.make("parley/Negotiation-v0", ...)``: the single env against a partner given by name
    (``parley.agents.partners.scripted.list_partners()``) or as a Policy; other keyword arguments are
    those of :class:`~parley.envs.negotiation_gym.NegotiationGymEnv`."""
    return NegotiationGymEnv(resolve_partner(partner, partner_kwargs), **kwargs)


def make_negotiation_vector_env(num_envs: int = 1, partner: str | Policy = "random",
                                partner_kwargs: dict[str, Any] | None = None,
                                **kwargs: Any) -> NegotiationVectorEnv:
    """``gymnasium.make_vec("parley/Negotiation-v0", num_envs=N, vectorization_mode="vector_entry_point",
    ...)``: the vector env against a partner given by name or as a Policy; other keyword arguments are
    those of :class:`~parley.envs.negotiation_vector.NegotiationVectorEnv`."""
    return NegotiationVectorEnv(num_envs, resolve_partner(partner, partner_kwargs), **kwargs)


# gymnasium.make reads the render modes from the entry point's metadata.
make_negotiation_env.metadata = NegotiationGymEnv.metadata  # type: ignore[attr-defined]
make_negotiation_vector_env.metadata = NegotiationVectorEnv.metadata  # type: ignore[attr-defined]
