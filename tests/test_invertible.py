"""Invertible attention: Lipschitz control, fixed-point inverse, memory-saving backprop, image classifier."""

from __future__ import annotations

import math

import pytest
import torch

from parley.agents.nn.backbones import make_backbone, sample_observations
from parley.agents.nn.invertible import (
    InvertibleImageClassifier,
    InvertibleResidualBlock,
    InvertibleSequential,
    LipschitzAttention,
    LipschitzFeedForward,
    SpectralLinear,
    invertible_attention_blocks,
    saved_activation_bytes,
    squeeze,
    unsqueeze,
    update_spectral_norms,
)

VARIANTS = ["dot", "l2"]


def saturate(module: torch.nn.Module, factor: float = 10.0) -> None:
    """Scale raw weights up so every spectral normalisation is active (the hardest case for invertibility)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, SpectralLinear):
                m.weight.mul_(factor)
    update_spectral_norms(module, 100)


def make_stack(variant: str, dim: int = 16, depth: int = 2, dtype=torch.float32, memory_saving: bool = True,
               seed: int = 0, n_heads: int = 4) -> InvertibleSequential:
    torch.manual_seed(seed)
    seq = InvertibleSequential(invertible_attention_blocks(dim, depth, n_heads=n_heads, variant=variant),
                               memory_saving=memory_saving).to(dtype)
    saturate(seq)
    return seq.eval()


def empirical_lipschitz(g: torch.nn.Module, x: torch.Tensor, steps: int = 40) -> float:
    """Largest ||g(x+d) - g(x)|| / ||d|| found by gradient ascent over perturbations d."""
    d = (torch.randn_like(x) * 0.1).requires_grad_(True)
    opt = torch.optim.Adam([d], lr=0.05)
    best = 0.0
    for _ in range(steps):
        ratio = torch.linalg.vector_norm(g(x + d) - g(x), dim=(1, 2)) / torch.linalg.vector_norm(d, dim=(1, 2))
        best = max(best, float(ratio.max().detach()))
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
    return best


def test_spectral_linear_caps_the_norm_at_the_coefficient():
    torch.manual_seed(0)
    layer = SpectralLinear(20, 12, coeff=0.7)
    saturate(layer)
    assert float(torch.linalg.matrix_norm(layer.normalized_weight().detach(), ord=2)) == pytest.approx(0.7, rel=1e-4)
    small = SpectralLinear(20, 12, coeff=0.7)
    with torch.no_grad():
        small.weight.mul_(0.01)
    update_spectral_norms(small, 50)
    assert torch.equal(small.normalized_weight(), small.weight)  # below the cap: untouched


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_residual_function_has_lipschitz_below_one(variant):
    seq = make_stack(variant, dim=16, depth=2)
    torch.manual_seed(1)
    x = torch.randn(8, 6, 16) / 4  # unit-norm tokens, as the backbones feed them
    for block in seq.blocks:
        lip = empirical_lipschitz(block.g, x)
        assert 0 < lip < 1, (type(block.g).__name__, lip)
        if isinstance(block.g, LipschitzFeedForward):
            assert lip <= 0.9**2 + 1e-4


def test_l2_attention_bound_holds_far_from_the_data_but_dot_does_not_have_to():
    torch.manual_seed(2)
    l2 = LipschitzAttention(16, 4, variant="l2")
    saturate(l2)
    x = torch.randn(4, 6, 16) * 30  # large inputs: Kim et al.'s bound is global for L2 attention
    assert empirical_lipschitz(l2, x) <= 0.9**3
    dot = LipschitzAttention(16, 4, variant="dot")
    saturate(dot)
    # Dot-product attention is not globally Lipschitz: its local constant grows with the input scale.
    assert empirical_lipschitz(dot, x) > empirical_lipschitz(dot, x / 30)


@pytest.mark.parametrize("variant", VARIANTS)
def test_inverse_reconstructs_in_float32_and_float64(variant):
    for dtype, tol, bound in [(torch.float32, 1e-6, 1e-5), (torch.float64, 1e-12, 1e-10)]:
        seq = make_stack(variant, dtype=dtype)
        torch.manual_seed(3)
        x = torch.randn(8, 6, 16, dtype=dtype) / 4
        with torch.no_grad():
            y = seq(x)
        x_rec, iterations, residual = seq.inverse(y, tol=tol, max_iter=100)
        rel = float(torch.linalg.vector_norm(x_rec - x) / torch.linalg.vector_norm(x))
        assert rel <= bound, (dtype, rel)
        assert residual <= tol and 0 < iterations <= 100
        assert len(seq.last_inverse_stats) == len(seq.blocks)


def test_inverse_reports_iterations_and_residual_honestly():
    seq = make_stack("dot")
    block = seq.blocks[0]
    torch.manual_seed(4)
    y = torch.randn(2, 6, 16) / 4
    x0, it0, res0 = block.inverse(y, tol=1e-6, max_iter=0)
    assert it0 == 0 and torch.equal(x0, y)
    x, it, res = block.inverse(y, tol=1e-5, max_iter=100)
    with torch.no_grad():
        assert res0 == pytest.approx(float(torch.linalg.vector_norm(block.g(y)) / torch.linalg.vector_norm(y)), rel=1e-5)
        assert res == pytest.approx(float(torch.linalg.vector_norm(block(x) - y) / torch.linalg.vector_norm(y)), rel=1e-3)
    assert res <= 1e-5 and it <= 30  # geometric convergence at the default coefficient
    _, it_tighter, _ = block.inverse(y, tol=1e-7, max_iter=100)
    assert it_tighter > it


@pytest.mark.parametrize("variant", VARIANTS)
def test_memory_saving_backprop_matches_plain_autograd(variant):
    torch.manual_seed(5)
    x = torch.randn(4, 6, 16) / 4
    grads = []
    for memory_saving in (True, False):
        seq = make_stack(variant, memory_saving=memory_saving, seed=7)
        xi = x.clone().requires_grad_(True)
        out = seq(xi)
        (out.sin().sum()).backward()
        grads.append([xi.grad] + [p.grad for p in seq.parameters()])
        assert (out.grad_fn is not None) and (type(out.grad_fn).__name__.startswith("_Recompute") == memory_saving)
    for a, b in zip(*grads, strict=True):
        assert a is not None and b is not None
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), float((a - b).abs().max())


def test_memory_saving_backprop_passes_gradcheck_in_float64():
    seq = make_stack("dot", dim=4, depth=1, dtype=torch.float64, n_heads=1)
    x = (torch.randn(2, 3, 4, dtype=torch.float64) / 2).requires_grad_(True)
    assert torch.autograd.gradcheck(seq, (x,), eps=1e-6, atol=1e-6)
    # Parameter gradients, float64, against plain autograd.
    plain = make_stack("dot", dim=4, depth=1, dtype=torch.float64, memory_saving=False, n_heads=1)
    plain.load_state_dict(seq.state_dict())
    for net in (seq, plain):
        net.zero_grad()
        net(x.detach()).pow(2).sum().backward()
    for p, q in zip(seq.parameters(), plain.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, rtol=1e-8, atol=1e-10)


def test_memory_saving_keeps_activation_memory_flat_in_depth():
    x = torch.randn(4, 10, 16) / 4
    plain, saving = {}, {}
    for depth in (2, 4):
        for store, flag in ((plain, False), (saving, True)):
            seq = make_stack("dot", depth=depth, memory_saving=flag)
            store[depth] = saved_activation_bytes(lambda seq=seq: seq(x.clone().requires_grad_(True)).sum())
    assert saving[2] == saving[4] == x.numel() * 4  # only the output
    assert plain[4] > 1.8 * plain[2] and plain[2] > 5 * saving[2]


def test_a_non_invertible_block_is_reported_during_backprop():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 4)
    with torch.no_grad():
        lin.weight.copy_(3 * torch.eye(4))  # Lip(g) = 3: the fixed point diverges
    seq = InvertibleSequential([InvertibleResidualBlock(lin)], memory_saving=True, recompute_max_iter=20)
    x = torch.randn(2, 3, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="Lip\\(g\\) >= 1"):
        seq(x).sum().backward()


def test_invertible_attention_backbone_trains_on_negotiation_observations():
    obs = torch.from_numpy(sample_observations(32, seed=9)[0])
    torch.manual_seed(0)
    net = make_backbone("invertible_attention", 36, device="cpu", d_model=32, n_heads=4, depth=1)
    assert net.out_dim == 32
    head = torch.nn.Linear(32, 1)
    target = torch.randn(32, 1)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.mse_loss(head(net(obs)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    # After training the blocks are still invertible on the tokens they see.
    net.eval()
    tokens, _ = net.tokenizer(obs)
    tokens = (net.token_norm(tokens) / math.sqrt(32)).detach()
    with torch.no_grad():
        y = net.blocks(tokens)
    rec, _, _ = net.blocks.inverse(y, tol=1e-6)
    assert float(torch.linalg.vector_norm(rec - tokens) / torch.linalg.vector_norm(tokens)) <= 1e-5


def test_squeeze_is_a_permutation():
    x = torch.randn(2, 3, 8, 8)
    t = squeeze(x, 4)
    assert t.shape == (2, 4, 48)
    assert torch.equal(unsqueeze(t, 3, 8, 4), x)
    assert torch.equal(t[0, 1, :16].reshape(4, 4), x[0, 0, :4, 4:8])


@pytest.mark.parametrize("variant", VARIANTS)
def test_image_classifier_is_invertible_up_to_the_head(variant):
    torch.manual_seed(0)
    model = InvertibleImageClassifier(in_channels=3, num_classes=10, image_size=16, width=64, variant=variant)
    saturate(model.blocks)
    model.eval()
    images = torch.rand(4, 3, 16, 16)
    assert model(images).shape == (4, 10)
    with torch.no_grad():
        features = model.encode(images)
    assert features.shape == (4, 16, 64)
    restored = model.decode(features)
    assert float(torch.linalg.vector_norm(restored - images) / torch.linalg.vector_norm(images)) <= 1e-5


def test_image_classifier_learns_a_simple_task_and_validates_input():
    torch.manual_seed(0)
    model = InvertibleImageClassifier(in_channels=1, num_classes=2, image_size=8, depth=1)
    images = torch.rand(64, 1, 8, 8)
    labels = (images[:, 0, :4].mean((1, 2)) > images[:, 0, 4:].mean((1, 2))).long()  # top brighter than bottom
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    accuracy = (model(images).argmax(1) == labels).float().mean()
    assert accuracy >= 0.85
    with pytest.raises(ValueError, match=r"shape \(B, 1, 8, 8\)"):
        model(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="divisible by patch_size"):
        InvertibleImageClassifier(3, 10, 30)


def test_bf16_autocast_runs_through_memory_saving_backprop():
    obs = torch.from_numpy(sample_observations(16, seed=2)[0])
    torch.manual_seed(0)
    net = make_backbone("invertible_attention", 36, device="cpu", d_model=32, depth=1).eval()
    net(obs).square().mean().backward()
    reference = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    net.bf16 = True
    out = net(obs)
    assert out.dtype == torch.float32
    out.square().mean().backward()
    for name, p in net.named_parameters():
        err = float(torch.linalg.vector_norm(p.grad - reference[name]) / torch.linalg.vector_norm(reference[name]))
        assert err < 0.1, (name, err)


def test_second_order_gradients_need_plain_autograd():
    # Gradient-matching attacks differentiate parameter gradients (create_graph=True).
    torch.manual_seed(0)
    images = torch.rand(4, 1, 8, 8)
    labels = torch.tensor([0, 1, 0, 1])
    for memory_saving in (False, True):
        model = InvertibleImageClassifier(1, 2, 8, depth=1, memory_saving=memory_saving)
        delta = torch.zeros_like(images, requires_grad=True)
        loss = torch.nn.functional.cross_entropy(model(images + delta), labels)
        if memory_saving:
            with pytest.raises(RuntimeError, match="higher-order"):
                torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
            continue
        grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
        (second,) = torch.autograd.grad(sum(g.square().sum() for g in grads), delta)
        assert second.abs().sum() > 0
    assert InvertibleImageClassifier(3, 10, 32).feature_dim == 48
