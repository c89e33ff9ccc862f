"""Deal or No Deal bargaining as a native Gymnasium vector environment on the batched rules.

+--------------------+----------------------------------------------------------------+
| Create             | ``gymnasium.make_vec("parley/Negotiation-v0", num_envs=N,      |
|                    | vectorization_mode="vector_entry_point", partner="boulware")`` |
+--------------------+----------------------------------------------------------------+
| Actions            | MultiDiscrete([252] * N), layout of ``negotiation_v0``         |
+--------------------+----------------------------------------------------------------+
| Observations       | Dict: ``observation`` (N, 16 + 2 * max_turns) float32,         |
|                    | ``action_mask`` (N, 252) int8                                  |
+--------------------+----------------------------------------------------------------+
| Autoreset          | next step (Gymnasium 1.x ``AutoresetMode.NEXT_STEP``)          |
+--------------------+----------------------------------------------------------------+
| Action masking     | ``env.action_masks()`` -> bool (N, 252)                        |
+--------------------+----------------------------------------------------------------+

The same episodes as :class:`parley.envs.negotiation_gym.NegotiationGymEnv` -- a learner against a
partner policy, the learner's side and the first mover drawn per game unless fixed -- but ``N`` games
advance together in :class:`~parley.envs.negotiation.BatchedNegotiation` with numpy array operations and
the partner answers all games at once through ``act_batch``. No Python loop runs over the games.

Autoreset follows Gymnasium 1.x's next-step mode: the step that ends game ``i`` returns its final
observation, its reward and ``terminated[i] = True``; the next step ignores ``actions[i]``, starts a new
game there and returns its first observation with reward 0. Games the partner ends before the learner's
first act are replayed with a fresh context, as in the single env.

``info`` carries outcome metrics for the games that ended in this step, Gymnasium-style: each key
(``score``, ``partner_score``, ``agreement``, ``pareto_optimal``, ``joint``, ``nash_product``, ``turns``,
``learner_side``, ``illegal_action``) maps to an array of shape (N,) and ``info["_" + key]`` marks the
games it is set for.

Illegal learner acts raise :class:`~parley.envs.negotiation.IllegalActionError` naming the game index
before any game changes (``illegal_action="raise"``), or end those games with reward
``illegal_penalty`` (``"penalize"``).

Arguments: ``NegotiationVectorEnv(num_envs, partner, learner_side=None, max_turns=10, contexts=None,
first_player=None, no_deal_reward=0.0, illegal_action="raise", illegal_penalty=-1.0, render_mode=None)``
-- as for the single env: ``partner`` is a Policy, and ``gymnasium.make_vec`` (through
:func:`parley.entry_points.make_negotiation_vector_env`) also takes a scripted partner's name and
``partner_kwargs``. Contexts are sampled with
:func:`~parley.envs.negotiation.sample_context_arrays` (same distribution as ``sample_context``) or drawn
uniformly from the given list or file.

Version history
---------------
* v0: initial release.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from parley.envs._adapter_common import (
    MAX_REPLAYS,
    check_common_args,
    check_partner,
    context_header,
    observation_space,
    partner_name,
    resolve_contexts,
)
from parley.envs.negotiation import (
    DEFAULT_MAX_TURNS,
    NUM_ACTIONS,
    BatchedNegotiation,
    Context,
    IllegalActionError,
    NegotiationState,
    context_arrays,
    context_ids,
    contexts_to_arrays,
    decode_act,
    illegal_act_message,
    pareto_optimal_batch,
    sample_context_ids,
)
from parley.envs.policy import Policy

__all__ = ["NegotiationVectorEnv"]

INFO_KEYS = ("score", "partner_score", "agreement", "pareto_optimal", "joint", "nash_product", "turns",
             "learner_side", "illegal_action")


class NegotiationVectorEnv(VectorEnv):
    """``num_envs`` negotiations against a partner policy, batched (see the module docstring).

    :param num_envs: number of games run side by side
    :param partner: the partner's :class:`~parley.envs.policy.Policy` (it acts through ``act_batch``; for
        a scripted partner by name use ``gymnasium.make_vec`` or ``make_partner(name)``)
    :param learner_side: the learner's side (0 or 1), or None to draw it per game
    :param max_turns: acts before a game ends without a deal
    :param contexts: None (sampled), a context file path, or a list of :class:`Context`
    :param first_player: the side that opens (0 or 1), or None to draw it per game
    :param no_deal_reward: both sides' score without a deal
    :param illegal_action: ``"raise"`` or ``"penalize"``
    :param illegal_penalty: the learner's reward for an illegal act under ``"penalize"``
    :param render_mode: ``"ansi"`` (``render()`` returns one transcript per game) or None
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": ["ansi"]}

    def __init__(self, num_envs: int, partner: Policy, *, learner_side: int | None = None,
                 max_turns: int = DEFAULT_MAX_TURNS, contexts: None | str | Path | Sequence[Context] = None,
                 first_player: int | None = None, no_deal_reward: float = 0.0, illegal_action: str = "raise",
                 illegal_penalty: float = -1.0, render_mode: str | None = None) -> None:
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if render_mode == "human":
            raise ValueError("the vector env renders only to 'ansi' (one transcript per game) or None")
        check_common_args(max_turns, first_player, illegal_action, render_mode)
        if learner_side not in (None, 0, 1):
            raise ValueError(f"learner_side must be None (drawn per game), 0 or 1; got {learner_side!r}")
        self.num_envs = int(num_envs)
        self.partner = check_partner(partner)
        self.learner_side = learner_side
        self.max_turns = int(max_turns)
        self.first_player = first_player
        self.no_deal_reward = float(no_deal_reward)
        self.illegal_action = illegal_action
        self.illegal_penalty = float(illegal_penalty)
        self.render_mode = render_mode
        ctx_list = resolve_contexts(contexts)
        # Games remember their context's row in the table of valid contexts (for cheap Pareto lookups).
        self.context_ids = None if ctx_list is None else context_ids(*contexts_to_arrays(ctx_list))

        self.single_observation_space = observation_space(self.max_turns)
        self.single_action_space = spaces.Discrete(NUM_ACTIONS)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        self.game = BatchedNegotiation(self.num_envs, max_turns=self.max_turns, no_deal_reward=self.no_deal_reward)
        self.side = np.zeros(self.num_envs, dtype=np.int64)
        self.ctx_id = np.zeros(self.num_envs, dtype=np.int64)
        self.needs_reset = np.ones(self.num_envs, dtype=bool)
        self.penalized = np.zeros(self.num_envs, dtype=bool)
        self.masks = np.zeros((self.num_envs, NUM_ACTIONS), dtype=np.int8)
        self.acts_applied = 0  # acts by either side since construction; throughput benchmarks read it
        self._rows = np.arange(self.num_envs)
        self._np_random, self._np_random_seed = seeding.np_random(None)

    # ---------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
            if callable(getattr(self.partner, "seed", None)):
                self.partner.seed(int(self._np_random.integers(2**31)))
        if options:
            raise ValueError(f"the vector env takes no reset options, got {sorted(options)}")
        self.penalized[:] = False
        self._start_games(self._rows)
        self._partner_turns()
        self._replay_partner_endings(self._rows)
        self.needs_reset[:] = False
        return self._observations(), {}

    def step(self, actions):
        game = self.game
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        starting = self.needs_reset.copy()

        # The learner's acts, checked before any game changes so that "raise" leaves the batch intact.
        live = ~game.done
        legal = game.legal_taken(actions)
        illegal = live & ~legal
        if illegal.any():
            if self.illegal_action == "raise":
                raise IllegalActionError(self._illegal_message(int(np.flatnonzero(illegal)[0]), actions))
            self.penalized[illegal] = True
        game.apply_actions(actions, legal=legal)
        if illegal.any():
            game.end_games(np.flatnonzero(illegal))
        self.acts_applied += int(np.count_nonzero(live & legal))

        # Games that ended in the last step start over; then the partner answers every game where it is
        # its turn (replies and openings) in one batched call.
        restart = np.flatnonzero(starting)
        if restart.size:
            self.penalized[restart] = False
            self._start_games(restart)
        self._partner_turns()
        if restart.size:
            self._replay_partner_endings(restart)

        terminated = game.done & ~starting
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        infos: dict[str, Any] = {}
        ended = np.flatnonzero(terminated)
        if ended.size:
            scores = self.game.returns(ended)
            own = np.where(self.side[ended] == 0, scores[:, 0], scores[:, 1])
            rewards[ended] = np.where(self.penalized[ended], self.illegal_penalty, own)
            infos = self._final_infos(ended, scores, rewards[ended])
        self.needs_reset = terminated
        truncated = np.zeros(self.num_envs, dtype=bool)
        return self._observations(), rewards, terminated, truncated, infos

    def action_masks(self) -> np.ndarray:
        """Bool (N, 252): each game's legal learner actions (all False for a game that just ended)."""
        return self.masks.astype(bool)

    def render(self) -> tuple[str, ...] | None:
        if self.render_mode is None:
            return None
        return tuple(self._transcript(i) for i in range(self.num_envs))

    # ---------------------------------------------------------------------------------------------

    def _draw_contexts(self, n: int) -> np.ndarray:
        rng = self._np_random
        if self.context_ids is None:
            return sample_context_ids(rng, n)
        if len(self.context_ids) == 1:
            return np.repeat(self.context_ids, n)
        return self.context_ids[rng.integers(len(self.context_ids), size=n)]

    def _start_games(self, rows: np.ndarray) -> None:
        rng = self._np_random
        n = len(rows)
        ids = self._draw_contexts(n)
        self.ctx_id[rows] = ids
        counts, values = context_arrays(ids)
        sides = rng.integers(2, size=n) if self.learner_side is None else np.full(n, self.learner_side)
        firsts = rng.integers(2, size=n) if self.first_player is None else np.full(n, self.first_player)
        self.side[rows] = sides
        self.game.reset_games(rows, counts, values, firsts)

    def _partner_turns(self) -> None:
        game = self.game
        waiting = ~game.done & (game.current_player != self.side)
        rows = np.flatnonzero(waiting)
        if rows.size == 0:
            return
        chosen = self._partner_acts(rows)
        actions = np.zeros(self.num_envs, dtype=np.int64)
        actions[rows] = chosen
        illegal = game.apply_actions(actions, active=waiting)
        if illegal.any():
            bad = int(np.flatnonzero(illegal)[0])
            kind, split = decode_act(actions[bad]) if 0 <= actions[bad] < NUM_ACTIONS else (str(actions[bad]), None)
            raise RuntimeError(f"partner {partner_name(self.partner)!r} chose an illegal act in game {bad}: "
                               f"{kind}{'' if split is None else ' ' + str(split)} (action {actions[bad]})")
        self.acts_applied += int(rows.size)

    def _partner_acts(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows),) the partner's acts in the games at ``rows`` (ascending), where it is to move."""
        game = self.game
        obs = game.observations(1 - self.side[rows], rows)
        masks = game.legal_masks(rows)
        return np.asarray(self.partner.act_batch(obs, masks), dtype=np.int64).reshape(-1)

    def _replay_partner_endings(self, rows: np.ndarray) -> None:
        """Restart games (among ``rows``, all just started) that the partner ended with its opening act."""
        for _ in range(MAX_REPLAYS):
            ended = rows[self.game.done[rows]]
            if ended.size == 0:
                return
            self._start_games(ended)
            self._partner_turns()
        raise RuntimeError(f"the partner {partner_name(self.partner)!r} ended {MAX_REPLAYS} games in a row "
                           "before the learner could act")

    def _observations(self) -> dict[str, np.ndarray]:
        self.masks = self.game.legal_masks()
        return {"observation": self.game.observations(self.side), "action_mask": self.masks}

    def _final_infos(self, ended: np.ndarray, scores: np.ndarray, rewards: np.ndarray) -> dict[str, Any]:
        game = self.game
        side = self.side[ended]
        penalized = self.penalized[ended]
        agreed = game.agreed[ended]
        partner_scores = np.where(side == 0, scores[:, 1], scores[:, 0])
        partner_scores = np.where(penalized, self.no_deal_reward, partner_scores)
        d = self.no_deal_reward
        values = {
            "score": rewards,
            "partner_score": partner_scores,
            "agreement": agreed,
            "pareto_optimal": pareto_optimal_batch(np.take(game.counts, ended, axis=0),
                                                   np.take(game.values, ended, axis=0),
                                                   np.take(game.agreed_split, ended, axis=0), agreed,
                                                   ids=self.ctx_id[ended]),
            "joint": scores.sum(axis=1),
            "nash_product": (scores[:, 0] - d) * (scores[:, 1] - d),
            "turns": game.turn[ended],
            "learner_side": side,
            "illegal_action": penalized,
        }
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[ended] = True
        infos: dict[str, Any] = {}
        for key in INFO_KEYS:
            column = values[key]
            full = np.zeros(self.num_envs, dtype=np.asarray(column).dtype)
            full[ended] = column
            infos[key] = full
            infos["_" + key] = mask
        return infos

    def _illegal_message(self, i: int, actions: np.ndarray) -> str:
        game = self.game
        return illegal_act_message(f"game {i}: the learner", int(actions[i]), int(game.turn[i]),
                                   game.legal_masks()[i], tuple(int(c) for c in game.counts[i]))

    def _transcript(self, i: int) -> str:
        game = self.game
        ctx = Context(tuple(int(c) for c in game.counts[i]), tuple(tuple(int(x) for x in v) for v in game.values[i]))
        state = NegotiationState(ctx, max_turns=self.max_turns, first_player=int(game.first_player[i]),
                                 no_deal_reward=self.no_deal_reward)
        for action in game.history_actions[i]:
            if action < 0:
                break
            state.apply_action(int(action))
        names = ["", ""]
        names[int(self.side[i])] = "learner"
        names[1 - int(self.side[i])] = f"partner ({partner_name(self.partner)})"
        text = context_header(ctx, names) + "\n" + state.transcript(names)
        if self.penalized[i]:
            text += "\nNo deal: the learner made an illegal move."
        return text
