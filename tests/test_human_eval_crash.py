"""Crash safety: a server killed with SIGKILL mid-session loses no turn, and the session can be finished.

The server runs as a real ``parley serve`` subprocess on a free loopback port.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from _human_eval_support import SECRET, kill, start_server
from sqlalchemy import select
from sqlalchemy.orm import Session

from parley.human_eval.db import Event, make_engine
from parley.human_eval.security import TokenSigner

_ENGINES: dict = {}


def acts_in_db(db: str, game_id: int) -> list[tuple[int, str, int]]:
    """The stored acts of a game, read straight from the database file (one engine per file, reused)."""
    engine = _ENGINES.setdefault(db, make_engine(db))
    with Session(engine) as s:
        rows = s.scalars(select(Event).where(Event.game_id == game_id, Event.kind == "act").order_by(Event.seq))
        return [(e.seq, e.actor, e.action) for e in rows]


@pytest.fixture
def study(tmp_path):
    config = tmp_path / "agents.yaml"
    # think time 1 s: long enough to kill the server between the person's act and the agent's reply.
    config.write_text("study: crash\nagents: [{name: boulware, partner: boulware}]\n"
                      "contexts: {count: 4, seed: 7}\nthink_time_s: 1.0\nmax_turns: 10\n")
    return config, f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "server.log"


def test_sigkill_mid_session_keeps_every_turn(study):
    config, db, log = study
    proc, port = start_server(config, db, log)
    base = f"http://127.0.0.1:{port}"
    link = {"study": "crash", "pid": "survivor", "sig": TokenSigner(SECRET).sign_link("crash", "survivor")}
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            r = http.post("/api/enter", json=link)
            token = r.json()["token"]
            h = {"X-Session-Token": token}
            http.post("/api/consent", headers=h, json={})
            http.post("/api/instructions", headers=h, json={})
            game = http.post("/api/games", headers=h, json={}).json()["game"]
            gid = game["game_id"]
            if not game["your_turn"]:  # the agent's opening is made at once; a read returns it
                game = http.get(f"/api/games/{gid}", headers=h).json()
            counts = [i["count"] for i in game["items"]]
            # Half a session: two full exchanges.
            view = game
            for message in ("first", "second"):
                view = http.post(f"/api/games/{gid}/act", headers=h,
                                 json={"kind": "propose", "split": counts, "message": message,
                                       "turn": view["turn"]}).json()
                assert view["your_turn"], view
            before = view["transcript"]
            assert len(before) >= 4
            # A third act: kill the server while the agent is still "thinking" (after the act is stored).
            stored = len(acts_in_db(db, gid))
            thread = threading.Thread(target=lambda: _ignore_errors(
                lambda: httpx.post(f"{base}/api/games/{gid}/act", headers=h, timeout=30,
                                   json={"kind": "insist", "split": counts, "message": "third",
                                         "turn": view["turn"]})))
            thread.start()
            deadline = time.monotonic() + 20
            while len(acts_in_db(db, gid)) == stored and time.monotonic() < deadline:
                time.sleep(0.02)
        kill(proc)
        thread.join(timeout=30)
        acts_at_kill = acts_in_db(db, gid)
        assert len(acts_at_kill) == stored + 1 and acts_at_kill[-1][1] == "human"  # reply still owed

        proc, _ = start_server(config, db, log, port=port)
        with httpx.Client(base_url=base, timeout=30) as http:
            # The study link resumes: a new token for the same participant, the same game, every turn intact.
            r = http.post("/api/enter", json=link)
            h = {"X-Session-Token": r.json()["token"]}
            state = r.json()["state"]
            assert state["stage"] == "negotiation" and state["game"]["game_id"] == gid
            resumed = state["game"]["transcript"]
            assert resumed[: len(before)] == before
            assert resumed[len(before)]["message"] == "third" and resumed[len(before)]["kind"] == "insist"
            # The owed reply is made after the restart; it shows once the agent's think time has passed.
            deadline = time.monotonic() + 20
            while resumed[-1]["speaker"] != "partner" and time.monotonic() < deadline:
                time.sleep(0.1)
                resumed = http.get(f"/api/games/{gid}", headers=h).json()["transcript"]
            assert resumed[-1]["speaker"] == "partner" and len(resumed) == len(before) + 2
            state["game"] = http.get(f"/api/games/{gid}", headers=h).json()
            # The old token still works too (the signing secret lives in the database).
            assert http.get("/api/state", headers={"X-Session-Token": token}).status_code == 200
            # Finish the session.
            view = state["game"]
            while view["status"] == "active":
                body = {"kind": "agree"} if view["can_agree"] else {"kind": "propose", "split": counts}
                body["turn"] = view["turn"]
                view = http.post(f"/api/games/{gid}/act", headers=h, json=body).json()
            assert view["outcome"]["result"] in ("deal", "turn_limit")
            r = http.post(f"/api/games/{gid}/survey", headers=h,
                          json={"fair": 3, "human_like": 3, "negotiate_again": 3})
            assert r.status_code == 200 and r.json()["completion_code"]
        final = acts_in_db(db, gid)
        assert final[: len(acts_at_kill)] == acts_at_kill
        assert [seq for seq, _, _ in final] == sorted({seq for seq, _, _ in final})
    finally:
        if proc.poll() is None:
            kill(proc)


def _ignore_errors(fn) -> None:
    try:
        fn()
    except httpx.HTTPError:
        pass
