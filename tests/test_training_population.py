"""Training populations: family entries expand to drawn members, held-out families are refused, the
stochastic partner family behaves as documented and the validation table pools its rows."""

from __future__ import annotations

import numpy as np
import pytest

from parley.agents.evaluation import EvalRow, evaluate_policy
from parley.agents.heldout import (
    HELDOUT_FAMILIES,
    TRAIN_FAMILIES,
    VALIDATION_CORPUS_FAMILY,
    VALIDATION_FAMILIES,
    evaluate_validation,
    family_members,
    pool_rows,
)
from parley.agents.partners.scripted import TimeDependentPartner, make_partner
from parley.agents.partners.stochastic import StochasticPartner
from parley.agents.training.population import (
    TRAINING_MEMBER_SEED,
    build_population,
    make_population_env,
    resolve_population,
)
from parley.agents.training.run import DEFAULT_PARTNERS, TrainConfig, TrainConfigError
from parley.envs.negotiation import AGREE_ACTION, WALK_AWAY_ACTION
from parley.envs.play import play_batch


def _games(partner, opponent="linear", n=400, seed=0):
    from parley.envs.negotiation import sample_context_arrays

    rng = np.random.default_rng(seed)
    counts, values = sample_context_arrays(rng, n)
    return play_batch([make_partner(opponent), partner], counts, values, rng.integers(2, size=n))


def _acts_of(games, seat):
    return [a for g in range(len(games)) for s, a in games.acts(g) if s == seat]


def test_stochastic_partner_agrees_and_walks_away_by_its_probabilities():
    always = _games(StochasticPartner(accept_probability=1.0, walk_away_probability=0.0, seed=0))
    # It agrees to the first offer it sees: no game lasts beyond the partner's first chance to answer one.
    assert always.agreed.all() and always.turns.max() <= 3
    leaves = _games(StochasticPartner(accept_probability=0.0, walk_away_probability=1.0, reservation=10, seed=0))
    assert not leaves.agreed.any() and leaves.turns.max() <= 2
    assert set(_acts_of(leaves, 1)) == {WALK_AWAY_ACTION}
    # Without randomness it is its time-dependent tactic.
    plain = _games(StochasticPartner(accept_probability=0.0, walk_away_probability=0.0, exponent=2.0, seed=0))
    tactic = _games(TimeDependentPartner(exponent=2.0, accept_final_offers=False))
    assert np.array_equal(plain.history_actions, tactic.history_actions)
    # Seeded: the same seed plays the same games; with accept_slope, offers below the reservation value
    # are taken less often (here 0.2 - 0.1 x the shortfall: the hardliner's offers, never).
    a, b = (_games(StochasticPartner(accept_probability=0.3, walk_away_probability=0.05, seed=7)) for _ in range(2))
    assert np.array_equal(a.history_actions, b.history_actions)
    hard = make_partner("hardliner")
    flat = StochasticPartner(accept_probability=0.2, walk_away_probability=0.0, reservation=10, seed=1)
    steep = StochasticPartner(accept_probability=0.2, accept_slope=0.1, walk_away_probability=0.0, reservation=10,
                              seed=1)
    assert evaluate_policy(hard, [flat], episodes=300)[0].agreement > 0.5
    assert evaluate_policy(hard, [steep], episodes=300)[0].agreement < 0.1  # 10 points below: never
    for bad in (dict(accept_probability=1.5), dict(walk_away_probability=-0.1), dict(accept_slope=-1.0)):
        with pytest.raises(ValueError, match="accept_probability|walk_away_probability|accept_slope"):
            StochasticPartner(**bad)


def test_stochastic_partner_acts_are_legal_row_by_row():
    games = _games(StochasticPartner(accept_probability=0.3, accept_slope=0.05, walk_away_probability=0.1, seed=3),
                   opponent="random", n=300)
    agree_acts = [a for a in _acts_of(games, 1) if a == AGREE_ACTION]
    assert agree_acts and games.walked_away_by.max() == 1  # it both agrees and walks away; play_batch checked legality


def test_population_expands_families_and_refuses_held_out_ones():
    assert "stochastic" in TRAIN_FAMILIES
    names = resolve_population("boulware,family:stochastic,suite")
    assert names[:2] == ["boulware", "family:stochastic"] and "pareto" in names and len(names) == len(set(names))
    assert resolve_population("default,family:stochastic") == [*DEFAULT_PARTNERS, "family:stochastic"]
    population = build_population(["linear", "family:stochastic", "family:tactic"], family_members=5, seed=2)
    assert len(population) == 11
    stochastic = [p for p in population if isinstance(p, StochasticPartner)]
    assert len(stochastic) == 5 and len({repr(p.params) for p in stochastic}) == 5
    # Members come from the training stream, not the validation or held-out table's members.
    drawn = family_members("stochastic", 5, seed=TRAINING_MEMBER_SEED + 2)
    assert [p.params for p in stochastic] == [p.params for p in drawn]
    assert [p.params for p in stochastic] != [p.params for p in family_members("stochastic", 5, seed=2)]
    for family in HELDOUT_FAMILIES:
        with pytest.raises(ValueError, match="held-out family"):
            resolve_population(f"linear,family:{family}")
    with pytest.raises(ValueError, match="unknown partner family"):
        resolve_population("family:telepath")
    with pytest.raises(TrainConfigError, match="held-out family"):
        TrainConfig(partners=["family:pareto_prior"]).validate()
    env = make_population_env("family:fair_split", family_members=3, seed=0)
    assert len(env.pool) == 3


def test_pool_rows_weights_games_and_deals():
    rows = [EvalRow("a", 100, 6.0, 4.0, 10.0, 1.0, 0.5, 30.0, 4.0),
            EvalRow("b", 300, 2.0, 2.0, 4.0, 0.5, 1.0, 10.0, 6.0)]
    pooled = pool_rows(rows)
    assert pooled.games == 400 and pooled.score == pytest.approx(3.0) and pooled.agreement == pytest.approx(0.625)
    assert pooled.pareto == pytest.approx((100 * 0.5 + 150 * 1.0) / 250)
    assert pooled.turns == pytest.approx(5.5)


def test_validation_table_uses_the_training_families_and_the_corpus_stand_in(tmp_path):
    report = evaluate_validation(make_partner("pareto"), episodes=20, members=2, scripted="linear,pareto")
    assert list(report.rows) == [*VALIDATION_FAMILIES, "all"]
    (tmp_path / "val.txt").write_text(
        "<input> 1 2 2 1 3 2 </input> <dialogue> THEM: hi <eos> YOU: <selection> </dialogue> "
        "<output> <disagree> </output> <partner_input> 1 0 2 2 3 2 </partner_input>\n")
    stand_in = make_partner("conceder")
    stand_in.name = VALIDATION_CORPUS_FAMILY
    report = evaluate_validation(make_partner("pareto"), episodes=20, members=2, scripted="linear,pareto",
                                 corpus=tmp_path, corpus_partner=stand_in)
    assert list(report.rows) == [*VALIDATION_FAMILIES, VALIDATION_CORPUS_FAMILY, "all"]
    assert report.rows["all"].agent.games == 20 * (len(VALIDATION_FAMILIES) + 1)
    assert report.rows["all"].agent == report.scripted["pareto"][-1]  # the same games as the scripted pareto
    with pytest.raises(ValueError, match="corpus"):
        evaluate_validation(make_partner("pareto"), episodes=5, members=1, corpus_partner=stand_in)


def test_native_run_trains_against_a_family_and_eval_reads_the_validation_table(tmp_path):
    from typer.testing import CliRunner

    from parley.agents.training.run import train
    from parley.cli import app

    run = tmp_path / "run"
    config = TrainConfig(framework="native", iterations=1, backbone_config={"hidden_sizes": [16]},
                         train_batch_size=512, minibatch_size=256, eval_episodes=4, heldout_episodes=0, live=False,
                         partners=["linear", "family:stochastic"], family_members=3, out=str(run))
    result = train(config)
    assert result.env_steps > 0 and (run / "policy").is_dir()
    assert "family:stochastic" in (run / "config.yaml").read_text()
    out = CliRunner().invoke(app, ["eval", str(run), "--protocol", "validation", "--episodes", "8", "--members", "2"],
                             env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "training families, validation" in out.output and "stochastic" in out.output
    bad = CliRunner().invoke(app, ["train", "--partners", "linear,family:tit_for_tat", "--framework", "native"])
    assert bad.exit_code != 0 and "held-out family" in bad.output


def test_rllib_env_creator_builds_the_population():
    pytest.importorskip("ray")
    from parley.agents.partners.pool import PartnerPoolEnv, PartnerPoolVectorEnv
    from parley.agents.training.rllib_envs import partner_pool_env_creator
    from parley.agents.training.rllib_setups import partner_pool_config

    config = partner_pool_config(["linear", "family:stochastic"], family_members=2, seed=3)
    env_config = dict(config.env_config)
    assert env_config["partners"] == ["linear", "family:stochastic"] and env_config["partner_seed"] == 3
    vector = partner_pool_env_creator({**env_config, "num_envs": 4})
    assert isinstance(vector, PartnerPoolVectorEnv) and len(vector.pool) == 3
    assert sum(isinstance(p, StochasticPartner) for p in vector.pool) == 2
    single = partner_pool_env_creator(env_config)
    assert isinstance(single, PartnerPoolEnv) and len(single.pool) == 3
    vector.reset(seed=0)
    for _ in range(6):  # the partners answer through the pool
        vector.step(np.asarray(vector.action_masks()).argmax(axis=1))
