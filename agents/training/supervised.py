"""Supervised (behaviour-cloning) negotiation policies.

A :class:`~parley.agents.nn.torch_policy.TorchPolicy` with any backbone is fitted to (observation, legal
mask, action) examples -- parsed corpus dialogues (:mod:`parley.envs.corpus`), a synthetic corpus, or
oracle answers -- by masked cross-entropy: illegal actions get no probability mass, so the loss only
compares the recorded act with the other acts that were legal at that moment.

The result serves twice in targeted data acquisition (Kwon et al. 2021): as the **SL baseline agent**
and as the **partner model** an RL learner trains against. It saves and loads like any other policy::

    from parley.envs.corpus import corpus_dataset, load_corpus
    from parley.agents.training.supervised import SupervisedConfig, train_supervised

    data = corpus_dataset(load_corpus("path/to/dealornodeal/data.txt"))
    result = train_supervised(data, SupervisedConfig(epochs=10))
    result.policy.save("runs/sl")            # later: TorchPolicy.load("runs/sl") or load_policy(...)
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from parley.agents.nn.torch_policy import TorchPolicy, mask_logits
from parley.envs.corpus import ActDataset
from parley.envs.negotiation import DEFAULT_MAX_TURNS, ObservationLayout


@dataclass
class SupervisedConfig:
    """Hyperparameters of behaviour cloning."""

    backbone: str = "mlp"
    backbone_config: dict[str, Any] = field(default_factory=lambda: {"hidden_sizes": (128, 128)})
    epochs: int = 15
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    max_turns: int = DEFAULT_MAX_TURNS
    seed: int = 0
    device: str = "auto"


@dataclass
class SupervisedResult:
    """The fitted policy and the per-epoch training loss (and validation accuracy when given)."""

    policy: TorchPolicy
    history: list[dict[str, float]]


def new_policy(config: SupervisedConfig, name: str = "sl", deterministic: bool = False) -> TorchPolicy:
    """An untrained TorchPolicy shaped for negotiation observations with ``config.max_turns``."""
    return TorchPolicy(config.backbone, ObservationLayout(config.max_turns).size, dict(config.backbone_config),
                       deterministic=deterministic, device=config.device, seed=config.seed, name=name,
                       metadata={"trained_by": "parley.agents.training.supervised"})


def clone_policy(policy: TorchPolicy, name: str | None = None, deterministic: bool | None = None,
                 seed: int | None = None) -> TorchPolicy:
    """A copy with its own weights (training one leaves the other unchanged)."""
    other = copy.copy(policy)
    other.model = copy.deepcopy(policy.model)
    other.metadata = dict(policy.metadata)
    other.name = name or policy.name
    other.deterministic = policy.deterministic if deterministic is None else deterministic
    other.rng = np.random.default_rng(seed)
    other._torch_generator = torch.Generator(device="cpu")
    other._torch_generator.manual_seed(int(other.rng.integers(2**31)))
    return other


def masked_log_probs(policy: TorchPolicy, observations: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B, 252) log-probabilities of each action under the masked policy."""
    logits, _ = policy.model(observations)
    return torch.log_softmax(mask_logits(logits.float(), masks), dim=-1)


def behaviour_cloning_loss(policy: TorchPolicy, observations: torch.Tensor, masks: torch.Tensor,
                           actions: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean negative log-likelihood of ``actions`` under the masked policy."""
    logp = masked_log_probs(policy, observations, masks).gather(1, actions[:, None]).squeeze(1)
    if weights is None:
        return -logp.mean()
    return -(weights * logp).sum() / weights.sum().clamp_min(1e-8)


def _tensors(policy: TorchPolicy, data: ActDataset, idx: np.ndarray | slice = slice(None)):
    device = policy.device
    return (torch.as_tensor(data.observations[idx], device=device),
            torch.as_tensor(data.masks[idx], device=device),
            torch.as_tensor(data.actions[idx], device=device),
            torch.as_tensor(data.weights[idx], device=device))


def check_dataset(data: ActDataset) -> None:
    """Raise a clear error when an example's action is not legal under its own mask."""
    if len(data) == 0:
        raise ValueError("the dataset is empty: nothing to learn from")
    legal = data.masks[np.arange(len(data)), data.actions]
    if not legal.all():
        bad = int(np.flatnonzero(legal == 0)[0])
        raise ValueError(f"example {bad}: action {int(data.actions[bad])} is illegal under its action mask")


def train_supervised(data: ActDataset, config: SupervisedConfig | None = None, *,
                     policy: TorchPolicy | None = None, validation: ActDataset | None = None,
                     name: str = "sl") -> SupervisedResult:
    """Fit a policy to ``data`` by masked behaviour cloning; continue from ``policy`` when given."""
    config = config or SupervisedConfig()
    check_dataset(data)
    if policy is None:
        policy = new_policy(config, name=name)
    generator = np.random.default_rng(config.seed)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    history = []
    policy.model.train()
    for epoch in range(config.epochs):
        order = generator.permutation(len(data))
        total, batches = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            obs, masks, actions, weights = _tensors(policy, data, order[start:start + config.batch_size])
            loss = behaviour_cloning_loss(policy, obs, masks, actions, weights)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.model.parameters(), 1.0)
            optimizer.step()
            total += float(loss.detach())
            batches += 1
        row = {"epoch": epoch + 1, "loss": total / max(batches, 1)}
        if validation is not None and len(validation):
            row["val_accuracy"] = action_accuracy(policy, validation)
        history.append(row)
    policy.model.eval()
    policy.metadata.update({"supervised": {**asdict(config), "examples": len(data), "final": history[-1]}})
    return SupervisedResult(policy, history)


@torch.no_grad()
def action_log_likelihood(policy: TorchPolicy, observations: np.ndarray, masks: np.ndarray,
                          actions: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Log-probability (N,) the policy gives each recorded action."""
    out = []
    was_training = policy.model.training
    policy.model.eval()
    for start in range(0, len(actions), batch_size):
        sl = slice(start, start + batch_size)
        obs = torch.as_tensor(np.asarray(observations[sl], dtype=np.float32), device=policy.device)
        mask = torch.as_tensor(np.asarray(masks[sl]), device=policy.device)
        act = torch.as_tensor(np.asarray(actions[sl], dtype=np.int64), device=policy.device)
        out.append(masked_log_probs(policy, obs, mask).gather(1, act[:, None]).squeeze(1).cpu().numpy())
    policy.model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)


@torch.no_grad()
def action_probabilities(policy: TorchPolicy, observations: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N, 252) masked action probabilities."""
    obs = torch.as_tensor(np.asarray(observations, dtype=np.float32), device=policy.device)
    mask = torch.as_tensor(np.asarray(masks), device=policy.device)
    was_training = policy.model.training
    policy.model.eval()
    probs = masked_log_probs(policy, obs, mask).exp().cpu().numpy()
    policy.model.train(was_training)
    return probs


@torch.no_grad()
def action_accuracy(policy: TorchPolicy, data: ActDataset) -> float:
    """Share of examples whose recorded action is the policy's most likely legal action."""
    if len(data) == 0:
        return float("nan")
    probs = action_probabilities(policy, data.observations, data.masks)
    return float(np.mean(probs.argmax(axis=1) == data.actions))


def random_policy_accuracy(data: ActDataset) -> float:
    """Expected accuracy of a uniformly random legal policy on ``data``: mean of 1 / (#legal acts)."""
    return float(np.mean(1.0 / data.masks.sum(axis=1)))
