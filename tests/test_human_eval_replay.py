"""The admin's turn-by-turn replay of a game, and the study's games exported in the corpus format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _human_eval_support import ADMIN, Participant, make_client, play_to_deal, study_config
from typer.testing import CliRunner

from parley.envs.corpus import dialogue_to_game, load_corpus, parse_utterance
from parley.envs.negotiation import NUM_ACTIONS, decode_act, encode_act, sample_context
from parley.human_eval.corpus_export import corpus_utterance

ADMIN_HEADERS = {"X-Admin-Token": ADMIN}


@pytest.fixture
def client(tmp_path):
    return make_client(tmp_path, study_config(sessions_per_participant=2))


def _survey(p: Participant, game_id: int) -> None:
    p.call("POST", f"/api/games/{game_id}/survey", {"fair": 3, "human_like": 3, "negotiate_again": 3})


def test_admin_replays_a_game_turn_by_turn(client):
    p = Participant(client, "replayed")
    game = p.begin()
    counts = [i["count"] for i in game["items"]]
    p.act(game["game_id"], "propose", counts, message="all for me")
    final = play_to_deal(p, p.views[game["game_id"]])
    gid = final["game_id"]
    assert client.get(f"/api/admin/games/{gid}/replay").status_code == 403
    replay = client.get(f"/api/admin/games/{gid}/replay", headers=ADMIN_HEADERS).json()
    assert replay["pid"] == "replayed" and replay["outcome"] == final["outcome"]["result"] == "deal"
    assert replay["human_values"] == [i["your_value"] for i in final["items"]] and len(replay["agent_values"]) == 3
    steps = replay["steps"]
    assert steps[0]["kind"] == "start" and [s["seq"] for s in steps] == list(range(len(steps)))
    acts = [s for s in steps if s["kind"] == "act"]
    # The replay holds every act the participant saw, in order, with who said it and what each side gets.
    assert [(s["actor"], s["text"]) for s in acts] == [
        ("human" if t["speaker"] == "you" else "agent", t["text"]) for t in final["transcript"]]
    first_human = next(s for s in acts if s["actor"] == "human")
    assert first_human["human_gets"] == counts and first_human["agent_gets"] == [0, 0, 0]
    assert first_human["message"] == "all for me"
    assert first_human["standing_offer"] == {"by": "human", "human_gets": counts}
    assert [s["turn"] for s in acts] == list(range(1, len(acts) + 1))
    assert acts[-1]["act"] == "agree" and acts[-1]["deal_human_gets"] == final["outcome"]["you_get"]
    assert all(s["deal_human_gets"] is None for s in steps if s["seq"] < acts[-1]["seq"])
    listed = client.get("/api/admin/games", headers=ADMIN_HEADERS).json()["games"]
    assert [(g["game_id"], g["pid"]) for g in listed] == [(gid, "replayed")]
    assert client.get("/api/admin/games/999/replay", headers=ADMIN_HEADERS).status_code == 404


def test_every_act_reads_back_through_the_corpus_parser():
    rng = np.random.default_rng(3)
    for _ in range(5):
        counts = list(sample_context(rng).counts)
        for action in range(NUM_ACTIONS):
            kind, split = decode_act(action)
            if split is not None and any(k > c for k, c in zip(split, counts, strict=True)):
                continue
            parsed = parse_utterance(corpus_utterance(action, counts), counts)
            assert parsed is not None and parsed.action() == action, (counts, kind, split)


def _expected_actions(turns: list[dict]) -> list[int]:
    """The study's acts as the corpus reader replays them: a proposal repeated unchanged by the same
    speaker reads back as insist (its documented convention)."""
    last: dict[str, tuple] = {}
    out = []
    for t in turns:
        kind, split = decode_act(t["action"])
        if kind == "propose" and last.get(t["speaker"]) == split:
            kind = "insist"
        if split is not None:
            last[t["speaker"]] = split
        out.append(encode_act(kind, split))
    return out


def test_corpus_export_reads_back_through_the_corpus_loader(client, tmp_path):
    for i in range(4):
        p = Participant(client, f"c{i}")
        game = p.begin()
        if i == 3:  # a walk-away, after one offer
            counts = [it["count"] for it in game["items"]]
            view = p.act(game["game_id"], "propose", counts)
            if view["status"] == "active":
                p.act(game["game_id"], "walk_away")
        else:
            play_to_deal(p, game)
        _survey(p, game["game_id"])
    open_game = Participant(client, "unfinished").begin()  # not over: left out of the corpus
    r = client.get("/api/admin/corpus.txt", headers=ADMIN_HEADERS)
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    lines = r.text.splitlines()
    assert len(lines) == 8  # two lines (one per side) for each finished game
    path = tmp_path / "data.txt"
    path.write_text(r.text)
    dialogues = load_corpus(path)
    exported = client.get("/api/admin/export/transcripts.jsonl", headers=ADMIN_HEADERS).text.splitlines()
    finished = [t for t in map(json.loads, exported) if t["outcome"] is not None]
    assert open_game["game_id"] not in {t["game_id"] for t in finished}
    assert len(dialogues) == len(finished) == 4
    for t in finished:
        # The kept copy is the one whose first speaker is YOU; match it by its context.
        first_values = t["human_values"] if t["human_first"] else t["agent_values"]
        d = next(d for d in dialogues if list(d.context.counts) == t["counts"]
                 and list(d.context.values[0]) == first_values
                 and len(d.utterances) == len(t["turns"]))
        game = dialogue_to_game(d, max_turns=10)
        assert game.complete
        assert game.actions == _expected_actions(t["turns"])
        who = ["human", "agent"] if t["human_first"] else ["agent", "human"]
        assert [who[s] for s in game.speakers] == [turn["speaker"] for turn in t["turns"]]
        if t["outcome"] == "deal":
            assert d.outcome == "agree"
            keeps = t["human_gets"] if t["human_first"] else [c - k for c, k in zip(t["counts"], t["human_gets"])]
            assert list(d.selection) == keeps
        else:
            assert d.outcome == "no_agreement" and t["outcome"] == "walk_away"


def test_report_writes_the_corpus_file(client, tmp_path):
    from parley.cli import app as cli

    p = Participant(client, "reported")
    final = play_to_deal(p, p.begin())
    _survey(p, final["game_id"])
    db = str(tmp_path / "study.db")
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", db, "--out", str(out), "--corpus", str(tmp_path / "c" / "data.txt")])
    assert result.exit_code == 0, result.output
    text = (out / "corpus.txt").read_text()
    assert text == (tmp_path / "c" / "data.txt").read_text() and len(text.splitlines()) == 2
    [dialogue] = load_corpus(tmp_path / "c" / "data.txt")
    assert dialogue.outcome == "agree"


def test_games_without_a_deal_close_as_the_corpus_does():
    from parley.envs.corpus import parse_raw_line
    from parley.human_eval.corpus_export import game_lines

    counts = [1, 2, 2]
    offer = encode_act("propose", (1, 2, 2))
    base = {"counts": counts, "human_values": [2, 2, 2], "agent_values": [6, 1, 1], "human_first": True,
            "human_gets": None, "turns": [{"seq": 1, "speaker": "human", "action": offer}]}
    closing = {"turn_limit": "no_agreement", "walk_away": "no_agreement", "timeout": "disconnect",
               "returned": "disconnect", "agent_error": "disconnect"}
    for outcome, expected in closing.items():
        person, agent = (parse_raw_line(line) for line in game_lines({**base, "outcome": outcome}))
        assert person.outcome == agent.outcome == expected
        assert person.context.values == ((2, 2, 2), (6, 1, 1)) and agent.context.values == ((6, 1, 1), (2, 2, 2))
        assert [u.speaker for u in person.utterances] == [0] and [u.speaker for u in agent.utterances] == [1]
    assert game_lines({**base, "outcome": None}) == []  # still running
    assert game_lines({**base, "outcome": "timeout", "turns": []}) == []  # no act to learn from
