"""Play negotiations to the end on the batched rules: the one loop every batched game in parley runs.

:func:`play_batch` plays one game per context at once on :class:`~parley.envs.negotiation.BatchedNegotiation`.
Agents are :class:`~parley.envs.policy.Policy` objects acting through ``act_batch``; ``seating`` says
which agent sits in which seat of each game, so the same call plays a fixed pair (tournaments,
evaluation, the synthetic corpus), a learner whose seat is drawn per game (query selection), or a
learner against a pool of partners drawn per game (PPO)::

    games = play_batch((agent, partner), counts, values, first_player)       # agent in seat 0
    games.scores[:, 0], games.agreed, games.history_actions

Each step, every live game's current player acts; the games an agent sits in are passed to its
``act_batch`` together (agents in index order, rows in game order), so a seeded agent's random stream
does not depend on the other agents. An illegal act raises :class:`~parley.envs.negotiation.IllegalActionError`
naming the agent, the act and the game.

``on_step`` sees every batch of acts before it is applied: the agent's index, the game rows, their
observations, masks and the acts, and the game itself (read it, do not change it). Learners use it to
record what they need per decision -- PPO its observations, masks and log-probabilities (together with
a sampling policy that keeps its last log-probabilities), query selection the states where the partner
answers the learner -- so the loop itself is written once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from parley.envs.negotiation import (
    DEFAULT_MAX_TURNS,
    BatchedNegotiation,
    IllegalActionError,
    illegal_act_message,
)
from parley.envs.policy import Policy

__all__ = ["GameBatch", "PlayStep", "play_batch", "seating_for"]


@dataclass(frozen=True)
class GameBatch:
    """Finished games: contexts, seating, outcomes (per seat) and every act sent.

    ``metrics`` are the rules' :func:`~parley.envs.negotiation.outcome_metrics_batch` of the outcomes
    plus ``turns``: ``scores`` (N, 2) per seat, ``joint``, ``agreement``, ``pareto_optimal``,
    ``pareto_distance``, ``nash_product``, ``max_nash_product``.
    """

    counts: np.ndarray  # (N, 3)
    values: np.ndarray  # (N, 2, 3) seat 0's and seat 1's values
    first_player: np.ndarray  # (N,) the seat that moved first
    seating: np.ndarray  # (N, 2) index of the agent in seat 0 and in seat 1
    agreed: np.ndarray  # (N,) bool
    agreed_split: np.ndarray  # (N, 3) what seat 0 keeps (zeros without a deal)
    walked_away_by: np.ndarray  # (N,) the seat that walked away, -1 if none
    turns: np.ndarray  # (N,) acts sent
    history_actions: np.ndarray  # (N, max_turns) action indices, -1 after the last act
    history_speakers: np.ndarray  # (N, max_turns) the seat that sent each act, -1 after the last act
    metrics: dict[str, np.ndarray]
    max_turns: int
    no_deal_reward: float

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def scores(self) -> np.ndarray:
        """(N, 2) points per seat (``no_deal_reward`` without a deal)."""
        return self.metrics["scores"]

    def seat_of(self, agent: int) -> np.ndarray:
        """(N,) the seat ``agent`` held in each game (-1 where it did not play)."""
        return np.where(self.seating[:, 0] == agent, 0, np.where(self.seating[:, 1] == agent, 1, -1))

    def acts(self, game: int) -> list[tuple[int, int]]:
        """Game ``game``'s acts in order as ``(seat, action index)``."""
        return [(int(self.history_speakers[game, t]), int(self.history_actions[game, t]))
                for t in range(int(self.turns[game]))]


@dataclass(frozen=True)
class PlayStep:
    """One agent's acts in one step, as :func:`play_batch` hands them to ``on_step`` before applying them."""

    agent: int  # index into the agents
    rows: np.ndarray  # (K,) game indices, ascending
    observations: np.ndarray  # (K, D) the acting seat's observations
    masks: np.ndarray  # (K, 252) their legal acts
    actions: np.ndarray  # (K,) the acts the agent chose
    game: BatchedNegotiation  # the games before these acts are applied


def seating_for(agent_seat: np.ndarray, partner: np.ndarray | int = 1, agent: int = 0) -> np.ndarray:
    """(N, 2) seating with ``agent`` in seat ``agent_seat[i]`` and ``partner[i]`` in the other seat."""
    agent_seat = np.asarray(agent_seat, dtype=np.int64).reshape(-1)
    if np.any((agent_seat != 0) & (agent_seat != 1)):
        raise ValueError("agent_seat must hold seats 0 or 1")
    partner = np.broadcast_to(np.asarray(partner, dtype=np.int64), agent_seat.shape)
    seating = np.empty((agent_seat.size, 2), dtype=np.int64)
    seating[np.arange(agent_seat.size), agent_seat] = agent
    seating[np.arange(agent_seat.size), 1 - agent_seat] = partner
    return seating


def _agent_name(agent: object) -> str:
    return str(getattr(agent, "name", type(agent).__name__))


def play_batch(
    agents: Sequence[Policy],
    counts: np.ndarray,
    values: np.ndarray,
    first_player: np.ndarray | int,
    *,
    seating: np.ndarray | None = None,
    max_turns: int = DEFAULT_MAX_TURNS,
    no_deal_reward: float = 0.0,
    on_step: Callable[[PlayStep], None] | None = None,
) -> GameBatch:
    """Play one game per context until every game ends; see the module docstring.

    ``counts`` (N, 3) and ``values`` (N, 2, 3) are the contexts (``values[:, s]`` belongs to seat
    ``s``); ``first_player`` (N,) or one seat for all is the seat that moves first. ``seating`` (N, 2)
    indexes ``agents`` for seat 0 and seat 1 of each game; by default ``agents[0]`` sits in seat 0 and
    ``agents[1]`` in seat 1.
    """
    agents = list(agents)
    if not agents:
        raise ValueError("play_batch needs at least one agent")
    for index, agent in enumerate(agents):
        if not callable(getattr(agent, "act_batch", None)):
            raise TypeError(f"agent {index} ({type(agent).__name__}) has no act_batch; agents implement "
                            "parley.envs.policy.Policy")
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 3)
    n = counts.shape[0]
    if n == 0:
        raise ValueError("play_batch needs at least one context")
    values = np.asarray(values, dtype=np.int64)
    if values.shape != (n, 2, 3):
        raise ValueError(f"values must have shape ({n}, 2, 3) for {n} contexts, got {values.shape}")
    first_player = np.broadcast_to(np.asarray(first_player, dtype=np.int64), (n,)).copy()
    if np.any((first_player != 0) & (first_player != 1)):
        raise ValueError("first_player must hold seats 0 or 1")
    if seating is None:
        if len(agents) != 2:
            raise ValueError(f"without a seating, play_batch needs exactly two agents, got {len(agents)}")
        seating = np.tile(np.array([0, 1], dtype=np.int64), (n, 1))
    seating = np.asarray(seating, dtype=np.int64)
    if seating.shape != (n, 2):
        raise ValueError(f"seating must have shape ({n}, 2), got {seating.shape}")
    if seating.min() < 0 or seating.max() >= len(agents):
        raise ValueError(f"seating indexes the agents: every entry must be within 0..{len(agents) - 1}")

    game = BatchedNegotiation(n, max_turns=max_turns, no_deal_reward=no_deal_reward)
    game.reset_games(np.arange(n), counts, values, first_player)
    all_rows = np.arange(n)
    while not game.done.all():
        live = np.flatnonzero(~game.done)
        mover = game.current_player[live]
        acting = seating[live, mover]
        observations = game.observations(mover, live)
        masks = game.legal_masks(live)
        actions = np.zeros(n, dtype=np.int64)
        for index in np.unique(acting):
            picked = np.flatnonzero(acting == index)
            rows = live[picked]
            chosen = np.asarray(agents[index].act_batch(observations[picked], masks[picked]),
                                dtype=np.int64).reshape(-1)
            if chosen.shape != rows.shape:
                raise ValueError(f"agent {_agent_name(agents[index])!r} returned {chosen.size} acts for "
                                 f"{rows.size} observations")
            if on_step is not None:
                on_step(PlayStep(int(index), rows, observations[picked], masks[picked], chosen, game))
            actions[rows] = chosen
        illegal = game.apply_actions(actions)
        if illegal.any():
            row = int(all_rows[illegal][0])
            who = _agent_name(agents[seating[row, game.current_player[row]]])
            raise IllegalActionError(illegal_act_message(f"game {row}: agent {who!r}", int(actions[row]),
                                                         int(game.turn[row]), game.legal_masks()[row],
                                                         tuple(int(c) for c in game.counts[row])))
    return GameBatch(
        counts=game.counts.copy(), values=game.values.copy(), first_player=first_player, seating=seating,
        agreed=game.agreed.copy(), agreed_split=game.agreed_split.copy(),
        walked_away_by=game.walked_away_by.copy(), turns=game.turn.copy(),
        history_actions=game.history_actions.copy(), history_speakers=game.history_speakers.copy(),
        metrics=game.metrics(), max_turns=max_turns, no_deal_reward=float(no_deal_reward),
    )
