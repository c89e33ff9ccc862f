"""The batched PPO learner connector against RLlib's default PPO learner pipeline: same steps, same value
targets, same advantages up to RLlib's standardisation over its bootstrap rows, on sampled episodes."""

from __future__ import annotations

import copy

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray.rllib.core.columns import Columns  # noqa: E402
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets  # noqa: E402

from parley.agents.training import rllib_setups as setups  # noqa: E402
from parley.agents.training.rllib_connector import BatchedPPOLearnerConnector, gae_advantages  # noqa: E402


def test_gae_over_all_chunks_at_once_matches_rllibs_recursion():
    """Random chunks, terminated or cut with a bootstrap value: RLlib's value targets over the same chunks
    each elongated by one bootstrap step (as its PPO pipeline does) equal ours on every real step."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 7, size=300)
    terminated = rng.random(300) < 0.7
    steps = int(lengths.sum())
    rewards, values = rng.normal(size=steps), rng.normal(size=steps)
    bootstrap = np.where(terminated, 0.0, rng.normal(size=300))
    ends = np.cumsum(lengths)
    ours = gae_advantages(rewards, values, ends, bootstrap, gamma=0.99, lambda_=0.95) + values
    # RLlib's layout: each chunk plus one artificial step holding the bootstrap value
    r, v, term, trunc, real = [], [], [], [], []
    for start, end, done, boot in zip(ends - lengths, ends, terminated, bootstrap):
        n = end - start
        r += [*rewards[start:end], 0.0]
        v += [*values[start:end], boot]
        term += [0.0] * (n - 1) + [float(done), 0.0]
        trunc += [0.0] * (n - 1) + [float(not done), 0.0]
        real += [True] * n + [False]
    theirs = compute_value_targets(values=np.array(v), rewards=np.array(r), terminateds=np.array(term),
                                   truncateds=np.array(trunc), gamma=0.99, lambda_=0.95)
    np.testing.assert_allclose(ours, theirs[np.array(real)], rtol=1e-5, atol=1e-5)


def test_gae_rejects_an_empty_chunk():
    with pytest.raises(ValueError, match="at least one step"):
        gae_advantages(np.zeros(2), np.zeros(2), np.array([2, 2]), np.zeros(2), gamma=1.0, lambda_=0.95)


@pytest.mark.parametrize("setup", ["partners", "self-play"])
def test_batched_connector_builds_rllibs_train_batch_without_the_bootstrap_rows(setup, ray_session):
    """Episodes sampled in two calls (so chunks end open, with a bootstrap value, and continue with a
    lookback) go through RLlib's default pipeline and through ours with the same module."""
    settings = setups.PPOSettings(train_batch_size=512, minibatch_size=256, num_epochs=1, num_envs_per_env_runner=32,
                                  batched_learner=False, batched_sampling=False, overlap_sampling=False)
    if setup == "partners":
        config, module_id, trained = setups.partner_pool_config(["boulware", "tit_for_tat", "random"],
                                                                settings=settings), "default_policy", None
    else:
        config, module_id, trained = setups.self_play_config(settings=settings, league_size=2), "learner", ["learner"]
    algo = config.build_algo()
    try:
        episodes = [*algo.env_runner.sample(num_timesteps=300, explore=True),
                    *algo.env_runner.sample(num_timesteps=300, explore=True)]
        learner = algo.learner_group._learner
        theirs = learner._learner_connector(rl_module=learner.module, batch={}, episodes=copy.deepcopy(episodes),
                                            shared_data={}, metrics=learner.metrics)[module_id]
        connector = BatchedPPOLearnerConnector(gamma=settings.gamma, lambda_=settings.lambda_, modules=trained)
        batch = connector(rl_module=learner.module, batch={}, episodes=copy.deepcopy(episodes))
    finally:
        algo.stop()
    assert set(batch) == {module_id}  # league modules are not trained: no batch built for them
    ours = batch[module_id]
    real = theirs[Columns.LOSS_MASK].numpy().astype(bool)
    assert (~real).sum() > 50 and len(ours[Columns.ACTIONS]) == real.sum()  # one bootstrap row per chunk dropped
    chunk_kinds = [(c.is_terminated, c.t_started > 0) for c in
                   connector.single_agent_episode_iterator(episodes, agents_that_stepped_only=False)]
    assert {(True, False), (False, False), (True, True)} <= set(chunk_kinds)  # whole, cut open, continued
    for key in ("observation", "action_mask"):
        np.testing.assert_array_equal(ours[Columns.OBS][key].numpy(), theirs[Columns.OBS][key].numpy()[real])
    for key in (Columns.ACTIONS, Columns.ACTION_LOGP, Columns.ACTION_DIST_INPUTS, "value_targets"):
        np.testing.assert_allclose(ours[key].numpy(), theirs[key].numpy()[real], rtol=1e-5, atol=1e-5)
    # RLlib standardises advantages over its bootstrap rows too; standardised over the real rows they agree
    reference = theirs["advantages"].numpy()[real].astype(np.float64)
    reference = (reference - reference.mean()) / reference.std()
    np.testing.assert_allclose(ours["advantages"].numpy(), reference, atol=1e-4)
    assert abs(float(ours["advantages"].mean())) < 1e-5


def test_masked_categorical_gives_rllibs_categorical_loss_and_gradients():
    """The PPO loss's pieces (log-probability, KL from the sampling distribution, entropy) and their
    gradients with the module's distribution equal those with RLlib's TorchCategorical on masked logits."""
    import torch
    from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical

    from parley.agents.nn.torch_policy import mask_logits
    from parley.agents.training.rllib_module import MaskedCategorical

    generator = torch.Generator().manual_seed(0)
    masks = (torch.rand(400, 252, generator=generator) < 0.2).to(torch.int8)
    masks[:, 7] = 1
    actions = torch.stack([torch.multinomial(m.float(), 1, generator=generator)[0] for m in masks])
    logits = torch.randn(400, 252, generator=generator, requires_grad=True)
    sampled = mask_logits(torch.randn(400, 252, generator=generator), masks)
    results = []
    for cls in (TorchCategorical, MaskedCategorical):
        logits.grad = None
        current, before = cls.from_logits(mask_logits(logits, masks)), cls.from_logits(sampled)
        pieces = torch.stack([current.logp(actions).mean(), before.kl(current).mean(), current.entropy().mean()])
        pieces.sum().backward()
        results.append((pieces.detach(), logits.grad.clone()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-5, atol=1e-6)


def test_log_softmax_categorical_draws_follow_the_masked_probabilities():
    """Inverse-CDF draws: frequencies within sampling error of the probabilities, never an illegal act
    (illegal acts at the start and the end of the row included)."""
    import torch

    from parley.agents.nn.torch_policy import LogSoftmaxCategorical, mask_logits

    torch.manual_seed(0)
    masks = (torch.rand(4, 252) < 0.1).to(torch.int8)
    masks[:, 3] = 1
    masks[:, 0] = masks[:, 251] = 0
    distribution = LogSoftmaxCategorical(mask_logits(torch.randn(4, 252) * 2, masks))
    draws = torch.stack([distribution.sample() for _ in range(20_000)]).numpy()
    for row in range(4):
        frequency = np.bincount(draws[:, row], minlength=252) / len(draws)
        probability = distribution.probs[row].numpy()
        assert np.all(np.abs(frequency - probability) <= 5 * np.sqrt(probability * (1 - probability) / len(draws)) + 1e-4)
        assert frequency[masks[row].numpy() == 0].sum() == 0
