"""Backbone registry and the individual backbones, on real negotiation observations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from parley.agents.nn.backbones import (
    list_backbones,
    make_backbone,
    observation_spec,
    sample_observations,
)
from parley.envs.negotiation import NUM_ACTIONS, ObservationLayout

MAX_TURNS = 10
OBS_SIZE = ObservationLayout(MAX_TURNS).size


def negotiation_space(max_turns: int = MAX_TURNS) -> spaces.Dict:
    size = ObservationLayout(max_turns).size
    return spaces.Dict({
        "observation": spaces.Box(0.0, float(NUM_ACTIONS), shape=(size,), dtype=np.float32),
        "action_mask": spaces.Box(0, 1, shape=(NUM_ACTIONS,), dtype=np.int8),
    })


@pytest.fixture(scope="module")
def observations() -> torch.Tensor:
    obs, _ = sample_observations(64, max_turns=MAX_TURNS, seed=3)
    return torch.from_numpy(obs)


def test_sample_observations_cover_short_and_long_histories(observations):
    lay = ObservationLayout(MAX_TURNS)
    played = (observations[:, lay.history_acts] > 0).sum(1)
    assert played.min() == 0 and played.max() >= 5
    assert observations[:, lay.history_acts].max() <= NUM_ACTIONS


def test_registry_lists_the_contract_names():
    assert {"mlp", "transformer", "compacter", "invertible_attention"} <= set(list_backbones())


def test_unknown_backbone_and_option_are_clear_errors():
    with pytest.raises(ValueError, match="unknown backbone"):
        make_backbone("resnet9000", negotiation_space(), device="cpu")
    with pytest.raises(ValueError, match="hidden_sizes"):
        make_backbone("mlp", negotiation_space(), device="cpu", hiden_sizes=(3,))


def test_spaces_are_read_as_negotiation_or_flat():
    assert observation_spec(negotiation_space()).layout == ObservationLayout(MAX_TURNS)
    assert observation_spec(negotiation_space()["observation"]).layout == ObservationLayout(MAX_TURNS)
    assert observation_spec(spaces.Box(-1, 1, shape=(36,))).layout is None  # bounds exclude act tokens
    assert observation_spec(spaces.Box(-np.inf, np.inf, shape=(4,))).layout is None
    with pytest.raises(ValueError, match="not a negotiation observation size"):
        observation_spec(spaces.Box(0, 1, shape=(5,)), layout="negotiation")
    with pytest.raises(ValueError, match="1-D"):
        observation_spec(spaces.Box(0, 1, shape=(2, 3)))


@pytest.mark.parametrize("space_kind", ["dict", "box"])
def test_mlp_features_on_negotiation_observations(observations, space_kind):
    space = negotiation_space() if space_kind == "dict" else negotiation_space()["observation"]
    torch.manual_seed(0)
    net = make_backbone("mlp", space, device="cpu", hidden_sizes=(32, 16))
    out = net(observations)
    assert net.out_dim == 16 and out.shape == (64, 16) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert net.encoder.act_embedding.weight.grad.abs().sum() > 0  # the act history reaches the features


def test_mlp_reads_the_act_history(observations):
    torch.manual_seed(0)
    net = make_backbone("mlp", negotiation_space(), device="cpu", hidden_sizes=(32,))
    lay = ObservationLayout(MAX_TURNS)
    changed = observations.clone()
    row = int((observations[:, lay.history_acts] > 0).sum(1).argmax())
    changed[row, lay.header_size] = (changed[row, lay.header_size] % NUM_ACTIONS) + 1
    diff = (net(changed) - net(observations)).abs().sum(1)
    assert diff[row] > 1e-4 and torch.all(diff[torch.arange(64) != row] == 0)


def test_mlp_on_a_plain_box_of_another_env():
    space = spaces.Box(low=np.array([-4.8, -np.inf, -0.42, -np.inf], dtype=np.float32),
                       high=np.array([4.8, np.inf, 0.42, np.inf], dtype=np.float32))
    net = make_backbone("mlp", space, device="cpu", hidden_sizes=(8,))
    assert net.spec.layout is None
    x = torch.tensor([[4.8, 3.0, -0.42, 0.5]])
    scaled = net.encoder(x)
    assert torch.allclose(scaled, torch.tensor([[1.0, 3.0, -1.0, 0.5]]))
    assert net(x).shape == (1, 8)
    with pytest.raises(ValueError, match=r"shape \(B, 4\)"):
        net(torch.zeros(2, 5))


def test_mlp_fits_a_function_of_the_context(observations):
    # The observer's best possible score (its value of the whole pool) is a function of the header.
    torch.manual_seed(0)
    net = make_backbone("mlp", negotiation_space(), device="cpu", hidden_sizes=(64, 64))
    head = torch.nn.Linear(net.out_dim, 1)
    lay = ObservationLayout(MAX_TURNS)
    target = (observations[:, lay.counts] * observations[:, lay.values]).sum(1, keepdim=True) / 10
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=3e-3)
    first = None
    for _ in range(150):
        loss = torch.nn.functional.mse_loss(head(net(observations)), target)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


def test_bf16_autocast_returns_float32_close_to_fp32(observations):
    torch.manual_seed(0)
    net = make_backbone("mlp", negotiation_space(), device="cpu", hidden_sizes=(32,))
    ref = net(observations)
    net.bf16 = True
    out = net(observations)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.05


def test_transformer_ignores_padding_and_reads_history(observations):
    torch.manual_seed(0)
    net = make_backbone("transformer", negotiation_space(), device="cpu", d_model=32, n_heads=4, n_layers=2)
    net.eval()
    out = net(observations)
    assert net.out_dim == 32 and out.shape == (64, 32) and torch.isfinite(out).all()
    lay = ObservationLayout(MAX_TURNS)
    played = (observations[:, lay.history_acts] > 0).sum(1)
    # Speaker ids at padded slots are masked out with the act: changing them changes nothing.
    row = int(played.argmin())
    assert played[row] < MAX_TURNS
    pad_slot = lay.history_speakers.start + int(played[row])
    junk = observations.clone()
    junk[row, pad_slot] = 2.0
    assert torch.allclose(net(junk), out, atol=1e-6)
    # A played act does matter.
    row = int(played.argmax())
    changed = observations.clone()
    changed[row, lay.header_size] = (changed[row, lay.header_size] % NUM_ACTIONS) + 1
    assert (net(changed)[row] - out[row]).abs().max() > 1e-4


def test_transformer_rejects_flat_observations():
    with pytest.raises(ValueError, match="reads negotiation observations"):
        make_backbone("transformer", spaces.Box(-1, 1, shape=(4,)), device="cpu")


def test_transformer_is_permutation_aware_through_positions(observations):
    torch.manual_seed(1)
    net = make_backbone("transformer", negotiation_space(), device="cpu", d_model=16, n_heads=2, n_layers=1)
    lay = ObservationLayout(MAX_TURNS)
    row = int((observations[:, lay.history_acts] > 0).sum(1).argmax())
    obs = observations[row : row + 1].clone()
    swapped = obs.clone()
    a, s = lay.history_acts.start, lay.history_speakers.start
    swapped[0, [a, a + 1]] = obs[0, [a + 1, a]]
    swapped[0, [s, s + 1]] = obs[0, [s + 1, s]]
    assert not torch.equal(swapped, obs)
    assert (net(swapped) - net(obs)).abs().max() > 1e-5


def test_every_backbone_reads_the_registered_env_space():
    import gymnasium

    import parley  # noqa: F401  (registers the envs)

    env = gymnasium.make("parley/Negotiation-v0", partner="random")
    obs, _ = env.reset(seed=0)
    x = torch.as_tensor(obs["observation"])[None]
    for name in ("mlp", "transformer", "compacter", "invertible_attention"):
        for space in (env.observation_space, env.observation_space["observation"]):
            net = make_backbone(name, space, device="cpu")
            assert net.spec.layout == ObservationLayout(MAX_TURNS)
            assert net(x).shape == (1, net.out_dim)
