"""Crowd platforms (Prolific, MTurk): entry by the platform's link parameters, completion codes and
redirects, repeat participants, returned and timed-out sessions, bonuses, comprehension and attention checks."""

from __future__ import annotations

import pytest
from _human_eval_support import ADMIN, Participant, make_client, play_to_deal, study_config
from sqlalchemy import update

from parley.human_eval.config import PlatformSpec, StudyConfig, StudyConfigError
from parley.human_eval.db import Game
from parley.human_eval.service import ATTENTION_ANSWER, COMPREHENSION_QUESTIONS

ADMIN_HEADERS = {"X-Admin-Token": ADMIN}
PROLIFIC = PlatformSpec(name="prolific", completion_code="C1DONE", study_id="65f0c0ffee0123456789abcd",
                        timeout_code="C2TIME", returned_code="C3BACK")
PID_A, PID_B = "5f1a2b3c4d5e6f7a8b9c0d1e", "60aabbccddeeff0011223344"


def _prolific(session: str = "s1") -> dict:
    """A Prolific link's STUDY_ID and SESSION_ID."""
    return {"study_id": PROLIFIC.study_id, "session_id": session}


def _enter(client, pid, session="s1", study="teststudy", **extra):
    return client.post("/api/enter", json={"study": study, "pid": pid, **_prolific(session), **extra})


@pytest.fixture
def prolific(tmp_path):
    return make_client(tmp_path, study_config(entry="open", platform=PROLIFIC))


def _survey(p, game_id, **extra):
    return p.call("POST", f"/api/games/{game_id}/survey", {"fair": 3, "human_like": 3, "negotiate_again": 3, **extra})


def test_prolific_entry_play_and_redirect_with_the_completion_code(prolific):
    p = Participant(prolific, PID_A, **_prolific())
    assert p.state["platform"] == "prolific"
    game = p.begin()
    play_to_deal(p, game)
    done = _survey(p, game["game_id"])
    assert done["platform_code"] == "C1DONE"
    assert done["redirect_url"] == "https://app.prolific.com/submissions/complete?cc=C1DONE"
    # The same person and session resume; the code is not given again on entry.
    again = _enter(prolific, PID_A)
    assert again.status_code == 200 and "C1DONE" not in again.text
    participants = prolific.get("/api/admin/export/participants.jsonl", headers=ADMIN_HEADERS).text
    assert '"platform_session_id": "s1"' in participants and PROLIFIC.study_id in participants


def test_prolific_links_are_checked(prolific):
    assert _enter(prolific, "not-a-prolific-id").status_code == 422
    assert _enter(prolific, PID_A.upper()).status_code == 422
    r = prolific.post("/api/enter", json={"study": "teststudy", "pid": PID_A, **_prolific(), "study_id": "otherstudy"})
    assert r.status_code == 404 and "another study" in r.json()["error"]
    r = prolific.post("/api/enter", json={"study": "teststudy", "pid": PID_A, "study_id": PROLIFIC.study_id})
    assert r.status_code == 422 and "SESSION_ID" in r.json()["error"]


def test_a_repeat_participant_is_refused_politely(prolific):
    p = Participant(prolific, PID_A, **_prolific())
    game = p.begin()
    p.act(game["game_id"], "walk_away")
    r = _enter(prolific, PID_A, session="s2")  # a second submission of the same Prolific account
    assert r.status_code == 403 and "already taken part" in r.json()["error"]
    # Someone who entered but never played may come back under a new session (e.g. after a return).
    assert _enter(prolific, PID_B, session="t1").status_code == 200
    assert _enter(prolific, PID_B, session="t2").status_code == 200


def test_participants_of_excluded_studies_are_refused(tmp_path):
    first = make_client(tmp_path, study_config(study="pilot", entry="open", platform=PROLIFIC))
    assert _enter(first, PID_A, study="pilot").status_code == 200
    second = make_client(tmp_path, study_config(entry="open", platform=PROLIFIC, exclude_studies=("pilot",)))
    r = _enter(second, PID_A)
    assert r.status_code == 403 and "earlier study" in r.json()["error"]
    assert _enter(second, PID_B).status_code == 200


def test_timed_out_and_returned_sessions_get_their_own_codes(prolific):
    timed = Participant(prolific, PID_A, **_prolific())
    game = timed.begin()
    engine = prolific.app.state.service.engine
    with engine.begin() as conn:  # the game started long ago: the next read ends it as timed out
        conn.execute(update(Game.__table__).where(Game.__table__.c.id == game["game_id"]).values(started_at=0.0))
    assert timed.call("GET", f"/api/games/{game['game_id']}")["outcome"]["result"] == "timeout"
    done = _survey(timed, game["game_id"])
    assert done["platform_code"] == "C2TIME" and done["redirect_url"].endswith("cc=C2TIME")

    leaver = Participant(prolific, PID_B, **_prolific())
    game = leaver.begin()
    left = leaver.call("POST", "/api/leave", {})
    assert left["platform_code"] == "C3BACK" and left["state"]["stage"] == "returned"
    assert leaver.call("GET", f"/api/games/{game['game_id']}")["outcome"]["result"] == "returned"
    leaver.call("POST", "/api/games", {}, expect=409)
    assert _enter(prolific, PID_B, session="s9").status_code == 403  # no second try after returning


def test_mturk_entry_and_preview(tmp_path):
    mturk = PlatformSpec(name="mturk", completion_code="MTURK-OK")
    client = make_client(tmp_path, study_config(entry="open", platform=mturk))
    worker = "A1B2C3D4E5F6G7"
    preview = client.post("/api/enter", json={"study": "teststudy", "pid": worker,
                                              "session_id": "ASSIGNMENT_ID_NOT_AVAILABLE"})
    assert preview.status_code == 409 and "preview" in preview.json()["error"]
    p = Participant(client, worker, session_id="3ASSIGNMENT0001", study_id="3HIT")
    game = p.begin()
    p.act(game["game_id"], "walk_away")
    done = _survey(p, game["game_id"])
    assert done["platform_code"] == "MTURK-OK" and done["redirect_url"] is None  # pasted into the HIT


def test_bonuses_per_point_in_prolific_bulk_format(tmp_path):
    client = make_client(tmp_path, study_config(bonus_per_point=0.05, bonus_max=0.4, entry="open"))
    scores = {}
    for pid in ("b-1", "b-2", "b-3"):
        p = Participant(client, pid)
        game = p.begin()
        view = play_to_deal(p, game) if pid != "b-3" else p.act(game["game_id"], "walk_away")
        scores[pid] = view["outcome"]["your_points"]
    r = client.get("/api/admin/bonuses.csv", headers=ADMIN_HEADERS)
    assert r.status_code == 200
    expected = {pid: round(min(0.4, 0.05 * s), 2) for pid, s in scores.items() if min(0.4, 0.05 * s) > 0}
    lines = r.text.splitlines()
    assert {line.split(",")[0]: float(line.split(",")[1]) for line in lines} == expected
    assert all(len(line.split(",")) == 2 and line.split(",")[1].count(".") == 1 for line in lines)  # no header
    total = sum(expected.values())
    assert r.headers["x-bonus-total"] == f"{total:.2f} GBP"
    status = client.get("/api/admin/status", headers=ADMIN_HEADERS).json()
    assert status["bonus"] == {"participants": len(expected), "currency": "GBP", "total": round(total, 2)}
    assert client.get("/api/admin/bonuses.csv").status_code == 403


def test_comprehension_check_with_retries_before_play(tmp_path):
    client = make_client(tmp_path, study_config(comprehension_attempts=2, entry="open"))
    right = {q["id"]: q["answer"] for q in COMPREHENSION_QUESTIONS}
    wrong = {**right, "no_deal": (right["no_deal"] + 1) % 3}
    p = Participant(client, "learner")
    p.call("POST", "/api/consent", {})
    state = p.call("POST", "/api/instructions", {})
    assert state["stage"] == "comprehension" and state["comprehension"]["tries_left"] == 2
    assert all("answer" not in q for q in state["comprehension"]["questions"])  # answers are not sent
    p.call("POST", "/api/games", {}, expect=409)  # no play before the check
    first = p.call("POST", "/api/comprehension", {"answers": wrong})
    assert not first["passed"] and first["wrong"] == ["no_deal"] and first["state"]["stage"] == "comprehension"
    second = p.call("POST", "/api/comprehension", {"answers": right})
    assert second["passed"] and second["state"]["stage"] == "ready"
    p.call("POST", "/api/games", {})

    q = Participant(client, "guesser")
    q.call("POST", "/api/consent", {})
    q.call("POST", "/api/instructions", {})
    q.call("POST", "/api/comprehension", {"answers": wrong})
    out = q.call("POST", "/api/comprehension", {"answers": wrong})
    assert out["state"]["stage"] == "screened_out"
    q.call("POST", "/api/comprehension", {"answers": right}, expect=409)  # no tries left
    q.call("POST", "/api/games", {}, expect=409)
    q.call("POST", "/api/comprehension", {"answers": {"no_deal": 0}}, expect=422)
    rows = {r["pid"]: r for r in _jsonl(client, "participants")}
    assert rows["learner"]["comprehension_passed"] is True and rows["learner"]["comprehension_tries"] == 2
    assert rows["guesser"]["comprehension_passed"] is False


def test_attention_check_is_asked_and_flagged_in_exports(tmp_path):
    client = make_client(tmp_path, study_config(attention_check=True, entry="open", sessions_per_participant=1))
    results = {}
    for pid, answer in (("careful", ATTENTION_ANSWER), ("hasty", 5)):
        p = Participant(client, pid)
        game = p.begin()
        assert p.state["attention_question"]
        p.act(game["game_id"], "walk_away")
        r = client.post(f"/api/games/{game['game_id']}/survey", headers=p.headers,
                        json={"fair": 3, "human_like": 3, "negotiate_again": 3})
        assert r.status_code == 422 and "attention" in r.json()["error"]  # the item must be answered
        _survey(p, game["game_id"], attention=answer)
        results[pid] = game["game_id"]
    games = {g["pid"]: g for g in _jsonl(client, "games")}
    assert games["careful"]["attention_passed"] is True and games["hasty"]["attention_passed"] is False
    surveys = {s["game_id"]: s for s in _jsonl(client, "surveys")}
    assert surveys[results["hasty"]]["attention"] == 5
    csv = client.get("/api/admin/export/games.csv", headers=ADMIN_HEADERS).text
    assert "attention_passed" in csv.splitlines()[0]


def _jsonl(client, table):
    import json

    text = client.get(f"/api/admin/export/{table}.jsonl", headers=ADMIN_HEADERS).text
    return [json.loads(line) for line in text.splitlines()]


def test_platform_and_screening_config_from_yaml_and_clear_errors(tmp_path):
    path = tmp_path / "study.yaml"
    ids = tmp_path / "ids.txt"
    ids.write_text("5f1a2b3c4d5e6f7a8b9c0d1e\n")
    path.write_text("agents: [boulware]\nentry: allowlist\nallowlist: ids.txt\n"
                    "platform: {name: prolific, completion_code: C1DONE, timeout_code: C2TIME}\n"
                    "bonus: {per_point: 0.05, max: 0.5}\ncomprehension_attempts: 3\nattention_check: true\n"
                    "exclude_studies: [pilot]\n")
    config = StudyConfig.from_yaml(path)
    assert config.platform.name == "prolific" and config.platform.timeout_code == "C2TIME"
    assert config.allowlist == str(ids.resolve()) and config.bonus_per_point == 0.05 and config.bonus_max == 0.5
    assert config.comprehension_attempts == 3 and config.attention_check and config.exclude_studies == ("pilot",)
    bad = {
        "platform: {name: upwork, completion_code: X}": "platform.name",
        "platform: {name: prolific}": "completion_code is required",
        "platform: {name: prolific, completion_code: 'a b'}": "letters, digits",
        "platform: {name: prolific, completion_code: X, colour: red}": "unknown keys",
        "entry: anyone": "entry must be one of",
        "entry: allowlist": "allowlist file",
        "entry: allowlist\nallowlist: missing.txt": "not a file",
        "bonus: {per_point: -1}": "bonus_per_point",
        "bonus: {per_point: 0.1, currency: pounds}": "currency",
        "bonus: 5": "bonus must be a mapping",
        "comprehension_attempts: -1": "comprehension_attempts",
        "attention_check: maybe": "true or false",
        "exclude_studies: pilot": "list of study names",
    }
    for text, needle in bad.items():
        path.write_text("agents: [boulware]\n" + text + "\n")
        with pytest.raises(StudyConfigError, match=needle):
            StudyConfig.from_yaml(path)
