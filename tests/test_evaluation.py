"""The one evaluation API: rows equal games played by hand, one seat convention, the same measures everywhere."""

from __future__ import annotations

import csv
import math
from dataclasses import fields

import numpy as np
import pytest

from parley.agents.evaluation import (
    ALL_PARTNERS_ROW,
    MEASURES,
    EvalRow,
    Measures,
    eval_table,
    evaluate_policy,
    game_measures,
    mean_measures,
    write_eval_csv,
)
from parley.agents.partners.scripted import make_partner
from parley.agents.partners.tournament import AgentResult, PairResult, run_tournament
from parley.envs.negotiation import Context, NegotiationState, sample_context_arrays
from parley.envs.play import play_batch


def scalar_game(agent, partner, counts, values, first_player):
    """The agent in seat 0, the partner in seat 1, on the scalar rules."""
    state = NegotiationState(Context(tuple(counts), tuple(map(tuple, values))), first_player=int(first_player))
    seats = (agent, partner)
    while not state.is_terminal():
        player = state.current_player
        state.apply_action(seats[player].act(state.observation(player), state.legal_action_mask()))
    return state.metrics()


def test_rows_equal_games_played_one_at_a_time_with_the_agent_in_seat_0():
    episodes, seed = 40, 5
    partners = ["pareto", "conceder"]
    rows = evaluate_policy(make_partner("boulware"), partners, episodes=episodes, seed=seed)
    assert [r.partner for r in rows] == [*partners, ALL_PARTNERS_ROW]
    # the documented convention: contexts, then first movers, drawn from the seed; the same for every partner
    rng = np.random.default_rng(seed)
    counts, values = sample_context_arrays(rng, episodes)
    first = rng.integers(2, size=episodes)
    pooled = []
    for row, name in zip(rows, partners):
        games = [scalar_game(make_partner("boulware"), make_partner(name), counts[g], values[g], first[g])
                 for g in range(episodes)]
        pooled += games
        assert row.games == episodes
        assert row.score == pytest.approx(np.mean([g["scores"][0] for g in games]))
        assert row.partner_score == pytest.approx(np.mean([g["scores"][1] for g in games]))
        assert row.joint == pytest.approx(np.mean([g["joint"] for g in games]))
        assert row.agreement == pytest.approx(np.mean([g["agreement"] for g in games]))
        assert row.nash_product == pytest.approx(np.mean([g["nash_product"] for g in games]))
        assert row.turns == pytest.approx(np.mean([g["turns"] for g in games]))
        deals = [g["pareto_optimal"] for g in games if g["agreement"]]
        assert row.pareto == pytest.approx(np.mean(deals))
    everything = rows[-1]
    assert everything.games == 2 * episodes
    assert everything.score == pytest.approx(np.mean([g["scores"][0] for g in pooled]))
    # pareto pools deals, not the partners' rates
    assert everything.pareto == pytest.approx(np.mean([g["pareto_optimal"] for g in pooled if g["agreement"]]))


def test_tournament_pairs_report_the_evaluation_measures():
    rows = evaluate_policy(make_partner("boulware"), ["pareto", "linear"], episodes=30, seed=4)
    result = run_tournament(["boulware", "pareto", "linear"], contexts=30, seed=4)
    for row in rows[:-1]:
        pair = result.pair("boulware", row.partner)
        for key in MEASURES:
            assert getattr(pair, key) == pytest.approx(getattr(row, key), nan_ok=True), key


def test_every_result_row_has_the_measures_after_its_identifying_fields():
    assert [f.name for f in fields(Measures)] == list(MEASURES)
    for row_class, identity in ((EvalRow, ["partner", "games"]), (PairResult, ["agent", "partner", "games"]),
                                (AgentResult, ["agent", "games"])):
        assert [f.name for f in fields(row_class)] == identity + list(MEASURES), row_class.__name__
    row = EvalRow("boulware", 10, *range(len(MEASURES)))
    assert (row.partner, row.games, row.score, row.turns) == ("boulware", 10, 0, len(MEASURES) - 1)


def test_partners_as_names_objects_or_a_mapping_and_evaluations_repeat():
    policy = make_partner("random", seed=1)
    named = evaluate_policy(policy, {"coin": make_partner("random", seed=2), "tough": make_partner("hardliner")},
                            episodes=25, seed=3)
    assert [r.partner for r in named] == ["coin", "tough", ALL_PARTNERS_ROW]
    # the policy and partner objects are reseeded: the same call gives the same rows
    again = evaluate_policy(policy, {"coin": make_partner("random", seed=9), "tough": make_partner("hardliner")},
                            episodes=25, seed=3)
    assert named == again
    listed = evaluate_policy(make_partner("linear"), ["boulware", make_partner("pareto")], episodes=10)
    assert [r.partner for r in listed] == ["boulware", "pareto", ALL_PARTNERS_ROW]
    suite = evaluate_policy(make_partner("linear"), "boulware,conceder", episodes=10)
    assert [r.partner for r in suite] == ["boulware", "conceder", ALL_PARTNERS_ROW]


def test_measures_from_either_seat_and_without_deals():
    rng = np.random.default_rng(2)
    counts, values = sample_context_arrays(rng, 30)
    games = play_batch((make_partner("conceder"), make_partner("linear")), counts, values, rng.integers(2, size=30))
    seat0, seat1 = game_measures(games, 0), game_measures(games, 1)
    assert set(seat0) == set(MEASURES)
    assert np.array_equal(seat0["score"], seat1["partner_score"])
    assert np.array_equal(seat0["partner_score"], seat1["score"])
    per_game = game_measures(games, np.arange(30) % 2)
    assert np.array_equal(per_game["score"][1::2], seat1["score"][1::2])
    assert np.all(np.isnan(seat0["pareto"]) == (seat0["agreement"] == 0))
    means = mean_measures(seat0, seat1)
    assert means["score"] == pytest.approx(games.scores.mean())
    walkers = play_batch((make_partner("hardliner"), make_partner("hardliner")), counts, values, 0)
    nothing = mean_measures(game_measures(walkers))
    assert nothing["agreement"] == 0 and math.isnan(nothing["pareto"])
    assert all(math.isnan(v) for v in mean_measures().values())
    with pytest.raises(ValueError, match="seat must be 0 or 1"):
        game_measures(games, 2)


def test_bad_arguments_are_refused():
    policy = make_partner("linear")
    with pytest.raises(ValueError, match="episodes must be at least 1"):
        evaluate_policy(policy, ["boulware"], episodes=0)
    with pytest.raises(ValueError, match="unknown partner 'nobody'"):
        evaluate_policy(policy, "boulware,nobody")
    with pytest.raises(ValueError, match="at least one partner"):
        evaluate_policy(policy, [])
    with pytest.raises(TypeError, match="Policy objects"):
        evaluate_policy(policy, [42])


def test_csv_and_table(tmp_path):
    from rich.console import Console

    rows = evaluate_policy(make_partner("linear"), ["boulware"], episodes=8)
    path = write_eval_csv(rows, tmp_path / "eval.csv", policy="linear")
    read = list(csv.DictReader(path.open()))
    assert list(read[0]) == ["policy", "partner", "games", *MEASURES]
    assert [r["partner"] for r in read] == ["boulware", ALL_PARTNERS_ROW]
    assert float(read[0]["score"]) == pytest.approx(rows[0].score)
    console = Console(record=True, width=200)
    console.print(eval_table(rows))
    text = console.export_text()
    assert "boulware" in text and f"{rows[0].score:.2f}" in text and "turns" in text
    assert [f.name for f in EvalRow.__dataclass_fields__.values()][2:] == list(MEASURES)
