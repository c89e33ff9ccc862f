"""The expert-oracle page's API on the SQLite query queue of parley.oracles."""

from __future__ import annotations

import pytest
from _human_eval_support import ADMIN, study_config
from fastapi.testclient import TestClient

from parley.envs.negotiation import encode_act
from parley.human_eval.app import create_app
from parley.oracles import queue as queue_mod
from parley.oracles.base import OracleQuery


@pytest.fixture
def setup(tmp_path):
    queue = queue_mod.QueryQueue(tmp_path / "queue.sqlite")
    with_offer = OracleQuery((1, 2, 2), ((2, 2, 2), (6, 1, 1)), first_player=0,
                             history=(encode_act("propose", (1, 1, 1)),), responder=1)
    opening = OracleQuery((1, 2, 2), ((2, 2, 2), (6, 1, 1)), first_player=1, history=(), responder=1)
    ids = queue.submit([with_offer, opening])
    app = create_app(study_config(), db=f"sqlite:///{tmp_path / 's.db'}", admin_token=ADMIN, oracle_queue=queue,
                     oracle_token="oracle-token-0123456789")
    return TestClient(app), queue, ids


def test_oracle_page_serves_and_answers_queries(setup):
    client, queue, ids = setup
    h = {"X-Oracle-Token": "oracle-token-0123456789"}
    assert client.get("/oracle").status_code == 200
    assert client.get("/api/oracle/next").status_code == 403
    assert client.get("/api/oracle/next", headers={"X-Oracle-Token": ADMIN}).status_code == 403

    first = client.get("/api/oracle/next", headers=h).json()
    q = first["query"]
    assert q["query_id"] == ids[0] and first["stats"]["pending"] == 2
    assert [i["your_value"] for i in q["items"]] == [6, 1, 1] and [i["their_value"] for i in q["items"]] == [2, 2, 2]
    assert q["history"] == [{"speaker": "them", "text": "I'd like the book, a hat and a ball; you take the rest."}]
    assert q["standing_offer"] == {"you_get": [0, 1, 1], "your_points": 2} and q["can_agree"]

    url = f"/api/oracle/{ids[0]}/answer"
    r = client.post(url, headers=h, json={"kind": "propose", "split": [2, 0, 0]})
    assert r.status_code == 422 and "0..count" in r.json()["error"]
    r = client.post(url, headers=h, json={"kind": "agree", "acceptable": False})
    assert r.status_code == 422 and "not acceptable" in r.json()["error"]
    r = client.post(url, headers=h, json={"kind": "insist", "split": [1, 0, 0], "acceptable": False,
                                          "annotator": "ana"})
    assert r.status_code == 200 and r.json()["stats"]["answered"] == 1
    stored = queue.answers([ids[0]])[ids[0]]
    assert stored.action == encode_act("insist", (1, 0, 0)) and stored.acceptable is False
    assert client.post(url, headers=h, json={"kind": "walk_away"}).status_code == 409

    second = client.get("/api/oracle/next", headers=h).json()["query"]
    assert second["query_id"] == ids[1] and not second["can_agree"] and second["standing_offer"] is None
    r = client.post(f"/api/oracle/{ids[1]}/answer", headers=h, json={"kind": "agree"})
    assert r.status_code == 422  # nothing to agree to
    skipped = client.get(f"/api/oracle/next?skip={ids[1]}", headers=h).json()
    assert skipped["query"] is None
    assert client.post("/api/oracle/unknown/answer", headers=h, json={"kind": "walk_away"}).status_code == 404
