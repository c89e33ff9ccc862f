"""Negotiate against an agent in the terminal (``parley play``); games are stored like web games.

Commands at your turn: ``propose 2 0 1`` (keep 2 books, no hat, 1 ball), ``insist 2 0 1``, ``agree``,
``walk``; append ``: text`` to send a message with the act, e.g. ``propose 1 1 0 : I need the hat``.
Short forms: ``p``, ``i``, ``a``, ``w``. ``help`` shows them again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from parley.envs.negotiation import ITEM_NAMES
from parley.human_eval.config import AgentSpec, StudyConfig, StudyConfigError
from parley.human_eval.service import LIKERT_QUESTIONS, StudyError, StudyService

HELP = ("Commands: propose A B C | insist A B C (how many books, hats, balls you keep) | agree | walk; "
        "add ': message' to say something. Short forms p, i, a, w.")
_KINDS = {"p": "propose", "propose": "propose", "i": "insist", "insist": "insist", "a": "agree", "agree": "agree",
          "w": "walk_away", "walk": "walk_away", "walk_away": "walk_away", "quit": "walk_away"}
_QUESTIONS = {"fair": "My partner was fair", "human_like": "My partner seemed human",
              "negotiate_again": "I would negotiate with this partner again"}


def agent_spec(agent: str) -> AgentSpec:
    """A scripted partner name, or a checkpoint path when ``agent`` names an existing file or directory.

    Something that reads as a path (with a ``/``, or starting with ``.`` or ``~``) but is not there is
    a missing checkpoint, never a partner name: :class:`StudyConfigError` says so.
    """
    path = Path(agent).expanduser()
    if path.exists():
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in path.resolve().name)[:64] or "checkpoint"
        return AgentSpec(name=stem, checkpoint=str(path))
    if "/" in agent or os.sep in agent or agent.startswith((".", "~")):
        raise StudyConfigError(f"no checkpoint at {agent}")
    return AgentSpec(name=agent, partner=agent)


def terminal_service(agent: str, db: str, *, study: str = "terminal", max_turns: int = 10,
                     seed: int = 0) -> StudyService:
    """The service for terminal play. The agent is built first, so a missing checkpoint or an unknown
    partner is reported before any database file is created."""
    from parley.human_eval.db import make_engine
    from parley.human_eval.service import build_policy

    config = terminal_config(agent, study=study, max_turns=max_turns, seed=seed)
    spec = config.agents[0]
    policy = build_policy(spec)
    return StudyService(config, make_engine(db), policies={spec.name: policy})


def terminal_config(agent: str, *, study: str = "terminal", max_turns: int = 10, seed: int = 0) -> StudyConfig:
    """A study of one agent with no time limits, for terminal play."""
    from parley.human_eval.config import _parse_contexts

    return StudyConfig(study=study, agents=(agent_spec(agent),), max_turns=max_turns, think_time_s=0.0,
                       idle_timeout_s=7 * 24 * 3600.0, session_time_s=7 * 24 * 3600.0,
                       sessions_per_participant=10**9, contexts=_parse_contexts({"count": 100, "seed": seed}, None, seed),
                       seed=seed)


def parse_command(line: str, num_items: int = 3) -> tuple[str, list[int] | None, str | None]:
    """``(kind, split, message)`` of a typed command; ValueError with a hint when it does not parse."""
    text, _, message = line.partition(":")
    words = text.split()
    if not words:
        raise ValueError("type a command. " + HELP)
    kind = _KINDS.get(words[0].lower())
    if kind is None:
        raise ValueError(f"unknown command {words[0]!r}. " + HELP)
    split = None
    if kind in ("propose", "insist"):
        if len(words) != 1 + num_items:
            raise ValueError(f"{kind} needs {num_items} numbers: how many {', '.join(n + 's' for n in ITEM_NAMES)} you keep")
        try:
            split = [int(w) for w in words[1:]]
        except ValueError:
            raise ValueError(f"{kind} needs whole numbers, got {' '.join(words[1:])!r}") from None
    elif len(words) > 1:
        raise ValueError(f"{kind} takes no numbers")
    return kind, split, message.strip() or None


def play(service: StudyService, pid: str, *, agent: str | None = None, ask: Callable[[str], str] = input,
         say: Callable[[str], None] = print, survey: bool = True) -> dict:
    """Play one game at the terminal; returns the final participant view of the game."""
    participant = service.enter(service.config.study, pid, source="terminal")
    game_id = service.start_game(participant, agent=agent, require_flow=False)
    view = service.advance(participant, game_id)
    say("Items: " + ", ".join(f"{i['count']} {i['name']}{'s' if i['count'] != 1 else ''} worth {i['your_value']} each to you"
                              for i in view["items"]))
    say(f"Your partner has its own values, which you do not see. At most {view['max_turns']} turns. {HELP}")
    shown = 0
    while True:
        for entry in view["transcript"][shown:]:
            who = "You" if entry["speaker"] == "you" else "Partner"
            say(f"{who}: {entry['text']}" + (f'  "{entry["message"]}"' if entry["message"] else ""))
        shown = len(view["transcript"])
        if view["status"] != "active":
            break
        if view["partner_offer"]:
            o = view["partner_offer"]
            say(f"(Partner's offer gives you {o['you_get']} = {o['your_points']} points; 'agree' to accept.)")
        try:
            line = ask(f"[turn {view['turn'] + 1}/{view['max_turns']}] > ")
        except EOFError:
            line = "walk"
        try:
            kind, split, message = parse_command(line, len(view["items"]))
            service.act(participant, game_id, kind, split, message=message)
        except (ValueError, StudyError) as err:
            say(f"! {getattr(err, 'message', err)}")
            view = service.advance(participant, game_id)
            continue
        service.agent_turn(game_id)
        view = service.advance(participant, game_id)
    o = view["outcome"]
    if o["result"] == "deal":
        say(f"Deal: you get {o['you_get']} ({', '.join(ITEM_NAMES)}) for {o['your_points']:g} points.")
    else:
        say(f"No deal ({o['result'].replace('_', ' ')}): 0 points.")
    where = service.engine.url.render_as_string(hide_password=True)
    say(f"Game {game_id} saved (study {service.config.study!r}, participant {pid!r}) in {where}.")
    if survey:
        answers = ask_survey(ask, say)
        if answers is None:
            say("Survey skipped.")
        else:
            code = service.submit_survey(participant, game_id, answers)
            say(f"Survey saved. Thank you. Completion code: {code}")
    return service.view(participant, game_id)


def ask_survey(ask: Callable[[str], str], say: Callable[[str], None]) -> dict | None:
    """The three Likert questions and a comment; None when the person skips the survey.

    Enter at the first question (or end of input) skips the survey. A wrong answer asks the same
    question again and keeps the answers already given; ``skip`` leaves the survey at any question.
    """
    answers: dict = {}
    for q in LIKERT_QUESTIONS:
        hint = "Enter to skip the survey" if not answers else "'skip' to leave the survey"
        while True:
            try:
                raw = ask(f"{_QUESTIONS[q]} (1 = strongly disagree .. 5 = strongly agree; {hint}): ").strip()
            except EOFError:
                return None
            if raw.lower() == "skip" or (not raw and not answers):
                return None
            if raw in {"1", "2", "3", "4", "5"}:
                answers[q] = int(raw)
                break
            say(f"! answer with a whole number from 1 to 5 ({hint})")
    try:
        answers["comment"] = ask("Any comment (optional): ")
    except EOFError:
        answers["comment"] = ""
    return answers
