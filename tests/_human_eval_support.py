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


class Participant:
    """One participant driving the API; keeps every response body it receives."""

    def __init__(self, client: TestClient, pid: str, study: str = "teststudy") -> None:
        self.client = client
        self.responses: list[str] = []
        r = client.post("/api/enter", json={"study": study, "pid": pid})
        assert r.status_code == 200, r.text
        self.responses.append(r.text)
        self.token = r.json()["token"]
        self.state = r.json()["state"]

    @property
    def headers(self) -> dict:
        return {"X-Session-Token": self.token}

    def call(self, method: str, path: str, body=None, expect: int = 200) -> dict:
        r = self.client.request(method, path, headers=self.headers, json=body)
        self.responses.append(r.text)
        assert r.status_code == expect, (r.status_code, r.text)
        return r.json()

    def begin(self) -> dict:
        self.call("POST", "/api/consent", {})
        self.call("POST", "/api/instructions", {})
        self.state = self.call("POST", "/api/games", {})
        assert self.state["stage"] == "negotiation"
        return self.state["game"]

    def act(self, game_id: int, kind: str, split=None, message=None, expect: int = 200) -> dict:
        body = {"kind": kind}
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


def start_server(config: Path, db: str, log: Path, port: int | None = None) -> tuple[subprocess.Popen, int]:
    """``parley serve`` as a subprocess on a free loopback port; returns once /healthz answers."""
    port = port or free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PARLEY_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "serve", "--agents", str(config), "--db", db, "--host", "127.0.0.1",
         "--port", str(port), "--admin-token", ADMIN],
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
