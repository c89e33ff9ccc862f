"""The RLlib module for negotiation: any parley backbone, masked logits, a value head (new API stack).

:class:`NegotiationRLModule` wraps exactly the network a :class:`~parley.agents.nn.torch_policy.TorchPolicy`
holds (:class:`~parley.agents.nn.torch_policy.ActorCritic`: backbone -> policy head and value head), so a
trained module exports to a TorchPolicy directory with :func:`export_policy` and then plays everywhere
in parley without Ray.

Observations are the environments' Dict ``{"observation": (D,) float32, "action_mask": (252,)}``.
Illegal actions get ``log(0)`` clamped to the float minimum added to their logits, so sampling,
greedy play and the PPO loss all ignore them.

The module's ``model_config`` (a plain dict) says what to build:

``backbone``          a name from :func:`parley.agents.nn.backbones.list_backbones` (default ``"mlp"``)
``backbone_config``   keyword arguments for that backbone
``trainable``         ``"all"`` (default) or ``"adapters"``: train only Compacter adapter parameters
``precision``         ``"float32"`` (default) or ``"bfloat16"``: the format of the training forward pass's
                      matrix products (:func:`parley.utils.resolve_precision`); acting is float32
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

from parley.agents.nn.compacter import freeze_all_but_adapters
from parley.agents.nn.torch_policy import ActorCritic, LogSoftmaxCategorical, TorchPolicy, mask_logits
from parley.utils import RESOLVED_PRECISIONS, training_autocast

OBSERVATION_KEY = "observation"
MASK_KEY = "action_mask"


def observation_size_of(observation_space: gym.Space) -> int:
    """Length D of the observation vector inside a negotiation Dict observation space."""
    if not isinstance(observation_space, gym.spaces.Dict) or OBSERVATION_KEY not in observation_space.spaces \
            or MASK_KEY not in observation_space.spaces:
        raise ValueError(
            "the negotiation RLModule needs a Dict observation space with keys "
            f"{OBSERVATION_KEY!r} and {MASK_KEY!r}; got {observation_space}"
        )
    return int(np.prod(observation_space[OBSERVATION_KEY].shape))


def build_network(backbone: str, observation_size: int, backbone_config: dict[str, Any] | None = None) -> ActorCritic:
    """The actor-critic network a TorchPolicy with these settings would hold."""
    from parley.agents.nn.backbones import make_backbone

    config = {k: v for k, v in dict(backbone_config or {}).items() if k != "device"}
    return ActorCritic(make_backbone(backbone, int(observation_size), device="cpu", **config))


class MaskedCategorical(TorchCategorical):
    """RLlib's categorical action distribution for masked logits, built for speed in the PPO loss: logits
    normalised with ``log_softmax`` (:class:`~parley.agents.nn.torch_policy.LogSoftmaxCategorical`) and the
    KL divergence as one sum. Illegal acts have zero probability under both distributions and the same
    clamped logit, so they add exactly zero to the sum (torch's general Categorical KL finds and overwrites
    those entries, which costs nine times as much)."""

    def _get_torch_distribution(self, logits: torch.Tensor | None = None, probs: torch.Tensor | None = None,
                                **kwargs: Any) -> torch.distributions.Categorical:
        if logits is None:
            return super()._get_torch_distribution(logits=logits, probs=probs, **kwargs)
        return LogSoftmaxCategorical(logits)

    def kl(self, other: TorchCategorical) -> torch.Tensor:
        p, q = self._dist, other._dist
        return (p.probs * (p.logits - q.logits)).sum(-1)


class NegotiationRLModule(TorchRLModule, ValueFunctionAPI):
    """Actor-critic RLModule over any parley backbone, with action masking."""

    def get_inference_action_dist_cls(self) -> type[MaskedCategorical]:
        return MaskedCategorical

    get_exploration_action_dist_cls = get_train_action_dist_cls = get_inference_action_dist_cls

    def setup(self) -> None:
        config = dict(self.model_config or {})
        self.backbone_name: str = config.get("backbone", "mlp")
        self.backbone_config: dict[str, Any] = dict(config.get("backbone_config") or {})
        self.observation_size = observation_size_of(self.observation_space)
        self.model = build_network(self.backbone_name, self.observation_size, self.backbone_config)
        if config.get("trainable", "all") == "adapters":
            freeze_all_but_adapters(self.model)
        self.precision: str = config.get("precision", "float32")

    def _features(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        obs = batch[Columns.OBS]
        return self.model.backbone(obs[OBSERVATION_KEY].float()), obs[MASK_KEY]

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Acting: the masked logits only (whatever else it returns, env runners keep for every step)."""
        features, mask = self._features(batch)
        return {Columns.ACTION_DIST_INPUTS: mask_logits(self.model.policy_head(features), mask)}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Training: the masked logits and the backbone features, which the PPO loss's values reuse. The
        matrix products run in the module's ``precision``; what leaves is float32."""
        with training_autocast(self.precision, next(self.model.parameters()).device.type):
            features, mask = self._features(batch)
            logits = self.model.policy_head(features)
        logits = mask_logits(logits.float(), mask)
        return {Columns.ACTION_DIST_INPUTS: logits, Columns.EMBEDDINGS: features.float()}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if embeddings is None:
            embeddings, _ = self._features(batch)
        return self.model.value_head(embeddings).squeeze(-1)


def module_spec(backbone: str = "mlp", backbone_config: dict[str, Any] | None = None, *,
                trainable: str = "all", precision: str = "float32", observation_space: gym.Space | None = None,
                action_space: gym.Space | None = None) -> RLModuleSpec:
    """An :class:`RLModuleSpec` for :class:`NegotiationRLModule` (spaces are filled from the env if None)."""
    if trainable not in ("all", "adapters"):
        raise ValueError(f"trainable must be 'all' or 'adapters', got {trainable!r}")
    if precision not in RESOLVED_PRECISIONS:
        raise ValueError(f"precision must be 'float32' or 'bfloat16' (resolve 'auto' first), got {precision!r}")
    return RLModuleSpec(
        module_class=NegotiationRLModule,
        observation_space=observation_space,
        action_space=action_space,
        model_config={"backbone": backbone, "backbone_config": dict(backbone_config or {}), "trainable": trainable,
                      "precision": precision},
    )


def export_policy(module: NegotiationRLModule, path: str | Path, *, name: str | None = None,
                  metadata: dict[str, Any] | None = None) -> TorchPolicy:
    """Save a module's network as a TorchPolicy directory (loadable with ``load_policy`` without Ray)."""
    config = {k: v for k, v in module.backbone_config.items() if k != "pretrained"}  # the weights are saved
    policy = TorchPolicy(module.backbone_name, module.observation_size, config, device="cpu", name=name,
                         metadata=metadata)
    state = {key: value.detach().cpu() for key, value in module.model.state_dict().items()}
    policy.model.load_state_dict(state)
    policy.save(path)
    return policy
