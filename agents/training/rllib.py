"""The RLlib side of ``parley train``: build the setup's PPO config, iterate, checkpoint, export.

Reads top to bottom: start (or join) Ray, build the algorithm for the chosen setup, load
``--init-from`` weights or restore ``--resume`` state, then train iteration by iteration, logging a row
and checkpointing every ``checkpoint_every`` iterations. Each checkpoint holds the RLlib algorithm
state (``algorithm/``), the trained module exported as a TorchPolicy (``policy/``) and ``meta.json``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
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

DEFAULT_MODULE = "default_policy"
#: Where a run keeps Ray's and RLlib's log records (start-up warnings included) unless ``verbose``.
RAY_LOG = "ray.log"


@contextlib.contextmanager
def ray_log_to_file(path: Path | None) -> Iterator[None]:
    """Send the ``ray`` loggers' records and Python warnings to the file ``path`` instead of the console
    while the block runs (None: leave both alone); call :func:`route_ray_log` again after ``ray.init``,
    which resets Ray's handlers."""
    if path is None:
        yield
        return
    import ray.rllib  # noqa: F401 -- importing installs Ray's and RLlib's console handlers, replaced below

    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _routes.append(handler)
    saved = {name: (logger.handlers[:], logger.propagate) for name, logger in _ray_loggers().items()}
    warnings_logger = logging.getLogger("py.warnings")
    saved_warnings = (warnings_logger.handlers[:], warnings_logger.propagate)
    warnings_logger.handlers, warnings_logger.propagate = [handler], False
    logging.captureWarnings(True)
    # ray.init clears the ``ray`` handlers and logs before they are back; such records reach lastResort.
    saved_last_resort, logging.lastResort = logging.lastResort, handler
    route_ray_log()
    try:
        yield
    finally:
        logging.lastResort = saved_last_resort
        logging.captureWarnings(False)
        warnings_logger.handlers, warnings_logger.propagate = saved_warnings
        for name, logger in _ray_loggers().items():
            logger.handlers, logger.propagate = saved.get(name, (logger.handlers, logger.propagate))
            if name not in saved and handler in logger.handlers:
                logger.handlers = [h for h in logger.handlers if h is not handler]
        _routes.remove(handler)
        handler.close()


@contextlib.contextmanager
def native_stderr_to(path: Path | None) -> Iterator[None]:
    """Append what is written to file descriptor 2 while the block runs to ``path`` (None: leave it).

    Ray's C++ core logs straight to the process's stderr (e.g. when it creates the env runner actors),
    past Python's logging; this keeps those lines of Ray's start-up in the run's log file too.
    """
    if path is None:
        yield
        return
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


_routes: list[logging.Handler] = []  # the file handler of the run in progress, if any


def _ray_loggers() -> dict[str, logging.Logger]:
    return {name: logger for name, logger in logging.root.manager.loggerDict.items()
            if isinstance(logger, logging.Logger) and (name == "ray" or name.startswith("ray."))}


def route_ray_log() -> None:
    """Point every Ray logger that writes on its own (the ``ray`` root, RLlib's, Ray Data's) at the run's
    log file; the others reach it through ``ray``. Does nothing outside :func:`ray_log_to_file`."""
    if not _routes:
        return
    for name, logger in _ray_loggers().items():
        if name == "ray" or logger.handlers or not logger.propagate:
            logger.handlers = [_routes[-1]]


def start_ray(address: str | None, *, verbose: bool = False) -> bool:
    """Join the cluster at ``address`` or start a local Ray; returns True when this call started it.

    ``verbose`` also shows the env runners' and learners' own output on the console.
    """
    import ray

    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=address, log_to_driver=verbose, configure_logging=False)
        except ConnectionError as err:
            if "InvalidAuthToken" in str(err.__cause__ or "") and os.environ.get("RAY_AUTH_MODE") != "token":
                raise ConnectionError(
                    f"the Ray cluster at {address} uses token authentication (the default of `ray start` since "
                    "Ray 2.60): run parley train with RAY_AUTH_MODE=token in the environment and the cluster's "
                    "token in ~/.ray/auth_token or RAY_AUTH_TOKEN") from err
            raise
    else:
        ray.init(include_dashboard=False, log_to_driver=verbose, configure_logging=False)
    return True


def build_algorithm_config(config: TrainConfig, backbone: str, backbone_config: dict[str, Any], trainable: str):
    """The PPOConfig of the configured setup."""
    from parley.agents.training import rllib_setups as setups
    from parley.utils import resolve_device, resolve_precision

    device = resolve_device(config.device)
    settings = setups.PPOSettings(
        lr=config.lr, entropy_coeff=config.entropy_coeff, train_batch_size=config.train_batch_size,
        minibatch_size=config.minibatch_size, num_epochs=config.num_epochs,
        num_env_runners=config.num_env_runners, num_envs_per_env_runner=config.num_envs_per_env_runner,
        max_turns=config.max_turns, reward_scale=config.reward_scale, overlap_sampling=config.overlap_sampling,
        precision=resolve_precision(config.precision, device))
    common = dict(backbone=backbone, backbone_config=backbone_config, settings=settings, seed=config.seed,
                  device=device, trainable=trainable)
    if config.setup == "self-play":
        return setups.self_play_config(**common, league_size=config.league_size,
                                       league_threshold=config.league_threshold)
    if config.setup == "independent":
        return setups.independent_learners_config(**common)
    return setups.partner_pool_config(config.partners, family_members=config.family_members, **common)


def trained_modules(config: TrainConfig) -> list[str]:
    return {"partners": [DEFAULT_MODULE], "self-play": ["learner"],
            "independent": ["learner_0", "learner_1"]}[config.setup]


def module_state(algo, module_id: str) -> dict[str, torch.Tensor]:
    """The module's network weights (keys of :class:`ActorCritic`) from the learner."""
    weights = algo.learner_group.get_weights([module_id])[module_id]
    return {k[len("model."):]: torch.as_tensor(np.asarray(v)) for k, v in weights.items() if k.startswith("model.")}


def set_module_state(algo, module_ids: list[str], state: dict[str, torch.Tensor]) -> None:
    """Load network weights into the learner's modules and push them to the env runners."""
    current = algo.learner_group.get_weights(module_ids)
    update = {}
    for mid in module_ids:
        full = dict(current[mid])
        for key, value in state.items():
            full["model." + key] = value.detach().cpu().numpy()
        update[mid] = full
    algo.learner_group.set_weights(update)
    algo.env_runner_group.sync_weights(from_worker_or_learner_group=algo.learner_group, policies=list(module_ids),
                                       inference_only=True)


def current_policy(algo, module_id: str, backbone: str, backbone_config: dict[str, Any], obs_size: int,
                   *, name: str | None = None, metadata: dict[str, Any] | None = None):
    """The module's current weights as a TorchPolicy (CPU, greedy)."""
    from parley.agents.nn.torch_policy import TorchPolicy

    saved_config = {k: v for k, v in backbone_config.items() if k != "pretrained"}
    policy = TorchPolicy(backbone, obs_size, saved_config, device="cpu", name=name, metadata=metadata)
    policy.model.load_state_dict(module_state(algo, module_id))
    return policy


def export_module(algo, module_id: str, backbone: str, backbone_config: dict[str, Any], obs_size: int,
                  path: Path, metadata: dict[str, Any]) -> Path:
    current_policy(algo, module_id, backbone, backbone_config, obs_size, name=metadata.get("name"),
                   metadata=metadata).save(path)
    return path


def _league_callback(algo):
    from parley.agents.training.rllib_setups import LeagueCallback

    callbacks = getattr(algo, "callbacks", None)
    for cb in callbacks if isinstance(callbacks, list) else [callbacks]:
        if isinstance(cb, LeagueCallback):
            return cb
    return None


def train_rllib(config: TrainConfig, run: Path, *, console=None, on_iteration=None) -> TrainResult:
    """Train with RLlib; torch runs on one thread in this process, as Ray sets it up in its workers
    (small forward passes lose to the threads' hand-offs, see ``rllib_envs.one_torch_thread``)."""
    from parley.agents.training.rllib_envs import one_torch_thread

    with ray_log_to_file(None if config.verbose else run / RAY_LOG), one_torch_thread():
        return _train_rllib(config, run, console=console, on_iteration=on_iteration)


def _train_rllib(config: TrainConfig, run: Path, *, console=None, on_iteration=None) -> TrainResult:
    import ray

    quiet = None if config.verbose else run / RAY_LOG
    with native_stderr_to(quiet):
        started = start_ray(config.address, verbose=config.verbose)
    route_ray_log()
    init_policy = init_policy_for(config)
    backbone, backbone_config, trainable = network_plan(config, init_policy)
    obs_size = observation_size_for(config)
    with native_stderr_to(quiet):
        algo = build_algorithm_config(config, backbone, backbone_config, trainable).build_algo()
    route_ray_log()
    view = None
    logger = None
    try:
        modules = trained_modules(config)
        iteration, env_steps, elapsed_before = 0, 0, 0.0
        if config.resume:
            checkpoint = latest_checkpoint(run)
            algo.restore_from_path(str((checkpoint / "algorithm").resolve()))
            meta = read_meta(checkpoint)
            iteration, env_steps, elapsed_before = meta["iteration"], meta["env_steps"], meta.get("elapsed_s", 0.0)
            league = _league_callback(algo)
            if league is not None:
                league.snapshots = int(meta.get("league_snapshots", 0))
        elif init_policy is not None:
            from parley.agents.training.rllib_module import build_network

            network = build_network(backbone, obs_size, backbone_config)
            state = transfer_weights(init_policy.model.state_dict(), network)
            set_module_state(algo, modules, state)
            league = _league_callback(algo)
            if league is not None:
                league.copy_learner_to(algo, [f"league_{i}" for i in range(config.league_size)])

        logger = RunLogger(run, resume_from=iteration)
        title = f"parley train: {config.setup}, {backbone} backbone, RLlib PPO -> {run}"
        view = LiveView(console, title, enabled=config.live)
        history: list[dict[str, Any]] = []
        checkpoint = latest_checkpoint(run) if config.resume else None
        start = time.perf_counter()
        while not stop_reached(config, iteration, env_steps):
            tick = time.perf_counter()
            result = algo.train()
            seconds = time.perf_counter() - tick
            iteration += 1
            runners = result.get("env_runners", {})
            steps = int(runners.get("num_env_steps_sampled", 0) or 0)
            env_steps += steps
            metrics = {k: runners.get(k) for k in ("score", "partner_score", "agreement", "pareto")}
            metrics["episodes"] = runners.get("num_episodes", 0)
            row = make_row(iteration, env_steps, steps, seconds, elapsed_before + time.perf_counter() - start,
                           metrics, result.get("league_snapshots", ""))
            history.append(row)
            logger.log(row)
            view.update(row)
            stop = False
            if on_iteration is not None:
                stop = bool(on_iteration(row, lambda: current_policy(algo, modules[0], backbone, backbone_config,
                                                                     obs_size)))
            if iteration % config.checkpoint_every == 0 or stop or stop_reached(config, iteration, env_steps):
                checkpoint = save_checkpoint(algo, config, run, iteration, env_steps, row["elapsed_s"],
                                             modules[0], backbone, backbone_config, obs_size,
                                             result.get("league_snapshots", 0))
            if stop:
                break
        if checkpoint is None:  # nothing trained (a resume past its target): export the restored state
            checkpoint = save_checkpoint(algo, config, run, iteration, env_steps, elapsed_before, modules[0],
                                         backbone, backbone_config, obs_size, 0)
        return TrainResult(run_dir=run, policy_dir=run / POLICY_DIR, checkpoint=checkpoint, iterations=iteration,
                           env_steps=env_steps, elapsed_s=elapsed_before + time.perf_counter() - start,
                           history=history)
    finally:
        if view is not None:
            view.close()
        if logger is not None:
            logger.close()
        algo.stop()
        if started:
            ray.shutdown()


def save_checkpoint(algo, config: TrainConfig, run: Path, iteration: int, env_steps: int, elapsed: float,
                    module_id: str, backbone: str, backbone_config: dict[str, Any], obs_size: int,
                    league_snapshots: Any) -> Path:
    directory = run / CHECKPOINTS / f"iter_{iteration:06d}"
    directory.mkdir(parents=True, exist_ok=True)
    algo.save_to_path(str((directory / "algorithm").resolve()))
    metadata = {"framework": "rllib", "setup": config.setup, "iteration": iteration, "env_steps": env_steps,
                "module": module_id, "name": f"rllib-{config.setup}-{backbone}"}
    export_module(algo, module_id, backbone, backbone_config, obs_size, directory / POLICY_DIR, metadata)
    write_meta(directory, iteration=iteration, env_steps=env_steps, elapsed_s=elapsed, framework="rllib",
               league_snapshots=int(league_snapshots or 0))
    publish_policy(run, directory)
    return directory
