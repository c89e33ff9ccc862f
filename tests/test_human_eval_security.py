"""The study app tried as an attacker would: entry without a valid link, malformed input that used to
end in a 500, early reads of the agent's reply, lock-table growth, retried acts and hostile free text."""

from __future__ import annotations

import json
import re

import pytest
from _human_eval_support import (
    ADMIN,
    FakeClock,
    Participant,
    make_client,
    play_to_deal,
    signed_link,
    study_config,
    walk_json,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from parley.human_eval.db import Event, make_engine
from parley.human_eval.db import Participant as ParticipantRow
from parley.human_eval.report import load_tables, markdown_report, to_csv, to_jsonl
from parley.human_eval.service import StudyService

ADMIN_HEADERS = {"X-Admin-Token": ADMIN}


@pytest.fixture
def client(tmp_path):
    return make_client(tmp_path)


def _count(client, model) -> int:
    with Session(client.app.state.service.engine) as s:
        return s.scalar(select(func.count()).select_from(model))


def _acts(client, game_id) -> list[Event]:
    with Session(client.app.state.service.engine) as s:
        return list(s.scalars(select(Event).where(Event.game_id == game_id, Event.kind == "act")
                              .order_by(Event.seq)))


# ------------------------------------------------------------------------------------------- entry


def test_entry_needs_a_link_signed_for_that_pid(tmp_path):
    client = make_client(tmp_path, enter_burst=1000)
    good = signed_link(client, "teststudy", "alice")
    for body in ({"study": "teststudy", "pid": "alice"},                       # no signature
                 {**good, "sig": good["sig"][:-2] + "AA"},                    # a changed signature
                 {**signed_link(client, "teststudy", "bob"), "pid": "alice"},  # bob's signature
                 {**good, "sig": "é" * 10}):                                  # junk
        r = client.post("/api/enter", json=body)
        assert r.status_code == 403, (body, r.text)
        assert "link" in r.json()["error"] and "token" not in r.json()
    # 200 made-up pids enrol no one.
    for i in range(200):
        assert client.post("/api/enter", json={"study": "teststudy", "pid": f"made-up-{i}"}).status_code == 403
    assert _count(client, ParticipantRow) == 0
    r = client.post("/api/enter", json=good)
    assert r.status_code == 200 and r.json()["state"]["pid"] == "alice"


def test_pid_formats_are_checked(client):
    for pid in ("../etc", "a b", "a\nb", "ünïcode", "-leading-dash", "x" * 129, "<script>"):
        r = client.post("/api/enter", json=signed_link(client, "teststudy", pid))
        assert r.status_code == 422, (pid, r.text)
        assert "participant id" in r.json()["error"] or "pid" in r.json()["error"]
    assert _count(client, ParticipantRow) == 0


def test_admin_issues_signed_links_that_let_their_pid_in(client):
    body = {"pids": ["p-1", "p-2"], "base_url": "https://study.example.org"}
    assert client.post("/api/admin/links", json=body).status_code == 403  # admin only
    r = client.post("/api/admin/links", json=body, headers=ADMIN_HEADERS)
    assert r.status_code == 200
    links = r.json()["links"]
    assert [x["pid"] for x in links] == ["p-1", "p-2"]
    for link in links:
        assert link["url"].startswith("https://study.example.org/?study=teststudy&pid=")
        query = dict(part.split("=", 1) for part in link["url"].split("?", 1)[1].split("&"))
        assert client.post("/api/enter", json=query).status_code == 200
        swapped = {**query, "pid": "p-2" if query["pid"] == "p-1" else "p-1"}
        assert client.post("/api/enter", json=swapped).status_code == 403
    r = client.post("/api/admin/links", json={"pids": ["bad pid"]}, headers=ADMIN_HEADERS)
    assert r.status_code == 422


def test_allowlist_entry_takes_listed_ids_and_rereads_the_file(tmp_path):
    allow = tmp_path / "ids.txt"
    allow.write_text("# invited\nann\n")
    client = make_client(tmp_path, study_config(entry="allowlist", allowlist=str(allow)))
    assert client.post("/api/enter", json={"study": "teststudy", "pid": "ann"}).status_code == 200
    assert client.post("/api/enter", json={"study": "teststudy", "pid": "ben"}).status_code == 403
    allow.write_text("# invited\nann\nben   # added while the study runs\n")
    assert client.post("/api/enter", json={"study": "teststudy", "pid": "ben"}).status_code == 200


def test_entry_never_returns_completion_codes(client):
    p = Participant(client, "finisher")
    game = p.begin()
    play_to_deal(p, game)
    done = p.call("POST", f"/api/games/{game['game_id']}/survey", {"fair": 3, "human_like": 3, "negotiate_again": 3})
    code = done["completion_code"]
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", code)
    again = Participant(client, "finisher")
    assert code not in again.responses[0]
    assert code not in again.call("GET", "/api/state").__repr__()
    assert code not in json.dumps(again.call("GET", f"/api/games/{game['game_id']}"))


# ------------------------------------------------------------------------------------ malformed input


def test_a_non_ascii_token_signature_gets_401_not_500(client):
    p = Participant(client, "t")
    payload = p.token.split(".")[0]
    for raw in (f"{payload}.".encode() + b"\xff\xfe", p.token.encode()[:-1] + b"\xe9"):
        r = client.get("/api/state", headers={"X-Session-Token": raw})
        assert r.status_code == 401, r.text


def test_huge_or_negative_game_ids_get_422_not_500(client):
    p = Participant(client, "g")
    p.begin()
    for gid in (2**63, 2**64 + 5, 10**30, -1, 0):
        assert client.get(f"/api/games/{gid}", headers=p.headers).status_code == 422, gid
        r = client.post(f"/api/games/{gid}/act", headers=p.headers, json={"kind": "walk_away", "turn": 0})
        assert r.status_code == 422, gid
        r = client.post(f"/api/games/{gid}/survey", headers=p.headers,
                        json={"fair": 1, "human_like": 1, "negotiate_again": 1})
        assert r.status_code == 422, gid
    assert client.get(f"/api/games/{2**62}", headers=p.headers).status_code == 404  # in range, no such game


def test_non_finite_and_overflowing_numbers_are_refused(client):
    p = Participant(client, "n")
    game = p.begin()
    gid, turn = game["game_id"], game["turn"]
    url = f"/api/games/{gid}/act"
    headers = {**p.headers, "Content-Type": "application/json"}
    before = len(_acts(client, gid))
    bodies = {
        b'{"kind": "walk_away", "turn": %d, "client_ts": 1%s}' % (turn, b"0" * 400): 422,  # 10**400
        b'{"kind": "walk_away", "turn": %d, "client_ts": 1e400}' % turn: 400,
        b'{"kind": "walk_away", "turn": %d, "client_ts": Infinity}' % turn: 400,
        b'{"kind": "walk_away", "turn": %d, "client_ts": -Infinity}' % turn: 400,
        b'{"kind": "walk_away", "turn": %d, "client_ts": NaN}' % turn: 400,
        b'{"kind": "walk_away", "turn": %d, "client_ts": -5}' % turn: 422,
        b'{"kind": "walk_away", "turn": %d, "client_ts": 1%s}' % (turn, b"0" * 5000): 400,  # past int parsing
        b'{"kind": "walk_away", "turn": NaN}': 400,
    }
    for body, status in bodies.items():
        r = client.post(url, headers=headers, content=body)
        assert r.status_code == status, (body[:60], r.text)
        assert "error" in r.json()
    r = client.post("/api/enter", headers={"Content-Type": "application/json"},
                    content=b'{"study": "teststudy", "pid": "x", "sig": NaN}')
    assert r.status_code == 400
    assert len(_acts(client, gid)) == before  # nothing was recorded
    view = p.act(gid, "walk_away")  # a finite client clock is stored
    assert view["status"] == "finished"
    export = client.get("/api/admin/export/events.jsonl", headers=ADMIN_HEADERS).text
    for line in export.splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in the export"))


# ---------------------------------------------------------------------------------- the game itself


def test_a_read_during_the_think_time_does_not_reveal_the_reply(tmp_path):
    clock = FakeClock()
    service = StudyService(study_config(think_time_s=2.0, agents=study_config().agents[:1]),
                           make_engine(f"sqlite:///{tmp_path / 's.db'}"), clock=clock)
    p = service.enter("teststudy", "reader")
    service.record_step(p, "consent")
    service.record_step(p, "instructions")
    gid = service.start_game(p)
    view = service.advance(p, gid)
    counts = [i["count"] for i in view["items"]]
    service.act(p, gid, "propose", counts, expected_turn=view["turn"])  # stored; the reply is owed
    n = len(view["transcript"])
    clock.now += 1.0  # mid think time: every read shows the person's act and no reply
    for read in (service.advance(p, gid), service.participant_state(p)["game"], service.view(p, gid)):
        assert len(read["transcript"]) == n + 1 and read["transcript"][-1]["speaker"] == "you"
        assert not read["your_turn"]
    assert service.expire_idle_games() == 0
    assert service.view(p, gid)["transcript"][-1]["speaker"] == "you"
    clock.now += 1.5  # the think time is over: the owed reply is made by the next read
    view = service.advance(p, gid)
    assert view["transcript"][-1]["speaker"] == "partner"


def test_the_game_lock_table_does_not_grow_with_requested_ids(client):
    p = Participant(client, "locks")
    game = p.begin()
    service = client.app.state.service
    for gid in list(range(1000, 1300)) + [game["game_id"]] * 5:
        client.get(f"/api/games/{gid}", headers=p.headers)
        client.post(f"/api/games/{gid}/act", headers=p.headers, json={"kind": "walk_away", "turn": 99})
    assert service._game_locks == {}
    p.act(game["game_id"], "propose", [0, 0, 0])
    assert service._game_locks == {}


def test_acts_need_a_turn_and_a_retried_act_is_recorded_once(client):
    p = Participant(client, "retry")
    game = p.begin()
    gid = game["game_id"]
    url = f"/api/games/{gid}/act"
    counts = [i["count"] for i in game["items"]]
    r = client.post(url, headers=p.headers, json={"kind": "propose", "split": counts})
    assert r.status_code == 422 and "turn" in r.json()["error"]
    before = len(_acts(client, gid))
    body = {"kind": "propose", "split": counts, "message": "mine", "turn": game["turn"]}
    first = client.post(url, headers=p.headers, json=body)
    retry = client.post(url, headers=p.headers, json=body)  # the answer was lost; the page sends it again
    assert first.status_code == 200 and retry.status_code == 200
    assert retry.json()["transcript"] == first.json()["transcript"]
    acts = _acts(client, gid)
    assert len(acts) == before + 2 and [a.actor for a in acts[-2:]] == ["human", "agent"]  # once, and the reply
    # A different act for the same, past turn is not a retry: it is refused and not recorded.
    other = {**body, "split": [0, 0, 0]}
    assert client.post(url, headers=p.headers, json=other).status_code == 409
    assert len(_acts(client, gid)) == before + 2


# ------------------------------------------------------------------------------------- exports


HOSTILE = "ok\x1b[2J\x07\x85 \u202eevil\u2028 ![pic](http://evil.example/x.png) [click](javascript:alert(1)) `` x"


def test_exports_and_report_neutralise_control_characters_and_markdown(client, tmp_path):
    p = Participant(client, "hostile")
    game = p.begin()
    p.act(game["game_id"], "propose", [i["count"] for i in game["items"]], message=HOSTILE)
    view = p.act(game["game_id"], "walk_away")
    assert view["status"] == "finished"
    p.call("POST", f"/api/games/{game['game_id']}/survey",
           {"fair": 1, "human_like": 1, "negotiate_again": 1, "comment": HOSTILE})
    raw = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202e]")
    for name in ("events.jsonl", "surveys.jsonl", "games.jsonl", "transcripts.jsonl"):
        text = client.get(f"/api/admin/export/{name}", headers=ADMIN_HEADERS).text
        assert not raw.search(text), name
        texts = []
        walk_json([json.loads(line) for line in text.splitlines()], texts.append)
        assert HOSTILE in texts, name  # the exact text survives in JSONL
    for name in ("events.csv", "surveys.csv", "games.csv", "transcripts.csv"):
        text = client.get(f"/api/admin/export/{name}", headers=ADMIN_HEADERS).text
        assert not raw.search(text.replace("\r\n", "\n")), name
        assert "![pic]" in text or name == "transcripts.csv" and "pic" in text
    md = markdown_report(load_tables(client.app.state.service.engine, "teststudy"), "teststudy")
    assert not raw.search(md)
    (line,) = [x for x in md.splitlines() if "evil" in x]
    # The comment sits inside one code span whose fence is longer than the text's backtick runs.
    span = re.fullmatch(r"- \(\w+, game \d+\) (`{3,}) (.*) \1", line)
    assert span is not None, line
    assert "``" in span.group(2) and "](http://evil.example/x.png)" in span.group(2)
    assert "`" * len(span.group(1)) not in span.group(2)


def test_csv_and_jsonl_helpers_neutralise_every_text_cell():
    rows = [{"pid": "p\x1b", "comment": "\x9b31m", "nested": {"m": "\x1b"}, "n": 3}]
    csv_text = to_csv(rows)
    assert "\x1b" not in csv_text and "\x9b" not in csv_text and "\ufffd" in csv_text
    jsonl = to_jsonl(rows)
    assert "\x1b" not in jsonl and "\x9b" not in jsonl and json.loads(jsonl) == rows[0]
