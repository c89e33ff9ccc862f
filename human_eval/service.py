"""The study logic shared by the web app and terminal play: assignment, turns, timeouts, surveys.

:class:`StudyService` is the authority on every game. It rebuilds a game's
:class:`~parley.envs.negotiation.NegotiationState` from the append-only event log, checks each act
against the rules, writes the event before answering, and lets the agent answer through
``Policy.act(observation, action_mask)``. The person is always player 0 of the state; who moves first
is part of the balanced assignment.

Nothing a participant receives from :meth:`StudyService.view` contains the agent's values or score.

A study of ``protocol: text`` plays the text protocol of :mod:`parley.envs.negotiation_text_v0`
instead: its games replay ``say`` and ``select`` events on a
:class:`~parley.envs.negotiation_text_v0.TextNegotiationState` (the env's own rules), the person
talks and selects through :meth:`StudyService.send_text`, and the agent answers through
:class:`~parley.envs.realiser.ActTextPlayer` (or directly, when it speaks text). The agent's selection
is part of no view until the game is over.

Several server processes may run one study on one database. Locks inside a process only spare its
threads a wait; what holds across processes is in the database: an assignment takes the study's lock
row before it reads the counts (:meth:`StudyService.start_game`), and a change to a game appends events
at the next ``seq`` after the ones it replayed, so with ``(game_id, seq)`` unique it is stored only if
no other request changed the game in between (the turn it checked is still the turn it writes).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from parley.envs.negotiation import (
    ACT_KINDS,
    ITEM_NAMES,
    Context,
    IllegalActionError,
    NegotiationState,
    decode_act,
    encode_act,
    verbalize_act,
)
from parley.envs.negotiation_text_v0 import (
    NO_AGREEMENT,
    SELECTION_TOKEN,
    TextInputError,
    TextNegotiationState,
    format_selection,
    normalise_utterance,
)
from parley.envs.realiser import ActTextPlayer
from parley.human_eval.config import SESSION_PATTERNS, AgentSpec, StudyConfig
from parley.human_eval.db import Event, Game, GameContextColumns, Participant, StudyLock, Survey
from parley.human_eval.security import new_completion_code

HUMAN, AGENT = 0, 1
GAMES, EVENTS, SURVEYS, PARTICIPANTS = Game.__table__, Event.__table__, Survey.__table__, Participant.__table__
STUDY_LOCKS = StudyLock.__table__
_EVENT_VIEW_COLUMNS = (EVENTS.c.seq, EVENTS.c.kind, EVENTS.c.actor, EVENTS.c.action, EVENTS.c.text,
                       EVENTS.c.message, EVENTS.c.created_at)
_EVENT_OPTIONAL = ("action", "text", "message", "client_ts", "latency_ms", "data")
# The events that move a text-protocol game: an utterance (or <selection>, which ends the talk) and a selection.
TEXT_EVENTS = ("say", "select")
TEXT_ACTS = ("say", "end_talk", "select")
LIKERT_QUESTIONS = ("fair", "human_like", "negotiate_again")
LIKERT_RANGE = (1, 5)
# The survey's attention check: an item that tells the reader which answer to give.
ATTENTION_QUESTION = "To show that you are reading carefully, please choose 2 (disagree) here."
ATTENTION_ANSWER = 2
# The comprehension check before play: questions about the rules, each with its options and the
# index of the right one. Participants see the questions and options only.
COMPREHENSION_QUESTIONS = (
    {"id": "no_deal", "question": "If you and your partner do not reach a deal, how many points do you get?",
     "options": ["0 points", "Half of what the items are worth to you", "What your last offer was worth"],
     "answer": 0},
    {"id": "values", "question": "Who knows how much each item is worth to you?",
     "options": ["Only you", "You and your partner", "Nobody"], "answer": 0},
    {"id": "agree", "question": "How is a deal made?",
     "options": ["One side agrees to the other side's offer", "Both sides make the same offer twice",
                 "The turns run out"], "answer": 0},
)


def comprehension_questions() -> list[dict]:
    """The comprehension check as participants see it: questions and options, not the answers."""
    return [{k: q[k] for k in ("id", "question", "options")} for q in COMPREHENSION_QUESTIONS]


class StudyError(Exception):
    """A request the study cannot carry out; ``status_code`` is the HTTP status the web app answers with."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(StudyError):
    status_code = 422


class NotAllowed(StudyError):
    status_code = 403


class NotFound(StudyError):
    status_code = 404


class Conflict(StudyError):
    """The request does not fit the current state: not your turn, the game is over, limit reached."""

    status_code = 409


def build_policy(spec: AgentSpec, protocol: str = "acts"):
    """Instantiate the agent of a spec: a scripted partner by name, a checkpoint via ``load_policy``, or an
    arena player spec (:func:`parley.agents.arena.build_player` for the study's ``protocol``)."""
    if spec.player is not None:
        from parley.agents.arena import build_player, parse_player

        return build_player(parse_player(spec.player), protocol, concurrency=1)
    if spec.partner is not None:
        from parley.agents.partners.scripted import make_partner

        return make_partner(spec.partner, **spec.params)
    from parley.agents import load_policy

    return load_policy(spec.checkpoint, **spec.params)


class _GameRecord(GameContextColumns):
    """A games row as a plain object, with the JSON columns' accessors of :class:`Game`."""

    def __init__(self, row) -> None:
        self.__dict__.update(row)


class _EventRecord:
    """An event appended in this request, readable like a fetched row."""

    def __init__(self, **fields) -> None:
        self.__dict__.update(fields)


@dataclass
class _Replay:
    state: NegotiationState
    events: list  # rows with seq, kind, actor, action, text, message, created_at

    @property
    def last_time(self) -> float:
        return self.events[-1].created_at


class StudyService:
    """Runs one study on one database.

    ``policies`` maps agent names to ready policy objects and takes precedence over building them from
    the config (useful to share loaded checkpoints between services). Policies are otherwise built on
    first use, so a checkpoint is only loaded when someone is assigned to it.
    """

    def __init__(self, config: StudyConfig, engine: Engine, *, policies: dict[str, Any] | None = None,
                 clock=time.time, seed: int | None = None) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        self._policies: dict[str, Any] = dict(policies or {})
        self._policy_locks: dict[str, threading.Lock] = {}
        # One lock per game with requests in flight, dropped when the last of them finishes, so the
        # table never holds more entries than there are concurrent requests.
        self._game_locks: dict[int, list] = {}
        self._guard = threading.Lock()
        # SQLite allows one writer at a time; queueing writers here keeps them off its busy-retry loop.
        self._write_lock = threading.Lock() if engine.dialect.name == "sqlite" else None
        self._rng = random.Random(config.seed if seed is None else seed)

    # ------------------------------------------------------------------------------------------ helpers

    def policy(self, name: str):
        with self._guard:
            if name not in self._policy_locks:
                self._policy_locks[name] = threading.Lock()
            lock = self._policy_locks[name]
        with lock:
            if name not in self._policies:
                self._policies[name] = build_policy(self.config.agent(name), self.config.protocol)
            return self._policies[name]

    def warm_up(self, include_checkpoints: bool = False) -> None:
        """Build the scripted partners now (and checkpoints too if asked) so a bad name fails at start."""
        for spec in self.config.agents:
            if spec.partner is not None or include_checkpoints:
                self.policy(spec.name)

    @contextmanager
    def _game_lock(self, game_id: int) -> Iterator[None]:
        """Serialise the requests on one game; the entry is removed once no request holds or awaits it."""
        with self._guard:
            entry = self._game_locks.get(game_id)
            if entry is None:
                entry = self._game_locks[game_id] = [threading.Lock(), 0]
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._game_locks[game_id]

    def _writing(self):
        return self._write_lock if self._write_lock is not None else nullcontext()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    def _participant(self, s: Session, participant_id: int) -> Participant:
        p = s.get(Participant, participant_id)
        if p is None or p.study != self.config.study:
            raise NotAllowed("unknown participant for this study; open the study link again")
        return p

    # The game path (acts, views, timeouts, surveys) runs on SQLAlchemy Core: it is the hot path, and the
    # ORM's bookkeeping cost several times more than the queries themselves.

    def _owned_game(self, conn: Connection, participant_id: int, game_id: int) -> _GameRecord:
        row = conn.execute(select(GAMES).where(GAMES.c.id == game_id)).mappings().first()
        if row is None or row["study"] != self.config.study:
            raise NotFound(f"no negotiation {game_id} in this study")
        if row["participant_id"] != participant_id:
            raise NotAllowed("this negotiation belongs to another participant")
        return _GameRecord(row)

    def _replay(self, conn: Connection, game: _GameRecord) -> _Replay:
        ctx = Context(tuple(game.counts_list()), (tuple(game.human_values_list()), tuple(game.agent_values_list())))
        first = HUMAN if game.human_first else AGENT
        events = list(conn.execute(select(*_EVENT_VIEW_COLUMNS).where(EVENTS.c.game_id == game.id)
                                   .order_by(EVENTS.c.seq)).all())
        if _is_text(game):
            text_state = TextNegotiationState(ctx, first_player=first, max_messages=game.max_turns,
                                              max_utterance_chars=self._max_utterance_chars)
            for ev in events:
                if ev.kind in TEXT_EVENTS:
                    text_state.send(ev.text)
            return _Replay(text_state, events)
        state = NegotiationState(ctx, max_turns=game.max_turns, first_player=first)
        for ev in events:
            if ev.kind == "act":
                state.apply_action(ev.action)
        return _Replay(state, events)

    @property
    def _max_utterance_chars(self) -> int:
        return max(1, self.config.max_message_chars)

    def _event(self, game, seq: int, kind: str, actor: str, **fields) -> dict:
        """An events row (every column present, so rows can be inserted together)."""
        row = dict.fromkeys(_EVENT_OPTIONAL, None)
        row.update(participant_id=game.participant_id, game_id=game.id, seq=seq, kind=kind, actor=actor,
                   created_at=self.clock(), **fields)
        return row

    def _finish(self, game: _GameRecord, state: NegotiationState | TextNegotiationState, outcome: str,
                ended_by: str) -> dict:
        """Set the outcome summary on ``game`` and return it as the games-row update."""
        m = state.metrics()
        human_score, agent_score = (float(x) for x in m["scores"])
        if isinstance(state, TextNegotiationState):
            turns, deal = m["messages"], m["deal"]
        else:
            turns, deal = state.turn, state.agreed_split
        updates = {"ended_at": self.clock(), "outcome": outcome, "ended_by": ended_by, "turns": turns,
                   "human_score": human_score, "agent_score": agent_score,
                   "pareto_optimal": bool(m["pareto_optimal"]),
                   "human_gets": json.dumps(list(deal)) if deal is not None else None}
        game.__dict__.update(updates)
        return updates

    def _finish_if_over(self, game: _GameRecord, state: NegotiationState | TextNegotiationState, actor: str) -> dict:
        if isinstance(state, TextNegotiationState):
            if not state.terminal:
                return {}
            if state.deal() is not None:
                return self._finish(game, state, "deal", actor)
            # No deal: someone chose no agreement, or the two selections do not add up to the items.
            return self._finish(game, state, "no_agreement" if NO_AGREEMENT in state.selections else "mismatch",
                                actor)
        if not state.is_terminal():
            return {}
        if state.agreed_split is not None:
            return self._finish(game, state, "deal", actor)
        if state.walked_away_by is not None:
            return self._finish(game, state, "walk_away", actor)
        return self._finish(game, state, "turn_limit", "system")

    def _write(self, conn: Connection, game: _GameRecord, events: list[dict], updates: dict | None = None) -> None:
        """Append ``events`` and update the game row in one transaction, then commit."""
        with self._writing():
            try:
                conn.execute(insert(EVENTS), events)
                if updates:
                    conn.execute(update(GAMES).where(GAMES.c.id == game.id).values(**updates))
                conn.commit()
            except IntegrityError:
                conn.rollback()
                raise Conflict("another request changed this negotiation at the same time; "
                               "reload and try again") from None

    # ------------------------------------------------------------------------------------- participants

    def check_pid(self, external_id: str) -> str:
        """``external_id`` if it has the form of this study's participant ids; InvalidRequest otherwise."""
        if not isinstance(external_id, str) or not self.config.pid_pattern.fullmatch(external_id):
            platform = self.config.platform.name if self.config.platform else None
            form = {"prolific": "24 hexadecimal digits (a Prolific id)",
                    "mturk": "an MTurk worker id (capital letters and digits, starting with A)"}.get(
                platform, "1-128 letters, digits, '-', '_' or '.', starting with a letter or digit")
            raise InvalidRequest(f"the participant id in the link is not valid: it must be {form}")
        return external_id

    def enter(self, study: str, external_id: str, *, source: str = "web", platform_study_id: str | None = None,
              platform_session_id: str | None = None) -> int:
        """The participant row for a study link (created on first visit); returns its id.

        With a crowd platform, ``platform_study_id`` must match the configured study id, and a person
        who comes back under a new ``platform_session_id`` after playing is refused (a repeat attempt),
        as is anyone who took part in one of ``exclude_studies``.
        """
        if study != self.config.study:
            raise NotFound(f"unknown study {study!r}")
        external_id = self.check_pid(external_id)
        platform = self.config.platform
        if platform is not None and source == "web":
            self._check_platform_ids(platform_study_id, platform_session_id)
        with self._session() as s:
            existing = s.scalar(select(Participant).where(Participant.study == study,
                                                          Participant.external_id == external_id))
            if self.config.exclude_studies and s.scalar(select(Participant.id).where(
                    Participant.study.in_(self.config.exclude_studies),
                    Participant.external_id == external_id)) is not None:
                raise NotAllowed("Thank you for your interest. You took part in an earlier study of this "
                                 "series, so you cannot take part in this one; please return it.")
            if existing is not None:
                if platform_session_id and existing.platform_session_id != platform_session_id:
                    played = s.scalar(select(Game.id).where(Game.participant_id == existing.id).limit(1))
                    if played is not None or existing.returned_at is not None:
                        raise NotAllowed("Thank you for your interest. You have already taken part in this "
                                         "study, and it can be taken only once; please return it.")
                    with self._writing():
                        existing.platform_session_id = platform_session_id
                        s.commit()
                return existing.id
            with self._writing():
                p = Participant(study=study, external_id=external_id, source=source, created_at=self.clock(),
                                platform_study_id=platform_study_id, platform_session_id=platform_session_id)
                s.add(p)
                try:
                    s.flush()
                    s.add(Event(participant_id=p.id, kind="enter", actor="human", created_at=self.clock()))
                    s.commit()
                except IntegrityError:  # the same link opened twice at once
                    s.rollback()
                    return s.scalar(select(Participant.id).where(Participant.study == study,
                                                                 Participant.external_id == external_id))
            return p.id

    def _check_platform_ids(self, study_id: str | None, session_id: str | None) -> None:
        platform = self.config.platform
        names = {"prolific": ("STUDY_ID", "SESSION_ID"), "mturk": ("hitId", "assignmentId")}[platform.name]
        if platform.study_id is not None and study_id != platform.study_id:
            raise NotFound(f"this link is for another study: its {names[0]} is not this study's")
        if platform.name == "mturk" and session_id == "ASSIGNMENT_ID_NOT_AVAILABLE":
            raise Conflict("This is a preview of the task: accept the HIT to take part.")
        if not session_id or not SESSION_PATTERNS[platform.name].fullmatch(session_id):
            raise InvalidRequest(f"the link lacks a valid {names[1]}; open the study from {platform.name} again")

    def record_step(self, participant_id: int, step: str) -> None:
        """Mark ``consent`` or ``instructions`` as done (idempotent; instructions need consent first)."""
        if step not in ("consent", "instructions"):
            raise InvalidRequest(f"unknown step {step!r}; steps are consent, instructions")
        with self._session() as s:
            p = self._participant(s, participant_id)  # read first: never wait for a connection under the lock
            now = self.clock()
            if step == "consent" and p.consented_at is None:
                p.consented_at = now
            elif step == "instructions":
                if p.consented_at is None:
                    raise Conflict("give consent before the instructions")
                if p.instructed_at is None:
                    p.instructed_at = now
            else:
                return
            with self._writing():
                s.add(Event(participant_id=p.id, kind=step, actor="human", created_at=now))
                s.commit()

    def participant_state(self, participant_id: int) -> dict:
        """Where the participant is in the flow, with the current game's view when there is one."""
        with self.engine.connect() as conn:
            p = conn.execute(select(PARTICIPANTS).where(PARTICIPANTS.c.id == participant_id)).first()
            if p is None or p.study != self.config.study:
                raise NotAllowed("unknown participant for this study; open the study link again")
            games = conn.execute(select(GAMES.c.id, GAMES.c.outcome)
                                 .where(GAMES.c.participant_id == p.id).order_by(GAMES.c.id)).all()
            surveyed = set(conn.execute(select(SURVEYS.c.game_id).where(SURVEYS.c.participant_id == p.id)).scalars())
        # Completion codes are never part of the state: they are given once, in the survey's answer, so
        # a link (or a token) alone does not reveal them.
        state = {"study": p.study, "pid": p.external_id, "sessions_used": len(games),
                 "sessions_allowed": self.config.sessions_per_participant,
                 "completed": sum(g.id in surveyed for g in games), "game": None,
                 "platform": self.config.platform.name if self.config.platform else None,
                 "protocol": self.config.protocol,
                 "attention_question": ATTENTION_QUESTION if self.config.attention_check else None}
        attempts = self.config.comprehension_attempts
        if p.returned_at is not None:
            state["stage"] = "returned"
        elif p.consented_at is None:
            state["stage"] = "consent"
        elif p.instructed_at is None:
            state["stage"] = "instructions"
        elif attempts and p.comprehension_passed_at is None:
            tries = p.comprehension_tries or 0
            state["stage"] = "comprehension" if tries < attempts else "screened_out"
            state["comprehension"] = {"tries_left": attempts - tries, "questions": comprehension_questions()}
        elif not games:
            state["stage"] = "ready"
        else:
            last = games[-1]
            if last.outcome is None:
                state["game"] = self.advance(participant_id, last.id)
                state["stage"] = "negotiation" if state["game"]["status"] == "active" else "survey"
            elif last.id not in surveyed:
                state["stage"] = "survey"
                state["game"] = self.view(participant_id, last.id)
            else:
                state["stage"] = "done" if len(games) >= self.config.sessions_per_participant else "ready"
                state["game"] = self.view(participant_id, last.id)
        return state

    # -------------------------------------------------------------------------------------------- games

    def start_game(self, participant_id: int, *, agent: str | None = None, require_flow: bool = True) -> int:
        """Assign an agent and context (balanced) and start a negotiation; returns the game id."""
        # The assignment serialises in the database, not only in this process: several server processes
        # may share it. The study's lock row is written first, before anything is read, so the counts
        # below are read under the lock (on SQLite a write lock taken by the transaction's first
        # statement; on PostgreSQL the row lock). This process's writers queue behind it as usual.
        with self._writing(), self._session() as s:
            self._lock_assignments(s)
            p = self._participant(s, participant_id)
            if require_flow and (p.consented_at is None or p.instructed_at is None):
                raise Conflict("consent and instructions come before the negotiation")
            if require_flow and self.config.comprehension_attempts and p.comprehension_passed_at is None:
                raise Conflict("answer the questions about the rules before the negotiation")
            if p.returned_at is not None:
                raise Conflict("you have left this study")
            games = list(s.scalars(select(Game).where(Game.participant_id == p.id)))
            if any(g.outcome is None for g in games):
                raise Conflict("finish the current negotiation first")
            surveyed = set(s.scalars(select(Survey.game_id).where(Survey.participant_id == p.id)))
            if require_flow and any(g.id not in surveyed for g in games):
                raise Conflict("answer the survey of your last negotiation first")
            if len(games) >= self.config.sessions_per_participant:
                raise Conflict(f"session limit reached: {self.config.sessions_per_participant} per participant")
            agent_name, ctx_index, human_first = self._assign(s, games, agent)
            text = self.config.protocol == "text"
            ctx = self.config.contexts[ctx_index]
            game = Game(participant_id=p.id, study=p.study, agent=agent_name, context_index=ctx_index,
                        counts=json.dumps(list(ctx.counts)), human_values=json.dumps(list(ctx.values[0])),
                        agent_values=json.dumps(list(ctx.values[1])), human_first=human_first,
                        max_turns=self.config.max_messages if text else self.config.max_turns,
                        protocol=self.config.protocol, started_at=self.clock())
            s.add(game)
            s.flush()
            s.add(Event(**self._event(game, 0, "start", "system",
                                      data=json.dumps({"agent": agent_name, "context_index": ctx_index,
                                                       "human_first": bool(human_first)}))))
            s.commit()
            game_id = game.id
        if not human_first:
            self.agent_turn(game_id)
        return game_id

    def _lock_assignments(self, s: Session) -> None:
        """Take this study's assignment lock for the rest of the transaction (its first statement)."""
        bump = update(STUDY_LOCKS).where(STUDY_LOCKS.c.study == self.config.study).values(
            assignments=STUDY_LOCKS.c.assignments + 1)
        if s.execute(bump).rowcount:
            return
        try:  # the study's first assignment: create the row (inside a savepoint, in case another does too)
            with s.begin_nested():
                s.execute(insert(STUDY_LOCKS).values(study=self.config.study, assignments=1))
        except IntegrityError:
            s.execute(bump)

    def _assign(self, s: Session, own_games: list[Game], agent: str | None) -> tuple[str, int, bool]:
        """Least-used agent (preferring ones this person has not met), then least-used context and order."""
        rows = s.execute(select(Game.agent, Game.context_index, Game.human_first, func.count())
                         .where(Game.study == self.config.study)
                         .group_by(Game.agent, Game.context_index, Game.human_first)).all()
        cell_counts: Counter = Counter()
        agent_counts: Counter = Counter()
        for name, ctx, first, n in rows:
            cell_counts[(name, ctx, bool(first))] += n
            agent_counts[name] += n
        met = {g.agent for g in own_games}
        seen = {g.context_index for g in own_games}
        if agent is None:
            names = [a.name for a in self.config.agents]
            agent = min(names, key=lambda n: (n in met, agent_counts[n], self._rng.random()))
        else:
            self.config.agent(agent)  # raises KeyError for an unknown name
        cells = [(c, first) for c in range(len(self.config.contexts)) for first in (True, False)]
        ctx_index, human_first = min(
            cells, key=lambda cell: (cell[0] in seen, cell_counts[(agent, cell[0], cell[1])], self._rng.random()))
        return agent, ctx_index, human_first

    def act(self, participant_id: int, game_id: int, kind: str, split: list[int] | None = None, *,
            message: str | None = None, client_ts: float | None = None, expected_turn: int | None = None,
            reply: bool = False) -> dict:
        """Record the person's act after checking it against the rules.

        The agent answers in :meth:`agent_turn`, or with ``reply=True`` at once, stored in the same
        transaction (one durable write instead of two when there is no think time to wait out).
        Returns the participant's view after the write, as :meth:`view` would.
        """
        if kind not in ACT_KINDS:
            raise InvalidRequest(f"unknown act {kind!r}; acts are {', '.join(ACT_KINDS)}")
        if message is not None:
            message = message.replace("\x00", "").strip()
            if len(message) > self.config.max_message_chars:
                raise InvalidRequest(f"message too long: {len(message)} characters, at most "
                                     f"{self.config.max_message_chars}")
            message = message or None
        with self._game_lock(game_id), self.engine.connect() as conn:
            game, replay = self._load_game(conn, participant_id, game_id)
            if _is_text(game):
                raise Conflict("this negotiation uses the text protocol: send messages and your selection instead "
                               "of offers")
            state = replay.state
            counts = game.counts_list()
            if kind in ("propose", "insist"):
                if split is None or len(split) != len(counts):
                    raise InvalidRequest(f"{kind} needs 'split': how many of each item you keep "
                                         f"({', '.join(ITEM_NAMES)}), e.g. [1, 0, 2]")
                if not all(isinstance(k, int) and not isinstance(k, bool) for k in split):
                    raise InvalidRequest(f"'split' must be whole numbers, got {split!r}")
                bad = [f"{name}: {k} (0..{c})" for name, k, c in zip(ITEM_NAMES, split, counts, strict=True)
                       if not 0 <= k <= c]
                if bad:
                    raise InvalidRequest(f"offer out of range: {', '.join(bad)}")
            elif split is not None:
                raise InvalidRequest(f"{kind} takes no split")
            action = encode_act(kind, split)
            retried = self._recorded_retry(conn, game, replay, expected_turn, action, message)
            if retried is not None:
                return retried
            _check_persons_turn(game, state, expected_turn, state.turn, "act")
            try:
                state.apply_action(action)
            except IllegalActionError:
                if kind == "agree":
                    raise Conflict("there is no offer from your partner to agree to") from None
                raise
            now = self.clock()
            seq = replay.events[-1].seq + 1
            events = [self._event(game, seq, "act", "human", action=action, text=verbalize_act(action, counts),
                                  message=message, client_ts=client_ts,
                                  latency_ms=(now - replay.last_time) * 1000.0)]
            updates = self._finish_if_over(game, state, "human")
            if reply and not state.is_terminal():
                event, more = self._agent_move(game, state, seq + 1)
                events.append(event)
                updates.update(more)
            return self._commit_move(conn, participant_id, game, replay, events, updates, lambda g, r: (
                self._recorded_retry(conn, g, r, expected_turn, action, message)))

    def _commit_move(self, conn: Connection, participant_id: int, game: _GameRecord, replay: _Replay,
                     events: list[dict], updates: dict, recorded_retry) -> dict:
        """Write the person's move (and the agent's reply, if made) and return the view after it.

        When another server process wrote to this game first (the per-game lock is per process; the
        unique (game, seq) of events decides across processes) and that was this very move, sent again
        through the other process, it stands once and this answer shows it: ``recorded_retry(game,
        replay)`` gives that view, or None when the move is not recorded, and the Conflict stands.
        """
        try:
            self._write(conn, game, events, updates)
        except Conflict:
            game, replay = self._load_game(conn, participant_id, game.id)
            retried = recorded_retry(game, replay)
            if retried is None:
                raise
            return retried
        replay.events.extend(_EventRecord(**e) for e in events)
        # The game was running until this move, so it has no survey: the view needs no further query.
        return self._build_view(game, replay, survey_done=False)

    def _view_after_retry(self, conn: Connection, game: _GameRecord, replay: _Replay) -> dict:
        survey_done = game.outcome is not None and conn.execute(
            select(SURVEYS.c.id).where(SURVEYS.c.game_id == game.id)).first() is not None
        return self._build_view(game, replay, survey_done=survey_done)

    def _recorded_retry(self, conn: Connection, game: _GameRecord, replay: _Replay, expected_turn: int | None,
                        action: int, message: str | None) -> dict | None:
        """The view, if the person's act for ``expected_turn`` is already recorded as ``action`` with
        ``message`` (a retry whose first answer was lost); None otherwise."""
        if expected_turn is None or expected_turn >= replay.state.turn:
            return None
        acts = [ev for ev in replay.events if ev.kind == "act"]
        done = acts[expected_turn] if 0 <= expected_turn < len(acts) else None
        if done is None or (done.actor, done.action, done.message) != ("human", action, message):
            return None
        return self._view_after_retry(conn, game, replay)

    def agent_turn(self, game_id: int) -> bool:
        """Let the agent act if it is its turn; returns whether it acted. Safe to call at any time."""
        with self._game_lock(game_id), self.engine.connect() as conn:
            row = conn.execute(select(GAMES).where(GAMES.c.id == game_id)).mappings().first()
            if row is None or row["outcome"] is not None:
                return False
            game = _GameRecord(row)
            replay = self._replay(conn, game)
            state = replay.state
            if state.current_player != AGENT or _over(state):
                return False
            event, updates = self._agent_move(game, state, replay.events[-1].seq + 1)
            self._write(conn, game, [event], updates)
            return True

    def _agent_move(self, game: _GameRecord, state: NegotiationState | TextNegotiationState,
                    seq: int) -> tuple[dict, dict]:
        """Ask the agent for its act and apply it to ``state``; returns the event row and game-row updates."""
        if isinstance(state, TextNegotiationState):
            return self._agent_text_move(game, state, seq)
        started = time.perf_counter()
        error = None
        try:
            policy = self.policy(game.agent)
            with self._policy_locks[game.agent]:
                action = int(policy.act(state.observation(AGENT), state.legal_action_mask()))
            state.apply_action(action)
        except Exception as err:  # a broken agent ends the game instead of hanging the participant
            error = f"{type(err).__name__}: {err}"
        compute_ms = (time.perf_counter() - started) * 1000.0
        if error is None:
            event = self._event(game, seq, "act", "agent", action=action,
                                text=verbalize_act(action, game.counts_list()), latency_ms=compute_ms)
            return event, self._finish_if_over(game, state, "agent")
        event = self._event(game, seq, "agent_error", "system", latency_ms=compute_ms,
                            data=json.dumps({"error": error[:2000]}))
        return event, self._finish(game, state, "agent_error", "system")

    def _agent_text_move(self, game: _GameRecord, state: TextNegotiationState, seq: int) -> tuple[dict, dict]:
        """The agent's turn of a text game: an utterance (or ``<selection>``) while talking, its secret
        selection after; returns the event row and game-row updates."""
        started = time.perf_counter()
        error = None
        kind = "select" if state.selecting else "say"
        try:
            policy = self.policy(game.agent)
            with self._policy_locks[game.agent]:
                player = policy if callable(getattr(policy, "reply", None)) else ActTextPlayer(
                    policy, seed=game.id * 1009 + seq, max_turns=self.config.max_turns)
                reply = player.reply(state.observation(AGENT))
            recorded = _recorded_text(state, reply)
            state.send(recorded)
        except Exception as err:  # a broken agent ends the game instead of hanging the participant
            error = f"{type(err).__name__}: {err}"
        compute_ms = (time.perf_counter() - started) * 1000.0
        if error is None:
            event = self._event(game, seq, kind, "agent", text=recorded, latency_ms=compute_ms)
            return event, self._finish_if_over(game, state, "agent")
        event = self._event(game, seq, "agent_error", "system", latency_ms=compute_ms,
                            data=json.dumps({"error": error[:2000]}))
        return event, self._finish(game, state, "agent_error", "system")

    def send_text(self, participant_id: int, game_id: int, kind: str, *, text: str | None = None,
                  split: list[int] | None = None, client_ts: float | None = None,
                  expected_turn: int | None = None, reply: bool = False) -> dict:
        """The person's move in a text-protocol game, checked by the text protocol's rules.

        ``kind`` is ``say`` (``text``: an utterance, at most ``max_message_chars`` after dropping control
        and non-ASCII characters), ``end_talk`` (send ``<selection>``) or ``select`` (``split``: how many
        of each item the person keeps, or None for no agreement). ``expected_turn`` is the view's
        ``turn``: a retried move is recorded once. The agent answers as in :meth:`act`. Returns the view.
        """
        if kind not in TEXT_ACTS:
            raise InvalidRequest(f"unknown move {kind!r}; moves are {', '.join(TEXT_ACTS)}")
        if kind == "say":
            try:
                recorded = normalise_utterance(text, self._max_utterance_chars)
            except TextInputError as err:
                raise InvalidRequest(str(err)) from None
        elif kind == "end_talk":
            recorded = SELECTION_TOKEN
        with self._game_lock(game_id), self.engine.connect() as conn:
            game, replay = self._load_game(conn, participant_id, game_id)
            if not _is_text(game):
                raise Conflict("this negotiation is played with offers, not messages")
            state: TextNegotiationState = replay.state
            if kind == "select":
                recorded = format_selection(_checked_selection(split, game.counts_list()))
            retried = self._recorded_text_retry(conn, game, replay, expected_turn, kind, recorded)
            if retried is not None:
                return retried
            _check_persons_turn(game, state, expected_turn, _text_turn(replay), "move")
            if state.selecting and kind != "select":
                raise Conflict("the talk is over: submit your selection")
            if not state.selecting and kind == "select":
                raise Conflict("end the talk before you submit your selection")
            state.send(recorded)
            now = self.clock()
            seq = replay.events[-1].seq + 1
            events = [self._event(game, seq, "select" if kind == "select" else "say", "human", text=recorded,
                                  client_ts=client_ts, latency_ms=(now - replay.last_time) * 1000.0)]
            updates = self._finish_if_over(game, state, "human")
            if reply and not state.terminal and state.current_player == AGENT:
                event, more = self._agent_move(game, state, seq + 1)
                events.append(event)
                updates.update(more)
            return self._commit_move(conn, participant_id, game, replay, events, updates, lambda g, r: (
                self._recorded_text_retry(conn, g, r, expected_turn, kind, recorded)))

    def _recorded_text_retry(self, conn: Connection, game: _GameRecord, replay: _Replay, expected_turn: int | None,
                             kind: str, recorded: str) -> dict | None:
        """The view, if the person's move for ``expected_turn`` is already recorded as ``recorded``; else None."""
        moves = [ev for ev in replay.events if ev.kind in TEXT_EVENTS]
        if expected_turn is None or not 0 <= expected_turn < len(moves):
            return None
        done = moves[expected_turn]
        if (done.actor, done.kind == "select", done.text) != ("human", kind == "select", recorded):
            return None
        return self._view_after_retry(conn, game, replay)

    def _timed_out(self, game: _GameRecord, replay: _Replay) -> bool:
        now = self.clock()
        if now - game.started_at > self.config.session_time_s:
            return True
        return replay.state.current_player == HUMAN and now - replay.last_time > self.config.idle_timeout_s

    def _load_game(self, conn: Connection, participant_id: int, game_id: int) -> tuple[_GameRecord, _Replay]:
        """The participant's game replayed from its events, with an idle timeout that has passed recorded first."""
        game = self._owned_game(conn, participant_id, game_id)
        replay = self._replay(conn, game)
        if game.outcome is None and self._timed_out(game, replay):
            self._record_timeout(conn, game, replay)
        return game, replay

    def _record_timeout(self, conn: Connection, game: _GameRecord, replay: _Replay) -> None:
        event = self._event(game, replay.events[-1].seq + 1, "timeout", "system",
                            data=json.dumps({"idle_s": round(self.clock() - replay.last_time, 3)}))
        self._write(conn, game, [event], self._finish(game, replay.state, "timeout", "system"))
        replay.events.append(_EventRecord(**event))

    def advance(self, participant_id: int, game_id: int) -> dict:
        """Apply a pending timeout or agent reply (e.g. after a restart), then return :meth:`view`'s answer."""
        with self._game_lock(game_id), self.engine.connect() as conn:
            game, replay = self._load_game(conn, participant_id, game_id)
            state = replay.state
            # An owed reply is made here only once its think time is over (e.g. after a restart): a read
            # during the think time must not show the reply before the act's own answer does.
            if (game.outcome is None and state.current_player == AGENT and not _over(state)
                    and self.clock() - replay.last_time >= self.config.think_time_s):
                event, updates = self._agent_move(game, state, replay.events[-1].seq + 1)
                self._write(conn, game, [event], updates)
                replay.events.append(_EventRecord(**event))
            survey_done = game.outcome is not None and conn.execute(
                select(SURVEYS.c.id).where(SURVEYS.c.game_id == game.id)).first() is not None
            return self._build_view(game, replay, survey_done=survey_done)

    def expire_idle_games(self) -> int:
        """End every game whose person has gone idle and finish replies owed by agents; returns games ended."""
        with self._session() as s:
            open_games = list(s.execute(select(Game.id, Game.participant_id).where(
                Game.study == self.config.study, Game.outcome.is_(None))).all())
        ended = 0
        for game_id, participant_id in open_games:
            try:
                view = self.advance(participant_id, game_id)
            except Conflict:  # another server process ended or moved this game at the same moment
                continue
            ended += view["status"] == "finished"
        return ended

    # ------------------------------------------------------------------------------------------- views

    def view(self, participant_id: int, game_id: int) -> dict:
        """What the participant may see of a game: never the agent's values or score."""
        with self.engine.connect() as conn:
            game = self._owned_game(conn, participant_id, game_id)
            replay = self._replay(conn, game)
            survey = conn.execute(select(SURVEYS.c.id).where(SURVEYS.c.game_id == game.id)).first()
        return self._build_view(game, replay, survey_done=survey is not None)

    def _build_view(self, game: _GameRecord, replay: _Replay, *, survey_done: bool) -> dict:
        if _is_text(game):
            return self._build_text_view(game, replay, survey_done=survey_done)
        state = replay.state
        counts, values = game.counts_list(), game.human_values_list()
        transcript = []
        for ev in replay.events:
            if ev.kind != "act":
                continue
            kind, split = decode_act(ev.action)
            entry = {"seq": ev.seq, "speaker": "you" if ev.actor == "human" else "partner", "kind": kind,
                     "text": ev.text, "message": ev.message}
            if split is not None:
                # what the participant would get under this offer
                entry["you_get"] = list(split) if ev.actor == "human" else [c - k for c, k in zip(counts, split, strict=True)]
            transcript.append(entry)
        partner_offer = None
        if state.standing_offer is not None and state.standing_offer[0] == AGENT:
            you_get = [c - k for c, k in zip(counts, state.standing_offer[1], strict=True)]
            partner_offer = {"you_get": you_get, "your_points": sum(v * k for v, k in zip(values, you_get, strict=True))}
        view = self._view_common(game, replay, survey_done=survey_done)
        view.update(turn=state.turn, can_agree=view["your_turn"] and partner_offer is not None,
                    partner_offer=partner_offer, transcript=transcript)
        return view

    def _view_common(self, game: _GameRecord, replay: _Replay, *, survey_done: bool) -> dict:
        """The parts of a view both protocols share: items, whose turn, time left and the outcome."""
        counts, values = game.counts_list(), game.human_values_list()
        now = self.clock()
        active = game.outcome is None
        your_turn = active and replay.state.current_player == HUMAN
        session_left = self.config.session_time_s - (now - game.started_at)
        seconds_left = session_left
        if your_turn:
            seconds_left = min(session_left, self.config.idle_timeout_s - (now - replay.last_time))
        view = {
            "game_id": game.id,
            "protocol": "text" if _is_text(game) else "acts",
            "status": "active" if active else "finished",
            "items": [{"name": n, "count": c, "your_value": v} for n, c, v in zip(ITEM_NAMES, counts, values, strict=True)],
            "max_turns": game.max_turns,
            "your_turn": your_turn,
            "you_move_first": bool(game.human_first),
            "seconds_left": max(0.0, round(seconds_left, 1)) if active else 0.0,
            "idle_timeout_s": self.config.idle_timeout_s,
            "think_time_s": self.config.think_time_s,
            "outcome": None,
            "survey_done": survey_done,
        }
        if not active:
            deal = game.outcome == "deal"
            view["outcome"] = {
                "result": game.outcome,
                "ended_by": {"human": "you", "agent": "partner"}.get(game.ended_by or "", "system"),
                "you_get": json.loads(game.human_gets) if deal else None,
                "your_points": game.human_score,
            }
        return view

    def _build_text_view(self, game: _GameRecord, replay: _Replay, *, survey_done: bool) -> dict:
        """A text game as the person sees it: the talk, the phase, and their own selection. The agent's
        selection appears only in the outcome, once the game is over."""
        state: TextNegotiationState = replay.state
        transcript = [{"seq": ev.seq, "speaker": "you" if ev.actor == "human" else "partner",
                       "kind": "end_talk" if ev.text == SELECTION_TOKEN else "say",
                       "text": None if ev.text == SELECTION_TOKEN else ev.text}
                      for ev in replay.events if ev.kind == "say"]
        view = self._view_common(game, replay, survey_done=survey_done)
        view.update(turn=_text_turn(replay), phase="select" if state.selecting else "talk",
                    max_messages=game.max_turns, messages_sent=len(state.utterances),
                    max_message_chars=self._max_utterance_chars, transcript=transcript,
                    your_selection=_selection_view(state.selections[HUMAN]))
        if view["outcome"] is not None:
            view["outcome"]["partner_selection"] = _selection_view(state.selections[AGENT])
        return view

    # ------------------------------------------------------------------------------------------ surveys

    def submit_survey(self, participant_id: int, game_id: int, answers: dict) -> str:
        """Store the post-game survey and return the game's completion code."""
        clean = {}
        for q in LIKERT_QUESTIONS:
            v = answers.get(q)
            if isinstance(v, bool) or not isinstance(v, int) or not LIKERT_RANGE[0] <= v <= LIKERT_RANGE[1]:
                raise InvalidRequest(f"{q} must be an integer {LIKERT_RANGE[0]}-{LIKERT_RANGE[1]}, got {v!r}")
            clean[q] = v
        comment = (answers.get("comment") or "").replace("\x00", "").strip()
        if len(comment) > 4000:
            raise InvalidRequest(f"comment too long: {len(comment)} characters, at most 4000")
        attention = answers.get("attention")
        if self.config.attention_check:
            if isinstance(attention, bool) or not isinstance(attention, int) or not (
                    LIKERT_RANGE[0] <= attention <= LIKERT_RANGE[1]):
                raise InvalidRequest(f"attention must be an integer {LIKERT_RANGE[0]}-{LIKERT_RANGE[1]}, "
                                     f"got {attention!r}")
            clean["attention"] = attention
            clean["attention_passed"] = attention == ATTENTION_ANSWER
        elif attention is not None:
            raise InvalidRequest("this study's survey has no attention item")
        with self._game_lock(game_id), self.engine.connect() as conn:
            for _ in range(3):
                game = self._owned_game(conn, participant_id, game_id)
                if game.outcome is None:
                    raise Conflict("the survey comes after the negotiation ends")
                if conn.execute(select(SURVEYS.c.id).where(SURVEYS.c.game_id == game.id)).first() is not None:
                    raise Conflict("the survey for this negotiation was already answered")
                last_seq = conn.execute(select(func.max(EVENTS.c.seq)).where(EVENTS.c.game_id == game.id)).scalar()
                code = new_completion_code()
                with self._writing():
                    try:
                        conn.execute(insert(SURVEYS).values(game_id=game.id, participant_id=participant_id,
                                                            comment=comment, created_at=self.clock(), **clean))
                        conn.execute(insert(EVENTS), [self._event(game, last_seq + 1, "survey", "human",
                                                                  data=json.dumps({**clean, "comment": comment}))])
                        conn.execute(update(GAMES).where(GAMES.c.id == game.id).values(completion_code=code))
                        conn.commit()
                        return code
                    except IntegrityError:  # a colliding code (1 in 32**12) or a concurrent request
                        conn.rollback()
        raise Conflict("the survey could not be stored; reload and try again")

    def completion(self, participant_id: int, game_id: int) -> dict:
        """What the participant takes back to the platform after a game's survey.

        ``completion_code`` is the game's own code; with a platform configured, ``platform_code`` is the
        study's code for the platform (its timeout code when the negotiation timed out) and
        ``redirect_url`` where the page sends the participant (None where the code is pasted instead).
        """
        with self.engine.connect() as conn:
            game = self._owned_game(conn, participant_id, game_id)
        out = {"completion_code": game.completion_code, "platform_code": None, "redirect_url": None}
        platform = self.config.platform
        if platform is not None and game.completion_code is not None:
            code = platform.timeout_code if game.outcome == "timeout" and platform.timeout_code else \
                platform.completion_code
            out.update(platform_code=code, redirect_url=platform.completion_url(code))
        return out

    def answer_comprehension(self, participant_id: int, answers: dict) -> dict:
        """Check answers to the rules questions; returns ``{passed, wrong, tries_left}``.

        Each try is logged as an event. Once the tries are used up the participant is screened out.
        """
        attempts = self.config.comprehension_attempts
        if not attempts:
            raise Conflict("this study has no comprehension check")
        ids = [q["id"] for q in COMPREHENSION_QUESTIONS]
        if set(answers) != set(ids):
            raise InvalidRequest(f"answer every question: {', '.join(ids)}")
        for q in COMPREHENSION_QUESTIONS:
            v = answers[q["id"]]
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < len(q["options"]):
                raise InvalidRequest(f"{q['id']} must be an option number 0-{len(q['options']) - 1}, got {v!r}")
        wrong = [q["id"] for q in COMPREHENSION_QUESTIONS if answers[q["id"]] != q["answer"]]
        with self._session() as s:
            p = self._participant(s, participant_id)
            if p.instructed_at is None:
                raise Conflict("read the instructions before the questions about them")
            if p.comprehension_passed_at is not None:
                return {"passed": True, "wrong": [], "tries_left": attempts - (p.comprehension_tries or 0)}
            tries = p.comprehension_tries or 0
            if tries >= attempts:
                raise Conflict("no tries left at the questions about the rules")
            now = self.clock()
            with self._writing():
                p.comprehension_tries = tries + 1
                if not wrong:
                    p.comprehension_passed_at = now
                s.add(Event(participant_id=p.id, kind="comprehension", actor="human", created_at=now,
                            data=json.dumps({"answers": answers, "wrong": wrong})))
                s.commit()
            return {"passed": not wrong, "wrong": wrong, "tries_left": attempts - tries - 1}

    def leave(self, participant_id: int) -> dict:
        """The participant leaves the study early: an open negotiation ends, and they get the returned code."""
        with self._session() as s:
            p = self._participant(s, participant_id)
            open_game = s.scalar(select(Game.id).where(Game.participant_id == p.id, Game.outcome.is_(None)))
        if open_game is not None:
            with self._game_lock(open_game), self.engine.connect() as conn:
                game, replay = self._load_game(conn, participant_id, open_game)
                if game.outcome is None:
                    event = self._event(game, replay.events[-1].seq + 1, "returned", "human")
                    self._write(conn, game, [event], self._finish(game, replay.state, "returned", "human"))
        with self._session() as s:
            p = self._participant(s, participant_id)
            if p.returned_at is None:
                with self._writing():
                    p.returned_at = self.clock()
                    s.add(Event(participant_id=p.id, kind="returned", actor="human", created_at=p.returned_at))
                    s.commit()
        platform = self.config.platform
        code = platform.returned_code if platform is not None else None
        return {"platform_code": code, "redirect_url": platform.completion_url(code) if code else None}

    def bonuses(self) -> list[dict]:
        """The bonus each participant earned: ``bonus_per_point`` per point of each finished game
        (capped at ``bonus_max`` per game), rounded to cents; participants earning nothing are left out."""
        rule, cap = self.config.bonus_per_point, self.config.bonus_max
        if rule <= 0:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(select(PARTICIPANTS.c.external_id, GAMES.c.human_score)
                                .join(GAMES, GAMES.c.participant_id == PARTICIPANTS.c.id)
                                .where(GAMES.c.study == self.config.study, GAMES.c.outcome.is_not(None))
                                .order_by(PARTICIPANTS.c.id, GAMES.c.id)).all()
        totals: dict[str, float] = {}
        for pid, score in rows:
            amount = rule * (score or 0.0)
            totals[pid] = totals.get(pid, 0.0) + (amount if cap is None else min(cap, amount))
        return [{"pid": pid, "amount": round(total + 1e-9, 2)} for pid, total in totals.items()
                if round(total + 1e-9, 2) > 0]

    # ------------------------------------------------------------------------------------------- admin

    def status(self) -> dict:
        """Live study status for the admin page."""
        self.expire_idle_games()
        with self._session() as s:
            games = list(s.scalars(select(Game).where(Game.study == self.config.study)))
            n_participants = s.scalar(select(func.count()).select_from(Participant)
                                      .where(Participant.study == self.config.study))
            n_surveys = s.scalar(select(func.count()).select_from(Survey).join(Game, Survey.game_id == Game.id)
                                 .where(Game.study == self.config.study))
        per_agent = {}
        for spec in self.config.agents:
            mine = [g for g in games if g.agent == spec.name]
            done = [g for g in mine if g.outcome is not None]
            deals = [g for g in done if g.outcome == "deal"]
            per_agent[spec.name] = {
                "games": len(mine), "active": len(mine) - len(done), "finished": len(done), "deals": len(deals),
                "agreement_rate": len(deals) / len(done) if done else None,
                "mean_human_score": float(np.mean([g.human_score for g in done])) if done else None,
                "mean_agent_score": float(np.mean([g.agent_score for g in done])) if done else None,
            }
        status = {"study": self.config.study, "participants": n_participants, "games": len(games),
                  "active_games": sum(g.outcome is None for g in games), "surveys": n_surveys, "agents": per_agent}
        if self.config.bonus_per_point > 0:
            bonuses = self.bonuses()
            status["bonus"] = {"participants": len(bonuses), "currency": self.config.bonus_currency,
                               "total": round(sum(b["amount"] for b in bonuses), 2)}
        return status


    def games_overview(self) -> list[dict]:
        """Every game of the study, newest first, as the admin's list to pick a replay from."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(GAMES.c.id, PARTICIPANTS.c.external_id, GAMES.c.agent, GAMES.c.outcome,
                                       GAMES.c.turns, GAMES.c.human_score, GAMES.c.agent_score, GAMES.c.started_at)
                                .join(PARTICIPANTS, PARTICIPANTS.c.id == GAMES.c.participant_id)
                                .where(GAMES.c.study == self.config.study).order_by(GAMES.c.id.desc())).all()
        return [{"game_id": r.id, "pid": r.external_id, "agent": r.agent, "outcome": r.outcome, "turns": r.turns,
                 "human_score": r.human_score, "agent_score": r.agent_score, "started_at": r.started_at}
                for r in rows]

    def replay(self, game_id: int) -> dict:
        """A game turn by turn for the admin: both sides' values, and after every event the state it left.

        ``steps`` holds one entry per event in order (start, acts, timeout, survey, ...): who did what
        (an offer as what each side gets), the time since the start, and the turn, the standing offer and
        the deal (what the person gets) after it.
        """
        with self.engine.connect() as conn:
            row = conn.execute(select(GAMES).where(GAMES.c.id == game_id)).mappings().first()
            if row is None or row["study"] != self.config.study:
                raise NotFound(f"no negotiation {game_id} in this study")
            game = _GameRecord(row)
            events = conn.execute(select(EVENTS).where(EVENTS.c.game_id == game_id).order_by(EVENTS.c.seq)).all()
            pid = conn.execute(select(PARTICIPANTS.c.external_id)
                               .where(PARTICIPANTS.c.id == game.participant_id)).scalar()
        counts = game.counts_list()
        values = {"human": game.human_values_list(), "agent": game.agent_values_list()}
        ctx = Context(tuple(counts), (tuple(values["human"]), tuple(values["agent"])))
        state = NegotiationState(ctx, max_turns=game.max_turns, first_player=HUMAN if game.human_first else AGENT)
        steps = []
        for ev in events:
            step = {"seq": ev.seq, "kind": ev.kind, "actor": ev.actor, "t_s": round(ev.created_at - game.started_at, 3),
                    "text": ev.text, "message": ev.message, "latency_ms": ev.latency_ms,
                    "data": None if ev.data is None else json.loads(ev.data)}
            if ev.kind == "act":
                kind, split = decode_act(ev.action)
                step["act"] = kind
                if split is not None:
                    keeps = list(split)
                    rest = [c - k for c, k in zip(counts, keeps, strict=True)]
                    step["human_gets"], step["agent_gets"] = (keeps, rest) if ev.actor == "human" else (rest, keeps)
                state.apply_action(ev.action)
            offer = state.standing_offer
            step["turn"] = state.turn
            step["standing_offer"] = None if offer is None else {
                "by": "human" if offer[0] == HUMAN else "agent",
                "human_gets": list(offer[1]) if offer[0] == HUMAN else [c - k for c, k in zip(counts, offer[1], strict=True)]}
            step["deal_human_gets"] = None if state.agreed_split is None else list(state.agreed_split)
            steps.append(step)
        return {"game_id": game.id, "pid": pid, "agent": game.agent, "items": list(ITEM_NAMES), "counts": counts,
                "human_values": values["human"], "agent_values": values["agent"], "human_first": bool(game.human_first),
                "max_turns": game.max_turns, "outcome": game.outcome, "ended_by": game.ended_by,
                "human_score": game.human_score, "agent_score": game.agent_score,
                "pareto_optimal": game.pareto_optimal, "steps": steps}


def _check_persons_turn(game: _GameRecord, state, expected_turn: int | None, turn: int, what: str) -> None:
    """Conflict unless the game runs, it is the person's turn, and ``expected_turn`` (if given) is ``turn``."""
    if game.outcome is not None:
        raise Conflict(f"the negotiation is over ({game.outcome})")
    if state.current_player != HUMAN:
        raise Conflict("it is not your turn; wait for your partner's reply")
    if expected_turn is not None and expected_turn != turn:
        raise Conflict(f"this {what} was meant for turn {expected_turn}, but the negotiation is at turn "
                       f"{turn}; reload to see the latest state")


def _is_text(game) -> bool:
    """Whether a game (a games row) plays the text protocol; rows without a protocol play coarse acts."""
    return getattr(game, "protocol", None) == "text"


def _over(state: NegotiationState | TextNegotiationState) -> bool:
    return state.terminal if isinstance(state, TextNegotiationState) else state.is_terminal()


def _text_turn(replay: _Replay) -> int:
    """A text game's turn: how many moves (utterances, <selection> and selections) both sides have made."""
    return sum(ev.kind in TEXT_EVENTS for ev in replay.events)


def _recorded_text(state: TextNegotiationState, reply: str) -> str:
    """An agent's reply as the game records it (normalised utterance, ``<selection>`` or a selection in
    the ``book=k hat=k ball=k`` form); raises ``TextInputError`` for a reply the protocol does not allow."""
    from parley.envs.negotiation_text_v0 import parse_selection

    if state.selecting:
        return format_selection(parse_selection(reply, state.ctx.counts))
    if isinstance(reply, str) and reply.strip() == SELECTION_TOKEN:
        return SELECTION_TOKEN
    return normalise_utterance(reply, state.max_utterance_chars)


def _checked_selection(split: list[int] | None, counts: list[int]) -> tuple[int, ...] | None:
    """The person's selection: None (no agreement) or how many of each item they keep; InvalidRequest
    naming what is allowed otherwise."""
    if split is None:
        return None
    allowed = f"how many you keep of {', '.join(ITEM_NAMES)}, each between 0 and {counts}, or null for no agreement"
    if not isinstance(split, (list, tuple)) or len(split) != len(counts):
        raise InvalidRequest(f"a selection is {allowed}; got {split!r}")
    if not all(isinstance(k, int) and not isinstance(k, bool) for k in split):
        raise InvalidRequest(f"a selection must be whole numbers ({allowed}); got {split!r}")
    bad = [f"{name}: {k} (0..{c})" for name, k, c in zip(ITEM_NAMES, split, counts, strict=True) if not 0 <= k <= c]
    if bad:
        raise InvalidRequest(f"selection out of range: {', '.join(bad)}")
    return tuple(split)


def _selection_view(selection) -> dict | None:
    """A selection as a view shows it: None before it is made, else ``{keep}`` (None for no agreement)."""
    if selection is None:
        return None
    return {"keep": None if selection == NO_AGREEMENT else list(selection)}


def study_games(database_url: str, *, protocol: str | None = None) -> list[dict]:
    """Finished games from a study database as rows of ``parley arena``'s results, for its ratings.

    The person is named ``human`` and the agent by its name in the study; the person sits in seat 0 of
    the row. ``protocol`` keeps only games of that protocol (``acts`` or ``text``).
    """
    rows = finished_games_for_arena(database_url)
    return [r for r in rows if protocol is None or r["protocol"] == protocol]


def finished_games_for_arena(database: str) -> list[dict]:
    """Every finished game in a study database as a row of ``parley arena``'s results (see
    :data:`parley.agents.arena.RESULT_COLUMNS`): the person is player ``human`` in seat 0, the agent is
    named as in the study's YAML, ``source`` is ``study:<study>``."""
    from parley.envs.negotiation import context_ids
    from parley.human_eval.db import make_engine

    engine = make_engine(database)
    try:
        with Session(engine) as s:
            games = s.scalars(select(Game).where(Game.outcome.is_not(None)).order_by(Game.id)).all()
            rows = []
            for game in games:
                counts, human, agent = game.counts_list(), game.human_values_list(), game.agent_values_list()
                deal = json.loads(game.human_gets) if game.human_gets else None
                rows.append({
                    "pair": f"human vs {game.agent}", "game": game.id, "context": game.context_index,
                    "context_id": int(context_ids(np.array([counts]), np.array([[human, agent]]))[0]),
                    "counts": " ".join(map(str, counts)), "values0": " ".join(map(str, human)),
                    "values1": " ".join(map(str, agent)), "first_player": 0 if game.human_first else 1,
                    "player0": "human", "player1": game.agent, "score0": float(game.human_score or 0.0),
                    "score1": float(game.agent_score or 0.0), "agreement": int(deal is not None),
                    "deal": "" if deal is None else " ".join(map(str, deal)),
                    "pareto_optimal": "" if deal is None else int(bool(game.pareto_optimal)),
                    "turns": int(game.turns or 0), "bad_input": "", "protocol": game.protocol or "acts",
                    "source": f"study:{game.study}",
                })
    finally:
        engine.dispose()
    return rows
