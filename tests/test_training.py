"""Training negotiation agents: the RLlib module and setups, checkpoints, resume, SB3, load_policy, bad input.

Ray starts once for the module (``ray_session``); every PPO run uses tiny batches.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")
pytest.importorskip("sb3_contrib")

from ray.rllib.core.columns import Columns  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from parley.agents.partners.pool import PartnerPoolVectorEnv, resolve_partner_names  # noqa: E402
from parley.agents.training.rllib_envs import NegotiationMultiAgentEnv  # noqa: E402
from parley.agents.training.rllib_module import export_policy, module_spec  # noqa: E402
from parley.agents.training.run import (  # noqa: E402
    TrainConfig,
    TrainConfigError,
    read_progress,
    resolve_train_config,
    train,
)
from parley.envs.negotiation import NUM_ACTIONS, BatchedNegotiation, sample_context_arrays  # noqa: E402
from parley.envs.negotiation_v0 import observation_space  # noqa: E402

BACKBONES = {
    "mlp": {"hidden_sizes": [32]},
    "transformer": {"d_model": 16, "n_heads": 2, "n_layers": 1},
    "compacter": {"d_model": 16, "n_heads": 2, "n_layers": 1, "reduction": 4},
    "invertible_attention": {"d_model": 16, "n_heads": 2, "depth": 1},
}
TINY = dict(train_batch_size=256, minibatch_size=128, num_epochs=1, num_envs_per_env_runner=8, eval_episodes=20,
            live=False, partners=["boulware", "conceder", "random"])


def game_states(n: int = 64, seed: int = 0, steps: int = 3):
    """Observations and masks of mid-game states (random legal play for a few acts)."""
    rng = np.random.default_rng(seed)
    game = BatchedNegotiation(n)
    counts, values = sample_context_arrays(rng, n)
    game.reset_games(np.arange(n), counts, values, rng.integers(2, size=n))
    for _ in range(steps):
        masks = game.legal_masks()
        actions = np.array([rng.choice(np.flatnonzero(m)) if m.any() else 0 for m in masks])
        actions = np.where(masks[np.arange(n), 251] & (actions >= 250), 0, actions)  # keep games going
        game.apply_actions(actions)
    live = ~game.done
    return game.observations(game.current_player)[live], game.legal_masks()[live]


def module_for(backbone: str):
    spec = module_spec(backbone, BACKBONES[backbone], observation_space=observation_space(10),
                       action_space=__import__("gymnasium").spaces.Discrete(NUM_ACTIONS))
    return spec.build()


# --------------------------------------------------------------------------------------------------
# No Ray cluster needed
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_module_masks_logits_samples_legal_and_exports_same_policy(backbone, tmp_path):
    module = module_for(backbone)
    obs, masks = game_states(64, seed=1)
    batch = {Columns.OBS: {"observation": torch.as_tensor(obs), "action_mask": torch.as_tensor(masks)}}
    out = module.forward_train(batch)
    logits = out[Columns.ACTION_DIST_INPUTS]
    assert logits.shape == (len(obs), NUM_ACTIONS)
    values = module.compute_values(batch, embeddings=out[Columns.EMBEDDINGS])
    assert values.shape == (len(obs),) and torch.isfinite(values).all()
    # (spectral-norm power iterations of invertible_attention move the weights slightly per training forward)
    assert torch.allclose(values, module.compute_values(batch), atol=1e-3)
    # Illegal actions get (about) the float minimum added: no probability mass at all.
    probs = torch.softmax(logits.detach(), dim=-1)
    assert float(probs[torch.as_tensor(masks) == 0].max()) == 0.0
    draws = torch.distributions.Categorical(logits=module.forward_exploration(batch)[Columns.ACTION_DIST_INPUTS])
    samples = draws.sample((200,)).numpy()  # (200, B)
    assert np.take_along_axis(masks.T[None].repeat(200, 0).transpose(0, 2, 1), samples[..., None], -1).all()
    # The exported TorchPolicy is the same network: same greedy actions.
    module.eval()
    policy = export_policy(module, tmp_path / "policy")
    greedy = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS].argmax(-1).numpy()
    from parley.agents import load_policy

    assert np.array_equal(load_policy(tmp_path / "policy").act_batch(obs, masks), greedy)
    assert np.array_equal(policy.act_batch(obs, masks), greedy)


def test_multi_agent_adapter_reports_agents_that_observed_and_keys_infos():
    env = NegotiationMultiAgentEnv({"render_mode": "ansi"})
    rng = np.random.default_rng(0)
    endings = 0
    for episode in range(30):
        obs, infos = env.reset(seed=episode)
        assert set(obs) == set(infos) and len(obs) == 1  # infos keyed by the agent to move
        seen = set(obs)
        while True:
            (agent, ob), = obs.items()
            action = int(rng.choice(np.flatnonzero(ob["action_mask"])))
            obs, rewards, terminated, truncated, infos = env.step({agent: action})
            seen |= set(obs)
            if terminated["__all__"]:
                endings += 1
                assert set(obs) == set(rewards) == seen  # only agents that have observed
                info = next(iter(infos.values()))
                for a in obs:
                    seat = int(a[-1])
                    assert rewards[a] == info["scores"][seat]
                assert not truncated["__all__"]
                break
            assert len(obs) == 1 and rewards == {}
    assert endings == 30
    assert "agent_0" in env.render()


def test_partner_pool_vector_env_draws_each_games_partner_from_the_pool():
    env = PartnerPoolVectorEnv(48, ["boulware", "hardliner", "random"])
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    assignments = [env.assignment.copy()]
    ended = 0
    for _ in range(60):
        masks = obs["action_mask"]
        actions = np.array([rng.choice(np.flatnonzero(m)) if m.any() else 0 for m in masks])
        obs, rewards, terminated, _, info = env.step(actions)
        ended += int(terminated.sum())
        assignments.append(env.assignment.copy())
    used = np.concatenate(assignments)
    assert set(np.unique(used)) == {0, 1, 2}
    assert ended > 48  # games restart with fresh partners
    assert any((a != assignments[0]).any() for a in assignments[1:])
    with pytest.raises(ValueError, match="unknown partner"):
        resolve_partner_names("boulware,nobody")
    assert resolve_partner_names("suite") == resolve_partner_names("all")


# --------------------------------------------------------------------------------------------------
# Bad input: errors before any work
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, message", [
    ({"backbone": "resnet"}, "unknown backbone 'resnet'; available"),
    ({"partners": ["boulware", "nobody"]}, "unknown partner 'nobody'"),
    ({"framework": "jax"}, "unknown framework"),
    ({"framework": "sb3", "self_play": True}, "partner pool only"),
    ({"framework": "sb3", "num_env_runners": 2}, "need --framework rllib"),
    ({"self_play": True, "independent": True}, "choose one setup"),
    ({"adapters": "compacter"}, "give it with --init-from"),
    ({"adapters": "lora", "init_from": "."}, "unknown adapters"),
    ({"init_from": "/no/such/policy"}, "nothing at"),
    ({"backbone_config": {"widht": 3}}, "unknown option"),
    ({"device": "tpu"}, "unknown device"),
    ({"iterations": 0}, "at least 1"),
    ({"minibatch_size": 4096, "train_batch_size": 1024}, "cannot exceed"),
])
def test_bad_configurations_are_rejected_with_a_clear_message(changes, message, tmp_path):
    with pytest.raises(TrainConfigError, match=message):
        TrainConfig(out=str(tmp_path / "run"), **changes).validate()
    assert not (tmp_path / "run").exists()


def test_cli_rejects_bad_input_before_starting(tmp_path):
    from parley.cli import app

    runner = CliRunner()
    out = tmp_path / "run"
    for args, message in [(["--backbone", "resnet"], "unknown backbone"), (["--partners", "x"], "unknown partner"),
                          (["--framework", "sb3", "--self-play"], "partner pool only"),
                          (["--resume"], "--resume needs --out"),
                          (["--config", str(tmp_path / "none.yaml")], "no config file")]:
        result = runner.invoke(app, ["train", "--out", str(out), *args] if args != ["--resume"] else ["train", *args])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
    (tmp_path / "bad.yaml").write_text("backbone: mlp\nlearning_rate: 0.1\n")
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2 and "learning_rate" in result.output
    assert not out.exists()
    result = runner.invoke(app, ["eval", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no run" in result.output


def test_learning_rate_defaults_to_a_larger_step_when_only_adapters_train(tmp_path):
    (tmp_path / "base").mkdir()
    assert TrainConfig(out=str(tmp_path / "a")).validate().lr == 1e-3
    assert TrainConfig(out=str(tmp_path / "b"), init_from=str(tmp_path / "base")).validate().lr == 1e-3
    adapters = TrainConfig(out=str(tmp_path / "c"), init_from=str(tmp_path / "base"), adapters="compacter")
    assert adapters.validate().lr == 1e-2
    assert adapters.replace(lr=3e-3).validate().lr == 3e-3
    with pytest.raises(TrainConfigError, match="lr must be a positive number, got -0.1"):
        adapters.replace(lr=-0.1).validate()


def test_yaml_config_and_flags_merge(tmp_path):
    (tmp_path / "c.yaml").write_text("backbone: transformer\nbackbone-config: {d_model: 16}\niterations: 7\n"
                                     "partners: boulware,conceder\n")
    config = resolve_train_config({"iterations": 3, "out": str(tmp_path / "r")}, tmp_path / "c.yaml")
    assert (config.backbone, config.iterations, config.partners) == ("transformer", 3, ["boulware", "conceder"])
    assert config.backbone_config == {"d_model": 16}


# --------------------------------------------------------------------------------------------------
# With Ray
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("setup", ["partners", "self-play", "independent"])
def test_one_ppo_iteration_per_setup(setup, ray_session):
    from parley.agents.training import rllib_setups as setups

    settings = setups.PPOSettings(train_batch_size=512, minibatch_size=256, num_epochs=1, num_envs_per_env_runner=8)
    if setup == "partners":
        config = setups.partner_pool_config(["boulware", "random"], settings=settings,
                                            backbone_config=BACKBONES["mlp"])
    elif setup == "self-play":
        config = setups.self_play_config(settings=settings, backbone_config=BACKBONES["mlp"], league_size=2,
                                         league_threshold=-1.0)  # every iteration adds a snapshot
    else:
        config = setups.independent_learners_config(settings=settings, backbone_config=BACKBONES["mlp"])
    algo = config.build_algo()
    try:
        # The envs raise on an illegal act, so completed sampling means every sampled act was legal.
        for _ in range(2):
            result = algo.train()
        runners = result["env_runners"]
        assert runners["num_env_steps_sampled"] >= 512
        assert 0.0 <= runners["agreement"] <= 1.0 and 0.0 <= runners["score"] <= 10.0
        if setup == "self-play":
            assert result["league_snapshots"] == 2
            learner = algo.learner_group.get_weights(["learner", "league_1"])
            for key, value in learner["learner"].items():  # the newest snapshot is the learner
                assert np.allclose(np.asarray(value), np.asarray(learner["league_1"][key]))
        if setup == "independent":
            weights = algo.learner_group.get_weights(["learner_0", "learner_1"])
            key = next(iter(weights["learner_0"]))
            assert not np.allclose(np.asarray(weights["learner_0"][key]), np.asarray(weights["learner_1"][key]))
    finally:
        algo.stop()


@pytest.mark.parametrize("backbone", ["transformer", "compacter", "invertible_attention"])
def test_one_ppo_iteration_per_backbone(backbone, ray_session):
    from parley.agents.training import rllib_setups as setups

    settings = setups.PPOSettings(train_batch_size=256, minibatch_size=128, num_epochs=1, num_envs_per_env_runner=8)
    algo = setups.partner_pool_config(["conceder"], backbone=backbone, backbone_config=BACKBONES[backbone],
                                      settings=settings).build_algo()
    try:
        before = algo.learner_group.get_weights(["default_policy"])["default_policy"]
        result = algo.train()
        after = algo.learner_group.get_weights(["default_policy"])["default_policy"]
        assert result["env_runners"]["num_env_steps_sampled"] >= 256
        changed = [k for k in before if not np.allclose(np.asarray(before[k]), np.asarray(after[k]))]
        assert changed, "one PPO update changed no weight"
        if backbone == "compacter":  # frozen transformer weights stay put; adapters move
            from parley.agents.training.rllib_module import build_network

            net = build_network(backbone, 36, BACKBONES[backbone])
            trainable = {"model." + n for n, p in net.named_parameters(remove_duplicate=False) if p.requires_grad}
            assert set(changed) <= trainable
            assert any(".adapter." in k for k in changed)
    finally:
        algo.stop()


def test_checkpoint_resume_and_load_policy(ray_session, tmp_path):
    from parley.agents import load_policy
    from parley.agents.partners.tournament import run_tournament
    from parley.agents.training.rllib import build_algorithm_config

    run = tmp_path / "run"
    config = TrainConfig(iterations=2, checkpoint_every=1, out=str(run), backbone_config=BACKBONES["mlp"], **TINY)
    result = train(config)
    assert result.iterations == 2 and (run / "checkpoints" / "iter_000001").is_dir()
    assert [int(r["iteration"]) for r in read_progress(run)] == [1, 2]
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())
    assert result.eval_rows[-1].partner == "all" and (run / "eval.csv").is_file()

    # The RLlib checkpoint restores a module whose greedy actions match the exported policy's.
    obs, masks = game_states(64, seed=5)
    resolved = config.validate()
    algo = build_algorithm_config(resolved, "mlp", BACKBONES["mlp"], "all").build_algo()
    try:
        algo.restore_from_path(str((result.checkpoint / "algorithm").resolve()))
        module = algo.get_module("default_policy")
        batch = {Columns.OBS: {"observation": torch.as_tensor(obs), "action_mask": torch.as_tensor(masks)}}
        with torch.no_grad():
            greedy = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS].argmax(-1).numpy()
    finally:
        algo.stop()
    for path in (run, result.checkpoint, run / "policy"):
        assert np.array_equal(load_policy(path).act_batch(obs, masks), greedy)

    # --resume continues from the saved iteration.
    resumed = train(resolve_train_config({"resume": True, "out": str(run), "iterations": 3}), evaluate=False)
    assert resumed.iterations == 3 and resumed.env_steps > result.env_steps
    assert [int(r["iteration"]) for r in read_progress(run)] == [1, 2, 3]
    assert load_policy(run).metadata["iteration"] == 3

    # parley eval on the run: a table row per partner, and the CSV.
    from parley.cli import app

    cli = CliRunner().invoke(app, ["eval", str(result.checkpoint), "--partners", "boulware,pareto", "--episodes", "10",
                                   "--out", str(tmp_path / "eval.csv")])
    assert cli.exit_code == 0, cli.output
    assert "boulware" in cli.output and "pareto" in cli.output and "Nash" in cli.output
    assert len((tmp_path / "eval.csv").read_text().splitlines()) == 4  # header, two partners, all

    # The trained policy plays in a tournament like any scripted partner.
    tour = run_tournament([str(run), "boulware"], contexts=20, seed=0)
    assert tour.pair("rllib-partners-mlp", "boulware").games == 20


@pytest.mark.parametrize("adapter_options", [{"reduction": 4}, {"reduction": 4, "target_modules": ["policy_head"]},
                                             {"reduction": 4, "target_modules": ["policy_head"], "placement": "parallel",
                                              "also_train": ["value_head.bias"]}])
def test_compacter_fine_tuning_trains_only_adapters(adapter_options, ray_session, tmp_path):
    from parley.agents import load_policy
    from parley.agents.nn.torch_policy import TorchPolicy

    base = TorchPolicy("transformer", 36, BACKBONES["transformer"], device="cpu", seed=0)
    base.save(tmp_path / "base")
    result = train(TrainConfig(iterations=1, out=str(tmp_path / "ft"), init_from=str(tmp_path / "base"),
                               adapters="compacter", backbone_config=adapter_options, **TINY), evaluate=False)
    tuned = load_policy(result.run_dir)
    assert tuned.backbone_name == "compacter"
    base_state, tuned_state = base.model.state_dict(), tuned.model.state_dict()
    also_trained = set(adapter_options.get("also_train", []))
    for key, value in tuned_state.items():
        if ".adapter." not in key and key not in also_trained:
            assert torch.equal(value, base_state[key.replace(".base.", ".")]), key
    for key in also_trained:
        assert not torch.equal(tuned_state[key], base_state[key]), key
    # Fresh adapters change the logits by ~1e-9 (near-identity init); trained ones by far more.
    observations = torch.rand(64, 36) * 5
    with torch.no_grad():
        assert (tuned.model(observations)[0] - base.model(observations)[0]).abs().max() > 1e-5


def test_sb3_tiny_run_loads_through_load_policy(tmp_path, monkeypatch):
    import tempfile

    from parley.agents import load_policy
    from parley.envs.play import play_batch

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    result = train(TrainConfig(framework="sb3", iterations=1, out=str(tmp_path / "sb3"), backbone_config={"hidden_sizes": [32]},
                               **{**TINY, "minibatch_size": 256}))
    zip_path = result.checkpoint / "model.zip"
    assert zip_path.is_file()
    # The run logs into its own folder only (SB3's default makes /tmp/SB3-*); torch may keep caches there.
    assert [p.name for p in scratch.iterdir() if p.name.startswith("SB3")] == []
    from_zip, from_run = load_policy(zip_path), load_policy(result.run_dir)
    obs, masks = game_states(64, seed=9)
    assert np.array_equal(from_zip.act_batch(obs, masks), from_run.act_batch(obs, masks))
    rng = np.random.default_rng(0)
    counts, values = sample_context_arrays(rng, 16)
    first = rng.integers(2, size=16)
    games = play_batch((from_zip, load_policy(str(tmp_path / "sb3"))), counts, values, first)
    # Both seats hold the same greedy network, so each game opens with its greedy act for the opener.
    opening = BatchedNegotiation(16)
    opening.reset_games(np.arange(16), counts, values, first)
    greedy = from_zip.act_batch(opening.observations(opening.current_player), opening.legal_masks())
    assert np.array_equal(games.history_actions[:, 0], greedy)
    assert np.array_equal(games.history_speakers[:, 0], first)
