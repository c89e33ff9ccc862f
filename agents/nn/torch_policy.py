"""Neural negotiation policies in plain torch, and loading any saved policy by path.

:class:`TorchPolicy` is the one neural policy object parley passes around: an actor-critic network
(any registered backbone, a policy head over the 252 actions, a value head) behind the common
:class:`~parley.envs.policy.Policy` interface. RLlib and Stable-Baselines3 training, behaviour
cloning and the targeted-data-acquisition learner all save their result as a TorchPolicy directory:

``policy.json``  what to rebuild: backbone name and config, observation size, metadata
``model.pt``     the network's ``state_dict``

:func:`load_policy` turns a path into a Policy. It knows TorchPolicy directories; other formats (an
SB3 zip, an RLlib checkpoint) are added with :func:`register_policy_loader`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from parley.envs.negotiation import NUM_ACTIONS
from parley.envs.policy import BatchPolicy, Policy
from parley.utils import resolve_device

POLICY_FILE = "policy.json"
WEIGHTS_FILE = "model.pt"
FORMAT_VERSION = 1


def mask_logits(logits: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """Set illegal actions' logits to the dtype's most negative value, so they get ~zero mass.

    The same as adding log(mask) clamped to that value, without the logarithm (several times slower on
    CPU); a finite floor instead of -inf keeps softmax and entropy finite when a row is fully masked.
    """
    return torch.where(action_mask.bool(), logits, torch.finfo(logits.dtype).min)


class LogSoftmaxCategorical(torch.distributions.Categorical):
    """torch's Categorical over ``logits``, normalised with ``log_softmax``: the same distribution, but
    Categorical's own normalisation (``logsumexp``) runs about 15 times slower on CPU for rows of 252
    masked logits."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits.log_softmax(-1)
        self._param = self.logits
        self._num_events = self.logits.size(-1)
        torch.distributions.Distribution.__init__(self, self.logits.size()[:-1], validate_args=False)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """One draw per row by inverting the cumulative probabilities (about 9 times faster than
        ``torch.multinomial`` on rows of 252). An act of zero probability is never drawn: the draw is the
        first act whose cumulative probability exceeds a uniform number below the row's total."""
        if len(sample_shape) or self.logits.dim() != 2:
            return super().sample(sample_shape)
        with torch.no_grad():
            cumulative = self.probs.cumsum(-1)
            total = cumulative[:, -1:]
            draw = (cumulative <= torch.rand_like(total) * total).sum(-1)
            possible = self.probs > 0
            last_possible = possible.size(-1) - 1 - possible.flip(-1).int().argmax(-1)
            return torch.minimum(draw, last_possible)


class OpponentModelHead(nn.Module):
    """Predicts the partner's reply to the learner's act: logits over the partner's 252 acts.

    Its input is the trunk's features of the learner's observation and the act the learner chose there
    (embedded), because what the partner answers -- whether it agrees to an offer, what it counters
    with -- depends on the offer it is answering. A training-time auxiliary: acting never calls it.
    """

    def __init__(self, in_dim: int, num_actions: int = NUM_ACTIONS, act_dim: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.act_embedding = nn.Embedding(num_actions, act_dim)
        self.net = nn.Sequential(nn.Linear(in_dim + act_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_actions))

    def forward(self, features: torch.Tensor, learner_actions: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([features, self.act_embedding(learner_actions)], dim=-1))


class ActorCritic(nn.Module):
    """Backbone features -> action logits (252) and a state value; optionally an opponent-model head.

    With ``opponent_model=True`` the network also holds an :class:`OpponentModelHead` on the same trunk
    (``opponent_head``), trained as an auxiliary task by :func:`parley.agents.training.ppo.train_ppo`;
    ``forward`` (what acting uses) never runs it.
    """

    def __init__(self, backbone: nn.Module, num_actions: int = NUM_ACTIONS, *, opponent_model: bool = False) -> None:
        super().__init__()
        if not hasattr(backbone, "out_dim"):
            raise TypeError("the backbone must expose its feature size as `out_dim`")
        self.backbone = backbone
        self.policy_head = nn.Linear(backbone.out_dim, num_actions)
        self.value_head = nn.Linear(backbone.out_dim, 1)
        # A small policy-head init keeps the first policy near uniform over legal acts (CleanRL's 0.01).
        nn.init.orthogonal_(self.policy_head.weight, gain=0.01)
        nn.init.zeros_(self.policy_head.bias)
        nn.init.orthogonal_(self.value_head.weight, gain=1.0)
        nn.init.zeros_(self.value_head.bias)
        if getattr(backbone, "head_adapter_targets", None):
            from parley.agents.nn.compacter import adapt_heads

            adapt_heads(self, backbone)
        # Built last, so a network without it draws the same initial weights as before it existed.
        self.opponent_head = OpponentModelHead(backbone.out_dim, num_actions) if opponent_model else None

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(observations)
        return self.policy_head(features), self.value_head(features).squeeze(-1)

    def forward_with_opponent(self, observations: torch.Tensor, learner_actions: torch.Tensor) -> tuple[
            torch.Tensor, torch.Tensor, torch.Tensor]:
        """Action logits, state value and the opponent head's logits for the partner's reply to
        ``learner_actions``, from one pass through the trunk."""
        if self.opponent_head is None:
            raise ValueError("this network has no opponent-model head (build it with opponent_model=True)")
        features = self.backbone(observations)
        return (self.policy_head(features), self.value_head(features).squeeze(-1),
                self.opponent_head(features, learner_actions))


class TorchPolicy(BatchPolicy):
    """A neural negotiation policy: any backbone with policy and value heads.

    Args:
        backbone: a name from :func:`parley.agents.nn.backbones.list_backbones`.
        observation_size: length D of the observation vector (``16 + 2 * max_turns``).
        backbone_config: keyword arguments for the backbone.
        deterministic: act greedily (highest legal logit) when True, else sample.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        seed: seeds the sampling generator (and, when the network is built here, its init).
        name: a display name for tables.
        metadata: free-form facts saved with the policy (how it was trained, by what).
        opponent_model: also build the auxiliary :class:`OpponentModelHead` (saved and loaded with the
            policy; acting ignores it).
    """

    def __init__(
        self,
        backbone: str = "mlp",
        observation_size: int = 36,
        backbone_config: dict[str, Any] | None = None,
        *,
        deterministic: bool = True,
        device: str = "auto",
        seed: int | None = None,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        opponent_model: bool = False,
    ) -> None:
        super().__init__(seed)
        from parley.agents.nn.backbones import make_backbone

        self.backbone_name = backbone
        self.observation_size = int(observation_size)
        self.backbone_config = dict(backbone_config or {})
        self.deterministic = deterministic
        self.device = resolve_device(device)
        self.name = name or f"torch-{backbone}"
        self.metadata = dict(metadata or {})
        self.opponent_model = bool(opponent_model)
        if seed is not None:
            torch.manual_seed(seed)
        # An int size lets the backbone read a negotiation-sized vector with the negotiation layout (scaled
        # header, embedded act tokens) -- the layout the envs' bounded spaces give during training.
        self.model = ActorCritic(make_backbone(backbone, self.observation_size, device="cpu",
                                               **self.backbone_config),
                                  opponent_model=self.opponent_model).to(self.device)
        self._torch_generator = torch.Generator(device="cpu")
        self._torch_generator.manual_seed(int(self.rng.integers(2**31)))

    def seed(self, seed: int | None) -> None:
        """Reseed the sampling: the numpy generator and the torch generator drawn from it, so that a
        sampling policy reseeded with the same seed (as evaluations do) draws the same acts."""
        super().seed(seed)
        self._torch_generator.manual_seed(int(self.rng.integers(2**31)))

    # -- acting ------------------------------------------------------------------------------------

    def distribution(self, observations: torch.Tensor, action_masks: torch.Tensor) -> tuple[
            torch.distributions.Categorical, torch.Tensor]:
        """The masked action distribution and the value estimate for a batch of observations."""
        logits, values = self.model(observations)
        return LogSoftmaxCategorical(mask_logits(logits, action_masks)), values

    @torch.no_grad()
    def act_batch(self, observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        obs = torch.as_tensor(np.asarray(observations, dtype=np.float32), device=self.device)
        mask = torch.as_tensor(np.asarray(action_masks), device=self.device)
        if not bool(mask.any(dim=-1).all()):
            raise ValueError("every action mask row needs at least one legal action (is the game over?)")
        logits, _ = self.model(obs)
        logits = mask_logits(logits.float(), mask)
        if self.deterministic:
            actions = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits, dim=-1).cpu()
            actions = torch.multinomial(probs, 1, generator=self._torch_generator).squeeze(-1)
        self.model.train(was_training)
        return actions.cpu().numpy().astype(np.int64)

    # -- saving ------------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        config = {
            "format": "parley.torch_policy",
            "format_version": FORMAT_VERSION,
            "backbone": self.backbone_name,
            "observation_size": self.observation_size,
            "backbone_config": self.backbone_config,
            "name": self.name,
            "metadata": self.metadata,
        }
        if self.opponent_model:  # written only when present, so policies without it save as before
            config["opponent_model"] = True
        return config

    def save(self, path: str | Path) -> Path:
        """Write ``policy.json`` and ``model.pt`` into the directory ``path`` (created if needed)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / POLICY_FILE).write_text(json.dumps(self.config(), indent=2, sort_keys=True))
        torch.save(self.model.state_dict(), path / WEIGHTS_FILE)
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", deterministic: bool = True,
             seed: int | None = None) -> TorchPolicy:
        """Rebuild a policy saved by :meth:`save`."""
        path = Path(path)
        config_file = path / POLICY_FILE
        if not config_file.is_file():
            raise FileNotFoundError(f"{path} is not a saved TorchPolicy: {POLICY_FILE} is missing")
        config = json.loads(config_file.read_text())
        if config.get("format") != "parley.torch_policy":
            raise ValueError(f"{config_file} is not a parley TorchPolicy config (format={config.get('format')!r})")
        policy = cls(
            config["backbone"],
            config["observation_size"],
            config.get("backbone_config", {}),
            deterministic=deterministic,
            device=device,
            seed=seed,
            name=config.get("name"),
            metadata=config.get("metadata", {}),
            opponent_model=config.get("opponent_model", False),
        )
        state = torch.load(path / WEIGHTS_FILE, map_location=policy.device, weights_only=True)
        policy.model.load_state_dict(state)
        return policy


# --------------------------------------------------------------------------------------------------
# Loading any policy by path
# --------------------------------------------------------------------------------------------------

PolicyLoader = Callable[..., Policy]
_LOADERS: list[tuple[str, Callable[[Path], bool], PolicyLoader]] = []


def register_policy_loader(kind: str, recognises: Callable[[Path], bool], loader: PolicyLoader) -> None:
    """Teach :func:`load_policy` a format: ``recognises(path)`` says whether ``loader(path, **kw)`` applies.

    Later registrations are tried first, so a specific format can take over from a general one.
    """
    _LOADERS.insert(0, (kind, recognises, loader))


def _is_torch_policy_dir(path: Path) -> bool:
    return path.is_dir() and (path / POLICY_FILE).is_file()


register_policy_loader("torch", _is_torch_policy_dir, TorchPolicy.load)


def _resolve_checkpoint(path: Path) -> Path:
    """A training run directory points at its latest policy through ``latest_policy`` or ``policy/``."""
    if path.is_dir() and not _is_torch_policy_dir(path):
        marker = path / "latest_policy"
        if marker.is_file():
            target = Path(marker.read_text().strip())
            return target if target.is_absolute() else path / target
        if _is_torch_policy_dir(path / "policy"):
            return path / "policy"
    return path


def load_policy(path: str | Path, **kwargs: Any) -> Policy:
    """Load a saved policy (a TorchPolicy directory, a training run, or a registered format) by path."""
    _import_optional_loaders()
    original = Path(path)
    if not original.exists():
        raise FileNotFoundError(f"no policy at {original}")
    resolved = _resolve_checkpoint(original)
    for _kind, recognises, loader in _LOADERS:
        if recognises(resolved):
            return loader(resolved, **kwargs)
    kinds = ", ".join(kind for kind, _, _ in _LOADERS)
    raise ValueError(f"{original} is not a policy parley can load (known formats: {kinds})")


#: Modules that register loaders for optional formats when imported (SB3 zips, RLlib checkpoints).
OPTIONAL_LOADER_MODULES: tuple[str, ...] = ("parley.agents.training.sb3",)


def _import_optional_loaders() -> None:
    import importlib

    for module in OPTIONAL_LOADER_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:  # the optional framework is not installed; its format stays unknown
            continue
