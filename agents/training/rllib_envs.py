"""Negotiation environments as RLlib sees them.

:class:`NegotiationMultiAgentEnv` is our own thin adapter from the PettingZoo AEC env
(:mod:`parley.envs.negotiation_v0`) to RLlib's :class:`MultiAgentEnv`. RLlib's ``PettingZooEnv``
wrapper falls short in two ways we depend on: its ``reset()`` returns infos not keyed by agent, and its
``render()`` passes an argument PettingZoo no longer takes. The adapter also never reports an agent
that has not observed anything yet (an agent whose partner walked away on the first move simply does
not appear in the episode), which RLlib's episode bookkeeping requires.

Turn order: only the agent to move gets an observation each step. ``reward_scale`` in the config
multiplies the rewards (the infos keep the points). When the game ends, every agent that
has acted gets its final observation, its reward and ``terminated=True``.

``partner_pool_env_creator`` builds the single-agent Gymnasium env (``parley/Negotiation-v0``, the
partner inside) -- or its batched vector version when RLlib asks for ``num_envs`` -- with the partner
drawn per episode from a pool of scripted partners. It is registered with Ray as
:data:`PARTNER_POOL_ENV`.

:class:`NegotiationVectorMultiAgentEnv` is the multi-agent env of ``num_envs`` games at once on the
batched rules (:class:`~parley.envs.negotiation.BatchedNegotiation`): every game reports exactly what
:class:`NegotiationMultiAgentEnv` would (the test suite replays the same contexts through both), with
Gymnasium's next-step autoreset as RLlib's ``SyncVectorMultiAgentEnv`` does it. RLlib 2.60 builds
multi-agent vector envs only as a loop over single envs, so :class:`BatchedMultiAgentEnvRunner` (the
env runner of the self-play and independent-learner setups) builds this env instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from ray.rllib.env.multi_agent_env import MultiAgentEnv
from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.env.vector.vector_multi_agent_env import VectorMultiAgentEnv

from parley.envs._adapter_common import AGENTS, check_common_args, observation_space, resolve_contexts
from parley.envs.negotiation import (
    DEFAULT_MAX_TURNS,
    NUM_ACTIONS,
    BatchedNegotiation,
    IllegalActionError,
    context_arrays,
    context_ids,
    contexts_to_arrays,
    illegal_act_message,
    outcome_metrics_batch,
    sample_context_ids,
)

MULTI_AGENT_ENV = "parley_negotiation_multi_agent"
PARTNER_POOL_ENV = "parley_negotiation_partner_pool"


class NegotiationMultiAgentEnv(MultiAgentEnv):
    """The AEC negotiation env behind RLlib's multi-agent interface.

    Args:
        config: keyword arguments for :func:`parley.envs.negotiation_v0.env` (e.g. ``max_turns``).
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        from parley.envs import negotiation_v0

        config = dict(config or {})
        self.reward_scale = float(config.pop("reward_scale", 1.0))
        self.render_mode = config.get("render_mode")
        self.env = negotiation_v0.env(**config)
        self.env.reset()
        self.possible_agents = list(self.env.possible_agents)
        self.agents = list(self.possible_agents)
        self.observation_spaces = {a: self.env.observation_space(a) for a in self.possible_agents}
        self.action_spaces = {a: self.env.action_space(a) for a in self.possible_agents}
        self._observed: set[str] = set()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.env.reset(seed=seed, options=options)
        self.agents = list(self.env.agents)
        agent = self.env.agent_selection
        self._observed = {agent}
        return {agent: self.env.observe(agent)}, {agent: dict(self.env.infos.get(agent, {}))}

    def step(self, action_dict: dict[str, Any]):
        agent = self.env.agent_selection
        if agent not in action_dict:
            raise ValueError(f"it is {agent}'s turn, but the actions were for {sorted(action_dict)}")
        self.env.step(int(action_dict[agent]))
        over = all(self.env.terminations.get(a, True) or self.env.truncations.get(a, True)
                   for a in self.possible_agents) or not self.env.agents
        if not over:
            nxt = self.env.agent_selection
            self._observed.add(nxt)
            rewards = {a: self.reward_scale * float(self.env.rewards[a]) for a in self._observed
                       if self.env.rewards.get(a)}
            return ({nxt: self.env.observe(nxt)}, rewards, {"__all__": False}, {"__all__": False},
                    {nxt: dict(self.env.infos.get(nxt, {}))})
        obs, rewards, terminated, truncated, infos = {}, {}, {}, {}, {}
        for a in sorted(self._observed):
            obs[a] = self.env.observe(a)
            rewards[a] = self.reward_scale * float(self.env._cumulative_rewards.get(a, 0.0))
            terminated[a] = bool(self.env.terminations.get(a, True))
            truncated[a] = bool(self.env.truncations.get(a, False)) and not terminated[a]
            infos[a] = dict(self.env.infos.get(a, {}))
        terminated["__all__"] = all(terminated[a] for a in self._observed)
        truncated["__all__"] = not terminated["__all__"]
        self.agents = []
        return obs, rewards, terminated, truncated, infos

    def render(self):
        return self.env.render()

    def close(self) -> None:
        self.env.close()


class _SeatSpaces(MultiAgentEnv):
    """The spaces of one game; stands in for RLlib's per-game sub-envs, which only supply spaces."""

    def __init__(self, max_turns: int) -> None:
        super().__init__()
        self.possible_agents = list(AGENTS)
        self.agents = list(AGENTS)
        self.observation_spaces = {a: observation_space(max_turns) for a in AGENTS}
        self.action_spaces = {a: gym.spaces.Discrete(NUM_ACTIONS) for a in AGENTS}


class NegotiationVectorMultiAgentEnv(VectorMultiAgentEnv):
    """``num_envs`` two-player negotiations on the batched rules, behind RLlib's vector multi-agent API.

    Each step takes one action dict per game (the agent to move's act) and returns, per game, the dicts
    :class:`NegotiationMultiAgentEnv` returns; a game that ended in the last step starts over instead
    (its actions are ignored) and reports its first observation with zero rewards.

    Args:
        num_envs: games played side by side.
        config: ``max_turns``, ``contexts`` (None: sampled; a path or a list of ``Context``),
            ``first_player`` (None: drawn per game), ``no_deal_reward`` and ``reward_scale``, as for
            :class:`NegotiationMultiAgentEnv`.
    """

    metadata: dict[str, Any] = {"autoreset_mode": "next_step"}
    CONFIG_KEYS = ("max_turns", "contexts", "first_player", "no_deal_reward", "reward_scale")

    def __init__(self, num_envs: int, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        config = dict(config or {})
        unknown = sorted(set(config) - set(self.CONFIG_KEYS))
        if unknown:
            raise ValueError(f"unknown env settings {unknown}; known: {', '.join(self.CONFIG_KEYS)}")
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.max_turns = int(config.get("max_turns", DEFAULT_MAX_TURNS))
        self.first_player = config.get("first_player")
        check_common_args(self.max_turns, self.first_player, "raise", None)
        self.reward_scale = float(config.get("reward_scale", 1.0))
        self.no_deal_reward = float(config.get("no_deal_reward", 0.0))
        contexts = resolve_contexts(config.get("contexts"))
        self.context_ids = None if contexts is None else context_ids(*contexts_to_arrays(contexts))
        self.num_envs = int(num_envs)
        self.game = BatchedNegotiation(self.num_envs, max_turns=self.max_turns, no_deal_reward=self.no_deal_reward)
        self.observed = np.zeros((self.num_envs, 2), dtype=bool)  # which seats have seen their game
        self.needs_reset = np.zeros(self.num_envs, dtype=bool)
        seats = _SeatSpaces(self.max_turns)
        self.envs = [seats] * self.num_envs  # RLlib reads each game's spaces from here
        self.single_observation_spaces = dict(seats.observation_spaces)
        self.single_action_spaces = dict(seats.action_spaces)
        self.single_observation_space = gym.spaces.Dict(self.single_observation_spaces)
        self.single_action_space = gym.spaces.Dict(self.single_action_spaces)
        self._rows = np.arange(self.num_envs)
        self._np_random, self._np_random_seed = seeding.np_random(None)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
        if options:
            raise ValueError(f"the vector env takes no reset options, got {sorted(options)}")
        self._start_games(self._rows)
        self.needs_reset[:] = False
        observations, masks = self._movers_view()
        movers = self.game.current_player
        obs = [{AGENTS[p]: {"observation": o, "action_mask": m}} for p, o, m in zip(movers, observations, masks)]
        return obs, [{AGENTS[p]: {}} for p in movers]

    def step(self, actions: list[dict[str, Any]]):
        game = self.game
        n = self.num_envs
        if len(actions) != n:
            raise ValueError(f"expected one action dict per game ({n}), got {len(actions)}")
        restart = self.needs_reset
        movers = game.current_player
        chosen = np.zeros(n, dtype=np.int64)
        for i in np.flatnonzero(~restart):
            agent = AGENTS[movers[i]]
            try:
                chosen[i] = actions[i][agent]
            except KeyError:
                raise ValueError(f"game {i}: it is {agent}'s turn, but the actions were for "
                                 f"{sorted(actions[i])}") from None
        acting = ~restart
        legal = game.legal_taken(chosen)
        illegal = acting & ~legal
        if illegal.any():
            raise IllegalActionError(self._illegal_message(int(np.flatnonzero(illegal)[0]), int(chosen[illegal][0])))
        game.apply_actions(chosen, active=acting, legal=legal)

        restarted = np.flatnonzero(restart)
        if restarted.size:
            self._start_games(restarted)
        ended = acting & game.done
        going = acting & ~game.done
        self.observed[np.flatnonzero(going), game.current_player[going]] = True
        self.needs_reset = ended

        observations, masks = self._movers_view()
        movers = game.current_player
        obs: list[dict] = [None] * n
        rewards: list[dict] = [None] * n
        terminated: list[dict] = [None] * n
        truncated: list[dict] = [None] * n
        infos: list[dict] = [None] * n
        for i in np.flatnonzero(going):
            agent = AGENTS[movers[i]]
            obs[i] = {agent: {"observation": observations[i], "action_mask": masks[i]}}
            rewards[i], terminated[i], truncated[i] = {}, {"__all__": False}, {"__all__": False}
            infos[i] = {agent: {}}
        for i in restarted:
            agent = AGENTS[movers[i]]
            obs[i] = {agent: {"observation": observations[i], "action_mask": masks[i]}}
            rewards[i] = dict.fromkeys(AGENTS, 0.0)
            terminated[i] = {**dict.fromkeys(AGENTS, False), "__all__": False}
            truncated[i] = {**dict.fromkeys(AGENTS, False), "__all__": False}
            infos[i] = {agent: {}}
        ended_rows = np.flatnonzero(ended)
        if ended_rows.size:
            self._fill_endings(ended_rows, obs, rewards, terminated, truncated, infos)
        return obs, rewards, terminated, truncated, infos

    # ---------------------------------------------------------------------------------------------

    def _start_games(self, rows: np.ndarray) -> None:
        rng = self._np_random
        n = len(rows)
        if self.context_ids is None:
            ids = sample_context_ids(rng, n)
        elif len(self.context_ids) == 1:
            ids = np.repeat(self.context_ids, n)
        else:
            ids = self.context_ids[rng.integers(len(self.context_ids), size=n)]
        counts, values = context_arrays(ids)
        firsts = rng.integers(2, size=n) if self.first_player is None else np.full(n, self.first_player)
        self.game.reset_games(rows, counts, values, firsts)
        self.observed[rows] = False
        self.observed[rows, firsts] = True

    def _movers_view(self) -> tuple[np.ndarray, np.ndarray]:
        """Every game's observation and legal mask as seen by its player to move."""
        game = self.game
        return game.observations(game.current_player), game.legal_masks()

    def _fill_endings(self, rows: np.ndarray, obs, rewards, terminated, truncated, infos) -> None:
        game = self.game
        seat_obs = [game.observations(np.full(len(rows), seat), rows) for seat in (0, 1)]
        no_mask = np.zeros(NUM_ACTIONS, dtype=np.int8)  # a finished game has no legal act
        metrics = outcome_metrics_batch(game.counts[rows], game.values[rows], game.agreed_split[rows],
                                        game.agreed[rows], self.no_deal_reward)
        scores = metrics["scores"]
        for k, i in enumerate(rows):
            agreed = bool(game.agreed[i])
            walked = int(game.walked_away_by[i])
            info = {
                "scores": (float(scores[k, 0]), float(scores[k, 1])),
                "joint": float(metrics["joint"][k]),
                "pareto_optimal": bool(metrics["pareto_optimal"][k]),
                "pareto_distance": float(metrics["pareto_distance"][k]),
                "nash_product": float(metrics["nash_product"][k]),
                "max_nash_product": float(metrics["max_nash_product"][k]),
                "agreement": agreed,
                "turns": int(game.turn[i]),
                "deal": tuple(int(x) for x in game.agreed_split[i]) if agreed else None,
                "walked_away_by": None if walked < 0 else AGENTS[walked],
                "illegal_action": None,
            }
            seats = [s for s in (0, 1) if self.observed[i, s]]
            obs[i] = {AGENTS[s]: {"observation": seat_obs[s][k], "action_mask": no_mask} for s in seats}
            rewards[i] = {AGENTS[s]: self.reward_scale * float(scores[k, s]) for s in seats}
            terminated[i] = {**{AGENTS[s]: True for s in seats}, "__all__": True}
            truncated[i] = {**{AGENTS[s]: False for s in seats}, "__all__": False}
            infos[i] = {AGENTS[s]: dict(info) for s in seats}

    def _illegal_message(self, i: int, action: int) -> str:
        game = self.game
        return illegal_act_message(f"game {i}: {AGENTS[game.current_player[i]]}", action, int(game.turn[i]),
                                   game.legal_masks()[i], tuple(int(c) for c in game.counts[i]))


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block with torch on one intra-op thread, then restore the previous count.

    Sampling runs the module on at most a few hundred rows at a time; splitting such small ops over
    threads costs more than it saves, and on a busy machine the threads' hand-offs make each op
    hundreds of times slower (a tanh on 32 x 64 floats: about 9 us on one thread, 3.5 ms on two with
    other processes running). Remote env runners already get one thread from Ray; this covers the env
    runner inside the driver.
    """
    import torch

    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


class PartnerPoolEnvRunner(SingleAgentEnvRunner):
    """RLlib's single-agent env runner, sampling with one torch thread (see :func:`one_torch_thread`)."""

    def sample(self, *args: Any, **kwargs: Any):
        with one_torch_thread():
            return super().sample(*args, **kwargs)


class BatchedPartnerPoolEnvRunner(PartnerPoolEnvRunner):
    """The partner-pool env runner sampling whole vector steps as arrays, without per-game episode objects.

    RLlib's single-agent env runner keeps an episode object per game, runs its connector pipelines and
    callbacks for every game at every step and builds a new episode for every game that starts: with
    negotiation episodes 1-5 learner steps long, that bookkeeping costs several times the rules' own step.
    This runner steps the vector env with the module's acts for all games at once, records observations,
    acts, log-probabilities and the module's masked logits in (step, game) arrays, and returns them as one
    :class:`~parley.agents.training.rllib_connector.EpisodeChunks` per ``sample()`` call: a game's steps
    since the call began, cut where each episode ends and, still running, at the end of the call (the next
    call continues it), exactly the chunks RLlib's runner would return. Only
    :class:`~parley.agents.training.rllib_connector.BatchedPPOLearnerConnector` reads them, so the setup
    uses both together.

    It logs the env-runner metrics ``parley train`` reads (env steps and episodes sampled; ``score``,
    ``partner_score``, ``agreement`` and ``pareto`` over the last 1,000 games, with :func:`log_outcomes`);
    RLlib's per-episode
    callbacks, connector pipelines and episode-return metrics are skipped. Sampling by episodes
    (``num_episodes``) or with random actions falls back to RLlib's runner.
    """

    _observation: dict[str, np.ndarray] | None = None

    def _sample(self, *, num_timesteps: int | None = None, num_episodes: int | None = None, explore: bool,
                random_actions: bool = False, force_reset: bool = False):
        if num_timesteps is None or random_actions:
            self._observation = None  # RLlib's runner resets the games its own way
            return super()._sample(num_timesteps=num_timesteps, num_episodes=num_episodes, explore=explore,
                                   random_actions=random_actions, force_reset=force_reset)
        import torch
        from ray.rllib.core import DEFAULT_MODULE_ID
        from ray.rllib.core.columns import Columns

        from parley.agents.training.rllib_connector import EpisodeChunks

        env = self.env.unwrapped
        if force_reset or self._observation is None or self._needs_initial_reset:
            self._observation, _ = env.reset(seed=self._seed if self._needs_initial_reset else None)
            self._needs_initial_reset = False
        module = self.module
        dist_class = module.get_exploration_action_dist_cls()
        observations, masks = [self._observation["observation"]], [self._observation["action_mask"]]
        acts, log_probs, logits_seen, rewards, ended, terminated, acting = [], [], [], [], [], [], []
        outcomes: dict[str, list[np.ndarray]] = {"score": [], "partner_score": [], "agreement": [], "pareto": []}
        steps = 0
        while steps < num_timesteps:
            live = ~env.needs_reset  # games that ended last step restart now and ignore their act
            batch = {Columns.OBS: {k: torch.from_numpy(v) for k, v in self._observation.items()}}
            with torch.no_grad():
                out = module.forward_exploration(batch) if explore else module.forward_inference(batch)
                logits = out[Columns.ACTION_DIST_INPUTS]
                dist = dist_class.from_logits(logits)
                act = dist.sample() if explore else logits.argmax(-1)
                log_prob = dist.logp(act)
            self._observation, reward, term, trunc, infos = env.step(act.numpy())
            observations.append(self._observation["observation"])
            masks.append(self._observation["action_mask"])
            acts.append(act.numpy())
            log_probs.append(log_prob.numpy())
            logits_seen.append(logits.numpy())
            rewards.append(reward)
            terminated.append(term)
            ended.append(term | trunc)
            acting.append(live)
            steps += int(live.sum())
            if infos:
                done = infos["_score"]
                agreed = infos["agreement"][done].astype(bool)
                outcomes["score"].append(infos["score"][done])
                outcomes["partner_score"].append(infos["partner_score"][done])
                outcomes["agreement"].append(agreed.astype(np.float64))
                outcomes["pareto"].append(infos["pareto_optimal"][done][agreed].astype(np.float64))
        # (step, game) arrays to chunks laid end to end: game by game, each game's steps in order
        acted = np.stack(acting)
        step_of, game_of = np.nonzero(acted.T)[::-1]
        time_major = step_of * self.num_envs + game_of
        last_of_game = np.append(game_of[1:] != game_of[:-1], True)
        is_end = np.concatenate(ended)[time_major] | last_of_game
        chunk_terminated = np.concatenate(terminated)[time_major][is_end]
        open_ends = time_major[is_end][~chunk_terminated] + self.num_envs  # the state after the chunk's last step
        all_observations = {"observation": np.concatenate(observations), "action_mask": np.concatenate(masks)}
        chunks = EpisodeChunks(
            DEFAULT_MODULE_ID,
            observations={k: v[time_major] for k, v in all_observations.items()},
            columns={Columns.ACTIONS: np.concatenate(acts)[time_major],
                     Columns.ACTION_LOGP: np.concatenate(log_probs)[time_major],
                     Columns.ACTION_DIST_INPUTS: np.concatenate(logits_seen)[time_major]},
            rewards=np.concatenate(rewards)[time_major].astype(np.float64),
            ends=np.flatnonzero(is_end) + 1, terminated=chunk_terminated,
            bootstrap_observations={k: v[open_ends] for k, v in all_observations.items()})
        log_outcomes(self.metrics, {k: np.concatenate(v) if v else np.zeros(0) for k, v in outcomes.items()})
        episodes_done = int(sum(len(v) for v in outcomes["score"]))
        self._increase_sampled_metrics(steps, episodes_done)
        return [chunks]


#: Games whose outcomes an env-runner metric averages over (as ``NegotiationMetricsCallback`` logs them).
METRICS_WINDOW = 1000


def log_outcomes(metrics, outcomes: dict[str, np.ndarray]) -> None:
    """Log the learner's ``score``, ``partner_score``, ``agreement`` and ``pareto`` (agreed games only) of
    the games that ended, as running means over the last :data:`METRICS_WINDOW` games; values older than
    the window would be dropped anyway, so only the last ones are logged."""
    for key, values in outcomes.items():
        for value in values[-METRICS_WINDOW:]:
            metrics.log_value(key, float(value), reduce="mean", window=METRICS_WINDOW)


class BatchedMultiAgentEnvRunner(MultiAgentEnvRunner):
    """RLlib's multi-agent env runner on :class:`NegotiationVectorMultiAgentEnv` (the batched rules),
    sampling with one torch thread (see :func:`one_torch_thread`)."""

    def sample(self, *args: Any, **kwargs: Any):
        with one_torch_thread():
            return super().sample(*args, **kwargs)

    def make_env(self) -> None:
        if self.env is not None:
            self.env.close()
        self.env = NegotiationVectorMultiAgentEnv(int(self.config.num_envs_per_env_runner), dict(self.config.env_config))
        self.num_envs = self.env.num_envs
        self._needs_initial_reset = True


def multi_agent_env_creator(config: dict[str, Any]) -> NegotiationMultiAgentEnv:
    return NegotiationMultiAgentEnv(dict(config))


def partner_pool_env_creator(config: dict[str, Any]) -> gym.Env | gym.vector.VectorEnv:
    """The learner-vs-partner-population env; the batched vector env of ``num_envs`` games when RLlib asks.

    ``config`` holds the population (``partners``, ``family_members``, ``partner_seed``; see
    :mod:`parley.agents.training.population`) and the env's own keyword arguments.
    """
    from parley.agents.training.population import build_population, make_population_env

    config = dict(config)
    population = dict(partners=config.pop("partners"), family_members=int(config.pop("family_members", 1)),
                      seed=int(config.pop("partner_seed", 0)))
    num_envs = config.pop("num_envs", None)
    if num_envs is None:
        config.pop("reward_scale", None)  # RLlib only probes the single env for its spaces
        return make_population_env(**population, **config)
    from parley.agents.partners.pool import PartnerPoolVectorEnv

    return PartnerPoolVectorEnv(int(num_envs), build_population(**population), **config)


def register_rllib_envs() -> None:
    """Register the env creators with Ray's registry (cheap; safe to call repeatedly)."""
    from ray.tune.registry import register_env

    register_env(MULTI_AGENT_ENV, multi_agent_env_creator)
    register_env(PARTNER_POOL_ENV, partner_pool_env_creator)


class _GameId:
    """Stands in for an RLlib episode where a policy mapping function only reads the episode's ``id_``."""

    __slots__ = ("id_",)

    def __init__(self, id_: str) -> None:
        self.id_ = id_


class WholeGamesMultiAgentEnvRunner(BatchedMultiAgentEnvRunner):
    """The self-play / independent-learner env runner sampling whole games as arrays.

    Like :class:`BatchedPartnerPoolEnvRunner` for two-player games: every ``sample()`` call starts all
    ``num_envs_per_env_runner`` games afresh on the batched rules, maps each game's seats to modules with
    the config's policy mapping function (called with a stand-in episode that has only an ``id_``), runs
    each module once per step on the games where its seat is to move, and restarts games that end until
    ``num_timesteps`` acts were sampled; then the games still running are played to their end, without
    restarts. Every chunk is therefore a whole episode of one seat (terminated; its reward, the seat's
    final points times ``reward_scale``, on its last step) and needs no bootstrap value, and a call
    returns a few acts more than asked. Only the trained modules' (``policies_to_train``) acts are kept,
    as one :class:`~parley.agents.training.rllib_connector.EpisodeChunks` per module.

    Env steps count every act of either seat, as RLlib's multi-agent runner counts them. It logs the
    learner's outcomes like :class:`~parley.agents.training.rllib_setups.NegotiationMetricsCallback`
    (the learner being the seat played by ``learner`` or ``learner_0``); RLlib's per-episode callbacks
    and metrics are skipped. Sampling by episodes or with random actions falls back to RLlib's runner.
    """

    LEARNERS = ("learner", "learner_0")
    _games_started = 0

    def _sample(self, *, num_timesteps: int | None = None, num_episodes: int | None = None, explore: bool,
                random_actions: bool = False, force_reset: bool = False):
        if num_timesteps is None or random_actions:
            return super()._sample(num_timesteps=num_timesteps, num_episodes=num_episodes, explore=explore,
                                   random_actions=random_actions, force_reset=True)
        import torch
        from ray.rllib.core.columns import Columns

        env, n = self.env, self.env.num_envs
        game = env.game
        if self._needs_initial_reset:
            env.reset(seed=self._seed)
            self._needs_initial_reset = False
        trained = set(self.config.policies_to_train or self.module.keys()) \
            if not callable(self.config.policies_to_train) else set(self.module.keys())
        mapping = self.config.policy_mapping_fn
        seat_modules = np.empty((n, 2), dtype=object)
        episode_of = np.zeros(n, dtype=np.int64)  # a call-wide number per game played

        def start(rows: np.ndarray) -> None:
            env._start_games(rows)
            for i in rows:
                self._games_started += 1
                stand_in = _GameId(f"{self.worker_index}-{self._games_started}")
                seat_modules[i] = [mapping(agent, stand_in) for agent in AGENTS]
            episode_of[rows] = np.arange(len(rows)) + (episode_of.max() + 1 if starts else 0)
            starts.append(len(rows))

        starts: list[int] = []
        start(np.arange(n))
        playing = np.ones(n, dtype=bool)
        records: dict[str, list[tuple]] = {m: [] for m in trained}
        final_rewards: dict[int, tuple[float, float]] = {}
        outcomes: dict[str, list[np.ndarray]] = {"score": [], "partner_score": [], "agreement": [], "pareto": []}
        steps = 0
        module_counts: dict[str, int] = {}
        while playing.any():
            movers = game.current_player
            observations = game.observations(movers)
            masks = game.legal_masks()
            chosen = np.zeros(n, dtype=np.int64)
            mover_modules = seat_modules[np.arange(n), movers]
            for module_id in set(mover_modules[playing]):
                rows = np.flatnonzero(playing & (mover_modules == module_id))
                module_counts[module_id] = module_counts.get(module_id, 0) + len(rows)
                batch = {Columns.OBS: {"observation": torch.from_numpy(observations[rows]),
                                       "action_mask": torch.from_numpy(masks[rows])}}
                module = self.module[module_id]
                with torch.no_grad():
                    out = module.forward_exploration(batch) if explore else module.forward_inference(batch)
                    logits = out[Columns.ACTION_DIST_INPUTS]
                    dist = module.get_exploration_action_dist_cls().from_logits(logits)
                    act = dist.sample() if explore else logits.argmax(-1)
                chosen[rows] = act.numpy()
                if module_id in trained:
                    records[module_id].append((episode_of[rows] * 2 + movers[rows], observations[rows], masks[rows],
                                               act.numpy(), dist.logp(act).numpy(), logits.numpy()))
            legal = game.legal_taken(chosen)
            if (playing & ~legal).any():
                i = int(np.flatnonzero(playing & ~legal)[0])
                raise IllegalActionError(env._illegal_message(i, int(chosen[i])))
            game.apply_actions(chosen, active=playing, legal=legal)
            steps += int(playing.sum())
            ended = np.flatnonzero(playing & game.done)
            if ended.size:
                self._record_endings(ended, seat_modules, episode_of, final_rewards, outcomes)
                if steps < num_timesteps:
                    start(ended)
                else:
                    playing[ended] = False
        chunks = [self._chunks(module_id, rows, final_rewards) for module_id, rows in records.items() if rows]
        log_outcomes(self.metrics, {k: np.concatenate(v) if v else np.zeros(0) for k, v in outcomes.items()})
        self._log_counts(steps, int(sum(starts)), module_counts)
        return chunks

    def _record_endings(self, ended: np.ndarray, seat_modules: np.ndarray, episode_of: np.ndarray,
                        final_rewards: dict[int, tuple[float, float]], outcomes: dict[str, list[np.ndarray]]) -> None:
        env, game = self.env, self.env.game
        metrics = outcome_metrics_batch(game.counts[ended], game.values[ended], game.agreed_split[ended],
                                        game.agreed[ended], env.no_deal_reward)
        scores = metrics["scores"]
        for k, i in enumerate(ended):
            final_rewards[int(episode_of[i])] = (env.reward_scale * float(scores[k, 0]),
                                                 env.reward_scale * float(scores[k, 1]))
        learner_seat = np.array([next((s for s in (0, 1) if seat_modules[i, s] in self.LEARNERS), -1) for i in ended])
        known = learner_seat >= 0
        rows = np.arange(len(ended))[known]
        seat = learner_seat[known]
        agreed = game.agreed[ended][known].astype(bool)
        outcomes["score"].append(scores[rows, seat])
        outcomes["partner_score"].append(scores[rows, 1 - seat])
        outcomes["agreement"].append(agreed.astype(np.float64))
        outcomes["pareto"].append(np.asarray(metrics["pareto_optimal"])[known][agreed].astype(np.float64))

    @staticmethod
    def _chunks(module_id: str, records: list[tuple], final_rewards: dict[int, tuple[float, float]]):
        """One module's recorded acts (step by step) as whole-episode chunks, seat episode by seat episode."""
        from ray.rllib.core.columns import Columns

        from parley.agents.training.rllib_connector import EpisodeChunks

        keys, observations, masks, acts, log_probs, logits = (np.concatenate(column) for column in zip(*records))
        order = np.argsort(keys, kind="stable")  # each seat's acts stay in the order they were played
        keys = keys[order]
        is_last = np.append(keys[1:] != keys[:-1], True)
        rewards = np.zeros(len(keys))
        last_keys = keys[is_last]
        rewards[is_last] = [final_rewards[int(key) // 2][int(key) % 2] for key in last_keys]
        ends = np.flatnonzero(is_last) + 1
        empty = {"observation": observations[:0], "action_mask": masks[:0]}
        return EpisodeChunks(module_id, {"observation": observations[order], "action_mask": masks[order]},
                             {Columns.ACTIONS: acts[order], Columns.ACTION_LOGP: log_probs[order],
                              Columns.ACTION_DIST_INPUTS: logits[order]},
                             rewards, ends, np.ones(len(ends), dtype=bool), empty)

    def _log_counts(self, steps: int, episodes: int, module_counts: dict[str, int]) -> None:
        from ray.rllib.utils.metrics import (
            NUM_ENV_STEPS_SAMPLED,
            NUM_ENV_STEPS_SAMPLED_LIFETIME,
            NUM_EPISODES,
            NUM_EPISODES_LIFETIME,
            NUM_MODULE_STEPS_SAMPLED,
            NUM_MODULE_STEPS_SAMPLED_LIFETIME,
        )

        self.metrics.log_value(NUM_ENV_STEPS_SAMPLED, steps, reduce="sum")
        self.metrics.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, steps, reduce="lifetime_sum", with_throughput=True)
        self.metrics.log_value(NUM_EPISODES, episodes, reduce="sum")
        self.metrics.log_value(NUM_EPISODES_LIFETIME, episodes, reduce="lifetime_sum")
        for module_id, count in module_counts.items():
            self.metrics.log_value((NUM_MODULE_STEPS_SAMPLED, module_id), count, reduce="sum")
            self.metrics.log_value((NUM_MODULE_STEPS_SAMPLED_LIFETIME, module_id), count, reduce="lifetime_sum")
