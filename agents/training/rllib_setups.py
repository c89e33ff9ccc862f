"""PPO training setups for negotiation on RLlib's new API stack, as config builders.

Three setups, each a function returning a ready :class:`~ray.rllib.algorithms.ppo.PPOConfig`:

1. :func:`partner_pool_config` -- one learner against scripted partners. The partner of every episode
   is drawn from the pool; partners are not trained. Runs on the single-agent Gymnasium env with the
   partner inside, batched (``num_envs_per_env_runner`` games per env runner in one numpy vector env),
   which is where RLlib's per-step cost is smallest.
2. :func:`self_play_config` -- self-play against a league of frozen snapshots, ``num_envs_per_env_runner``
   games per env runner on the batched rules
   (:class:`~parley.agents.training.rllib_envs.NegotiationVectorMultiAgentEnv`; ``batched=False`` plays
   them one by one through the PettingZoo AEC env and
   :class:`~parley.agents.training.rllib_envs.NegotiationMultiAgentEnv`, the same episodes). Every episode the
   ``learner`` module takes a random seat and faces one of ``league_size`` frozen ``league_i`` modules.
   All league slots start as copies of the initial learner; whenever the learner's mean score in an
   iteration reaches ``league_threshold``, :class:`LeagueCallback` copies its weights into the oldest
   slot.
3. :func:`independent_learners_config` -- two learners, ``learner_0`` in seat ``agent_0`` and
   ``learner_1`` in seat ``agent_1``, each trained on its own experience (envs as for self-play).

Every setup uses :class:`~parley.agents.training.rllib_module.NegotiationRLModule` with the same backbone, and
:class:`NegotiationMetricsCallback` adds ``score``, ``agreement`` and ``pareto`` (fraction of deals that
are Pareto-optimal) to the env-runner results.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec

from parley.agents.training.rllib_connector import BatchedPPOLearnerConnector
from parley.agents.training.rllib_envs import (
    MULTI_AGENT_ENV,
    PARTNER_POOL_ENV,
    BatchedMultiAgentEnvRunner,
    BatchedPartnerPoolEnvRunner,
    PartnerPoolEnvRunner,
    WholeGamesMultiAgentEnvRunner,
    register_rllib_envs,
)
from parley.agents.training.rllib_module import module_spec
from parley.agents.training.rllib_overlap import OverlappedPPO
from parley.utils import RESOLVED_PRECISIONS

SETUPS = ("partners", "self-play", "independent")
LEARNER = "learner"
AGENTS = ("agent_0", "agent_1")


@dataclass
class PPOSettings:
    """PPO hyperparameters shared by every setup (one place to read and change them)."""

    lr: float = 1e-3
    gamma: float = 1.0  # games last at most max_turns acts and pay only at the end
    lambda_: float = 0.95
    clip_param: float = 0.2
    entropy_coeff: float = 0.01
    vf_loss_coeff: float = 0.5
    grad_clip: float = 0.5
    train_batch_size: int = 8192
    minibatch_size: int = 2048
    num_epochs: int = 4
    num_env_runners: int = 0
    num_envs_per_env_runner: int = 64
    max_turns: int = 10
    reward_scale: float = 0.1  # points / 10: returns near [0, 1] keep the shared value loss from dominating
    #: Build train batches with :class:`~parley.agents.training.rllib_connector.BatchedPPOLearnerConnector`
    #: (False: RLlib's default per-episode PPO learner pipeline, with its bootstrap row per episode).
    batched_learner: bool = True
    #: Sample as arrays, without RLlib's episode objects: the partner pool with
    #: :class:`~parley.agents.training.rllib_envs.BatchedPartnerPoolEnvRunner`, self-play and independent
    #: learners with :class:`~parley.agents.training.rllib_envs.WholeGamesMultiAgentEnvRunner` (whole games
    #: per call). Needs ``batched_learner``. False: RLlib's env runners and episodes.
    batched_sampling: bool = True
    #: Sample the next train batch on remote env runners while the learner updates on this one
    #: (:class:`~parley.agents.training.rllib_overlap.OverlappedPPO`): the sampling and the update run on two
    #: cores at once, and each batch is sampled with weights one update older than in sequential PPO, which
    #: the batched learner connector corrects for (its ``proximal`` mode; needs ``batched_learner``). With
    #: ``num_env_runners=0`` one remote env runner samples. False: RLlib's PPO, sampling then updating.
    overlap_sampling: bool = True
    #: The format of the learner's forward and backward passes: ``"float32"`` or ``"bfloat16"`` (see
    #: :func:`parley.utils.resolve_precision`); env runners act in float32 either way.
    precision: str = "float32"

    @property
    def remote_env_runners(self) -> int:
        """The remote env runners the setup starts (0: the driver samples)."""
        return max(self.num_env_runners, 1) if self.overlap_sampling else self.num_env_runners

    def __post_init__(self) -> None:
        for name in ("train_batch_size", "minibatch_size", "num_epochs", "num_envs_per_env_runner", "max_turns"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_env_runners < 0:
            raise ValueError(f"num_env_runners must be 0 or more, got {self.num_env_runners}")
        if self.precision not in RESOLVED_PRECISIONS:
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {self.precision!r}")
        if self.overlap_sampling and not self.batched_learner:
            raise ValueError("overlap_sampling needs batched_learner: the batched learner connector corrects for "
                             "the older weights the batches are sampled with (set both, or overlap_sampling=False)")
        if self.batched_sampling and not self.batched_learner:
            raise ValueError("batched_sampling needs batched_learner: only the batched learner connector reads "
                             "the batched env runner's samples (set both, or batched_sampling=False)")
        if self.minibatch_size > self.train_batch_size:
            raise ValueError(f"minibatch_size ({self.minibatch_size}) cannot exceed train_batch_size "
                             f"({self.train_batch_size})")


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def _last_info(episode: Any, agent_id: str | None) -> dict:
    """The final info dict of an episode (of ``agent_id`` in a multi-agent episode)."""
    if agent_id is None:
        infos = episode.get_infos(-1)
        return infos if isinstance(infos, dict) else {}
    agent_episode = episode.agent_episodes.get(agent_id)
    if agent_episode is None or len(agent_episode.infos) == 0:
        return {}
    return agent_episode.get_infos(-1) or {}


class NegotiationMetricsCallback(RLlibCallback):
    """Logs ``score`` (the learner's points), ``partner_score``, ``agreement`` and ``pareto`` per episode.

    In multi-agent episodes the learner is the agent played by ``learner`` (self-play) or by
    ``learner_0`` (independent learners).
    """

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        if metrics_logger is None:
            return
        learner_agent = None
        if hasattr(episode, "agent_episodes"):
            for agent_id in episode.agent_episodes:
                if episode.module_for(agent_id) in (LEARNER, "learner_0"):
                    learner_agent = agent_id
            if learner_agent is None:
                return
        info = _last_info(episode, learner_agent)
        if "agreement" not in info:
            return
        if learner_agent is None:  # the single-agent env reports the learner's side itself
            score, partner_score = info["score"], info["partner_score"]
        else:
            seat = AGENTS.index(learner_agent)
            score, partner_score = info["scores"][seat], info["scores"][1 - seat]
        agreed = bool(info["agreement"])
        metrics_logger.log_value("score", float(score), reduce="mean", window=1000)
        metrics_logger.log_value("partner_score", float(partner_score), reduce="mean", window=1000)
        metrics_logger.log_value("agreement", float(agreed), reduce="mean", window=1000)
        if agreed:
            metrics_logger.log_value("pareto", float(bool(info.get("pareto_optimal", False))),
                                     reduce="mean", window=1000)


# --------------------------------------------------------------------------------------------------
# Self-play league
# --------------------------------------------------------------------------------------------------


def league_ids(league_size: int) -> list[str]:
    return [f"league_{i}" for i in range(league_size)]


def make_self_play_mapping(league_size: int):
    """Per episode: a random seat for ``learner``, a random league slot for the other seat."""

    def mapping(agent_id: str, episode: Any, **kwargs: Any) -> str:
        digest = zlib.crc32(str(episode.id_).encode())
        if agent_id == AGENTS[digest % 2]:
            return LEARNER
        return f"league_{(digest // 2) % league_size}"

    return mapping


def league_callback_class(league_size: int, threshold: float) -> type[LeagueCallback]:
    """A :class:`LeagueCallback` subclass with these settings (RLlib builds callbacks from a class)."""
    return type("LeagueCallback", (LeagueCallback,), {"league_size": int(league_size), "threshold": float(threshold)})


def independent_mapping(agent_id: str, episode: Any, **kwargs: Any) -> str:
    return "learner_0" if agent_id == AGENTS[0] else "learner_1"


class LeagueCallback(NegotiationMetricsCallback):
    """Copies the learner into the league when its mean score reaches ``threshold``.

    The league has a fixed number of slots, all starting as copies of the initial learner; each new
    snapshot replaces the oldest one. ``snapshots`` counts the snapshots added so far (restored by the
    trainer on ``--resume``).
    """

    league_size: int = 4
    threshold: float = 5.0

    def __init__(self) -> None:
        super().__init__()
        self.snapshots = 0

    def copy_learner_to(self, algorithm, slots: list[str]) -> None:
        weights = algorithm.learner_group.get_weights([LEARNER])[LEARNER]
        algorithm.learner_group.set_weights({slot: weights for slot in slots})
        algorithm.env_runner_group.sync_weights(from_worker_or_learner_group=algorithm.learner_group,
                                                policies=list(slots), inference_only=True)

    def on_algorithm_init(self, *, algorithm, **kwargs) -> None:
        self.copy_learner_to(algorithm, league_ids(self.league_size))

    def on_train_result(self, *, algorithm, result, **kwargs) -> None:
        score = result.get("env_runners", {}).get("score")
        if score is not None and np.isfinite(score) and score >= self.threshold:
            slot = f"league_{self.snapshots % self.league_size}"
            self.copy_learner_to(algorithm, [slot])
            self.snapshots += 1
        result["league_snapshots"] = self.snapshots


# --------------------------------------------------------------------------------------------------
# Config builders
# --------------------------------------------------------------------------------------------------


def _base_config(settings: PPOSettings, *, seed: int, device: str, trained: list[str] | None = None) -> PPOConfig:
    """The settings every setup shares; ``trained``: the modules PPO updates (None: all of them)."""
    register_rllib_envs()
    use_gpu = device.startswith("cuda")
    config = (
        PPOConfig(algo_class=OverlappedPPO if settings.overlap_sampling else None)
        .framework("torch")
        .env_runners(num_env_runners=settings.remote_env_runners, num_cpus_per_env_runner=1)
        .learners(num_learners=0, num_gpus_per_learner=1 if use_gpu else 0)
        .training(
            lr=settings.lr,
            gamma=settings.gamma,
            lambda_=settings.lambda_,
            clip_param=settings.clip_param,
            entropy_coeff=settings.entropy_coeff,
            vf_loss_coeff=settings.vf_loss_coeff,
            grad_clip=settings.grad_clip,
            train_batch_size_per_learner=settings.train_batch_size,
            minibatch_size=settings.minibatch_size,
            num_epochs=settings.num_epochs,
        )
        # disable_env_checking: its random-action probe ignores the action mask. normalize_actions and
        # clip_actions only matter for Box actions; off, RLlib skips a deep copy and a per-game pass over the
        # sampled acts in every env step.
        .environment(disable_env_checking=True, normalize_actions=False, clip_actions=False)
        .debugging(seed=seed, log_level="ERROR")
        .reporting(metrics_num_episodes_for_smoothing=1000)
    )
    if settings.overlap_sampling:
        # After every iteration RLlib would fetch the env runners' connector states in a blocking call, which
        # waits behind the sample request in flight; parley's env-to-module and module-to-env connectors keep
        # no state, so there is nothing to merge or broadcast.
        # The driver's env runner keeps its env, so that it can still sample on its own (as without overlap).
        config.env_runners(merge_env_runner_states=False, broadcast_env_runner_states=False,
                           create_env_on_local_worker=True)
    if settings.batched_learner:
        gamma, lambda_, proximal = settings.gamma, settings.lambda_, settings.overlap_sampling
        config.learners(
            learner_connector=lambda *spaces: BatchedPPOLearnerConnector(*spaces, gamma=gamma, lambda_=lambda_,
                                                                         modules=trained, proximal=proximal),
            add_default_connectors_to_learner_pipeline=False)
    return config


def partner_pool_config(partners: list[str], *, backbone: str = "mlp", backbone_config: dict | None = None,
                        settings: PPOSettings | None = None, seed: int = 0, device: str = "cpu",
                        trainable: str = "all", family_members: int = 1) -> PPOConfig:
    """Setup 1: one learner against partners drawn per episode from ``partners`` (scripted names and
    ``family:NAME`` entries, each adding ``family_members`` partners; see
    :mod:`parley.agents.training.population`)."""
    settings = settings or PPOSettings()
    if not partners:
        raise ValueError("the partner pool is empty; name at least one scripted partner")
    envs = settings.num_envs_per_env_runner
    runners = max(settings.num_env_runners, 1)
    fragment = max(1, settings.train_batch_size // (envs * runners))
    return (
        _base_config(settings, seed=seed, device=device)
        .environment(PARTNER_POOL_ENV, env_config={"partners": list(partners), "family_members": family_members,
                                                   "partner_seed": seed, "max_turns": settings.max_turns,
                                                   "reward_scale": settings.reward_scale})
        .env_runners(num_envs_per_env_runner=envs, gym_env_vectorize_mode="vector_entry_point",
                     rollout_fragment_length=fragment,
                     env_runner_cls=BatchedPartnerPoolEnvRunner if settings.batched_sampling else PartnerPoolEnvRunner)
        .rl_module(rl_module_spec=module_spec(backbone, backbone_config, trainable=trainable,
                                              precision=settings.precision))
        .callbacks(NegotiationMetricsCallback)
    )


def _multi_agent_base(settings: PPOSettings, seed: int, device: str, batched: bool, trained: list[str]) -> PPOConfig:
    runners = max(settings.num_env_runners, 1)
    envs = settings.num_envs_per_env_runner
    fragment = max(1, settings.train_batch_size // (envs * runners))
    config = (
        _base_config(settings, seed=seed, device=device, trained=trained)
        .environment(MULTI_AGENT_ENV, env_config={"max_turns": settings.max_turns,
                                                  "reward_scale": settings.reward_scale})
        .env_runners(num_envs_per_env_runner=envs, rollout_fragment_length=fragment)
    )
    if batched:
        config.env_runners(env_runner_cls=WholeGamesMultiAgentEnvRunner if settings.batched_sampling
                           else BatchedMultiAgentEnvRunner)
    return config


def self_play_config(*, backbone: str = "mlp", backbone_config: dict | None = None,
                     settings: PPOSettings | None = None, seed: int = 0, device: str = "cpu",
                     trainable: str = "all", league_size: int = 4, league_threshold: float = 5.0,
                     batched: bool = True) -> PPOConfig:
    """Setup 2: the learner against a league of its own frozen snapshots (``batched``: on the batched rules)."""
    settings = settings or PPOSettings()
    if league_size < 1:
        raise ValueError(f"league_size must be at least 1, got {league_size}")
    specs = {LEARNER: module_spec(backbone, backbone_config, trainable=trainable, precision=settings.precision)}
    specs.update({slot: module_spec(backbone, backbone_config) for slot in league_ids(league_size)})
    return (
        _multi_agent_base(settings, seed, device, batched, [LEARNER])
        .multi_agent(policies=set(specs), policy_mapping_fn=make_self_play_mapping(league_size),
                     policies_to_train=[LEARNER])
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs=specs))
        .callbacks(league_callback_class(league_size, league_threshold))
    )


def independent_learners_config(*, backbone: str = "mlp", backbone_config: dict | None = None,
                                settings: PPOSettings | None = None, seed: int = 0, device: str = "cpu",
                                trainable: str = "all", batched: bool = True) -> PPOConfig:
    """Setup 3: two learners, one per seat, trained independently (``batched``: on the batched rules)."""
    settings = settings or PPOSettings()
    specs = {m: module_spec(backbone, backbone_config, trainable=trainable, precision=settings.precision)
             for m in ("learner_0", "learner_1")}
    return (
        _multi_agent_base(settings, seed, device, batched, list(specs))
        .multi_agent(policies=set(specs), policy_mapping_fn=independent_mapping,
                     policies_to_train=list(specs))
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs=specs))
        .callbacks(NegotiationMetricsCallback)
    )


def trained_module_id(setup: str) -> str | None:
    """The module whose policy a run exports (None for single-agent setups)."""
    return {"partners": None, "self-play": LEARNER, "independent": "learner_0"}[setup]


def settings_dict(settings: PPOSettings) -> dict[str, Any]:
    return asdict(settings)
