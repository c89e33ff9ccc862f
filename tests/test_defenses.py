"""Defenses on constructed cases: planted feature outliers, a hand-built trojaned model, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from parley.attacks.defenses import (
    Defense,
    list_defenses,
    make_defense,
    penultimate_features,
)


def _planted_features(rng: np.random.Generator, *, n_per_class=150, dim=24, n_poison=12, poison_class=1,
                      shift=8.0):
    """Three Gaussian classes; ``n_poison`` members of ``poison_class`` are shifted along one direction."""
    feats = rng.normal(size=(3 * n_per_class, dim))
    labels = np.repeat(np.arange(3), n_per_class)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    poisons = rng.choice(np.flatnonzero(labels == poison_class), n_poison, replace=False)
    feats[poisons] += shift * direction
    return feats, labels, np.sort(poisons)


def test_registry_lists_every_defense_and_rejects_unknown_names():
    assert {"none", "spectral", "activation_clustering", "dp_sgd", "mixup", "cutout", "strip"} <= set(
        list_defenses())
    for name in list_defenses():
        defense = make_defense(name)
        assert isinstance(defense, Defense) and defense.name == name
        assert defense.stage in {"none", "filter", "training", "inference"}
    with pytest.raises(ValueError, match="unknown defense 'bogus'.*spectral"):
        make_defense("bogus")
    with pytest.raises(ValueError, match="overestimation"):
        make_defense("spectral", overestimation=0)


def test_none_removes_nothing():
    x = torch.rand(10, 1, 4, 4)
    assert len(make_defense("none").select_removals(x, torch.zeros(10, dtype=torch.long))) == 0


def test_spectral_signatures_remove_planted_direction(rng):
    feats, labels, poisons = _planted_features(rng)
    x = torch.zeros(len(labels), 1, 1, 1)
    removed = make_defense("spectral").select_removals(x, torch.as_tensor(labels), expected_poisons=12,
                                                       features=feats)
    assert set(poisons) <= set(removed)
    # 1.5 x 12 = 18 removed in each class
    assert np.bincount(labels[removed], minlength=3).tolist() == [18, 18, 18]
    # the planted images outscore every clean image of their class
    scores = make_defense("spectral").scores(feats, labels)
    clean_in_class = np.setdiff1d(np.flatnonzero(labels == 1), poisons)
    assert scores[poisons].min() > scores[clean_in_class].max()


def test_spectral_reads_penultimate_features_through_the_model(rng):
    feats, labels, poisons = _planted_features(rng, dim=16)
    x = torch.as_tensor(feats, dtype=torch.float32).view(-1, 1, 4, 4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))  # penultimate features = the flattened input
    np.testing.assert_allclose(penultimate_features(model, x), feats, atol=1e-5)
    removed = make_defense("spectral").select_removals(x, torch.as_tensor(labels), model, expected_poisons=12)
    assert set(poisons) <= set(removed)
    with pytest.raises(ValueError, match="needs a model"):
        make_defense("spectral").select_removals(x, torch.as_tensor(labels))


def test_activation_clustering_flags_planted_cluster_only(rng):
    feats, labels, poisons = _planted_features(rng, n_poison=20, shift=8.0, poison_class=2)
    x = torch.zeros(len(labels), 1, 1, 1)
    removed = make_defense("activation_clustering").select_removals(x, torch.as_tensor(labels), features=feats)
    np.testing.assert_array_equal(removed, poisons)
    ica = make_defense("activation_clustering", reduction="ica").select_removals(
        x, torch.as_tensor(labels), features=feats)
    np.testing.assert_array_equal(ica, poisons)


def _step_gradient_norms(recipe) -> list[float]:
    """Train a linear model on large inputs and record the gradient norm at every optimiser step."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from parley.attacks.victims import train_model

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 4, 4, generator=gen) * 20
    y = torch.randint(0, 3, (64,), generator=gen)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    norms: list[float] = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.sqrt(sum((g ** 2).sum() for g in grads))))

    handle = register_optimizer_step_pre_hook(record)
    try:
        train_model(model, x, y, recipe, device="cpu", seed=0)
    finally:
        handle.remove()
    return norms


def test_dp_clipping_bounds_gradient_norms_in_training():
    from parley.attacks.victims import TrainingRecipe

    recipe = TrainingRecipe(epochs=2, lr=0.01, milestones=(), batch_size=16, crop_padding=0, flip=False)
    unclipped = _step_gradient_norms(recipe)
    assert max(unclipped) > 1.0  # the case is one where clipping matters
    clipped_recipe = make_defense("dp_sgd", clip_norm=0.25, noise_multiplier=0.0).adjust_recipe(recipe)
    assert clipped_recipe.grad_clip == 0.25 and clipped_recipe.grad_noise == 0.0
    clipped = _step_gradient_norms(clipped_recipe)
    assert len(clipped) == len(unclipped) == 8
    assert max(clipped) <= 0.25 + 1e-5
    noisy = _step_gradient_norms(make_defense("dp_sgd", clip_norm=0.25, noise_multiplier=4.0).adjust_recipe(recipe))
    assert max(noisy) > 0.25 + 1e-3  # noise is added after clipping


def test_augmentation_defenses_switch_on_their_recipe_fields():
    from parley.attacks.victims import TrainingRecipe

    recipe = TrainingRecipe.tiny()
    assert make_defense("mixup", alpha=0.4).adjust_recipe(recipe).mixup_alpha == 0.4
    assert make_defense("cutout").adjust_recipe(recipe, image_size=32).cutout == 16
    assert make_defense("cutout", size=3).adjust_recipe(recipe, image_size=32).cutout == 3
    for name in ("none", "spectral", "strip"):
        assert make_defense(name).adjust_recipe(recipe) == recipe
    with pytest.raises(ValueError, match="alpha"):
        make_defense("mixup", alpha=0)


class _TrojanedModel(nn.Module):
    """Random linear classifier, except that a bright 2x2 patch in the corner forces class 0."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.linear = nn.Linear(64, 4)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(4, 64, generator=gen) * 0.3)
            self.linear.bias.zero_()

    def forward(self, x):
        logits = self.linear(x.flatten(1))
        patch = x[:, 0, :2, :2].mean(dim=(1, 2))
        trigger = torch.sigmoid(60 * (patch - 0.45))
        boost = torch.zeros_like(logits)
        boost[:, 0] = 25 * trigger
        return logits + boost


def test_strip_flags_trojaned_inputs_at_the_chosen_false_rejection_rate():
    gen = torch.Generator().manual_seed(0)
    clean_pool = torch.rand(120, 1, 8, 8, generator=gen) * 0.5
    clean_test = torch.rand(80, 1, 8, 8, generator=gen) * 0.5
    trojaned = torch.rand(80, 1, 8, 8, generator=gen) * 0.5
    trojaned[:, :, :2, :2] = 1.0
    model = _TrojanedModel()
    assert (model(trojaned).argmax(1) == 0).all()
    # the toy's patch fires at half contrast, so a convex blend keeps it
    strip = make_defense("strip", n_overlays=16, input_weight=0.5, overlay_weight=0.5, false_rejection_rate=0.05)
    detected = strip.detect(model, trojaned, clean_pool)
    false_alarms = strip.detect(model, clean_test, clean_pool)
    assert detected.mean() >= 0.95
    assert false_alarms.mean() <= 0.2
    with pytest.raises(ValueError, match="input_weight"):
        make_defense("strip", input_weight=0)
    with pytest.raises(ValueError, match="overlay_weight"):
        make_defense("strip", overlay_weight=1.5)


@pytest.fixture
def one_torch_thread():
    """Train on one thread: a few seconds, where several threads crawl on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_strip_flags_a_trained_badnets_victims_triggered_digits(one_torch_thread):
    """A victim trained on digits with a full-contrast corner patch relabelled to class 0 (BadNets):
    STRIP's default superimposition keeps the patch whole and flags the triggered digits at a low false
    rejection rate; a 50/50 blend halves the patch's contrast and lets them through."""
    from parley.attacks.datasets import load_digits
    from parley.attacks.triggers import make_trigger
    from parley.attacks.victims import TrainingRecipe, make_victim, train_model

    torch.manual_seed(0)
    data = load_digits()
    trigger = make_trigger(1, 3, seed=0, placement="fixed")
    x, y = data.x_train.clone(), data.y_train.clone()
    stamped = torch.as_tensor(np.random.default_rng(0).choice(np.flatnonzero(y.numpy() != 0), 100, replace=False))
    x[stamped], y[stamped] = trigger.apply(x[stamped]), 0
    recipe = TrainingRecipe.tiny(data).replace(epochs=6, crop_padding=0)
    model = train_model(make_victim("small_cnn", data, width=16), x, y, recipe, device="cpu", seed=0)
    pool, scored = data.x_test[0::2], data.x_test[1::2]
    clean = scored[data.y_test[1::2] != 0]
    triggered = trigger.apply(clean)
    assert (model(triggered).argmax(1) == 0).float().mean() >= 0.9  # the backdoor is planted

    strip = make_defense("strip", false_rejection_rate=0.05)
    assert strip.detect(model, triggered, pool).mean() >= 0.6  # 0.67-0.88 over training seeds
    assert strip.detect(model, clean, pool).mean() <= 0.2  # 5% nominal, measured on 164 other digits
    blend = make_defense("strip", input_weight=0.5, overlay_weight=0.5)
    assert blend.detect(model, triggered, pool).mean() <= 0.1
