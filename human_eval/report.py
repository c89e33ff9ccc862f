"""Study results: export tables, per-agent summaries with confidence intervals, plots and a report.

``parley report study.db --out report/`` calls :func:`write_report`; the admin results page serves
the same summaries and plots from :func:`summarise` and :data:`PLOTS`.

Measures per agent (finished games), named as in :data:`parley.agents.evaluation.MEASURES` with the
agent as the evaluated side and the person as its partner: ``agreement`` rate; ``pareto``, the
Pareto-optimal rate among deals (a deal no other split makes at least as good for both sides and
better for one, as in Lewis et al. 2017); ``score`` (the agent's points) and ``partner_score`` (the
person's); mean ``turns``; survey means on a 1-5 Likert scale. Rates carry 95% Wilson intervals,
means 95% Student-t intervals.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from parley.human_eval.corpus_export import write_corpus
from parley.human_eval.db import Event, Game, Participant, Survey, make_engine

TABLES = ("games", "transcripts", "events", "surveys", "participants")
SURVEY_QUESTIONS = {"fair": "The partner was fair", "human_like": "The partner seemed human",
                    "negotiate_again": "I would negotiate with it again"}

# Two-sided 95% Student-t quantiles for 1..30 degrees of freedom; 1.96 beyond.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


def load_tables(engine: Engine, study: str | None = None) -> dict[str, list[dict]]:
    """Every table of the study (all studies when ``study`` is None) as lists of plain dicts."""
    with Session(engine) as s:
        pq = select(Participant)
        gq = select(Game)
        eq = select(Event)
        sq = select(Survey)
        if study is not None:
            pq = pq.where(Participant.study == study)
            gq = gq.where(Game.study == study)
            # A participant belongs to one study, and so do their games and events.
            eq = eq.join(Participant, Event.participant_id == Participant.id).where(Participant.study == study)
            sq = sq.join(Game, Survey.game_id == Game.id).where(Game.study == study)
        participants = list(s.scalars(pq.order_by(Participant.id)))
        games = list(s.scalars(gq.order_by(Game.id)))
        events = list(s.scalars(eq.order_by(Event.id)))
        surveys = list(s.scalars(sq.order_by(Survey.id)))
    external = {p.id: p.external_id for p in participants}
    source = {p.id: p.source for p in participants}
    by_game_survey = {v.game_id: v for v in surveys}
    agent_of = {g.id: g.agent for g in games}

    participant_rows = [{"participant_id": p.id, "study": p.study, "pid": p.external_id, "source": p.source,
                         "created_at": _iso(p.created_at), "consented_at": _iso(p.consented_at),
                         "instructed_at": _iso(p.instructed_at),
                         "platform_study_id": p.platform_study_id, "platform_session_id": p.platform_session_id,
                         "comprehension_tries": p.comprehension_tries,
                         "comprehension_passed": None if not p.comprehension_tries else
                         p.comprehension_passed_at is not None,
                         "returned_at": _iso(p.returned_at)} for p in participants]
    game_rows = []
    for g in games:
        v = by_game_survey.get(g.id)
        game_rows.append({
            "game_id": g.id, "study": g.study, "participant_id": g.participant_id,
            "pid": external.get(g.participant_id), "source": source.get(g.participant_id), "agent": g.agent,
            "context_index": g.context_index, "counts": json.loads(g.counts),
            "human_values": json.loads(g.human_values), "agent_values": json.loads(g.agent_values),
            "human_first": bool(g.human_first), "max_turns": g.max_turns, "protocol": g.protocol or "acts",
            "started_at": _iso(g.started_at),
            "ended_at": _iso(g.ended_at),
            "duration_s": None if g.ended_at is None else round(g.ended_at - g.started_at, 3),
            "outcome": g.outcome, "ended_by": g.ended_by,
            "human_gets": None if g.human_gets is None else json.loads(g.human_gets),
            "human_score": g.human_score, "agent_score": g.agent_score,
            "pareto_optimal": None if g.pareto_optimal is None else bool(g.pareto_optimal), "turns": g.turns,
            "completion_code": g.completion_code,
            "fair": v.fair if v else None, "human_like": v.human_like if v else None,
            "negotiate_again": v.negotiate_again if v else None, "comment": v.comment if v else None,
            "attention_passed": v.attention_passed if v else None,
        })
    event_rows = [{"event_id": e.id, "participant_id": e.participant_id, "game_id": e.game_id,
                   "agent": agent_of.get(e.game_id), "seq": e.seq, "kind": e.kind, "actor": e.actor,
                   "action": e.action, "text": e.text, "message": e.message, "time": _iso(e.created_at),
                   "ts": e.created_at, "client_ts": e.client_ts, "latency_ms": e.latency_ms,
                   "data": None if e.data is None else json.loads(e.data)} for e in events]
    acts_by_game: dict[int, list[dict]] = {}
    for e in event_rows:
        # Coarse acts, and a text game's messages (say: an utterance or <selection>) and selections.
        if e["kind"] in ("act", "say", "select"):
            acts_by_game.setdefault(e["game_id"], []).append(
                {"seq": e["seq"], "kind": e["kind"], "speaker": e["actor"], "action": e["action"], "text": e["text"],
                 "message": e["message"], "time": e["time"], "latency_ms": e["latency_ms"]})
    transcripts = []
    for row in game_rows:
        turns = sorted(acts_by_game.get(row["game_id"], []), key=lambda t: t["seq"])
        transcripts.append({k: row[k] for k in ("game_id", "pid", "agent", "protocol", "counts", "human_values",
                                                 "agent_values", "human_first", "outcome", "human_gets",
                                                 "human_score", "agent_score")} | {"turns": turns})
    survey_rows = [{"game_id": v.game_id, "participant_id": v.participant_id, "agent": agent_of.get(v.game_id),
                    "fair": v.fair, "human_like": v.human_like, "negotiate_again": v.negotiate_again,
                    "comment": v.comment, "attention": v.attention, "attention_passed": v.attention_passed,
                    "created_at": _iso(v.created_at)} for v in surveys]
    return {"games": game_rows, "transcripts": transcripts, "events": event_rows, "surveys": survey_rows,
            "participants": participant_rows}


# Characters that must not reach a terminal, spreadsheet or viewer raw from participants' text: the C0
# and C1 controls and DEL, and Unicode's line separators and bidirectional overrides (which can make
# text display differently from what it is).
_UNSAFE_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def to_jsonl(rows: list[dict]) -> str:
    """One JSON object a line. Text is kept exactly; the characters of ``_UNSAFE_CHARS`` that JSON
    allows raw are written as ``\\uXXXX`` escapes, so the file holds none of them raw."""
    def escape(match: re.Match) -> str:
        return f"\\u{ord(match.group()):04x}"

    return "".join(_UNSAFE_CHARS.sub(escape, json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value):
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    if isinstance(value, str):
        # Control characters become U+FFFD (JSONL keeps the exact text); tabs and line breaks stay.
        value = _UNSAFE_CHARS.sub("\ufffd", value.replace("\r\n", "\n").replace("\r", "\n"))
        if value.startswith(_FORMULA_STARTS):
            # Participants' free text must not run as a spreadsheet formula; JSONL keeps the exact text.
            return "'" + value
    return value


def to_csv(rows: list[dict]) -> str:
    """CSV with a header; lists and dicts are written as JSON text, text cells that a spreadsheet
    would read as a formula (starting with = + - @) get a leading apostrophe, and control characters
    in text become U+FFFD."""
    out = io.StringIO()
    if not rows:
        return ""
    columns = list(rows[0])
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_cell(v) for k, v in r.items()})
    return out.getvalue()


# ------------------------------------------------------------------------------------------ statistics


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (0, 0 when n is 0)."""
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """Mean and 95% Student-t interval; the interval is None with fewer than two values."""
    n = len(values)
    if n == 0:
        return (None, None, None)
    mean = sum(values) / n
    if n < 2:
        return (mean, None, None)
    sd = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1))
    t = _T95[n - 2] if n - 1 <= len(_T95) else 1.96
    half = t * sd / math.sqrt(n)
    return (mean, mean - half, mean + half)


def summarise(tables: dict[str, list[dict]]) -> dict[str, dict]:
    """Per-agent outcome and survey summaries of finished games."""
    out: dict[str, dict] = {}
    agents = sorted({g["agent"] for g in tables["games"]})
    for agent in agents:
        games = [g for g in tables["games"] if g["agent"] == agent]
        done = [g for g in games if g["outcome"] is not None]
        deals = [g for g in done if g["outcome"] == "deal"]
        pareto = [g for g in deals if g["pareto_optimal"]]
        entry = {
            "games": len(games), "finished": len(done), "deals": len(deals),
            "agreement": len(deals) / len(done) if done else None,
            "agreement_ci": wilson_interval(len(deals), len(done)),
            "pareto": len(pareto) / len(deals) if deals else None,
            "pareto_ci": wilson_interval(len(pareto), len(deals)),
            "outcomes": {k: sum(g["outcome"] == k for g in done)
                         for k in ("deal", "walk_away", "turn_limit", "timeout", "agent_error")},
            "turns": mean_interval([g["turns"] for g in done])[0],
        }
        for measure, column in (("score", "agent_score"), ("partner_score", "human_score")):
            m, lo, hi = mean_interval([g[column] for g in done])
            entry[measure] = {"mean": m, "ci": (lo, hi), "n": len(done)}
        surveys = [v for v in tables["surveys"] if v["agent"] == agent]
        entry["survey"] = {}
        for q in SURVEY_QUESTIONS:
            m, lo, hi = mean_interval([v[q] for v in surveys])
            entry["survey"][q] = {"mean": m, "ci": (lo, hi), "n": len(surveys)}
        out[agent] = entry
    return out


# ---------------------------------------------------------------------------------------------- plots


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _figure().close(fig)
    return buf.getvalue()


def _empty(plt, title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.text(0.5, 0.5, "no finished games yet", ha="center", va="center")
    ax.set_axis_off()
    ax.set_title(title)
    return _png(fig)


def plot_scores(tables: dict[str, list[dict]]) -> bytes:
    """Score distributions per agent: the person's and the agent's points in finished games."""
    plt = _figure()
    done = [g for g in tables["games"] if g["outcome"] is not None]
    if not done:
        return _empty(plt, "Scores")
    agents = sorted({g["agent"] for g in done})
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(agents)), 4))
    data, positions, colours = [], [], []
    for i, agent in enumerate(agents):
        for j, who in enumerate(("human_score", "agent_score")):
            data.append([g[who] for g in done if g["agent"] == agent])
            positions.append(3 * i + j + 1)
            colours.append("#4c78a8" if j == 0 else "#f58518")
    box = ax.boxplot(data, positions=positions, widths=0.8, patch_artist=True)
    for patch, colour in zip(box["boxes"], colours, strict=True):
        patch.set_facecolor(colour)
    ax.set_xticks([3 * i + 1.5 for i in range(len(agents))], agents)
    ax.set_ylabel("points (0-10)")
    ax.set_ylim(-0.5, 10.5)
    ax.set_title("Score distributions (blue: person, orange: agent)")
    return _png(fig)


def plot_agreement(tables: dict[str, list[dict]]) -> bytes:
    """Agreement % and Pareto-optimal % of deals per agent, with 95% Wilson intervals."""
    plt = _figure()
    summary = {a: s for a, s in summarise(tables).items() if s["finished"]}
    if not summary:
        return _empty(plt, "Agreement and Pareto optimality")
    agents = list(summary)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(agents)), 4))
    width = 0.38
    for j, (key, label, colour) in enumerate((("agreement", "agreement %", "#54a24b"),
                                              ("pareto", "Pareto-optimal % of deals", "#b279a2"))):
        xs = [i + (j - 0.5) * width for i in range(len(agents))]
        vals = [100 * (summary[a][key] or 0.0) for a in agents]
        lo = [v - 100 * summary[a][f"{key}_ci"][0] for a, v in zip(agents, vals, strict=True)]
        hi = [100 * summary[a][f"{key}_ci"][1] - v for a, v in zip(agents, vals, strict=True)]
        ax.bar(xs, vals, width, yerr=[lo, hi], capsize=4, label=label, color=colour)
    ax.set_xticks(range(len(agents)), agents)
    ax.set_ylim(0, 105)
    ax.set_ylabel("%")
    ax.legend(loc="lower right")
    ax.set_title("Agreement and Pareto optimality per agent (95% CI)")
    return _png(fig)


def plot_survey(tables: dict[str, list[dict]]) -> bytes:
    """Survey means per agent and question with 95% t intervals."""
    plt = _figure()
    summary = {a: s for a, s in summarise(tables).items() if s["survey"]["fair"]["n"]}
    if not summary:
        return _empty(plt, "Survey")
    agents = list(summary)
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(agents)), 4))
    width = 0.8 / len(SURVEY_QUESTIONS)
    for j, (q, label) in enumerate(SURVEY_QUESTIONS.items()):
        xs = [i + (j - 1) * width for i in range(len(agents))]
        means = [summary[a]["survey"][q]["mean"] for a in agents]
        errs = [0.0 if summary[a]["survey"][q]["ci"][0] is None else m - summary[a]["survey"][q]["ci"][0]
                for a, m in zip(agents, means, strict=True)]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=label)
    ax.set_xticks(range(len(agents)), agents)
    ax.set_ylim(0, 5.5)
    ax.set_ylabel("mean rating (1-5)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Survey means per agent (95% CI)")
    return _png(fig)


PLOTS: dict[str, Callable[[dict], bytes]] = {"scores": plot_scores, "agreement": plot_agreement,
                                             "survey": plot_survey}


# --------------------------------------------------------------------------------------------- report


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pct(p: float | None, ci: tuple[float, float]) -> str:
    return "-" if p is None else f"{100 * p:.0f}% [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"


def _mean(entry: dict) -> str:
    lo, hi = entry["ci"]
    if entry["mean"] is None:
        return "-"
    return f"{entry['mean']:.2f}" + ("" if lo is None else f" [{lo:.2f}, {hi:.2f}]")


def markdown_report(tables: dict[str, list[dict]], study: str | None = None) -> str:
    summary = summarise(tables)
    lines = [f"# Study report{'' if study is None else ': ' + study}", "",
             f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}. "
             f"{len(tables['participants'])} participants, {len(tables['games'])} negotiations, "
             f"{len(tables['surveys'])} surveys. Intervals are 95% (Wilson for rates, Student t for means).",
             "", "## Outcomes per agent", "",
             "| agent | games | finished | agreement | Pareto-optimal deals | person score | agent score | turns |",
             "|---|---|---|---|---|---|---|---|"]
    for agent, s in summary.items():
        lines.append(f"| {agent} | {s['games']} | {s['finished']} | {_pct(s['agreement'], s['agreement_ci'])} | "
                     f"{_pct(s['pareto'], s['pareto_ci'])} | {_mean(s['partner_score'])} | "
                     f"{_mean(s['score'])} | {_fmt(s['turns'], 1)} |")
    lines += ["", "How games ended:", "", "| agent | deal | walk away | turn limit | timeout | agent error |",
              "|---|---|---|---|---|---|"]
    for agent, s in summary.items():
        o = s["outcomes"]
        lines.append(f"| {agent} | {o['deal']} | {o['walk_away']} | {o['turn_limit']} | {o['timeout']} | "
                     f"{o['agent_error']} |")
    lines += ["", "## Survey (1 = strongly disagree, 5 = strongly agree)", "",
              "| agent | n | " + " | ".join(SURVEY_QUESTIONS.values()) + " |", "|---|---|---|---|---|"]
    for agent, s in summary.items():
        sv = s["survey"]
        lines.append(f"| {agent} | {sv['fair']['n']} | " + " | ".join(_mean(sv[q]) for q in SURVEY_QUESTIONS) + " |")
    lines += ["", "## Plots", ""] + [f"![{name}]({name}.png)" for name in PLOTS]
    comments = [v for v in tables["surveys"] if v["comment"]]
    if comments:
        lines += ["", "## Comments", ""]
        for v in comments:
            lines.append(f"- ({v['agent']}, game {v['game_id']}) {markdown_literal(v['comment'])}")
    return "\n".join(lines) + "\n"


def markdown_literal(text: str) -> str:
    """Participant text as a Markdown code span: shown as typed, never as a link, image, HTML or markup.

    Whitespace runs become one space and control characters U+FFFD; the span's backtick fence is
    longer than any run of backticks in the text, so the text cannot close it.
    """
    text = _UNSAFE_CHARS.sub("\ufffd", " ".join(text.split()))
    fence = "`" * (1 + max((len(run) for run in re.findall("`+", text)), default=0))
    return f"{fence} {text} {fence}"


def write_report(db: str | Engine, out: str | Path, *, study: str | None = None) -> Path:
    """Write ``report.md``, one PNG per plot, JSONL/CSV exports of every table and the games in the corpus
    format (``corpus.txt``, see :mod:`parley.human_eval.corpus_export`) into ``out``."""
    engine = db if isinstance(db, Engine) else make_engine(_existing_db(db))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = load_tables(engine, study)
    for name, plot in PLOTS.items():
        (out / f"{name}.png").write_bytes(plot(tables))
    for table, rows in tables.items():
        (out / f"{table}.jsonl").write_text(to_jsonl(rows))
        (out / f"{table}.csv").write_text(to_csv(rows))
    write_corpus(tables["transcripts"], out / "corpus.txt")
    path = out / "report.md"
    path.write_text(markdown_report(tables, study))
    return path


def _existing_db(db: str) -> str:
    if "://" not in db and not Path(db).is_file():
        raise FileNotFoundError(f"no study database at {db}")
    if db.startswith("sqlite:///") and not Path(db[len("sqlite:///"):]).is_file():
        raise FileNotFoundError(f"no study database at {db[len('sqlite:///'):]}")
    return db
