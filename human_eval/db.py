"""Database schema and engine for human-vs-agent studies (SQLAlchemy 2).

SQLite in WAL mode is the default store (one file, safe against a killed server process); any URL
SQLAlchemy understands works, e.g. ``postgresql+psycopg://user@host/study``.

Tables
------
``participants``  one row per (study, participant id from the study link).
``games``         one negotiation: the assigned agent and context, and a summary of the outcome that is
                  filled in when the game ends (derivable from the events).
``events``        the append-only log: every act, message, timeout and survey, with server timestamps
                  and latencies. Rows are only ever inserted. ``(game_id, seq)`` is unique, so two
                  requests racing to make the same move cannot both be stored.
``surveys``       the post-game questionnaire, one per game.
``settings``      server-side values that must survive restarts (the token signing secret).
``study_locks``   one row per study, written first in every assignment transaction, so that server
                  processes sharing the database assign one participant at a time (see
                  :meth:`~parley.human_eval.service.StudyService.start_game`).

Timestamps are UTC seconds since the epoch (float) so latencies are simple differences.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 1


class Base(DeclarativeBase):
    pass


class Participant(Base):
    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("study", "external_id", name="uq_participant_study_external"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study: Mapped[str] = mapped_column(String(64), index=True)
    external_id: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16), default="web")  # web | terminal
    created_at: Mapped[float] = mapped_column(Float)
    consented_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    instructed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # From a crowd platform's link: its study (Prolific STUDY_ID, MTurk hitId) and session (SESSION_ID,
    # assignmentId). A second session id for the same person is a repeat attempt and is refused.
    platform_study_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    platform_session_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The comprehension check before play: tries used, and when it was passed.
    comprehension_tries: Mapped[int | None] = mapped_column(Integer, nullable=True)
    comprehension_passed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # When the participant left the study early (returned the task on the platform).
    returned_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class GameContextColumns:
    """Readers for a game's JSON context columns, shared by the ORM row and plain fetched rows."""

    counts: str
    human_values: str
    agent_values: str

    def counts_list(self) -> list[int]:
        return json.loads(self.counts)

    def human_values_list(self) -> list[int]:
        return json.loads(self.human_values)

    def agent_values_list(self) -> list[int]:
        return json.loads(self.agent_values)


class Game(GameContextColumns, Base):
    __tablename__ = "games"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    study: Mapped[str] = mapped_column(String(64), index=True)
    agent: Mapped[str] = mapped_column(String(64), index=True)
    context_index: Mapped[int] = mapped_column(Integer)
    # JSON lists: item counts, the participant's values, the agent's values (never sent to the page).
    counts: Mapped[str] = mapped_column(String(32))
    human_values: Mapped[str] = mapped_column(String(32))
    agent_values: Mapped[str] = mapped_column(String(32))
    human_first: Mapped[bool] = mapped_column(Boolean)
    # The coarse game's turn limit; in a text-protocol game, the message limit of the talk.
    max_turns: Mapped[int] = mapped_column(Integer)
    # "acts" (offers built on the page) or "text" (talk, then secret selections); None in older databases: acts.
    protocol: Mapped[str | None] = mapped_column(String(8), nullable=True)
    started_at: Mapped[float] = mapped_column(Float)
    # Outcome summary, set once when the game ends.
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)  # deal|walk_away|turn_limit|timeout
    ended_by: Mapped[str | None] = mapped_column(String(16), nullable=True)  # human|agent|system
    human_gets: Mapped[str | None] = mapped_column(String(32), nullable=True)  # JSON list, deals only
    human_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    agent_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    pareto_optimal: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    turns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_code: Mapped[str | None] = mapped_column(String(32), unique=True, nullable=True)

    @property
    def finished(self) -> bool:
        return self.outcome is not None


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("game_id", "seq", name="uq_event_game_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    game_id: Mapped[int | None] = mapped_column(ForeignKey("games.id"), index=True, nullable=True)
    seq: Mapped[int | None] = mapped_column(Integer, nullable=True)  # order within a game
    kind: Mapped[str] = mapped_column(String(16))  # enter|consent|instructions|start|act|say|select|timeout|agent_error|survey
    actor: Mapped[str] = mapped_column(String(8))  # human|agent|system
    action: Mapped[int | None] = mapped_column(Integer, nullable=True)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)  # the act in words
    message: Mapped[str | None] = mapped_column(Text, nullable=True)  # optional free text from the person
    created_at: Mapped[float] = mapped_column(Float)
    client_ts: Mapped[float | None] = mapped_column(Float, nullable=True)
    # human acts: seconds since the previous event (time to decide); agent acts: compute time.
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    data: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON extras


class Survey(Base):
    __tablename__ = "surveys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    game_id: Mapped[int] = mapped_column(ForeignKey("games.id"), unique=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    fair: Mapped[int] = mapped_column(Integer)
    human_like: Mapped[int] = mapped_column(Integer)
    negotiate_again: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    # The attention-check item's answer and whether it was the instructed one (None: no check asked).
    attention: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attention_passed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class Setting(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class StudyLock(Base):
    """The row an assignment transaction updates before it reads the assignment counts.

    On PostgreSQL the update takes this row's lock, on SQLite the database's write lock; either is held
    until the transaction ends, so concurrent assignments -- from any server process -- run one after
    the other and each sees the games the previous ones created. ``assignments`` counts them.
    """

    __tablename__ = "study_locks"

    study: Mapped[str] = mapped_column(String(64), primary_key=True)
    assignments: Mapped[int] = mapped_column(Integer, default=0)


def normalise_url(db: str) -> str:
    """Accept a SQLAlchemy URL or a plain file path (``study.db`` means ``sqlite:///study.db``)."""
    return db if "://" in db else f"sqlite:///{db}"


def make_engine(db: str, *, synchronous: str = "FULL") -> Engine:
    """An engine with the schema created. SQLite gets WAL, a busy timeout and foreign keys.

    ``synchronous="FULL"`` makes every commit durable across power loss as well as process crashes;
    ``"NORMAL"`` keeps process-crash safety and is faster on slow disks.
    """
    url = normalise_url(db)
    if synchronous.upper() not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite") and ":memory:" not in url and url != "sqlite://":
        # More connections than server threads, so no request ever waits for one while others hold them.
        kwargs.update(connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8, max_overflow=120)
    elif url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False}
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        mode = synchronous.upper()

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={mode}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    Base.metadata.create_all(engine)
    _add_new_columns(engine)
    return engine


def _add_new_columns(engine: Engine) -> None:
    """Add the nullable columns newer versions introduced to tables of an existing study database."""
    from sqlalchemy import inspect, text

    inspector = inspect(engine)
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present and column.nullable:
                    kind = column.type.compile(dialect=engine.dialect)
                    conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
