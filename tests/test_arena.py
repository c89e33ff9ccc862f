"""The arena: player specs, shared contexts with seats swapped, resuming, ratings, the CLI, chat players."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from parley.agents.arena import (
    ArenaError,
    ArenaSettings,
    parse_player,
    parse_players,
    rate,
    read_results,
    run_arena,
    write_report,
)
from parley.cli import app

pytest.importorskip("choix")


@pytest.fixture(scope="module")
def saved_policy(tmp_path_factory):
    from parley.agents.nn.torch_policy import TorchPolicy
    from parley.envs.negotiation import observation_size

    path = tmp_path_factory.mktemp("policy") / "mlp-run"
    TorchPolicy("mlp", observation_size(), deterministic=True, seed=0, device="cpu").save(path)
    return path


def test_player_specs_are_read_with_names_and_bad_ones_say_what_is_allowed(saved_policy, tmp_path):
    assert parse_player("boulware").kind == "scripted"
    policy = parse_player(f"policy:{saved_policy}")
    assert (policy.kind, policy.name) == ("policy", "mlp-run")
    chat = parse_player("gpt=chat:http://127.0.0.1:9/v1#gpt-x")
    assert (chat.kind, chat.target, chat.model, chat.name) == ("chat", "http://127.0.0.1:9/v1", "gpt-x", "gpt")
    assert [p.name for p in parse_players("boulware,boulware")] == ["boulware", "boulware#2"]
    with pytest.raises(ArenaError, match="unknown player kind 'robot'.*kinds are scripted"):
        parse_player("robot:x")
    with pytest.raises(ArenaError, match="unknown scripted partner 'boulwar'.*boulware"):
        parse_player("boulwar")
    with pytest.raises(ArenaError, match="no folder at"):
        parse_player(f"policy:{tmp_path / 'missing'}")
    with pytest.raises(ArenaError, match="not a language model folder"):
        parse_player(f"lm:{saved_policy}")
    with pytest.raises(ArenaError, match="chat:URL#MODEL"):
        parse_player("chat:http://127.0.0.1:9/v1")
    with pytest.raises(ArenaError, match="http:// or https://"):
        parse_player("chat:127.0.0.1:9#m")
    with pytest.raises(ArenaError, match="at least two players"):
        parse_players("boulware")


def test_every_pair_plays_each_context_twice_with_the_seats_swapped(saved_policy, tmp_path):
    players = ["boulware", "conceder", f"policy:{saved_policy}"]
    rows = run_arena(players, tmp_path, ArenaSettings(games=10, seed=3))
    assert len(rows) == 3 * 10
    assert Counter(r["pair"] for r in rows) == {"boulware vs conceder": 10, "boulware vs mlp-run": 10,
                                                "conceder vs mlp-run": 10}
    contexts = {r["context"]: (r["counts"], r["values0"], r["values1"], r["first_player"]) for r in rows}
    assert len(contexts) == 5  # one shared pool: every pair met the same five contexts
    for pair in {r["pair"] for r in rows}:
        games = sorted((r for r in rows if r["pair"] == pair), key=lambda r: r["game"])
        for first, second in zip(games[:5], games[5:]):
            assert first["context"] == second["context"]
            assert (first["player0"], first["player1"]) == (second["player1"], second["player0"])
        for r in games:
            assert contexts[r["context"]] == (r["counts"], r["values0"], r["values1"], r["first_player"])
            assert (r["deal"] != "") == bool(r["agreement"]) and r["context_id"] >= 0


def test_scores_match_the_deal_and_the_seat_values(tmp_path):
    rows = run_arena(["boulware", "conceder"], tmp_path, ArenaSettings(games=40))
    assert any(r["agreement"] for r in rows)
    for r in rows:
        if not r["agreement"]:
            assert r["score0"] == r["score1"] == 0
            continue
        counts = np.array(r["counts"].split(), dtype=int)
        deal = np.array(r["deal"].split(), dtype=int)
        assert r["score0"] == pytest.approx(deal @ np.array(r["values0"].split(), dtype=int))
        assert r["score1"] == pytest.approx((counts - deal) @ np.array(r["values1"].split(), dtype=int))


def test_a_rerun_plays_only_missing_games_and_other_settings_are_refused(tmp_path):
    settings = ArenaSettings(games=6, seed=1)
    first = run_arena(["boulware", "random"], tmp_path, settings)
    with (tmp_path / "results.csv").open() as handle:
        lines = handle.readlines()
    (tmp_path / "results.csv").write_text("".join(lines[:-2]))  # an interrupted run: two games lost
    calls = []
    rows = run_arena(["boulware", "random", "hardliner"], tmp_path, settings,
                     progress=lambda done, total, label: calls.append((done, total, label)))
    assert len(rows) == 3 * 6 and len(read_results(tmp_path / "results.csv")) == 18
    assert [c[2] for c in calls] == ["boulware vs random", "boulware vs hardliner", "random vs hardliner"]
    again = {(r["pair"], r["game"]): (r["score0"], r["score1"]) for r in rows}
    assert all(again[(r["pair"], r["game"])] == (r["score0"], r["score1"]) for r in first)
    with pytest.raises(ArenaError, match="other settings.*games"):
        run_arena(["boulware", "random"], tmp_path, ArenaSettings(games=8, seed=1))


def _row(a, b, s0, s1):
    return {"player0": a, "player1": b, "score0": s0, "score1": s1, "agreement": 1, "pareto_optimal": 1,
            "turns": 3, "bad_input": ""}


def test_ratings_order_players_by_wins_with_intervals():
    rows = ([_row("strong", "mid", 7, 3)] * 30 + [_row("mid", "strong", 6, 4)] * 10 + [_row("mid", "weak", 6, 4)] * 30
            + [_row("weak", "mid", 5, 5)] * 10 + [_row("strong", "weak", 8, 2)] * 20)
    ratings = rate(rows, bootstrap=50)
    assert [r.player for r in ratings] == ["strong", "mid", "weak"]
    assert all(r.low <= r.rating <= r.high for r in ratings)
    assert ratings[0].low > ratings[2].high
    assert np.mean([r.rating for r in ratings]) == pytest.approx(1000)
    mid = next(r for r in ratings if r.player == "mid")
    assert mid.wins == 10 + 30 + 5 and mid.games == 80
    refused = [dict(_row("a", "b", 0, 0), bad_input="0")] * 10 + [dict(_row("b", "a", 0, 0), bad_input="1")] * 10
    assert [r.player for r in rate(refused, bootstrap=0)] == ["b", "a"]


def test_the_report_and_the_cli(tmp_path, saved_policy):
    runner = CliRunner()
    out = tmp_path / "arena"
    result = runner.invoke(app, ["arena", "--players", f"boulware,conceder,ppo=policy:{saved_policy}", "--games", "8",
                                 "--out", str(out), "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    board = (out / "leaderboard.md").read_text()
    for name in ("boulware", "conceder", "ppo"):
        assert f"| {name} |" in board
    assert (out / "leaderboard.png").stat().st_size > 0
    with (out / "results.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 3 * 8
    assert json.loads((out / "arena.json").read_text())["games"] == 8
    for args, hint in ((["--players", "boulware,nobody"], "--players"), (["--players", "boulware", ], "--players"),
                       (["--players", "a,b", "--protocol", "smoke"], "--protocol"),
                       (["--players", "boulware,conceder", "--games", "7"], "--games")):
        result = runner.invoke(app, ["arena", *args, "--out", str(tmp_path / "bad")])
        assert result.exit_code == 2 and hint in result.output, result.output


def test_text_protocol_plays_through_the_text_game(tmp_path):
    rows = run_arena(["boulware", "conceder"], tmp_path, ArenaSettings(protocol="text", games=4, max_messages=8))
    assert len(rows) == 4 and all(r["protocol"] == "text" and r["turns"] >= 1 for r in rows)
    ratings = write_report(rows, tmp_path, bootstrap=10, plot=False)
    assert {r.player for r in ratings} == {"boulware", "conceder"}


def test_a_dialogue_model_is_refused_in_the_coarse_game(tmp_path):
    from parley.agents.lm.model import CONFIG_FILE, WEIGHTS_FILE

    model = tmp_path / "lm"
    model.mkdir()
    for file in (CONFIG_FILE, WEIGHTS_FILE):  # the spec check looks only for the files
        (model / file).write_text("")
    with pytest.raises(ArenaError, match="only the text game"):
        run_arena(["boulware", f"lm:{model}"], tmp_path / "out", ArenaSettings(games=2))
    assert not (tmp_path / "out" / "results.csv").exists()


def test_chat_players_join_the_arena_over_http(tmp_path):
    from test_chat_agent import ScriptedServer, _json_player

    server = ScriptedServer([_json_player])
    try:
        rows = run_arena(["boulware", f"model=chat:{server.url}#m"], tmp_path, ArenaSettings(games=6))
    finally:
        server.close()
    assert len(rows) == 6 and {r["player0"] for r in rows} == {"boulware", "model"}
    log = (tmp_path / "logs" / "model.jsonl").read_text().splitlines()
    assert len(server.requests) > 0 and sum('"event": "request"' in line for line in log) == len(server.requests)


def test_people_meet_an_arena_player_in_the_study_and_join_the_ratings(tmp_path):
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("fastapi")
    from _human_eval_support import study_config
    from test_chat_agent import ScriptedServer, _json_player

    from parley.human_eval.config import AgentSpec, StudyConfigError
    from parley.human_eval.db import make_engine
    from parley.human_eval.service import StudyService, finished_games_for_arena

    with pytest.raises(StudyConfigError, match="unknown scripted partner"):
        AgentSpec.from_dict({"name": "x", "player": "nobody"})
    with pytest.raises(StudyConfigError, match="exactly one of"):
        AgentSpec.from_dict({"name": "x", "player": "boulware", "partner": "boulware"})
    server = ScriptedServer([_json_player])
    try:
        spec = AgentSpec.from_dict({"name": "model", "player": f"chat:{server.url}#m"})
        db = tmp_path / "study.db"
        service = StudyService(study_config(agents=(spec,)), make_engine(f"sqlite:///{db}"))
        for pid in ("p1", "p2"):
            participant = service.enter(service.config.study, pid)
            service.record_step(participant, "consent")
            service.record_step(participant, "instructions")
            game = service.start_game(participant)
            service.agent_turn(game)  # the model opens when it moves first
            service.act(participant, game, "propose", [0, 0, 0])  # the person offers everything
            service.agent_turn(game)
            assert service.view(participant, game)["status"] == "finished"
    finally:
        server.close()
    assert len(server.requests) >= 2
    rows = finished_games_for_arena(str(db))
    assert [(r["player0"], r["player1"], r["agreement"], r["score0"]) for r in rows] == [("human", "model", 1, 0.0)] * 2
    assert all(r["score1"] == 10.0 and r["context_id"] >= 0 for r in rows)

    out = tmp_path / "arena"
    runner = CliRunner()
    result = runner.invoke(app, ["arena", "--players", "boulware,conceder", "--games", "4", "--out", str(out),
                                 "--bootstrap", "10", "--no-plot", "--study-db", f"sqlite:///{db}"])
    assert result.exit_code == 0, result.output
    board = (out / "leaderboard.md").read_text()
    assert "| human |" in board and "| model |" in board and "| boulware |" in board
    assert len(read_results(out / "results.csv")) == 4  # study games join the ratings, not results.csv


@pytest.mark.slow
def test_a_ray_arena_plays_the_same_games_as_a_local_one(tmp_path):
    pytest.importorskip("ray")
    players = ["boulware", "conceder", "random"]
    local = run_arena(players, tmp_path / "local", ArenaSettings(games=10))
    remote = run_arena(players, tmp_path / "ray", ArenaSettings(games=10), address="local")

    def key(rows):
        return sorted((r["pair"], r["game"], r["player0"], r["score0"], r["score1"], r["deal"]) for r in rows)

    assert key(local) == key(remote) and len(remote) == 30


def test_a_dialogue_model_plays_the_text_arena(tiny_language_model, tmp_path):
    rows = run_arena(["boulware", f"talker=lm:{tiny_language_model}"], tmp_path,
                     ArenaSettings(protocol="text", games=4, max_messages=6))
    assert len(rows) == 4 and {r["player0"] for r in rows} == {"boulware", "talker"}
    assert all(r["turns"] <= 6 and r["bad_input"] == "" for r in rows)
