"""The Stable-Baselines3 side of ``parley train``: ``MaskablePPO`` with any parley backbone.

The backbone is SB3's features extractor (:class:`BackboneExtractor`) and the policy has no extra MLP
layers (``net_arch=[]``), so SB3's ``action_net`` and ``value_net`` sit directly on the backbone's
features -- exactly the :class:`~parley.agents.nn.torch_policy.ActorCritic` layout. That is what lets a
MaskablePPO model export to a TorchPolicy directory (:func:`export_sb3_policy`) and lets
``load_policy("model.zip")`` return a TorchPolicy (the loader registered here).

Training runs on ``parley/Negotiation-v0`` with the partner drawn per episode from the pool
(:class:`~parley.agents.partners.pool.PartnerPoolEnv`); MaskablePPO reads the env's ``action_masks()``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv

from parley.agents.nn.torch_policy import TorchPolicy, register_policy_loader
from parley.agents.training.run import (
    CHECKPOINTS,
    POLICY_DIR,
    LiveView,
    RunLogger,
    TrainConfig,
    TrainResult,
    init_policy_for,
    latest_checkpoint,
    make_row,
    network_plan,
    publish_policy,
    read_meta,
    stop_reached,
    transfer_weights,
    write_meta,
)

MODEL_FILE = "model.zip"
SB3_ENVS = 16
SB3_STEPS_PER_ENV = 128


class BackboneExtractor(BaseFeaturesExtractor):
    """SB3 features extractor: a parley backbone reading the ``observation`` entry of the Dict obs."""

    def __init__(self, observation_space: gym.spaces.Dict, backbone: str = "mlp",
                 backbone_config: dict[str, Any] | None = None) -> None:
        from parley.agents.nn.backbones import make_backbone

        # Built from the vector size, as TorchPolicy builds it, so the two networks match exactly.
        size = int(np.prod(observation_space["observation"].shape))
        net = make_backbone(backbone, size, device="cpu", **dict(backbone_config or {}))
        super().__init__(observation_space, features_dim=int(net.out_dim))
        self.backbone = net
        self.backbone_name = backbone
        self.backbone_config = dict(backbone_config or {})

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.backbone(observations["observation"].float())


def policy_kwargs(backbone: str, backbone_config: dict[str, Any]) -> dict[str, Any]:
    return {"features_extractor_class": BackboneExtractor,
            "features_extractor_kwargs": {"backbone": backbone, "backbone_config": dict(backbone_config)},
            "net_arch": [], "share_features_extractor": True, "ortho_init": False}


def network_state(model: MaskablePPO) -> dict[str, torch.Tensor]:
    """The SB3 policy's weights under ActorCritic's names (backbone, policy_head, value_head)."""
    policy = model.policy
    state = {f"backbone.{k}": v for k, v in policy.features_extractor.backbone.state_dict().items()}
    state.update({f"policy_head.{k}": v for k, v in policy.action_net.state_dict().items()})
    state.update({f"value_head.{k}": v for k, v in policy.value_net.state_dict().items()})
    return {k: v.detach().cpu() for k, v in state.items()}


def load_network_state(model: MaskablePPO, state: dict[str, torch.Tensor]) -> None:
    policy = model.policy
    parts = {"backbone.": policy.features_extractor.backbone, "policy_head.": policy.action_net,
             "value_head.": policy.value_net}
    for prefix, module in parts.items():
        module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def export_sb3_policy(model: MaskablePPO, *, device: str = "cpu", deterministic: bool = True,
                      metadata: dict[str, Any] | None = None, name: str | None = None) -> TorchPolicy:
    """The MaskablePPO model's network as a TorchPolicy (same weights, same masked logits)."""
    extractor = model.policy.features_extractor
    obs_size = int(np.prod(model.observation_space["observation"].shape))
    config = {k: v for k, v in extractor.backbone_config.items() if k != "pretrained"}
    policy = TorchPolicy(extractor.backbone_name, obs_size, config, device=device, deterministic=deterministic,
                         name=name or f"sb3-{extractor.backbone_name}", metadata=metadata)
    policy.model.load_state_dict(network_state(model))
    return policy


def load_sb3_policy(path: str | Path, *, device: str = "cpu", deterministic: bool = True,
                    seed: int | None = None) -> TorchPolicy:
    """``load_policy`` for a MaskablePPO ``.zip`` saved by parley."""
    model = MaskablePPO.load(str(path), device="cpu")
    if not isinstance(model.policy.features_extractor, BackboneExtractor):
        raise ValueError(f"{path} is a MaskablePPO model without a parley backbone; parley cannot rebuild it")
    policy = export_sb3_policy(model, device=device, deterministic=deterministic,
                               metadata={"framework": "sb3", "source": str(path)})
    if seed is not None:
        policy.seed(seed)
    return policy


def _is_sb3_zip(path: Path) -> bool:
    if not (path.is_file() and path.suffix == ".zip"):
        return False
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return "policy.pth" in archive.namelist() and "data" in archive.namelist()
    except zipfile.BadZipFile:
        return False


register_policy_loader("sb3", _is_sb3_zip, load_sb3_policy)


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


class _ProgressCallback(BaseCallback):
    """Collects finished episodes' outcomes; after each rollout logs a row, checkpoints, may stop."""

    def __init__(self, trainer: _SB3Run) -> None:
        super().__init__()
        self.trainer = trainer
        self.episodes: list[dict[str, Any]] = []
        self.rollout_start = time.perf_counter()

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"]):
            if done and "agreement" in info:
                self.episodes.append(info)
        return not self.trainer.stop_requested

    def _on_rollout_start(self) -> None:
        self.rollout_start = time.perf_counter()

    def _on_rollout_end(self) -> None:
        # The rollout's timing stands for the whole iteration: SB3 trains right after this hook.
        self.trainer.end_iteration(self.episodes, time.perf_counter() - self.rollout_start)
        self.episodes = []


class _SB3Run:
    def __init__(self, config: TrainConfig, run: Path, console, on_iteration) -> None:
        self.config = config
        self.run = run
        self.on_iteration = on_iteration
        self.stop_requested = False
        self.history: list[dict[str, Any]] = []
        self.iteration = 0
        self.env_steps = 0
        self.elapsed_before = 0.0
        self.start = time.perf_counter()
        self.last_tick = self.start
        self.checkpoint: Path | None = None
        self.model: MaskablePPO | None = None
        self.view = LiveView(console, f"parley train: partners, {config.backbone} backbone, SB3 MaskablePPO -> {run}",
                             enabled=config.live)
        self.logger: RunLogger | None = None
        self.backbone = config.backbone
        self.backbone_config = dict(config.backbone_config)

    def end_iteration(self, episodes: list[dict[str, Any]], _rollout_seconds: float) -> None:
        now = time.perf_counter()
        seconds = now - self.last_tick
        self.last_tick = now
        steps = SB3_ENVS * SB3_STEPS_PER_ENV
        self.iteration += 1
        self.env_steps += steps

        def mean(key: str, only_deals: bool = False) -> float:
            values = [float(e[key]) for e in episodes if not only_deals or e["agreement"]]
            return float(np.mean(values)) if values else float("nan")

        metrics = {"score": mean("score"), "partner_score": mean("partner_score"), "agreement": mean("agreement"),
                   "pareto": mean("pareto_optimal", only_deals=True), "episodes": len(episodes)}
        row = make_row(self.iteration, self.env_steps, steps, seconds, self.elapsed_before + now - self.start, metrics)
        self.history.append(row)
        self.logger.log(row)
        self.view.update(row)
        stop = False
        if self.on_iteration is not None:
            stop = bool(self.on_iteration(row, lambda: export_sb3_policy(self.model)))
        done = stop or stop_reached(self.config, self.iteration, self.env_steps)
        if self.iteration % self.config.checkpoint_every == 0 or done:
            self.save_checkpoint(row["elapsed_s"])
        if done:
            self.stop_requested = True

    def save_checkpoint(self, elapsed: float) -> None:
        directory = self.run / CHECKPOINTS / f"iter_{self.iteration:06d}"
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(str(directory / MODEL_FILE))
        config = {k: v for k, v in self.backbone_config.items() if k != "pretrained"}
        metadata = {"framework": "sb3", "setup": "partners", "iteration": self.iteration, "env_steps": self.env_steps,
                    "name": f"sb3-partners-{self.backbone}"}
        policy = export_sb3_policy(self.model, metadata=metadata, name=metadata["name"])
        policy.backbone_config = config
        policy.save(directory / POLICY_DIR)
        write_meta(directory, iteration=self.iteration, env_steps=self.env_steps, elapsed_s=elapsed, framework="sb3")
        publish_policy(self.run, directory)
        self.checkpoint = directory


def make_sb3_env(config: TrainConfig) -> DummyVecEnv:
    from parley.agents.training.population import make_population_env

    def make(index: int):
        def build():
            env = make_population_env(config.partners, family_members=config.family_members, seed=config.seed,
                                      max_turns=config.max_turns)
            env.reset(seed=config.seed * 1000 + index)
            # The same reward scale as the RLlib setups; infos keep the points.
            return gym.wrappers.TransformReward(env, lambda reward: reward * config.reward_scale)
        return build

    return DummyVecEnv([make(i) for i in range(SB3_ENVS)])


def train_sb3(config: TrainConfig, run: Path, *, console=None, on_iteration=None) -> TrainResult:
    from parley.utils import resolve_device

    device = resolve_device(config.device)
    trainer = _SB3Run(config, run, console, on_iteration)
    env = make_sb3_env(config)
    init_policy = init_policy_for(config)
    backbone, backbone_config, trainable = network_plan(config, init_policy)
    trainer.backbone, trainer.backbone_config = backbone, backbone_config
    batch = SB3_ENVS * SB3_STEPS_PER_ENV
    try:
        if config.resume:
            checkpoint = latest_checkpoint(run)
            model = MaskablePPO.load(str(checkpoint / MODEL_FILE), env=env, device=device)
            meta = read_meta(checkpoint)
            trainer.iteration, trainer.env_steps = meta["iteration"], meta["env_steps"]
            trainer.elapsed_before = meta.get("elapsed_s", 0.0)
            trainer.checkpoint = checkpoint
        else:
            model = MaskablePPO(
                "MultiInputPolicy", env, learning_rate=config.lr, n_steps=SB3_STEPS_PER_ENV,
                batch_size=min(config.minibatch_size, batch), n_epochs=config.num_epochs, gamma=1.0,
                gae_lambda=0.95, clip_range=0.2, ent_coef=config.entropy_coeff, vf_coef=0.5, max_grad_norm=0.5,
                policy_kwargs=policy_kwargs(backbone, backbone_config), seed=config.seed, device=device, verbose=0)
            if init_policy is not None:
                from parley.agents.nn.compacter import freeze_all_but_adapters

                load_network_state(model, transfer_weights(init_policy.model.state_dict(), _actor_critic_view(model)))
                if trainable == "adapters":
                    freeze_all_but_adapters(model.policy)
        # The run's own RunLogger writes progress.csv and TensorBoard; SB3's default logger would leave an
        # empty SB3-<date> folder in the temp directory on every run.
        model.set_logger(Logger(folder=None, output_formats=[]))
        trainer.model = model
        trainer.logger = RunLogger(run, resume_from=trainer.iteration)
        if not stop_reached(config, trainer.iteration, trainer.env_steps):
            remaining_iters = (config.iterations - trainer.iteration) if config.iterations is not None else None
            remaining_steps = (config.timesteps - trainer.env_steps) if config.timesteps is not None else None
            budgets = [b for b in (remaining_iters and remaining_iters * batch, remaining_steps) if b]
            model.learn(total_timesteps=int(min(budgets)) + batch, callback=_ProgressCallback(trainer),
                        reset_num_timesteps=not config.resume)
        if trainer.checkpoint is None or trainer.stop_requested:  # keep the last update in the checkpoint
            trainer.save_checkpoint(trainer.history[-1]["elapsed_s"] if trainer.history else trainer.elapsed_before)
    finally:
        trainer.view.close()
        if trainer.logger is not None:
            trainer.logger.close()
        env.close()
    return TrainResult(run_dir=run, policy_dir=run / POLICY_DIR, checkpoint=trainer.checkpoint,
                       iterations=trainer.iteration, env_steps=trainer.env_steps,
                       elapsed_s=trainer.elapsed_before + time.perf_counter() - trainer.start, history=trainer.history)


class _actor_critic_view(torch.nn.Module):  # noqa: N801 -- a throwaway view, named for what it mimics
    """The SB3 policy's modules under ActorCritic's attribute names, for weight transfer."""

    def __init__(self, model: MaskablePPO) -> None:
        super().__init__()
        self.backbone = model.policy.features_extractor.backbone
        self.policy_head = model.policy.action_net
        self.value_head = model.policy.value_net
