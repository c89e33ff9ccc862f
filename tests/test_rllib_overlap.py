"""Overlapped sampling (``PPOSettings.overlap_sampling``): the learner updates while a sample request is in
flight, each iteration counts the env steps it trained on, the env runner samples with the weights of one
update before, and a run resumes from its checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray.rllib.algorithms.ppo import PPO  # noqa: E402
from ray.rllib.core import DEFAULT_MODULE_ID  # noqa: E402

from parley.agents.training import rllib_setups as setups  # noqa: E402
from parley.agents.training.rllib_overlap import SAMPLE_REQUEST, OverlappedPPO  # noqa: E402
from parley.agents.training.run import TrainConfig, read_meta, read_progress, resolve_train_config, train  # noqa: E402

POOL = ["boulware", "tit_for_tat", "conceder"]
TINY = dict(train_batch_size=256, minibatch_size=128, num_epochs=1, num_envs_per_env_runner=8)


def test_overlap_sampling_picks_the_algorithm_and_a_remote_env_runner():
    overlapped = setups.partner_pool_config(POOL, settings=setups.PPOSettings(**TINY))
    assert overlapped.algo_class is OverlappedPPO and overlapped.num_env_runners == 1
    assert not overlapped.merge_env_runner_states and not overlapped.broadcast_env_runner_states
    sequential = setups.partner_pool_config(POOL, settings=setups.PPOSettings(overlap_sampling=False, **TINY))
    assert sequential.algo_class is PPO and sequential.num_env_runners == 0
    two = setups.self_play_config(settings=setups.PPOSettings(num_env_runners=2, **TINY))
    assert two.algo_class is OverlappedPPO and two.num_env_runners == 2


def learner_weights(algo) -> dict[str, np.ndarray]:
    weights = algo.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID]
    return {k: np.asarray(v).copy() for k, v in weights.items()}


def test_the_update_runs_while_the_next_batch_is_sampled_with_the_weights_one_update_behind(ray_session):
    algo = setups.partner_pool_config(POOL, settings=setups.PPOSettings(**TINY), seed=3).build_algo()
    try:
        assert isinstance(algo, OverlappedPPO)
        trained_steps, weights_before_update = [], []
        update = algo.learner_group.update

        def recording_update(*, episodes, **kwargs):
            trained_steps.append(sum(len(e) for e in episodes))
            weights_before_update.append(learner_weights(algo))
            return update(episodes=episodes, **kwargs)

        algo.learner_group.update = recording_update
        reported = [int(algo.train()["env_runners"]["num_env_steps_sampled"]) for _ in range(3)]
        # every update ran with the next sample request in flight, and one is in flight between iterations
        assert algo.overlapped_updates == 3
        assert algo.env_runner_group.num_in_flight_async_reqs(SAMPLE_REQUEST) == 1
        # each iteration counts the env steps of the batch it trained on, not those of the request in flight
        assert reported == trained_steps and min(reported) >= TINY["train_batch_size"]
        # the request in flight carries the weights from before the last update: one update behind the learner
        runner = algo.env_runner_group.foreach_env_runner(lambda r: r.module.get_state(inference_only=True),
                                                          local_env_runner=False)[0]
        before, after = weights_before_update[-1], learner_weights(algo)
        shared = sorted(set(runner) & set(after))
        assert shared
        assert all(np.allclose(np.asarray(runner[k]), before[k]) for k in shared)
        assert not all(np.allclose(np.asarray(runner[k]), after[k]) for k in shared)
    finally:
        algo.stop()


def test_sequential_ppo_samples_in_the_driver_without_requests_in_flight(ray_session):
    algo = setups.partner_pool_config(POOL, settings=setups.PPOSettings(overlap_sampling=False, **TINY)).build_algo()
    try:
        assert algo.env_runner_group.num_remote_env_runners() == 0
        assert algo.train()["env_runners"]["num_env_steps_sampled"] >= TINY["train_batch_size"]
    finally:
        algo.stop()


@pytest.mark.slow
def test_an_overlapped_run_checkpoints_and_resumes(ray_session, tmp_path):
    run = tmp_path / "overlapped"
    tiny = dict(num_envs_per_env_runner=8, train_batch_size=256, minibatch_size=128, num_epochs=1, eval_episodes=2,
                partners=POOL, live=False)
    first = train(TrainConfig(iterations=2, checkpoint_every=1, out=str(run), **tiny), evaluate=False)
    assert first.iterations == 2 and first.env_steps >= 512
    resumed = train(resolve_train_config({"resume": True, "out": str(run), "iterations": 3}), evaluate=False)
    rows = read_progress(run)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    steps = [int(r["env_steps"]) for r in rows]
    assert steps[1] == first.env_steps and steps[2] == resumed.env_steps
    assert resumed.iterations == 3 and steps[2] - steps[1] >= 256
    assert read_meta(resumed.checkpoint)["env_steps"] == resumed.env_steps


def test_the_proximal_connector_measures_the_update_from_the_learners_weights(ray_session):
    """Sampled with the learner's weights, the proximal batch is the plain one; after the learner's weights
    move, its log-probabilities are the learner's and each advantage is weighted by the truncated ratio."""
    import torch
    from ray.rllib.core.columns import Columns

    from parley.agents.training.rllib_connector import MAX_PROXIMAL_WEIGHT, BatchedPPOLearnerConnector

    settings = setups.PPOSettings(**TINY)
    algo = setups.partner_pool_config(POOL, settings=settings, seed=1).build_algo()
    try:
        chunks = algo.env_runner.sample(num_timesteps=300, explore=True)
        module = algo.learner_group._learner.module[DEFAULT_MODULE_ID]

        def batch(proximal: bool) -> dict:
            connector = BatchedPPOLearnerConnector(gamma=settings.gamma, lambda_=settings.lambda_, proximal=proximal)
            return connector(rl_module=algo.learner_group._learner.module, batch={}, episodes=chunks)[DEFAULT_MODULE_ID]

        plain, same = batch(False), batch(True)
        for key in (Columns.ACTION_LOGP, Columns.ACTION_DIST_INPUTS, "advantages"):
            np.testing.assert_allclose(same[key].numpy(), plain[key].numpy(), atol=1e-5)
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        moved, plain = batch(True), batch(False)
        log_probs = module.get_train_action_dist_cls().from_logits(
            module.forward_exploration({Columns.OBS: plain[Columns.OBS]})[Columns.ACTION_DIST_INPUTS]
        ).logp(plain[Columns.ACTIONS]).detach()
        np.testing.assert_allclose(moved[Columns.ACTION_LOGP].numpy(), log_probs.numpy(), atol=1e-5)
        ratio = np.exp(log_probs.numpy().astype(np.float64) - plain[Columns.ACTION_LOGP].numpy())
        assert (ratio < 0.9).any() and (ratio > 1.1).any()
        np.testing.assert_allclose(moved["advantages"].numpy(),
                                   plain["advantages"].numpy() * np.minimum(ratio, MAX_PROXIMAL_WEIGHT), atol=1e-4)
    finally:
        algo.stop()
