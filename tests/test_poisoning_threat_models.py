"""Each attack under its own threat model: stamps at full contrast for BadNets and the clean-label
backdoor, eps for the perturbation attacks; the env's check honours both; bad input is refused early."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from parley.attacks.base import BudgetError, Scenario, Submission, check_submission, make_attack
from parley.attacks.datasets import load_dataset, make_synthetic
from parley.attacks.triggers import make_trigger
from parley.attacks.victims import TrainingRecipe
from parley.envs import poisoning_v0

EPS = 16 / 255


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic(num_classes=4, image_size=12, channels=1, train_per_class=25, test_per_class=5, seed=3)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").subset(train_per_class=15, test_per_class=5)


def _scenario(dataset, placement="random", **changes):
    trigger = make_trigger(1, 3, seed=0, placement=placement)
    scenario = Scenario.from_dataset(dataset, 1, 3, budget=0.1, eps=EPS, recipe=TrainingRecipe.tiny(dataset),
                                     trigger=trigger, victim_kwargs={"width": 8}, seed=0)
    return dataclasses.replace(scenario, **changes)


def _beyond_eps_box(delta, eps):
    """Per poison, the (rows, cols) extent of the pixels that moved by more than eps."""
    beyond = (np.abs(delta) > eps + 1e-6).any(1)
    extents = []
    for image in beyond:
        rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
        extents.append((rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) if len(rows) else (0, 0))
    return np.array(extents)


def test_badnets_stamps_the_full_contrast_trigger_not_an_eps_clipped_one(tiny):
    scenario = _scenario(tiny)
    submission = make_attack("badnets").craft(scenario)
    assert submission.stamp and submission.threat_model == "stamp"
    poisoned, _ = submission.apply(scenario.x_train, scenario.y_train)
    patch = torch.as_tensor(scenario.trigger.patch)
    for i in submission.indices:  # the trigger itself is somewhere in every poisoned image
        windows = poisoned[i, 0].unfold(0, 3, 1).unfold(1, 3, 1)
        assert (windows == patch[0]).flatten(2).all(2).any()
    assert np.abs(submission.delta).max() > 0.5  # far beyond eps = 0.063
    assert (_beyond_eps_box(submission.delta, EPS) <= 3).all()


def test_fixed_placement_stamps_the_bottom_right_corner(tiny):
    scenario = _scenario(tiny, placement="fixed")
    submission = make_attack("badnets").craft(scenario)
    changed = np.abs(submission.delta).max(axis=(0, 1)) > 0
    assert changed[9:, 9:].any() and not changed[:9, :].any() and not changed[:, :9].any()


def test_clean_label_backdoor_keeps_its_adversarial_part_within_eps(tiny):
    scenario = _scenario(tiny)
    submission = make_attack("clean_label", pgd_steps=2, surrogate_epochs=1).craft(scenario)
    assert submission.stamp and submission.labels is None
    assert (_beyond_eps_box(submission.delta, EPS) <= 3).all()
    assert np.abs(submission.delta).max() > EPS


@pytest.mark.parametrize("name", ["random_noise", "htba"])
def test_perturbation_attacks_stay_within_eps(name, tiny):
    options = {"htba": dict(steps=3, surrogate_epochs=1)}.get(name, {})
    submission = make_attack(name, **options).craft(_scenario(tiny))
    assert not submission.stamp and np.abs(submission.delta).max() <= EPS + 1e-6


def test_the_check_bounds_each_threat_model(tiny):
    scenario = _scenario(tiny)
    idx = scenario.class_indices(0)[:2]
    base = scenario.x_train[torch.as_tensor(idx)]

    def check(submission, **kwargs):
        check_submission(submission, scenario.x_train, scenario.y_train, max_poisons=scenario.max_poisons,
                         eps=EPS, num_classes=4, stamp_size=3, **kwargs)

    square = torch.zeros_like(base)
    square[:, :, 2:5, 6:9] = 1.0
    stamp = Submission(idx, ((base + square).clamp(0, 1) - base).numpy(), stamp=True)
    check(stamp)
    with pytest.raises(BudgetError, match="eps: max"):  # the same change as a perturbation breaks eps
        check(dataclasses.replace(stamp, stamp=False))
    wide = torch.zeros_like(base)
    wide[:, :, 2:5, 2:9] = 1.0  # 3 rows x 7 columns: not one 3x3 square
    with pytest.raises(BudgetError, match=r"stamp: poison 0 .* over 7 columns.*3x3 square") as err:
        check(Submission(idx, ((base + wide).clamp(0, 1) - base).numpy(), stamp=True))
    assert err.value.limit == "stamp"
    with pytest.raises(BudgetError, match="allow_stamp=False"):
        check(stamp, allow_stamp=False)
    with pytest.raises(ValueError, match="allow_stamp=False"):
        make_attack("badnets").craft(dataclasses.replace(scenario, allow_stamp=False))


def test_env_accepts_full_contrast_stamps_and_refuses_them_when_stamps_are_off(digits):
    def env(**kwargs):
        e = poisoning_v0.env(dataset=digits, budget=0.1, recipe="tiny", victim_kwargs={"width": 8},
                             defense_enabled=False, seed=0, device="cpu", **kwargs)
        e.reset(seed=0, options={"source_class": 1, "target_class": 7})
        return e

    on = env(trigger_placement="fixed")
    submission = make_attack("badnets").craft(on.unwrapped.attacker_scenario())
    action = submission.to_action(on.unwrapped.max_poisons)
    assert action["stamp"] == 1 and on.action_space("attacker").contains(action)
    on.step(action)
    info = on.infos["attacker"]
    assert info["num_poisons"] == len(submission) and 0.0 <= info["full_attack_success_rate"] <= 1.0
    assert info["clean_accuracy_drop"] == pytest.approx(info["reference_clean_accuracy"] - info["clean_accuracy"])
    off = env(allow_stamp=False)
    with pytest.raises(BudgetError, match="allow_stamp=False"):
        off.step(submission)


# ------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, error, message", [
    (dict(dataset=3), TypeError, "dataset must be a name"),
    (dict(dataset="imagenet"), ValueError, "unknown dataset 'imagenet'; choose one of digits, mnist5k"),
    (dict(budget="0.1"), TypeError, "budget must be a number"),
    (dict(budget=0.0), ValueError, r"budget is a fraction of the training set in \(0, 1\]"),
    (dict(eps=1.5), ValueError, r"eps is an l-infinity bound"),
    (dict(recipe="fast"), ValueError, "unknown recipe preset 'fast'; choose one of tiny, dataset, paper"),
    (dict(recipe=5), TypeError, "recipe must be a TrainingRecipe, a preset name"),
    (dict(trigger_size=0), ValueError, r"trigger_size must lie in \[1, 8\]"),
    (dict(trigger_size=2.5), TypeError, "trigger_size must be an int"),
    (dict(trigger_placement="corner"), ValueError, "trigger_placement must be one of random, fixed"),
    (dict(seed="a"), TypeError, "seed must be an int or None"),
    (dict(device="tpu"), ValueError, "unknown device 'tpu'"),
    (dict(allow_relabel="yes"), TypeError, "allow_relabel must be True or False"),
    (dict(allow_stamp=1), TypeError, "allow_stamp must be True or False"),
    (dict(defense_enabled=None), TypeError, "defense_enabled must be True or False"),
    (dict(victim_kwargs=[8]), TypeError, "victim_kwargs must be a dict"),
    (dict(victim="vgg"), ValueError, "unknown victim 'vgg'; available: small_cnn, resnet18"),
    (dict(removal_cost=-1), ValueError, "removal_cost must be >= 0"),
    (dict(training_defense="armour"), ValueError, "unknown defense 'armour'; known defenses"),
    (dict(training_defense=object()), TypeError, "training_defense must be a defense name"),
    (dict(render_mode="human"), ValueError, "no render modes"),
])
def test_every_env_argument_is_checked_when_given(digits, kwargs, error, message):
    kwargs = {"dataset": digits, **kwargs}
    with pytest.raises(error, match=message):
        poisoning_v0.env(**kwargs)


def test_reset_options_are_checked(digits):
    env = poisoning_v0.env(dataset=digits, recipe="tiny", device="cpu")
    with pytest.raises(TypeError, match=r"source_class must be an int class index in \[0, 9\]"):
        env.reset(options={"source_class": "3"})
    with pytest.raises(ValueError, match="distinct classes"):
        env.reset(options={"source_class": 2, "target_class": 12})


@pytest.mark.parametrize("name, options, error, message", [
    ("sleeper_agent", dict(steps="ten"), TypeError, "SleeperAgentConfig.steps must be int"),
    ("sleeper_agent", dict(steps=0), ValueError, "SleeperAgentConfig.steps must be >= 1"),
    ("sleeper_agent", dict(selection="best"), ValueError, "selection must be one of 'gradient_norm', 'random'"),
    ("sleeper_agent", dict(parametrisation="sigmoid"), ValueError, "one of 'direct', 'tanh'"),
    ("sleeper_agent", dict(lr_drops=(0.5, 1.5)), ValueError, r"lr_drops must lie in \(0, 1\)"),
    ("sleeper_agent", dict(augment="yes"), TypeError, "augment must be bool"),
    ("sleeper_agent", dict(surrogate_recipe="paper"), TypeError, "surrogate_recipe must be TrainingRecipe or None"),
    ("sleeper_agent", dict(source_images=0), ValueError, "source_images must be >= 1"),
    ("witches_brew", dict(restarts=0), ValueError, "WitchesBrewConfig.restarts must be >= 1"),
    ("badnets", dict(from_class="target"), ValueError, "from_class must be one of 'any', 'source'"),
    ("clean_label", dict(adversarial_fraction=2.0), ValueError, r"adversarial_fraction must lie in \[0, 1\]"),
    ("htba", dict(step_size="big"), TypeError, "HTBAConfig.step_size must be float"),
    ("htba", dict(rematch_every=0), ValueError, "rematch_every must be >= 1"),
    ("random", dict(from_class=3), TypeError, "from_class must be str"),
])
def test_attack_configs_check_types_ranges_and_preset_names(name, options, error, message):
    with pytest.raises(error, match=message):
        make_attack(name, **options)


def test_attack_names_and_inputs_are_checked(tiny):
    with pytest.raises(TypeError, match="attack name must be a str"):
        make_attack(3)
    with pytest.raises(TypeError, match="craft takes a Scenario"):
        make_attack("random").craft(tiny)
    assert make_attack("sleeper_agent", lr_drops=[0.5], steps=np.int64(3)).config.lr_drops == (0.5,)


@pytest.mark.parametrize("args, message", [
    (["--trigger-placement", "corner"], "unknown trigger placement 'corner'; choose from random, fixed"),
    (["--budget", "2"], r"budget is a fraction of the training set in \(0, 1\]"),
    (["--eps", "0"], r"eps is an l-infinity bound in \(0, 1\]"),
    (["--recipe", "fast"], "unknown recipe 'fast'; choose from tiny, dataset, paper"),
    (["--attacks", "sleeper_agent", "--attack-option", 'sleeper_agent.steps="ten"'],
     "SleeperAgentConfig.steps must be int"),
    (["--attacks", "badnets", "--attack-option", "badnets.from_class=target"], "from_class must be one of"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--executor", "cloud"], "unknown executor 'cloud'"),
])
def test_bench_cli_explains_bad_input_before_any_work(tmp_path, args, message):
    import re

    from parley.cli import app

    out = tmp_path / "never"
    result = CliRunner().invoke(app, ["bench", "attacks", *args, "--out", str(out)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and re.search(message, text), text
    assert not out.exists()


def test_mnist5k_is_the_default_scenario_of_the_env_and_the_bench():
    from parley.attacks.bench import BenchConfig

    raw = poisoning_v0.env(device="cpu").unwrapped
    assert raw.dataset.name == "mnist5k" and raw.dataset.shape == (1, 28, 28) and raw.dataset.num_train == 4000
    assert raw.trigger_size == 7 and raw.trigger_placement == "random" and raw.recipe.epochs == 15
    assert BenchConfig().dataset == "mnist5k" and BenchConfig().pairs >= 10
    raw.reset(seed=0)
    assert raw.trigger.placement == "random"
    fixed = poisoning_v0.env(device="cpu", trigger_placement="fixed").unwrapped
    fixed.reset(seed=0)
    assert fixed.trigger.locations(1, 28, 28).tolist() == [[21, 21]]
