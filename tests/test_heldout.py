"""The held-out protocol: families randomise, the split is disjoint, the gap compares the same games."""

from __future__ import annotations

import numpy as np
import pytest

from parley.agents.evaluation import PartnerGroup, evaluate_policy
from parley.agents.heldout import (
    FAMILIES,
    HELDOUT_FAMILIES,
    TRAIN_FAMILIES,
    check_split,
    corpus_test_contexts,
    evaluate_heldout,
    family_groups,
    family_members,
    heldout_table,
    write_heldout_csv,
)
from parley.agents.partners.scripted import make_partner


def test_families_draw_different_parameters_per_member_and_per_seed():
    for name in FAMILIES:
        members = family_members(name, 6, seed=0)
        params = [repr(sorted(m.params.items())) for m in members]
        assert len(set(params)) == 6, name  # every member has its own parameters
        assert all(m.name == name for m in members)
        again = [repr(sorted(m.params.items())) for m in family_members(name, 6, seed=0)]
        other = [repr(sorted(m.params.items())) for m in family_members(name, 6, seed=1)]
        assert again == params and other != params
    deadlines = [m.deadline for m in family_members("deadline_tactic", 20)]
    assert min(deadlines) >= 0.3 and max(deadlines) <= 0.9 and np.std(deadlines) > 0.05
    priors = np.array([m.prior for m in family_members("pareto_prior", 20)])
    assert priors.shape == (20, 3) and priors.std(axis=0).min() > 0.1


def test_randomised_members_play_differently():
    # Members of one family must answer the same states differently, or the family is one partner.
    members = family_members("deadline_tactic", 8, seed=3)
    rows = [evaluate_policy(make_partner("linear"), [m], episodes=60, seed=0)[0] for m in members]
    assert len({round(r.score, 6) for r in rows}) > 3


def test_training_and_heldout_families_are_disjoint():
    assert not set(TRAIN_FAMILIES) & set(HELDOUT_FAMILIES)
    assert set(TRAIN_FAMILIES) | set(HELDOUT_FAMILIES) == set(FAMILIES)
    check_split()
    with pytest.raises(ValueError, match="both training and held-out"):
        check_split(["tactic", "tit_for_tat"], HELDOUT_FAMILIES)
    with pytest.raises(ValueError, match="unknown partner family"):
        check_split(["telepath"], HELDOUT_FAMILIES)
    with pytest.raises(ValueError, match="unknown partner family"):
        family_members("telepath")
    with pytest.raises(ValueError, match="corpus partner"):
        family_groups(["corpus_sl"])


def test_gap_is_measured_on_the_same_games():
    # A scripted partner evaluated as the agent meets exactly the games its own baseline row met.
    report = evaluate_heldout(make_partner("conceder"), episodes=80, members=4, scripted="conceder,boulware")
    for name, result in report.rows.items():
        conceder = report.scripted["conceder"][list(report.rows).index(name)]
        assert result.agent == conceder
        best = max(report.scripted, key=lambda p: report.scripted[p][list(report.rows).index(name)].score)
        assert result.best_scripted == best
        assert result.gap == pytest.approx(result.agent.score - result.best_scripted_row.score)
        if best == "conceder":
            assert result.gap == 0.0
    assert list(report.rows) == [*HELDOUT_FAMILIES, "all"]
    assert report.rows["all"].agent.games == 80 * len(HELDOUT_FAMILIES)


def test_contexts_come_from_the_pool_given(tmp_path):
    counts = np.array([[1, 2, 3]])
    values = np.array([[[2, 1, 2], [0, 2, 2]]])
    seen = []

    class Recorder:
        name = "recorder"

        def act_batch(self, observations, masks):
            seen.append(np.rint(observations[:, :6]).astype(int))
            return make_partner("linear").act_batch(observations, masks)

    evaluate_policy(Recorder(), [make_partner("boulware")], episodes=10, seed=0, contexts=(counts, values))
    rows = np.concatenate(seen)
    assert np.all(rows[:, :3] == [1, 2, 3]) and np.all(rows[:, 3:6] == [2, 1, 2])
    with pytest.raises(ValueError, match="contexts"):
        evaluate_policy(Recorder(), ["boulware"], episodes=2, contexts=(counts, values[:, :1]))
    test = tmp_path / "test.txt"
    test.write_text("<input> 1 2 2 1 3 2 </input> <dialogue> THEM: hi <eos> YOU: <selection> </dialogue> "
                    "<output> <disagree> </output> <partner_input> 1 0 2 2 3 2 </partner_input>\n")
    c, v = corpus_test_contexts(tmp_path)
    assert c.tolist() == [[1, 2, 3]] and v.tolist() == [[[2, 1, 2], [0, 2, 2]]]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="test split"):
        corpus_test_contexts(tmp_path / "empty")


def test_group_rejects_non_policies_and_table_renders(tmp_path):
    with pytest.raises(ValueError, match="no members"):
        PartnerGroup("empty", ())
    with pytest.raises(TypeError, match="Policy"):
        PartnerGroup("bad", (object(),))
    report = evaluate_heldout(make_partner("pareto"), families=["tactic"], episodes=20, members=2,
                              scripted="linear,pareto")
    assert heldout_table(report).row_count == 2
    path = write_heldout_csv(report, tmp_path / "h.csv", policy="p")
    assert path.read_text().splitlines()[0].startswith("policy,")
    assert len(path.read_text().splitlines()) == 3


def test_partner_parameters_the_families_draw():
    from parley.agents.partners.scripted import ParetoPartner, TimeDependentPartner

    early = TimeDependentPartner(exponent=1.0, reservation=4.0, deadline=0.5)
    assert early.target_utility(0.25) == pytest.approx(7.0)  # half-way to its deadline
    assert early.target_utility(0.5) == pytest.approx(4.0) and early.target_utility(0.9) == pytest.approx(4.0)
    assert TimeDependentPartner(reservation=4.0).target_utility(0.5) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="deadline"):
        TimeDependentPartner(deadline=0.0)
    with pytest.raises(ValueError, match="prior"):
        ParetoPartner(prior=[1.0, 2.0])
    # A prior leaning towards the partner valuing books shifts the believed values towards books.
    from parley.envs.negotiation import BatchedNegotiation

    game = BatchedNegotiation(1)
    game.reset_games(np.arange(1), np.array([[2, 2, 2]]), np.array([[[1, 2, 2], [3, 1, 1]]]), np.array([0]))
    obs = game.observations(np.array([0]), np.arange(1))
    from parley.agents.partners.scripted import ObservationView

    view = ObservationView(obs)
    plain = ParetoPartner().expected_partner_values(view)[0]
    leaning = ParetoPartner(prior=[2.0, 0.0, 0.0]).expected_partner_values(view)[0]
    assert leaning[0] > plain[0] + 0.5


def test_parley_train_and_eval_show_the_heldout_families(tmp_path, monkeypatch, capsys):
    from typer.testing import CliRunner

    from parley.agents.training.run import TrainConfig, train
    from parley.cli import app

    run = tmp_path / "run"
    result = train(TrainConfig(framework="native", iterations=1, backbone_config={"hidden_sizes": [16]},
                               train_batch_size=512, minibatch_size=256, eval_episodes=12, live=False,
                               partners=["linear"], out=str(run)))
    assert list(result.heldout.rows) == [*HELDOUT_FAMILIES, "all"]
    assert result.heldout.rows["all"].agent.games == 12 * len(HELDOUT_FAMILIES)
    lines = (run / "heldout.csv").read_text().splitlines()
    assert len(lines) == 1 + len(HELDOUT_FAMILIES) + 1 and "gap" in lines[0]
    quiet = train(TrainConfig(framework="native", iterations=1, backbone_config={"hidden_sizes": [16]},
                              train_batch_size=512, minibatch_size=256, eval_episodes=4, heldout_episodes=0,
                              live=False, partners=["linear"], out=str(tmp_path / "quiet")))
    assert quiet.heldout is None and not (tmp_path / "quiet" / "heldout.csv").exists()

    out = CliRunner().invoke(app, ["eval", str(run), "--protocol", "heldout", "--episodes", "10", "--members", "3",
                                   "--out", str(tmp_path / "h.csv")], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "best scripted" in out.output and "pareto_prior" in out.output and "gap" in out.output
    # the benchmark script reads the run's training settings and prints the agent beside the suite
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "heldout.py"
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location("heldout_bench", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "heldout_bench", module)
    spec.loader.exec_module(module)
    module.main(["--policy", str(run), "--no-corpus", "--no-append", "--episodes", "6", "--members", "2"])
    printed = capsys.readouterr().out
    assert "parley train --framework native" in printed and "| **gap** (agent - best scripted) |" in printed
    assert "| pareto |" in printed and "| hardliner |" in printed

    bad = CliRunner().invoke(app, ["eval", str(run), "--protocol", "sideways"])
    assert bad.exit_code != 0 and "unknown protocol" in bad.output
    bad = CliRunner().invoke(app, ["eval", str(run), "--protocol", "heldout", "--corpus", str(tmp_path)])
    assert bad.exit_code != 0 and "test.txt" in bad.output
