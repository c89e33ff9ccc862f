"""``parley serve``, ``parley play`` and ``parley report``: run a study, play in the terminal, analyse."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from parley.envs.negotiation import DEFAULT_MAX_TURNS


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        agents: list[Path] = typer.Option(None, "--agents", help="Study config (agents.yaml), or a folder of them; "
                                          "repeat for several studies on one server (each at /studies/NAME/). "
                                          "Default: a study against the boulware and conceder scripted partners."),
        db: str = typer.Option("sqlite:///study.db", "--db", help="SQLAlchemy URL or SQLite file path."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; keep loopback behind a reverse proxy."),
        port: int = typer.Option(8000, "--port", help="Port to listen on."),
        workers: int = typer.Option(1, "--workers", min=1, max=64,
                                    help="Server processes sharing the port and the database."),
        admin_token: str = typer.Option(None, "--admin-token", envvar="PARLEY_ADMIN_TOKEN",
                                        help="Token for the admin pages; generated and printed if not given."),
        secret: str = typer.Option(None, "--secret", envvar="PARLEY_SECRET",
                                   help="Secret signing participant tokens; default: one kept in the database."),
        think_time: float = typer.Option(None, "--think-time", help="Override the config's think_time_s."),
        synchronous: str = typer.Option("FULL", "--sqlite-synchronous", help="FULL (durable on power loss) or NORMAL."),
        proxy: bool = typer.Option(False, "--behind-proxy", help="Trust X-Forwarded-For/Proto from 127.0.0.1."),
        oracle_queue: Path = typer.Option(None, "--oracle-queue", help="SQLite oracle query queue to answer at /oracle."),
        oracle_token: str = typer.Option(None, "--oracle-token", envvar="PARLEY_ORACLE_TOKEN",
                                         help="Token for the oracle page (default: the admin token)."),
    ) -> None:
        """Serve human-vs-agent studies (participant pages at /, admin at /admin)."""
        import secrets

        import uvicorn

        from parley.human_eval.config import StudyConfigError
        from parley.human_eval.server import SETTINGS_ENV, ServeSettings, study_path

        if not admin_token:
            admin_token = secrets.token_urlsafe(18)
            typer.echo(f"admin token (set PARLEY_ADMIN_TOKEN to choose one): {admin_token}")
        settings = ServeSettings(agents=[str(p) for p in agents or []], db=db, admin_token=admin_token,
                                 secret=secret, think_time_s=think_time, synchronous=synchronous,
                                 oracle_queue=None if oracle_queue is None else str(oracle_queue),
                                 oracle_token=oracle_token)
        try:
            configs = settings.configs()
            # Built here even when workers serve: it checks everything once and creates the schema before
            # several processes open the database.
            app = settings.build()
        except StudyConfigError as err:
            raise typer.BadParameter(str(err), param_hint="--agents") from None
        except ValueError as err:  # a short secret, an unknown sync mode or partner name
            raise typer.BadParameter(str(err)) from None
        signer = app.state.signer
        for config in configs:
            base = f"http://{host}:{port}" + (study_path(config.study) if len(configs) > 1 else "")
            typer.echo(f"study {config.study!r} with agents {', '.join(a.name for a in config.agents)} at "
                       f"{base}/?study={config.study}&pid=PARTICIPANT_ID (admin: {base}/admin)")
            if config.entry == "signed":
                sig = signer.sign_link(config.study, "pilot-1")
                typer.echo(f"  links must be signed (the admin page or POST {base}/api/admin/links makes them); "
                           f"a first one: {base}/?study={config.study}&pid=pilot-1&sig={sig}")
        run = dict(host=host, port=port, log_level=os.environ.get("PARLEY_LOG_LEVEL", "info"),
                   proxy_headers=proxy, forwarded_allow_ips="127.0.0.1" if proxy else None, server_header=False)
        if workers == 1:
            uvicorn.run(app, **run)
            return
        os.environ[SETTINGS_ENV] = settings.to_env()
        uvicorn.run("parley.human_eval.server:app_from_env", factory=True, workers=workers, **run)

    @app.command("play")
    def play_command(
        agent: str = typer.Option("boulware", "--agent", help="A scripted partner name or a checkpoint path."),
        db: str = typer.Option("sqlite:///study.db", "--db", help="Where the game is stored (same schema as serve)."),
        pid: str = typer.Option(None, "--pid", help="Your participant id (default: your user name)."),
        study: str = typer.Option("terminal", "--study", help="Study name the game is stored under."),
        max_turns: int = typer.Option(DEFAULT_MAX_TURNS, "--max-turns", min=1,
                                      help="Acts per game before it ends with no deal."),
        seed: int = typer.Option(0, "--seed", "-s", help="Seed of the contexts and assignment."),
        survey: bool = typer.Option(True, "--survey/--no-survey", help="Ask the three survey questions afterwards."),
    ) -> None:
        """Negotiate against an agent in the terminal."""
        import getpass

        from parley.human_eval.config import StudyConfigError
        from parley.human_eval.service import StudyError
        from parley.human_eval.terminal import play, terminal_service

        try:  # the agent is built before the database is opened: a bad --agent leaves no file behind
            service = terminal_service(agent, db, study=study, max_turns=max_turns, seed=seed)
        except (StudyConfigError, ValueError, FileNotFoundError) as err:
            raise typer.BadParameter(str(err), param_hint="--agent") from None
        pid = pid or getpass.getuser()
        try:
            service.check_pid(pid)
        except StudyError as err:
            raise typer.BadParameter(err.message, param_hint="--pid") from None
        play(service, pid, agent=service.config.agents[0].name, ask=input, say=typer.echo,
             survey=survey)

    @app.command("report")
    def report_command(
        db: str = typer.Argument(..., help="Study database: a SQLite file or a SQLAlchemy URL."),
        out: Path = typer.Option(Path("report"), "--out", "-o", help="Output folder for report.md, PNGs and exports."),
        study: str = typer.Option(None, "--study", help="Only this study (default: every study in the database)."),
        corpus: Path = typer.Option(None, "--corpus", help="Also write the games in the corpus format (data.txt "
                                    "of Lewis et al.) to this file; the report folder always gets corpus.txt."),
    ) -> None:
        """Write plots (PNG), a markdown report, JSONL/CSV exports and a corpus file of a study database."""
        import shutil

        from parley.human_eval.report import write_report

        try:
            path = write_report(db, out, study=study)
        except FileNotFoundError as err:
            raise typer.BadParameter(str(err), param_hint="DB") from None
        typer.echo(f"wrote {path}")
        if corpus is not None:
            corpus.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / "corpus.txt", corpus)
            typer.echo(f"wrote {corpus}")
