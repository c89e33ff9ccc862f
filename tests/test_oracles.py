"""The oracle interface contract for every oracle, the scripted expert's rules, and the human-oracle queue."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from typer.testing import CliRunner

from parley.agents.partners.scripted import make_partner
from parley.cli import app
from parley.envs.negotiation import (
    AGREE_ACTION,
    NUM_ACTIONS,
    WALK_AWAY_ACTION,
    Context,
    NegotiationState,
    decode_act,
    encode_act,
    sample_context,
)
from parley.oracles.base import (
    IllegalOracleAnswerError,
    Oracle,
    OracleAnswer,
    OracleQuery,
    answers_to_dataset,
    collect_answers,
    validate_answer,
)
from parley.oracles.expert import ScriptedExpert
from parley.oracles.human import HumanOracle
from parley.oracles.model import ModelOracle
from parley.oracles.queue import QueryQueue, parse_act_text


def random_queries(n: int, seed: int = 0) -> list[OracleQuery]:
    """States reached by scripted play, cut at a random turn, answered for the player to move."""
    rng = np.random.default_rng(seed)
    players = [make_partner("linear", seed=1), make_partner("random", seed=2)]
    queries = []
    while len(queries) < n:
        ctx = sample_context(rng)
        state = NegotiationState(ctx, first_player=int(rng.integers(2)))
        cut = int(rng.integers(0, 9))
        for _ in range(cut):
            if state.is_terminal():
                break
            p = state.current_player
            state.apply_action(players[p].act(state.observation(p), state.legal_action_mask()))
        if state.is_terminal():
            continue
        queries.append(OracleQuery(ctx.counts, ctx.values, state.first_player, tuple(a for _, a in state.history),
                                   state.current_player))
    return queries


QUERIES = random_queries(60)


def human_oracle_with_answers(tmp_path) -> HumanOracle:
    """A human oracle whose queue already holds an annotator's answers (here: always walk away)."""
    queue = QueryQueue(tmp_path / "queue.sqlite")
    queue.submit(QUERIES)
    for q in QUERIES[::2]:
        queue.answer(q.query_id, WALK_AWAY_ACTION, annotator="tester")
    return HumanOracle(queue)


@pytest.fixture(params=["scripted", "model", "human"])
def oracle(request, tmp_path) -> Oracle:
    if request.param == "scripted":
        return ScriptedExpert()
    if request.param == "model":
        return ModelOracle(make_partner("boulware"))
    return human_oracle_with_answers(tmp_path)


def test_oracle_contract(oracle):
    answers = oracle.answer(QUERIES)
    assert len(answers) == len(QUERIES)
    answered = [a for a in answers if a is not None]
    assert answered, "every oracle answers at least the queries it can"
    for query, answer in zip(QUERIES, answers):
        if answer is None:
            continue
        assert isinstance(answer, OracleAnswer)
        validate_answer(query, answer)  # raises if illegal
        assert query.legal_mask()[answer.action]
    assert oracle.answer([]) == []
    data = answers_to_dataset([(q, a) for q, a in zip(QUERIES, answers) if a is not None], weight=2.0)
    assert len(data) == len(answered) and np.all(data.weights == 2.0)


def test_human_oracle_returns_none_for_unanswered_queries(tmp_path):
    answers = human_oracle_with_answers(tmp_path).answer(QUERIES)
    assert all(a is not None for a in answers[::2]) and all(a is None for a in answers[1::2])


def frontier(query: OracleQuery) -> set[tuple[int, int, int]]:
    """The splits (what the responder keeps) that no other split beats for both sides, by brute force."""
    r = query.responder
    own_values, other_values = np.array(query.values[r]), np.array(query.values[1 - r])
    splits = [s for s in itertools.product(*(range(c + 1) for c in query.counts))]
    utilities = [(int(np.dot(s, own_values)), int(np.dot(np.subtract(query.counts, s), other_values))) for s in splits]
    return {s for s, (u, v) in zip(splits, utilities)
            if not any(a >= u and b >= v and (a > u or b > v) for a, b in utilities)}


def test_scripted_expert_is_pareto_aware():
    expert = ScriptedExpert()
    for query in random_queries(300, seed=7):
        answer = expert.answer_one(query)
        kind, split = decode_act(answer.action)
        offer = query.standing_offer_for_responder()
        final = len(query.history) == query.max_turns - 1
        if kind in ("propose", "insist"):
            assert split in frontier(query), "proposals are always Pareto-optimal"
        if kind == "agree" and not final:
            assert offer in frontier(query), "a dominated split is never accepted before the final act"
        if offer is not None and offer not in frontier(query):
            assert answer.counter_offer is not None
            r = query.responder
            ctx = Context(query.counts, query.values)
            counter_other = tuple(c - k for c, k in zip(query.counts, answer.counter_offer))
            offer_other = tuple(c - k for c, k in zip(query.counts, offer))
            assert ctx.score(r, answer.counter_offer) >= ctx.score(r, offer)
            assert ctx.score(1 - r, counter_other) >= ctx.score(1 - r, offer_other)


def test_scripted_expert_accepts_a_good_pareto_offer_and_counters_a_dominated_one():
    # Responder 1 values hats only (0, 5, 0)... counts (2, 2, 2): agent 0 values (1, 2, 2), agent 1 (0, 5, 0).
    counts, values = (2, 2, 2), ((1, 2, 2), (0, 5, 0))
    give_all_hats = encode_act("propose", (2, 0, 2))  # agent 0 keeps books and balls: Pareto-optimal, 10 for r
    q = OracleQuery(counts, values, 0, (give_all_hats,), 1)
    assert ScriptedExpert().answer_one(q).action == AGREE_ACTION
    dominated = encode_act("propose", (1, 0, 1))  # agent 0 gives away a book and a ball it values; r gains nothing
    q = OracleQuery(counts, values, 0, (dominated,), 1)
    answer = ScriptedExpert().answer_one(q)
    assert answer.action != AGREE_ACTION and answer.acceptable is True
    assert answer.counter_offer is not None


def test_illegal_answers_are_rejected_and_never_become_data():
    class CarelessOracle(Oracle):
        name = "careless"

        def answer(self, queries):
            # agree where nothing was proposed, or claim more items than exist
            return [OracleAnswer(AGREE_ACTION) if q.standing_offer_for_responder() is None
                    else OracleAnswer(encode_act("propose", (4, 4, 4))) for q in queries]

    batch = collect_answers(CarelessOracle(), QUERIES[:20])
    assert not batch.accepted and len(batch.rejected) == 20
    assert all("illegal" in reason and "legal:" in reason for _, _, reason in batch.rejected)
    with pytest.raises(IllegalOracleAnswerError):
        answers_to_dataset([(q, a) for q, a, _ in batch.rejected])
    q = QUERIES[0]
    with pytest.raises(IllegalOracleAnswerError, match="not an action index"):
        validate_answer(q, OracleAnswer(NUM_ACTIONS))


def test_query_validation_and_round_trip():
    q = QUERIES[5]
    assert OracleQuery.from_dict(q.to_dict()) == q and OracleQuery.from_dict(q.to_dict()).query_id == q.query_id
    with pytest.raises(ValueError, match="turn"):
        OracleQuery(q.counts, q.values, q.first_player, q.history, 1 - q.responder)
    with pytest.raises(ValueError, match="not a legal game"):
        OracleQuery((1, 1, 3), ((4, 3, 1), (2, 2, 2)), 0, (AGREE_ACTION,), 1)
    assert "Legal:" in q.describe()


def test_parse_act_text():
    assert parse_act_text("propose 2 0 1") == encode_act("propose", (2, 0, 1))
    assert parse_act_text("insist 1,1,0") == encode_act("insist", (1, 1, 0))
    assert parse_act_text("agree") == AGREE_ACTION
    assert parse_act_text("walk_away") == WALK_AWAY_ACTION
    for bad in ("give me the hats", "propose 2 0", "agree 1 2 3", "propose 9 0 0"):
        with pytest.raises(IllegalOracleAnswerError):
            parse_act_text(bad)


def test_human_oracle_round_trip_through_the_queue_and_cli(tmp_path):
    db = tmp_path / "queue.sqlite"
    oracle = HumanOracle(db, batch="round-1")
    # a state where the partner proposed: agree is legal
    counts, values = (1, 4, 1), ((4, 1, 2), (0, 2, 2))
    query = OracleQuery(counts, values, 0, (encode_act("propose", (1, 0, 1)),), 1)
    fresh = OracleQuery(counts, values, 1, (), 1)  # nothing proposed yet: agree is illegal
    assert oracle.answer([query, fresh]) == [None, None]
    runner = CliRunner()

    listed = runner.invoke(app, ["oracle", "queue", "list", "--db", str(db)])
    assert listed.exit_code == 0 and query.query_id in listed.output and fresh.query_id in listed.output
    shown = runner.invoke(app, ["oracle", "queue", "show", query.query_id, "--db", str(db)])
    assert shown.exit_code == 0 and "the other agent's values: (4, 1, 2)" in shown.output

    rejected = runner.invoke(app, ["oracle", "queue", "answer", fresh.query_id, "agree", "--db", str(db)])
    assert rejected.exit_code == 2 and "illegal" in rejected.output
    bad_text = runner.invoke(app, ["oracle", "queue", "answer", fresh.query_id, "give me hats", "--db", str(db)])
    assert bad_text.exit_code == 2
    assert QueryQueue(db).stats() == {"pending": 2, "answered": 0, "total": 2}  # nothing stored

    ok = runner.invoke(app, ["oracle", "queue", "answer", query.query_id, "propose 0 4 1", "--not-acceptable",
                             "--annotator", "ana", "--db", str(db)])
    assert ok.exit_code == 0, ok.output
    again = runner.invoke(app, ["oracle", "queue", "answer", query.query_id, "agree", "--db", str(db)])
    assert again.exit_code == 2 and "already been answered" in again.output

    answers = oracle.answer([query, fresh])
    assert answers[1] is None
    assert answers[0] == OracleAnswer(encode_act("propose", (0, 4, 1)), False, None, "human:ana")
    assert QueryQueue(db).stats() == {"pending": 1, "answered": 1, "total": 2}


def test_human_oracle_waits_for_answers(tmp_path):
    import threading

    db = tmp_path / "queue.sqlite"
    query = QUERIES[1]
    queue = QueryQueue(db)
    queue.submit([query])
    legal = int(np.flatnonzero(query.legal_mask())[0])
    timer = threading.Timer(0.3, lambda: QueryQueue(db).answer(query.query_id, legal))
    timer.start()
    answers = HumanOracle(db, wait_seconds=5, poll_interval=0.05).answer([query])
    timer.join()
    assert answers[0] is not None and answers[0].action == legal
