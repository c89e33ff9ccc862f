"""Study logic without HTTP: timeouts, balanced assignment, config, agents, terminal play and reports."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from _human_eval_support import LEAK_CONTEXT, FakeClock, Participant, study_config
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from parley.human_eval.config import AgentSpec, StudyConfig, StudyConfigError
from parley.human_eval.db import Event, Game, Survey, make_engine
from parley.human_eval.report import load_tables, mean_interval, summarise, wilson_interval
from parley.human_eval.service import Conflict, StudyService


def _service(tmp_path, config=None, **kwargs):
    return StudyService(config or study_config(), make_engine(f"sqlite:///{tmp_path / 's.db'}"), **kwargs)


def _ready(service, pid):
    participant = service.enter(service.config.study, pid)
    service.record_step(participant, "consent")
    service.record_step(participant, "instructions")
    return participant


def test_idle_timeout_ends_the_game_with_no_deal(tmp_path):
    clock = FakeClock()
    service = _service(tmp_path, study_config(idle_timeout_s=60, session_time_s=600), clock=clock)
    p = _ready(service, "idle")
    gid = service.start_game(p)
    view = service.advance(p, gid)
    assert view["your_turn"] and view["seconds_left"] == pytest.approx(60, abs=0.5)
    clock.now += 59
    assert service.advance(p, gid)["status"] == "active"
    clock.now += 2
    view = service.advance(p, gid)
    assert view["status"] == "finished" and view["outcome"]["result"] == "timeout"
    assert view["outcome"]["your_points"] == 0
    with pytest.raises(Conflict, match="over"):
        service.act(p, gid, "walk_away")
    with Session(service.engine) as s:
        kinds = [e.kind for e in s.scalars(select(Event).where(Event.game_id == gid).order_by(Event.seq))]
    assert kinds[-1] == "timeout"


def test_session_time_limit_and_sweep_end_abandoned_games(tmp_path):
    clock = FakeClock()
    service = _service(tmp_path, study_config(idle_timeout_s=1000, session_time_s=100), clock=clock)
    players = [_ready(service, f"p{i}") for i in range(3)]
    games = [service.start_game(p) for p in players]
    clock.now += 50
    assert service.expire_idle_games() == 0
    clock.now += 51
    assert service.expire_idle_games() == 3
    with Session(service.engine) as s:
        assert {g.outcome for g in s.scalars(select(Game).where(Game.id.in_(games)))} == {"timeout"}


def test_assignment_is_balanced_over_agents_contexts_and_move_order(tmp_path):
    config = study_config(contexts=tuple(StudyConfig().contexts[:3]), sessions_per_participant=2)
    service = _service(tmp_path, config)
    for i in range(12):
        service.start_game(_ready(service, f"p{i}"))
    with Session(service.engine) as s:
        games = list(s.scalars(select(Game)))
    assert Counter(g.agent for g in games) == {"boulware": 6, "conceder": 6}
    cells = Counter((g.agent, g.context_index, bool(g.human_first)) for g in games)
    assert len(cells) == 12 and set(cells.values()) == {1}  # every (agent, context, order) once


def test_second_session_meets_the_other_agent_and_limit_holds(tmp_path):
    service = _service(tmp_path, study_config(sessions_per_participant=2))
    p = _ready(service, "twice")
    first = service.start_game(p)
    with pytest.raises(Conflict, match="finish the current"):
        service.start_game(p)
    service.act(p, first, "walk_away")  # with no think time the agent has already answered if it went first
    with pytest.raises(Conflict, match="survey"):
        service.start_game(p)
    service.submit_survey(p, first, {"fair": 2, "human_like": 2, "negotiate_again": 2})
    second = service.start_game(p)
    with Session(service.engine) as s:
        agents = [s.get(Game, g).agent for g in (first, second)]
    assert sorted(agents) == ["boulware", "conceder"]
    service.act(p, second, "walk_away")
    service.submit_survey(p, second, {"fair": 2, "human_like": 2, "negotiate_again": 2})
    with pytest.raises(Conflict, match="session limit"):
        service.start_game(p)


def test_checkpoint_agents_load_lazily_through_load_policy(tmp_path, monkeypatch):
    from parley.agents.nn import torch_policy
    from parley.agents.partners.scripted import make_partner

    calls = []

    def fake_load_policy(path, **kwargs):
        calls.append(path)
        return make_partner("conceder")

    monkeypatch.setattr(torch_policy, "load_policy", fake_load_policy)
    config = study_config(agents=(AgentSpec.from_dict({"name": "trained", "checkpoint": "runs/ppo/final"}),))
    service = _service(tmp_path, config)
    service.warm_up()
    assert calls == []  # nothing loaded until someone is assigned to it
    p = _ready(service, "ckpt")
    gid = service.start_game(p)
    service.act(p, gid, "propose", [0, 0, 0])
    assert service.agent_turn(gid) and service.view(p, gid)["transcript"][-1]["speaker"] == "partner"
    service.start_game(_ready(service, "ckpt2"))
    assert calls == ["runs/ppo/final"]


def test_a_failing_agent_ends_the_game_and_is_logged(tmp_path):
    class Broken:
        name = "broken"

        def act(self, observation, action_mask):
            return 9999

    config = study_config(agents=(AgentSpec("broken", partner="random"),), contexts=(LEAK_CONTEXT,))
    service = _service(tmp_path, config, policies={"broken": Broken()})
    p = _ready(service, "x")
    gid = service.start_game(p)
    if service.view(p, gid)["status"] == "active":
        service.act(p, gid, "propose", [1, 1, 1])
        service.agent_turn(gid)
    view = service.view(p, gid)
    assert view["status"] == "finished" and view["outcome"]["result"] == "agent_error"
    with Session(service.engine) as s:
        err = s.scalar(select(Event).where(Event.game_id == gid, Event.kind == "agent_error"))
    assert "9999" in json.loads(err.data)["error"]


def test_observations_given_to_the_agent_are_its_own(tmp_path):
    seen = []

    class Recorder:
        name = "rec"

        def act(self, observation, action_mask):
            seen.append((observation.copy(), action_mask.copy()))
            return int(np.flatnonzero(action_mask)[-1])  # walk away

    config = study_config(agents=(AgentSpec("rec", partner="random"),), contexts=(LEAK_CONTEXT,))
    service = _service(tmp_path, config, policies={"rec": Recorder()})
    p = _ready(service, "x")
    gid = service.start_game(p)
    if service.view(p, gid)["status"] == "active":
        service.act(p, gid, "propose", [1, 1, 1])
        service.agent_turn(gid)
    obs, mask = seen[-1]
    assert list(obs[3:6]) == list(LEAK_CONTEXT.values[1])  # the agent sees its own values
    assert mask[251] == 1 and mask.sum() > 1


def test_config_from_yaml_and_clear_errors(tmp_path):
    path = tmp_path / "agents.yaml"
    path.write_text("study: pilot\nagents:\n  - {name: tough, partner: boulware}\n"
                    "  - {name: ppo, checkpoint: runs/ppo}\ncontexts: {count: 5, seed: 3}\nthink_time_s: 0.5\n")
    config = StudyConfig.from_yaml(path)
    assert config.study == "pilot" and [a.name for a in config.agents] == ["tough", "ppo"]
    assert config.agents[1].checkpoint == "runs/ppo" and len(config.contexts) == 5
    bad = {
        "agents: [{name: x, partner: boulware, checkpoint: y}]": "exactly one",
        "agents: [{name: x}]": "exactly one",
        "agents: []": "at least one",
        "agents: [{name: 'a b', partner: boulware}]": "letters",
        "agents: [{name: x, partner: boulware}]\nmax_turns: zero": "integer",
        "agents: [{name: x, partner: boulware}]\ncolour: red": "unknown settings",
        "agents: [{name: x, partner: b}, {name: x, partner: c}]": "unique",
    }
    for text, needle in bad.items():
        path.write_text(text)
        with pytest.raises(StudyConfigError, match=needle):
            StudyConfig.from_yaml(path)
    sp = tmp_path / "ctx.txt"
    sp.write_text("1 4 2 1 2 2\n1 0 2 3 2 2\n")
    path.write_text(f"agents: [boulware]\ncontexts: {sp.name}\n")
    assert StudyConfig.from_yaml(path).contexts[0].counts == (1, 2, 2)


def test_unknown_partner_fails_at_start(tmp_path):
    service = _service(tmp_path, study_config(agents=(AgentSpec("x", partner="no_such_partner"),)))
    with pytest.raises(ValueError, match="no_such_partner"):
        service.warm_up()


def test_terminal_play_is_stored_in_the_same_schema(tmp_path):
    from parley.cli import app

    db = f"sqlite:///{tmp_path / 'play.db'}"
    runner = CliRunner()
    # Give everything away: boulware accepts an offer worth all of its points at once.
    result = runner.invoke(app, ["play", "--agent", "boulware", "--db", db, "--pid", "tester", "--seed", "1"],
                           input="dance\npropose 9\nw 1\npropose 0 0 0 : all yours\n4\n3\n5\nnice\n")
    assert result.exit_code == 0, result.output
    assert "unknown command" in result.output and "needs 3 numbers" in result.output
    assert "Completion code:" in result.output
    engine = make_engine(db)
    tables = load_tables(engine)
    (game,) = tables["games"]
    assert game["source"] == "terminal" and game["agent"] == "boulware"
    acts = [e for e in tables["events"] if e["kind"] == "act"]
    human = [e for e in acts if e["actor"] == "human"]
    assert human[0]["message"] == "all yours"
    assert game["outcome"] == "deal" and game["ended_by"] == "agent"
    assert game["human_gets"] == [0, 0, 0] and game["human_score"] == 0 and game["agent_score"] == 10
    with Session(engine) as s:
        assert s.scalar(select(Survey.negotiate_again)) == 5


def test_report_writes_plots_markdown_and_exports(tmp_path):
    service = _service(tmp_path, study_config(sessions_per_participant=1))
    for i in range(6):
        p = _ready(service, f"r{i}")
        gid = service.start_game(p)
        view = service.view(p, gid)
        if i % 2 == 0 and view["can_agree"]:
            service.act(p, gid, "agree")
        elif view["status"] == "active":
            service.act(p, gid, "walk_away")
        service.submit_survey(p, gid, {"fair": 1 + i % 5, "human_like": 3, "negotiate_again": 2,
                                       "comment": "<b>loud</b> | pipes"})
    out = tmp_path / "report"
    from parley.cli import app

    result = CliRunner().invoke(app, ["report", str(tmp_path / "s.db"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    md = (out / "report.md").read_text()
    for name in ("scores", "agreement", "survey"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"({name}.png)" in md
    assert "| boulware |" in md and "| conceder |" in md
    assert "` <b>loud</b> | pipes `" in md  # a code span: shown as typed, never as markup
    games = [json.loads(x) for x in (out / "games.jsonl").read_text().splitlines()]
    assert len(games) == 6 and all(g["fair"] is not None for g in games)
    assert (out / "events.csv").read_text().startswith("event_id,")
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nope.db"), "--out", str(out)])
    assert missing.exit_code != 0 and "no study database" in missing.output


def test_statistics_helpers():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 0.0)
    mean, lo, hi = mean_interval([1, 2, 3, 4, 5])
    assert mean == 3 and hi - mean == pytest.approx(2.776 * np.std([1, 2, 3, 4, 5], ddof=1) / np.sqrt(5), rel=1e-6)
    assert mean_interval([4]) == (4, None, None)
    tables = {"games": [{"agent": "a", "outcome": "deal", "pareto_optimal": True, "turns": 2, "human_score": 6,
                         "agent_score": 7}, {"agent": "a", "outcome": "walk_away", "pareto_optimal": False,
                                             "turns": 3, "human_score": 0, "agent_score": 0}],
              "surveys": [], "participants": [], "events": [], "transcripts": []}
    s = summarise(tables)["a"]
    assert s["agreement"] == 0.5 and s["pareto"] == 1.0 and s["partner_score"]["mean"] == 3
    assert s["score"]["mean"] == 3.5 and s["turns"] == 2.5


def test_tables_of_one_study_leave_other_studies_out(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'shared.db'}")
    for study, n in (("first", 2), ("second", 3)):
        service = StudyService(study_config(study=study), engine)
        for i in range(n):
            p = _ready(service, f"{study}-{i}")
            gid = service.start_game(p)
            service.act(p, gid, "walk_away")
            service.submit_survey(p, gid, {"fair": 3, "human_like": 3, "negotiate_again": 3})
    first = load_tables(engine, "first")
    assert len(first["games"]) == 2 and len(first["surveys"]) == 2 and len(first["participants"]) == 2
    assert {e["participant_id"] for e in first["events"]} == {p["participant_id"] for p in first["participants"]}
    assert all(t["pid"].startswith("first-") for t in first["transcripts"])
    everything = load_tables(engine)
    assert len(everything["games"]) == 5 and len(everything["events"]) == len(first["events"]) + len(
        load_tables(engine, "second")["events"])


def test_a_saved_torch_policy_serves_as_study_agent_and_terminal_partner(tmp_path):
    from fastapi.testclient import TestClient

    from parley.agents.nn import torch_policy
    from parley.cli import app as cli_app
    from parley.human_eval.app import create_app

    checkpoint = torch_policy.TorchPolicy("mlp", observation_size=36, seed=0, device="cpu").save(tmp_path / "tiny")
    config = study_config(agents=(AgentSpec.from_dict({"name": "tiny", "checkpoint": str(checkpoint)}),))
    client = TestClient(create_app(config, db=f"sqlite:///{tmp_path / 'web.db'}"))
    p = Participant(client, "vs-checkpoint")
    view = p.begin()
    while view["status"] == "active":
        view = p.act(view["game_id"], "propose", [i["count"] for i in view["items"]])
    assert view["outcome"]["result"] in ("deal", "walk_away", "turn_limit")  # never agent_error
    assert any(t["speaker"] == "partner" for t in view["transcript"])

    db = f"sqlite:///{tmp_path / 'play.db'}"
    result = CliRunner().invoke(cli_app, ["play", "--agent", str(checkpoint), "--db", db, "--pid", "t",
                                          "--no-survey"], input="walk\n")
    assert result.exit_code == 0, result.output
    (game,) = load_tables(make_engine(db))["games"]
    assert game["agent"] == "tiny" and game["outcome"] == "walk_away"


def test_csv_export_neutralises_spreadsheet_formulas_and_jsonl_keeps_text():
    from parley.human_eval.report import to_csv, to_jsonl

    rows = [{"comment": '=HYPERLINK("http://x")', "score": -3, "items": [1, 0, 2], "note": "plain"}]
    text = to_csv(rows)
    assert "'=HYPERLINK" in text and ",-3," in text and '"[1, 0, 2]"' in text and "plain" in text
    assert json.loads(to_jsonl(rows))["comment"] == '=HYPERLINK("http://x")'
