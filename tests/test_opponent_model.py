"""The auxiliary opponent-model head: it learns the partner's replies, weight 0 leaves PPO as it was,
policies keep saving and loading with and without it, and its flag is checked."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from parley.agents.nn.torch_policy import POLICY_FILE, TorchPolicy, load_policy
from parley.agents.partners.scripted import make_partner
from parley.agents.training.ppo import PPOConfig, opponent_model_loss, train_ppo
from parley.agents.training.run import TrainConfig, TrainConfigError, train
from parley.cli import app
from parley.envs.negotiation import AGREE_ACTION, NUM_ACTIONS, sample_context_arrays
from parley.envs.play import play_batch

OBS = 36


def shared_state(policy: TorchPolicy) -> dict[str, torch.Tensor]:
    """The actor-critic's weights without the opponent head's."""
    return {k: v.clone() for k, v in policy.model.state_dict().items() if not k.startswith("opponent_head.")}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def partners():
    return [make_partner("boulware"), make_partner("hardliner")]


@pytest.mark.parametrize(("target", "fraction"), [("reply", 0.7), ("agrees", 0.8)])
def test_the_head_learns_the_partners_replies(target, fraction):
    torch.set_num_threads(1)
    learner = TorchPolicy("mlp", OBS, device="cpu", deterministic=False, seed=1, opponent_model=True)
    result = train_ppo(learner, partners(), PPOConfig(total_games=128 * 14, games_per_iteration=128, seed=1,
                                                      opponent_model_coef=1.0, opponent_model_target=target))
    losses = [row["opponent_model_loss"] for row in result.history]
    accuracy = [row["opponent_model_accuracy"] for row in result.history]
    assert np.isfinite(losses).all()
    # It starts near a uniform guess over the partner's legal acts and ends well below it.
    assert np.mean(losses[-3:]) < fraction * np.mean(losses[:2]), losses
    assert np.mean(accuracy[-3:]) > np.mean(accuracy[:2]), accuracy


def test_the_loss_scores_answered_rows_against_the_partners_legal_acts():
    logits = torch.zeros(3, NUM_ACTIONS)
    masks = torch.zeros(3, NUM_ACTIONS, dtype=torch.int8)
    masks[:, [0, 1, 2, AGREE_ACTION]] = 1  # four legal acts each: a uniform head gives each 1/4
    masks[2, AGREE_ACTION] = 0
    actions = torch.tensor([AGREE_ACTION, 1, -1])  # the third row went unanswered
    loss, _, scored = opponent_model_loss(logits, actions, masks, "reply")
    assert scored == 2 and float(loss) == pytest.approx(np.log(4))
    loss, hits, scored = opponent_model_loss(logits, actions, masks, "agrees")
    # Agreeing has probability 1/4: the agreed row costs -log(1/4), the refused one -log(3/4).
    assert scored == 2 and hits == 1 and float(loss) == pytest.approx(-(np.log(0.25) + np.log(0.75)) / 2)
    nothing, _, none = opponent_model_loss(logits, torch.full((3,), -1), masks, "agrees")
    assert none == 0 and float(nothing) == 0


def test_weight_zero_trains_exactly_as_without_the_head_and_a_positive_weight_reaches_the_trunk():
    torch.set_num_threads(1)
    plain = TorchPolicy("mlp", OBS, device="cpu", deterministic=False, seed=2)
    with_head = TorchPolicy("mlp", OBS, device="cpu", deterministic=False, seed=2, opponent_model=True)
    auxiliary = TorchPolicy("mlp", OBS, device="cpu", deterministic=False, seed=2, opponent_model=True)
    # The head is built last: the rest of the network starts from the same weights either way.
    assert_same_weights(shared_state(plain), shared_state(with_head))
    head_before = {k: v.clone() for k, v in with_head.model.opponent_head.state_dict().items()}
    config = dict(total_games=256 * 3, games_per_iteration=256, seed=2)
    assert PPOConfig().opponent_model_coef == 0
    train_ppo(plain, partners(), PPOConfig(**config))
    history = train_ppo(with_head, partners(), PPOConfig(**config, opponent_model_coef=0.0)).history
    train_ppo(auxiliary, partners(), PPOConfig(**config, opponent_model_coef=1.0))
    assert_same_weights(shared_state(plain), shared_state(with_head))
    assert_same_weights(head_before, with_head.model.opponent_head.state_dict())
    assert "opponent_model_loss" not in history[-1]
    trunk = "backbone."
    assert any(not torch.equal(v, shared_state(plain)[k]) for k, v in shared_state(auxiliary).items()
               if k.startswith(trunk))


def test_policies_save_and_load_with_and_without_the_head_and_act_alike(tmp_path):
    with_head = TorchPolicy("mlp", OBS, device="cpu", seed=4, opponent_model=True)
    plain = TorchPolicy("mlp", OBS, device="cpu", seed=4)
    plain.model.load_state_dict(shared_state(with_head))
    loaded_head = load_policy(with_head.save(tmp_path / "head"), device="cpu")
    loaded_plain = load_policy(plain.save(tmp_path / "plain"), device="cpu")
    assert loaded_head.opponent_model and loaded_head.model.opponent_head is not None
    assert not loaded_plain.opponent_model and loaded_plain.model.opponent_head is None
    assert "opponent_model" not in json.loads((tmp_path / "plain" / POLICY_FILE).read_text())
    assert_same_weights(dict(loaded_head.model.state_dict()), dict(with_head.model.state_dict()))
    # Acting ignores the head: the same trunk and heads play the same games.
    rng = np.random.default_rng(0)
    counts, values = sample_context_arrays(rng, 64)
    first = rng.integers(0, 2, size=64)
    games = [play_batch([policy, make_partner("boulware")], counts, values, first)
             for policy in (loaded_head, loaded_plain)]
    assert np.array_equal(games[0].metrics["scores"], games[1].metrics["scores"])
    assert np.array_equal(games[0].turns, games[1].turns)
    # A policy saved before the head existed (no key in policy.json) loads as one without it.
    config = json.loads((tmp_path / "plain" / POLICY_FILE).read_text())
    config.pop("opponent_model", None)
    (tmp_path / "plain" / POLICY_FILE).write_text(json.dumps(config))
    assert TorchPolicy.load(tmp_path / "plain", device="cpu").model.opponent_head is None


def test_a_native_run_trains_saves_resumes_and_starts_from_a_policy_without_the_head(tmp_path):
    common = dict(framework="native", partners=["boulware", "hardliner"], train_batch_size=256, minibatch_size=128,
                  eval_episodes=5, heldout_episodes=0, live=False, opponent_model_coef=0.5)
    first = train(TrainConfig(**common, iterations=2, out=str(tmp_path / "run")))
    policy = load_policy(first.policy_dir, device="cpu")
    assert policy.model.opponent_head is not None
    assert "opponent_model_coef: 0.5" in (tmp_path / "run" / "config.yaml").read_text()
    resumed = train(TrainConfig(**common, iterations=3, out=str(tmp_path / "run"), resume=True))
    assert resumed.iterations == 3
    plain = TorchPolicy("mlp", OBS, device="cpu", seed=0).save(tmp_path / "plain")
    started = train(TrainConfig(**common, iterations=1, out=str(tmp_path / "init"), init_from=str(plain)))
    assert load_policy(started.policy_dir, device="cpu").model.opponent_head is not None


def test_the_weight_is_checked_where_it_is_given(tmp_path):
    with pytest.raises(TrainConfigError, match="needs --framework native"):
        TrainConfig(framework="rllib", opponent_model_coef=0.5, out=str(tmp_path / "a")).validate()
    with pytest.raises(TrainConfigError, match="opponent-model-coef must be a number >= 0"):
        TrainConfig(framework="native", opponent_model_coef=-1.0, out=str(tmp_path / "b")).validate()
    with pytest.raises(ValueError, match="opponent_model_coef must be"):
        PPOConfig(opponent_model_coef=float("nan"))
    with pytest.raises(ValueError, match="reply, agrees"):
        PPOConfig(opponent_model_target="mood")
    with pytest.raises(TrainConfigError, match="reply, agrees"):
        TrainConfig(framework="native", opponent_model_target="mood", out=str(tmp_path / "d")).validate()
    with pytest.raises(ValueError, match="opponent_model=True"):
        train_ppo(TorchPolicy("mlp", OBS, device="cpu"), partners(),
                  PPOConfig(total_games=8, games_per_iteration=8, opponent_model_coef=1.0))
    with pytest.raises(ValueError, match="no opponent-model head"):
        TorchPolicy("mlp", OBS, device="cpu").model.forward_with_opponent(
            torch.zeros(1, OBS), torch.zeros(1, dtype=torch.long))
    result = CliRunner().invoke(app, ["train", "--framework", "rllib", "--opponent-model-coef", "0.5",
                                      "--out", str(tmp_path / "c")], env={"COLUMNS": "250"})
    assert result.exit_code == 2 and "--opponent-model-coef needs --framework native" in result.output, result.output
    assert NUM_ACTIONS == TorchPolicy("mlp", OBS, device="cpu", opponent_model=True).model.opponent_head.net[-1].out_features
