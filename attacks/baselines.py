"""Baseline attacks to compare Sleeper Agent with; all share :class:`~parley.attacks.base.Attack`.

==================  ============================================================================
``witches_brew``    gradient matching without a trigger (Geiping et al. 2021): poisons imitate the
                    gradient of clean source-class images labelled as the target. Class-targeted
                    here (the scenario's source class), 8 restarts, no surrogate retraining.
``badnets``         dirty-label (Gu et al. 2017): stamp the trigger on source-class images and
                    relabel them as the target.
``clean_label``     clean-label backdoor (Turner et al. 2019): PGD makes target-class images hard
                    to classify, then the trigger is stamped on them; labels stay.
``htba``            Hidden Trigger Backdoor (Saha et al. 2020): target-class images perturbed so
                    their surrogate features collide with those of patched source images.
``random_noise``    control: random +-eps sign noise on random target-class images.
==================  ============================================================================

Each attack runs under its own paper's threat model (see :mod:`parley.attacks.base`): Witches' Brew,
HTBA and random noise are ``perturbation`` attacks bounded by the scenario's ``eps``; BadNets and the
clean-label backdoor are ``stamp`` attacks that paste the scenario's trigger at full contrast (where the
trigger's placement puts it: a random place per image, or the fixed corner BackdoorBench uses) and are
bounded by the poison count. The clean-label backdoor's adversarial part still obeys ``eps``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from parley.attacks.base import Attack, Scenario, Submission, random_generator, register_attack
from parley.attacks.checks import check_dataclass_types, require_choice, require_range
from parley.attacks.sleeper_agent import GradientMatcher, SleeperAgentConfig
from parley.attacks.victims import TrainingRecipe, train_model
from parley.utils import resolve_device

__all__ = ["WitchesBrew", "BadNets", "CleanLabelBackdoor", "HiddenTriggerBackdoor", "RandomNoise"]


def _random_choice(rng: np.random.Generator, candidates: np.ndarray, k: int) -> np.ndarray:
    return np.sort(rng.choice(candidates, size=min(k, len(candidates)), replace=False))


def _project(base: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    delta = delta.clamp(-eps, eps)
    return (base + delta).clamp(0, 1) - base


def _surrogate(scenario: Scenario, recipe: TrainingRecipe | None, epochs: int | None, seed: int, device: str):
    recipe = recipe or scenario.recipe
    if epochs is not None:
        recipe = recipe.scaled(epochs)
    torch.manual_seed(seed)
    return train_model(scenario.make_model(), scenario.x_train, scenario.y_train, recipe, device=device, seed=seed)


@dataclass
class WitchesBrewConfig(SleeperAgentConfig):
    """Sleeper Agent's config with Witches' Brew defaults: no trigger, 8 restarts, no retraining,
    random poison selection."""

    restarts: int = 8
    retrain_times: int = 0
    selection: str = "random"
    use_trigger: bool = False


@register_attack
class WitchesBrew(Attack):
    """Targeted gradient matching without a trigger (class-targeted variant)."""

    name = "witches_brew"
    Config = WitchesBrewConfig

    def _craft(self, scenario: Scenario) -> Submission:
        matcher = GradientMatcher(self.config, scenario, salt=13)
        surrogate = matcher.train_surrogate(scenario.x_train, scenario.y_train)
        candidates = scenario.class_indices(scenario.target_class)
        if self.config.selection == "gradient_norm":
            from parley.attacks.sleeper_agent import select_by_gradient_norm

            k = min(scenario.max_poisons, len(candidates))
            pos = select_by_gradient_norm(surrogate, scenario.x_train[torch.as_tensor(candidates)],
                                          scenario.y_train[torch.as_tensor(candidates)], k, matcher.device)
            poison_idx = np.sort(candidates[pos])
        else:
            poison_idx = _random_choice(matcher.np_rng, candidates, scenario.max_poisons)
        delta, loss, _ = matcher.run(poison_idx, surrogate)
        return Submission(poison_idx, delta.numpy(), None, {"matching_loss": loss})


@dataclass
class BadNetsConfig:
    """:param from_class: which images to stamp and relabel: ``"any"`` (images of every non-target class,
    BackdoorBench's all-to-one setting) or ``"source"`` (source-class images only)."""

    from_class: str = "any"

    def __post_init__(self) -> None:
        check_dataclass_types(self)
        require_choice(type(self).__name__, "from_class", self.from_class, ("any", "source"))


@register_attack
class BadNets(Attack):
    """Stamp the trigger and relabel to the target class (dirty label)."""

    name = "badnets"
    relabels = True
    threat_model = "stamp"
    Config = BadNetsConfig

    def _craft(self, scenario: Scenario) -> Submission:
        rng, _ = random_generator(scenario, 17)
        if self.config.from_class == "source":
            candidates = scenario.class_indices(scenario.source_class)
        else:
            candidates = np.flatnonzero(scenario.y_train.numpy() != scenario.target_class)
        idx = _random_choice(rng, candidates, scenario.max_poisons)
        base = scenario.x_train[torch.as_tensor(idx)]
        stamped = scenario.trigger.apply(base, seed=rng)  # full contrast, where the trigger's placement puts it
        labels = np.full(len(idx), scenario.target_class, dtype=np.int64)
        return Submission(idx, (stamped - base).numpy(), labels)


@dataclass
class CleanLabelConfig:
    """:param pgd_steps: PGD steps of the adversarial perturbation.
    :param pgd_step_size: PGD step size as a fraction of eps.
    :param adversarial_fraction: share of eps spent on the adversarial part before stamping.
    :param surrogate_epochs: surrogate training epochs (None: the scenario recipe's)."""

    pgd_steps: int = 10
    pgd_step_size: float = 0.25
    adversarial_fraction: float = 1.0
    surrogate_epochs: int | None = None

    def __post_init__(self) -> None:
        check_dataclass_types(self)
        owner = type(self).__name__
        require_range(owner, "pgd_steps", self.pgd_steps, 0)
        require_range(owner, "pgd_step_size", self.pgd_step_size, 0, low_open=True)
        require_range(owner, "adversarial_fraction", self.adversarial_fraction, 0, 1)
        if self.surrogate_epochs is not None:
            require_range(owner, "surrogate_epochs", self.surrogate_epochs, 1)


@register_attack
class CleanLabelBackdoor(Attack):
    """Adversarially perturbed target-class images with the trigger stamped on (labels unchanged)."""

    name = "clean_label"
    threat_model = "stamp"
    Config = CleanLabelConfig

    def _craft(self, scenario: Scenario) -> Submission:
        cfg = self.config
        device = resolve_device(scenario.device)
        rng, _ = random_generator(scenario, 19)
        model = _surrogate(scenario, None, cfg.surrogate_epochs, int(rng.integers(2**31)), device)
        idx = _random_choice(rng, scenario.class_indices(scenario.target_class), scenario.max_poisons)
        base = scenario.x_train[torch.as_tensor(idx)].to(device)
        labels = scenario.y_train[torch.as_tensor(idx)].to(device)
        eps_adv = scenario.eps * cfg.adversarial_fraction
        delta = torch.zeros_like(base)
        for _ in range(cfg.pgd_steps):  # untargeted PGD: make the true label unlikely
            delta.requires_grad_(True)
            loss = F.cross_entropy(model(base + delta), labels)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = _project(base, delta.detach() + cfg.pgd_step_size * eps_adv * grad.sign(), eps_adv)
        # The adversarial part obeys eps; the trigger is then pasted at full contrast (Turner et al. 2019).
        stamped = scenario.trigger.apply((base + delta).cpu(), seed=rng).to(device)
        return Submission(idx, (stamped - base).cpu().numpy(), None)


@dataclass
class HTBAConfig:
    """:param steps: feature-collision optimisation steps.
    :param step_size: signed-gradient step as a fraction of eps.
    :param surrogate_epochs: surrogate training epochs (None: the scenario recipe's).
    :param rematch_every: re-pair poisons with their nearest patched source image every this many steps."""

    steps: int = 200
    step_size: float = 0.05
    surrogate_epochs: int | None = None
    rematch_every: int = 20

    def __post_init__(self) -> None:
        check_dataclass_types(self)
        owner = type(self).__name__
        require_range(owner, "steps", self.steps, 1)
        require_range(owner, "step_size", self.step_size, 0, low_open=True)
        require_range(owner, "rematch_every", self.rematch_every, 1)
        if self.surrogate_epochs is not None:
            require_range(owner, "surrogate_epochs", self.surrogate_epochs, 1)


@register_attack
class HiddenTriggerBackdoor(Attack):
    """Feature collision: poisons move towards patched source images in the surrogate's feature space."""

    name = "htba"
    Config = HTBAConfig

    def _craft(self, scenario: Scenario) -> Submission:
        cfg = self.config
        device = resolve_device(scenario.device)
        rng, _ = random_generator(scenario, 23)
        model = _surrogate(scenario, None, cfg.surrogate_epochs, int(rng.integers(2**31)), device).eval()
        if not hasattr(model, "features"):
            raise TypeError("htba needs a victim with a features(x) method (penultimate representation)")
        idx = _random_choice(rng, scenario.class_indices(scenario.target_class), scenario.max_poisons)
        base = scenario.x_train[torch.as_tensor(idx)].to(device)
        source = scenario.x_train[torch.as_tensor(scenario.class_indices(scenario.source_class))]
        delta = torch.zeros_like(base)
        for step in range(cfg.steps):
            if step % cfg.rematch_every == 0:  # fresh trigger locations, then greedy nearest pairing
                with torch.no_grad():
                    anchors = model.features(scenario.trigger.apply(source, seed=rng).to(device))
                    current = model.features(base + delta)
                    pairs = torch.cdist(current, anchors).argmin(1)
                    goal = anchors[pairs]
            delta.requires_grad_(True)
            loss = ((model.features(base + delta) - goal) ** 2).sum()
            (grad,) = torch.autograd.grad(loss, delta)
            delta = _project(base, delta.detach() - cfg.step_size * scenario.eps * grad.sign(), scenario.eps)
        return Submission(idx, delta.cpu().numpy(), None, {"feature_distance": float(loss.detach())})


@dataclass
class RandomNoiseConfig:
    """:param from_class: ``"target"`` (target-class images, like Sleeper Agent) or ``"any"``."""

    from_class: str = "target"

    def __post_init__(self) -> None:
        check_dataclass_types(self)
        require_choice(type(self).__name__, "from_class", self.from_class, ("target", "any"))


@register_attack
class RandomNoise(Attack):
    """Control: the same budget and eps spent on random sign noise."""

    name = "random_noise"
    Config = RandomNoiseConfig

    def _craft(self, scenario: Scenario) -> Submission:
        rng, _ = random_generator(scenario, 29)
        if self.config.from_class == "target":
            candidates = scenario.class_indices(scenario.target_class)
        else:
            candidates = np.arange(len(scenario.x_train))
        idx = _random_choice(rng, candidates, scenario.max_poisons)
        base = scenario.x_train[torch.as_tensor(idx)]
        noise = torch.as_tensor(rng.choice([-1.0, 1.0], size=tuple(base.shape)), dtype=torch.float32)
        return Submission(idx, _project(base, noise * scenario.eps, scenario.eps).numpy(), None)
