"""Masked PPO for one negotiating learner against a fixed partner policy, on the batched rules.

A compact, single-file PPO in the manner of CleanRL, written for the targeted-data-acquisition loop
(:mod:`parley.oracles.tda`), which retrains its learner every round and so needs something that runs
thousands of game steps per second on a CPU. It trains a :class:`~parley.agents.nn.torch_policy.TorchPolicy`
directly on :class:`~parley.envs.negotiation.BatchedNegotiation`:

* every iteration plays ``games_per_iteration`` complete games at once with
  :func:`parley.envs.play.play_batch`; in each game the learner's seat and the first mover are drawn
  at random, the other seat is played by ``partner`` (any batched :class:`~parley.envs.policy.Policy`:
  a scripted partner, a supervised partner model, ...) or, given a list of policies, by one of them
  drawn per game (a partner pool: uniformly, or by a :class:`PrioritisedSampling` that favours the
  partners the learner does worst against); play_batch's ``on_step`` hook records the learner's
  observations, masks, acts, log-probabilities and values;
* the learner's decisions form short episodes (at most ``ceil(max_turns / 2)`` steps) whose only
  reward comes at the end of the game; advantages use GAE over the learner's own steps;
* the learner never acts illegally: its logits are masked with the rules' legal-action mask (a
  partner's illegal act raises :class:`~parley.envs.negotiation.IllegalActionError`);
* the reward is chosen by name (:data:`REWARDS`) -- the learner's own points, or a *tailored* reward
  (Pareto bonus, prosocial mix, fairness penalty) for the baselines of Kwon et al. (2021);
* ``sl_coef > 0`` adds a behaviour-cloning loss on a supervised dataset to every update ("SL+RL");
* ``opponent_model_coef > 0`` adds an auxiliary opponent-model loss: the learner's
  :class:`~parley.agents.nn.torch_policy.OpponentModelHead`, on the policy's trunk, predicts from each
  of the learner's observations and acts the act the partner sends next (cross-entropy over the
  partner's legal acts; steps the partner does not answer, because the game ended, are left out). The
  trunk learns features that tell partners apart by how they answer; acting does not use the head.
  ``opponent_model_target="agrees"`` trains the same head on a coarser target: only whether the partner
  agrees (binary cross-entropy on the head's probability of the agree act, where agreeing is legal).

Rewards are multiplied by ``reward_scale`` (default 0.1: points / 10, the most an agent can score) so
values stay near [0, 1]. Each history row reports the iteration's games from the learner's side with
the measures of :mod:`parley.agents.evaluation` (``score``, ``partner_score``, ``agreement``,
``pareto``, ...) and counts ``learner_steps`` (the learner's decisions: what a single-agent env with
the partner inside calls env steps, and what RLlib and Stable-Baselines3 count) and ``env_steps``
(both sides' acts). ``on_iteration(row, optimizer)`` is called after every iteration
and may stop training by returning True; ``parley train --framework native`` uses it for its logs and
checkpoints, and ``start_iteration``/``optimizer_state`` for ``--resume``.

Usage::

    from parley.agents.training.ppo import PPOConfig, train_ppo
    result = train_ppo(learner, partner, PPOConfig(total_games=20_000, reward="utility"))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from parley.agents.evaluation import game_measures, mean_measures
from parley.agents.nn.torch_policy import LogSoftmaxCategorical, TorchPolicy, mask_logits
from parley.agents.training.supervised import behaviour_cloning_loss
from parley.envs.corpus import ActDataset
from parley.envs.negotiation import AGREE_ACTION, DEFAULT_MAX_TURNS, NUM_ACTIONS, sample_context_arrays
from parley.envs.play import PlayStep, play_batch, seating_for
from parley.envs.policy import Policy
from parley.utils import RESOLVED_PRECISIONS, training_autocast

#: Reward names and what they pay the learner at the end of a game (own/partner are points, 0..10).
REWARDS: dict[str, str] = {
    "utility": "own points",
    "pareto_bonus": "own points + pareto_bonus if the deal is Pareto-optimal",
    "prosocial": "prosocial_weight * own + (1 - prosocial_weight) * partner points",
    "fairness": "own points - fairness_weight * |own - partner| when there is a deal",
}

#: What the opponent-model head is trained to predict about the partner's answer to each learner act.
OPPONENT_MODEL_TARGETS: dict[str, str] = {
    "reply": "the partner's act (cross-entropy over its legal acts)",
    "agrees": "whether the partner agrees (binary cross-entropy on the head's probability of agreeing)",
}


@dataclass
class PPOConfig:
    """Hyperparameters of :func:`train_ppo` (and the reward it optimises)."""

    total_games: int = 20_000
    games_per_iteration: int = 512
    update_epochs: int = 4
    num_minibatches: int = 4
    learning_rate: float = 1e-3
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    ent_coef: float = 0.003
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = 0.05
    reward: str = "utility"
    pareto_bonus: float = 3.0
    prosocial_weight: float = 0.5
    fairness_weight: float = 0.5
    no_deal_reward: float = 0.0
    sl_coef: float = 0.0
    sl_batch_size: int = 256
    opponent_model_coef: float = 0.0  # weight of the auxiliary opponent-model loss (0: off)
    opponent_model_target: str = "reply"  # a key of OPPONENT_MODEL_TARGETS
    max_turns: int = DEFAULT_MAX_TURNS
    reward_scale: float = 0.1
    #: the format of the update's forward and backward passes, "float32" or "bfloat16"
    #: (:func:`parley.utils.resolve_precision`); rollouts act in float32 either way
    precision: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.precision not in RESOLVED_PRECISIONS:
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {self.precision!r}")
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; choose one of {', '.join(REWARDS)}")
        if self.games_per_iteration < 1 or self.total_games < 1:
            raise ValueError("total_games and games_per_iteration must be positive")
        if not self.reward_scale > 0:
            raise ValueError(f"reward_scale must be positive, got {self.reward_scale}")
        if not (np.isfinite(self.opponent_model_coef) and self.opponent_model_coef >= 0):
            raise ValueError(f"opponent_model_coef must be a finite number >= 0 (0: off), got {self.opponent_model_coef}")
        if self.opponent_model_target not in OPPONENT_MODEL_TARGETS:
            raise ValueError(f"unknown opponent_model_target {self.opponent_model_target!r}; choose one of "
                             f"{', '.join(OPPONENT_MODEL_TARGETS)}")


def shaped_reward(metrics: dict[str, np.ndarray], learner_seat: np.ndarray, config: PPOConfig) -> np.ndarray:
    """The end-of-game reward (in points) for the learner in each game, by ``config.reward``."""
    rows = np.arange(len(learner_seat))
    own = metrics["scores"][rows, learner_seat]
    partner = metrics["scores"][rows, 1 - learner_seat]
    agreed = metrics["agreement"] > 0
    if config.reward == "utility":
        return own
    if config.reward == "pareto_bonus":
        return own + config.pareto_bonus * metrics["pareto_optimal"].astype(np.float64)
    if config.reward == "prosocial":
        w = config.prosocial_weight
        return w * own + (1 - w) * partner
    return own - config.fairness_weight * np.where(agreed, np.abs(own - partner), 0.0)


def opponent_model_loss(logits: torch.Tensor, partner_actions: torch.Tensor, partner_masks: torch.Tensor,
                        target: str) -> tuple[torch.Tensor, int, int]:
    """The opponent-model head's loss on a minibatch, its correct predictions and how many it scored.

    ``partner_actions`` is -1 where the partner did not answer; those rows are left out. With
    ``target="reply"`` the loss is the cross-entropy of the partner's act under the head's distribution
    over the partner's legal acts; with ``"agrees"`` it is the binary cross-entropy of whether the
    partner agreed under that distribution's mass on the agree act, on the rows where it could agree.
    """
    rows = partner_actions >= 0
    if target == "agrees":
        rows = rows & partner_masks[:, AGREE_ACTION].bool()
    if not bool(rows.any()):
        return logits.new_zeros(()), 0, 0
    log_probs = mask_logits(logits.float()[rows], partner_masks[rows]).log_softmax(-1)
    actions = partner_actions[rows]
    if target == "reply":
        loss = torch.nn.functional.nll_loss(log_probs, actions)
        hits = int((log_probs.argmax(-1) == actions).sum())
    else:
        agreed = (actions == AGREE_ACTION).float()
        log_agree = log_probs[:, AGREE_ACTION].clamp(max=-1e-6)  # log(1 - p) stays finite
        log_refuse = torch.log(-torch.expm1(log_agree))
        loss = -(agreed * log_agree + (1 - agreed) * log_refuse).mean()
        hits = int(((log_agree > np.log(0.5)).float() == agreed).sum())
    return loss, hits, int(actions.numel())


class PrioritisedSampling:
    """Prioritised opponent sampling: each game's partner drawn by how far the learner trails a reference.

    ``reference[i]`` is the score (points) the learner should reach against partner ``i`` -- for
    ``parley train``, the best scripted partner's score against it. The learner's own score against
    each partner is averaged over the training games of the last ``refresh_every`` iterations; then
    partner ``i`` is drawn with probability

        (1 - uniform_share) * softmax((reference - score) / temperature)[i] + uniform_share / n,

    so partners the learner trails are met more often, and every partner keeps at least
    ``uniform_share / n`` of the games (what it has learnt against the others is not forgotten).
    Until the first refresh, and for a partner not met since, the draw treats the gap as 0.
    """

    def __init__(self, reference: Sequence[float], *, refresh_every: int = 5, temperature: float = 1.0,
                 uniform_share: float = 0.25) -> None:
        self.reference = np.asarray(reference, dtype=np.float64)
        if self.reference.ndim != 1 or len(self.reference) == 0 or not np.isfinite(self.reference).all():
            raise ValueError("reference must hold one finite score per partner")
        if refresh_every < 1:
            raise ValueError(f"refresh_every must be at least 1 iteration, got {refresh_every}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive (points), got {temperature}")
        if not 0.0 <= uniform_share <= 1.0:
            raise ValueError(f"uniform_share must be in [0, 1], got {uniform_share}")
        self.refresh_every, self.temperature, self.uniform_share = refresh_every, temperature, uniform_share
        n = len(self.reference)
        self.gap = np.zeros(n)  # reference - the learner's score, as of the last refresh
        self.probabilities = np.full(n, 1.0 / n)
        self._sums, self._games, self._observed = np.zeros(n), np.zeros(n), 0

    def observe(self, partner_of: np.ndarray, scores: np.ndarray) -> None:
        """Record one iteration's games (partner index and the learner's points per game); refresh the
        probabilities every ``refresh_every`` calls."""
        n = len(self.reference)
        if np.any((partner_of < 0) | (partner_of >= n)):
            raise ValueError(f"partner indices must be in [0, {n})")
        self._sums += np.bincount(partner_of, weights=scores, minlength=n)
        self._games += np.bincount(partner_of, minlength=n)
        self._observed += 1
        if self._observed % self.refresh_every:
            return
        met = self._games > 0
        self.gap = np.where(met, self.reference - self._sums / np.maximum(self._games, 1), 0.0)
        logits = self.gap / self.temperature
        prioritised = np.exp(logits - logits.max())
        self.probabilities = ((1 - self.uniform_share) * prioritised / prioritised.sum()
                              + self.uniform_share / n)
        self._sums[:], self._games[:] = 0.0, 0.0


@dataclass
class PPOResult:
    """The trained learner (the same object passed in) and one log row per iteration."""

    policy: TorchPolicy
    history: list[dict[str, float]]


class _LearnerRollout:
    """The learner's side of one iteration's games.

    As the Policy in the learner's seat it samples acts from the learner's masked distribution; as
    :func:`~parley.envs.play.play_batch`'s ``on_step`` it records each of the learner's decisions
    (observation, mask, act, log-probability, value) at its step index within its game, and the
    partner's next act with its legal mask as the opponent model's target for the learner's last step
    (``partner_actions`` is -1 where the partner did not answer).
    """

    def __init__(self, learner: TorchPolicy, games: int, max_steps: int) -> None:
        self.learner = learner
        self.name = learner.name
        self.observations = np.zeros((max_steps, games, learner.observation_size), dtype=np.float32)
        self.masks = np.zeros((max_steps, games, NUM_ACTIONS), dtype=np.int8)
        self.actions = np.zeros((max_steps, games), dtype=np.int64)
        self.log_probs = np.zeros((max_steps, games), dtype=np.float32)
        self.values = np.zeros((max_steps, games), dtype=np.float32)
        self.valid = np.zeros((max_steps, games), dtype=bool)
        self.partner_actions = np.full((max_steps, games), -1, dtype=np.int64)
        self.partner_masks = np.zeros((max_steps, games, NUM_ACTIONS), dtype=np.int8)
        self.steps = np.zeros(games, dtype=np.int64)  # how many acts the learner has sent in each game
        self._last = (np.zeros(0, np.float32), np.zeros(0, np.float32))

    def act_batch(self, observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        device = self.learner.device
        with torch.no_grad():
            dist, value = self.learner.distribution(torch.as_tensor(observations, device=device),
                                                    torch.as_tensor(action_masks, device=device))
            act = dist.sample()
        self._last = (dist.log_prob(act).cpu().numpy(), value.cpu().numpy())
        return act.cpu().numpy()

    def record(self, step: PlayStep) -> None:
        if step.agent != 0:  # a partner's acts: the answer to the learner's last act, if it has moved
            answered = self.steps[step.rows] > 0
            rows = step.rows[answered]
            k = self.steps[rows] - 1
            self.partner_actions[k, rows] = step.actions[answered]
            self.partner_masks[k, rows] = step.masks[answered]
            return
        rows, k = step.rows, self.steps[step.rows]
        self.observations[k, rows] = step.observations
        self.masks[k, rows] = step.masks
        self.actions[k, rows] = step.actions
        self.log_probs[k, rows], self.values[k, rows] = self._last
        self.valid[k, rows] = True
        self.steps[rows] += 1


def train_ppo(learner: TorchPolicy, partner: Policy | Sequence[Policy], config: PPOConfig | None = None, *,
              sl_data: ActDataset | None = None, log_every: int = 0,
              on_iteration: Callable[[dict[str, float], torch.optim.Optimizer], bool | None] | None = None,
              start_iteration: int = 0, optimizer_state: dict[str, Any] | None = None,
              partner_sampling: PrioritisedSampling | None = None) -> PPOResult:
    """Train ``learner`` in place against ``partner`` (or a pool of partners) with masked PPO.

    Returns the learner and one log row per iteration. Iterations run from ``start_iteration + 1`` to
    ``total_games // games_per_iteration``; ``optimizer_state`` restores Adam's state when resuming.
    Each game's partner is drawn uniformly from the pool, or by ``partner_sampling`` (one reference
    score per partner); with it each row also logs ``partner_probability_max``.
    """
    config = config or PPOConfig()
    if config.sl_coef > 0 and (sl_data is None or len(sl_data) == 0):
        raise ValueError("sl_coef > 0 needs sl_data: the supervised examples to keep imitating")
    opponent_model = config.opponent_model_coef > 0
    if opponent_model and getattr(learner.model, "opponent_head", None) is None:
        raise ValueError("opponent_model_coef > 0 needs a learner with an opponent-model head: "
                         "build it with TorchPolicy(..., opponent_model=True)")
    partners = list(partner) if isinstance(partner, (list, tuple)) else [partner]
    if not partners:
        raise ValueError("the partner pool is empty; give at least one partner policy")
    partner_name = ",".join(str(getattr(p, "name", p)) for p in partners)
    if partner_sampling is not None and len(partner_sampling.reference) != len(partners):
        raise ValueError(f"partner_sampling has {len(partner_sampling.reference)} reference scores for "
                         f"{len(partners)} partners")
    # A resumed run continues a fresh random stream rather than replaying the first iterations' games.
    rng = np.random.default_rng([config.seed, start_iteration])
    torch.manual_seed(config.seed + start_iteration)
    device = learner.device
    model = learner.model
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                 lr=config.learning_rate, eps=1e-5)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    n = config.games_per_iteration
    max_steps = (config.max_turns + 1) // 2  # the most acts one side sends in a game
    iterations = max(1, config.total_games // n)
    history: list[dict[str, float]] = []
    start_time = time.perf_counter()
    env_steps = learner_steps = 0

    for iteration in range(start_iteration + 1, iterations + 1):
        iteration_start = time.perf_counter()
        iteration_learner_steps = learner_steps
        # ---- roll out: n complete games, learner seat, first mover and partner drawn per game -------
        counts, values = sample_context_arrays(rng, n)
        learner_seat = rng.integers(0, 2, size=n)
        partner_of = (rng.integers(0, len(partners), size=n) if partner_sampling is None
                      else rng.choice(len(partners), size=n, p=partner_sampling.probabilities))
        first_player = rng.integers(0, 2, size=n)
        rollout = _LearnerRollout(learner, n, max_steps)
        model.eval()
        games = play_batch([rollout, *partners], counts, values, first_player,
                           seating=seating_for(learner_seat, 1 + partner_of), max_turns=config.max_turns,
                           no_deal_reward=config.no_deal_reward, on_step=rollout.record)
        env_steps += int(games.turns.sum())
        learner_steps += int(rollout.steps.sum())
        step_of, valid, value_buf = rollout.steps, rollout.valid, rollout.values

        # ---- returns and advantages over each game's learner steps --------------------------------
        metrics = games.metrics
        if partner_sampling is not None:
            partner_sampling.observe(partner_of, metrics["scores"][np.arange(n), learner_seat])
        final_reward = shaped_reward(metrics, learner_seat, config) * config.reward_scale
        last = step_of - 1  # index of the learner's last step (-1: the learner never moved)
        rewards = np.zeros((max_steps, n), dtype=np.float32)
        has_steps = last >= 0
        rewards[last[has_steps], np.flatnonzero(has_steps)] = final_reward[has_steps]
        advantages = np.zeros((max_steps, n), dtype=np.float32)
        next_value = np.zeros(n, dtype=np.float32)
        next_adv = np.zeros(n, dtype=np.float32)
        for k in reversed(range(max_steps)):
            alive_next = (k + 1 < step_of).astype(np.float32)  # a later learner step exists in this game
            delta = rewards[k] + config.gamma * next_value * alive_next - value_buf[k]
            adv = delta + config.gamma * config.gae_lambda * alive_next * next_adv
            advantages[k] = np.where(valid[k], adv, 0.0)
            next_value, next_adv = value_buf[k], advantages[k]
        returns = advantages + value_buf

        # ---- PPO update ----------------------------------------------------------------------------
        b_obs = torch.as_tensor(rollout.observations[valid], device=device)
        b_mask = torch.as_tensor(rollout.masks[valid], device=device)
        b_act = torch.as_tensor(rollout.actions[valid], device=device)
        b_logp = torch.as_tensor(rollout.log_probs[valid], device=device)
        b_adv = torch.as_tensor(advantages[valid], device=device)
        b_ret = torch.as_tensor(returns[valid], device=device)
        if opponent_model:
            b_partner_act = torch.as_tensor(rollout.partner_actions[valid], device=device)
            b_partner_mask = torch.as_tensor(rollout.partner_masks[valid], device=device)
            opponent_losses: list[float] = []
            opponent_hits = opponent_targets = 0
        batch = len(b_act)
        minibatch = max(1, batch // config.num_minibatches)
        model.train()
        approx_kl = torch.zeros(())
        for _epoch in range(config.update_epochs):
            order = torch.randperm(batch, device=device)
            for start in range(0, batch, minibatch):
                mb = order[start:start + minibatch]
                with training_autocast(config.precision, str(device)):
                    if opponent_model:
                        logits, value, opponent_logits = model.forward_with_opponent(b_obs[mb], b_act[mb])
                        opponent_logits = opponent_logits.float()
                    else:
                        logits, value = model(b_obs[mb])
                dist = LogSoftmaxCategorical(mask_logits(logits.float(), b_mask[mb]))
                logp = dist.log_prob(b_act[mb])
                log_ratio = logp - b_logp[mb]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                adv = b_adv[mb]
                adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
                pg_loss = torch.max(-adv * ratio,
                                    -adv * ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef)).mean()
                v_loss = 0.5 * ((value.float() - b_ret[mb]) ** 2).mean()
                entropy = dist.entropy().mean()
                loss = pg_loss + config.vf_coef * v_loss - config.ent_coef * entropy
                if config.sl_coef > 0:
                    idx = rng.integers(0, len(sl_data), size=config.sl_batch_size)
                    sl_loss = behaviour_cloning_loss(
                        learner, torch.as_tensor(sl_data.observations[idx], device=device),
                        torch.as_tensor(sl_data.masks[idx], device=device),
                        torch.as_tensor(sl_data.actions[idx], device=device),
                        torch.as_tensor(sl_data.weights[idx], device=device))
                    loss = loss + config.sl_coef * sl_loss
                if opponent_model:
                    opponent_loss, hits, targets = opponent_model_loss(
                        opponent_logits, b_partner_act[mb], b_partner_mask[mb], config.opponent_model_target)
                    if targets:
                        loss = loss + config.opponent_model_coef * opponent_loss
                        opponent_losses.append(float(opponent_loss.detach()))
                        opponent_hits += hits
                        opponent_targets += targets
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
            if config.target_kl is not None and float(approx_kl) > config.target_kl:
                break
        model.eval()

        row = {
            "iteration": iteration,
            "games": iteration * n,
            "reward": float(final_reward.mean() / config.reward_scale),
            **mean_measures(game_measures(games, seat=learner_seat)),
            "approx_kl": float(approx_kl),
            "entropy": float(entropy.detach()),
            "learner_steps": learner_steps,
            "env_steps": env_steps,
            "learner_steps_this_iteration": learner_steps - iteration_learner_steps,
            "iteration_seconds": time.perf_counter() - iteration_start,
            "env_steps_per_s": env_steps / (time.perf_counter() - start_time),
            "learner_steps_per_s": learner_steps / (time.perf_counter() - start_time),
        }
        if opponent_model:
            row["opponent_model_loss"] = float(np.mean(opponent_losses)) if opponent_losses else float("nan")
            row["opponent_model_accuracy"] = opponent_hits / max(opponent_targets, 1)
        if partner_sampling is not None:
            row["partner_probability_max"] = float(partner_sampling.probabilities.max())
        history.append(row)
        if log_every and iteration % log_every == 0:
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
        if on_iteration is not None and on_iteration(row, optimizer):
            break
    learner.metadata.update({"ppo": {**asdict(config), "partner": partner_name}})
    return PPOResult(learner, history)


def config_from_dict(values: dict[str, Any]) -> PPOConfig:
    """A PPOConfig from a mapping, rejecting unknown keys with the allowed ones listed."""
    allowed = set(PPOConfig.__dataclass_fields__)
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"unknown PPO option(s) {unknown}; allowed: {sorted(allowed)}")
    return PPOConfig(**values)
