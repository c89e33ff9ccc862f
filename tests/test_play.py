"""The batched play primitive: games equal the rules stepped one game at a time, seating, hooks, errors."""

from __future__ import annotations

import numpy as np
import pytest

from parley.agents.partners.scripted import make_partner
from parley.envs.negotiation import (
    AGREE_ACTION,
    WALK_AWAY_ACTION,
    Context,
    IllegalActionError,
    NegotiationState,
    ObservationLayout,
    sample_context_arrays,
)
from parley.envs.play import GameBatch, PlayStep, play_batch, seating_for
from parley.envs.policy import BatchPolicy


class WalkAway(BatchPolicy):
    name = "walker"

    def act_batch(self, observations, action_masks):
        return np.full(len(observations), WALK_AWAY_ACTION)


class AgreeAlways(BatchPolicy):
    name = "cheater"

    def act_batch(self, observations, action_masks):
        return np.full(len(observations), AGREE_ACTION)  # illegal while nothing is on the table


class TooFew(BatchPolicy):
    name = "short"

    def act_batch(self, observations, action_masks):
        return np.zeros(len(observations) - 1, dtype=np.int64)


def play_by_hand(agents, seats, counts, values, first_player, max_turns):
    """One game on the scalar rules: ``agents[seats[s]]`` plays seat ``s``."""
    state = NegotiationState(Context(tuple(counts), tuple(map(tuple, values))), first_player=int(first_player),
                             max_turns=max_turns)
    while not state.is_terminal():
        player = state.current_player
        state.apply_action(agents[seats[player]].act(state.observation(player), state.legal_action_mask()))
    return state


@pytest.mark.parametrize("pair", [("boulware", "pareto"), ("tit_for_tat", "conceder"), ("linear", "fair_split")])
def test_games_equal_the_rules_stepped_one_game_at_a_time_in_both_seats(pair):
    rng = np.random.default_rng(11)
    n, max_turns = 60, 8
    counts, values = sample_context_arrays(rng, n)
    first = rng.integers(2, size=n)
    agents = [make_partner(name) for name in pair]
    seating = seating_for(rng.integers(2, size=n))  # agent 0 in seat 0 for some games, seat 1 for others
    games = play_batch(agents, counts, values, first, seating=seating, max_turns=max_turns)
    assert isinstance(games, GameBatch) and len(games) == n
    assert set(np.unique(seating[:, 0])) == {0, 1}
    for g in range(n):
        state = play_by_hand(agents, seating[g], counts[g], values[g], first[g], max_turns)
        assert games.turns[g] == state.turn
        assert games.acts(g) == [(int(speaker), int(action)) for speaker, action in state.history]
        assert np.all(games.history_actions[g, state.turn:] == -1)
        assert games.walked_away_by[g] == (-1 if state.walked_away_by is None else state.walked_away_by)
        assert bool(games.agreed[g]) == (state.agreed_split is not None)
        if state.agreed_split is not None:
            assert tuple(games.agreed_split[g]) == tuple(state.agreed_split)
        metrics = state.metrics()
        assert tuple(games.scores[g]) == pytest.approx(tuple(metrics["scores"]))
        assert bool(games.metrics["pareto_optimal"][g]) == bool(metrics["pareto_optimal"])
        assert games.metrics["nash_product"][g] == pytest.approx(metrics["nash_product"])


def test_each_agent_sees_only_its_own_seat_of_its_own_games():
    rng = np.random.default_rng(3)
    n = 120
    counts, values = sample_context_arrays(rng, n)
    agents = [make_partner("conceder"), make_partner("hardliner"), make_partner("fair_split")]
    seating = seating_for(rng.integers(2, size=n), 1 + rng.integers(2, size=n))
    layout = ObservationLayout(10)
    steps: list[PlayStep] = []

    def check(step: PlayStep) -> None:
        game = step.game
        seat = game.current_player[step.rows]
        assert np.all(seating[step.rows, seat] == step.agent)  # only games where this agent is to move
        assert np.array_equal(step.observations[:, layout.values], values[step.rows, seat])  # its own values
        assert np.all(~game.done[step.rows])
        assert np.array_equal(step.masks, game.legal_masks(step.rows))
        assert np.array_equal(step.actions, agents[step.agent].act_batch(step.observations, step.masks))
        steps.append(step)

    games = play_batch(agents, counts, values, rng.integers(2, size=n), seating=seating, on_step=check)
    assert sum(len(s.rows) for s in steps) == games.turns.sum()  # every act went through on_step once
    assert {s.agent for s in steps} == {0, 1, 2}
    assert np.array_equal(games.seat_of(0), np.where(seating[:, 0] == 0, 0, 1))
    assert np.all((games.seat_of(1) == -1) == (np.all(seating != 1, axis=1)))


def test_default_seating_and_a_single_first_mover():
    rng = np.random.default_rng(0)
    counts, values = sample_context_arrays(rng, 10)
    games = play_batch((WalkAway(), make_partner("conceder")), counts, values, 0, max_turns=4)
    assert np.all(games.turns == 1) and not games.agreed.any()
    assert np.all(games.walked_away_by == 0) and np.all(games.history_speakers[:, 0] == 0)
    assert np.array_equal(games.seating, np.tile([0, 1], (10, 1)))
    assert np.all(games.scores == 0.0)
    penalised = play_batch((make_partner("conceder"), WalkAway()), counts, values, 0, no_deal_reward=-1.0)
    assert np.all(penalised.turns == 2) and np.all(penalised.scores == -1.0)


def test_an_illegal_act_is_reported_with_the_agent_and_the_game():
    rng = np.random.default_rng(0)
    counts, values = sample_context_arrays(rng, 5)
    with pytest.raises(IllegalActionError,
                       match=r"game 0: agent 'cheater' cannot play agree \(action 250\) at turn 0; legal: propose"):
        play_batch((AgreeAlways(), make_partner("boulware")), counts, values, 0)
    with pytest.raises(IllegalActionError, match=r"agent 'cheater' cannot play agree \(action 250\)"):  # from seat 1
        play_batch((make_partner("boulware"), AgreeAlways()), counts, values, 1)
    # agreeing to a standing proposal is legal: the cheater's opening offer is accepted
    games = play_batch((AgreeAlways(), make_partner("boulware")), counts, values, 1)
    assert games.agreed.all() and np.all(games.turns == 2)


def test_bad_inputs_are_refused_with_what_is_allowed():
    rng = np.random.default_rng(0)
    counts, values = sample_context_arrays(rng, 4)
    pair = (make_partner("boulware"), make_partner("pareto"))
    with pytest.raises(ValueError, match="exactly two agents"):
        play_batch([pair[0]], counts, values, 0)
    with pytest.raises(TypeError, match="no act_batch"):
        play_batch((pair[0], object()), counts, values, 0)
    with pytest.raises(ValueError, match=r"values must have shape \(4, 2, 3\)"):
        play_batch(pair, counts, values[:, 0], 0)
    with pytest.raises(ValueError, match="first_player must hold seats 0 or 1"):
        play_batch(pair, counts, values, 2)
    with pytest.raises(ValueError, match=r"seating must have shape \(4, 2\)"):
        play_batch(pair, counts, values, 0, seating=np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="within 0..1"):
        play_batch(pair, counts, values, 0, seating=np.full((4, 2), 2))
    with pytest.raises(ValueError, match="returned 3 acts for 4 observations"):
        play_batch((TooFew(), pair[1]), counts, values, 0)
    with pytest.raises(ValueError, match="agent_seat must hold seats 0 or 1"):
        seating_for(np.array([0, 3]))
