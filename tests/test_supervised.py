"""Behaviour cloning: beats a random policy on held-out acts, masks illegal acts, saves and loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parley.agents.nn.torch_policy import TorchPolicy, load_policy
from parley.agents.partners.synthetic import synthetic_corpus
from parley.agents.training.supervised import (
    SupervisedConfig,
    action_accuracy,
    action_probabilities,
    check_dataset,
    random_policy_accuracy,
    train_supervised,
)
from parley.envs.corpus import corpus_dataset, load_corpus, split_by_scenario

SMALL = SupervisedConfig(epochs=6, backbone_config={"hidden_sizes": (64, 64)}, device="cpu", seed=0)


@pytest.fixture(scope="module")
def synthetic_split():
    train, heldout = split_by_scenario(synthetic_corpus(800, seed=5), [0.75, 0.25], seed=0)
    return corpus_dataset(train), corpus_dataset(heldout)


@pytest.fixture(scope="module")
def trained(synthetic_split):
    train, _ = synthetic_split
    return train_supervised(train, SMALL)


def test_sl_beats_random_on_heldout_act_accuracy(trained, synthetic_split):
    _, heldout = synthetic_split
    accuracy = action_accuracy(trained.policy, heldout)
    chance = random_policy_accuracy(heldout)
    assert accuracy > 5 * chance
    assert trained.history[-1]["loss"] < trained.history[0]["loss"]


def test_sl_beats_random_on_the_corpus(corpus_dir):
    if corpus_dir is None:
        pytest.skip("the Deal-or-No-Deal corpus is not on this machine")
    train, heldout = split_by_scenario(load_corpus(corpus_dir / "val.txt"), [0.7, 0.3], seed=0)
    train_data, heldout_data = corpus_dataset(train), corpus_dataset(heldout)
    result = train_supervised(train_data, SupervisedConfig(epochs=10, backbone_config={"hidden_sizes": (64, 64)},
                                                           device="cpu"))
    assert action_accuracy(result.policy, heldout_data) > 3 * random_policy_accuracy(heldout_data)


def test_illegal_actions_get_no_probability(trained, synthetic_split):
    _, heldout = synthetic_split
    probs = action_probabilities(trained.policy, heldout.observations[:200], heldout.masks[:200])
    assert np.all(probs[heldout.masks[:200] == 0] < 1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    acts = trained.policy.act_batch(heldout.observations[:200], heldout.masks[:200])
    assert heldout.masks[:200][np.arange(200), acts].all()


def test_save_and_load_like_any_policy(trained, synthetic_split, tmp_path):
    _, heldout = synthetic_split
    trained.policy.save(tmp_path / "sl")
    for loaded in (TorchPolicy.load(tmp_path / "sl", device="cpu"), load_policy(tmp_path / "sl", device="cpu")):
        before = action_probabilities(trained.policy, heldout.observations[:50], heldout.masks[:50])
        after = action_probabilities(loaded, heldout.observations[:50], heldout.masks[:50])
        np.testing.assert_allclose(before, after, atol=1e-6)
    assert loaded.metadata["supervised"]["examples"] > 0


def test_datasets_with_illegal_labels_are_refused(synthetic_split):
    train, _ = synthetic_split
    bad = train.subset(np.arange(10))
    bad.actions = bad.actions.copy()
    bad.masks = bad.masks.copy()
    bad.masks[3, bad.actions[3]] = 0
    with pytest.raises(ValueError, match="example 3"):
        check_dataset(bad)
    with pytest.raises(ValueError, match="empty"):
        check_dataset(train.subset(np.arange(0)))


def test_training_continues_from_a_given_policy(trained, synthetic_split):
    train, _ = synthetic_split
    before = [p.detach().clone() for p in trained.policy.model.parameters()]
    from parley.agents.training.supervised import clone_policy

    copy = clone_policy(trained.policy)
    train_supervised(train.subset(np.arange(64)), SupervisedConfig(epochs=1, device="cpu"), policy=copy)
    after_original = list(trained.policy.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after_original))  # the clone trained, not the original
    assert any(not torch.equal(a, b) for a, b in zip(before, copy.model.parameters()))
