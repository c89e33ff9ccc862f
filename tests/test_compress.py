"""Compression: int8 quantization, magnitude pruning with exact sparsity, masked distillation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from parley.agents.nn.backbones import make_backbone, sample_observations
from parley.agents.nn.compacter import merge_adapters
from parley.agents.nn.compress import (
    collect_observations,
    distill,
    make_pruning_permanent,
    masked_kl,
    model_size_bytes,
    prune_global_unstructured,
    prune_structured,
    quantize_int8,
    sparsity_report,
)
from parley.envs.negotiation import NUM_ACTIONS


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    obs, masks = sample_observations(128, seed=11)
    return torch.from_numpy(obs), torch.from_numpy(masks)


def policy_net(name: str = "mlp", **config) -> nn.Module:
    backbone = make_backbone(name, 36, device="cpu", **config)
    return nn.Sequential(backbone, nn.Linear(backbone.out_dim, NUM_ACTIONS)).eval()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_int8_model_is_smaller_and_close_to_fp32(data, name):
    torch.manual_seed(0)
    model = policy_net(name, **({"hidden_sizes": (256, 256)} if name == "mlp" else {}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # deprecation noise is handled inside quantize_int8
        q = quantize_int8(model)
    obs = data[0]
    with torch.no_grad():
        ref, out = model(obs), q(obs)
    assert relative_error(out, ref) < 0.05
    assert not any(type(m) in (nn.Linear, nn.Embedding) for m in q.modules())
    assert any(type(m) is nn.Linear for m in model.modules())  # the original is left alone
    assert model_size_bytes(q) < model_size_bytes(model) / 3


def test_quantize_merged_compacter(data):
    torch.manual_seed(0)
    model = policy_net("compacter", reduction=4)
    merge_adapters(model[0])
    q = quantize_int8(model)
    with torch.no_grad():
        assert relative_error(q(data[0]), model(data[0])) < 0.05


def test_quantize_rejects_bad_input():
    with pytest.raises(ValueError, match="backend"):
        quantize_int8(nn.Linear(2, 2), backend="tensorrt")
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantize_int8(nn.Conv1d(1, 1, 1))


def test_global_unstructured_pruning_sparsity_is_exact(data):
    torch.manual_seed(0)
    model = policy_net(hidden_sizes=(64, 32))
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    prune_global_unstructured(model, 0.6)
    report = sparsity_report(model)
    assert report.total == total
    assert report.zeros == round(0.6 * total)
    assert report.sparsity == pytest.approx(round(0.6 * total) / total, abs=0)
    # The kept weights are the largest in magnitude across all layers together.
    kept = torch.cat([m.weight_orig[m.weight_mask.bool()].abs() for m in model.modules() if isinstance(m, nn.Linear)])
    dropped = torch.cat([m.weight_orig[~m.weight_mask.bool()].abs() for m in model.modules() if isinstance(m, nn.Linear)])
    assert kept.min() >= dropped.max()
    per_layer = [z / t for z, t in report.per_tensor.values()]
    assert max(per_layer) - min(per_layer) > 0.01  # global: layers end up with different sparsity
    with torch.no_grad():
        out = model(data[0])
    make_pruning_permanent(model)
    assert not any(n.endswith("_orig") for n, _ in model.named_parameters())
    assert sparsity_report(model).zeros == report.zeros
    with torch.no_grad():
        assert torch.equal(model(data[0]), out)


def test_light_pruning_stays_close_to_the_original(data):
    torch.manual_seed(0)
    model = policy_net(hidden_sizes=(256, 256))
    with torch.no_grad():
        ref = model(data[0])
    prune_global_unstructured(model, 0.2)
    with torch.no_grad():
        assert relative_error(model(data[0]), ref) < 0.2


def test_structured_pruning_removes_whole_rows():
    torch.manual_seed(0)
    model = policy_net(hidden_sizes=(40, 20))
    prune_structured(model, 0.25, exclude=["1"])  # keep the policy head dense
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and name != "1":
            zero_rows = int((m.weight == 0).all(1).sum())
            assert zero_rows == round(0.25 * m.weight.shape[0])
            assert int((m.weight == 0).sum()) == zero_rows * m.weight.shape[1]
    report = sparsity_report(model)
    assert report.per_tensor["1.weight"][0] == 0
    expected = sum(round(0.25 * r) * c for r, c in [(40, model[0].encoder.out_dim), (20, 40)])
    assert report.zeros == expected
    with pytest.raises(ValueError, match="fraction"):
        prune_structured(model, 1.5)


def test_masked_kl_ignores_illegal_actions():
    torch.manual_seed(0)
    mask = torch.zeros(3, NUM_ACTIONS, dtype=torch.int8)
    mask[:, :5] = 1
    teacher = torch.randn(3, NUM_ACTIONS)
    student = teacher.clone()
    student[:, 5:] = torch.randn(3, NUM_ACTIONS - 5) * 100  # differences on illegal actions only
    assert float(masked_kl(student, teacher, mask)) == pytest.approx(0.0, abs=1e-6)
    p = torch.softmax(teacher[:, :5], -1)
    q = torch.softmax(torch.zeros(3, 5), -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean()
    assert float(masked_kl(torch.zeros(3, NUM_ACTIONS), teacher, mask)) == pytest.approx(float(expected), rel=1e-5)
    mask[0] = 0  # a finished game: no legal action, no contribution
    assert torch.isfinite(masked_kl(torch.zeros(3, NUM_ACTIONS), teacher, mask))


class _GreedyTeacherPolicy:
    """A Policy made from a network, for collecting observations."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def act_batch(self, observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = self.net(torch.from_numpy(observations))
        return logits.masked_fill(torch.from_numpy(action_masks) == 0, -1e9).argmax(-1).numpy()


def test_distillation_moves_the_student_to_the_teacher():
    torch.manual_seed(0)
    teacher = policy_net("transformer", d_model=32, n_heads=4, n_layers=1)
    with torch.no_grad():
        teacher[1].weight.mul_(20)  # a confident teacher
    obs, masks = collect_observations(_GreedyTeacherPolicy(teacher), 48, seed=1)
    assert len(obs) >= 48 and masks.shape == (len(obs), NUM_ACTIONS)
    assert np.all(masks.sum(1) > 0)
    student = policy_net("mlp", hidden_sizes=(64,))
    result = distill(teacher, student, obs, masks, epochs=25, batch_size=64, lr=3e-3, device="cpu")
    assert result.final_kl < 0.5 * result.initial_kl
    assert result.losses[-1] < result.losses[0]
    assert result.agreement > 0.5
