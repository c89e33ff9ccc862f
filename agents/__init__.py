"""parley.agents: networks, scripted partners, training and evaluation of negotiating agents.

Subpackages:

* :mod:`parley.agents.nn` -- policy backbones, Compacter adapters, invertible attention, compression,
  and :class:`~parley.agents.nn.torch_policy.TorchPolicy` (a network playing as a policy).
* :mod:`parley.agents.partners` -- scripted partners, partner pools, tournaments, the synthetic corpus.
* :mod:`parley.agents.training` -- ``parley train``: PPO (native, RLlib, Stable-Baselines3) and
  supervised learning.
* :mod:`parley.agents.evaluation` -- scoring a policy against partners (``parley eval``).

The common entry points are importable from here and load lazily, so that using the scripted partners
does not import torch: ``load_policy``, ``TorchPolicy``, ``register_policy_loader``, ``make_partner``,
``list_partners``, ``make_backbone``, ``evaluate_policy``.
"""

from __future__ import annotations

from parley.utils import alias_modules, lazy_exports

_EXPORTS = {
    "load_policy": "parley.agents.nn.torch_policy",
    "TorchPolicy": "parley.agents.nn.torch_policy",
    "register_policy_loader": "parley.agents.nn.torch_policy",
    "make_partner": "parley.agents.partners.scripted",
    "list_partners": "parley.agents.partners.scripted",
    "make_backbone": "parley.agents.nn.backbones",
    "evaluate_policy": "parley.agents.evaluation",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("parley.agents", _EXPORTS)

# Module paths from before the subpackages; kept importable for user code and saved checkpoints.
alias_modules({
    "parley.agents.backbones": "parley.agents.nn.backbones",
    "parley.agents.compacter": "parley.agents.nn.compacter",
    "parley.agents.invertible": "parley.agents.nn.invertible",
    "parley.agents.compress": "parley.agents.nn.compress",
    "parley.agents.torch_policy": "parley.agents.nn.torch_policy",
    "parley.agents.scripted": "parley.agents.partners.scripted",
    "parley.agents.partner_pool": "parley.agents.partners.pool",
    "parley.agents.tournament": "parley.agents.partners.tournament",
    "parley.agents.policy": "parley.envs.policy",
    "parley.agents.corpus": "parley.envs.corpus",
    "parley.agents.ppo": "parley.agents.training.ppo",
    "parley.agents.native_training": "parley.agents.training.native",
    "parley.agents.rllib_training": "parley.agents.training.rllib",
    "parley.agents.rllib_envs": "parley.agents.training.rllib_envs",
    "parley.agents.rllib_module": "parley.agents.training.rllib_module",
    "parley.agents.rllib_setups": "parley.agents.training.rllib_setups",
    "parley.agents.sb3_training": "parley.agents.training.sb3",
    "parley.agents.supervised": "parley.agents.training.supervised",
    "parley.agents.training_cli": "parley.agents.training.cli",
})
