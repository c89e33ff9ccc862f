"""Helpers shared by the human_eval tests: a study app on a temporary SQLite file and a client wrapper."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from parley.envs.negotiation import Context
from parley.human_eval.app import create_app
from parley.human_eval.config import AgentSpec, StudyConfig

ADMIN = "admin-token-for-tests-0123456789"
# The token secret of servers started by start_server, so tests can sign their recruitment links.
SECRET = "secret-for-tests-0123456789abcdef"
# The agent values (6, 1, 1) cannot be confused with any split or count (counts are at most 4).
LEAK_CONTEXT = Context((1, 2, 2), ((2, 2, 2), (6, 1, 1)))


def study_config(**overrides) -> StudyConfig:
    base = dict(study="teststudy", agents=(AgentSpec("boulware", partner="boulware"),
                                          AgentSpec("conceder", partner="conceder")),
                think_time_s=0.0, rate_burst=1000, rate_per_s=1000.0)
    base.update(overrides)
    return StudyConfig(**base)


def make_client(tmp_path: Path, config: StudyConfig | None = None, **app_kwargs) -> TestClient:
    app = create_app(config or study_config(), db=f"sqlite:///{tmp_path / 'study.db'}", admin_token=ADMIN,
                     **app_kwargs)
    return TestClient(app)


def signed_link(client: TestClient, study: str, pid: str) -> dict:
    """The body ``/api/enter`` gets from a recruitment link signed by this app's secret."""
    return {"study": study, "pid": pid, "sig": client.app.state.signer.sign_link(study, pid)}


class Participant:
    """One participant driving the API; keeps every response body it receives and the latest view of
    each game (whose ``turn`` its acts carry)."""

    def __init__(self, client: TestClient, pid: str, study: str = "teststudy", **link) -> None:
        self.client = client
        self.responses: list[str] = []
        self.views: dict[int, dict] = {}
        r = client.post("/api/enter", json={**signed_link(client, study, pid), **link})
        assert r.status_code == 200, r.text
        self.responses.append(r.text)
        self.token = r.json()["token"]
        self.state = r.json()["state"]
        self._remember(self.state)

    def _remember(self, body) -> None:
        if isinstance(body, dict):
            game = body.get("game") if "game" in body else None
            for view in (body, game):
                if isinstance(view, dict) and "game_id" in view and "turn" in view:
                    self.views[view["game_id"]] = view

    @property
    def headers(self) -> dict:
        return {"X-Session-Token": self.token}

    def call(self, method: str, path: str, body=None, expect: int = 200) -> dict:
        r = self.client.request(method, path, headers=self.headers, json=body)
        self.responses.append(r.text)
        assert r.status_code == expect, (r.status_code, r.text)
        if r.status_code == 200:
            self._remember(r.json())
        return r.json()

    def begin(self) -> dict:
        self.call("POST", "/api/consent", {})
        self.call("POST", "/api/instructions", {})
        self.state = self.call("POST", "/api/games", {})
        assert self.state["stage"] == "negotiation"
        return self.state["game"]

    def act(self, game_id: int, kind: str, split=None, message=None, expect: int = 200, turn=None) -> dict:
        if turn is None:
            turn = self.views[game_id]["turn"] if game_id in self.views else self.call(
                "GET", f"/api/games/{game_id}")["turn"]
        body = {"kind": kind, "turn": turn}
        if split is not None:
            body["split"] = split
        if message is not None:
            body["message"] = message
        return self.call("POST", f"/api/games/{game_id}/act", body, expect=expect)


def play_to_deal(p: Participant, game: dict) -> dict:
    """Ask for everything until the partner makes an offer, then agree to it."""
    view = game
    for _ in range(game["max_turns"]):
        if view["status"] != "active":
            return view
        if view["can_agree"]:
            return p.act(view["game_id"], "agree")
        view = p.act(view["game_id"], "propose", [i["count"] for i in view["items"]])
    return view


def walk_json(value, visit) -> None:
    visit(value)
    if isinstance(value, dict):
        for k, v in value.items():
            visit(k)
            walk_json(v, visit)
    elif isinstance(value, list):
        for v in value:
            walk_json(v, visit)


def loads(text: str):
    return json.loads(text)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeClock:
    """A clock for StudyService that moves only when a test sets ``now``."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def start_server(config: Path, db: str, log: Path, port: int | None = None,
                 extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, int]:
    """``parley serve`` as a subprocess on a free loopback port; returns once /healthz answers.

    ``extra`` are further command-line arguments (``--workers 2``, more ``--agents``)."""
    port = port or free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PARLEY_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "serve", "--agents", str(config), "--db", db, "--host", "127.0.0.1",
         "--port", str(port), "--admin-token", ADMIN, "--secret", SECRET, *extra],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
