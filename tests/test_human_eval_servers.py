"""Several server processes over one SQLite file, and several studies on one server.

The processes are real ``parley serve`` subprocesses on loopback ports; participants reach them over HTTP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from _human_eval_support import ADMIN, SECRET, Participant, play_to_deal, start_server, study_config
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from parley.human_eval.config import AgentSpec, StudyConfigError
from parley.human_eval.db import Event, Game, StudyLock, make_engine
from parley.human_eval.security import TokenSigner
from parley.human_eval.server import create_server, load_study_configs, study_path, worker_pids

LINKS = TokenSigner(SECRET)


def _config(folder: Path, study: str = "multi", **extra) -> Path:
    settings = {"study": study, "agents": "[{name: boulware, partner: boulware}, {name: conceder, partner: conceder}]",
                "contexts": "{count: 3, seed: 1}", "think_time_s": 0, "sessions_per_participant": 1,
                "rate_per_s": 1000, "rate_burst": 1000, **extra}
    path = folder / f"{study}.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in settings.items()))
    return path


def _stop(proc: subprocess.Popen) -> None:
    """Stop a server started here: SIGTERM lets a supervisor stop its workers; SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class _Person:
    """One participant on one server, over HTTP."""

    def __init__(self, port: int, study: str, pid: str) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        r = self.http.post("/api/enter", json={"study": study, "pid": pid, "sig": LINKS.sign_link(study, pid)})
        assert r.status_code == 200, r.text
        self.headers = {"X-Session-Token": r.json()["token"]}

    def post(self, path: str, body=None) -> httpx.Response:
        return self.http.post(path, headers=self.headers, json={} if body is None else body)


@pytest.fixture
def two_servers(tmp_path):
    config = _config(tmp_path)
    db = f"sqlite:///{tmp_path / 'study.db'}"
    procs = []
    try:
        for i in range(2):
            procs.append(start_server(config, db, tmp_path / f"server{i}.log"))
        yield [port for _, port in procs], db
    finally:
        for proc, _ in procs:
            _stop(proc)


def test_assignment_stays_balanced_across_two_server_processes(two_servers):
    ports, db = two_servers
    n = 48  # 2 agents x 3 contexts x 2 move orders = 12 cells, 4 participants each
    with ThreadPoolExecutor(16) as pool:
        people = list(pool.map(lambda i: _Person(ports[i % 2], "multi", f"p{i}"), range(n)))
        for r in pool.map(lambda p: p.post("/api/consent"), people):
            assert r.status_code == 200, r.text
        for r in pool.map(lambda p: p.post("/api/instructions"), people):
            assert r.status_code == 200, r.text
    # Every participant asks for a negotiation at the same moment, half through each process.
    barrier = threading.Barrier(n)

    def start(person: _Person) -> httpx.Response:
        barrier.wait()
        return person.post("/api/games")

    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(start, people))
    assert [r.status_code for r in answers] == [200] * n, [r.text for r in answers if r.status_code != 200][:3]
    assert all(r.json()["stage"] == "negotiation" for r in answers)

    engine = make_engine(db)
    with Session(engine) as s:
        games = s.scalars(select(Game)).all()
        lock = s.get(StudyLock, "multi")
        starts = s.scalars(select(Event).where(Event.kind == "start")).all()
    engine.dispose()
    assert len(games) == n and len({g.participant_id for g in games}) == n  # one game each, none twice
    assert len(starts) == n and lock.assignments == n
    cells = Counter((g.agent, g.context_index, bool(g.human_first)) for g in games)
    every_cell = [cells[(a, c, f)] for a in ("boulware", "conceder") for c in range(3) for f in (True, False)]
    assert max(every_cell) - min(every_cell) <= 1, cells
    agents = Counter(g.agent for g in games)
    assert abs(agents["boulware"] - agents["conceder"]) <= 1


def test_acts_racing_through_two_processes_are_recorded_once(two_servers):
    ports, db = two_servers
    person = _Person(ports[0], "multi", "racer")
    other = httpx.Client(base_url=f"http://127.0.0.1:{ports[1]}", timeout=60)
    person.post("/api/consent")
    person.post("/api/instructions")
    view = person.post("/api/games").json()["game"]
    gid = view["game_id"]
    if not view["your_turn"]:
        view = person.http.get(f"/api/games/{gid}", headers=person.headers).json()
    counts = [i["count"] for i in view["items"]]

    def race(bodies: list[dict]) -> list[httpx.Response]:
        barrier = threading.Barrier(2)

        def send(args):
            client, body = args
            barrier.wait()
            return client.post(f"/api/games/{gid}/act", headers=person.headers, json=body)

        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(send, zip((person.http, other), bodies, strict=True)))

    # The same act sent through both processes (a retry that went to the other one): it stands once.
    same_rounds = 0
    for _ in range(3):
        if view["status"] != "active":
            break
        body = {"kind": "propose", "split": counts, "turn": view["turn"]}
        answers = race([body, body])
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        assert answers[0].json()["transcript"][: view["turn"] + 1] == answers[1].json()["transcript"][: view["turn"] + 1]
        view = person.http.get(f"/api/games/{gid}", headers=person.headers).json()
        same_rounds += 1
    assert same_rounds >= 1
    # Two different acts for the same turn: one is stored, the other refused.
    if view["status"] == "active":
        turn = view["turn"]
        keep_less = [max(0, c - 1) for c in counts]
        answers = race([{"kind": "propose", "split": counts, "turn": turn},
                        {"kind": "insist", "split": keep_less, "turn": turn}])
        codes = sorted(r.status_code for r in answers)
        assert codes == [200, 409], [r.text for r in answers]
        winner = next(r for r in answers if r.status_code == 200).json()
        stored = winner["transcript"][turn]
        assert stored["speaker"] == "you"
        loser = next(r for r in answers if r.status_code == 409).json()
        assert "turn" in loser["error"] or "changed" in loser["error"]

    engine = make_engine(db)
    with Session(engine) as s:
        events = s.scalars(select(Event).where(Event.game_id == gid).order_by(Event.seq)).all()
    engine.dispose()
    assert [e.seq for e in events] == list(range(len(events)))
    acts = [e for e in events if e.kind == "act"]
    assert [e.actor for e in acts] == [("human", "agent")[(i + (0 if view["you_move_first"] else 1)) % 2]
                                       for i in range(len(acts))]
    final = person.http.get(f"/api/games/{gid}", headers=person.headers).json()
    assert len(final["transcript"]) == len(acts)


def test_workers_option_serves_whole_sessions_from_several_processes(tmp_path):
    config = _config(tmp_path, "workers")
    db = f"sqlite:///{tmp_path / 'study.db'}"
    proc, port = start_server(config, db, tmp_path / "server.log", extra=("--workers", "2"))
    try:
        deadline = time.monotonic() + 30
        while len(worker_pids(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(worker_pids(proc.pid)) == 2

        def session(i: int) -> str:
            person = _Person(port, "workers", f"w{i}")
            person.post("/api/consent")
            person.post("/api/instructions")
            view = person.post("/api/games").json()["game"]
            while view["status"] == "active":
                if not view["your_turn"]:
                    view = person.http.get(f"/api/games/{view['game_id']}", headers=person.headers).json()
                    continue
                body = {"kind": "agree"} if view["can_agree"] else {"kind": "propose", "split": [
                    i["count"] for i in view["items"]]}
                view = person.post(f"/api/games/{view['game_id']}/act", {**body, "turn": view["turn"]}).json()
            r = person.post(f"/api/games/{view['game_id']}/survey", {"fair": 3, "human_like": 3, "negotiate_again": 3})
            assert r.status_code == 200, r.text
            return r.json()["completion_code"]

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(session, range(6)))
        assert len(set(codes)) == 6
        status = httpx.get(f"http://127.0.0.1:{port}/api/admin/status", headers={"X-Admin-Token": ADMIN}).json()
        assert status["games"] == 6 and status["surveys"] == 6
        # A worker killed with SIGKILL: the other one goes on serving, and the supervisor starts a new one.
        before = worker_pids(proc.pid)
        os.kill(before[0], signal.SIGKILL)
        later = [session(6 + i) for i in range(2)]
        assert len(set(later + codes)) == 8
        deadline = time.monotonic() + 30
        while (len(worker_pids(proc.pid)) < 2 or before[0] in worker_pids(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        after = worker_pids(proc.pid)
        assert len(after) == 2 and before[0] not in after
    finally:
        workers = worker_pids(proc.pid)
        _stop(proc)
        for pid in workers:  # a worker the supervisor did not stop
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ------------------------------------------------------------------------------ several studies


@pytest.fixture
def two_studies(tmp_path):
    alpha = study_config(study="alpha", agents=(AgentSpec("boulware", partner="boulware"),))
    beta = study_config(study="beta", agents=(AgentSpec("conceder", partner="conceder"),), max_turns=6)
    app = create_server([alpha, beta], db=f"sqlite:///{tmp_path / 'study.db'}", admin_token=ADMIN)
    with TestClient(app) as client:
        yield client


def _sign(client: TestClient, study: str, pid: str) -> dict:
    return {"study": study, "pid": pid, "sig": client.app.state.signer.sign_link(study, pid)}


def test_one_server_hosts_several_studies_each_with_its_own_config(two_studies):
    client = two_studies
    assert client.get("/healthz").json() == {"ok": True, "studies": ["alpha", "beta"]}
    # Entry at the root goes to the study the link names; the token then routes every later call.
    a = Participant(client, "same-person", study="alpha")
    b = Participant(client, "same-person", study="beta")
    ga, gb = a.begin(), b.begin()
    assert ga["max_turns"] == 10 and gb["max_turns"] == 6  # each study's own config
    # The same calls under each study's own path.
    assert client.get(f"{study_path('beta')}/api/state", headers=b.headers).json()["study"] == "beta"
    # A token of one study does not open the other's API.
    assert client.get(f"{study_path('alpha')}/api/state", headers=b.headers).status_code == 401
    final = play_to_deal(a, ga)
    a.call("POST", f"/api/games/{final['game_id']}/survey", {"fair": 4, "human_like": 4, "negotiate_again": 4})
    # Each study's admin view shows its own agents and games only.
    admin = {"X-Admin-Token": ADMIN}
    alpha = client.get(f"{study_path('alpha')}/api/admin/status", headers=admin).json()
    beta = client.get(f"{study_path('beta')}/api/admin/status", headers=admin).json()
    assert (alpha["study"], list(alpha["agents"]), alpha["surveys"]) == ("alpha", ["boulware"], 1)
    assert (beta["study"], list(beta["agents"]), beta["surveys"]) == ("beta", ["conceder"], 0)
    listed = client.get("/api/admin/studies", headers=admin).json()["studies"]
    assert [s["study"] for s in listed] == ["alpha", "beta"] and listed[1]["path"] == "/studies/beta/"
    assert client.get("/api/admin/studies").status_code == 403


def test_study_links_route_to_their_study(two_studies):
    client = two_studies
    r = client.get("/?study=beta&pid=x1&sig=abc", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/studies/beta/?study=beta&pid=x1&sig=abc"
    page = client.get("/studies/beta/")
    assert page.status_code == 200 and 'src="static/app.js"' in page.text
    assert client.get("/studies/beta/static/app.js").status_code == 200
    assert client.get("/?study=gamma&pid=x1").status_code == 404
    r = client.post("/api/enter", json=_sign(client, "gamma", "x1"))
    assert r.status_code == 404 and "alpha, beta" in r.json()["error"]
    assert client.get("/api/state").status_code == 401
    assert client.post("/api/enter", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    # A link signed for one study does not let its pid into the other.
    link = {**_sign(client, "alpha", "x2"), "study": "beta"}
    assert client.post("/api/enter", json=link).status_code == 403


def test_study_configs_from_files_and_folders_with_clear_errors(tmp_path):
    folder = tmp_path / "studies"
    folder.mkdir()
    _config(folder, "one")
    _config(folder, "two")
    (folder / "notes.txt").write_text("not a config")
    assert [c.study for c in load_study_configs([folder])] == ["one", "two"]
    assert [c.think_time_s for c in load_study_configs([folder / "one.yaml"], think_time_s=0.5)] == [0.5]
    with pytest.raises(StudyConfigError, match="same study one"):
        load_study_configs([folder, folder / "one.yaml"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StudyConfigError, match="holds no study config"):
        load_study_configs([empty])
    with pytest.raises(StudyConfigError, match="no study config at"):
        load_study_configs([tmp_path / "missing.yaml"])
    with pytest.raises(ValueError, match="at least one study"):
        create_server([])
    from typer.testing import CliRunner

    from parley.cli import app as cli

    result = CliRunner().invoke(cli, ["serve", "--agents", str(folder), "--agents", str(folder / "one.yaml"),
                                      "--db", str(tmp_path / "x.db"), "--admin-token", ADMIN])
    assert result.exit_code == 2 and "same study one" in result.output
