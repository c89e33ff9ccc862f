"""Sleeper Agent: a hidden-trigger backdoor by gradient matching (Souri et al., NeurIPS 2022).

Clean-label: the poisons are target-class training images that keep their labels; only a small
l-infinity perturbation is added. The patch trigger never appears in the training data -- it is pasted
onto source-class images at test time.

Algorithm (one restart), as :meth:`SleeperAgent._craft` runs it:

1. Train a surrogate of the victim's architecture from scratch on the clean training set.
2. Select the poisons: the ``max_poisons`` target-class training images with the largest per-sample
   gradient norm ``||grad_theta CE(f(x_i), y_i)||`` on the surrogate.
3. Source gradient ``g_s = grad_theta CE(f(patched source-class training images), target)``.
4. For ``steps`` steps, per poison batch: ``g_p = grad_theta CE(f(aug(x_p + delta)), target)`` with a
   differentiable crop/flip augmentation; loss ``1 - cos(g_s, g_p)``; the gradient with respect to
   ``delta`` is replaced by its sign and fed to Adam ("signed Adam"); the lr drops x0.1 at 37%, 62% and
   87% of the steps; after each step ``delta`` is projected to ``|delta| <= eps`` and ``x + delta`` to
   [0, 1]. ``delta`` starts at ``randn * eps`` (projected).
5. Every ``steps // (retrain_times + 1)`` steps the surrogate is retrained from scratch on the current
   poisoned training set and ``g_s`` is recomputed (4 times over 250 steps in the paper).
6. With several restarts the perturbation with the lowest final matching loss is kept.

Paper defaults (CIFAR-10, ResNet-18): eps 16/255, budget 1% of the training set, 250 steps, signed Adam
lr 0.1 in the standardised input space (~0.025 in [0, 1] pixel units), 1 restart, 4 retrainings, poison
batch 512. The surrogate follows the victim's recipe, which :meth:`TrainingRecipe.for_dataset` scales.
The dataclass defaults are the paper's (:meth:`SleeperAgentConfig.paper`); :meth:`SleeperAgentConfig.for_dataset`
keeps them on 32x32 colour images and switches smaller images (digits, MNIST) to
:meth:`SleeperAgentConfig.small_images`: IBM ART's cheaper schedule (no retraining, ``delta = eps * tanh(w)``,
120 steps, no augmentation while crafting, two surrogates).

>>> attack = make_attack("sleeper_agent")            # or SleeperAgent(SleeperAgentConfig(steps=100))
>>> submission = attack.craft(scenario)
"""

from __future__ import annotations

import copy
import dataclasses
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from parley.attacks.base import Attack, Scenario, Submission, random_generator, register_attack
from parley.attacks.checks import check_dataclass_types, require_choice, require_range
from parley.attacks.victims import TrainingRecipe, augment, train_model
from parley.utils import resolve_device

__all__ = ["SleeperAgentConfig", "SleeperAgent", "GradientMatcher", "select_by_gradient_norm"]


@dataclass
class SleeperAgentConfig:
    """Every Sleeper Agent hyperparameter.

    :param steps: crafting steps (each step visits every poison batch once).
    :param lr: signed-Adam step size in [0, 1] pixel units.
    :param lr_drops: fractions of ``steps`` after which the lr is multiplied by 0.1 (paper: 93/156/218 of 250).
    :param restarts: independent restarts; the lowest final loss wins (paper: 1; Witches' Brew: 8).
    :param retrain_times: surrogate retrainings from scratch during crafting (paper: 4).
    :param poison_batch_size: poisons per gradient-matching batch (paper: 512).
    :param source_batch_size: patched source images per chunk when computing ``g_s``.
    :param selection: ``"gradient_norm"`` (paper) or ``"random"`` target-class images.
    :param augment: differentiable crop/flip of the poisons while crafting (uses the recipe's padding/flip).
    :param use_trigger: patch the source images in ``g_s`` (False gives class-targeted Witches' Brew).
    :param surrogate_recipe: the surrogate's schedule; None uses the scenario's (victim) recipe.
    :param surrogate_epochs: override the surrogate recipe's epochs (schedule scaled); None keeps them.
    :param ensemble: surrogates trained from scratch with different seeds; the matching loss is averaged
        over them and every retraining retrains all (Witches' Brew's ensemble option; 1 = the paper's
        single surrogate). Crafting cost grows linearly.
    :param parametrisation: ``"direct"`` (paper): signed Adam on ``delta`` itself, started at
        ``randn * eps`` and projected to ``|delta| <= eps`` after every step; ``"tanh"`` (IBM ART's
        choice): ``delta = eps * tanh(w)`` with signed Adam on ``w`` started near zero, so ``|delta| <=
        eps`` holds by construction (``x + delta`` is still clipped to [0, 1]).
    :param tanh_lr: signed-Adam step size on ``w`` with ``parametrisation="tanh"`` (ART: 0.1); ``lr`` is
        not used then.
    :param trigger_draws: random trigger placements per source image when forming ``g_s``, which is then
        the mean gradient over all of them (paper and ART: 1, one placement per image).
    :param surrogate_snapshots: fractions of the surrogate's training epochs (in (0, 1)) at which a copy
        of it is kept; the matching loss is then averaged over these earlier states and the trained
        surrogate, so the poisons also match the gradients a victim sees part way through its training
        (empty: the trained surrogate only, as in the paper). Retrained surrogates keep theirs too.
        Crafting cost per step grows with the number of networks matched; no extra training is needed.
    :param source_images: use at most this many source-class training images (a seeded random choice)
        for ``g_s``; None uses all of them (the reference code caps them at 5,000, BackdoorBox at 1,000).
    """

    steps: int = 250
    lr: float = 0.025
    lr_drops: tuple[float, ...] = (93 / 250, 156 / 250, 218 / 250)
    restarts: int = 1
    retrain_times: int = 4
    poison_batch_size: int = 512
    source_batch_size: int = 512
    selection: str = "gradient_norm"
    augment: bool = True
    use_trigger: bool = True
    surrogate_recipe: TrainingRecipe | None = None
    surrogate_epochs: int | None = None
    ensemble: int = 1
    parametrisation: str = "direct"
    tanh_lr: float = 0.1
    trigger_draws: int = 1
    surrogate_snapshots: tuple[float, ...] = ()
    source_images: int | None = None

    def __post_init__(self) -> None:
        check_dataclass_types(self)
        owner = type(self).__name__
        require_choice(owner, "selection", self.selection, ("gradient_norm", "random"))
        require_choice(owner, "parametrisation", self.parametrisation, ("direct", "tanh"))
        for name in ("steps", "restarts", "ensemble", "poison_batch_size", "source_batch_size", "trigger_draws"):
            require_range(owner, name, getattr(self, name), 1)
        require_range(owner, "retrain_times", self.retrain_times, 0)
        if self.surrogate_epochs is not None:
            require_range(owner, "surrogate_epochs", self.surrogate_epochs, 1)
        if self.source_images is not None:
            require_range(owner, "source_images", self.source_images, 1)
        require_range(owner, "lr", self.lr, 0, low_open=True)
        require_range(owner, "tanh_lr", self.tanh_lr, 0, low_open=True)
        for fraction in self.lr_drops:
            require_range(owner, "lr_drops", fraction, 0, 1, low_open=True, high_open=True)
        if any(not 0.0 < f < 1.0 for f in self.surrogate_snapshots):
            raise ValueError(f"{owner}.surrogate_snapshots must be fractions strictly between 0 and 1, got "
                             f"{self.surrogate_snapshots}")

    @classmethod
    def paper(cls, **overrides) -> SleeperAgentConfig:
        """The paper's crafting schedule (the dataclass defaults): 250 steps, 4 retrainings, direct
        parametrisation, crafting augmentation, 1 restart."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def small_images(cls, **overrides) -> SleeperAgentConfig:
        """A cheaper schedule for small grey images (digits, MNIST), after IBM ART 1.20's
        ``SleeperAgentAttack``: no surrogate retraining (``retrain_times=0``), ``delta = eps * tanh(w)``
        (``parametrisation="tanh"``), 120 steps with the lr divided by 10 at 60%, 80% and 88% of them,
        no augmentation while crafting, and an ensemble of two surrogates. Without retraining it costs
        about a third of :meth:`paper`'s crafting time. How it compares with :meth:`paper` is measured in
        docs/studies/poisoning_schedule.md.
        """
        art_like = cls(steps=120, lr_drops=(0.6, 0.8, 0.88), augment=False, retrain_times=0, parametrisation="tanh",
                       ensemble=2)
        return dataclasses.replace(art_like, **overrides)

    @classmethod
    def for_dataset(cls, dataset, **overrides) -> SleeperAgentConfig:
        """The crafting schedule for ``dataset``: :meth:`paper` on 32x32 (or larger) colour images,
        :meth:`small_images` otherwise.

        The split mirrors :meth:`TrainingRecipe.for_dataset`, which gives small grey images a short
        victim schedule. On mnist5k validation pairs neither schedule was ahead of the other at eps
        16/255 and :meth:`small_images` costs half as much (docs/studies/poisoning_schedule.md). The
        surrogate always follows the victim recipe, and the poison count is a share of the training set.
        """
        channels, height = dataset.shape[0], dataset.shape[1]
        base = cls.paper() if (height >= 32 and channels == 3) else cls.small_images()
        return dataclasses.replace(base, **overrides)


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def select_by_gradient_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, device: str) -> np.ndarray:
    """Positions (into ``x``) of the ``k`` images with the largest per-sample parameter-gradient norm."""
    model.eval()
    params = _params(model)
    norms = np.zeros(len(x))
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i:i + 1].to(device)), y[i:i + 1].to(device))
        grads = torch.autograd.grad(loss, params)
        norms[i] = float(torch.sqrt(sum((g.detach() ** 2).sum() for g in grads)))
    return np.argsort(-norms, kind="stable")[:k]


class GradientMatcher:
    """The gradient-matching loop shared by Sleeper Agent and Witches' Brew.

    ``run(scenario, poison_idx)`` returns the perturbations for ``scenario.x_train[poison_idx]`` and the
    final matching loss; see the module docstring for the steps.
    """

    def __init__(self, config: SleeperAgentConfig, scenario: Scenario, salt: int) -> None:
        self.config = config
        self.scenario = scenario
        self.device = resolve_device(scenario.device)
        self.np_rng, self.generator = random_generator(scenario, salt)
        recipe = config.surrogate_recipe or scenario.recipe
        if config.surrogate_epochs is not None:
            recipe = recipe.scaled(config.surrogate_epochs)
        self.recipe = recipe
        self.trainings = 0
        # Epochs after which a copy of each surrogate is kept (the trained surrogate itself is always used).
        self.snapshot_epochs = sorted({max(1, round(f * recipe.epochs)) for f in config.surrogate_snapshots}
                                      - {recipe.epochs})
        self._snapshots: weakref.WeakKeyDictionary[nn.Module, list[nn.Module]] = weakref.WeakKeyDictionary()

    # --- surrogate
    def train_surrogate(self, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
        torch.manual_seed(int(self.np_rng.integers(2**31)))
        model = self.scenario.make_model()
        self.trainings += 1
        snapshots: list[nn.Module] = []

        def keep(epoch: int, network: nn.Module) -> None:
            if epoch in self.snapshot_epochs:
                snapshots.append(copy.deepcopy(network).eval())

        model = train_model(model, x, y, self.recipe, device=self.device, seed=int(self.np_rng.integers(2**31)),
                            on_epoch_end=keep if self.snapshot_epochs else None)
        self._snapshots[model] = snapshots
        return model

    def with_snapshots(self, models: list[nn.Module]) -> list[nn.Module]:
        """``models`` each followed by the snapshots kept while it was trained (the order of ``models`` holds)."""
        return [net for model in models for net in (model, *self._snapshots.get(model, []))]

    def source_gradient(self, model: nn.Module) -> list[torch.Tensor]:
        """Mean gradient of CE(f(patched source training images), target) -- the direction to imitate."""
        s = self.scenario
        idx = s.class_indices(s.source_class)
        if self.config.source_images is not None and len(idx) > self.config.source_images:
            idx = np.sort(self.np_rng.choice(idx, size=self.config.source_images, replace=False))
        images = s.x_train[torch.as_tensor(idx)].repeat(self.config.trigger_draws, 1, 1, 1)
        if self.config.use_trigger:
            images = s.trigger.apply(images, seed=self.np_rng)
        target = torch.full((len(images),), s.target_class, dtype=torch.int64)
        model.eval()
        params = _params(model)
        total = [torch.zeros_like(p) for p in params]
        for start in range(0, len(images), self.config.source_batch_size):
            xb = images[start:start + self.config.source_batch_size].to(self.device)
            yb = target[start:start + self.config.source_batch_size].to(self.device)
            loss = F.cross_entropy(model(xb), yb, reduction="sum") / len(images)
            for acc, g in zip(total, torch.autograd.grad(loss, params), strict=True):
                acc += g.detach()
        return total

    # --- crafting
    def _matching_loss(self, model: nn.Module, g_source: list[torch.Tensor], source_norm: torch.Tensor,
                       x: torch.Tensor, target: torch.Tensor, create_graph: bool) -> torch.Tensor:
        if self.config.augment:
            x = augment(x, self.recipe.crop_padding, self.recipe.flip, self.generator)
        loss = F.cross_entropy(model(x), target)
        g_poison = torch.autograd.grad(loss, _params(model), create_graph=create_graph)
        dot = sum((gp * gs).sum() for gp, gs in zip(g_poison, g_source, strict=True))
        poison_norm = torch.sqrt(sum((gp ** 2).sum() for gp in g_poison))
        return 1.0 - dot / (poison_norm * source_norm + 1e-12)

    def _targets(self, models: list[nn.Module]) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
        targets = []
        for model in models:
            g_source = self.source_gradient(model)
            targets.append((g_source, torch.sqrt(sum((g ** 2).sum() for g in g_source))))
        return targets

    def _ensemble_loss(self, models: list[nn.Module], targets, x: torch.Tensor, target: torch.Tensor,
                       create_graph: bool) -> torch.Tensor:
        losses = [self._matching_loss(m, g, n, x, target, create_graph) for m, (g, n) in zip(models, targets, strict=True)]
        return sum(losses) / len(losses)

    def _delta(self, param: torch.Tensor, base: torch.Tensor, eps: float) -> torch.Tensor:
        """The perturbation that ``param`` stands for (differentiable in ``param``)."""
        if self.config.parametrisation == "tanh":
            return (base + eps * torch.tanh(param)).clamp(0, 1) - base
        return param

    def run(self, poison_idx: np.ndarray, surrogate: nn.Module) -> tuple[torch.Tensor, float, nn.Module]:
        cfg, s = self.config, self.scenario
        base = s.x_train[torch.as_tensor(poison_idx)].to(self.device)
        target = torch.full((len(base),), s.target_class, dtype=torch.int64, device=self.device)
        eps = float(s.eps)
        best_delta, best_loss = None, float("inf")
        first_models = self.with_snapshots(
            [surrogate] + [self.train_surrogate(s.x_train, s.y_train) for _ in range(cfg.ensemble - 1)])
        initial_states = [copy.deepcopy(m.state_dict()) for m in first_models]
        interval = cfg.steps // (cfg.retrain_times + 1) if cfg.retrain_times > 0 else 0
        for _ in range(cfg.restarts):
            models = first_models
            for model, state in zip(models, initial_states, strict=True):
                model.load_state_dict(state)
            targets = self._targets(models)
            noise = torch.randn(base.shape, generator=self.generator).to(self.device)
            if cfg.parametrisation == "tanh":
                # ART starts w at N(0, (1e-4 eps)^2): delta is ~0 and the first signed steps set its pattern.
                param = (noise * 1e-4 * eps).requires_grad_(True)
                lr = cfg.tanh_lr
            else:
                delta = (noise * eps).clamp(-eps, eps)
                param = ((base + delta).clamp(0, 1) - base).requires_grad_(True)
                lr = cfg.lr
            optimizer = torch.optim.Adam([param], lr=lr)
            drops = sorted({max(1, int(round(f * cfg.steps))) for f in cfg.lr_drops})
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=drops, gamma=0.1)
            retrained = 0
            for step in range(cfg.steps):
                if interval and step > 0 and step % interval == 0 and retrained < cfg.retrain_times:
                    x_now = s.x_train.clone()
                    x_now[torch.as_tensor(poison_idx)] = (base + self._delta(param, base, eps).detach()).cpu()
                    models = self.with_snapshots([self.train_surrogate(x_now, s.y_train) for _ in range(cfg.ensemble)])
                    targets = self._targets(models)
                    retrained += 1
                for model in models:
                    model.eval()
                optimizer.zero_grad(set_to_none=True)
                for start in range(0, len(base), cfg.poison_batch_size):
                    sl = slice(start, start + cfg.poison_batch_size)
                    delta = self._delta(param[sl], base[sl], eps)
                    loss = self._ensemble_loss(models, targets, base[sl] + delta, target[sl], True)
                    loss.backward()
                param.grad.sign_()
                optimizer.step()
                scheduler.step()
                if cfg.parametrisation == "direct":
                    with torch.no_grad():
                        param.clamp_(-eps, eps)
                        param.copy_((base + param).clamp(0, 1) - base)
            delta = self._delta(param, base, eps).detach()
            final = 0.0
            for start in range(0, len(base), cfg.poison_batch_size):
                sl = slice(start, start + cfg.poison_batch_size)
                final += float(self._ensemble_loss(models, targets, base[sl] + delta[sl], target[sl], False))
            if final < best_loss:
                best_loss, best_delta = final, delta.detach().clone()
        return best_delta.cpu(), best_loss, models[0]


@register_attack
class SleeperAgent(Attack):
    """Sleeper Agent (hidden trigger, clean label, gradient matching with surrogate retraining)."""

    name = "sleeper_agent"
    Config = SleeperAgentConfig
    _salt = 11

    def _select(self, matcher: GradientMatcher, surrogate: nn.Module) -> np.ndarray:
        s, cfg = matcher.scenario, self.config
        candidates = s.class_indices(s.target_class)
        k = min(s.max_poisons, len(candidates))
        if cfg.selection == "random":
            return np.sort(matcher.np_rng.choice(candidates, size=k, replace=False))
        pos = select_by_gradient_norm(surrogate, s.x_train[torch.as_tensor(candidates)],
                                      s.y_train[torch.as_tensor(candidates)], k, matcher.device)
        return np.sort(candidates[pos])

    def _craft(self, scenario: Scenario) -> Submission:
        matcher = GradientMatcher(self.config, scenario, self._salt)
        surrogate = matcher.train_surrogate(scenario.x_train, scenario.y_train)
        poison_idx = self._select(matcher, surrogate)
        delta, loss, _ = matcher.run(poison_idx, surrogate)
        return Submission(poison_idx, delta.numpy(), None,
                          {"matching_loss": loss, "surrogate_trainings": matcher.trainings})
