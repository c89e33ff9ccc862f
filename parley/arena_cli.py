"""``parley arena``: every pair of players on shared contexts, seats swapped, rated with intervals."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def arena_command(
    players: str = typer.Option(..., "--players", help="Comma-separated player specs: a scripted partner's name "
                                "(boulware), policy:RUN (a saved policy or training run), chat:URL#MODEL (a model "
                                "behind an OpenAI-compatible endpoint, e.g. chat:http://127.0.0.1:8000/v1#boulware), "
                                "lm:PATH (a `parley train-lm` model; text only); NAME=SPEC names one."),
    out: Path = typer.Option(..., "--out", help="Folder for arena.json, results.csv, leaderboard.md/.png and the "
                             "chat players' logs; rerunning with the same settings resumes it."),
    protocol: str = typer.Option("acts", "--protocol", help="acts: the coarse game (chat players answer in JSON); "
                                 "text: the text game (coarse players through the realiser)."),
    games: int = typer.Option(200, "--games", min=2, help="Games per pair (even: each context twice, seats swapped)."),
    seed: int = typer.Option(0, help="Seed of the shared contexts and the players."),
    max_turns: int = typer.Option(10, min=1, help="Acts per coarse game before it ends without a deal."),
    max_messages: int = typer.Option(20, min=1, help="Utterances per text game before the selections."),
    address: str | None = typer.Option(None, "--address", help="A Ray cluster ('auto' or host:port) to play the "
                                       "pairs on in parallel; left out, they play in this process."),
    concurrency: int = typer.Option(8, min=1, help="Requests each chat player keeps in flight (coarse acts)."),
    bootstrap: int = typer.Option(200, min=0, help="Bootstrap resamples for the rating intervals."),
    study_db: str | None = typer.Option(None, "--study-db", help="A study database (sqlite:///study.db or a "
                                        "postgresql:// URL) whose finished games join the ratings (the person as "
                                        "'human')."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Write leaderboard.png."),
) -> None:
    """Play an arena of policies, scripted partners, language models (and the study's people); rate them."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from parley.agents.arena import (
        ArenaError,
        ArenaSettings,
        parse_players,
        run_arena,
        write_report,
    )

    try:
        settings = ArenaSettings(protocol=protocol, games=games, seed=seed, max_turns=max_turns,
                                 max_messages=max_messages)
    except ArenaError as err:
        hint = "--protocol" if "protocol" in str(err) else "--games"
        raise typer.BadParameter(str(err), param_hint=hint) from None
    try:
        specs = parse_players(players)
    except ArenaError as err:
        raise typer.BadParameter(str(err), param_hint="--players") from None
    extra = []
    if study_db:
        try:
            from parley.human_eval.service import study_games

            extra = study_games(study_db, protocol=protocol)
        except Exception as err:  # noqa: BLE001 -- any failure to read the database is the option's fault
            raise typer.BadParameter(f"cannot read the study database: {err}", param_hint="--study-db") from None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("arena", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        try:
            rows = run_arena(specs, out, settings, address=address, concurrency=concurrency, progress=progress)
        except ArenaError as err:
            hint = "--out" if "other settings" in str(err) else "--players"
            raise typer.BadParameter(str(err), param_hint=hint) from None
    ratings = write_report(rows + extra, out, bootstrap=bootstrap, seed=seed, plot=plot)
    table = Table(title=f"Arena ({protocol}, {len(rows) + len(extra)} games)")
    for column in ("player", "rating", "95% interval", "games", "score", "agreement %"):
        table.add_column(column, justify="left" if column == "player" else "right")
    for r in ratings:
        table.add_row(r.player, f"{r.rating:.0f}", f"{r.low:.0f} to {r.high:.0f}", str(r.games), f"{r.score:.2f}",
                      f"{100 * r.agreement:.1f}")
    console.print(table)
    console.print(f"wrote {out / 'results.csv'} and {out / 'leaderboard.md'}")


def register(app: typer.Typer) -> None:
    app.command("arena")(arena_command)
