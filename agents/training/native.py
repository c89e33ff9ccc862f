"""The native side of ``parley train``: parley's own masked PPO on the batched rules, no Ray, no SB3.

``--framework native`` runs :func:`parley.agents.training.ppo.train_ppo` -- a single-process PPO that plays
whole games in lockstep on :class:`~parley.envs.negotiation.BatchedNegotiation` -- against the partner
pool, with the run directory, logs, checkpoints, ``--resume``, ``--init-from`` and ``--adapters`` of
the other frameworks. It is the fastest way to train on one machine (see ``benchmarks/RESULTS.md``);
RLlib is the way to scale out over a cluster and to train in self-play or with two learners.

How the shared settings map onto it:

* an iteration plays ``train_batch_size // GAMES_PER_BATCH_STEP`` complete games (with the default
  pool a game holds about 2.7 learner decisions, so an iteration sees about 0.7 x
  ``train_batch_size`` learner steps; ``progress.csv`` logs the exact count);
* each game's partner is drawn from ``--partners``, uniformly or (``--partner-sampling prioritised``)
  by the learner's gap to the best scripted partner against it
  (:func:`~parley.agents.training.population.reference_scores`,
  :class:`~parley.agents.training.ppo.PrioritisedSampling`; a resumed run measures the gaps afresh);
  the learner's seat and the first mover are drawn per game too;
* ``lr``, ``entropy_coeff``, ``num_epochs``, ``reward_scale`` and ``max_turns`` carry over;
* ``--opponent-model-coef X`` (> 0) gives the learner an opponent-model head on its trunk, trained to
  predict the partner's reply to each of its acts with loss weight X (``PPOConfig.opponent_model_coef``);
  the saved policy keeps the head, and acting ignores it;
  ``train_batch_size / minibatch_size`` gives the number of minibatches per epoch;
* env steps are the learner's decisions, as in the single-agent env that RLlib and SB3 train on.

A checkpoint holds the policy (``policy/``), Adam's state (``optimizer.pt``) and ``meta.json``.

On the CPU the run uses one torch thread (restored afterwards): its networks and minibatches are small,
so a second thread gains little, and on a busy machine the threads' waiting on each other made
training 8-12 times slower (1,450-1,600 against 125-200 learner steps/s on 2 shared cores).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

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
    observation_size_for,
    publish_policy,
    read_meta,
    stop_reached,
    transfer_weights,
    write_meta,
)

#: Games per iteration = train_batch_size // GAMES_PER_BATCH_STEP.
GAMES_PER_BATCH_STEP = 4
OPTIMIZER_FILE = "optimizer.pt"
#: An iteration budget large enough that only ``--iterations``/``--timesteps`` (or a callback) stop.
UNLIMITED_GAMES = 2**40


def ppo_config_for(config: TrainConfig, device: str = "cpu"):
    """The :class:`~parley.agents.training.ppo.PPOConfig` of a native run whose learner is on ``device``."""
    from parley.agents.training.ppo import PPOConfig
    from parley.utils import resolve_precision

    return PPOConfig(
        total_games=UNLIMITED_GAMES,
        games_per_iteration=max(1, config.train_batch_size // GAMES_PER_BATCH_STEP),
        update_epochs=config.num_epochs,
        num_minibatches=max(1, round(config.train_batch_size / config.minibatch_size)),
        learning_rate=config.lr,
        ent_coef=config.entropy_coeff,
        reward_scale=config.reward_scale,
        max_turns=config.max_turns,
        opponent_model_coef=config.opponent_model_coef,
        opponent_model_target=config.opponent_model_target,
        precision=resolve_precision(config.precision, device),
        seed=config.seed,
    )


def build_learner(config: TrainConfig, device: str):
    """The policy to train: fresh, from ``--init-from``, or with Compacter adapters on it."""
    from parley.agents.nn.compacter import freeze_all_but_adapters
    from parley.agents.nn.torch_policy import TorchPolicy

    init_policy = init_policy_for(config)
    backbone, backbone_config, trainable = network_plan(config, init_policy)
    saved_config = {k: v for k, v in backbone_config.items() if k != "pretrained"}
    learner = TorchPolicy(backbone, observation_size_for(config), saved_config, device=device,
                          deterministic=False, seed=config.seed, name=f"native-partners-{backbone}",
                          opponent_model=config.opponent_model_coef > 0)
    if init_policy is not None:
        learner.model.load_state_dict(transfer_weights(init_policy.model.state_dict(), learner.model))
        if trainable == "adapters":
            freeze_all_but_adapters(learner.model)
    return learner


def train_native(config: TrainConfig, run: Path, *, console=None, on_iteration=None) -> TrainResult:
    from parley.agents.nn.torch_policy import TorchPolicy
    from parley.agents.training.population import build_population, reference_scores
    from parley.agents.training.ppo import PrioritisedSampling, train_ppo
    from parley.utils import resolve_device

    device = resolve_device(config.device)
    partners = build_population(config.partners, family_members=config.family_members, seed=config.seed)
    sampling = (PrioritisedSampling(reference_scores(partners, seed=config.seed))
                if config.partner_sampling == "prioritised" else None)
    iteration = env_steps = 0
    elapsed_before = 0.0
    optimizer_state = None
    checkpoint: Path | None = None
    if config.resume:
        checkpoint = latest_checkpoint(run)
        meta = read_meta(checkpoint)
        iteration, env_steps, elapsed_before = meta["iteration"], meta["env_steps"], meta.get("elapsed_s", 0.0)
        learner = TorchPolicy.load(checkpoint / POLICY_DIR, device=device, deterministic=False)
        frozen = meta.get("frozen", [])
        for name, param in learner.model.named_parameters():
            param.requires_grad_(name not in frozen)
        optimizer_state = torch.load(checkpoint / OPTIMIZER_FILE, map_location=learner.device, weights_only=False)
    else:
        learner = build_learner(config, device)
    frozen = [name for name, param in learner.model.named_parameters() if not param.requires_grad]
    ppo = ppo_config_for(config, device)
    logger = RunLogger(run, resume_from=iteration)
    view = LiveView(console, f"parley train: partners, {learner.backbone_name} backbone, native PPO -> {run}",
                    enabled=config.live)
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    state = {"iteration": iteration, "env_steps": env_steps, "checkpoint": checkpoint}

    def greedy_copy() -> TorchPolicy:
        policy = TorchPolicy(learner.backbone_name, learner.observation_size, learner.backbone_config,
                             device="cpu", name=learner.name, metadata=dict(learner.metadata),
                             opponent_model=learner.opponent_model)
        policy.model.load_state_dict({k: v.detach().cpu() for k, v in learner.model.state_dict().items()})
        return policy

    def save_checkpoint(optimizer: torch.optim.Optimizer, elapsed: float) -> None:
        directory = run / CHECKPOINTS / f"iter_{state['iteration']:06d}"
        directory.mkdir(parents=True, exist_ok=True)
        metadata = {"framework": "native", "setup": "partners", "iteration": state["iteration"],
                    "env_steps": state["env_steps"], "name": f"native-partners-{learner.backbone_name}"}
        learner.metadata.update(metadata)
        learner.save(directory / POLICY_DIR)
        torch.save(optimizer.state_dict(), directory / OPTIMIZER_FILE)
        write_meta(directory, iteration=state["iteration"], env_steps=state["env_steps"], elapsed_s=elapsed,
                   framework="native", frozen=frozen)
        publish_policy(run, directory)
        state["checkpoint"] = directory

    def after_iteration(ppo_row: dict[str, float], optimizer: torch.optim.Optimizer) -> bool:
        state["iteration"] += 1
        steps = int(ppo_row["learner_steps_this_iteration"])
        state["env_steps"] += steps
        metrics = {"score": ppo_row["score"], "partner_score": ppo_row["partner_score"],
                   "agreement": ppo_row["agreement"], "pareto": ppo_row["pareto"],
                   "episodes": ppo.games_per_iteration}
        row = make_row(state["iteration"], state["env_steps"], steps, ppo_row["iteration_seconds"],
                       elapsed_before + time.perf_counter() - start, metrics)
        history.append(row)
        logger.log(row)
        view.update(row)
        stop = bool(on_iteration(row, greedy_copy)) if on_iteration is not None else False
        done = stop or stop_reached(config, state["iteration"], state["env_steps"])
        if state["iteration"] % config.checkpoint_every == 0 or done:
            save_checkpoint(optimizer, row["elapsed_s"])
        return done

    threads = torch.get_num_threads()
    if str(learner.device) == "cpu":
        torch.set_num_threads(1)
    try:
        if not stop_reached(config, iteration, env_steps):
            train_ppo(learner, partners, ppo, on_iteration=after_iteration, start_iteration=iteration,
                      optimizer_state=optimizer_state, partner_sampling=sampling)
    finally:
        torch.set_num_threads(threads)
        view.close()
        logger.close()
    if state["checkpoint"] is None:
        raise RuntimeError(f"the run at {run} finished without a checkpoint")
    return TrainResult(run_dir=run, policy_dir=run / POLICY_DIR, checkpoint=state["checkpoint"],
                       iterations=state["iteration"], env_steps=state["env_steps"],
                       elapsed_s=elapsed_before + time.perf_counter() - start, history=history)

