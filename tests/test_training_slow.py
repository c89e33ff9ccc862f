"""Longer training runs (``pytest -m slow``): the default ``parley train`` learns; self-play grows its league."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from typer.testing import CliRunner  # noqa: E402

from parley.agents.evaluation import evaluate_policy  # noqa: E402
from parley.agents.training.run import read_progress  # noqa: E402


@pytest.mark.slow
def test_default_parley_train_learns_and_ends_with_table_and_checkpoint(tmp_path):
    from parley.agents import load_policy
    from parley.agents.nn.torch_policy import TorchPolicy
    from parley.cli import app

    run = tmp_path / "default"
    result = CliRunner().invoke(app, ["train", "--out", str(run), "--no-live"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "checkpoint:" in text and "iter_000015" in text and "Pareto %" in text
    assert len(read_progress(run)) == 15
    trained = load_policy(run)
    untrained = TorchPolicy("mlp", 36, device="cpu", seed=0)
    pool = ["boulware", "linear", "conceder", "fair_split", "tit_for_tat", "pareto"]
    after = evaluate_policy(trained, pool, episodes=200, seed=99)[-1].score
    before = evaluate_policy(untrained, pool, episodes=200, seed=99)[-1].score
    assert after > before + 0.5, (before, after)


@pytest.mark.slow
def test_self_play_league_adds_snapshots(tmp_path):
    from parley.cli import app

    run = tmp_path / "selfplay"
    result = CliRunner().invoke(app, ["train", "--self-play", "--iterations", "6", "--league-size", "2",
                                      "--league-threshold", "0", "--train-batch-size", "1024", "--minibatch-size",
                                      "512", "--num-envs", "16", "--eval-episodes", "20", "--out", str(run),
                                      "--no-live"])
    assert result.exit_code == 0, result.output
    rows = read_progress(run)
    assert [int(r["league_snapshots"]) for r in rows] == [1, 2, 3, 4, 5, 6]
