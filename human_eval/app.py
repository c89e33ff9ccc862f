"""The FastAPI web app of a study: participant pages and API, admin status, export and results.

Build it with :func:`create_app` (``parley serve`` does this and runs it under uvicorn)::

    from parley.human_eval import StudyConfig, create_app
    app = create_app(StudyConfig.from_yaml("agents.yaml"), db="sqlite:///study.db", admin_token="...")

Participant API (JSON; every request after ``/api/enter`` carries ``X-Session-Token``):

========================================  ====================================================
``POST /api/enter``                       ``{study, pid}`` -> ``{token, state}`` (resumes by pid)
``GET  /api/state``                       where the participant is in the flow
``POST /api/consent``, ``/api/instructions``  flow steps
``POST /api/games``                       start the next negotiation (balanced assignment)
``GET  /api/games/{id}``                  the negotiation as the participant may see it
``POST /api/games/{id}/act``              ``{kind, split?, message?, turn?}`` -> the view after the agent's reply
``POST /api/games/{id}/say``              text protocol: ``{text, turn}`` -> the view after the agent's reply
``POST /api/games/{id}/end_talk``         text protocol: ``{turn}`` ends the talk (``<selection>``)
``POST /api/games/{id}/select``           text protocol: ``{split, turn}`` (``split`` null: no agreement)
``POST /api/games/{id}/survey``           ``{fair, human_like, negotiate_again, comment}`` -> completion code
========================================  ====================================================

Admin API (``X-Admin-Token`` or ``Authorization: Bearer``): ``/api/admin/status``,
``/api/admin/export/{games|transcripts|events|surveys|participants}.{jsonl|csv}``, ``/api/admin/results``,
``/api/admin/plots/{name}.png``, ``POST /api/admin/links`` (signed recruitment links),
``/api/admin/bonuses.csv``, ``/api/admin/games`` and ``/api/admin/games/{id}/replay`` (a game turn by
turn), ``/api/admin/corpus.txt`` (the games in the corpus format, see :mod:`parley.human_eval.corpus_export`). The pages are ``/`` (participants), ``/admin`` and, when an oracle
queue is attached, ``/oracle`` (see :mod:`parley.human_eval.oracle_page`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from sqlalchemy.engine import Engine

from parley.envs.negotiation import IllegalActionError
from parley.human_eval import report
from parley.human_eval.config import StudyConfig
from parley.human_eval.corpus_export import corpus_text
from parley.human_eval.db import Setting, make_engine
from parley.human_eval.security import Allowlist, RateLimiter, TokenError, TokenSigner, new_secret
from parley.human_eval.service import NotAllowed, NotFound, StudyError, StudyService

log = logging.getLogger("parley.human_eval")

TOKEN_HEADER = "X-Session-Token"
ADMIN_HEADER = "X-Admin-Token"
MAX_BODY_BYTES = 64 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnterRequest(_Body):
    study: str = Field(min_length=1, max_length=64)
    pid: str = Field(min_length=1, max_length=128)
    # The recruitment link's signature (entry: signed), and a crowd platform's study and session ids
    # (Prolific's STUDY_ID and SESSION_ID, MTurk's hitId and assignmentId).
    sig: str | None = Field(default=None, max_length=64)
    study_id: str | None = Field(default=None, max_length=64)
    session_id: str | None = Field(default=None, max_length=64)


class LinksRequest(_Body):
    pids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(min_length=1, max_length=10_000)
    base_url: str = Field(default="", max_length=512)


class ComprehensionRequest(_Body):
    answers: dict[Annotated[str, Field(max_length=32)], StrictInt] = Field(max_length=16)


class EmptyRequest(_Body):
    pass


class ActRequest(_Body):
    kind: Literal["propose", "insist", "agree", "walk_away"]
    split: list[StrictInt] | None = Field(default=None, max_length=3)
    message: str | None = Field(default=None, max_length=2000)
    # The turn the act is meant for (the view's ``turn``): a retried act is then recorded once.
    turn: StrictInt = Field(ge=0, le=1000)
    # The page's clock, seconds since the epoch.
    client_ts: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1e11)] | None = None


class _TextMoveRequest(_Body):
    # The view's ``turn`` (moves made by both sides so far): a retried move is then recorded once.
    turn: StrictInt = Field(ge=0, le=1000)
    client_ts: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1e11)] | None = None


class SayRequest(_TextMoveRequest):
    # The service checks the study's own limit after normalising; this bound only keeps bodies small.
    text: str = Field(max_length=4000)


class EndTalkRequest(_TextMoveRequest):
    pass


class SelectRequest(_TextMoveRequest):
    # How many of each item the person keeps; null (given explicitly) for no agreement.
    split: list[StrictInt] | None = Field(max_length=3)


class SurveyRequest(_Body):
    fair: StrictInt = Field(ge=1, le=5)
    human_like: StrictInt = Field(ge=1, le=5)
    negotiate_again: StrictInt = Field(ge=1, le=5)
    comment: str = Field(default="", max_length=4000)
    attention: StrictInt | None = Field(default=None, ge=1, le=5)


# Game ids are row ids: anything outside a 63-bit signed integer cannot name a game (and would
# overflow the database's integer), so the path parameter is bounded.
GameId = Annotated[int, PathParam(ge=1, le=2**62)]


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:20]} is too large a number")
    return value


def strict_json(body: bytes):
    """Parse a request body as strict JSON: no Infinity, NaN or numbers that overflow to infinity."""
    try:
        return json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as err:  # raised by the hooks above, or an int over 4300 digits
        raise json.JSONDecodeError(str(err), body.decode("utf-8", "replace")[:200], 0) from None


class _StrictJSONRequest(Request):
    async def json(self):
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


class _StrictJSONRoute(APIRoute):
    """Routes whose JSON bodies are parsed strictly (see :func:`strict_json`)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def strict_handler(request: Request):
            return await handler(_StrictJSONRequest(request.scope, request.receive))

        return strict_handler


def _static_dir():
    return resources.files("parley.human_eval") / "static"


def page_file(name: str, pages_dir: str | None = None) -> str:
    """The path of a page or asset: the study's own copy in ``pages_dir`` if it has one, else the packaged one."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise NotFound(f"no file {name!r}")
    if pages_dir is not None and (Path(pages_dir) / name).is_file():
        return str(Path(pages_dir) / name)
    packaged = _static_dir() / name
    if not packaged.is_file():
        raise NotFound(f"no file {name!r}")
    return str(packaged)


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def load_or_create_secret(engine: Engine) -> str:
    """The token secret stored in the database, created on first use so tokens survive restarts."""
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    with Session(engine) as s:
        row = s.get(Setting, "token_secret")
        if row is not None:
            return row.value
        s.add(Setting(key="token_secret", value=new_secret()))
        try:
            s.commit()
        except IntegrityError:  # another process created it first
            s.rollback()
        return s.get(Setting, "token_secret").value


def create_app(config: StudyConfig | None = None, *, db: str | Engine = "sqlite:///study.db",
               admin_token: str | None = None, secret: str | None = None, policies: dict | None = None,
               oracle_queue=None, oracle_token: str | None = None, enter_rate_per_s: float = 5.0,
               enter_burst: int = 200, synchronous: str = "FULL", warm_up: bool = True) -> FastAPI:
    """The study web app.

    ``admin_token`` None disables the admin API. ``secret`` signs participant tokens; None keeps one in
    the database. ``oracle_queue`` (see :mod:`parley.human_eval.oracle_page`) adds the expert-oracle
    page, guarded by ``oracle_token`` (default: the admin token).
    """
    from parley.human_eval.config import DEFAULT_STUDY

    config = config or DEFAULT_STUDY
    engine = db if isinstance(db, Engine) else make_engine(db, synchronous=synchronous)
    service = StudyService(config, engine, policies=policies)
    if warm_up:
        service.warm_up()
    signer = TokenSigner(secret or load_or_create_secret(engine))
    participant_limits = RateLimiter(config.rate_per_s, config.rate_burst)
    enter_limits = RateLimiter(enter_rate_per_s, enter_burst)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        async def sweep() -> None:
            while True:
                await asyncio.sleep(min(30.0, config.idle_timeout_s / 2))
                try:
                    await run_in_threadpool(service.expire_idle_games)
                except Exception:  # keep sweeping; the next request reports real problems
                    log.exception("idle-game sweep failed")

        sweeper = asyncio.create_task(sweep())
        try:
            yield
        finally:
            sweeper.cancel()

    app = FastAPI(title=f"parley study {config.study}", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.router.route_class = _StrictJSONRoute
    allowlist = Allowlist(config.allowlist) if config.allowlist is not None else None
    app.state.service = service
    app.state.signer = signer

    app.add_middleware(_GuardMiddleware)

    @app.exception_handler(StudyError)
    async def _study_error(_request: Request, err: StudyError):
        return _error(err.status_code, err.message)

    @app.exception_handler(IllegalActionError)
    async def _illegal(_request: Request, err: IllegalActionError):
        return _error(422, f"that act is not allowed now: {err}")

    @app.exception_handler(TokenError)
    async def _token_error(_request: Request, err: TokenError):
        return _error(401, str(err))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, err: RequestValidationError):
        problems = []
        for e in err.errors():
            if e.get("type") == "json_invalid":
                return _error(400, "the request body is not valid JSON")
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            problems.append(f"{where}: {e.get('msg')}")
        return _error(422, "invalid request: " + "; ".join(problems), problems=problems)

    # ------------------------------------------------------------------------------ authentication

    async def participant(request: Request) -> int:
        participant_id, study = signer.verify(request.headers.get(TOKEN_HEADER))
        if study != config.study:
            raise TokenError("this token belongs to another study")
        if not participant_limits.allow(participant_id):
            raise _RateLimited()
        return participant_id

    async def admin(request: Request) -> None:
        _check_secret_header(request, admin_token, "admin")

    # ------------------------------------------------------------------------------------- pages

    # A study may replace any page or asset (e.g. the consent text in index.html) through pages_dir.
    app.state.pages_dir = config.pages_dir

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str) -> FileResponse:
        return FileResponse(page_file(name, config.pages_dir))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(page_file("index.html", config.pages_dir), media_type="text/html")

    @app.get("/admin", include_in_schema=False)
    def admin_page() -> FileResponse:
        return FileResponse(page_file("admin.html", config.pages_dir), media_type="text/html")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "study": config.study}

    # ------------------------------------------------------------------------------- participant
    # These return JSONResponse directly: their bodies are plain JSON types already, and skipping
    # FastAPI's generic encoder saves about a millisecond per request.

    @app.post("/api/enter")
    def enter(body: EnterRequest, request: Request) -> JSONResponse:
        client = request.client.host if request.client else "unknown"
        if not enter_limits.allow(client):
            raise _RateLimited()
        if body.study != config.study:
            raise NotFound(f"unknown study {body.study!r}")
        service.check_pid(body.pid)
        # The link must prove it was issued for this pid: signed by the server's secret, or the pid on
        # the study's allowlist. Only "entry: open" lets any well-formed id in.
        if config.entry == "signed" and not signer.check_link(config.study, body.pid, body.sig):
            raise NotAllowed("this study link is not valid for this participant id; use the exact link you "
                             "were given")
        if config.entry == "allowlist" and body.pid not in allowlist:
            raise NotAllowed("this participant id is not on the study's list; open the study from the "
                             "platform again, or contact the researcher")
        participant_id = service.enter(body.study, body.pid, platform_study_id=body.study_id,
                                       platform_session_id=body.session_id)
        return JSONResponse({"token": signer.issue(participant_id, config.study),
                             "state": service.participant_state(participant_id)})

    @app.get("/api/state")
    def state(pid: int = Depends(participant)) -> JSONResponse:
        return JSONResponse(service.participant_state(pid))

    @app.post("/api/consent")
    def consent(pid: int = Depends(participant), _body: EmptyRequest | None = None) -> JSONResponse:
        service.record_step(pid, "consent")
        return JSONResponse(service.participant_state(pid))

    @app.post("/api/instructions")
    def instructions(pid: int = Depends(participant), _body: EmptyRequest | None = None) -> JSONResponse:
        service.record_step(pid, "instructions")
        return JSONResponse(service.participant_state(pid))

    @app.post("/api/comprehension")
    def comprehension(body: ComprehensionRequest, pid: int = Depends(participant)) -> JSONResponse:
        result = service.answer_comprehension(pid, body.answers)
        return JSONResponse({**result, "state": service.participant_state(pid)})

    @app.post("/api/leave")
    def leave(pid: int = Depends(participant), _body: EmptyRequest | None = None) -> JSONResponse:
        result = service.leave(pid)
        return JSONResponse({**result, "state": service.participant_state(pid)})

    @app.post("/api/games")
    def start(pid: int = Depends(participant), _body: EmptyRequest | None = None) -> JSONResponse:
        service.start_game(pid)
        return JSONResponse(service.participant_state(pid))

    @app.get("/api/games/{game_id}")
    def game(game_id: GameId, pid: int = Depends(participant)) -> JSONResponse:
        return JSONResponse(service.advance(pid, game_id))

    @app.post("/api/games/{game_id}/act")
    async def act(game_id: GameId, body: ActRequest, pid: int = Depends(participant)) -> JSONResponse:
        # Without think time the agent's reply is stored with the person's act in one transaction.
        view = await run_in_threadpool(service.act, pid, game_id, body.kind, body.split, message=body.message,
                                       client_ts=None if body.client_ts is None else float(body.client_ts),
                                       expected_turn=body.turn, reply=config.think_time_s == 0)
        return await agent_reply(pid, game_id, view)

    async def text_move(pid: int, game_id: int, kind: str, body: _TextMoveRequest, **move) -> JSONResponse:
        view = await run_in_threadpool(lambda: service.send_text(
            pid, game_id, kind, client_ts=None if body.client_ts is None else float(body.client_ts),
            expected_turn=body.turn, reply=config.think_time_s == 0, **move))
        return await agent_reply(pid, game_id, view)

    async def agent_reply(pid: int, game_id: int, view: dict) -> JSONResponse:
        """The view after the agent's reply, shown only once its think time has passed."""
        if view["status"] == "active" and not view["your_turn"]:
            if config.think_time_s > 0:
                await asyncio.sleep(config.think_time_s)
            await run_in_threadpool(service.agent_turn, game_id)
            view = await run_in_threadpool(service.view, pid, game_id)
        return JSONResponse(view)

    @app.post("/api/games/{game_id}/say")
    async def say(game_id: GameId, body: SayRequest, pid: int = Depends(participant)) -> JSONResponse:
        return await text_move(pid, game_id, "say", body, text=body.text)

    @app.post("/api/games/{game_id}/end_talk")
    async def end_talk(game_id: GameId, body: EndTalkRequest, pid: int = Depends(participant)) -> JSONResponse:
        return await text_move(pid, game_id, "end_talk", body)

    @app.post("/api/games/{game_id}/select")
    async def select_items(game_id: GameId, body: SelectRequest, pid: int = Depends(participant)) -> JSONResponse:
        return await text_move(pid, game_id, "select", body, split=body.split)

    @app.post("/api/games/{game_id}/survey")
    def survey(game_id: GameId, body: SurveyRequest, pid: int = Depends(participant)) -> JSONResponse:
        service.submit_survey(pid, game_id, body.model_dump(exclude_none=True))
        return JSONResponse({**service.completion(pid, game_id), "state": service.participant_state(pid)})

    # ------------------------------------------------------------------------------------- admin

    @app.get("/api/admin/status", dependencies=[Depends(admin)])
    def status() -> dict:
        return service.status()

    @app.get("/api/admin/export/{name}", dependencies=[Depends(admin)])
    def export(name: str) -> Response:
        table, _, fmt = name.partition(".")
        if table not in report.TABLES or fmt not in ("jsonl", "csv"):
            raise StudyError(f"unknown export {name!r}; use one of "
                             f"{', '.join(f'{t}.jsonl/.csv' for t in report.TABLES)}")
        service.expire_idle_games()
        rows = report.load_tables(engine, config.study)[table]
        body = report.to_jsonl(rows) if fmt == "jsonl" else report.to_csv(rows)
        media = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
        return Response(body, media_type=media, headers={
            "Content-Disposition": f'attachment; filename="{config.study}-{table}.{fmt}"'})

    @app.post("/api/admin/links", dependencies=[Depends(admin)])
    def links(body: LinksRequest) -> dict:
        """Signed recruitment links, one per pid: ``{base_url}/?study=..&pid=..&sig=..``."""
        out = []
        for pid in body.pids:
            service.check_pid(pid)
            query = urlencode({"study": config.study, "pid": pid, "sig": signer.sign_link(config.study, pid)})
            out.append({"pid": pid, "url": f"{body.base_url.rstrip('/')}/?{query}"})
        return {"study": config.study, "links": out}

    @app.get("/api/admin/bonuses.csv", dependencies=[Depends(admin)])
    def bonuses() -> Response:
        """Bonuses in the bulk-bonus format of Prolific: ``participant id,amount`` a line, no header."""
        service.expire_idle_games()
        rows = service.bonuses()
        total = sum(r["amount"] for r in rows)
        body = "".join(f"{r['pid']},{r['amount']:.2f}\n" for r in rows)
        return Response(body, media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{config.study}-bonuses.csv"',
            "X-Bonus-Total": f"{total:.2f} {config.bonus_currency}", "X-Bonus-Participants": str(len(rows))})

    @app.get("/api/admin/games", dependencies=[Depends(admin)])
    def games_overview() -> JSONResponse:
        return JSONResponse({"games": service.games_overview()})

    @app.get("/api/admin/games/{game_id}/replay", dependencies=[Depends(admin)])
    def replay(game_id: GameId) -> JSONResponse:
        return JSONResponse(service.replay(game_id))

    @app.get("/api/admin/corpus.txt", dependencies=[Depends(admin)])
    def corpus() -> Response:
        """The study's finished games in the corpus format (``data.txt`` of Lewis et al.)."""
        service.expire_idle_games()
        body = corpus_text(report.load_tables(engine, config.study)["transcripts"])
        return Response(body, media_type="text/plain", headers={
            "Content-Disposition": f'attachment; filename="{config.study}-data.txt"'})

    @app.get("/api/admin/results", dependencies=[Depends(admin)])
    def results() -> dict:
        service.expire_idle_games()
        tables = report.load_tables(engine, config.study)
        return {"summary": report.summarise(tables), "plots": list(report.PLOTS)}

    @app.get("/api/admin/plots/{name}", dependencies=[Depends(admin)])
    def plot(name: str) -> Response:
        stem = name.removesuffix(".png")
        if stem not in report.PLOTS:
            raise StudyError(f"unknown plot {name!r}; plots: {', '.join(p + '.png' for p in report.PLOTS)}")
        tables = report.load_tables(engine, config.study)
        return Response(report.PLOTS[stem](tables), media_type="image/png")

    if oracle_queue is not None:
        from parley.human_eval.oracle_page import mount_oracle

        mount_oracle(app, oracle_queue, token=oracle_token or admin_token)

    return app


class _GuardMiddleware:
    """Refuses oversized or chunked bodies and adds the security headers (plain ASGI: no per-request task)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length")
        problem = None
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            problem = (413, f"request body too large (at most {MAX_BODY_BYTES} bytes)")
        elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            problem = (411, "send the body with a Content-Length")
        if problem is not None:
            await _error(*problem)(scope, receive, self._with_headers(send, scope))
            return
        await self.app(scope, receive, self._with_headers(send, scope))

    @staticmethod
    def _with_headers(send, scope):
        extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
        if scope["path"].startswith("/api/"):
            extra.append((b"cache-control", b"no-store"))

        async def wrapped(message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", ())}
                message = {**message, "headers": list(message.get("headers", ())) +
                           [(k, v) for k, v in extra if k not in present]}
            await send(message)

        return wrapped


def _check_secret_header(request: Request, expected: str | None, what: str) -> None:
    if not expected:
        raise _Forbidden(f"the {what} API is disabled: start the server with an {what} token")
    given = request.headers.get(ADMIN_HEADER if what == "admin" else "X-Oracle-Token") or ""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        given = given or auth[len("Bearer "):]
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise _Forbidden(f"a valid {what} token is required")


class _Forbidden(StudyError):
    status_code = 403


class _RateLimited(StudyError):
    status_code = 429

    def __init__(self) -> None:
        super().__init__("too many requests; slow down")
