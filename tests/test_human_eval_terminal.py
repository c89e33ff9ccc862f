"""``parley play`` driven with scripted input: the survey keeps its answers, the game is confirmed saved,
and a bad ``--agent`` is reported before any database file exists."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from parley.cli import app
from parley.human_eval.db import Survey, make_engine
from parley.human_eval.report import load_tables
from parley.human_eval.terminal import ask_survey


def _play(db: str, script: str, *extra: str):
    return CliRunner().invoke(app, ["play", "--agent", "boulware", "--db", db, "--pid", "tester", *extra],
                              input=script)


def test_an_invalid_survey_answer_asks_again_and_keeps_earlier_answers(tmp_path):
    db = f"sqlite:///{tmp_path / 'play.db'}"
    # Walk away, then: 2 to the first question, an invalid 9 and an empty answer to the second (asked
    # again each time), then 4 and 5, and a comment.
    result = _play(db, "walk\n2\n9\n\n4\n5\nfine\n")
    assert result.exit_code == 0, result.output
    assert result.output.count("answer with a whole number from 1 to 5") == 2
    assert "Survey saved" in result.output and "Completion code:" in result.output
    (game,) = load_tables(make_engine(db))["games"]
    assert "Game {} saved (study 'terminal', participant 'tester') in sqlite:///".format(game["game_id"]) \
        in result.output
    assert (game["fair"], game["human_like"], game["negotiate_again"], game["comment"]) == (2, 4, 5, "fine")
    report = CliRunner().invoke(app, ["report", str(tmp_path / "play.db"), "--out", str(tmp_path / "r")])
    assert report.exit_code == 0 and "1 surveys" in (tmp_path / "r" / "report.md").read_text()


def test_the_survey_can_be_skipped_and_the_game_stays_saved(tmp_path):
    db = f"sqlite:///{tmp_path / 'play.db'}"
    result = _play(db, "walk\n3\nskip\n")
    assert result.exit_code == 0, result.output
    assert "Survey skipped." in result.output and "saved" in result.output
    engine = make_engine(db)
    (game,) = load_tables(engine)["games"]
    assert game["outcome"] == "walk_away"
    with Session(engine) as s:
        assert s.scalars(select(Survey)).first() is None


def test_ask_survey_runs_out_of_input_without_losing_the_game():
    lines = iter(["1", "x"])
    said = []

    def ask(_prompt):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    assert ask_survey(ask, said.append) is None
    assert said == ["! answer with a whole number from 1 to 5 ('skip' to leave the survey)"]
    answers = iter(["5", "", "4", "3", "   "])
    assert ask_survey(lambda _p: next(answers), said.append) == {
        "fair": 5, "human_like": 4, "negotiate_again": 3, "comment": "   "}


def _words(output: str) -> str:
    """The CLI's error box as one line of words (the box is drawn and wrapped to the terminal's width)."""
    return " ".join(output.replace("│", " ").split())


def test_a_missing_checkpoint_is_named_and_no_database_is_created(tmp_path):
    db_file = tmp_path / "never.db"
    for agent in ("/no/such/checkpoint", "./runs/missing", "~/no-such-run"):
        result = CliRunner().invoke(app, ["play", "--agent", agent, "--db", f"sqlite:///{db_file}"], input="walk\n")
        assert result.exit_code != 0
        assert f"no checkpoint at {agent}" in _words(result.output), result.output
        assert "unknown partner" not in result.output
    result = CliRunner().invoke(app, ["play", "--agent", "no_such_partner", "--db", f"sqlite:///{db_file}"])
    assert result.exit_code != 0 and "unknown partner 'no_such_partner'" in _words(result.output)
    assert not db_file.exists()
