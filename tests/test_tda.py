"""The targeted-data-acquisition loop end to end on tiny configs, its selection, PPO and the baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from parley.agents.nn.torch_policy import load_policy
from parley.agents.partners.scripted import list_partners, make_partner
from parley.agents.partners.synthetic import synthetic_corpus
from parley.agents.training.ppo import PPOConfig, shaped_reward, train_ppo
from parley.agents.training.supervised import SupervisedConfig, clone_policy, new_policy, train_supervised
from parley.cli import app
from parley.envs.corpus import corpus_dataset
from parley.envs.negotiation import encode_act
from parley.oracles.base import Oracle, OracleAnswer
from parley.oracles.expert import ScriptedExpert
from parley.oracles.selection import (
    collect_candidates,
    ensemble_scores,
    likelihood_scores,
    novelty_scores,
    select_queries,
)
from parley.oracles.tda import METHODS, TDAConfig, run_tda, train_method

TINY_SL = SupervisedConfig(epochs=2, backbone_config={"hidden_sizes": (32, 32)}, device="cpu")
# Every step of the loop runs, on as few games as still yield the 8 distinct query states a round asks for.
TINY = TDAConfig(rounds=1, queries_per_round=8, candidate_games=32, partner_epochs=1, eval_games=50,
                 ppo=PPOConfig(total_games=128, games_per_iteration=64, update_epochs=1, num_minibatches=2),
                 supervised=TINY_SL)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # These networks are tiny: a second thread only waits on the first, and on a busy machine
    # that doubles the run time.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus():
    return corpus_dataset(synthetic_corpus(100, seed=2))


@pytest.fixture(scope="module")
def sl_policy(corpus):
    return train_supervised(corpus, TINY_SL).policy


def test_one_round_end_to_end(corpus, sl_policy, tmp_path):
    result = run_tda(corpus, ScriptedExpert(), TINY, tmp_path / "run", sl_policy=sl_policy, log=None)
    out = tmp_path / "run"
    for name in ("sl/policy.json", "round_01/learner/policy.json", "round_01/partner/policy.json",
                 "oracle_data.npz", "oracle_answers.jsonl", "log.jsonl", "state.json", "latest_policy"):
        assert (out / name).exists(), name
    (log,) = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log["round"] == 1 and log["queries_asked"] == 8 and log["answers_accepted"] == 8
    assert log["queries_used"] == 8 and log["answers_rejected"] == 0
    assert 0 <= log["partner_accuracy_before"] <= 1 and 0 <= log["partner_accuracy_after"] <= 1
    assert len(result.logs) == 1
    # the run directory loads as a policy (its newest learner)
    learner = load_policy(out, device="cpu")
    assert learner.metadata["tda_round"] == 1


def test_resume_continues_after_the_last_round(corpus, sl_policy, tmp_path):
    out = tmp_path / "run"
    run_tda(corpus, ScriptedExpert(), TINY, out, sl_policy=sl_policy, log=None)
    first_state = json.loads((out / "state.json").read_text())
    messages = []
    run_tda(corpus, ScriptedExpert(), TDAConfig(**{**TINY.__dict__, "rounds": 2}), out, log=messages.append)
    assert any("resuming" in m for m in messages)
    state = json.loads((out / "state.json").read_text())
    assert state["completed_round"] == 2 and state["queries_asked"] == 16
    assert set(first_state["asked"]) < set(state["asked"])  # round 2 asked new states only
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ValueError, match="queries_per_round"):
        run_tda(corpus, ScriptedExpert(), TDAConfig(**{**TINY.__dict__, "queries_per_round": 9}), out, log=None)


def test_bad_oracle_answers_are_rejected_and_not_added(corpus, sl_policy, tmp_path):
    class HalfWrongOracle(Oracle):
        name = "half-wrong"

        def answer(self, queries):
            expert = ScriptedExpert().answer(queries)
            # every other answer claims items that do not exist
            return [OracleAnswer(encode_act("propose", (4, 4, 4))) if i % 2 else a for i, a in enumerate(expert)]

    messages = []
    run_tda(corpus, HalfWrongOracle(), TINY, tmp_path / "run", sl_policy=sl_policy, log=messages.append)
    (log,) = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log["answers_rejected"] == 4 and log["answers_accepted"] == 4 and log["queries_used"] == 4
    assert sum("rejected an oracle answer" in m for m in messages) == 4
    records = [json.loads(line) for line in (tmp_path / "run" / "oracle_answers.jsonl").read_text().splitlines()]
    assert sum("rejected" in r for r in records) == 4


def test_human_oracle_queries_stay_pending_until_answered(corpus, sl_policy, tmp_path):
    from parley.oracles.human import HumanOracle
    from parley.oracles.queue import QueryQueue

    db = tmp_path / "queue.sqlite"
    out = tmp_path / "run"
    run_tda(corpus, HumanOracle(db), TINY, out, sl_policy=sl_policy, log=None)
    state = json.loads((out / "state.json").read_text())
    assert len(state["pending"]) == 8 and state["queries_used"] == 0
    queue = QueryQueue(db)
    for item in queue.pending()[:3]:
        queue.answer(item.id, int(np.flatnonzero(item.query.legal_mask())[-1]))  # walk away
    run_tda(corpus, HumanOracle(db), TDAConfig(**{**TINY.__dict__, "rounds": 2}), out, log=None)
    state = json.loads((out / "state.json").read_text())
    assert state["queries_used"] == 3 and len(state["pending"]) == 5 + 8


def test_selection_scores_and_budget(corpus, sl_policy):
    rng = np.random.default_rng(0)
    learner = clone_policy(sl_policy, deterministic=False, seed=1)
    candidates = collect_candidates(learner, clone_policy(sl_policy, deterministic=False, seed=2), 40, rng)
    assert len(candidates) > 0
    for q in candidates.queries:
        assert q.legal_mask().any() and q.history  # the learner has acted before each candidate state
    like = likelihood_scores(candidates, sl_policy)
    assert like.shape == (len(candidates),) and np.all(like >= 0)
    nov = novelty_scores(candidates, corpus.observations)
    assert np.all(nov >= 0)
    # a candidate that copies a corpus state has zero novelty
    assert novelty_scores(candidates, candidates.observations[:1])[0] == pytest.approx(0.0, abs=1e-5)
    ens = ensemble_scores(candidates, [sl_policy, learner])
    assert np.all(ens >= -1e-6)
    chosen = select_queries(candidates, like, 5, rng)
    assert len(chosen) == min(5, len({q.query_id for q in candidates.queries}))
    chosen_ids = {candidates.queries[i].query_id for i in chosen}
    assert len(chosen_ids) == len(chosen)  # distinct states only
    others = [i for i, q in enumerate(candidates.queries) if q.query_id not in chosen_ids]
    assert not others or like[others].max() <= like[chosen].min() + 1e-9  # the highest scores were taken
    asked = {candidates.queries[i].query_id for i in chosen}
    again = select_queries(candidates, like, 5, rng, asked)
    assert not asked & {candidates.queries[i].query_id for i in again}


def test_shaped_rewards():
    metrics = {"scores": np.array([[8.0, 2.0], [6.0, 6.0], [0.0, 0.0]]),
               "agreement": np.array([1.0, 1.0, 0.0]), "pareto_optimal": np.array([False, True, False])}
    seat = np.array([0, 1, 0])
    assert np.allclose(shaped_reward(metrics, seat, PPOConfig(reward="utility")), [8, 6, 0])
    assert np.allclose(shaped_reward(metrics, seat, PPOConfig(reward="pareto_bonus", pareto_bonus=3)), [8, 9, 0])
    assert np.allclose(shaped_reward(metrics, seat, PPOConfig(reward="prosocial", prosocial_weight=0.5)), [5, 6, 0])
    assert np.allclose(shaped_reward(metrics, seat, PPOConfig(reward="fairness", fairness_weight=0.5)), [5, 6, 0])
    with pytest.raises(ValueError, match="unknown reward"):
        PPOConfig(reward="money")


def test_ppo_learns_to_score_against_a_fixed_partner():
    # 12 iterations of 256 games lift the score by 1.4 to 2.3 points over seeds 0-3; 1 is the bar.
    learner = new_policy(SupervisedConfig(backbone_config={"hidden_sizes": (32, 32)}, device="cpu"))
    result = train_ppo(learner, make_partner("conceder"),
                       PPOConfig(total_games=3072, games_per_iteration=256, learning_rate=3e-3))
    first, last = result.history[0], result.history[-1]
    assert last["score"] > first["score"] + 1.0
    assert last["learner_steps"] == sum(row["learner_steps_this_iteration"] for row in result.history) > 0


def test_every_baseline_trains_in_the_harness(corpus, sl_policy, tmp_path):
    observations, masks = corpus.observations[:64], corpus.masks[:64]
    for method in METHODS:
        policy = train_method(method, sl_policy, corpus, TINY, tmp_path, oracle=ScriptedExpert())
        assert masks[np.arange(64), policy.act_batch(observations, masks)].all(), method  # sampled acts legal
        policy.deterministic = True
        acts = policy.act_batch(observations, masks)
        saved = tmp_path / method.replace("+", "_")
        # the saved policy is the trained one: the same greedy acts on the same states (load_policy is greedy)
        np.testing.assert_array_equal(load_policy(saved, device="cpu").act_batch(observations, masks), acts)
    with pytest.raises(ValueError, match="unknown method"):
        train_method("magic", sl_policy, corpus, TINY, tmp_path)


def test_tda_command(tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["tda", "--oracle", "scripted", "--rounds", "1", "--queries-per-round", "5",
                                      "--out", str(out), "--games-per-round", "64", "--synthetic-dialogues", "30",
                                      "--sl-epochs", "1", "--eval-games", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["rounds"][0]["queries_asked"] == 5
    assert set(final["scripted_suite"]) == {*list_partners(), "all"}
    assert final["scripted_suite"]["all"]["games"] == 4 * len(list_partners())
    assert final["partner_model"]["partner"] == "partner model" and 0 <= final["partner_model"]["agreement"] <= 1
    bad = CliRunner().invoke(app, ["tda", "--oracle", "psychic", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "unknown oracle" in bad.output


@pytest.mark.parametrize("selection", ["novelty", "ensemble", "random"])
def test_every_selection_runs_in_the_loop(corpus, sl_policy, tmp_path, selection):
    config = TDAConfig(**{**TINY.__dict__, "selection": selection, "ensemble_size": 2})
    result = run_tda(corpus, ScriptedExpert(), config, tmp_path / selection, sl_policy=sl_policy, log=None)
    assert result.logs[0].queries_asked == 8 and result.logs[0].answers_accepted == 8


@pytest.mark.slow
def test_benchmark_script_quick_mode(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "tda_table.py"
    spec = importlib.util.spec_from_file_location("tda_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--quick", "--no-append", "--synthetic", "--methods", "sl,rl,tda", "--runs", str(tmp_path)])
