"""The expert-oracle page: people answer oracle queries in the browser (``/oracle``).

An oracle query (:class:`parley.oracles.base.OracleQuery`) is a negotiation state in which the expert
picks the responder's next act. :func:`mount_oracle` adds the page and its API to a study app; the
queue is any object with the methods of :class:`parley.oracles.queue.QueryQueue`:

* ``pending(limit=None)`` -> items with ``.id`` and ``.query`` (oldest first)
* ``get(query_id)`` -> such an item (KeyError when unknown)
* ``answer(query_id, action, *, acceptable=None, counter_offer=None, annotator="")`` -> validates the act
  against the rules (raising a ``ValueError`` subclass for an illegal or repeated answer) and stores it
* ``stats()`` -> ``{"pending": n, "answered": n, "total": n}``

``parley serve --oracle-queue runs/tda/oracle_queue.sqlite`` mounts it with the SQLite queue. API
(header ``X-Oracle-Token`` or ``Authorization: Bearer``; the token defaults to the admin token):

``GET  /api/oracle/next?skip=ID,ID``  the oldest pending query not skipped, or ``{"query": null}``
``POST /api/oracle/{id}/answer``      ``{kind, split?, acceptable?, annotator?}`` -> the stored answer
"""

from __future__ import annotations

from typing import Literal

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from parley.envs.negotiation import ITEM_NAMES, encode_act, verbalize_act


class OracleAnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["propose", "insist", "agree", "walk_away"]
    split: list[StrictInt] | None = Field(default=None, min_length=3, max_length=3)
    acceptable: StrictBool | None = None
    annotator: str = Field(default="", max_length=64)


def query_view(item) -> dict:
    """What the annotator sees: both sides' values, the dialogue so far from the responder's side."""
    q = item.query
    r = q.responder
    speaker = q.first_player
    history = []
    for action in q.history:
        history.append({"speaker": "you" if speaker == r else "them", "text": verbalize_act(action, q.counts)})
        speaker = 1 - speaker
    mask = q.legal_mask()
    offer = q.standing_offer_for_responder()
    return {
        "query_id": item.id,
        "items": [{"name": n, "count": c, "your_value": mine, "their_value": theirs}
                  for n, c, mine, theirs in zip(ITEM_NAMES, q.counts, q.values[r], q.values[1 - r], strict=True)],
        "history": history,
        "turn": len(q.history) + 1,
        "max_turns": q.max_turns,
        "standing_offer": None if offer is None else {
            "you_get": list(offer), "your_points": sum(v * k for v, k in zip(q.values[r], offer, strict=True))},
        "can_agree": bool(mask[encode_act("agree")]),
    }


def mount_oracle(app: FastAPI, queue, *, token: str | None) -> None:
    """Add ``/oracle`` and ``/api/oracle/...`` to ``app``, answering queries from ``queue``."""
    from parley.human_eval.app import _check_secret_header, page_file
    from parley.human_eval.service import Conflict, InvalidRequest, NotFound

    async def annotator(request: Request) -> None:
        _check_secret_header(request, token, "oracle")

    @app.get("/oracle", include_in_schema=False)
    def oracle_page() -> FileResponse:
        return FileResponse(page_file("oracle.html", getattr(app.state, "pages_dir", None)), media_type="text/html")

    @app.get("/api/oracle/next", dependencies=[Depends(annotator)])
    def next_query(skip: str = "") -> dict:
        skipped = {s for s in skip.split(",") if s}
        stats = queue.stats()
        for item in queue.pending(limit=len(skipped) + 1):
            if item.id not in skipped:
                return {"query": query_view(item), "stats": stats}
        return {"query": None, "stats": stats}

    @app.post("/api/oracle/{query_id}/answer", dependencies=[Depends(annotator)])
    def answer(query_id: str, body: OracleAnswerRequest) -> dict:
        try:
            item = queue.get(query_id)
        except KeyError:
            raise NotFound(f"no oracle query {query_id!r}") from None
        if getattr(item, "status", "pending") != "pending":
            raise Conflict(f"query {query_id} has already been answered")
        if (body.kind in ("propose", "insist")) != (body.split is not None):
            raise InvalidRequest("propose and insist need 'split' (the items the responder keeps); "
                                 "agree and walk_away take none")
        counts = item.query.counts
        if body.split is not None and any(not 0 <= k <= c for k, c in zip(body.split, counts, strict=True)):
            raise InvalidRequest(f"split {body.split} must keep 0..count of each item; counts are {list(counts)}")
        action = encode_act(body.kind, body.split)
        try:
            stored = queue.answer(query_id, action, acceptable=body.acceptable, annotator=body.annotator)
        except ValueError as err:  # IllegalOracleAnswerError, or answered meanwhile
            raise InvalidRequest(str(err)) from None
        return {"query_id": query_id, "action": stored.action, "text": verbalize_act(stored.action, counts),
                "stats": queue.stats()}
