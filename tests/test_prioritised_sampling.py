"""Prioritised opponent sampling (the partners a learner trails are met more often), its reference
scores, the flag that turns it on, and the stochastic partner's random proposals."""

from __future__ import annotations

import numpy as np
import pytest

from parley.agents.evaluation import evaluate_policy
from parley.agents.heldout import TRAIN_FAMILIES, VALIDATION_FAMILIES, family_members
from parley.agents.nn.torch_policy import TorchPolicy
from parley.agents.partners.scripted import make_partner
from parley.agents.partners.stochastic import StochasticPartner
from parley.agents.training.population import reference_scores, resolve_population
from parley.agents.training.ppo import PPOConfig, PrioritisedSampling, train_ppo
from parley.agents.training.run import TrainConfig, TrainConfigError, train
from parley.envs.negotiation import AGREE_ACTION, ALL_SPLITS, NUM_SPLITS, sample_context_arrays
from parley.envs.play import play_batch
from parley.envs.policy import BatchPolicy


class Counting(BatchPolicy):
    """A scripted partner that counts the games it is asked to act in, per iteration."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.inner, self.name, self.rows = make_partner(name), name, 0

    def act_batch(self, observations, action_masks):
        self.rows += len(observations)
        return self.inner.act_batch(observations, action_masks)


def test_sampling_favours_the_partners_the_learner_trails_and_keeps_a_floor():
    sampling = PrioritisedSampling([8.0, 6.0, 6.0], refresh_every=2, temperature=1.0, uniform_share=0.3)
    assert np.allclose(sampling.probabilities, 1 / 3)
    partner_of = np.array([0, 0, 1, 1, 2, 2])
    scores = np.array([4.0, 4.0, 6.0, 6.0, 7.0, 7.0])  # gaps: 4, 0, -1
    sampling.observe(partner_of, scores)
    assert np.allclose(sampling.probabilities, 1 / 3)  # refreshed only every second iteration
    sampling.observe(partner_of, scores)
    assert np.allclose(sampling.gap, [4.0, 0.0, -1.0])
    p = sampling.probabilities
    assert p.sum() == pytest.approx(1.0) and p[0] > p[1] > p[2] >= 0.3 / 3
    expected = 0.7 * np.exp([4.0, 0.0, -1.0]) / np.exp([4.0, 0.0, -1.0]).sum() + 0.1
    assert np.allclose(p, expected)
    # A partner not met since the last refresh counts as no gap; the averages start afresh.
    sampling.observe(np.array([1, 1]), np.array([2.0, 2.0]))
    sampling.observe(np.array([1, 1]), np.array([2.0, 2.0]))
    assert np.allclose(sampling.gap, [0.0, 4.0, 0.0]) and sampling.probabilities.argmax() == 1
    for bad, message in ((dict(reference=[]), "one finite score"), (dict(reference=[1.0, np.nan]), "one finite"),
                         (dict(refresh_every=0), "refresh_every"), (dict(temperature=0.0), "temperature"),
                         (dict(uniform_share=1.5), "uniform_share")):
        with pytest.raises(ValueError, match=message):
            PrioritisedSampling(**{"reference": [1.0, 2.0], **bad})
    with pytest.raises(ValueError, match="partner indices"):
        PrioritisedSampling([1.0, 2.0]).observe(np.array([2]), np.array([1.0]))


def test_train_ppo_meets_the_trailed_partner_more_often():
    pool = [Counting("boulware"), Counting("conceder"), Counting("tit_for_tat")]
    learner = TorchPolicy("mlp", 36, {"hidden_sizes": [16]}, device="cpu", deterministic=False, seed=0)
    # A reference no learner reaches against the first partner, and one every learner passes elsewhere.
    sampling = PrioritisedSampling([20.0, 0.0, 0.0], refresh_every=1, temperature=1.0, uniform_share=0.1)
    result = train_ppo(learner, pool, PPOConfig(total_games=600, games_per_iteration=200, update_epochs=1),
                       partner_sampling=sampling)
    assert sampling.probabilities[0] > 0.9 and result.history[-1]["partner_probability_max"] > 0.9
    # The first iteration draws uniformly; afterwards the trailed partner takes nine games in ten.
    assert pool[0].rows > 2 * max(pool[1].rows, pool[2].rows)
    with pytest.raises(ValueError, match="2 reference scores for 3 partners"):
        train_ppo(learner, pool, PPOConfig(total_games=300, games_per_iteration=300),
                  partner_sampling=PrioritisedSampling([1.0, 2.0]))


def test_reference_scores_are_the_best_scripted_score_against_each_partner():
    population = [make_partner("hardliner"), StochasticPartner(accept_probability=1.0, walk_away_probability=0.0,
                                                               seed=0)]
    scripted = ["fair_split", "hardliner", "conceder"]
    reference = reference_scores(population, episodes=100, seed=3, scripted=scripted)
    rows = {name: [r.score for r in evaluate_policy(make_partner(name), {"a": population[0], "b": population[1]},
                                                    episodes=100, seed=30_003)[:2]] for name in scripted}
    assert np.allclose(reference, np.max(list(rows.values()), axis=0))
    # Against a partner that agrees to the first offer, demanding everything is best: the hardliner's score.
    assert reference[1] == pytest.approx(rows["hardliner"][1]) and reference[1] > 7


def test_partner_sampling_flag_is_checked_and_a_native_run_uses_it(tmp_path):
    with pytest.raises(TrainConfigError, match="uniform, prioritised"):
        TrainConfig(framework="native", partner_sampling="greedy", out=str(tmp_path / "a")).validate()
    with pytest.raises(TrainConfigError, match="needs --framework native"):
        TrainConfig(framework="rllib", partner_sampling="prioritised", out=str(tmp_path / "b")).validate()
    config = TrainConfig(framework="native", partners=["boulware", "family:stochastic"], family_members=2,
                         partner_sampling="prioritised", iterations=2, train_batch_size=256, minibatch_size=128,
                         eval_episodes=10, heldout_episodes=0, out=str(tmp_path / "run"), live=False)
    result = train(config)
    assert result.iterations == 2 and result.policy_dir.is_dir()


def test_stochastic_partner_random_proposals_are_legal_varied_and_worth_its_reservation():
    rng = np.random.default_rng(0)
    n = 300
    counts, values = sample_context_arrays(rng, n)
    first = rng.integers(2, size=n)

    def proposals(partner):
        games = play_batch([make_partner("hardliner"), partner], counts, values, first)
        kept = [(g, ALL_SPLITS[a % NUM_SPLITS]) for g in range(n) for s, a in games.acts(g) if s == 1 and a < 2 * NUM_SPLITS]
        return kept, games

    tactic, _ = proposals(StochasticPartner(accept_probability=0.0, walk_away_probability=0.0, reservation=6, seed=0))
    random, games = proposals(StochasticPartner(accept_probability=0.0, walk_away_probability=0.0, reservation=6,
                                                random_proposal_probability=1.0, seed=0))
    worth = np.array([split @ values[g, 1] for g, split in random])
    assert worth.min() >= 6  # never below its reservation (play_batch checked legality)
    # The tactic concedes from the top: its proposals keep more for itself than random ones do.
    assert np.mean([split @ values[g, 1] for g, split in tactic]) > worth.mean() + 0.5
    distinct = {(g, tuple(split)) for g, split in random}
    assert len(distinct) > len({(g, tuple(split)) for g, split in tactic})
    with pytest.raises(ValueError, match="random_proposal_probability"):
        StochasticPartner(random_proposal_probability=2.0)


def test_erratic_partners_agree_only_by_chance_and_train_but_stay_off_the_validation_table():
    rng = np.random.default_rng(1)
    n = 300
    counts, values = sample_context_arrays(rng, n)
    first = rng.integers(2, size=n)

    def agrees(partner):  # whether the partner ever agrees to the conceder's ever better offers
        games = play_batch([make_partner("conceder"), partner], counts, values, first)
        return any(a == AGREE_ACTION for g in range(n) for s, a in games.acts(g) if s == 1)

    settings = dict(accept_probability=0.0, walk_away_probability=0.0, reservation=4, seed=0)
    assert agrees(StochasticPartner(**settings))  # its tactic takes offers that reach its target
    assert not agrees(StochasticPartner(**settings, random_proposal_probability=1.0))
    members = family_members("erratic", 8, seed=0)
    assert all(m.random_proposal_probability == 1.0 and m.accept_slope == 0.0 and 0.1 <= m.accept_probability <= 0.4
               and 2 <= m.reservation <= 7 for m in members)
    assert "erratic" in TRAIN_FAMILIES and "erratic" not in VALIDATION_FAMILIES
    assert resolve_population("default,family:erratic")[-1] == "family:erratic"
