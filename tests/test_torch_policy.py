"""TorchPolicy: masking, acting, save/load round trip, and load_policy dispatch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parley.agents import load_policy
from parley.agents.nn.torch_policy import TorchPolicy, mask_logits, register_policy_loader
from parley.envs.negotiation import NUM_ACTIONS, BatchedNegotiation, sample_context_arrays


def _random_states(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Observations and masks from games advanced by a few random legal acts."""
    rng = np.random.default_rng(seed)
    game = BatchedNegotiation(n)
    counts, values = sample_context_arrays(rng, n)
    game.reset_games(np.arange(n), counts, values, rng.integers(0, 2, n))
    for _ in range(int(rng.integers(0, 4))):
        masks = game.legal_masks()
        live = masks.any(1)
        actions = np.array([rng.choice(np.flatnonzero(m)) if ok else 0 for m, ok in zip(masks, live)])
        game.apply_actions(actions)
    live = ~game.done
    return game.observations(game.current_player)[live], game.legal_masks()[live]


def test_mask_logits_gives_illegal_actions_no_mass():
    logits = torch.zeros(2, NUM_ACTIONS)
    mask = torch.zeros(2, NUM_ACTIONS, dtype=torch.int8)
    mask[0, 5] = 1
    mask[1, [7, 250]] = 1
    probs = torch.softmax(mask_logits(logits, mask), dim=-1)
    assert probs[0, 5] == pytest.approx(1.0)
    assert probs[1, 7] == pytest.approx(0.5) and probs[1, 250] == pytest.approx(0.5)
    assert torch.isfinite(mask_logits(logits, torch.zeros_like(mask))).all()


@pytest.mark.parametrize("deterministic", [True, False])
def test_actions_are_always_legal(deterministic):
    obs, masks = _random_states(64)
    policy = TorchPolicy("mlp", obs.shape[1], deterministic=deterministic, seed=0, device="cpu")
    actions = policy.act_batch(obs, masks)
    assert actions.shape == (len(obs),)
    assert masks[np.arange(len(obs)), actions].all()
    single = policy.act(obs[0], masks[0])
    assert masks[0, single]
    if deterministic:
        assert single == actions[0]


def test_save_load_round_trip_gives_identical_greedy_actions(tmp_path):
    obs, masks = _random_states(32, seed=3)
    policy = TorchPolicy("mlp", obs.shape[1], seed=1, device="cpu", metadata={"trained_by": "test"})
    with torch.no_grad():  # move away from the near-uniform init so argmax ties are unlikely
        for p in policy.model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    policy.save(tmp_path / "p")
    loaded = load_policy(tmp_path / "p", device="cpu")
    assert isinstance(loaded, TorchPolicy)
    assert loaded.metadata == {"trained_by": "test"}
    np.testing.assert_array_equal(policy.act_batch(obs, masks), loaded.act_batch(obs, masks))


def test_load_policy_follows_a_run_directory(tmp_path):
    obs, _ = _random_states(4)
    for iteration in (3, 5):
        TorchPolicy("mlp", obs.shape[1], device="cpu", metadata={"iteration": iteration}).save(
            tmp_path / "run" / "checkpoints" / f"iter_{iteration}")
    (tmp_path / "run" / "latest_policy").write_text("checkpoints/iter_3")  # the pointer, not the newest folder
    assert load_policy(tmp_path / "run", device="cpu").metadata == {"iteration": 3}


def test_load_policy_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no policy at"):
        load_policy(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    with pytest.raises(ValueError, match="not a policy parley can load"):
        load_policy(tmp_path / "junk")


def test_registered_loader_takes_its_format(tmp_path):
    marker = tmp_path / "custom.policy"
    marker.write_text("x")
    sentinel = object()
    register_policy_loader("custom-test", lambda p: p.suffix == ".policy", lambda p, **kw: sentinel)
    assert load_policy(marker) is sentinel


def test_act_batch_rejects_a_finished_game():
    obs, masks = _random_states(2)
    policy = TorchPolicy("mlp", obs.shape[1], device="cpu")
    with pytest.raises(ValueError, match="at least one legal action"):
        policy.act_batch(obs, np.zeros_like(masks))


def test_a_reseeded_sampling_policy_repeats_its_draws_and_evaluations():
    from parley.agents.evaluation import PartnerGroup, evaluate_policy
    from parley.agents.partners.scripted import make_partner

    obs, masks = _random_states(256, seed=3)
    policy = TorchPolicy("mlp", obs.shape[1], deterministic=False, seed=0, device="cpu")
    policy.seed(7)
    first = policy.act_batch(obs, masks)
    second = policy.act_batch(obs, masks)
    policy.seed(7)
    assert np.array_equal(policy.act_batch(obs, masks), first)
    assert not np.array_equal(first, second)  # the draws are random, not greedy
    # A sampling partner inside a group (the corpus stand-in's case) meets the evaluated agent in the same
    # games every time the same evaluation runs.
    partner = TorchPolicy("mlp", obs.shape[1], deterministic=False, seed=1, device="cpu")
    runs = [evaluate_policy(make_partner("boulware"), [PartnerGroup("sampler", (partner,))], episodes=300, seed=5)
            for _ in range(2)]
    assert runs[0] == runs[1]
