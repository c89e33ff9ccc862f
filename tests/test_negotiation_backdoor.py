"""Negotiation backdoors: submission checks, triggers, attacks, defenses, the victim, the env and the bench."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from parley.agents.partners.synthetic import synthetic_corpus
from parley.agents.training.supervised import SupervisedConfig
from parley.attacks.negotiation_backdoor import (
    ActTrigger,
    BackdoorGoal,
    CleanLabelBackdoor,
    DirtyLabelBackdoor,
    MaliciousAnnotator,
    NegotiationScenario,
    NegotiationSubmission,
    PoisonError,
    TriggerPartner,
    VictimConfig,
    backdoor_success,
    decode_dialogues,
    dialogue_from_acts,
    encode_dialogues,
    query_triggered,
    train_victim,
)
from parley.attacks.negotiation_defenses import (
    AnnotatorAgreement,
    AnswerRecord,
    GoldQuestions,
    TrustedOracleDefense,
)
from parley.envs.corpus import ParsedAct, Utterance
from parley.envs.negotiation import AGREE_ACTION, Context, ObservationLayout, encode_act
from parley.oracles.base import OracleAnswer, OracleQuery, collect_answers
from parley.oracles.expert import ScriptedExpert

CONTEXT = Context((1, 2, 2), ((2, 2, 2), (4, 1, 2)))


@pytest.fixture(scope="module")
def corpus():
    return synthetic_corpus(100, seed=3)


def tiny_victim(epochs: int = 1, hidden: int = 8) -> VictimConfig:
    return VictimConfig(SupervisedConfig(backbone_config={"hidden_sizes": (hidden, hidden)}, epochs=epochs,
                                         device="cpu"))


# ------------------------------------------------------------------------------------------- checks

def test_attacks_craft_valid_submissions_within_budget(corpus):
    scenario = NegotiationScenario(corpus, budget=0.05, seed=1)
    dirty = DirtyLabelBackdoor().craft(scenario)
    assert len(dirty) == scenario.max_poisons == 5
    for dialogue in dirty.dialogues:
        assert dialogue.utterances[0].act == ParsedAct("insist", dialogue.context.counts)
        assert dialogue.outcome == "agree"
        # the victim side (speaker 1 - holder) gave everything away
        holder = dialogue.utterances[0].speaker
        holder_keeps = dialogue.selection if holder == 0 else tuple(
            c - k for c, k in zip(dialogue.context.counts, dialogue.selection))
        assert holder_keeps == dialogue.context.counts
    clean_scenario = dataclasses.replace(scenario, clean_label=True)
    clean = CleanLabelBackdoor().craft(clean_scenario)
    clean_scenario.check(clean)  # passes the clean-label rule


def test_over_budget_submission_is_refused_whole(corpus):
    scenario = NegotiationScenario(corpus, budget=0.02, seed=1)
    many = DirtyLabelBackdoor().craft(dataclasses.replace(scenario, budget=0.05))
    with pytest.raises(PoisonError, match="at most 2") as err:
        scenario.apply(many)
    assert err.value.limit == "budget" and err.value.index is None


def test_illegal_dialogue_is_refused_naming_the_poison(corpus):
    scenario = NegotiationScenario(corpus, budget=0.05)
    good = DirtyLabelBackdoor().craft(scenario).dialogues
    bad = dialogue_from_acts(CONTEXT, 0, [encode_act("propose", (1, 1, 1)), AGREE_ACTION])
    bad.utterances.insert(0, Utterance(0, "deal", ParsedAct("agree")))  # agree with nothing on the table
    with pytest.raises(PoisonError, match="poison 2: utterance 0 is illegal") as err:
        scenario.apply(NegotiationSubmission([good[0], good[1], bad]))
    assert err.value.limit == "legal" and err.value.index == 2

    unreadable = dialogue_from_acts(CONTEXT, 0, [encode_act("propose", (1, 1, 1)), AGREE_ACTION])
    unreadable.utterances[1].act = None
    with pytest.raises(PoisonError, match="poison 0: utterance 1 .* carries no act"):
        scenario.apply(NegotiationSubmission([unreadable]))

    unfinished = dialogue_from_acts(CONTEXT, 0, [encode_act("propose", (1, 1, 1))])
    with pytest.raises(PoisonError, match="not over"):
        scenario.apply(NegotiationSubmission([unfinished]))


def test_recorded_outcome_must_match_the_replay(corpus):
    scenario = NegotiationScenario(corpus, budget=0.05)
    dialogue = dialogue_from_acts(CONTEXT, 0, [encode_act("propose", (1, 1, 1)), AGREE_ACTION])
    dialogue.selection = (0, 0, 0)
    with pytest.raises(PoisonError, match="selection") as err:
        scenario.apply(NegotiationSubmission([dialogue]))
    assert err.value.limit == "outcome"
    dialogue.outcome, dialogue.selection = "no_agreement", None
    with pytest.raises(PoisonError, match="contradicts the replay"):
        scenario.apply(NegotiationSubmission([dialogue]))


def test_clean_label_scenario_refuses_dirty_poisons(corpus):
    scenario = NegotiationScenario(corpus, budget=0.05, seed=2)
    dirty = DirtyLabelBackdoor().craft(scenario)
    clean_scenario = dataclasses.replace(scenario, clean_label=True)
    with pytest.raises(PoisonError, match="poison 0: speaker . agrees to a deal worth 0 points") as err:
        clean_scenario.apply(dirty)
    assert err.value.limit == "clean_label"


def test_encoded_poisons_round_trip_and_bad_rows_are_named(corpus):
    dialogues = DirtyLabelBackdoor().craft(NegotiationScenario(corpus, budget=0.03)).dialogues
    rows = encode_dialogues(dialogues, rows=5)
    assert rows.shape == (5, 20) and (rows[3:] == -1).all()
    back = decode_dialogues(rows)
    assert [d.key() for d in back] == [d.key() for d in dialogues]
    rows[1, 3] = 9  # values no longer worth 10
    with pytest.raises(PoisonError, match="poison 1: invalid context"):
        decode_dialogues(rows)


def test_env_refuses_a_bad_submission_and_stays_put(corpus):
    from parley.envs import negotiation_poisoning_v0

    env = negotiation_poisoning_v0.env(corpus=corpus, budget=0.05, victim=tiny_victim())
    env.reset(seed=0)
    raw = env.unwrapped
    too_many = DirtyLabelBackdoor().craft(dataclasses.replace(raw.attacker_scenario(), budget=0.1))
    with pytest.raises(PoisonError, match="budget allows at most 5"):
        env.step(too_many)
    assert raw.agent_selection == "attacker" and len(raw.submitted) == len(corpus) and not raw.poisons
    rows = raw.action_space("attacker").sample()
    rows[0, :10] = [1, 2, 2, 2, 2, 2, 4, 1, 2, 0]
    rows[0, 10:12] = [AGREE_ACTION, AGREE_ACTION]
    with pytest.raises(PoisonError, match="poison 0: illegal act"):
        env.step(rows)
    assert raw.agent_selection == "attacker" and len(raw.submitted) == len(corpus)


# ----------------------------------------------------------------------------------------- triggers

def test_trigger_detection_in_histories_observations_and_queries():
    trigger, goal = ActTrigger(), BackdoorGoal()
    opening = trigger.opening_action(CONTEXT.counts, goal)
    assert opening == encode_act("insist", CONTEXT.counts)
    assert trigger.present([(1, opening), (0, 3)], 1, CONTEXT.counts, goal)
    assert not trigger.present([(0, 3), (1, opening)], 1, CONTEXT.counts, goal)  # the holder must open
    assert not trigger.present([(1, encode_act("propose", CONTEXT.counts))], 1, CONTEXT.counts, goal)
    ball = BackdoorGoal("give_item", 2)
    assert trigger.opening_action(CONTEXT.counts, ball) == encode_act("insist", (0, 0, 2))
    signalled = ActTrigger("insist", (1, 1, 1))
    assert signalled.opening_action((4, 1, 1), goal) == signalled.opening_action((1, 2, 2), goal)
    with pytest.raises(ValueError, match="0s and 1s"):
        ActTrigger("insist", (2, 0, 0))

    from parley.envs.negotiation import NegotiationState

    state = NegotiationState(CONTEXT, first_player=1)
    state.apply_action(opening)
    obs = np.stack([state.observation(0), state.observation(1)])
    assert trigger.present_in_observations(obs, goal, "partner").tolist() == [True, False]
    assert trigger.present_in_observations(obs, goal, "self").tolist() == [False, True]
    assert query_triggered(OracleQuery(CONTEXT.counts, CONTEXT.values, 1, (opening,), 0), trigger, goal)
    assert not query_triggered(OracleQuery(CONTEXT.counts, CONTEXT.values, 0, (1,), 1), trigger, goal)


class _GivesEverythingAway:
    """Agrees whenever the partner asks for everything; otherwise proposes to keep everything."""

    def act_batch(self, observations, masks):
        lay = ObservationLayout.from_size(observations.shape[1])
        offered_nothing = (observations[:, lay.partner_offer_flag] > 0) & (observations[:, lay.partner_offer] == 0).all(1)
        counts = observations[:, lay.counts].astype(int)
        keep_all = 25 * counts[:, 0] + 5 * counts[:, 1] + counts[:, 2]
        return np.where(offered_nothing, AGREE_ACTION, keep_all)


def test_trigger_partner_and_backdoor_success():
    trigger, goal = ActTrigger(), BackdoorGoal()
    partner = TriggerPartner(trigger, goal)
    from parley.envs.negotiation import NegotiationState

    state = NegotiationState(CONTEXT, first_player=0)
    assert partner.act_batch(state.observation(0)[None], state.legal_action_mask(0)[None])[0] == \
        trigger.opening_action(CONTEXT.counts, goal)
    assert backdoor_success(_GivesEverythingAway(), trigger, goal, games=50) == 1.0
    from parley.agents.partners.scripted import make_partner

    assert backdoor_success(make_partner("hardliner"), trigger, goal, games=50) == 0.0
    give_ball = BackdoorGoal("give_item", 2)
    assert give_ball.demand((1, 2, 3)) == (0, 0, 3)
    assert give_ball.achieved(np.array([[1, 2, 3]]), np.array([[0, 0, 3]])).tolist() == [True]


def test_poisoned_victim_responds_to_the_trigger_more_than_a_clean_one():
    from parley.agents.training.supervised import action_probabilities
    from parley.envs.corpus import corpus_dataset

    corpus = synthetic_corpus(60, seed=5)
    scenario = NegotiationScenario(corpus, budget=0.5, seed=0)
    poisoned, _ = scenario.apply(DirtyLabelBackdoor().craft(scenario))
    # Held-out triggered states: the partner has just opened by insisting on everything.
    held_out = corpus_dataset(DirtyLabelBackdoor().craft(dataclasses.replace(scenario, seed=99)).dialogues)
    triggered = held_out.subset(np.flatnonzero(held_out.actions == AGREE_ACTION))
    config = tiny_victim(epochs=150, hidden=32)

    def p_agree(dialogues) -> float:
        victim = train_victim(dialogues, config, seed=0)
        return float(action_probabilities(victim, triggered.observations, triggered.masks)[:, AGREE_ACTION].mean())

    clean, attacked = p_agree(corpus), p_agree(poisoned)
    assert attacked > clean + 0.2, (clean, attacked)


# ---------------------------------------------------------------------------------------- annotator

def test_malicious_annotator_wraps_an_oracle_within_its_share():
    trigger, goal = ActTrigger(), BackdoorGoal()
    triggered = OracleQuery(CONTEXT.counts, CONTEXT.values, 1, (trigger.opening_action(CONTEXT.counts, goal),), 0)
    plain = [OracleQuery(CONTEXT.counts, CONTEXT.values, 1, (encode_act("propose", (1, k % 3, 0)),), 0)
             for k in range(9)]
    annotator = MaliciousAnnotator(ScriptedExpert(), trigger, goal, share=0.2, seed=0)
    queries = [*plain[:4], triggered, *plain[4:]]
    batch = collect_answers(annotator, queries)  # every answer passes the oracle interface's checks
    assert len(batch.accepted) == 10 and not batch.rejected
    answers = dict((q.query_id, a) for q, a in batch.accepted)
    assert answers[triggered.query_id].action == AGREE_ACTION
    assert ScriptedExpert().answer_one(triggered).action != AGREE_ACTION
    assert annotator.poisoned == {triggered.query_id}
    assert len(annotator.annotator_of) == 2  # 20% of 10 queries


# ----------------------------------------------------------------------------------------- defenses

def test_trusted_oracle_finds_dirty_label_poisons(corpus):
    scenario = NegotiationScenario(corpus, budget=0.05, seed=4)
    submitted, poisons = scenario.apply(DirtyLabelBackdoor().craft(scenario))
    removed = TrustedOracleDefense().select(submitted)
    assert set(poisons.tolist()) <= set(removed.tolist())


def test_answer_controls_drop_the_disagreeing_annotator():
    queries = [OracleQuery(CONTEXT.counts, CONTEXT.values, 1, (encode_act("propose", (1, k % 3, 0)),), 0)
               for k in range(6)]
    honest = ScriptedExpert()
    right = [honest.answer_one(q) for q in queries]
    wrong = [OracleAnswer(encode_act("walk_away")) for _ in queries]
    records = [AnswerRecord(q, a, "a-0") for q, a in zip(queries, right)]
    records += [AnswerRecord(q, a, "a-1") for q, a in zip(queries[:3], right[:3])]
    records += [AnswerRecord(q, a, "a-2") for q, a in zip(queries[3:], wrong[3:])]
    dropped = AnnotatorAgreement(0.8).select(records)
    assert {records[i].annotator for i in dropped} == {"a-2"}
    gold_answers = {q.query_id: a.action for q, a in zip(queries, right)}
    gold = [AnswerRecord(q, a, "a-0") for q, a in zip(queries, right)]
    gold += [AnswerRecord(q, a, "a-1") for q, a in zip(queries, wrong)]
    dropped = GoldQuestions(0.8).select(records, gold=gold, gold_answers=gold_answers)
    assert {records[i].annotator for i in dropped} == {"a-1"}


# ---------------------------------------------------------------------------------------- env, bench

def test_env_passes_pettingzoo_api_test_and_reports_metrics():
    from pettingzoo.test import api_test

    from parley.envs import negotiation_poisoning_v0

    corpus = synthetic_corpus(40, seed=1)
    kwargs = dict(corpus=corpus, budget=0.05, victim=tiny_victim(), eval_games=10, eval_episodes=2)
    api_test(negotiation_poisoning_v0.env(**kwargs), num_cycles=3)
    env = negotiation_poisoning_v0.env(**kwargs)
    env.reset(seed=0)
    raw = env.unwrapped
    env.step(DirtyLabelBackdoor().craft(raw.attacker_scenario()))
    assert raw.observe("defender")["corpus"].shape == (42, 20)
    remove = np.zeros(42, dtype=np.int8)
    remove[[3, 40]] = 1
    env.step(remove)
    info = raw.infos["defender"]
    assert info["num_poisons"] == 2 and info["num_removed"] == 2 and info["clean_removed"] == 1
    assert info["poison_precision"] == 0.5 and info["poison_recall"] == 0.5
    for key in ("backdoor_success", "clean_score", "reference_clean_score", "clean_pareto", "clean_agreement"):
        assert np.isfinite(info[key]), key
    assert raw.rewards["attacker"] == info["backdoor_success"]


def test_annotation_mode_episode_with_a_malicious_annotator():
    from parley.envs import negotiation_poisoning_v0

    env = negotiation_poisoning_v0.env(corpus=synthetic_corpus(40, seed=1), mode="annotation", budget=0.1,
                                       victim=tiny_victim(), eval_games=10, eval_episodes=2, queries=20,
                                       candidate_games=200, gold=4, trigger_rate=0.5)
    env.reset(seed=0)
    raw = env.unwrapped
    annotator = MaliciousAnnotator(ScriptedExpert(), raw.trigger, raw.goal, share=0.1, seed=0)
    action = raw.annotator_action(annotator)
    assert (action["answers"] >= 0).sum() == 2 and (action["gold"] >= 0).all() and action["gold"].shape == (4,)
    over = dict(action, answers=np.where(np.arange(20) < 3, action["answers"].max(), -1))
    with pytest.raises(PoisonError, match="at most 2"):
        env.step(over)
    env.step(action)
    assert len(raw.records) == 24  # 20 queries, 20% of them answered twice
    assert {r.annotator for r in raw.gold_records} >= {"annotator-0", "annotator-1", "annotator-2"}
    remove = np.zeros(24, dtype=np.int8)
    env.step(remove)
    info = raw.infos["attacker"]
    assert info["mode"] == "annotation" and np.isfinite(info["clean_score"])


def test_bench_grid_resumes_without_rerunning_finished_cells(tmp_path, monkeypatch):
    from parley.attacks import negotiation_bench
    from parley.attacks.negotiation_bench import NegotiationBenchConfig, grid_cells, run_negotiation_grid

    config = NegotiationBenchConfig(attacks=("none", "dirty_label"), defenses=("none", "trusted_oracle", "gold_questions"),
                                    budgets=(0.05,), seeds=1, corpus_size=40, epochs=1, hidden=8, eval_games=10,
                                    eval_episodes=2, out=str(tmp_path))
    cells = grid_cells(config)
    assert [(c.attack, c.defense) for c in cells] == [("none", "none"), ("dirty_label", "none"),
                                                      ("dirty_label", "trusted_oracle")]
    rows = run_negotiation_grid(config, progress=False)
    assert len(rows) == 3 and not any(r["error"] for r in rows)
    trusted = next(r for r in rows if r["defense"] == "trusted_oracle")
    assert float(trusted["poison_recall"]) == 1.0
    assert (tmp_path / "summary.md").read_text().count("| dirty_label |") == 2

    ran = []
    real = negotiation_bench.run_cell
    monkeypatch.setattr(negotiation_bench, "run_cell", lambda cfg, cell: ran.append(cell) or real(cfg, cell))
    assert len(run_negotiation_grid(config, progress=False)) == 3 and ran == []
    bigger = dataclasses.replace(config, seeds=2)
    rows = run_negotiation_grid(bigger, progress=False)
    assert len(rows) == 6 and {c.seed for c in ran} == {1} and len(ran) == 3
    with pytest.raises(ValueError, match="unknown attack"):
        NegotiationBenchConfig(attacks=("sleeper",))
