"""Training in bfloat16: the precision setting, its validation, and the RLlib module's training forward pass."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from parley.envs.negotiation import NUM_ACTIONS, BatchedNegotiation, sample_context_arrays
from parley.envs.negotiation_v0 import observation_space
from parley.utils import PRECISIONS, resolve_precision, training_autocast


def mid_game_states(n: int = 64, seed: int = 0):
    """Observations and masks of games two random legal acts in."""
    rng = np.random.default_rng(seed)
    game = BatchedNegotiation(n)
    counts, values = sample_context_arrays(rng, n)
    game.reset_games(np.arange(n), counts, values, rng.integers(2, size=n))
    for _ in range(2):
        masks = game.legal_masks()
        game.apply_actions(np.array([rng.choice(np.flatnonzero(m[:250])) for m in masks]))
    return game.observations(game.current_player), game.legal_masks()


def test_resolve_precision_passes_explicit_formats_and_resolves_auto():
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("bfloat16", "cpu") == "bfloat16"
    assert resolve_precision("auto", "cpu") in ("float32", "bfloat16")
    assert set(PRECISIONS) == {"auto", "float32", "bfloat16"}


def test_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="auto, float32, bfloat16"):
        resolve_precision("fp16")


def test_training_autocast_runs_matrix_products_in_the_asked_format():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with training_autocast("bfloat16"):
        assert layer(x).dtype == torch.bfloat16
    with training_autocast("float32"):
        assert layer(x).dtype == torch.float32


def native_run(precision: str, opponent_model: bool = False):
    from parley.agents.nn.torch_policy import TorchPolicy
    from parley.agents.partners.scripted import make_partner
    from parley.agents.training.ppo import PPOConfig, train_ppo

    learner = TorchPolicy("mlp", 36, {"hidden_sizes": [64, 64]}, device="cpu", deterministic=False, seed=3,
                          opponent_model=opponent_model)
    config = PPOConfig(total_games=256, games_per_iteration=128, precision=precision, seed=3,
                       opponent_model_coef=0.5 if opponent_model else 0.0)
    result = train_ppo(learner, [make_partner("boulware"), make_partner("conceder")], config)
    return learner, result.history


@pytest.mark.parametrize("opponent_model", [False, True])
def test_native_update_in_bfloat16_trains_and_differs_from_float32_only_by_rounding(opponent_model):
    full, full_rows = native_run("float32", opponent_model)
    half, half_rows = native_run("bfloat16", opponent_model)
    assert all(np.isfinite(row["approx_kl"]) for row in half_rows)
    # the first iteration's games are the same (acting is float32 and seeded alike) ...
    assert half_rows[0]["score"] == full_rows[0]["score"]
    # ... and the updates differ: the matrix products ran in bfloat16, and every weight still moved
    for (name, a), (_, b) in zip(full.model.state_dict().items(), half.model.state_dict().items()):
        assert a.dtype == b.dtype == torch.float32, name
    assert any(not torch.equal(a, b) for a, b in zip(full.model.parameters(), half.model.parameters()))


def test_native_settings_refuse_unresolved_precision():
    from parley.agents.training.ppo import PPOConfig

    with pytest.raises(ValueError, match="precision must be 'float32' or 'bfloat16'"):
        PPOConfig(precision="auto")


def test_train_config_checks_precision_where_it_is_given():
    from parley.agents.training.run import TrainConfig, TrainConfigError

    with pytest.raises(TrainConfigError, match="auto, float32, bfloat16"):
        TrainConfig(framework="native", precision="half").validate()
    with pytest.raises(TrainConfigError, match="--precision needs --framework rllib or native"):
        TrainConfig(framework="sb3", precision="bfloat16").validate()



def test_parley_train_refuses_an_unknown_precision_on_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from parley.cli import app

    result = CliRunner().invoke(app, ["train", "--framework", "native", "--precision", "half",
                                      "--out", str(tmp_path / "run")], env={"COLUMNS": "250"})
    assert result.exit_code == 2 and "unknown precision 'half'" in result.output, result.output
    assert not (tmp_path / "run").exists()


ray = pytest.importorskip("ray")

from parley.agents.training import rllib_setups as setups  # noqa: E402
from parley.agents.training.rllib_module import module_spec  # noqa: E402


def build_module(precision: str):
    torch.manual_seed(0)
    spec = module_spec("mlp", {"hidden_sizes": [64, 64]}, precision=precision,
                       observation_space=observation_space(10), action_space=gym.spaces.Discrete(NUM_ACTIONS))
    return spec.build()


def test_bfloat16_module_trains_in_bfloat16_and_hands_the_loss_float32():
    from ray.rllib.core.columns import Columns

    full, half = build_module("float32"), build_module("bfloat16")
    half.model.load_state_dict(full.model.state_dict())
    obs, masks = mid_game_states()
    batch = {Columns.OBS: {"observation": torch.as_tensor(obs), "action_mask": torch.as_tensor(masks)}}
    out_full, out_half = full.forward_train(batch), half.forward_train(batch)
    logits_full, logits_half = out_full[Columns.ACTION_DIST_INPUTS], out_half[Columns.ACTION_DIST_INPUTS]
    assert logits_half.dtype == torch.float32 and out_half[Columns.EMBEDDINGS].dtype == torch.float32
    legal = torch.as_tensor(masks).bool()
    # the same network to bfloat16's rounding, and not bit-for-bit: the products did run in bfloat16
    assert torch.allclose(logits_half[legal], logits_full[legal], atol=0.05)
    assert not torch.equal(logits_half[legal], logits_full[legal])
    # illegal acts keep no probability, and acting stays float32 (exactly the float32 module's logits)
    assert torch.softmax(logits_half, -1)[~legal].max() == 0
    act_full = full.forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
    assert torch.equal(half.forward_inference(batch)[Columns.ACTION_DIST_INPUTS], act_full)
    # gradients reach every weight through the bfloat16 pass
    values = half.compute_values(batch, embeddings=out_half[Columns.EMBEDDINGS])
    (torch.log_softmax(logits_half, -1)[legal].mean() + values.mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in half.model.parameters())


def test_precision_settings_refuse_unresolved_or_unknown_formats():
    with pytest.raises(ValueError, match="precision must be 'float32' or 'bfloat16'"):
        setups.PPOSettings(precision="auto")
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        build_module("auto")


def test_parley_train_precision_reaches_the_learners_module():
    from parley.agents.training.rllib import build_algorithm_config
    from parley.agents.training.run import TrainConfig

    for given, expected in (("bfloat16", "bfloat16"), ("float32", "float32"),
                            ("auto", resolve_precision("auto", "cpu"))):
        config = TrainConfig(precision=given, device="cpu").validate()
        algo_config = build_algorithm_config(config, "mlp", {}, "all")
        assert algo_config.rl_module_spec.model_config["precision"] == expected
