"""Crafted poisons persist: a saved submission reloads bit for bit and plants the same backdoor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parley.attacks.base import Scenario, Submission, load_submission, make_attack
from parley.attacks.datasets import load_dataset, make_synthetic
from parley.attacks.victims import TrainingRecipe
from parley.envs import poisoning_v0

FAST_SLEEPER = dict(steps=4, retrain_times=1, surrogate_epochs=1)


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic(num_classes=4, image_size=8, channels=1, train_per_class=25, test_per_class=5, seed=2)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").subset(train_per_class=20, test_per_class=8)


def test_saved_submission_reloads_exactly_with_its_header(tiny, tmp_path):
    scenario = Scenario.from_dataset(tiny, 1, 3, budget=0.05, eps=16 / 255, recipe=TrainingRecipe.tiny(tiny),
                                     victim_kwargs={"width": 8}, seed=4)
    for name, options in (("sleeper_agent", FAST_SLEEPER), ("badnets", {})):
        submission = make_attack(name, **options).craft(scenario)
        path = submission.save(tmp_path / name, scenario=scenario)
        assert path.suffix == ".npz" and path.is_file()
        loaded, header = load_submission(path, x_train=scenario.x_train)
        assert np.array_equal(loaded.indices, submission.indices)
        assert loaded.delta.dtype == np.float32 and np.array_equal(loaded.delta, submission.delta)
        assert (loaded.labels is None) == (submission.labels is None)
        if submission.labels is not None:
            assert np.array_equal(loaded.labels, submission.labels)
        assert loaded.stamp == submission.stamp == (name == "badnets")
        assert header["attack"] == name and header["threat_model"] == loaded.threat_model
        assert header["scenario"]["source_class"] == 1 and header["scenario"]["target_class"] == 3
        assert header["scenario"]["eps"] == pytest.approx(16 / 255)
        if name == "sleeper_agent":
            assert header["config"]["steps"] == 4 and header["config"]["retrain_times"] == 1
        assert np.array_equal(header["trigger"].patch, scenario.trigger.patch)
        assert header["trigger"].placement == scenario.trigger.placement
        x1, y1 = submission.apply(scenario.x_train, scenario.y_train)
        x2, y2 = loaded.apply(scenario.x_train, scenario.y_train)
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_reloading_onto_other_images_or_a_foreign_file_is_refused(tiny, tmp_path):
    scenario = Scenario.from_dataset(tiny, 0, 2, budget=0.05, recipe=TrainingRecipe.tiny(tiny), seed=1)
    path = make_attack("random_noise").craft(scenario).save(tmp_path / "noise.npz", scenario=scenario)
    shuffled = scenario.x_train[torch.randperm(len(scenario.x_train), generator=torch.Generator().manual_seed(0))]
    with pytest.raises(ValueError, match="differ from those the poisons were crafted on"):
        Submission.load(path, x_train=shuffled)
    np.savez(tmp_path / "other.npz", something=np.zeros(3))
    with pytest.raises(ValueError, match="no header"):
        Submission.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="no submission file"):
        Submission.load(tmp_path / "missing.npz")


def test_a_reloaded_poisoned_set_gives_the_same_training_set_and_asr_in_the_env(digits, tmp_path):
    def episode(submission_for):
        env = poisoning_v0.env(dataset=digits, budget=0.1, recipe=TrainingRecipe.tiny(digits), seed=3,
                               victim_kwargs={"width": 8}, defense_enabled=False, device="cpu")
        env.reset(seed=3, options={"source_class": 2, "target_class": 5})
        raw = env.unwrapped
        env.step(submission_for(raw.attacker_scenario()))
        return raw, env.infos["attacker"]

    saved = {}

    def craft_and_save(scenario):
        submission = make_attack("sleeper_agent", **FAST_SLEEPER).craft(scenario)
        saved["path"] = submission.save(tmp_path / "sleeper.npz", scenario=scenario)
        return submission

    first, first_info = episode(craft_and_save)
    second, second_info = episode(lambda scenario: Submission.load(saved["path"], x_train=scenario.x_train))
    assert torch.equal(first._x, second._x) and torch.equal(first._y, second._y)
    for key in ("attack_success_rate", "full_attack_success_rate", "clean_accuracy", "robust_accuracy"):
        assert first_info[key] == second_info[key], key
