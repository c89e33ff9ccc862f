"""The human oracle: queries go into a :class:`~parley.oracles.queue.QueryQueue`; people answer them.

``answer`` submits the queries (resubmitting a stored query is a no-op), then waits up to
``wait_seconds`` for answers, polling the queue. Queries without an answer by then come back as
``None``; the targeted-data-acquisition loop keeps them pending and asks again next round, by which
time annotators may have answered them (``parley oracle queue answer ...`` or a web page on the queue).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from parley.oracles.base import Oracle, OracleAnswer, OracleQuery
from parley.oracles.queue import QueryQueue


class HumanOracle(Oracle):
    """Answers come from people through a query queue (a SQLite file)."""

    name = "human"

    def __init__(self, queue: QueryQueue | str | Path, *, wait_seconds: float = 0.0, poll_interval: float = 1.0,
                 batch: str | None = None) -> None:
        if wait_seconds < 0 or poll_interval <= 0:
            raise ValueError("wait_seconds must be >= 0 and poll_interval > 0")
        self.queue = queue if isinstance(queue, QueryQueue) else QueryQueue(queue)
        self.wait_seconds = float(wait_seconds)
        self.poll_interval = float(poll_interval)
        self.batch = batch

    def answer(self, queries: Sequence[OracleQuery]) -> list[OracleAnswer | None]:
        ids = self.queue.submit(queries, batch=self.batch)
        deadline = time.monotonic() + self.wait_seconds
        found = self.queue.answers(ids)
        while len(found) < len(set(ids)) and time.monotonic() < deadline:
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))
            found = self.queue.answers(ids)
        return [found.get(qid) for qid in ids]
