"""``parley train --framework native``: parley's own PPO against a partner pool, its run directory,
checkpoints, resume, adapters, and the pool dispatch inside :func:`parley.agents.training.ppo.train_ppo`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parley.agents import load_policy
from parley.agents.nn.compacter import adapter_modules
from parley.agents.nn.torch_policy import TorchPolicy
from parley.agents.partners.scripted import make_partner
from parley.agents.training.ppo import PPOConfig, train_ppo
from parley.agents.training.run import (
    TrainConfig,
    TrainConfigError,
    read_progress,
    resolve_train_config,
    train,
)
from parley.envs.policy import BatchPolicy

SMALL = dict(framework="native", backbone_config={"hidden_sizes": [32]}, train_batch_size=2048, minibatch_size=512,
             num_epochs=4, eval_episodes=10, live=False, partners=["boulware", "conceder", "linear"])


class Recorder(BatchPolicy):
    """A scripted partner that counts the rows it answers and checks each is legal."""

    def __init__(self, name: str) -> None:
        super().__init__(0)
        self.inner = make_partner(name, seed=0)
        self.name = name
        self.rows = 0

    def act_batch(self, observations, action_masks):
        self.rows += len(observations)
        actions = self.inner.act_batch(observations, action_masks)
        assert action_masks[np.arange(len(actions)), actions].all()
        return actions


class Cheater(BatchPolicy):
    name = "cheater"

    def act_batch(self, observations, action_masks):
        return np.argmin(action_masks, axis=1)  # always an illegal act while any act is illegal


def test_train_ppo_draws_every_partner_of_the_pool_and_counts_learner_steps():
    pool = [Recorder("boulware"), Recorder("conceder"), Recorder("tit_for_tat")]
    learner = TorchPolicy("mlp", 36, {"hidden_sizes": [16]}, device="cpu", deterministic=False, seed=0)
    result = train_ppo(learner, pool, PPOConfig(total_games=600, games_per_iteration=300, update_epochs=1))
    assert all(p.rows > 100 for p in pool)
    last = result.history[-1]
    # Both sides act; the learner sends about half of the acts.
    assert 0 < last["learner_steps"] < last["env_steps"]
    assert last["learner_steps"] == sum(row["learner_steps_this_iteration"] for row in result.history)
    assert learner.metadata["ppo"]["partner"] == "boulware,conceder,tit_for_tat"


def test_an_illegal_partner_act_is_reported_by_name():
    learner = TorchPolicy("mlp", 36, {"hidden_sizes": [8]}, device="cpu", deterministic=False, seed=0)
    with pytest.raises(ValueError, match="cheater"):
        train_ppo(learner, [make_partner("boulware"), Cheater()], PPOConfig(total_games=64, games_per_iteration=64))


def test_native_run_learns_checkpoints_resumes_and_loads_everywhere(tmp_path):
    from parley.agents.partners.tournament import run_tournament

    run = tmp_path / "run"
    result = train(TrainConfig(iterations=8, checkpoint_every=4, out=str(run), **SMALL))
    progress = read_progress(run)
    assert [int(r["iteration"]) for r in progress] == list(range(1, 9))
    scores = [float(r["score"]) for r in progress]
    assert np.mean(scores[-2:]) > scores[0] + 0.3  # it learns against the pool
    assert (run / "checkpoints" / "iter_000004" / "optimizer.pt").is_file()
    assert result.eval_rows[-1].partner == "all" and (run / "eval.csv").is_file()
    policy = load_policy(run)
    assert policy.metadata["framework"] == "native" and policy.metadata["iteration"] == 8

    before = torch.load(result.checkpoint / "optimizer.pt", weights_only=False)
    steps_before = max(float(s["step"]) for s in before["state"].values())
    resumed = train(resolve_train_config({"resume": True, "out": str(run), "iterations": 10}), evaluate=False)
    assert resumed.iterations == 10 and resumed.env_steps > result.env_steps
    assert [int(r["iteration"]) for r in read_progress(run)] == list(range(1, 11))
    after = torch.load(resumed.checkpoint / "optimizer.pt", weights_only=False)
    assert max(float(s["step"]) for s in after["state"].values()) > steps_before  # Adam's state carried on

    tour = run_tournament([str(run), "boulware"], contexts=10, seed=0)
    assert tour.pair("native-partners-mlp", "boulware").games == 10


@pytest.mark.parametrize("adapter_options", [{"reduction": 4}, {"reduction": 4, "target_modules": ["policy_head"]},
                                             {"reduction": 4, "target_modules": ["policy_head"],
                                              "also_train": ["value_head.bias"]},
                                             {"reduction": 4, "target_modules": ["policy_head"], "placement": "parallel"}])
def test_native_adapter_fine_tuning_changes_only_the_adapters(adapter_options, tmp_path):
    base = TorchPolicy("transformer", 36, {"d_model": 16, "n_heads": 2, "n_layers": 1}, device="cpu", seed=0)
    base.save(tmp_path / "base")
    result = train(TrainConfig(iterations=2, out=str(tmp_path / "ft"), init_from=str(tmp_path / "base"),
                               adapters="compacter", **{**SMALL, "backbone_config": adapter_options}),
                   evaluate=False)
    tuned = load_policy(result.run_dir)
    assert tuned.backbone_name == "compacter"
    adapted = {name for name, _ in adapter_modules(tuned.model)}
    assert adapted == ({"policy_head"} if "target_modules" in adapter_options else {"backbone.blocks.0.attn",
                                                                                     "backbone.blocks.0.ff"})
    base_state = base.model.state_dict()
    also_trained = set(adapter_options.get("also_train", []))
    for key, value in tuned.model.state_dict().items():
        if ".adapter." not in key and key not in also_trained:
            assert torch.equal(value, base_state[key.replace(".base.", ".")]), key
    for key in also_trained:
        assert not torch.equal(tuned.model.state_dict()[key], base_state[key]), key
    # Fresh adapters change the logits by ~1e-9 (near-identity init); trained ones by far more.
    observations = torch.rand(64, 36) * 5
    with torch.no_grad():
        assert (tuned.model(observations)[0] - base.model(observations)[0]).abs().max() > 1e-5


@pytest.mark.parametrize("changes, message", [
    ({"self_play": True}, "partner pool only"),
    ({"independent": True}, "partner pool only"),
    ({"num_env_runners": 2}, "need --framework rllib"),
    ({"address": "ray://x:10001"}, "need --framework rllib"),
])
def test_native_rejects_ray_only_settings(changes, message, tmp_path):
    with pytest.raises(TrainConfigError, match=message):
        TrainConfig(framework="native", out=str(tmp_path / "run"), **changes).validate()


def test_sb3_refuses_adapters_on_the_heads(tmp_path):
    with pytest.raises(TrainConfigError, match="SB3's heads are its own"):
        TrainConfig(framework="sb3", out=str(tmp_path / "run"), init_from=str(tmp_path), adapters="compacter",
                    backbone_config={"target_modules": ["policy_head"]}).validate()


def test_sb3_refuses_also_train(tmp_path):
    with pytest.raises(TrainConfigError, match="also_train names parameters of parley's own actor-critic"):
        TrainConfig(framework="sb3", out=str(tmp_path / "run"), init_from=str(tmp_path), adapters="compacter",
                    backbone_config={"also_train": ["value_head.bias"]}).validate()
