"""Data poisoning as a two-player PettingZoo AEC environment: an attacker tampers with the training set,
a defender filters it, and a victim trained from scratch on what is left decides the rewards.

+--------------------+----------------------------------------------------------------+
| Import             | ``from parley.envs import poisoning_v0``                       |
+--------------------+----------------------------------------------------------------+
| Agents             | ``["attacker", "defender"]`` (``["attacker"]`` when            |
|                    | ``defense_enabled=False``); each acts once, in that order      |
+--------------------+----------------------------------------------------------------+
| Attacker action    | Dict: ``indices`` (P,) int64, ``delta`` (P, C, H, W) float32,  |
|                    | ``labels`` (P,) int64; P = the poison budget in images         |
+--------------------+----------------------------------------------------------------+
| Defender action    | Dict: ``remove`` MultiBinary(N) -- 1 drops that training image |
+--------------------+----------------------------------------------------------------+
| Observations       | Dict, per role (below)                                         |
+--------------------+----------------------------------------------------------------+
| Parallel API       | No (the defender acts on the attacker's output)                |
+--------------------+----------------------------------------------------------------+
| PettingZoo id      | ``parley/poisoning-v0``                                        |
+--------------------+----------------------------------------------------------------+

Following Souri et al. (2022), "Sleeper Agent: Scalable Hidden Trigger Backdoors for Neural Networks
Trained from Scratch", the victim's training *is* the dynamics: nothing is learned until both players
have moved, then a fresh victim is trained from scratch on the submitted training set and evaluated.

Episode
-------
``reset(seed)`` draws a source and a target class (distinct) and a patch trigger (a binary pattern
``trigger_size`` pixels square: 7x7 on 28x28 mnist5k) placed at a random location per image, or at the
bottom-right corner with ``trigger_placement="fixed"`` (BackdoorBench's BadNets). The attacker moves
first; its submission is checked and applied; the defender then sees the resulting training set and
chooses images to remove; the victim (``victim``, trained with ``recipe``, optionally changed by
``training_defense``) trains on the remainder from scratch and is evaluated on the clean test set and on
patched test images. Both agents then terminate.

Attacker action
---------------
``{"indices": int64 (P,), "delta": float32 (P, C, H, W), "labels": int64 (P,), "stamp": 0 or 1}``
where ``P`` is the budget ``floor(budget * N)``. Slots with index -1 are unused (so fewer than P images
may be perturbed); label -1 keeps an image's label, any other label replaces it (dirty-label attacks;
refused when ``allow_relabel=False``). ``stamp`` picks the threat model: 0 (perturbation: every pixel
moves by at most ``eps``) or 1 (stamp: inside one ``trigger_size`` square per image the pixels may take
any value, elsewhere ``eps`` holds; refused when ``allow_stamp=False``). BadNets and the clean-label
backdoor submit stamps, the clean-label perturbation attacks do not. :meth:`Submission.to_action`
builds this dict, and ``step`` also accepts a :class:`~parley.attacks.base.Submission` directly. Every
submission is checked: at most P images, the threat model's bound, ``x + delta`` within [0, 1],
indices in range and unique, labels valid; a violation raises :class:`BudgetError` (a ``ValueError``)
whose ``limit`` attribute and message name the limit broken (``budget``, ``eps``, ``stamp``,
``pixel_range``, ``indices``, ``labels``, ``shape``), and the episode stays where it was. The space's
``sample()`` draws valid perturbation submissions (random images, random perturbations within ``eps``
and the pixel range, labels kept) -- a random-noise attacker.

Defender action
---------------
``{"remove": int8 (N,)}``; ones mark training images to drop before the victim trains.
:func:`parley.attacks.defenses.defense_action` turns a list of indices into this dict.

Observations (what each threat model allows)
--------------------------------------------
Attacker: ``x_train`` float32 (N, C, H, W) and ``y_train`` int64 (N,) -- the clean training set;
``source_class``, ``target_class``; ``trigger`` float32 (C, p, p); ``max_poisons`` and ``eps``. It never
sees the test set or the defender's move. It is assumed to know the victim's architecture and training
recipe (gray box, Sleeper Agent's main setting): ``env.unwrapped.attacker_scenario()`` returns the
:class:`~parley.attacks.base.Scenario` the attacks in :mod:`parley.attacks` take.

Defender: ``x_train`` and ``y_train`` as submitted by the attacker (before the attacker moves: the clean
set) and ``max_poisons`` (the budget, which spectral signatures need). It does not see the source or
target class, the trigger, or which images were touched.

Rewards
-------
Zero until the victim is evaluated; then the attacker receives the source attack success rate (ASR:
share of patched source-class test images classified as the target) and the defender receives
``clean_accuracy - ASR - removal_cost * (clean images removed)``.

Infos
-----
At the end both agents' infos hold ``clean_accuracy``; on the test images patched once per episode:
``attack_success_rate`` (source ASR), ``full_attack_success_rate`` (patched images of every non-target
class sent to the target), ``robust_accuracy`` and ``full_robust_accuracy`` (BackdoorBench R-Acc:
patched images still given their true class); with ``compare_clean=True`` (default) a victim of the same
seed and recipe trained on the clean, undefended training set gives ``reference_clean_accuracy``,
``clean_accuracy_drop`` (reference minus this victim) and ``reference_attack_success_rate`` /
``reference_full_attack_success_rate`` (what the patch alone does; the reference is trained once per
seed and reused, since neither the pair nor the attack changes it). Also ``poison_precision`` and
``poison_recall`` of the defender's removals (NaN when nothing was removed / poisoned),
``num_poisons``, ``num_removed``, ``clean_removed``, ``source_class``, ``target_class`` and the wall
times ``attacker_time_s``, ``defender_time_s`` (from the agent's turn starting to its step),
``train_time_s``, ``eval_time_s`` and ``reference_time_s``. The attacker's submission ``info`` (e.g.
``craft_time_s``) is copied under ``attack_info`` when a Submission was passed.

Arguments
---------
``poisoning_v0.env(dataset="mnist5k", budget=0.01, eps=16/255, recipe=None, defense_enabled=True,
seed=None, victim="small_cnn", victim_kwargs=None, allow_relabel=True, removal_cost=0.001,
trigger_size=None, training_defense=None, device="auto", render_mode=None, trigger_placement="random",
allow_stamp=True, compare_clean=True)``

* ``dataset``: a name for :func:`parley.attacks.datasets.load_dataset` or an ``ImageDataset``
  (``"digits"``, 8x8, is the fast smoke setting);
* ``budget``: poisoned share of the training set, in (0, 1]; ``eps``: l-infinity bound of
  perturbation poisons in [0, 1] pixel units, in (0, 1];
* ``recipe``: the victim's :class:`~parley.attacks.victims.TrainingRecipe`, or a preset name
  (``"tiny"``, ``"dataset"`` = ``TrainingRecipe.for_dataset``, the default, ``"paper"``);
* ``training_defense``: a defense name or object whose ``adjust_recipe`` changes the victim's training;
* ``source_class`` / ``target_class`` may be fixed through ``reset(options={...})``.

Every argument is checked when given: a wrong type raises ``TypeError``, an unknown name or an
out-of-range value ``ValueError``, each naming what is allowed.

Version history
---------------
* v0: initial release; mnist5k default, stamp threat model, full ASR and the clean reference in the
  infos (the action Dict gained ``stamp``; a dict without it is read as a perturbation submission).
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from pettingzoo import AECEnv
from pettingzoo.utils import wrappers

from parley.attacks.base import (
    BudgetError,
    Scenario,
    Submission,
    apply_checked,
    backdoor_metrics,
    check_submission,
    max_poisons_for,
    patched_test_set,
    poison_precision_recall,
)
from parley.attacks.datasets import DATASETS, ImageDataset, load_dataset
from parley.attacks.triggers import PLACEMENTS, default_patch_size, make_trigger
from parley.attacks.victims import TrainingRecipe, make_victim, predict, train_model
from parley.utils import resolve_device

__all__ = ["env", "raw_env", "BudgetError", "ImageArraySpace", "SubmissionSpace", "DEFAULT_DATASET", "RECIPE_PRESETS"]

ATTACKER, DEFENDER = "attacker", "defender"

#: The default scenario: 5,000 real 28x28 MNIST digits (``digits``, 8x8, is the fast smoke setting).
DEFAULT_DATASET = "mnist5k"
#: Victim schedules selectable by name: ``TrainingRecipe.tiny``, ``.for_dataset`` and ``.paper_cifar10``.
RECIPE_PRESETS = ("tiny", "dataset", "paper")
#: Options ``reset`` reads (others are ignored, as PettingZoo's API test expects).
RESET_OPTIONS = ("source_class", "target_class")

# Predictions of the clean reference victim, keyed by everything that determines them; a reference is
# shared by every episode with the same seed (its pair and the attack do not change it).
_CLEAN_REFERENCE_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}
_CLEAN_REFERENCE_CACHE_SIZE = 64


def _recipe_for(recipe: Any, dataset: ImageDataset) -> TrainingRecipe:
    if recipe is None or recipe == "dataset":
        return TrainingRecipe.for_dataset(dataset)
    if isinstance(recipe, TrainingRecipe):
        return recipe
    if recipe == "tiny":
        return TrainingRecipe.tiny(dataset)
    if recipe == "paper":
        return TrainingRecipe.paper_cifar10()
    if isinstance(recipe, str):
        raise ValueError(f"unknown recipe preset {recipe!r}; choose one of {', '.join(RECIPE_PRESETS)} or pass a "
                         "TrainingRecipe")
    raise TypeError(f"recipe must be a TrainingRecipe, a preset name ({', '.join(RECIPE_PRESETS)}) or None; got "
                    f"{type(recipe).__name__}")


def _require_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def _require_real(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


class ImageArraySpace(gymnasium.Space[np.ndarray]):
    """float32 arrays of a fixed shape with values in [0, 1].

    ``Box`` stores full-size ``low``/``high`` arrays, which for a whole training set (50,000 CIFAR
    images) would cost gigabytes; this space keeps the bounds as scalars.
    """

    def __init__(self, shape: tuple[int, ...], seed: int | None = None) -> None:
        super().__init__(shape, np.float32, seed)

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        return self.np_random.random(self.shape, dtype=np.float32)

    def contains(self, x: Any) -> bool:
        return (isinstance(x, np.ndarray) and x.shape == self.shape and x.dtype == np.float32
                and bool(x.min(initial=0.0) >= 0.0) and bool(x.max(initial=0.0) <= 1.0))

    @property
    def is_np_flattenable(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"ImageArraySpace({self.shape})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ImageArraySpace) and other.shape == self.shape


class SubmissionSpace(spaces.Dict):
    """The attacker's Dict action space whose ``sample()`` draws *valid* submissions for the current
    training set: unique random indices (a random number of used slots), a uniform perturbation within
    ``eps`` and the pixel range, labels kept (-1)."""

    def __init__(self, num_train: int, max_poisons: int, shape: tuple[int, int, int], eps: float,
                 num_classes: int, seed: int | None = None) -> None:
        # delta's Box spans [-1, 1]: stamp submissions may change a trigger-sized square freely; the env's
        # check enforces each threat model's bound.
        super().__init__({
            "indices": spaces.Box(-1, num_train - 1, (max_poisons,), dtype=np.int64),
            "delta": spaces.Box(-1.0, 1.0, (max_poisons, *shape), dtype=np.float32),
            "labels": spaces.Box(-1, num_classes - 1, (max_poisons,), dtype=np.int64),
            "stamp": spaces.Discrete(2),
        }, seed=seed)
        self.max_poisons = max_poisons
        self.eps = float(eps)
        self.x_train: np.ndarray | None = None

    def sample(self, mask: Any = None, probability: Any = None) -> dict[str, np.ndarray]:
        rng = self.np_random
        n = self["indices"].high[0] + 1
        k = int(rng.integers(1, self.max_poisons + 1))
        indices = np.full(self.max_poisons, -1, dtype=np.int64)
        indices[:k] = rng.choice(n, size=k, replace=False)
        delta = np.zeros(self["delta"].shape, dtype=np.float32)
        if self.x_train is not None:
            base = self.x_train[indices[:k]]
            low, high = np.maximum(-self.eps, -base), np.minimum(self.eps, 1.0 - base)
            delta[:k] = (low + rng.random(base.shape, dtype=np.float32) * (high - low)).astype(np.float32)
            delta[:k] = np.clip(delta[:k], low, high)
        return {"indices": indices, "delta": delta, "labels": np.full(self.max_poisons, -1, dtype=np.int64),
                "stamp": 0}


def env(**kwargs: Any) -> AECEnv:
    """The poisoning env wrapped in PettingZoo's order-enforcing wrapper; see the module docstring."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))


class raw_env(AECEnv):  # noqa: N801 - PettingZoo's naming convention
    """Attacker / defender / victim poisoning game; see the module docstring (the env card)."""

    metadata = {"name": "poisoning_v0", "render_modes": [], "is_parallelizable": False}

    def __init__(self, dataset: str | ImageDataset = DEFAULT_DATASET, budget: float = 0.01, eps: float = 16 / 255,
                 recipe: TrainingRecipe | str | None = None, defense_enabled: bool = True, seed: int | None = None,
                 victim: str = "small_cnn", victim_kwargs: dict[str, Any] | None = None,
                 allow_relabel: bool = True, removal_cost: float = 0.001, trigger_size: int | None = None,
                 training_defense: Any = None, device: str = "auto", render_mode: str | None = None,
                 trigger_placement: str = "random", allow_stamp: bool = True, compare_clean: bool = True) -> None:
        super().__init__()
        # Every argument is checked here, before any data is loaded or a victim trained.
        if not isinstance(dataset, (str, ImageDataset)):
            raise TypeError(f"dataset must be a name ({', '.join(DATASETS)}) or an ImageDataset, got "
                            f"{type(dataset).__name__}")
        budget, eps = _require_real("budget", budget), _require_real("eps", eps)
        if not 0 < budget <= 1:
            raise ValueError(f"budget is a fraction of the training set in (0, 1], got {budget}")
        if not 0 < eps <= 1:
            raise ValueError(f"eps is an l-infinity bound in [0, 1] pixel units, in (0, 1]; got {eps}")
        removal_cost = _require_real("removal_cost", removal_cost)
        if removal_cost < 0:
            raise ValueError(f"removal_cost must be >= 0, got {removal_cost}")
        defense_enabled = _require_bool("defense_enabled", defense_enabled)
        allow_relabel = _require_bool("allow_relabel", allow_relabel)
        allow_stamp = _require_bool("allow_stamp", allow_stamp)
        compare_clean = _require_bool("compare_clean", compare_clean)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        if not isinstance(victim, str):
            raise TypeError(f"victim must be a name (e.g. 'small_cnn', 'resnet18'), got {type(victim).__name__}")
        if victim_kwargs is not None and not isinstance(victim_kwargs, dict):
            raise TypeError(f"victim_kwargs must be a dict of the victim's keyword arguments, got "
                            f"{type(victim_kwargs).__name__}")
        if trigger_placement not in PLACEMENTS:
            raise ValueError(f"trigger_placement must be one of {', '.join(PLACEMENTS)}; got {trigger_placement!r}")
        if not isinstance(device, str):
            raise TypeError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        resolve_device(device)  # an unknown name, or CUDA asked for without one, fails here
        if render_mode is not None:
            raise ValueError("poisoning_v0 has no render modes; leave render_mode=None")
        self.dataset = load_dataset(dataset)
        height, width = self.dataset.shape[1:]
        if trigger_size is not None:
            if isinstance(trigger_size, bool) or not isinstance(trigger_size, (int, np.integer)):
                raise TypeError(f"trigger_size must be an int or None, got {trigger_size!r}")
            if not 1 <= trigger_size <= min(height, width):
                raise ValueError(f"trigger_size must lie in [1, {min(height, width)}] for {height}x{width} images; "
                                 f"got {trigger_size}")
        self.budget = budget
        self.eps = eps
        self.max_poisons = max_poisons_for(self.dataset.num_train, budget)
        self.recipe = _recipe_for(recipe, self.dataset)
        self.victim = victim
        self.victim_kwargs = dict(victim_kwargs or {})
        make_victim(victim, self.dataset, **self.victim_kwargs)  # fail now on a bad name or option
        self.allow_relabel = allow_relabel
        self.allow_stamp = allow_stamp
        self.compare_clean = compare_clean
        self.removal_cost = removal_cost
        self.trigger_size = int(trigger_size or default_patch_size(height))
        self.trigger_placement = trigger_placement
        if isinstance(training_defense, str):
            from parley.attacks.defenses import make_defense

            training_defense = make_defense(training_defense)
        if training_defense is not None and not callable(getattr(training_defense, "adjust_recipe", None)):
            raise TypeError("training_defense must be a defense name (e.g. 'dp_sgd', 'mixup', 'cutout') or an object "
                            f"with adjust_recipe(recipe, image_size=...); got {type(training_defense).__name__}")
        self.training_defense = training_defense
        self.device = device
        self.render_mode = render_mode
        self.defense_enabled = defense_enabled
        self._seed = seed

        n, shape, c = self.dataset.num_train, self.dataset.shape, self.dataset.num_classes
        self.possible_agents = [ATTACKER, DEFENDER] if defense_enabled else [ATTACKER]
        self.observation_spaces = {
            ATTACKER: spaces.Dict({
                "x_train": ImageArraySpace((n, *shape)),
                "y_train": spaces.Box(0, c - 1, (n,), dtype=np.int64),
                "source_class": spaces.Discrete(c),
                "target_class": spaces.Discrete(c),
                "trigger": spaces.Box(0.0, 1.0, (shape[0], self.trigger_size, self.trigger_size), dtype=np.float32),
                "max_poisons": spaces.Discrete(n + 1),
                "eps": spaces.Box(0.0, 1.0, (1,), dtype=np.float32),
            }),
        }
        self.action_spaces: dict[str, spaces.Space] = {
            ATTACKER: SubmissionSpace(n, self.max_poisons, shape, self.eps, c),
        }
        if defense_enabled:
            self.observation_spaces[DEFENDER] = spaces.Dict({
                "x_train": ImageArraySpace((n, *shape)),
                "y_train": spaces.Box(0, c - 1, (n,), dtype=np.int64),
                "max_poisons": spaces.Discrete(n + 1),
            })
            self.action_spaces[DEFENDER] = spaces.Dict({"remove": spaces.MultiBinary(n)})
        self._clean_x = self.dataset.x_train.numpy()
        self._clean_y = self.dataset.y_train.numpy()
        self.np_random = np.random.default_rng(seed)
        self.agents: list[str] = []

    # ------------------------------------------------------------------ spaces
    def observation_space(self, agent: str) -> spaces.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.action_spaces[agent]

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        if seed is not None:
            self.np_random = np.random.default_rng(seed)
            for i, agent in enumerate(self.possible_agents):
                self.action_spaces[agent].seed(seed + i)
        options = options or {}
        if not isinstance(options, dict):
            raise TypeError(f"options must be a dict, got {type(options).__name__}")
        c = self.dataset.num_classes
        for key in RESET_OPTIONS:
            value = options.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
                raise TypeError(f"{key} must be an int class index in [0, {c - 1}], got {value!r}")
        source = options.get("source_class")
        target = options.get("target_class")
        source = int(self.np_random.integers(c)) if source is None else int(source)
        if target is None:
            target = int((source + 1 + self.np_random.integers(c - 1)) % c)
        if source == target or not (0 <= source < c and 0 <= target < c):
            raise ValueError(f"source_class and target_class must be distinct classes in [0, {c - 1}]; "
                             f"got {source} and {target}")
        self.source_class, self.target_class = source, int(target)
        self.episode_seed = int(self.np_random.integers(2**31))
        self.trigger = make_trigger(self.dataset.shape[0], self.trigger_size, seed=self.episode_seed,
                                    placement=self.trigger_placement)
        self._x, self._y = self.dataset.x_train, self.dataset.y_train
        self.submission: Submission | None = None
        self.removed = np.zeros(0, dtype=np.int64)
        self._times: dict[str, float] = {}
        self._attack_info: dict[str, Any] = {}
        self.action_spaces[ATTACKER].x_train = self._clean_x

        self.agents = list(self.possible_agents)
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos: dict[str, dict[str, Any]] = {a: {} for a in self.agents}
        self.agent_selection = ATTACKER
        self._skip_agent_selection = None
        self._turn_started = time.perf_counter()

    def observe(self, agent: str) -> dict[str, Any]:
        x, y = self._x.numpy(), self._y.numpy()
        if agent == ATTACKER:
            return {
                "x_train": self._clean_x,
                "y_train": self._clean_y,
                "source_class": np.int64(self.source_class),
                "target_class": np.int64(self.target_class),
                "trigger": self.trigger.patch,
                "max_poisons": np.int64(self.max_poisons),
                "eps": np.array([self.eps], dtype=np.float32),
            }
        return {"x_train": x, "y_train": y, "max_poisons": np.int64(self.max_poisons)}

    def attacker_scenario(self) -> Scenario:
        """The :class:`~parley.attacks.base.Scenario` the attacker's threat model allows."""
        return Scenario(self.dataset.x_train, self.dataset.y_train, self.dataset.num_classes, self.source_class,
                        self.target_class, self.trigger, self.max_poisons, self.eps, self.recipe, self.victim,
                        dict(self.victim_kwargs), self.allow_relabel, self.episode_seed, self.device,
                        self.allow_stamp)

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        elapsed = time.perf_counter() - self._turn_started
        self._cumulative_rewards[agent] = 0.0
        if agent == ATTACKER:
            self._attacker_step(action)
            self._times["attacker_time_s"] = elapsed
            if self.defense_enabled:
                self.agent_selection = DEFENDER
            else:
                self._finish()
        else:
            self._defender_step(action)
            self._times["defender_time_s"] = elapsed
            self._finish()
        self._turn_started = time.perf_counter()
        self._accumulate_rewards()

    def _attacker_step(self, action: Any) -> None:
        if action is None:
            raise ValueError("the attacker must submit an action (a Submission or the Dict from its action space)")
        submission = action if isinstance(action, Submission) else Submission.from_action(action)
        check_submission(submission, self.dataset.x_train, self.dataset.y_train, max_poisons=self.max_poisons,
                         eps=self.eps, num_classes=self.dataset.num_classes, allow_relabel=self.allow_relabel,
                         stamp_size=self.trigger_size, allow_stamp=self.allow_stamp)
        self.submission = submission
        self._attack_info = dict(submission.info) if isinstance(action, Submission) else {}
        self._x, self._y = apply_checked(submission, self.dataset.x_train, self.dataset.y_train)

    def _defender_step(self, action: Any) -> None:
        n = self.dataset.num_train
        if action is None:
            raise ValueError("the defender must submit an action: {'remove': int8 mask of shape (N,)}")
        mask = action.get("remove") if isinstance(action, dict) else None
        if mask is None:
            raise ValueError("defender action must be a dict {'remove': 0/1 mask of shape (N,)}")
        mask = np.asarray(mask)
        if mask.shape != (n,) or not np.isin(mask, (0, 1)).all():
            raise ValueError(f"'remove' must be a 0/1 mask of shape ({n},), got shape {mask.shape}")
        self.removed = np.flatnonzero(mask).astype(np.int64)

    def _finish(self) -> None:
        keep = np.setdiff1d(np.arange(self.dataset.num_train), self.removed)
        recipe = self.recipe
        if self.training_defense is not None:
            recipe = self.training_defense.adjust_recipe(recipe, image_size=self.dataset.shape[1])
        start = time.perf_counter()
        torch.manual_seed(self.episode_seed)
        model = make_victim(self.victim, self.dataset, **self.victim_kwargs)
        keep_t = torch.as_tensor(keep)
        model = train_model(model, self._x[keep_t], self._y[keep_t], recipe, device=self.device,
                            seed=self.episode_seed)
        self._times["train_time_s"] = time.perf_counter() - start
        start = time.perf_counter()
        patched = patched_test_set(self.dataset.x_test, self.trigger, seed=self.episode_seed + 1)
        metrics = backdoor_metrics(model, self.dataset.x_test, self.dataset.y_test, self.source_class,
                                   self.target_class, self.trigger, device=self.device, patched=patched)
        self._times["eval_time_s"] = time.perf_counter() - start
        if self.compare_clean:
            start = time.perf_counter()
            metrics.update(self._clean_reference(patched, metrics["clean_accuracy"]))
            self._times["reference_time_s"] = time.perf_counter() - start
        poisoned = self.submission.indices if self.submission is not None else np.zeros(0, np.int64)
        precision, recall = poison_precision_recall(self.removed, poisoned)
        clean_removed = int(len(np.setdiff1d(self.removed, poisoned)))
        asr = metrics["attack_success_rate"]
        self.rewards[ATTACKER] = float(asr)
        if DEFENDER in self.agents:
            self.rewards[DEFENDER] = float(metrics["clean_accuracy"] - asr - self.removal_cost * clean_removed)
        info = {
            **metrics,
            "poison_precision": precision,
            "poison_recall": recall,
            "num_poisons": int(len(poisoned)),
            "num_removed": int(len(self.removed)),
            "clean_removed": clean_removed,
            "source_class": self.source_class,
            "target_class": self.target_class,
            **self._times,
        }
        if self._attack_info:
            info["attack_info"] = self._attack_info
        for agent in self.agents:
            self.terminations[agent] = True
            self.infos[agent] = dict(info)
        self.last_model = model

    def _clean_reference(self, patched: torch.Tensor, clean_accuracy: float) -> dict[str, float]:
        """Metrics of a victim of the same seed and recipe trained on the clean, undefended training set:
        its clean accuracy (and this victim's drop from it) and its ASR on the same patched images (the
        share the patch alone sends to the target)."""
        key = self._reference_key()
        if key not in _CLEAN_REFERENCE_CACHE:
            torch.manual_seed(self.episode_seed)
            model = make_victim(self.victim, self.dataset, **self.victim_kwargs)
            model = train_model(model, self.dataset.x_train, self.dataset.y_train, self.recipe, device=self.device,
                                seed=self.episode_seed)
            if len(_CLEAN_REFERENCE_CACHE) >= _CLEAN_REFERENCE_CACHE_SIZE:
                _CLEAN_REFERENCE_CACHE.pop(next(iter(_CLEAN_REFERENCE_CACHE)))
            _CLEAN_REFERENCE_CACHE[key] = (predict(model, self.dataset.x_test, self.device),
                                           predict(model, patched, self.device))
        clean_pred, patched_pred = _CLEAN_REFERENCE_CACHE[key]
        labels = self.dataset.y_test.numpy()
        source = labels == self.source_class
        reference_accuracy = float((clean_pred == labels).mean())
        keep = labels != self.target_class
        return {
            "reference_clean_accuracy": reference_accuracy,
            "clean_accuracy_drop": reference_accuracy - clean_accuracy,
            "reference_attack_success_rate": float((patched_pred[source] == self.target_class).mean()),
            "reference_full_attack_success_rate": float((patched_pred[keep] == self.target_class).mean()),
        }

    def _reference_key(self) -> str:
        import hashlib
        import json

        if not hasattr(self, "_dataset_digest"):
            digest = hashlib.sha1()
            for array in (self.dataset.x_train, self.dataset.y_train, self.dataset.x_test, self.dataset.y_test):
                digest.update(np.ascontiguousarray(array.numpy()).tobytes())
            self._dataset_digest = digest.hexdigest()
        return json.dumps([self._dataset_digest, self.victim, self.victim_kwargs, repr(self.recipe), self.episode_seed,
                           self.trigger.patch.tolist(), self.trigger.placement, self.device], sort_keys=True,
                          default=str)

    def render(self) -> None:
        return None

    def close(self) -> None:
        return None
