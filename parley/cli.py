"""The ``parley`` command line.

Each domain adds its commands in its own ``cli.py`` module with a ``register(app)`` function, listed
in :data:`DOMAIN_CLIS`; command bodies import heavy libraries lazily so ``parley --help`` stays fast.

Every command speaks the same way: bad input raises ``typer.BadParameter`` (typer prints the usage line
and an error box, exit code 2), ``--help`` shows each option's default, and value types read as plain
words (``INTEGER``, ``TEXT``, ``PATH``; flags show none) through :class:`ParleyCommand`, which
:func:`apply_house_style` gives every command and group once the domains have registered theirs.
"""

from __future__ import annotations

import importlib

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperArgument, TyperCommand, TyperGroup
from typer.models import DefaultPlaceholder

from parley._version import __version__

#: How a value's type reads in ``--help`` (typer's own labels are ``<int>``, ``<str>``, ...).
TYPE_WORDS = {"int": "INTEGER", "float": "FLOAT", "str": "TEXT", "path": "PATH", "file": "FILE",
              "directory": "DIRECTORY", "list[str]": "TEXT", "list[int]": "INTEGER", "bool": "BOOLEAN"}


def plain_metavar(param, ctx) -> str:
    """The word ``--help`` shows for ``param``'s value: empty for a flag, else the type in capitals."""
    if getattr(param, "is_flag", False):
        return ""
    label = param.display_type(ctx).strip("<>").removesuffix(" range")
    if "|" in label:  # a choice lists its values
        return f"[{label}]"
    return TYPE_WORDS.get(label, label.upper())


class _PlainTypes:
    """Gives every parameter without a metavar of its own a plain one (see :func:`plain_metavar`); an
    argument is named by its name in capitals (``PATH``) with its type beside it."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if param.metavar is not None:
                continue
            word = plain_metavar(param, ctx)
            if isinstance(param, TyperArgument):
                param.metavar = param.name.upper()
                param.display_type_rich = lambda ctx, word=word: word  # typer would show "<str>" here
            else:
                param.metavar = word
        return params


class ParleyCommand(_PlainTypes, TyperCommand):
    """A ``parley`` command: typer's, with plain value types in ``--help``."""


class ParleyGroup(_PlainTypes, TyperGroup):
    """A ``parley`` command group: typer's, with plain value types in ``--help``."""


def apply_house_style(typer_app: typer.Typer) -> None:
    """Make every command and group under ``typer_app`` (however deep) a ParleyCommand / ParleyGroup."""
    def unset(cls) -> bool:  # typer fills in a placeholder or its own class when none is given
        return cls is None or isinstance(cls, DefaultPlaceholder) or cls in (TyperCommand, TyperGroup)

    if unset(typer_app.info.cls):
        typer_app.info.cls = ParleyGroup
    for command in typer_app.registered_commands:
        if unset(command.cls):
            command.cls = ParleyCommand
    for group in typer_app.registered_groups:
        if unset(group.cls):
            group.cls = ParleyGroup
        apply_house_style(group.typer_instance)

app = typer.Typer(
    name="parley",
    help="Negotiation and data-poisoning scenarios as multi-agent environments.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

#: Modules whose ``register(app)`` adds commands.
DOMAIN_CLIS: tuple[str, ...] = ("parley.agents.cli", "parley.human_eval.cli", "parley.oracles.cli",
                                 "parley.attacks.cli", "parley.attacks.negotiation_cli", "parley.lm_cli",
                                 "parley.arena_cli")


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
apply_house_style(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
