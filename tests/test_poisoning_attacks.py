"""Attack interface: budget and eps enforcement, every attack's submission, metrics on hand-built
predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parley.attacks import base
from parley.attacks.base import (
    BudgetError,
    Scenario,
    Submission,
    attack_success_rate,
    check_submission,
    clean_accuracy,
    list_attacks,
    make_attack,
    make_attack_for,
    max_poisons_for,
    poison_precision_recall,
    robust_accuracy,
)
from parley.attacks.datasets import make_synthetic
from parley.attacks.victims import TrainingRecipe

EPS = 16 / 255


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic(num_classes=4, image_size=8, channels=1, train_per_class=25, test_per_class=5, seed=2)


@pytest.fixture(scope="module")
def scenario(tiny):
    return Scenario.from_dataset(tiny, source_class=1, target_class=3, budget=0.05, eps=EPS,
                                 recipe=TrainingRecipe.tiny(tiny), victim_kwargs={"width": 8}, seed=0)


def _valid(scenario, k=3):
    idx = scenario.class_indices(scenario.target_class)[:k]
    return Submission(idx, np.zeros((k, *scenario.shape), np.float32))


def _check(scenario, sub, allow_relabel=True):
    check_submission(sub, scenario.x_train, scenario.y_train, max_poisons=scenario.max_poisons, eps=scenario.eps,
                     num_classes=scenario.num_classes, allow_relabel=allow_relabel, stamp_size=scenario.trigger.size)



def matching_loss_before(matcher, model, scenario, poison_idx):
    """The poisons' clean images and their gradient-matching loss before any perturbation."""
    g_s = matcher.source_gradient(model)
    s_norm = torch.sqrt(sum((g ** 2).sum() for g in g_s))
    base_x = scenario.x_train[torch.as_tensor(poison_idx)]
    target = torch.full((len(poison_idx),), scenario.target_class)
    return base_x, float(matcher._matching_loss(model, g_s, s_norm, base_x, target, False))

def test_budget_counts_images(scenario):
    assert max_poisons_for(100, 0.05) == 5 and max_poisons_for(1437, 0.01) == 14 and max_poisons_for(10, 0.01) == 1
    assert scenario.max_poisons == 5
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        max_poisons_for(100, 0)
    idx = np.arange(6)
    with pytest.raises(BudgetError, match="budget: 6 poisons submitted but the budget allows at most 5") as err:
        _check(scenario, Submission(idx, np.zeros((6, 1, 8, 8), np.float32)))
    assert err.value.limit == "budget" and isinstance(err.value, ValueError)


def test_eps_pixel_range_indices_labels_and_shape(scenario):
    sub = _valid(scenario)
    _check(scenario, sub)
    too_big = Submission(sub.indices, np.full_like(sub.delta, EPS * 1.5))
    with pytest.raises(BudgetError, match=r"eps: max \|delta\| = 0.09412 exceeds eps = 0.06275") as err:
        _check(scenario, too_big)
    assert err.value.limit == "eps"
    # within eps but pushing a bright pixel above 1
    bright = int(np.argmax(scenario.x_train.flatten(1).max(1).values.numpy()))
    push = Submission([bright], np.full((1, 1, 8, 8), EPS, np.float32))
    if float(scenario.x_train[bright].max()) > 1 - EPS:
        with pytest.raises(BudgetError, match=r"pixel_range: x \+ delta must stay in \[0, 1\]"):
            _check(scenario, push)
    dark = Submission(sub.indices, np.full_like(sub.delta, -EPS))
    with pytest.raises(BudgetError, match="pixel_range"):
        _check(scenario, Submission(np.flatnonzero(scenario.x_train.flatten(1).min(1).values.numpy() == 0)[:3],
                                    dark.delta))
    with pytest.raises(BudgetError, match=r"indices: indices must lie in \[0, 99\]; got \[100\]"):
        _check(scenario, Submission([0, 100], np.zeros((2, 1, 8, 8), np.float32)))
    with pytest.raises(BudgetError, match=r"indices: indices must be unique; repeated: \[4\]"):
        _check(scenario, Submission([4, 4], np.zeros((2, 1, 8, 8), np.float32)))
    with pytest.raises(BudgetError, match=r"shape: delta must have shape \(2, 1, 8, 8\)"):
        _check(scenario, Submission([1, 2], np.zeros((2, 1, 4, 4), np.float32)))
    relabel = Submission(sub.indices, sub.delta, labels=[0, 0, 0])
    _check(scenario, relabel)
    with pytest.raises(BudgetError, match="labels: 3 labels changed but this clean-label threat model forbids"):
        _check(scenario, relabel, allow_relabel=False)
    _check(scenario, Submission(sub.indices, sub.delta, labels=[-1, -1, -1]), allow_relabel=False)
    with pytest.raises(BudgetError, match=r"labels must be -1 \(keep\) or lie in \[0, 3\]"):
        _check(scenario, Submission(sub.indices, sub.delta, labels=[7, 0, 0]))


def test_submission_round_trips_through_the_env_action(scenario):
    sub = Submission([5, 9], np.full((2, 1, 8, 8), 0.01, np.float32), labels=[3, 3])
    action = sub.to_action(scenario.max_poisons)
    assert action["indices"].tolist() == [5, 9, -1, -1, -1] and action["delta"].shape == (5, 1, 8, 8)
    back = Submission.from_action(action)
    assert back.indices.tolist() == [5, 9] and back.labels.tolist() == [3, 3]
    assert np.array_equal(back.delta, sub.delta)
    x, y = sub.apply(scenario.x_train, scenario.y_train)
    assert torch.allclose(x[5], (scenario.x_train[5] + 0.01).clamp(0, 1)) and y[9] == 3
    assert torch.equal(x[6], scenario.x_train[6])


def test_make_attack_registry_and_options():
    assert {"sleeper_agent", "witches_brew", "badnets", "clean_label", "htba", "random_noise"} <= set(list_attacks())
    assert make_attack("random").name == "random_noise"
    assert make_attack("sleeper_agent", steps=7).config.steps == 7
    with pytest.raises(ValueError, match="sleeper_agent has no option.*'stepz'.*steps"):
        make_attack("sleeper_agent", stepz=3)
    with pytest.raises(ValueError, match="unknown attack 'nope'"):
        make_attack("nope")


def test_make_attack_for_uses_the_schedule_an_attack_declares_for_the_dataset():
    from parley.attacks.sleeper_agent import SleeperAgentConfig

    small = make_synthetic(num_classes=3, image_size=8, channels=1, train_per_class=4, test_per_class=2, seed=0)
    colour = make_synthetic(num_classes=3, image_size=32, channels=3, train_per_class=4, test_per_class=2, seed=0)
    assert make_attack_for("sleeper_agent", small).config == SleeperAgentConfig.small_images()
    assert make_attack_for("sleeper_agent", colour).config == SleeperAgentConfig.paper()
    # The small-image preset is the paper's attack on ART's short schedule, matched against two surrogates
    # (see its docstring).
    assert SleeperAgentConfig.small_images() == SleeperAgentConfig.paper(
        steps=120, lr_drops=(0.6, 0.8, 0.88), augment=False, retrain_times=0, parametrisation="tanh", ensemble=2)
    # The longer schedule, which the docstring offers for larger eps, is still one call away.
    assert SleeperAgentConfig.small_images(steps=250, lr_drops=SleeperAgentConfig.lr_drops, augment=True) == \
        SleeperAgentConfig.paper(retrain_times=0, parametrisation="tanh", ensemble=2)
    tuned = make_attack_for("sleeper_agent", small, steps=9)
    assert tuned.config == SleeperAgentConfig.small_images(steps=9)
    # Witches' Brew inherits Sleeper Agent's config class but not its small-image schedule.
    assert make_attack_for("witches_brew", small).config == make_attack("witches_brew").config
    assert make_attack_for("random", small).name == "random_noise"
    with pytest.raises(ValueError, match="sleeper_agent has no option"):
        make_attack_for("sleeper_agent", small, stepz=3)


FAST = {
    "sleeper_agent": dict(steps=6, retrain_times=1, surrogate_epochs=1),
    "witches_brew": dict(steps=3, restarts=2, surrogate_epochs=1),
    "htba": dict(steps=5, surrogate_epochs=1),
    "clean_label": dict(pgd_steps=3, surrogate_epochs=1),
    "badnets": {},
    "random_noise": {},
}


@pytest.mark.parametrize("name", sorted(FAST))
def test_every_attack_returns_a_valid_submission(name, scenario):
    sub = make_attack(name, **FAST[name]).craft(scenario)
    assert 1 <= len(sub) <= scenario.max_poisons
    _check(scenario, sub)  # craft validates too; checked again here against the scenario's limits
    assert sub.info["attack"] == name and sub.info["craft_time_s"] >= 0
    changed = np.abs(sub.delta).reshape(len(sub), -1).max(1)
    y = scenario.y_train.numpy()[sub.indices]
    if name == "badnets":  # all-to-one by default: any non-target image, stamped and relabelled
        assert (y != scenario.target_class).all() and (sub.labels == scenario.target_class).all()
    else:
        assert sub.labels is None and (y == scenario.target_class).all()
    assert changed.max() > 0
    # Stamp attacks paste a full-contrast trigger (beyond eps); perturbation attacks stay within eps.
    assert sub.stamp == (name in ("badnets", "clean_label"))
    if not sub.stamp:
        assert changed.max() <= scenario.eps + 1e-6
    if name in ("sleeper_agent", "witches_brew"):
        assert 0.0 <= sub.info["matching_loss"] <= 2.0 * (2 if name == "witches_brew" else 1)
    again = make_attack(name, **FAST[name]).craft(scenario)
    assert np.array_equal(again.indices, sub.indices)  # seeded by the scenario


def test_dirty_label_attack_refuses_clean_label_scenario(scenario):
    import dataclasses

    clean_only = dataclasses.replace(scenario, allow_relabel=False)
    with pytest.raises(ValueError, match="badnets is a dirty-label attack"):
        make_attack("badnets").craft(clean_only)


def test_sleeper_agent_selects_largest_gradient_norms_and_reduces_the_matching_loss(scenario):
    from parley.attacks.sleeper_agent import GradientMatcher, SleeperAgentConfig, select_by_gradient_norm

    cfg = SleeperAgentConfig(steps=15, retrain_times=0, surrogate_epochs=2, augment=False, lr=0.01)
    matcher = GradientMatcher(cfg, scenario, salt=1)
    model = matcher.train_surrogate(scenario.x_train, scenario.y_train)
    cand = scenario.class_indices(scenario.target_class)
    x, y = scenario.x_train[cand], scenario.y_train[cand]
    pos = select_by_gradient_norm(model, x, y, 3, "cpu")
    norms = []
    for i in range(len(cand)):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        norms.append(float(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))))
    assert sorted(pos.tolist()) == sorted(np.argsort(norms)[-3:].tolist())
    poison_idx = cand[pos]
    base_x, before = matching_loss_before(matcher, model, scenario, poison_idx)
    delta, after, _ = matcher.run(poison_idx, model)
    assert float(delta.abs().max()) <= scenario.eps + 1e-6
    assert after < before


def test_sleeper_agent_ensemble_matches_every_surrogate_and_retrains_them_all(scenario):
    from parley.attacks.sleeper_agent import GradientMatcher, SleeperAgentConfig

    cfg = SleeperAgentConfig(steps=6, retrain_times=1, surrogate_epochs=1, augment=False, lr=0.01, ensemble=2)
    matcher = GradientMatcher(cfg, scenario, salt=1)
    model = matcher.train_surrogate(scenario.x_train, scenario.y_train)
    poison_idx = scenario.class_indices(scenario.target_class)[:3]
    delta, loss, _ = matcher.run(poison_idx, model)
    # one surrogate given + one more for the ensemble, then both retrained once
    assert matcher.trainings == 4
    assert delta.shape == (3, *scenario.shape) and float(delta.abs().max()) <= scenario.eps + 1e-6
    assert 0.0 <= loss <= 2.0
    with pytest.raises(ValueError, match="ensemble"):
        SleeperAgentConfig(ensemble=0)


def test_sleeper_agent_tanh_parametrisation_stays_within_eps_without_retraining(scenario):
    from parley.attacks.sleeper_agent import GradientMatcher, SleeperAgentConfig

    cfg = SleeperAgentConfig(steps=15, retrain_times=0, surrogate_epochs=2, augment=False,
                             parametrisation="tanh", tanh_lr=0.1)
    matcher = GradientMatcher(cfg, scenario, salt=1)
    model = matcher.train_surrogate(scenario.x_train, scenario.y_train)
    poison_idx = scenario.class_indices(scenario.target_class)[:3]
    base_x, before = matching_loss_before(matcher, model, scenario, poison_idx)
    delta, after, _ = matcher.run(poison_idx, model)
    assert float(delta.abs().max()) <= scenario.eps + 1e-6
    assert float(delta.abs().max()) > 0.5 * scenario.eps  # it moved away from its start near zero
    assert float((base_x + delta).min()) >= 0.0 and float((base_x + delta).max()) <= 1.0
    assert after < before
    assert matcher.trainings == 1  # retrain_times=0: the first surrogate is the only one
    with pytest.raises(ValueError, match="parametrisation must be one of 'direct', 'tanh'"):
        SleeperAgentConfig(parametrisation="sigmoid")


def test_sleeper_agent_trigger_draws_average_the_source_gradient_over_placements(scenario):
    import copy

    from parley.attacks.sleeper_agent import GradientMatcher, SleeperAgentConfig

    matcher = GradientMatcher(SleeperAgentConfig(trigger_draws=3, surrogate_epochs=1), scenario, salt=1)
    model = matcher.train_surrogate(scenario.x_train, scenario.y_train)
    rng = copy.deepcopy(matcher.np_rng)
    g_s = matcher.source_gradient(model)
    # by hand: every source image three times, each copy patched where the same generator puts it
    images = scenario.x_train[torch.as_tensor(scenario.class_indices(scenario.source_class))]
    locations = scenario.trigger.locations(3 * len(images), *scenario.shape[1:], seed=rng)
    patched = scenario.trigger.apply(images.repeat(3, 1, 1, 1), locations=locations)
    assert len({tuple(loc) for loc in locations[::len(images)]}) > 1  # the copies of one image move
    target = torch.full((len(patched),), scenario.target_class)
    loss = torch.nn.functional.cross_entropy(model(patched), target)
    expected = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    for got, want in zip(g_s, expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    one_draw = GradientMatcher(SleeperAgentConfig(surrogate_epochs=1), scenario, salt=1).source_gradient(model)
    assert not all(torch.allclose(a, b) for a, b in zip(one_draw, g_s, strict=True))
    with pytest.raises(ValueError, match="trigger_draws must be >= 1"):
        SleeperAgentConfig(trigger_draws=0)


def test_sleeper_agent_snapshots_keep_the_surrogate_part_way_through_its_training(scenario):
    import copy

    from parley.attacks.sleeper_agent import GradientMatcher, SleeperAgentConfig
    from parley.attacks.victims import train_model

    cfg = SleeperAgentConfig(steps=4, retrain_times=0, augment=False, surrogate_snapshots=(0.5,))
    matcher = GradientMatcher(cfg, scenario, salt=1)
    assert matcher.recipe.epochs == 2 and matcher.snapshot_epochs == [1]
    rng = copy.deepcopy(matcher.np_rng)
    model = matcher.train_surrogate(scenario.x_train, scenario.y_train)
    final, snapshot = matcher.with_snapshots([model])
    assert final is model and matcher.trainings == 1
    # the snapshot is the surrogate after its first epoch: train one epoch from the same seeds by hand
    torch.manual_seed(int(rng.integers(2**31)))
    by_hand = train_model(scenario.make_model(), scenario.x_train, scenario.y_train,
                          matcher.recipe.replace(epochs=1), device="cpu", seed=int(rng.integers(2**31)))
    for a, b in zip(snapshot.state_dict().values(), by_hand.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float())
    assert not all(torch.equal(a, b) for a, b in zip(snapshot.state_dict().values(),
                                                      model.state_dict().values(), strict=True))
    delta, loss, returned = matcher.run(scenario.class_indices(scenario.target_class)[:3], model)
    assert returned is model and float(delta.abs().max()) <= scenario.eps + 1e-6 and 0.0 <= loss <= 2.0
    with pytest.raises(ValueError, match="surrogate_snapshots must be fractions strictly between 0 and 1"):
        SleeperAgentConfig(surrogate_snapshots=(1.0,))


def test_sleeper_agent_schedule_follows_the_image_size():
    from parley.attacks.sleeper_agent import SleeperAgentConfig

    digits_like = make_synthetic(num_classes=2, image_size=8, channels=1, train_per_class=2, test_per_class=1)
    cifar_like = make_synthetic(num_classes=2, image_size=32, channels=3, train_per_class=2, test_per_class=1)
    small = SleeperAgentConfig.for_dataset(digits_like, steps=40)
    assert (small.retrain_times, small.parametrisation, small.steps) == (0, "tanh", 40)
    assert small == SleeperAgentConfig.small_images(steps=40)
    assert SleeperAgentConfig.for_dataset(cifar_like) == SleeperAgentConfig.paper() == SleeperAgentConfig()
    assert SleeperAgentConfig.paper().retrain_times == 4
    assert make_attack("sleeper_agent", **vars(small)).config == small


def test_metrics_on_hand_built_predictions():
    labels = np.array([0, 1, 2, 3, 3])
    assert clean_accuracy(np.array([0, 1, 0, 3, 2]), labels) == pytest.approx(0.6)
    # triggered images: true classes 1, 1, 2, 3(target: excluded); predicted 3, 1, 3, 3
    true = np.array([1, 1, 2, 3])
    pred = np.array([3, 1, 3, 3])
    assert attack_success_rate(pred, true, target_class=3) == pytest.approx(2 / 3)
    assert robust_accuracy(pred, true, target_class=3) == pytest.approx(1 / 3)
    assert np.isnan(attack_success_rate(np.array([3]), np.array([3]), 3))
    p, r = poison_precision_recall(np.array([1, 2, 3, 4]), np.array([2, 4, 9]))
    assert (p, r) == (0.5, pytest.approx(2 / 3))
    p, r = poison_precision_recall(np.array([], dtype=int), np.array([2]))
    assert np.isnan(p) and r == 0.0


def test_backdoor_metrics_use_patched_source_test_images():
    from parley.attacks.triggers import make_trigger

    class PatchDetector(torch.nn.Module):
        """Predicts class 2 when any pixel is exactly 1 (the patch), else the image's mean-coded label."""

        def forward(self, x):
            has_patch = (x == 1.0).flatten(1).any(1)
            label = (x.flatten(1).mean(1) * 10).round().long()
            logits = torch.nn.functional.one_hot(torch.where(has_patch, torch.tensor(2), label), 3).float()
            return logits

    x = torch.stack([torch.full((1, 6, 6), v) for v in (0.0, 0.1, 0.1, 0.0)])
    y = torch.tensor([0, 1, 1, 0])
    trig = make_trigger(1, 2, seed=0)
    out = base.backdoor_metrics(PatchDetector(), x, y, source_class=1, target_class=2, trigger=trig, device="cpu")
    assert out == {"clean_accuracy": 1.0, "attack_success_rate": 1.0, "robust_accuracy": 0.0,
                   "full_attack_success_rate": 1.0, "full_robust_accuracy": 0.0}


@pytest.mark.slow
def test_sleeper_agent_plants_a_backdoor_when_eps_allows_it():
    """With an unbounded perturbation and 10% poisons on digits, gradient matching must raise the ASR of
    a victim trained from scratch far above the random-noise control (about 0.46 vs 0.03 measured)."""
    from parley.attacks.base import apply_checked, backdoor_metrics
    from parley.attacks.datasets import load_dataset
    from parley.attacks.victims import make_victim, train_model

    ds = load_dataset("digits")
    recipe = TrainingRecipe.for_dataset(ds)
    scenario = Scenario.from_dataset(ds, 7, 6, budget=0.1, eps=1.0, recipe=recipe, seed=76)
    asr = {}
    for name, cfg in (("sleeper_agent", dict(steps=100, retrain_times=1)), ("random_noise", {})):
        x, y = apply_checked(make_attack(name, **cfg).craft(scenario), ds.x_train, ds.y_train)
        torch.manual_seed(1)
        victim = train_model(make_victim("small_cnn", ds), x, y, recipe, seed=1)
        asr[name] = backdoor_metrics(victim, ds.x_test, ds.y_test, 7, 6, scenario.trigger, seed=2)["attack_success_rate"]
    assert asr["sleeper_agent"] > 0.2 and asr["sleeper_agent"] > asr["random_noise"] + 0.15, asr


def test_the_shared_interfaces_import_from_the_package():
    import parley.attacks as attacks
    from parley.attacks import defenses

    assert attacks.make_attack is make_attack and attacks.make_attack_for is make_attack_for
    assert attacks.make_defense is defenses.make_defense and attacks.BudgetError is BudgetError
    with pytest.raises(AttributeError, match="no attribute 'poison_everything'"):
        attacks.poison_everything  # noqa: B018
