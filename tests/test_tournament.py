"""Tournaments: results agree with the rules played one game at a time, reproducibility, CSV and CLI."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from parley.agents.partners.scripted import make_partner
from parley.agents.partners.tournament import run_tournament
from parley.cli import app
from parley.envs.negotiation import (
    WALK_AWAY_ACTION,
    NegotiationState,
    sample_context,
)
from parley.envs.policy import BatchPolicy


class WalkAway(BatchPolicy):
    name = "walker"

    def act_batch(self, observations, action_masks):
        return np.full(len(observations), WALK_AWAY_ACTION)


class Illegal(BatchPolicy):
    name = "cheater"

    def act_batch(self, observations, action_masks):
        return np.full(len(observations), 250)  # agree, even with nothing on the table


def play_scalar(agent0, agent1, ctx, first_player, max_turns=10):
    state = NegotiationState(ctx, first_player=first_player, max_turns=max_turns)
    agents = (agent0, agent1)
    while not state.is_terminal():
        player = state.current_player
        state.apply_action(agents[player].act(state.observation(player), state.legal_action_mask()))
    return state.metrics()


@pytest.mark.parametrize("pair", [("boulware", "pareto"), ("tit_for_tat", "conceder"), ("fair_split", "hardliner")])
def test_pair_results_equal_games_played_one_at_a_time(pair):
    rng = np.random.default_rng(4)
    contexts = [sample_context(rng) for _ in range(40)]
    result = run_tournament(list(pair), contexts=contexts, first_player=1, max_turns=8)
    for a, b in [pair, pair[::-1]]:
        games = [play_scalar(make_partner(a), make_partner(b), ctx, 1, max_turns=8) for ctx in contexts]
        row = result.pair(a, b)
        assert row.games == len(contexts)
        assert row.score == pytest.approx(np.mean([g["scores"][0] for g in games]))
        assert row.partner_score == pytest.approx(np.mean([g["scores"][1] for g in games]))
        assert row.agreement == pytest.approx(np.mean([g["agreement"] for g in games]))
        assert row.nash_product == pytest.approx(np.mean([g["nash_product"] for g in games]))
        assert row.turns == pytest.approx(np.mean([g["turns"] for g in games]))
        deals = [g["pareto_optimal"] for g in games if g["agreement"]]
        assert (math.isnan(row.pareto) and not deals) or row.pareto == pytest.approx(np.mean(deals))


def test_random_vs_random_agreement_matches_independent_games():
    result = run_tournament(["random"], contexts=600, seed=3)
    rng = np.random.default_rng(99)
    agreed = []
    for _ in range(600):
        state = NegotiationState(sample_context(rng), first_player=int(rng.integers(2)))
        while not state.is_terminal():
            state.apply_action(rng.choice(np.flatnonzero(state.legal_action_mask())))
        agreed.append(state.agreed_split is not None)
    p = np.mean(agreed)
    assert 0 < p < 1
    assert abs(result.pair("random", "random").agreement - p) < 4 * math.sqrt(2 * p * (1 - p) / 600) + 1e-3


def test_agent_results_aggregate_their_pairs_and_runs_are_reproducible():
    names = ["random", "linear", "hardliner"]
    result = run_tournament(names, contexts=30, seed=7)
    assert len(result.pairs) == 9 and [a.agent for a in result.agents] == names
    for agent in result.agents:
        assert agent.games == 2 * 3 * 30  # every pair in both seats, self-play counted per seat
        scores = [p.score for p in result.pairs if p.agent == agent.agent]
        scores += [p.partner_score for p in result.pairs if p.partner == agent.agent]
        assert agent.score == pytest.approx(np.mean(scores))
        partner_scores = [p.partner_score for p in result.pairs if p.agent == agent.agent]
        partner_scores += [p.score for p in result.pairs if p.partner == agent.agent]
        assert agent.partner_score == pytest.approx(np.mean(partner_scores))
        agreements = [p.agreement for p in result.pairs if agent.agent in (p.agent, p.partner)]
        agreements += [p.agreement for p in result.pairs if p.agent == p.partner == agent.agent]
        assert agent.agreement == pytest.approx(np.mean(agreements))
    # Two hardliners never agree: each asks for every item it values and some item is valued by both.
    assert result.pair("hardliner", "hardliner").agreement == 0
    assert run_tournament(names, contexts=30, seed=7) == result
    assert run_tournament(names, contexts=30, seed=8).pairs != result.pairs


def test_policy_objects_join_and_illegal_acts_are_reported():
    result = run_tournament([WalkAway(), make_partner("conceder"), WalkAway()], contexts=20, seed=1, first_player=0)
    assert result.names == ["walker", "conceder", "walker#2"]
    assert result.pair("walker", "conceder").agreement == 0
    assert result.pair("walker", "conceder").turns == 1
    assert math.isnan(result.agent("walker").pareto)
    with pytest.raises(ValueError, match=r"agent 'cheater' cannot play agree \(action 250\)"):
        run_tournament([Illegal(), "boulware"], contexts=5, first_player=0)
    with pytest.raises(ValueError, match="unknown agent 'nobody'"):
        run_tournament(["nobody"], contexts=5)


def test_csv_holds_agent_and_pair_rows(tmp_path):
    result = run_tournament(["boulware", "pareto"], contexts=10, seed=0)
    path = result.write_csv(tmp_path / "out" / "results.csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 2 + 4
    assert {r["scope"] for r in rows} == {"agent", "pair"}
    pair = next(r for r in rows if r["agent"] == "boulware" and r["partner"] == "pareto")
    assert float(pair["score"]) == pytest.approx(result.pair("boulware", "pareto").score)
    assert rows[0]["seed"] == "0" and rows[0]["contexts"] == "10"


def test_cli_prints_tables_and_writes_csv(tmp_path):
    out = tmp_path / "results.csv"
    run = CliRunner().invoke(app, ["tournament", "--contexts", "15", "--seed", "2", "--partners",
                                   "boulware,conceder,random", "--max-turns", "6", "--out", str(out)])
    assert run.exit_code == 0, run.output
    for text in ("mean score", "agreement %", "Pareto %", "Pairwise", "boulware", "conceder", "random"):
        assert text in run.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3 + 9 and rows[0]["max_turns"] == "6"
    expected = run_tournament(["boulware", "conceder", "random"], contexts=15, seed=2, max_turns=6)
    score = next(float(r["score"]) for r in rows if r["scope"] == "agent" and r["agent"] == "conceder")
    assert score == pytest.approx(expected.agent("conceder").score)
    assert f"{expected.agent('conceder').score:.2f}" in run.output


def test_cli_rejects_an_unknown_partner():
    run = CliRunner().invoke(app, ["tournament", "--contexts", "5", "--partners", "boulware,bogus"])
    assert run.exit_code != 0
    assert "unknown partner 'bogus'" in run.output and "pareto" in run.output
