"""The study web app's text protocol: chat, then secret selections, checked by the text env's rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _human_eval_support import ADMIN, FakeClock, Participant, make_client, study_config
from sqlalchemy import select
from sqlalchemy.orm import Session

from parley.envs.corpus import parse_raw_line, parse_utterance
from parley.envs.negotiation import Context, encode_act
from parley.envs.negotiation_text_v0 import TextNegotiationState, format_selection
from parley.envs.realiser import realise
from parley.human_eval.config import AgentSpec, StudyConfig, StudyConfigError
from parley.human_eval.db import Event, Game

CONTEXT = Context((1, 2, 2), ((2, 2, 2), (6, 1, 1)))


def text_config(**overrides) -> StudyConfig:
    base = dict(protocol="text", agents=(AgentSpec("conceder", partner="conceder"),), contexts=(CONTEXT,),
                max_message_chars=80, max_messages=12)
    base.update(overrides)
    return study_config(**base)


def move(p: Participant, game_id: int, path: str, expect: int = 200, turn: int | None = None, **body) -> dict:
    turn = p.views[game_id]["turn"] if turn is None else turn
    return p.call("POST", f"/api/games/{game_id}/{path}", {**body, "turn": turn}, expect=expect)


def events(client, game_id: int) -> list[Event]:
    engine = client.app.state.service.engine
    with Session(engine) as s:
        return list(s.scalars(select(Event).where(Event.game_id == game_id).order_by(Event.seq)))


def talk_to_agreement(p: Participant, game: dict) -> dict:
    """Offer the partner every item (the conceder agrees at once), then end the talk."""
    gid = game["game_id"]
    offer = realise(encode_act("propose", (0, 0, 0)), CONTEXT.counts, np.random.default_rng(0))
    view = move(p, gid, "say", text=offer)
    assert view["your_turn"] and view["phase"] == "talk"
    reply = view["transcript"][-1]
    assert reply["speaker"] == "partner"
    assert parse_utterance(reply["text"], CONTEXT.counts).kind == "agree"
    view = move(p, gid, "end_talk")
    # The partner ended nothing: the person ended the talk, so the partner selected first, in secret.
    assert view["phase"] == "select" and view["your_turn"] and view["status"] == "active"
    return view


def test_config_protocol_is_checked():
    assert StudyConfig().protocol == "acts"
    with pytest.raises(StudyConfigError, match="protocol must be one of acts, text"):
        StudyConfig.from_dict({"protocol": "chat"})
    with pytest.raises(StudyConfigError, match="lm:.*protocol: text"):
        StudyConfig(agents=(AgentSpec("m", player="lm:runs/lm"),))


@pytest.mark.parametrize("earlier_players", [0, 1])
def test_text_game_to_a_deal(tmp_path, earlier_players):
    client = make_client(tmp_path, text_config())
    # The assignment balances who opens: a second participant moves first where the first did not.
    orders = [Participant(client, f"early{i}").begin()["you_move_first"] for i in range(earlier_players)]
    p = Participant(client, "deal1")
    game = p.begin()
    assert game["you_move_first"] not in orders
    if not game["you_move_first"]:
        assert [m["speaker"] for m in game["transcript"]] == ["partner"]
    assert game["protocol"] == "text" and game["max_messages"] == 12 and game["phase"] == "talk"
    view = talk_to_agreement(p, game)
    gid = game["game_id"]
    agent_select = [e for e in events(client, gid) if e.kind == "select"]
    assert [e.actor for e in agent_select] == ["agent"]
    assert agent_select[0].text == format_selection(CONTEXT.counts)  # it keeps what the talk gave it
    assert view["your_selection"] is None and "partner_selection" not in json.dumps(view)

    view = move(p, gid, "select", split=[0, 0, 0])
    assert view["status"] == "finished"
    out = view["outcome"]
    assert out["result"] == "deal" and out["you_get"] == [0, 0, 0] and out["your_points"] == 0
    assert out["partner_selection"] == {"keep": list(CONTEXT.counts)}
    assert view["your_selection"] == {"keep": [0, 0, 0]}
    # The outcome is the text env's: replay the stored moves on its rules.
    state = TextNegotiationState(CONTEXT, first_player=0 if game["you_move_first"] else 1, max_messages=12)
    for e in events(client, gid):
        if e.kind in ("say", "select"):
            state.send(e.text)
    assert state.terminal and state.deal() == (0, 0, 0)
    rows = client.get("/api/admin/export/games.jsonl", headers={"X-Admin-Token": ADMIN}).text.splitlines()
    exported = next(r for r in map(json.loads, rows) if r["game_id"] == gid)
    assert exported["outcome"] == "deal" and exported["agent_score"] == pytest.approx(state.returns()[1]) == 10
    assert p.call("GET", "/api/state")["stage"] == "survey"


def test_text_game_to_a_mismatch(tmp_path):
    client = make_client(tmp_path, text_config())
    p = Participant(client, "mismatch1")
    game = p.begin()
    talk_to_agreement(p, game)
    view = move(p, game["game_id"], "select", split=list(CONTEXT.counts))  # both keep everything
    assert view["outcome"]["result"] == "mismatch"
    assert view["outcome"]["you_get"] is None and view["outcome"]["your_points"] == 0
    with Session(client.app.state.service.engine) as s:
        row = s.get(Game, game["game_id"])
        assert (row.human_score, row.agent_score, row.human_gets, row.protocol) == (0.0, 0.0, None, "text")


def test_no_agreement_selection(tmp_path):
    client = make_client(tmp_path, text_config())
    p = Participant(client, "noagree1")
    game = p.begin()
    talk_to_agreement(p, game)
    view = move(p, game["game_id"], "select", split=None)
    assert view["outcome"]["result"] == "no_agreement" and view["your_selection"] == {"keep": None}


def test_bad_utterances_are_refused_and_text_is_cleaned(tmp_path):
    client = make_client(tmp_path, text_config())
    p = Participant(client, "bad1")
    gid = p.begin()["game_id"]
    r = move(p, gid, "say", expect=422, text="x" * 81)
    assert "at most 80 characters" in r["error"]
    r = move(p, gid, "say", expect=422, text="\x00\x07 <> \x1b")
    assert "must say something" in r["error"]
    move(p, gid, "say", expect=422, text=None)  # not a string
    view = move(p, gid, "say", text="I\u2019d like\x07 the <selection> book\x00, please")
    mine = [m for m in view["transcript"] if m["speaker"] == "you"]
    assert mine[-1]["text"] == "I'd like the selection book, please"
    # Offers and selections do not belong to the talk, nor offers to a text game.
    assert "end the talk" in move(p, gid, "select", expect=409, split=[0, 0, 0])["error"]
    assert "text protocol" in p.act(gid, "propose", [1, 1, 1], expect=409)["error"]


def test_bad_selections_are_refused(tmp_path):
    client = make_client(tmp_path, text_config())
    p = Participant(client, "badsel1")
    gid = p.begin()["game_id"]
    move(p, gid, "end_talk")
    view = p.views[gid]
    if not view["your_turn"]:
        view = p.call("GET", f"/api/games/{gid}")
    assert view["phase"] == "select"
    r = move(p, gid, "select", expect=422, split=[2, 0, 0])
    assert "selection out of range: book: 2 (0..1)" in r["error"]
    r = move(p, gid, "select", expect=422, split=[1, 1])
    assert "how many you keep of book, hat, ball" in r["error"]
    r = move(p, gid, "select", expect=422, split=[1, 1.5, 0])
    assert "split" in r["error"]
    move(p, gid, "select", expect=422, turn=view["turn"])  # split missing: it must be given, null or a list
    assert "submit your selection" in move(p, gid, "say", expect=409, text="hello")["error"]
    assert p.call("GET", f"/api/games/{gid}")["status"] == "active"  # nothing was recorded


def test_moves_are_safe_to_retry(tmp_path):
    client = make_client(tmp_path, text_config())
    p = Participant(client, "retry1")
    gid = p.begin()["game_id"]
    turn = p.views[gid]["turn"]
    first = move(p, gid, "say", text="hello there", turn=turn)
    again = move(p, gid, "say", text="hello there", turn=turn)
    assert again["transcript"] == first["transcript"]
    assert sum(e.kind == "say" and e.actor == "human" for e in events(client, gid)) == 1
    r = move(p, gid, "say", expect=409, text="something else", turn=turn)
    assert "meant for turn" in r["error"]


def test_agent_selection_hidden_until_the_person_selects(tmp_path):
    client = make_client(tmp_path, text_config())
    p = Participant(client, "hidden1")
    game = p.begin()
    gid = game["game_id"]
    talk_to_agreement(p, game)
    assert any(e.kind == "select" and e.actor == "agent" for e in events(client, gid))
    for body in (p.call("GET", f"/api/games/{gid}"), p.call("GET", "/api/state")):
        assert "partner_selection" not in json.dumps(body) and "book=" not in json.dumps(body)
    assert all("partner_selection" not in r and "book=" not in r for r in p.responses)
    view = move(p, gid, "select", split=[0, 0, 0])
    assert view["outcome"]["partner_selection"] is not None


def test_message_limit_ends_the_talk(tmp_path):
    client = make_client(tmp_path, text_config(max_messages=2))
    p = Participant(client, "limit1")
    game = p.begin()
    gid = game["game_id"]
    view = move(p, gid, "say", text="hi")
    # Two messages (ours and the partner's, in whichever order) end the talk; selections follow.
    if view["phase"] == "talk":
        view = move(p, gid, "say", text="hi")
    assert view["phase"] == "select" and view["messages_sent"] == 2


def test_the_reply_is_hidden_during_the_think_time(tmp_path):
    from parley.human_eval.db import make_engine
    from parley.human_eval.service import StudyService

    clock = FakeClock()
    service = StudyService(text_config(think_time_s=2.0), make_engine(f"sqlite:///{tmp_path / 's.db'}"), clock=clock)
    p = service.enter("teststudy", "reader")
    service.record_step(p, "consent")
    service.record_step(p, "instructions")
    gid = service.start_game(p)
    view = service.advance(p, gid)
    if not view["your_turn"]:  # the partner opens: its first message is owed after the think time too
        clock.now += 2.5
        view = service.advance(p, gid)
    n = len(view["transcript"])
    service.send_text(p, gid, "say", text="You can have everything.", expected_turn=view["turn"])
    clock.now += 1.0  # mid think time: reads show the person's message and no reply
    for read in (service.advance(p, gid), service.participant_state(p)["game"], service.view(p, gid)):
        assert len(read["transcript"]) == n + 1 and read["transcript"][-1]["speaker"] == "you"
        assert not read["your_turn"]
    clock.now += 1.5
    view = service.advance(p, gid)
    assert view["transcript"][-1]["speaker"] == "partner" and view["your_turn"]


def test_a_dialogue_model_plays_a_text_study(tmp_path, tiny_language_model):
    client = make_client(tmp_path, text_config(agents=(AgentSpec("lm", player=f"lm:{tiny_language_model}"),)))
    p = Participant(client, "lm1")
    game = p.begin()
    gid = game["game_id"]
    view = move(p, gid, "say", text="I would like the book, you can have the rest.")
    assert view["transcript"][-1]["speaker"] == "partner" or view["phase"] == "select"
    if view["phase"] == "talk":
        view = move(p, gid, "end_talk")
    if view["status"] == "active":
        view = move(p, gid, "select", split=[1, 0, 0])
    assert view["status"] == "finished" and view["outcome"]["result"] in ("deal", "mismatch", "no_agreement")
    assert not any(e.kind == "agent_error" for e in events(client, gid))


def test_admin_pages_read_text_games(tmp_path):
    client = make_client(tmp_path, text_config())
    p = Participant(client, "admin1")
    game = p.begin()
    talk_to_agreement(p, game)
    move(p, game["game_id"], "select", split=[0, 0, 0])
    admin = {"X-Admin-Token": ADMIN}
    for path in ("/api/admin/status", "/api/admin/results", "/api/admin/corpus.txt", "/api/admin/games",
                 f"/api/admin/games/{game['game_id']}/replay", "/api/admin/export/transcripts.jsonl",
                 "/api/admin/export/events.csv"):
        assert client.get(path, headers=admin).status_code == 200, path
    replay = client.get(f"/api/admin/games/{game['game_id']}/replay", headers=admin).json()
    said = [s["text"] for s in replay["steps"] if s["kind"] == "say"]
    offer = realise(encode_act("propose", (0, 0, 0)), CONTEXT.counts, np.random.default_rng(0))
    assert offer in said and said[-1] == "<selection>" and replay["outcome"] == "deal"


def test_corpus_export_writes_what_was_said_and_selected(tmp_path):
    client = make_client(tmp_path, text_config())
    results = {}
    for pid, keep in (("c-deal", [0, 0, 0]), ("c-mismatch", list(CONTEXT.counts))):
        p = Participant(client, pid)
        game = p.begin()
        talk_to_agreement(p, game)
        results[game["game_id"]] = (keep, move(p, game["game_id"], "select", split=keep)["outcome"]["result"])
    assert sorted(r for _, r in results.values()) == ["deal", "mismatch"]
    lines = client.get("/api/admin/corpus.txt", headers={"X-Admin-Token": ADMIN}).text.splitlines()
    assert len(lines) == 4  # two sides of two games
    offer = realise(encode_act("propose", (0, 0, 0)), CONTEXT.counts, np.random.default_rng(0))
    for (keep, result), (person, agent) in zip(results.values(), (lines[:2], lines[2:]), strict=True):
        mine, theirs = parse_raw_line(person), parse_raw_line(agent)
        assert mine.outcome == theirs.outcome == ("agree" if result == "deal" else "disagree")
        assert tuple(mine.selection) == tuple(keep) and tuple(theirs.selection) == CONTEXT.counts
        said = [u.text for u in mine.utterances]
        assert offer.lower().rstrip(".") in said[-2] and parse_utterance(said[-1], CONTEXT.counts).kind == "agree"
        assert "YOU: <selection>" in person and "THEM: <selection>" in agent  # the person ended the talk


def test_an_idle_person_times_out_while_selecting(tmp_path):
    from parley.human_eval.db import make_engine
    from parley.human_eval.service import StudyService

    clock = FakeClock()
    service = StudyService(text_config(idle_timeout_s=60.0), make_engine(f"sqlite:///{tmp_path / 's.db'}"),
                           clock=clock)
    p = service.enter("teststudy", "idle")
    service.record_step(p, "consent")
    service.record_step(p, "instructions")
    gid = service.start_game(p)
    view = service.send_text(p, gid, "end_talk", expected_turn=service.advance(p, gid)["turn"], reply=True)
    assert view["phase"] == "select" and view["your_turn"]
    clock.now += 61.0
    assert service.expire_idle_games() == 1
    view = service.view(p, gid)
    assert view["outcome"]["result"] == "timeout" and view["outcome"]["your_points"] == 0
    assert view["outcome"]["partner_selection"] is not None  # shown once the game is over
