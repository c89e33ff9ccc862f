"""The ``parley`` command line speaks one way: every command's ``--help`` shows plain value types and
each option's default, and bad input ends in typer's usage line and error box with exit code 2."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from parley.cli import app

#: A wide terminal, so that no help row or error message wraps.
WIDE = {"COLUMNS": "250"}
#: typer's raw type labels (``<bool>``, ``<int range>``, ``<list[str]>``, ...), which help must not show.
RAW_TYPE_TAG = re.compile(r"<(bool|str|int|float|path|file|directory|uuid|datetime|list\[\w+\])( range)?>")
#: The start of an option's row in a help panel: an optional required-star, then its long name.
OPTION_ROW = re.compile(r"^│\s*(?:\*\s+)?(--[\w-]+)")


def command_paths() -> list[tuple[list[str], object]]:
    """Every command and group of the ``parley`` app as (argument path, click command)."""
    found = []

    def walk(command, path):
        found.append((path, command))
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


COMMANDS = command_paths()
IDS = [" ".join(path) or "parley" for path, _ in COMMANDS]


def invoke(args: list[str]):
    return CliRunner().invoke(app, args, env=WIDE)


def option_rows(help_text: str) -> dict[str, str]:
    """The text of each option's row (all its wrapped lines) in a rendered ``--help``, by long name."""
    rows: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        match = OPTION_ROW.match(line)
        if match:
            current = match.group(1)
            rows[current] = ""
        elif not line.startswith("│"):
            current = None
        if current is not None:
            rows[current] += " " + line.strip("│ ")
    return rows


def shows_a_default(option) -> bool:
    """Whether ``--help`` should print ``[default: ...]`` for this option: it has a value when not given.

    A bare flag (``--resume``) is off unless given, and a repeatable option empty; neither shows one.
    """
    if option.hidden or option.name == "help":
        return False
    if getattr(option, "is_flag", False) and not option.secondary_opts:
        return False
    return option.default not in (None, [], ()) or isinstance(option.show_default, str)


def test_the_walk_finds_every_command():
    names = set(IDS)
    assert {"train", "eval", "tournament", "tda", "oracle queue answer", "serve", "play", "report",
            "bench attacks"} <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_help_shows_plain_types_and_every_default(path, command):
    result = invoke([*path, "--help"])
    assert result.exit_code == 0, result.output
    assert not RAW_TYPE_TAG.search(result.output), RAW_TYPE_TAG.search(result.output).group(0)
    rows = option_rows(result.output)
    options = [p for p in command.params if p.param_type_name == "option" and not p.hidden]
    assert set(rows) == {p.opts[0] for p in options if p.opts[0].startswith("--")} | {"--help"}
    for option in options:
        row = rows[option.opts[0]]
        if shows_a_default(option):
            assert "[default:" in row, f"{option.opts[0]} has a default that --help does not show: {row}"
        if option.name != "help" and not option.is_flag:
            assert re.search(r"\b(INTEGER|FLOAT|TEXT|PATH|FILE|DIRECTORY|\[[\w|]+\])", row), row


def numeric_options(command) -> list[str]:
    """Long names of a command's visible options that take an integer or a float."""
    return [p.opts[0] for p in command.params
            if p.param_type_name == "option" and not p.hidden and not p.is_flag
            and p.type_descriptor.annotation in (int, float)]


NUMERIC = [(path, opt) for path, command in COMMANDS for opt in numeric_options(command)]


def assert_typer_error(result, command: list[str], *fragments: str) -> None:
    """Typer's error style: exit code 2, the usage line, the error box and the message in it."""
    assert result.exit_code == 2, result.output
    assert f"Usage: parley {' '.join(command)}" in result.output, result.output
    assert "╭─ Error" in result.output, result.output
    text = " ".join(result.output.split())
    for fragment in fragments:
        assert fragment in text, result.output


@pytest.mark.parametrize(("path", "option"), NUMERIC, ids=[f"{' '.join(p)} {o}" for p, o in NUMERIC])
def test_a_non_number_is_a_usage_error(path, option):
    assert_typer_error(invoke([*path, option, "many"]), path, "Invalid value for", option)


def test_numeric_options_are_checked_in_every_domain():
    assert {path[0] for path, _ in NUMERIC} >= {"train", "eval", "tournament", "tda", "serve", "play", "oracle"}


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--backbone", "resnet"], "unknown backbone 'resnet'"),
    (["train", "--backbone-config", "[1, 2]"], "--backbone-config: must be a mapping"),
    (["train", "--framework", "native", "--self-play"], "partner pool only"),
    (["eval", "runs/does-not-exist"], "no run, checkpoint or policy at runs/does-not-exist"),
    (["eval", ".", "--partners", "nobody"], "unknown partner 'nobody'"),
    (["tournament", "--partners", "boulware,bogus"], "unknown partner 'bogus'"),
    (["tournament", "--contexts", "0"], "--contexts"),
    (["tda", "--oracle", "psychic", "--out", "{tmp}/tda"], "unknown oracle 'psychic'"),
    (["tda", "--selection", "vibes", "--out", "{tmp}/tda"], "unknown selection 'vibes'"),
    (["oracle", "coverage", "{tmp}/no-corpus.txt"], "no corpus at"),
    (["oracle", "queue", "stats", "--db", "{tmp}/none.sqlite"], "no query queue at"),
    (["report", "{tmp}/none.db", "--out", "{tmp}/report"], "no study database"),
    (["play", "--agent", "nobody-at-all", "--db", "sqlite:///{tmp}/s.db"], "--agent"),
])
def test_bad_input_gets_typers_error_box_with_exit_code_2(tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    command = [a for a in args[:3] if a in {name for path, _ in COMMANDS for name in path}]
    assert_typer_error(invoke(args), command, message)


def test_train_flags_left_out_do_not_override_the_config_file(tmp_path, monkeypatch):
    """``--help`` shows TrainConfig's defaults, yet only flags typed on the command line override
    the YAML file."""
    import parley.agents.training.run as run

    seen = {}

    def fake_train(config, console=None):
        seen["config"] = config
        raise run.TrainConfigError("stopped before training")

    monkeypatch.setattr(run, "train", fake_train)
    config = tmp_path / "train.yaml"
    config.write_text("framework: native\nseed: 7\ntrain_batch_size: 512\nminibatch_size: 128\nlive: false\n")
    result = invoke(["train", "--config", str(config), "--seed", "3", "--out", str(tmp_path / "run")])
    assert_typer_error(result, ["train"], "stopped before training")
    resolved = seen["config"]
    assert (resolved.framework, resolved.train_batch_size, resolved.minibatch_size, resolved.live) == \
        ("native", 512, 128, False)
    assert resolved.seed == 3  # the flag given wins over the file
    assert resolved.out == str(tmp_path / "run")
