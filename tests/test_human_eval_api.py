"""API tests of the study web app: the participant flow, validation, turn order, tokens, admin, leaks."""

from __future__ import annotations

import base64
import json
import re

import pytest
from _human_eval_support import (
    ADMIN,
    LEAK_CONTEXT,
    Participant,
    loads,
    make_client,
    play_to_deal,
    study_config,
    walk_json,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from parley.human_eval.db import Event, Game, Survey
from parley.human_eval.security import TokenSigner


@pytest.fixture
def client(tmp_path):
    return make_client(tmp_path)


def _events(client, game_id):
    with Session(client.app.state.service.engine) as s:
        return list(s.scalars(select(Event).where(Event.game_id == game_id).order_by(Event.seq)))


def test_full_session_from_link_to_completion_code(client):
    p = Participant(client, "worker-1")
    assert p.state["stage"] == "consent"
    p.call("POST", "/api/instructions", {}, expect=409)  # instructions need consent first
    game = p.begin()
    assert game["turn"] == 0 and game["status"] == "active"
    values = [i["your_value"] for i in game["items"]]

    final = play_to_deal(p, game)
    assert final["status"] == "finished"
    assert final["outcome"]["result"] == "deal"
    you_get = final["outcome"]["you_get"]
    assert final["outcome"]["your_points"] == sum(v * k for v, k in zip(values, you_get, strict=True))
    speakers = [t["speaker"] for t in final["transcript"]]
    assert "partner" in speakers and speakers[-1] == "you"  # the person agreed last
    assert all(t["text"] for t in final["transcript"])  # every act verbalised

    state = p.call("GET", "/api/state")
    assert state["stage"] == "survey"
    done = p.call("POST", f"/api/games/{game['game_id']}/survey",
                  {"fair": 4, "human_like": 2, "negotiate_again": 5, "comment": "ok"})
    code = done["completion_code"]
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", code)
    assert done["state"]["stage"] == "done" and done["state"]["completed"] == 1
    assert code not in json.dumps(done["state"])  # the code is given once, not kept in the state
    p.call("POST", f"/api/games/{game['game_id']}/survey",
           {"fair": 1, "human_like": 1, "negotiate_again": 1}, expect=409)  # answered once only
    p.call("POST", "/api/games", {}, expect=409)  # one session per participant by default

    # The database holds the whole game: start, every act in order, the survey, the code.
    events = _events(client, game["game_id"])
    assert [e.seq for e in events] == list(range(len(events)))
    assert events[0].kind == "start" and events[-1].kind == "survey"
    acts = [e for e in events if e.kind == "act"]
    assert len(acts) == len(final["transcript"])
    assert all(e.latency_ms is not None and e.latency_ms >= 0 for e in acts)
    with Session(client.app.state.service.engine) as s:
        row = s.get(Game, game["game_id"])
        assert (row.outcome, row.completion_code) == ("deal", code)
        assert json.loads(row.human_gets) == you_get
        assert s.scalar(select(Survey.fair).where(Survey.game_id == row.id)) == 4

    # Opening the link again resumes the same participant at the end of the flow, without the code.
    again = Participant(client, "worker-1")
    assert again.state["stage"] == "done" and code not in again.responses[0]


def test_link_resumes_an_unfinished_negotiation(client):
    p = Participant(client, "resumer")
    game = p.begin()
    view = p.act(game["game_id"], "propose", [i["count"] for i in game["items"]], message="hello")
    before = view["transcript"]
    again = Participant(client, "resumer")
    assert again.state["stage"] == "negotiation"
    assert again.state["game"]["game_id"] == game["game_id"]
    assert again.state["game"]["transcript"] == before
    assert before[0]["message"] == "hello"


def test_malformed_json_and_bad_fields_get_clear_4xx(client):
    p = Participant(client, "w")
    game = p.begin()
    url = f"/api/games/{game['game_id']}/act"
    r = client.post(url, headers={**p.headers, "Content-Type": "application/json"}, content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    for body, needle in [({"kind": "dance"}, "kind"), ({"kind": "propose", "split": ["a", 1, 1]}, "split"),
                         ({"kind": "propose", "split": [1, 1, 1], "extra": 1}, "extra"),
                         ({"kind": "propose", "split": [1.5, 0, 0]}, "split"), ([1, 2, 3], "body")]:
        r = client.post(url, headers=p.headers, json=body)
        assert r.status_code == 422, (body, r.text)
        assert needle in r.json()["error"], r.json()
    r = client.post(f"/api/games/{game['game_id']}/survey", headers=p.headers,
                    json={"fair": 7, "human_like": 1, "negotiate_again": 1})
    assert r.status_code == 422 and "fair" in r.json()["error"]
    r = client.post("/api/enter", json={"study": "teststudy"})
    assert r.status_code == 422 and "pid" in r.json()["error"]
    r = client.post("/api/enter", json={"study": "nope", "pid": "x"})
    assert r.status_code == 404
    assert [e.kind for e in _events(client, game["game_id"])] == ["start"]  # nothing was recorded


def test_out_of_range_offers_are_rejected_and_not_recorded(client):
    p = Participant(client, "w")
    game = p.begin()
    counts = [i["count"] for i in game["items"]]
    n_events = len(_events(client, game["game_id"]))
    too_many = [counts[0] + 1, 0, 0]
    for split in (too_many, [-1, 0, 0], [99, 0, 0], [1, 1]):
        r = client.post(f"/api/games/{game['game_id']}/act", headers=p.headers,
                        json={"kind": "propose", "split": split, "turn": game["turn"]})
        assert r.status_code == 422, (split, r.text)
    r = client.post(f"/api/games/{game['game_id']}/act", headers=p.headers,
                    json={"kind": "insist", "split": too_many, "turn": game["turn"]})
    assert "out of range" in r.json()["error"] and f"book: {counts[0] + 1} (0..{counts[0]})" in r.json()["error"]
    r = client.post(f"/api/games/{game['game_id']}/act", headers=p.headers, json={"kind": "propose", "turn": game["turn"]})
    assert r.status_code == 422 and "split" in r.json()["error"]
    r = client.post(f"/api/games/{game['game_id']}/act", headers=p.headers,
                    json={"kind": "walk_away", "split": [0, 0, 0], "turn": game["turn"]})
    assert r.status_code == 422
    assert len(_events(client, game["game_id"])) == n_events


def test_acting_out_of_turn_or_after_the_end(client):
    p = Participant(client, "w")
    game = p.begin()
    gid = game["game_id"]
    pid = client.app.state.signer.verify(p.token)[0]
    service = client.app.state.service
    if not game["your_turn"]:  # the agent moved first: our turn now
        assert game["transcript"][0]["speaker"] == "partner"
    # The person's act is recorded but the agent has not answered yet: acting again is out of turn.
    service.act(pid, gid, "propose", [i["count"] for i in game["items"]])
    r = client.post(f"/api/games/{gid}/act", headers=p.headers,
                    json={"kind": "propose", "split": [0, 0, 0], "turn": game["turn"] + 1})
    assert r.status_code == 409 and "not your turn" in r.json()["error"]
    view = p.call("GET", f"/api/games/{gid}")  # the pending agent reply is made on the next read
    assert view["your_turn"] and view["transcript"][-1]["speaker"] == "partner"
    # A stale act (meant for an earlier turn) is refused.
    r = client.post(f"/api/games/{gid}/act", headers=p.headers,
                    json={"kind": "propose", "split": [0, 0, 0], "turn": view["turn"] - 1})
    assert r.status_code == 409 and "turn" in r.json()["error"]
    p.act(gid, "walk_away")
    n_events = len(_events(client, gid))
    final = p.call("GET", f"/api/games/{gid}")
    for body in ({"kind": "propose", "split": [0, 0, 0]}, {"kind": "agree"}, {"kind": "walk_away"}):
        r = client.post(f"/api/games/{gid}/act", headers=p.headers, json={**body, "turn": final["turn"]})
        assert r.status_code == 409 and "over" in r.json()["error"]
    assert len(_events(client, gid)) == n_events


def test_agree_without_an_offer_is_refused(tmp_path):
    # One agent and one context: the two participants get both move orders (balanced assignment).
    client = make_client(tmp_path, study_config(agents=study_config().agents[:1], contexts=(LEAK_CONTEXT,)))
    games = [Participant(client, f"p{i}") for i in range(2)]
    views = [(p, p.begin()) for p in games]
    assert sorted(v["you_move_first"] for _, v in views) == [False, True]
    p, game = next((p, v) for p, v in views if v["you_move_first"])
    assert game["partner_offer"] is None and not game["can_agree"]
    r = client.post(f"/api/games/{game['game_id']}/act", headers=p.headers, json={"kind": "agree", "turn": 0})
    assert r.status_code == 409 and "no offer" in r.json()["error"]
    assert [e.kind for e in _events(client, game["game_id"])] == ["start"]


def test_forged_or_foreign_tokens_are_rejected(client):
    alice, bob = Participant(client, "alice"), Participant(client, "bob")
    game = alice.begin()
    bob.begin()
    gid = game["game_id"]
    n_events = len(_events(client, gid))
    url = f"/api/games/{gid}/act"
    body = {"kind": "propose", "split": [0, 0, 0], "turn": game["turn"]}
    # Bob's valid token cannot touch Alice's game.
    r = client.post(url, headers=bob.headers, json=body)
    assert r.status_code == 403 and "another participant" in r.json()["error"]
    assert client.get(f"/api/games/{gid}", headers=bob.headers).status_code == 403
    # Bob's token with its payload edited to name Alice: the signature no longer matches.
    payload, sig = bob.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["p"] = client.app.state.signer.verify(alice.token)[0]
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    other_secret = TokenSigner("a-different-secret-of-enough-length").issue(claims["p"], "teststudy")
    for token in (f"{forged_payload}.{sig}", other_secret, "garbage", "a.b", ""):
        r = client.post(url, headers={"X-Session-Token": token}, json=body)
        assert r.status_code == 401, (token, r.text)
    assert client.post(url, json=body).status_code == 401  # no token at all
    assert len(_events(client, gid)) == n_events


def test_admin_endpoints_need_the_admin_token(client):
    p = Participant(client, "w")
    play_to_deal(p, p.begin())
    paths = ["/api/admin/status", "/api/admin/export/games.jsonl", "/api/admin/export/events.csv",
             "/api/admin/results", "/api/admin/plots/scores.png"]
    for path in paths:
        assert client.get(path).status_code == 403
        assert client.get(path, headers={"X-Admin-Token": "wrong"}).status_code == 403
        assert client.get(path, headers=p.headers).status_code == 403  # a participant token is not admin
    r = client.get("/api/admin/export/games.jsonl", headers={"X-Admin-Token": ADMIN})
    assert r.status_code == 200
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert len(rows) == 1 and rows[0]["outcome"] == "deal" and rows[0]["pid"] == "w"
    r = client.get("/api/admin/export/transcripts.csv", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and r.text.startswith("game_id,")
    assert client.get("/api/admin/export/secrets.csv", headers={"X-Admin-Token": ADMIN}).status_code == 400
    png = client.get("/api/admin/plots/agreement.png", headers={"X-Admin-Token": ADMIN})
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    status = client.get("/api/admin/status", headers={"X-Admin-Token": ADMIN}).json()
    assert status["games"] == 1 and sum(a["deals"] for a in status["agents"].values()) == 1


def test_admin_api_is_off_without_a_configured_token(tmp_path):
    from fastapi.testclient import TestClient

    from parley.human_eval.app import create_app

    app = create_app(study_config(), db=f"sqlite:///{tmp_path / 'x.db'}", admin_token=None)
    r = TestClient(app).get("/api/admin/status", headers={"X-Admin-Token": ""})
    assert r.status_code == 403 and "disabled" in r.json()["error"]


def test_no_agent_value_reaches_the_participant(tmp_path):
    client = make_client(tmp_path, study_config(contexts=(LEAK_CONTEXT,)))
    agent_values = list(LEAK_CONTEXT.values[1])
    for pid, finish in (("leak-deal", "deal"), ("leak-walk", "walk")):
        p = Participant(client, pid)
        game = p.begin()
        assert [i["your_value"] for i in game["items"]] == list(LEAK_CONTEXT.values[0])
        if finish == "deal":
            view = play_to_deal(p, game)
        else:
            view = p.act(game["game_id"], "propose", [1, 1, 1])
            view = p.act(game["game_id"], "walk_away")
        p.call("GET", f"/api/games/{game['game_id']}")
        p.call("GET", "/api/state")
        p.call("POST", f"/api/games/{game['game_id']}/survey", {"fair": 3, "human_like": 3, "negotiate_again": 3})
        assert view["status"] == "finished"
        for text in p.responses:
            body = loads(text)

            def visit(node, text=text):
                assert node != agent_values, f"agent values in {text}"
                if isinstance(node, str):
                    assert "agent" not in node.lower() or node in ("agent_error",), f"agent field in {text}"

            walk_json(body, visit)
            assert "agent_score" not in text and "agent_values" not in text
    # The admin export does hold them (so the check above is not vacuous).
    export = client.get("/api/admin/export/games.jsonl", headers={"X-Admin-Token": ADMIN}).text
    assert json.loads(export.splitlines()[0])["agent_values"] == agent_values


def test_rate_limit_per_participant(tmp_path):
    client = make_client(tmp_path, study_config(rate_burst=5, rate_per_s=0.05))
    p = Participant(client, "fast")
    codes = [client.get("/api/state", headers=p.headers).status_code for _ in range(8)]
    assert codes[:5] == [200] * 5 and 429 in codes[5:]
    other = Participant(client, "slow")  # limits are per participant
    assert client.get("/api/state", headers=other.headers).status_code == 200


def test_responses_carry_security_headers_and_reject_huge_bodies(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    p = Participant(client, "big")
    game = p.begin()
    r = client.post(f"/api/games/{game['game_id']}/act", headers=p.headers,
                    content=b'{"kind": "propose", "message": "' + b"x" * 100_000 + b'"}')
    assert r.status_code == 413
    r = p.act(game["game_id"], "propose", [0, 0, 0], message="y" * 501, expect=422)
    assert "too long" in r["error"] or "message" in r["error"]


def test_free_text_is_stored_verbatim_and_returned_as_data(client):
    p = Participant(client, "xss")
    game = p.begin()
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    view = p.act(game["game_id"], "propose", [i["count"] for i in game["items"]], message=evil)
    mine = [t for t in view["transcript"] if t["speaker"] == "you"]
    assert mine[-1]["message"] == evil  # JSON data; the page renders it with textContent
    assert _events(client, game["game_id"])[-2 if view["transcript"][-1]["speaker"] == "partner" else -1].message == evil
    page = client.get("/static/app.js").text
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page


def test_a_study_can_replace_pages_and_nothing_outside_is_served(tmp_path):
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "index.html").write_text("<!doctype html><title>x</title><p>Our own consent text</p>")
    (tmp_path / "agents.yaml").write_text("study: custom\nagents: [boulware]\npages_dir: pages\n")
    from parley.human_eval.config import StudyConfig

    config = StudyConfig.from_yaml(tmp_path / "agents.yaml")
    client = make_client(tmp_path, config)
    assert "Our own consent text" in client.get("/").text
    assert "sendAct" in client.get("/static/app.js").text  # not replaced: the packaged asset
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    for path in ("/static/..%2Fapp.py", "/static/.hidden", "/static/nope.js", "/static/%2E%2E%2Fcli.py"):
        assert client.get(path).status_code == 404, path
