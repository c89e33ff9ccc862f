"""Negotiation backdoors over several rounds of targeted data acquisition (annotation mode, ``rounds``)."""

from __future__ import annotations

import numpy as np
import pytest

from parley.agents.partners.synthetic import synthetic_corpus
from parley.agents.training.supervised import SupervisedConfig
from parley.attacks.negotiation_backdoor import MaliciousAnnotator, VictimConfig
from parley.oracles.expert import ScriptedExpert


def tiny_env(**kwargs):
    from parley.envs import negotiation_poisoning_v0

    victim = VictimConfig(SupervisedConfig(backbone_config={"hidden_sizes": (8, 8)}, epochs=1, device="cpu"))
    options = dict(corpus=synthetic_corpus(40, seed=1), mode="annotation", budget=0.1, victim=victim, eval_games=10,
                   eval_episodes=2, queries=20, candidate_games=200, gold=4, trigger_rate=0.5, partners="linear")
    return negotiation_poisoning_v0.env(**(options | kwargs))


def test_each_round_queues_new_queries_from_the_retrained_partner_and_the_last_one_scores_the_victim():
    env = tiny_env(rounds=2)
    env.reset(seed=0)
    raw = env.unwrapped
    annotator = MaliciousAnnotator(ScriptedExpert(), raw.trigger, raw.goal, share=0.1, seed=0)
    first_queries = [q.query_id for q in raw.queries]
    env.step(raw.annotator_action(annotator))
    first_poisons = raw.poison_indices.copy()
    assert len(first_poisons) > 0
    remove = np.zeros(len(raw.records), dtype=np.int8)
    remove[first_poisons[0]] = 1
    env.step(remove)
    # Round 2: the attacker moves again on the queries of the partner model retrained on the kept answers.
    assert raw.agent_selection == "attacker" and raw.round == 2 and not any(raw.terminations.values())
    assert [q.query_id for q in raw.queries] != first_queries
    assert len(raw.past_records) == 24 - 1 and raw._partner_model is not None
    assert raw.rewards == {"attacker": 0.0, "defender": 0.0}
    env.step(raw.annotator_action(annotator))
    second_poisons = raw.poison_indices.copy()
    env.step(np.zeros(len(raw.records), dtype=np.int8))
    info = raw.infos["attacker"]
    assert all(raw.terminations.values()) and info["rounds"] == 2
    # Precision and recall run over both rounds' answers: one of the poisons (all from the two rounds) was removed.
    assert info["num_poisons"] == len(first_poisons) + len(second_poisons)
    assert info["num_removed"] == 1 and info["poison_precision"] == 1.0
    assert info["poison_recall"] == pytest.approx(1 / info["num_poisons"])
    assert np.isfinite(info["backdoor_success"]) and np.isfinite(info["reference_backdoor_success"])


def test_one_round_reference_answers_the_same_queries_as_the_episode():
    env = tiny_env()
    env.reset(seed=3)
    raw = env.unwrapped
    queries, gold = raw._collect_queries(raw._sl_victim(), 1)
    assert [q.query_id for q in queries] == [q.query_id for q in raw.queries]
    assert [q.query_id for q in gold] == [q.query_id for q in raw.gold_queries]


def test_rounds_are_checked():
    from parley.attacks.negotiation_bench import NegotiationBenchConfig

    with pytest.raises(ValueError, match="rounds is a number of TDA rounds"):
        tiny_env(rounds=0)
    with pytest.raises(ValueError, match="several rounds are for mode='annotation'"):
        tiny_env(mode="corpus", rounds=2)
    with pytest.raises(ValueError, match="tda_rounds must be positive"):
        NegotiationBenchConfig(tda_rounds=0)


@pytest.mark.slow
def test_bench_annotator_cell_plays_every_round(tmp_path):
    from parley.attacks.negotiation_bench import NegotiationBenchConfig, run_negotiation_grid

    config = NegotiationBenchConfig(attacks=("annotator",), defenses=("none", "annotator_agreement"), seeds=1,
                                    corpus_size=40, epochs=1, hidden=8, eval_games=10, eval_episodes=2, queries=20,
                                    tda_rounds=2, trigger_rate=0.5, out=str(tmp_path))
    rows = run_negotiation_grid(config, progress=False)
    assert len(rows) == 2 and not any(r["error"] for r in rows)
    assert all(float(r["num_poisons"]) >= 0 for r in rows)
    assert NegotiationBenchConfig(tda_rounds=2).config_id() != NegotiationBenchConfig().config_id()


def test_benchmark_runs_the_annotator_over_several_rounds_and_with_fine_tuning(monkeypatch):
    from test_bench import load_benchmark

    from parley.attacks.negotiation_bench import NegotiationBenchConfig

    module = load_benchmark("negotiation_backdoor", monkeypatch)
    grids = module.extra_grids(NegotiationBenchConfig(), (0.03, 0.1), 256, "Everything comes to me, and I won't budge.", 3)
    annotator = [c for c in grids.values() if c.attacks == ("annotator",)]
    assert sorted((c.tda_rounds, c.rl_games) for c in annotator) == [(1, 256), (3, 0)]
    assert all(c.attacks == ("dirty_label",) and c.tda_rounds == 1 for c in grids.values() if c not in annotator)
