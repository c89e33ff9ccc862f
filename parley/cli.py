"""The ``parley`` command line.

Each domain adds its commands in its own ``cli.py`` module with a ``register(app)`` function, listed
in :data:`DOMAIN_CLIS`; command bodies import heavy libraries lazily so ``parley --help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer
from rich.console import Console
from rich.table import Table

from parley._version import __version__

app = typer.Typer(
    name="parley",
    help="Negotiation and data-poisoning scenarios as multi-agent environments.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

#: Modules whose ``register(app)`` adds commands.
DOMAIN_CLIS: tuple[str, ...] = ("parley.agents.cli", "parley.human_eval.cli", "parley.oracles.cli",
                                 "parley.attacks.cli")


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"parley {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """parley: negotiation and data-poisoning scenarios as multi-agent environments."""


@app.command("envs")
def envs_command() -> None:
    """List the registered environments."""
    from parley.registration import ENV_SPECS

    table = Table(title="parley environments")
    table.add_column("id")
    table.add_column("API")
    table.add_column("summary")
    for spec in ENV_SPECS:
        table.add_row(spec.env_id, spec.api, spec.summary)
    console.print(table)


for _module in DOMAIN_CLIS:
    importlib.import_module(_module).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
