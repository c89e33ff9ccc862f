"""A SQLite-backed queue of oracle queries that people answer.

The human oracle (:class:`parley.oracles.human.HumanOracle`) puts queries here; annotators answer them
from the command line (``parley oracle queue ...``) or from any frontend built on this small API (the
human-evaluation web app mounts a page on it). Only the standard library's ``sqlite3`` is used.

Schema (one file; created on first use)::

    CREATE TABLE oracle_queries (
        id          TEXT PRIMARY KEY,   -- OracleQuery.query_id: a hash of the state, so resubmitting is a no-op
        created_at  REAL NOT NULL,      -- unix time
        batch       TEXT,               -- free label, e.g. "round-2"
        status      TEXT NOT NULL,      -- 'pending' or 'answered'
        query_json  TEXT NOT NULL       -- OracleQuery.to_dict(): counts, values, first_player, history,
                                        --   responder, max_turns, meta
    );
    CREATE TABLE oracle_answers (
        query_id      TEXT PRIMARY KEY REFERENCES oracle_queries(id),
        action        INTEGER NOT NULL, -- action index 0..251 (see parley.envs.negotiation)
        acceptable    INTEGER,          -- NULL, 0 or 1: would the responder accept the standing proposal?
        counter_offer TEXT,             -- NULL or JSON [books, hats, balls] the responder would keep
        annotator     TEXT,
        answered_at   REAL NOT NULL
    );

API::

    queue = QueryQueue("runs/tda/oracle_queue.sqlite")
    ids = queue.submit(queries, batch="round-1")
    for item in queue.pending():            # QueuedQuery(id, query, created_at, batch)
        print(item.query.describe())
    queue.answer(ids[0], encode_act("propose", (1, 0, 2)), acceptable=False, annotator="ana")
    queue.answers(ids)                      # {id: OracleAnswer} for the answered ones

:meth:`QueryQueue.answer` validates the answer against the rules first; an illegal act raises
:class:`~parley.oracles.base.IllegalOracleAnswerError` and nothing is stored. A query is answered once.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from parley.envs.negotiation import encode_act
from parley.oracles.base import IllegalOracleAnswerError, OracleAnswer, OracleQuery, validate_answer

SCHEMA = """
CREATE TABLE IF NOT EXISTS oracle_queries (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    batch TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    query_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS oracle_answers (
    query_id TEXT PRIMARY KEY REFERENCES oracle_queries(id),
    action INTEGER NOT NULL,
    acceptable INTEGER,
    counter_offer TEXT,
    annotator TEXT,
    answered_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS oracle_queries_status ON oracle_queries(status);
"""


@dataclass(frozen=True)
class QueuedQuery:
    """A query as stored: its id, the query, when it was submitted and its batch label."""

    id: str
    query: OracleQuery
    created_at: float
    batch: str | None
    status: str


class QueryQueue:
    """The query queue in one SQLite file (see the module docstring for the schema)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self):
        db = sqlite3.connect(self.path, timeout=30)
        try:
            yield db
            db.commit()
        finally:
            db.close()

    def submit(self, queries: Iterable[OracleQuery], batch: str | None = None) -> list[str]:
        """Store queries (already-stored ones are left as they are); return their ids in order."""
        ids = []
        now = time.time()
        with self._connect() as db:
            for query in queries:
                ids.append(query.query_id)
                db.execute("INSERT OR IGNORE INTO oracle_queries (id, created_at, batch, status, query_json) "
                           "VALUES (?, ?, ?, 'pending', ?)", (query.query_id, now, batch, json.dumps(query.to_dict())))
        return ids

    def _row_to_item(self, row) -> QueuedQuery:
        qid, created, batch, status, payload = row
        return QueuedQuery(qid, OracleQuery.from_dict(json.loads(payload)), created, batch, status)

    def get(self, query_id: str) -> QueuedQuery:
        """The stored query ``query_id``; KeyError when there is none."""
        with self._connect() as db:
            row = db.execute("SELECT id, created_at, batch, status, query_json FROM oracle_queries WHERE id = ?",
                             (query_id,)).fetchone()
        if row is None:
            raise KeyError(f"no query {query_id!r} in {self.path}")
        return self._row_to_item(row)

    def pending(self, limit: int | None = None) -> list[QueuedQuery]:
        """Unanswered queries, oldest first."""
        return self.list(status="pending", limit=limit)

    def list(self, status: str | None = None, limit: int | None = None) -> list[QueuedQuery]:
        """Stored queries, oldest first, optionally only ``'pending'`` or ``'answered'`` ones."""
        if status not in (None, "pending", "answered"):
            raise ValueError(f"status must be 'pending', 'answered' or None, got {status!r}")
        sql = "SELECT id, created_at, batch, status, query_json FROM oracle_queries"
        args: tuple = ()
        if status is not None:
            sql += " WHERE status = ?"
            args = (status,)
        sql += " ORDER BY created_at, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._connect() as db:
            return [self._row_to_item(row) for row in db.execute(sql, args).fetchall()]

    def answer(self, query_id: str, action: int, *, acceptable: bool | None = None,
               counter_offer: Sequence[int] | None = None, annotator: str = "") -> OracleAnswer:
        """Record an answer after checking it against the rules; illegal answers raise and are not stored."""
        item = self.get(query_id)
        if item.status == "answered":
            raise ValueError(f"query {query_id} has already been answered")
        answer = OracleAnswer(int(action), acceptable, None if counter_offer is None else tuple(int(k) for k in counter_offer),
                              f"human:{annotator}" if annotator else "human")
        validate_answer(item.query, answer)
        with self._connect() as db:
            db.execute("INSERT INTO oracle_answers (query_id, action, acceptable, counter_offer, annotator, answered_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (query_id, answer.action, None if acceptable is None else int(bool(acceptable)),
                        None if answer.counter_offer is None else json.dumps(list(answer.counter_offer)),
                        annotator, time.time()))
            db.execute("UPDATE oracle_queries SET status = 'answered' WHERE id = ?", (query_id,))
        return answer

    def answers(self, query_ids: Iterable[str]) -> dict[str, OracleAnswer]:
        """The recorded answers for those of ``query_ids`` that have one."""
        ids = list(query_ids)
        found: dict[str, OracleAnswer] = {}
        with self._connect() as db:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute("SELECT query_id, action, acceptable, counter_offer, annotator FROM oracle_answers "
                                  f"WHERE query_id IN ({marks})", chunk).fetchall()
                for qid, action, acceptable, counter, annotator in rows:
                    found[qid] = OracleAnswer(int(action), None if acceptable is None else bool(acceptable),
                                              None if counter is None else tuple(json.loads(counter)),
                                              f"human:{annotator}" if annotator else "human")
        return found

    def stats(self) -> dict[str, int]:
        with self._connect() as db:
            rows = dict(db.execute("SELECT status, COUNT(*) FROM oracle_queries GROUP BY status").fetchall())
        return {"pending": rows.get("pending", 0), "answered": rows.get("answered", 0),
                "total": sum(rows.values())}


_ACT_PATTERN = re.compile(r"^\s*(propose|insist|agree|walk_away|walk away|deal|no deal)\b(.*)$", re.IGNORECASE)


def parse_act_text(text: str) -> int:
    """An action index from text such as ``"propose 2 0 1"``, ``"insist 1,1,0"``, ``"agree"``, ``"walk_away"``.

    The three numbers are what the responder keeps (books, hats, balls). Raises IllegalOracleAnswerError
    with the accepted forms when the text is not one of them.
    """
    forms = "'propose B H L', 'insist B H L' (items you keep), 'agree' or 'walk_away'"
    match = _ACT_PATTERN.match(text or "")
    if not match:
        raise IllegalOracleAnswerError(f"cannot read the act {text!r}; write {forms}")
    kind = match.group(1).lower().replace(" ", "_")
    kind = {"deal": "agree", "no_deal": "walk_away"}.get(kind, kind)
    rest = [t for t in re.split(r"[\s,()]+", match.group(2)) if t]
    if kind in ("agree", "walk_away"):
        if rest:
            raise IllegalOracleAnswerError(f"{kind} takes no numbers; write {forms}")
        return encode_act(kind)
    if len(rest) != 3 or not all(t.isdigit() for t in rest):
        raise IllegalOracleAnswerError(f"{kind} needs three item counts (books hats balls) you keep; write {forms}")
    try:
        return encode_act(kind, tuple(int(t) for t in rest))
    except ValueError as err:
        raise IllegalOracleAnswerError(f"{err}; write {forms}") from None
