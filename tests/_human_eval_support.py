"""Helpers shared by the human_eval tests: a study app on a temporary SQLite file and a client wrapper."""

from __future__ import annotations

import json
from pathlib import Path

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
