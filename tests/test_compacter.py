"""Compacter: PHM algebra, parameter counts, freezing, adapter save/load/merge."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from parley.agents.nn.backbones import make_backbone, sample_observations
from parley.agents.nn.compacter import (
    AdaptedModule,
    CompacterConfig,
    PHMLinear,
    PHMRule,
    add_adapters,
    bottleneck_width,
    count_parameters,
    load_adapters,
    merge_adapters,
    remove_adapters,
    save_adapters,
    trainable_fraction,
)
from parley.envs.negotiation import NUM_ACTIONS, ObservationLayout

SPACE = spaces.Box(0.0, float(NUM_ACTIONS), shape=(ObservationLayout(10).size,), dtype=np.float32)
SMALL = dict(d_model=32, n_heads=4, n_layers=2, ff_mult=2)


@pytest.fixture(scope="module")
def observations() -> torch.Tensor:
    return torch.from_numpy(sample_observations(32, seed=5)[0])



def fit_random_target(module, observations, *, lr: float, steps: int) -> tuple[float, float]:
    """Train ``module``'s trainable parameters towards a random target; the first and last MSE losses."""
    target = torch.randn(len(observations), SMALL["d_model"])
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(module(observations), target)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses[0], losses[-1]

def test_phm_layer_equals_the_dense_kronecker_matrix():
    torch.manual_seed(0)
    n, d_in, d_out, rank = 4, 12, 8, 2
    layer = PHMLinear(d_in, d_out, n, rank).double()
    with torch.no_grad():
        layer.rule.weight.normal_()  # make the slow weights non-negligible for the comparison
        layer.bias.normal_()
    a = layer.rule.weight.detach().numpy()
    s, t = layer.s.detach().numpy(), layer.t.detach().numpy()
    dense = sum(np.kron(a[i], s[i] @ t[i].T) for i in range(n))
    assert dense.shape == (d_in, d_out)
    np.testing.assert_allclose(layer.weight().detach().numpy(), dense, rtol=1e-12, atol=1e-12)
    x = torch.randn(5, d_in, dtype=torch.float64)
    np.testing.assert_allclose(layer(x).detach().numpy(), x.numpy() @ dense + layer.bias.detach().numpy(),
                               rtol=1e-10, atol=1e-12)
    assert np.linalg.matrix_rank(s[0] @ t[0].T) == rank


def test_phm_init_follows_the_paper():
    torch.manual_seed(0)
    rule = PHMRule(4)
    assert rule.weight.abs().max() < 1e-3 and rule.weight.std() > 1e-5
    layer = PHMLinear(64, 32, 4, 1, rule)
    assert torch.count_nonzero(layer.bias) == 0
    bound = np.sqrt(2) * np.sqrt(6 / (16 + 1))  # Glorot-uniform, gain sqrt 2, fans (in/n, rank)
    assert layer.s.abs().max() <= bound + 1e-6 and layer.s.abs().max() > 0.5 * bound
    with pytest.raises(ValueError, match="divisible by n=4"):
        PHMLinear(10, 8, 4)


def _adapter_params(d: int, m: int, rank: int, out: int | None = None) -> int:
    out = d if out is None else out
    down = rank * (d + m) + m
    up = rank * (m + out) + out
    return down + up


@pytest.mark.parametrize("plus_plus", [False, True])
def test_trainable_fraction_matches_an_analytic_count(plus_plus):
    torch.manual_seed(0)
    model = make_backbone("transformer", SPACE, device="cpu", **SMALL)
    base_total = sum(p.numel() for p in model.parameters())
    cfg = CompacterConfig(n=4, rank=1, reduction=4, plus_plus=plus_plus)
    add_adapters(model, cfg)
    d, layers = SMALL["d_model"], SMALL["n_layers"]
    m = bottleneck_width(d, cfg.reduction, cfg.n)
    assert m == 8
    adapters = layers * (1 if plus_plus else 2)
    adapter_params = adapters * _adapter_params(d, m, cfg.rank) + cfg.n**3  # one shared rule
    layer_norms = (2 * layers + 1) * 2 * d
    trainable, total = count_parameters(model)
    assert total == base_total + adapter_params
    assert trainable == adapter_params + layer_norms
    assert trainable_fraction(model) == pytest.approx((adapter_params + layer_norms) / (base_total + adapter_params))
    assert (adapters == 2 * layers) == (not plus_plus)


def test_only_adapters_and_layer_norms_get_gradients(observations):
    torch.manual_seed(0)
    model = make_backbone("compacter", SPACE, device="cpu", reduction=4, **SMALL)
    model(observations).pow(2).mean().backward()
    for name, p in model.named_parameters():
        is_adapter = ".adapter." in name
        is_norm = "ln" in name.split(".")[-2] or name.startswith("norm.")
        if is_adapter or is_norm:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    frozen = make_backbone("compacter", SPACE, device="cpu", reduction=4, train_layer_norms=False, **SMALL)
    assert all(".adapter." in n for n, p in frozen.named_parameters() if p.requires_grad)


def test_slow_weights_are_shared_by_all_adapters():
    model = make_backbone("compacter", SPACE, device="cpu", reduction=4, **SMALL)
    rules = {id(m.rule.weight) for m in model.modules() if isinstance(m, PHMLinear)}
    assert len(rules) == 1
    assert sum(isinstance(m, PHMLinear) for m in model.modules()) == 2 * 2 * SMALL["n_layers"]


def test_adapters_start_as_identity_and_then_learn(observations):
    torch.manual_seed(0)
    base = make_backbone("transformer", SPACE, device="cpu", **SMALL)
    before = base(observations).detach()
    add_adapters(base, CompacterConfig(reduction=4))
    assert torch.allclose(base(observations), before, atol=1e-3)
    first, last = fit_random_target(base, observations, lr=3e-3, steps=60)
    assert last < 0.9 * first


def test_save_and_load_adapters_round_trip(tmp_path, observations):
    torch.manual_seed(0)
    model = make_backbone("compacter", SPACE, device="cpu", reduction=4, **SMALL)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    path = save_adapters(model, tmp_path / "adapters.pt")
    saved = torch.load(path, weights_only=True)["state"]
    assert all(".adapter." in k or "ln" in k or k.startswith("norm.") for k in saved)
    assert sum(v.numel() for v in saved.values()) == count_parameters(model)[0]

    # Same frozen base weights, fresh adapters: outputs differ until the adapters are loaded.
    fresh = make_backbone("transformer", SPACE, device="cpu", **SMALL)
    base_state = {k.replace(".base.", "."): v for k, v in model.state_dict().items() if ".adapter." not in k}
    fresh.load_state_dict(base_state, strict=False)
    load_adapters(fresh, path)
    assert torch.allclose(fresh(observations), model(observations), atol=1e-6)

    other = make_backbone("transformer", SPACE, device="cpu", d_model=16, n_heads=2, n_layers=1)
    with pytest.raises(ValueError):
        load_adapters(other, path)


def test_merge_keeps_outputs_and_remove_restores_the_base(observations):
    torch.manual_seed(0)
    base = make_backbone("transformer", SPACE, device="cpu", **SMALL)
    before = base(observations).detach()
    add_adapters(base, CompacterConfig(reduction=4))
    with torch.no_grad():
        next(m for m in base.modules() if isinstance(m, PHMRule)).weight.normal_()
    adapted = base(observations).detach()
    assert not torch.allclose(adapted, before, atol=1e-3)
    merge_adapters(base)
    assert not any(isinstance(m, PHMLinear) for m in base.modules())
    assert torch.allclose(base(observations), adapted, atol=1e-5)
    remove_adapters(base)
    assert torch.allclose(base(observations), before, atol=1e-6)


def test_bad_targets_are_clear_errors():
    model = make_backbone("transformer", SPACE, device="cpu", **SMALL)
    with pytest.raises(ValueError, match="no module"):
        add_adapters(model, CompacterConfig(target_modules=["nonexistent"]))
    add_adapters(model, CompacterConfig(target_modules=["ff"], reduction=4))
    with pytest.raises(ValueError, match="already has"):
        add_adapters(model, CompacterConfig())
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
    with pytest.raises(ValueError, match="target_modules"):
        add_adapters(mlp)
    add_adapters(mlp, CompacterConfig(target_modules=["0"], reduction=2))
    assert mlp(torch.randn(3, 8)).shape == (3, 8)


def test_an_adapter_can_sit_on_the_final_layer_norm(observations):
    """target_modules may name a LayerNorm (the backbone's output norm): its width sizes the adapter."""
    torch.manual_seed(0)
    base = make_backbone("transformer", SPACE, device="cpu", **SMALL)
    before = base(observations).detach()
    add_adapters(base, CompacterConfig(target_modules=["norm"], reduction=4, train_layer_norms=False))
    assert [n for n, m in base.named_modules() if isinstance(m, AdaptedModule)] == ["norm"]
    assert base.norm.adapter.down.in_features == base.norm.adapter.up.out_features == SMALL["d_model"]
    assert torch.allclose(base(observations), before, atol=1e-3)
    trainable = [n for n, p in base.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("norm.adapter.") for n in trainable)
    first, last = fit_random_target(base, observations, lr=1e-2, steps=40)
    assert last < 0.9 * first


@pytest.mark.parametrize("targets,placement", [(["policy_head"], "sequential"), (["ff", "policy_head"], "sequential"),
                                                (["policy_head"], "parallel")])
def test_an_adapter_on_the_policy_head_shares_the_rule_and_trains_alone(targets, placement, observations):
    """``target_modules: [policy_head]`` adapts the 252 action logits of the actor-critic network; a
    parallel adapter maps the head's input features to a change of the logits."""
    from parley.agents.nn.compacter import freeze_all_but_adapters
    from parley.agents.nn.torch_policy import ActorCritic

    torch.manual_seed(0)
    plain = ActorCritic(make_backbone("transformer", SPACE, device="cpu", **SMALL))
    adapted = ActorCritic(make_backbone("compacter", SPACE, device="cpu", reduction=4, train_layer_norms=False,
                                        target_modules=targets, placement=placement, **SMALL))
    state = {k.replace(".base.", "."): v for k, v in adapted.state_dict().items() if ".adapter." not in k}
    plain.load_state_dict(state)
    assert isinstance(adapted.policy_head, AdaptedModule) and not isinstance(adapted.value_head, AdaptedModule)
    assert len({id(m.rule.weight) for m in adapted.modules() if isinstance(m, PHMLinear)}) == 1
    logits, value = adapted(observations)
    assert torch.allclose(logits, plain(observations)[0], atol=1e-3)  # starts (almost) as the identity

    freeze_all_but_adapters(adapted)
    if placement == "parallel":
        head_adapter = _adapter_params(SMALL["d_model"], bottleneck_width(SMALL["d_model"], 4, 4), 1, out=NUM_ACTIONS)
    else:
        head_adapter = _adapter_params(NUM_ACTIONS, bottleneck_width(NUM_ACTIONS, 4, 4), 1)
    backbone_adapters = SMALL["n_layers"] * _adapter_params(SMALL["d_model"], 8, 1) if "ff" in targets else 0
    assert count_parameters(adapted)[0] == head_adapter + backbone_adapters + 4**3
    opt = torch.optim.Adam([p for p in adapted.parameters() if p.requires_grad], lr=1e-2)
    favoured = torch.zeros(len(observations), dtype=torch.long)  # push every observation towards action 0
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(adapted(observations)[0], favoured)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert adapted(observations)[0].argmax(-1).eq(0).float().mean() > 0.9
    untouched = {k: v for k, v in adapted.state_dict().items() if ".adapter." not in k}
    assert all(torch.equal(v, state[k.replace(".base.", ".")]) for k, v in untouched.items())


def test_a_parallel_adapter_adds_its_output_to_the_module_from_the_module_input():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.ReLU())
    x = torch.randn(5, 8)
    before = net(x).detach()
    add_adapters(net, CompacterConfig(target_modules=["0"], reduction=2, placement="parallel"))
    wrapped = net[0]
    assert isinstance(wrapped, AdaptedModule) and wrapped.parallel
    assert (wrapped.adapter.down.in_features, wrapped.adapter.up.out_features) == (8, 12)
    assert count_parameters(net)[0] == _adapter_params(8, 4, 1, out=12) + 4**3
    assert torch.allclose(net(x), before, atol=1e-3)  # slow weights start near zero: (almost) no change
    with torch.no_grad():
        next(m for m in net.modules() if isinstance(m, PHMRule)).weight.normal_()
    adapter = wrapped.adapter
    expected = torch.relu(wrapped.base(x) + adapter.up(adapter.act(adapter.down(x))))
    assert not torch.allclose(expected, before, atol=1e-2)
    assert torch.allclose(net(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match="unknown adapter placement 'beside'.*sequential, parallel"):
        CompacterConfig(placement="beside")


def test_parallel_adapters_save_load_and_merge(tmp_path, observations):
    torch.manual_seed(0)
    model = make_backbone("compacter", SPACE, device="cpu", reduction=4, plus_plus=True, placement="parallel", **SMALL)
    with torch.no_grad():
        next(m for m in model.modules() if isinstance(m, PHMRule)).weight.normal_()
    adapted = model(observations).detach()
    path = save_adapters(model, tmp_path / "parallel.pt")
    fresh = make_backbone("transformer", SPACE, device="cpu", **SMALL)
    fresh.load_state_dict({k.replace(".base.", "."): v for k, v in model.state_dict().items()
                           if ".adapter." not in k}, strict=False)
    load_adapters(fresh, path)
    assert fresh.compacter_config.placement == "parallel"
    assert torch.allclose(fresh(observations), adapted, atol=1e-6)
    merge_adapters(fresh)
    assert torch.allclose(fresh(observations), adapted, atol=1e-5)
    sequential = make_backbone("compacter", SPACE, device="cpu", reduction=4, plus_plus=True, **SMALL)
    with pytest.raises(ValueError, match="differ from the saved ones"):
        load_adapters(sequential, path)


def test_head_adapters_refuse_what_they_cannot_adapt():
    from parley.agents.nn.torch_policy import ActorCritic

    for placement in ("sequential", "parallel"):
        with pytest.raises(ValueError, match="'value_head': its width 1 is not divisible by n=4"):
            ActorCritic(make_backbone("compacter", SPACE, device="cpu", target_modules=["value_head"],
                                      placement=placement, **SMALL))


def test_also_train_keeps_named_head_parameters_trainable_and_counts_them(observations):
    """``also_train`` trains named parameters in full beside the adapters (peft's ``modules_to_save``)."""
    from parley.agents.nn.compacter import freeze_all_but_adapters, trained_beside_adapters
    from parley.agents.nn.torch_policy import ActorCritic

    def network(also_train):
        return ActorCritic(make_backbone("compacter", SPACE, device="cpu", reduction=4, train_layer_norms=False,
                                         target_modules=["policy_head"], also_train=also_train, **SMALL))

    head_only = network(None)
    with_bias = network(["value_head.bias"])
    with_critic = network(["value_head"])
    counts = [freeze_all_but_adapters(net) for net in (head_only, with_bias, with_critic)]
    assert counts[1] == counts[0] + 1
    assert counts[2] == counts[0] + SMALL["d_model"] + 1
    assert trained_beside_adapters(with_critic) == ["value_head.weight", "value_head.bias"]
    # Naming the adapted head trains its own weights; its adapter trains anyway and is not listed again.
    with_policy_head = network(["policy_head"])
    assert trained_beside_adapters(with_policy_head) == ["policy_head.base.weight", "policy_head.base.bias"]
    head_size = with_policy_head.policy_head.base.weight.numel() + with_policy_head.policy_head.base.bias.numel()
    assert freeze_all_but_adapters(with_policy_head) == counts[0] + head_size
    assert with_bias.value_head.bias.requires_grad and not with_bias.value_head.weight.requires_grad
    assert count_parameters(with_bias)[0] == counts[1]
    # The critic's bias learns a new level of returns while the rest of the critic stays as it was.
    weight = with_bias.value_head.weight.detach().clone()
    opt = torch.optim.Adam([p for p in with_bias.parameters() if p.requires_grad], lr=0.1)
    for _ in range(50):
        loss = (with_bias(observations)[1] - 3.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(float(with_bias(observations)[1].mean()) - 3.0) < 0.5
    assert torch.equal(with_bias.value_head.weight, weight)
    with pytest.raises(ValueError, match="'value_hed' names no parameter.*value_head.bias"):
        freeze_all_but_adapters(network(["value_hed"]))
