"""The study app on PostgreSQL: a whole session and racing requests, on a throwaway local cluster.

Marked slow: it runs ``initdb`` and ``postgres`` (found on PATH or /usr/local/bin, run as ``nobody``
when the tests run as root) on a loopback port, and needs the ``psycopg`` driver.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _human_eval_support import ADMIN, Participant, free_port, play_to_deal, study_config
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from parley.human_eval.app import create_app
from parley.human_eval.db import Game, make_engine

pytestmark = pytest.mark.slow


def _binary(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/local/bin/{name}" if Path(f"/usr/local/bin/{name}").exists() else None)


@pytest.fixture
def postgres_url():
    pytest.importorskip("psycopg")
    initdb, postgres = _binary("initdb"), _binary("postgres")
    if not initdb or not postgres:
        pytest.skip("PostgreSQL server binaries (initdb, postgres) are not installed")
    # Not under pytest's tmp_path: the server user must be able to reach the folder.
    root = Path(tempfile.mkdtemp(prefix="parley-pg-"))
    prefix = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(root, "nobody")
        prefix = ["runuser", "-u", "nobody", "--"]
    subprocess.run(prefix + [initdb, "-D", str(root / "data"), "-U", "study", "--auth=trust"], check=True,
                   capture_output=True)
    port = free_port()
    proc = subprocess.Popen(prefix + [postgres, "-D", str(root / "data"), "-k", str(root), "-h", "127.0.0.1",
                                      "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import psycopg

    url = f"postgresql://study@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(url).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)
    yield url.replace("postgresql://", "postgresql+psycopg://")
    proc.terminate()
    proc.wait(timeout=30)
    shutil.rmtree(root, ignore_errors=True)


def test_full_session_and_racing_acts_on_postgres(postgres_url):
    client = TestClient(create_app(study_config(sessions_per_participant=2), db=postgres_url, admin_token=ADMIN))
    p = Participant(client, "pg-1")
    final = play_to_deal(p, p.begin())
    assert final["outcome"]["result"] == "deal"
    code = p.call("POST", f"/api/games/{final['game_id']}/survey",
                  {"fair": 3, "human_like": 2, "negotiate_again": 4})["completion_code"]
    rows = client.get("/api/admin/export/games.jsonl", headers={"X-Admin-Token": ADMIN}).text.splitlines()
    assert len(rows) == 1 and code in rows[0]

    # Requests racing to make the same move (retries of one act): it is stored once.
    game = p.call("POST", "/api/games", {})["game"]
    body = {"kind": "propose", "split": [i["count"] for i in game["items"]], "turn": game["turn"]}
    url = f"/api/games/{game['game_id']}/act"
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: client.post(url, headers=p.headers, json=body).status_code, range(4)))
    assert set(codes) <= {200, 409} and 200 in codes
    view = p.call("GET", f"/api/games/{game['game_id']}")
    assert [t["speaker"] for t in view["transcript"]].count("you") == 1


def test_assignment_is_balanced_across_two_apps_on_one_postgres_database(postgres_url):
    """Two apps with their own engines and in-process locks stand for two server processes."""
    config = study_config(contexts=study_config().contexts[:2])
    clients = [TestClient(create_app(config, db=postgres_url, admin_token=ADMIN)) for _ in range(2)]
    n = 32  # 2 agents x 2 contexts x 2 move orders = 8 cells, 4 each
    people = [Participant(clients[i % 2], f"pg-{i}") for i in range(n)]
    for person in people:
        person.call("POST", "/api/consent", {})
        person.call("POST", "/api/instructions", {})
    barrier = threading.Barrier(n)

    def start(person):
        barrier.wait()
        return person.client.post("/api/games", headers=person.headers, json={})

    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(start, people))
    assert [r.status_code for r in answers] == [200] * n
    engine = make_engine(postgres_url)
    with Session(engine) as s:
        games = s.scalars(select(Game)).all()
    engine.dispose()
    assert len(games) == n and len({g.participant_id for g in games}) == n
    cells = Counter((g.agent, g.context_index, bool(g.human_first)) for g in games)
    assert len(cells) == 8 and max(cells.values()) - min(cells.values()) <= 1, cells
