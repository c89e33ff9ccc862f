"""poisoning_v0: one episode end to end on digits, budget refusals, rewards/infos, PettingZoo api_test."""

from __future__ import annotations

import numpy as np
import pytest

from parley.attacks.base import BudgetError, Submission, make_attack
from parley.attacks.datasets import load_dataset
from parley.attacks.defenses import make_defense
from parley.attacks.victims import TrainingRecipe
from parley.envs import poisoning_v0


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _tiny_env(dataset, **kwargs):
    kwargs.setdefault("recipe", TrainingRecipe.tiny(dataset).replace(epochs=3))
    kwargs.setdefault("victim_kwargs", {"width": 8})
    return poisoning_v0.env(dataset=dataset, seed=3, device="auto", **kwargs)


def test_episode_end_to_end_on_digits_with_an_attack_and_a_defense(digits):
    env = _tiny_env(digits)
    env.reset(seed=5)
    assert env.agents == ["attacker", "defender"] and env.agent_selection == "attacker"
    obs = env.observe("attacker")
    assert obs["x_train"].shape == (1438, 1, 8, 8) and int(obs["max_poisons"]) == 14
    assert obs["source_class"] != obs["target_class"] and obs["trigger"].shape == (1, 3, 3)
    scenario = env.unwrapped.attacker_scenario()
    assert (scenario.source_class, scenario.target_class) == (int(obs["source_class"]), int(obs["target_class"]))
    sub = make_attack("sleeper_agent", steps=4, retrain_times=1, surrogate_epochs=1).craft(scenario)
    env.step(sub)
    assert env.agent_selection == "defender"
    d_obs, reward, term, trunc, _ = env.last()
    assert not term and reward == 0.0
    poisoned = sub.indices[0]
    assert np.allclose(d_obs["x_train"][poisoned], np.clip(obs["x_train"][poisoned] + sub.delta[0], 0, 1))
    assert set(d_obs) == {"x_train", "y_train", "max_poisons"}  # no source, target or trigger
    removal = sub.indices[:5].tolist() + [i for i in range(30) if i not in set(sub.indices)][:3]
    env.step({"remove": np.isin(np.arange(1438), removal).astype(np.int8)})
    info = env.infos["attacker"]
    assert all(env.terminations.values())
    for key in ("clean_accuracy", "attack_success_rate", "robust_accuracy", "train_time_s", "eval_time_s",
                "attacker_time_s", "defender_time_s"):
        assert 0.0 <= info[key] and np.isfinite(info[key]), key
    assert info["clean_accuracy"] > 0.5  # the victim did learn
    assert (info["num_poisons"], info["num_removed"], info["clean_removed"]) == (len(sub), 8, 3)
    assert info["poison_precision"] == pytest.approx(5 / 8) and info["poison_recall"] == pytest.approx(5 / len(sub))
    assert env.rewards["attacker"] == pytest.approx(info["attack_success_rate"])
    expected_def = info["clean_accuracy"] - info["attack_success_rate"] - 0.001 * 3
    assert env.rewards["defender"] == pytest.approx(expected_def)
    assert info["attack_info"]["attack"] == "sleeper_agent"
    for _ in list(env.agents):
        env.step(None)
    assert env.agents == []


def test_budget_violations_are_refused_and_leave_the_episode_in_place(digits):
    env = _tiny_env(digits, budget=0.005)
    env.reset(seed=1)
    p = env.unwrapped.max_poisons
    assert p == 7
    action = {"indices": np.arange(p), "delta": np.zeros((p, 1, 8, 8), np.float32), "labels": -np.ones(p, np.int64)}
    big = dict(action, delta=np.full((p, 1, 8, 8), 0.2, np.float32))
    with pytest.raises(BudgetError, match="eps: max"):
        env.step(big)
    with pytest.raises(BudgetError, match="budget: 8 poisons submitted but the budget allows at most 7"):
        env.step(Submission(np.arange(8), np.zeros((8, 1, 8, 8), np.float32)))
    dup = dict(action, indices=np.array([3, 3] + [-1] * (p - 2)))
    with pytest.raises(BudgetError, match="indices: indices must be unique"):
        env.step(dup)
    assert env.agent_selection == "attacker"  # nothing happened
    env.step(action)
    assert env.agent_selection == "defender"


def test_clean_label_threat_model_and_single_agent_mode(digits):
    env = _tiny_env(digits, allow_relabel=False, defense_enabled=False)
    env.reset(seed=2)
    assert env.agents == ["attacker"]
    scenario = env.unwrapped.attacker_scenario()
    with pytest.raises(ValueError, match="dirty-label"):
        make_attack("badnets").craft(scenario)
    sub = Submission(scenario.class_indices(0)[:2], np.zeros((2, 1, 8, 8), np.float32), labels=[1, 1])
    with pytest.raises(BudgetError, match="labels: 2 labels changed"):
        env.step(sub)
    env.step(make_attack("random_noise").craft(scenario))
    assert env.terminations["attacker"] and "attack_success_rate" in env.infos["attacker"]


def test_training_defense_changes_the_victims_recipe(digits):
    env = poisoning_v0.raw_env(dataset=digits, recipe=TrainingRecipe.tiny(digits), training_defense="dp_sgd")
    assert env.training_defense.adjust_recipe(env.recipe).grad_clip == make_defense("dp_sgd").clip_norm


def test_bad_arguments_are_explained(digits):
    with pytest.raises(ValueError, match="eps is an l-infinity bound"):
        poisoning_v0.env(dataset=digits, eps=2.0)
    with pytest.raises(ValueError, match=r"budget is a fraction of the training set in \(0, 1\]"):
        poisoning_v0.env(dataset=digits, budget=5)
    with pytest.raises(ValueError, match="unknown victim"):
        poisoning_v0.env(dataset=digits, victim="vgg")
    env = _tiny_env(digits)
    with pytest.raises(ValueError, match="distinct classes"):
        env.reset(options={"source_class": 2, "target_class": 2})


def test_sampled_attacker_actions_are_valid(digits):
    env = _tiny_env(digits)
    env.reset(seed=0)
    space = env.action_space("attacker")
    for _ in range(20):
        action = space.sample()
        assert space.contains(action)
        sub = Submission.from_action(action)
        from parley.attacks.base import check_submission

        check_submission(sub, digits.x_train, digits.y_train, max_poisons=14, eps=16 / 255, num_classes=10,
                         allow_relabel=False)


def test_pettingzoo_api_test(digits):
    from pettingzoo.test import api_test

    small = digits.subset(train_per_class=20, test_per_class=5)
    api_test(_tiny_env(small, recipe=TrainingRecipe.tiny(small).replace(epochs=1)), num_cycles=3)


def test_registered_entry_point_builds_the_env():
    from parley.registration import ENV_SPECS

    spec = next(s for s in ENV_SPECS if s.env_id == "parley/poisoning-v0")
    module, attr = spec.entry_point.split(":")
    import importlib

    assert getattr(importlib.import_module(module), attr) is poisoning_v0.env
