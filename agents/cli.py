"""``parley`` commands of the agents domain: ``tournament`` (and, as they arrive, training and evaluation).

Each command is a module-level function registered in :func:`register`; add new ones to
:data:`COMMANDS`. Heavy imports stay inside command bodies so ``parley --help`` stays fast.
"""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from parley.envs.negotiation import DEFAULT_MAX_TURNS

console = Console()
if not console.is_terminal:
    # Piped or captured output has no width to detect; keep the pairwise table on one line per agent.
    console.width = max(console.width, 150)


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f}"


def _num(x: float, digits: int = 2) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def _parse_agents(spec: str) -> list[str]:
    """Agent names and policy paths from ``--partners``; ``suite`` (or ``all``) stands for every scripted partner."""
    from parley.agents.partners.scripted import PARTNERS

    names: list[str] = []
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        if name in ("suite", "all"):
            names.extend(PARTNERS)
        elif name in PARTNERS or Path(name).exists():
            names.append(name)
        else:
            raise typer.BadParameter(f"unknown partner {name!r}; known partners: {', '.join(PARTNERS)}, 'suite' "
                                     "for all of them, or a saved policy path", param_hint="--partners")
    if not names:
        raise typer.BadParameter("give at least one agent, e.g. --partners boulware,conceder", param_hint="--partners")
    return list(dict.fromkeys(names))


def agents_table(result) -> Table:
    """Per-agent results of a tournament as a rich table."""
    table = Table(title=f"Tournament: {result.contexts} contexts, seed {result.seed}, max {result.max_turns} turns")
    table.add_column("agent")
    for column in ("mean score", "agreement %", "Pareto %", "Nash product", "turns"):
        table.add_column(column, justify="right")
    for row in sorted(result.agents, key=lambda r: -r.score):
        table.add_row(row.agent, _num(row.score), _pct(row.agreement), _pct(row.pareto),
                      _num(row.nash_product, 1), _num(row.turns, 1))
    return table


def pairwise_table(result) -> Table:
    """Row agent's mean score against each column agent (agreement % in brackets), seat 0 as the row."""
    table = Table(title="Pairwise: row agent's mean score vs column agent (agreement %)")
    table.add_column("agent \\ partner", no_wrap=True)
    for name in result.names:
        table.add_column(name, justify="right")
    cells = {(p.agent, p.partner): p for p in result.pairs}
    for agent in result.names:
        row = []
        for partner in result.names:
            p = cells.get((agent, partner))
            row.append("-" if p is None else f"{p.score:.2f} ({100 * p.agreement:.0f})")
        table.add_row(agent, *row)
    return table


def tournament(
    contexts: int = typer.Option(200, "--contexts", "-n", min=1, help="Contexts each ordered pair plays."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed for contexts, first movers and random partners."),
    partners: str = typer.Option("suite", "--partners", "-p",
                                 help="Comma-separated agents (scripted partner names or saved policy paths), "
                                      "or 'suite' (every scripted partner)."),
    max_turns: int = typer.Option(DEFAULT_MAX_TURNS, "--max-turns", min=1,
                                  help="Acts per game before it ends with no deal."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write per-agent and per-pair rows to this CSV."),
    no_self_play: bool = typer.Option(False, "--no-self-play", help="Skip pairs of an agent with itself."),
) -> None:
    """Play every ordered pair of agents on the same seeded contexts and print the results."""
    from parley.agents.partners.tournament import run_tournament

    names = _parse_agents(partners)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("pairs", total=None)

        def advance(done: int, total: int, agent: str, partner: str) -> None:
            bar.update(task, completed=done, total=total, description=f"{agent} vs {partner}")

        try:
            result = run_tournament(names, contexts=contexts, seed=seed, max_turns=max_turns,
                                    self_play=not no_self_play, progress=advance)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
    console.print(agents_table(result))
    console.print(pairwise_table(result))
    console.print("Pareto % = share of deals that are Pareto-optimal; scores are points out of 10 "
                  "(no deal scores 0).")
    if out is not None:
        path = result.write_csv(out)
        console.print(f"wrote {len(result.rows())} rows to {path}")


#: (command name, function) pairs registered on the ``parley`` app.
COMMANDS = [("tournament", tournament)]


def register(app: typer.Typer) -> None:
    """Add the agents domain's commands to the ``parley`` app."""
    from parley.agents.training.cli import COMMANDS as TRAINING_COMMANDS

    for name, command in COMMANDS + TRAINING_COMMANDS:
        app.command(name)(command)
