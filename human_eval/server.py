"""One server for several studies, and the settings ``parley serve`` hands to its worker processes.

:func:`create_server` builds the app ``parley serve`` runs: the study app of :func:`create_app` itself
when there is one study, and otherwise a router that hosts each study's app under its own path::

    /studies/<study>/            the participant page of <study> (its links: /studies/<study>/?pid=..&sig=..)
    /studies/<study>/admin       its admin page; /studies/<study>/api/... its API
    /?study=<study>&...          redirects to that study's page (as does a platform link whose STUDY_ID /
                                 hitId is the one a study's config names)
    POST /api/enter              goes to the study its body names; other /api/ requests go to the study
                                 their participant token belongs to
    /admin, /api/admin/studies   the studies hosted, with their paths (the latter needs the admin token)

All studies share one database engine, the token secret and the admin token; each keeps its own config,
assignment, rate limits and admin view.

Several worker processes (``parley serve --workers N``) each build the same app from
:class:`ServeSettings`, passed to them in the ``PARLEY_SERVE_SETTINGS`` environment variable by
:func:`app_from_env`. They may share one database: assignment and acts serialise in the database (see
:meth:`parley.human_eval.service.StudyService.start_game`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy.engine import Engine

from parley.human_eval.app import (
    MAX_BODY_BYTES,
    TOKEN_HEADER,
    _check_secret_header,
    _error,
    _GuardMiddleware,
    create_app,
    load_or_create_secret,
    page_file,
    strict_json,
)
from parley.human_eval.config import StudyConfig, StudyConfigError
from parley.human_eval.db import make_engine
from parley.human_eval.security import TokenError, TokenSigner
from parley.human_eval.service import StudyError

STUDIES_PREFIX = "/studies"
SETTINGS_ENV = "PARLEY_SERVE_SETTINGS"


def study_path(study: str) -> str:
    """Where a hosted study's pages and API live on a server with several studies."""
    return f"{STUDIES_PREFIX}/{study}"


def study_config_files(paths: Sequence[str | Path]) -> list[Path]:
    """The YAML files behind ``--agents``: each path is a file, or a folder whose ``*.yaml`` / ``*.yml``
    files are taken in name order."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                raise StudyConfigError(f"{path} holds no study config (*.yaml or *.yml)")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise StudyConfigError(f"no study config at {path} (give a YAML file or a folder of them)")
    return files


def load_study_configs(paths: Sequence[str | Path], *, think_time_s: float | None = None) -> list[StudyConfig]:
    """The study configs of ``paths`` (see :func:`study_config_files`); study names must differ."""
    configs = [StudyConfig.from_yaml(p) for p in study_config_files(paths)]
    names = [c.study for c in configs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise StudyConfigError(f"two configs name the same study {', '.join(repeated)}: each study needs its "
                               "own name (the 'study' setting)")
    if think_time_s is not None:
        configs = [dataclasses.replace(c, think_time_s=think_time_s) for c in configs]
    return configs


def create_server(configs: Sequence[StudyConfig], *, db: str | Engine = "sqlite:///study.db",
                  admin_token: str | None = None, secret: str | None = None, synchronous: str = "FULL",
                  oracle_queue=None, oracle_token: str | None = None, **app_kwargs) -> FastAPI | _RootDispatch:
    """The ASGI app serving ``configs``: one study's own app, or the router over several described above
    (its ``state`` holds ``studies``, each study's app by name, and the ``signer``).

    ``app_kwargs`` go to every study's :func:`create_app`.
    """
    if not configs:
        raise ValueError("a server needs at least one study config")
    if len({c.study for c in configs}) != len(configs):
        raise ValueError("each study config needs its own study name")
    if len(configs) == 1:
        return create_app(configs[0], db=db, admin_token=admin_token, secret=secret, synchronous=synchronous,
                          oracle_queue=oracle_queue, oracle_token=oracle_token, **app_kwargs)
    engine = db if isinstance(db, Engine) else make_engine(db, synchronous=synchronous)
    secret = secret or load_or_create_secret(engine)
    studies = {c.study: create_app(c, db=engine, admin_token=admin_token, secret=secret, **app_kwargs)
               for c in configs}
    signer = TokenSigner(secret)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        # Mounted apps get no lifespan events of their own: run each study's (its idle-game sweeper).
        async with contextlib.AsyncExitStack() as stack:
            for sub in studies.values():
                await stack.enter_async_context(sub.router.lifespan_context(sub))
            yield

    router = FastAPI(title="parley studies", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    router.state.studies = studies
    router.state.signer = signer

    @router.exception_handler(StudyError)
    async def _study_error(_request: Request, err: StudyError):
        return _error(err.status_code, err.message)

    def by_platform_id(query: dict[str, list[str]]) -> str | None:
        ids = set(query.get("STUDY_ID", []) + query.get("hitId", []))
        for config in configs:
            if config.platform is not None and config.platform.study_id in ids:
                return config.study
        return None

    @router.get("/", include_in_schema=False)
    def index(request: Request) -> Response:
        query = parse_qs(request.url.query)
        study = (query.get("study") or [None])[0] or by_platform_id(query)
        if study in studies:
            # The query string travels as it came (pid, sig, platform ids), re-encoded.
            target = f"{study_path(study)}/?{urlencode(query, doseq=True)}"
            return RedirectResponse(target, status_code=307)
        return HTMLResponse("<!doctype html><meta charset='utf-8'><title>Study</title><p>Open the study from "
                            "the exact link you were given.</p>", status_code=404)

    @router.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "studies": list(studies)}

    @router.get("/static/{name}", include_in_schema=False)
    def static_file(name: str) -> FileResponse:
        return FileResponse(page_file(name))

    @router.get("/admin", include_in_schema=False)
    def admin_index() -> HTMLResponse:
        items = "".join(f'<li><a href="{html.escape(study_path(s))}/admin">{html.escape(s)}</a></li>'
                        for s in studies)
        return HTMLResponse(f"<!doctype html><meta charset='utf-8'><title>Studies</title>"
                            f"<link rel='stylesheet' href='/static/style.css'><main><h1>Studies on this server"
                            f"</h1><ul>{items}</ul></main>")

    async def admin(request: Request) -> None:
        _check_secret_header(request, admin_token, "admin")

    @router.get("/api/admin/studies", dependencies=[Depends(admin)])
    def list_studies() -> dict:
        return {"studies": [{"study": name, "path": study_path(name) + "/", "admin": study_path(name) + "/admin",
                             "agents": [a.name for a in sub.state.service.config.agents]}
                            for name, sub in studies.items()]}

    for name, sub in studies.items():
        router.mount(study_path(name), sub)
    if oracle_queue is not None:
        from parley.human_eval.oracle_page import mount_oracle

        mount_oracle(router, oracle_queue, token=oracle_token or admin_token)
    router.add_middleware(_GuardMiddleware)
    return _RootDispatch(router, studies, signer)


class _RootDispatch:
    """Sends participant API calls made at the server's root to the study they belong to.

    ``POST /api/enter`` names its study in the body; every later call carries a token that names it.
    The request then goes on as if it had been made under that study's path. Everything else passes
    through to the router unchanged.
    """

    def __init__(self, router: FastAPI, studies: dict[str, FastAPI], signer: TokenSigner) -> None:
        self.router = router
        self.studies = studies
        self.signer = signer
        self.state = router.state  # as an app's: tests and tools reach the studies through it

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/api/") or path.startswith("/api/admin/"):
            await self.router(scope, receive, send)
            return
        if path == "/api/enter":
            body, receive = await _read_body(receive)
            if body is None:
                await _error(413, f"request body too large (at most {MAX_BODY_BYTES} bytes)")(scope, receive, send)
                return
            try:
                parsed = strict_json(body) if body else {}
            except json.JSONDecodeError:
                await _error(400, "the request body is not valid JSON")(scope, receive, send)
                return
            study = parsed.get("study") if isinstance(parsed, dict) else None
            if study not in self.studies:
                await _error(404, f"unknown study {study!r}; this server hosts "
                                  f"{', '.join(self.studies)}")(scope, receive, send)
                return
        else:
            headers = dict(scope.get("headers") or ())
            try:
                _, study = self.signer.verify(headers.get(TOKEN_HEADER.lower().encode(), b"").decode("latin-1"))
            except TokenError as err:
                await _error(401, str(err))(scope, receive, send)
                return
            if study not in self.studies:
                await _error(401, "this token belongs to a study this server does not host")(scope, receive, send)
                return
        new_path = study_path(study) + path
        scope = {**scope, "path": new_path, "raw_path": new_path.encode()}
        await self.router(scope, receive, send)


async def _read_body(receive):
    """The whole request body (None past :data:`MAX_BODY_BYTES`) and a ``receive`` that replays it."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_BODY_BYTES:
            return None, receive
        more = message.get("more_body", False)
    body = b"".join(chunks)
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


@dataclass
class ServeSettings:
    """What every worker of ``parley serve`` needs to build the same app (see :func:`create_server`)."""

    agents: list[str] = field(default_factory=list)  # study config files or folders; empty: the default study
    db: str = "sqlite:///study.db"
    admin_token: str | None = None
    secret: str | None = None
    think_time_s: float | None = None
    synchronous: str = "FULL"
    oracle_queue: str | None = None
    oracle_token: str | None = None

    def configs(self) -> list[StudyConfig]:
        if not self.agents:
            from parley.human_eval.config import DEFAULT_STUDY

            configs = [DEFAULT_STUDY]
            if self.think_time_s is not None:
                configs = [dataclasses.replace(DEFAULT_STUDY, think_time_s=self.think_time_s)]
            return configs
        return load_study_configs(self.agents, think_time_s=self.think_time_s)

    def build(self) -> FastAPI:
        queue = None
        if self.oracle_queue is not None:
            from parley.oracles.queue import QueryQueue

            queue = QueryQueue(self.oracle_queue)
        return create_server(self.configs(), db=self.db, admin_token=self.admin_token, secret=self.secret,
                             synchronous=self.synchronous, oracle_queue=queue, oracle_token=self.oracle_token)

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))


def worker_pids(supervisor: int) -> list[int]:
    """The app worker processes of a ``parley serve --workers N`` process ``supervisor`` (read from Linux's
    /proc; [] elsewhere), leaving out multiprocessing's helper process."""
    pids = []
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == supervisor and b"spawn_main" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return sorted(pids)


def app_from_env() -> FastAPI:
    """The app of a ``parley serve --workers N`` worker, from the settings its parent left in the environment."""
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise RuntimeError(f"{SETTINGS_ENV} is not set: workers are started by `parley serve --workers N`")
    return ServeSettings(**json.loads(raw)).build()
