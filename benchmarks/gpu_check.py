"""GPU checks for parley: one script, a list of check functions run in order, then a summary.

    python benchmarks/gpu_check.py                 # all checks on CUDA (under 5 minutes on one GPU)
    python benchmarks/gpu_check.py --only backbone # checks whose name contains "backbone"
    python benchmarks/gpu_check.py --device cpu    # smoke-test the script itself without a GPU

Without a CUDA device, ``--device auto`` runs everything on CPU as a smoke test (the GPU-vs-CPU
comparisons then compare CPU with CPU) and says so. Exit status 1 if any check failed.

Adding a check
--------------
Write a function taking a :class:`CheckContext` and decorate it with ``@gpu_check("short name")``.
Return a one-line summary (figures, throughput); raise ``AssertionError`` (or anything) to fail::

    @gpu_check("my area: thing works in bf16")
    def check_my_thing(ctx: CheckContext) -> str:
        model = build().to(ctx.device)
        ...
        assert err < 1e-3, f"error {err:.2e} above 1e-3"
        return f"{throughput:,.0f} samples/s"

Checks run in the order they are defined; keep each well under a minute.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from parley.utils import resolve_device, seed_everything


@dataclass
class CheckContext:
    """What every check gets: the device under test and the reference device (CPU, float32)."""

    device: str
    reference: str = "cpu"

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


@dataclass
class Check:
    name: str
    fn: Callable[[CheckContext], str]


CHECKS: list[Check] = []


def gpu_check(name: str) -> Callable[[Callable[[CheckContext], str]], Callable[[CheckContext], str]]:
    """Register ``fn(ctx) -> summary`` as a check named ``name`` (run in definition order)."""

    def register(fn: Callable[[CheckContext], str]) -> Callable[[CheckContext], str]:
        CHECKS.append(Check(name, fn))
        return fn

    return register


# --------------------------------------------------------------------------------------------------
# Helpers shared by checks
# --------------------------------------------------------------------------------------------------


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-12))


def throughput(ctx: CheckContext, step: Callable[[], object], batch: int, repeats: int = 10) -> float:
    """Samples per second of ``step`` (best of ``repeats`` after warm-up)."""
    for _ in range(3):
        step()
    ctx.sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        ctx.sync()
        best = min(best, time.perf_counter() - start)
    return batch / best


# --------------------------------------------------------------------------------------------------
# Policy backbones (parley.agents.nn.backbones)
# --------------------------------------------------------------------------------------------------

# GPU float32 vs CPU float32 (no TF32: PyTorch keeps it off for matmuls by default), and bf16 autocast
# vs CPU float32. Invertible attention in bf16 recomputes block inputs by a fixed point of a bf16
# function, so its gradients are looser.
FP32_TOL = {"forward": 1e-4, "grad": 1e-3}
BF16_TOL = {"forward": 5e-2, "grad": 1.5e-1}


def _backbone_check(name: str, config: dict) -> Callable[[CheckContext], str]:
    def check(ctx: CheckContext) -> str:
        from parley.agents.nn.backbones import make_backbone, sample_observations

        seed_everything(0)
        reference = make_backbone(name, 36, device="cpu", **config).eval()
        obs_cpu = torch.from_numpy(sample_observations(512, seed=1)[0])
        ref_out = reference(obs_cpu)
        ref_out.square().mean().backward()
        ref_grads = {n: p.grad.clone() for n, p in reference.named_parameters() if p.grad is not None}
        obs = obs_cpu.to(ctx.device)
        figures = []
        for precision, tol in (("fp32", FP32_TOL), ("bf16", BF16_TOL)):
            net = copy.deepcopy(reference).to(ctx.device).eval()
            net.zero_grad(set_to_none=True)
            net.bf16 = precision == "bf16"
            out = net(obs)
            assert out.dtype == torch.float32, f"{precision}: features came back as {out.dtype}"
            out.square().mean().backward()
            err = relative_error(out, ref_out)
            assert err <= tol["forward"], f"{precision} forward rel. error {err:.2e} > {tol['forward']:.0e}"
            grad_err = max(relative_error(p.grad, ref_grads[n]) for n, p in net.named_parameters() if n in ref_grads)
            assert grad_err <= tol["grad"], f"{precision} grad rel. error {grad_err:.2e} > {tol['grad']:.0e}"

            big = obs.repeat(4, 1)

            def step(net=net, big=big) -> None:
                net.zero_grad(set_to_none=True)
                net(big).square().mean().backward()

            rate = throughput(ctx, step, len(big), repeats=5)
            figures.append(f"{precision} fwd err {err:.1e} grad err {grad_err:.1e} {rate:,.0f} samples/s fwd+bwd")
        return "; ".join(figures)

    return check


for _name, _config in [
    ("mlp", {"hidden_sizes": (256, 256)}),
    ("transformer", {}),
    ("compacter", {}),
    ("invertible_attention", {}),
    ("invertible_attention", {"variant": "l2"}),
]:
    _label = _name + ("" if not _config or _name == "mlp" else " " + ",".join(f"{k}={v}" for k, v in _config.items()))
    gpu_check(f"backbone {_label}: fp32 and bf16 vs CPU fp32")(_backbone_check(_name, _config))


@gpu_check("invertible attention: peak memory with and without memory-saving backprop (depth 16)")
def check_invertible_memory(ctx: CheckContext) -> str:
    from parley.agents.nn.invertible import InvertibleSequential, invertible_attention_blocks

    seed_everything(0)
    x = (torch.randn(256, 64, 128) / 12).to(ctx.device)
    figures = {}
    plain = InvertibleSequential(invertible_attention_blocks(128, 16), memory_saving=False).to(ctx.device)
    for flag in (False, True):
        seq = copy.deepcopy(plain)
        seq.memory_saving = flag
        if ctx.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        xi = x.clone().requires_grad_(True)
        out = seq(xi)
        peak = (torch.cuda.max_memory_allocated() - base) if ctx.cuda else 0
        out.square().mean().backward()
        figures[flag] = (peak, xi.grad.detach().clone())
        del out, xi, seq
    grad_err = relative_error(figures[True][1], figures[False][1])
    assert grad_err < 1e-3, f"memory-saving gradients differ from plain autograd: rel. error {grad_err:.2e}"
    if not ctx.cuda:
        return f"(CPU: no allocator statistics) grad rel. error {grad_err:.1e}"
    ratio = figures[False][0] / max(figures[True][0], 1)
    assert ratio >= 3, f"only {ratio:.1f}x less peak forward memory at depth 16"
    return (f"forward peak {figures[False][0] / 2**20:,.0f} MiB plain vs {figures[True][0] / 2**20:,.0f} MiB "
            f"memory-saving ({ratio:.1f}x); grad rel. error {grad_err:.1e}")


@gpu_check("invertible image classifier: reconstruction and training step on the device")
def check_invertible_image_classifier(ctx: CheckContext) -> str:
    from parley.agents.nn.invertible import InvertibleImageClassifier

    seed_everything(0)
    model = InvertibleImageClassifier(3, 10, 32).to(ctx.device)
    images = torch.rand(128, 3, 32, 32, device=ctx.device)
    labels = torch.randint(0, 10, (128,), device=ctx.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    rate = throughput(ctx, step, len(images), repeats=5)
    model.eval()
    with torch.no_grad():
        restored = model.decode(model.encode(images))
    err = relative_error(restored, images)
    assert err <= 1e-5, f"reconstruction rel. error {err:.2e} > 1e-5"
    return f"train {rate:,.0f} images/s; reconstruction rel. error {err:.1e}"


@gpu_check("poisoning: Sleeper Agent crafting on CIFAR-shaped data (ResNet-18 width 16)")
def check_sleeper_agent_cifar_shaped(ctx: CheckContext) -> str:
    from parley.attacks.base import Scenario, make_attack
    from parley.attacks.datasets import make_synthetic
    from parley.attacks.victims import TrainingRecipe

    seed_everything(0)
    data = make_synthetic(num_classes=10, image_size=32, channels=3, train_per_class=50, test_per_class=10)
    recipe = TrainingRecipe.paper_cifar10().scaled(3)
    scenario = Scenario.from_dataset(data, source_class=2, target_class=7, budget=0.01, recipe=recipe,
                                     victim="resnet18", victim_kwargs={"width": 16}, device=ctx.device)
    attack = make_attack("sleeper_agent", steps=30, retrain_times=1)
    start = time.perf_counter()
    submission = attack.craft(scenario)
    ctx.sync()
    seconds = time.perf_counter() - start
    assert len(submission) == 5, f"{len(submission)} poisons instead of 5"
    assert float(abs(submission.delta).max()) <= 16 / 255 + 1e-5, "perturbation exceeds eps"
    loss = submission.info["matching_loss"]
    assert loss < 1.0, f"gradient matching did not align the gradients (1 - cos = {loss:.3f})"
    return f"5 poisons, 30 steps, 2 surrogate trainings in {seconds:.1f} s; final 1 - cos = {loss:.3f}"


@gpu_check("poisoning: a CIFAR-shaped poisoning_v0 episode trains and scores its victims on CUDA")
def check_poisoning_episode_on_cuda(ctx: CheckContext) -> str:
    """The GPU recipe's path (ResNet-18 victims, stamp and perturbation attacks, clean reference victim)
    on a tiny CIFAR-shaped set; skipped without CUDA, where the test suite covers the same code."""
    if not ctx.cuda:
        return "skipped: no CUDA device (the CPU test suite covers this episode)"
    from parley.attacks.base import make_attack
    from parley.attacks.datasets import make_synthetic
    from parley.attacks.victims import TrainingRecipe
    from parley.envs import poisoning_v0

    seed_everything(0)
    data = make_synthetic(num_classes=10, image_size=32, channels=3, train_per_class=40, test_per_class=10)
    torch.cuda.reset_peak_memory_stats(ctx.device)
    start = time.perf_counter()
    env = poisoning_v0.env(dataset=data, budget=0.05, recipe=TrainingRecipe.paper_cifar10().scaled(2),
                           victim="resnet18", victim_kwargs={"width": 16}, defense_enabled=False,
                           device=ctx.device, seed=0)
    results = {}
    for name in ("badnets", "random_noise"):
        env.reset(seed=0, options={"source_class": 2, "target_class": 7})
        submission = make_attack(name).craft(env.unwrapped.attacker_scenario())
        env.step(submission)
        info = env.infos["attacker"]
        assert next(env.unwrapped.last_model.parameters()).is_cuda, "the victim was not trained on CUDA"
        for key in ("attack_success_rate", "full_attack_success_rate", "clean_accuracy", "clean_accuracy_drop"):
            assert 0.0 <= abs(info[key]) <= 1.0, f"{name}: {key} = {info[key]}"
        results[name] = info["attack_success_rate"]
    ctx.sync()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(ctx.device) / 2**20
    return (f"2 episodes in {seconds:.1f} s, peak {peak:.0f} MiB; source ASR badnets {results['badnets']:.0%}, "
            f"random noise {results['random_noise']:.0%} (2-epoch victims: no accuracy claim)")


@gpu_check("poisoning defenses: spectral signatures and STRIP on the device agree with CPU")
def check_poisoning_defenses(ctx: CheckContext) -> str:
    from parley.attacks.defenses import make_defense, penultimate_features
    from parley.attacks.victims import ResNet18

    seed_everything(0)
    model = ResNet18(3, 10, image_size=32, width=16).eval()
    images = torch.rand(512, 3, 32, 32)
    labels = torch.arange(512) % 10
    reference = penultimate_features(model, images)
    on_device = copy.deepcopy(model).to(ctx.device)
    start = time.perf_counter()
    features = penultimate_features(on_device, images)
    ctx.sync()
    seconds = time.perf_counter() - start
    err = float(np.abs(features - reference).max() / (np.abs(reference).max() + 1e-12))
    assert err < 1e-3, f"features differ from CPU by {err:.2e} (relative)"
    spectral = make_defense("spectral")
    same = (spectral.select_removals(images, labels, features=features, expected_poisons=5)
            == spectral.select_removals(images, labels, features=reference, expected_poisons=5)).mean()
    assert same > 0.95, f"spectral removals agree on only {same:.0%} of picks"
    flags = make_defense("strip", n_overlays=16).detect(on_device, images[:64].to(ctx.device),
                                                        images[64:192].to(ctx.device))
    assert flags.shape == (64,)
    return f"features of 512 images in {seconds * 1e3:.0f} ms (rel. error {err:.1e}); STRIP ran on the device"


@gpu_check("tda: behaviour cloning and masked PPO on the device")
def check_tda_learners(ctx: CheckContext) -> str:
    import numpy as np

    from parley.agents.partners.scripted import make_partner
    from parley.agents.partners.synthetic import synthetic_corpus
    from parley.agents.training.ppo import PPOConfig, train_ppo
    from parley.agents.training.supervised import (
        SupervisedConfig,
        action_accuracy,
        clone_policy,
        random_policy_accuracy,
        train_supervised,
    )
    from parley.envs.corpus import corpus_dataset

    seed_everything(0)
    data = corpus_dataset(synthetic_corpus(400, seed=0))
    start = time.perf_counter()
    sl = train_supervised(data, SupervisedConfig(epochs=3, device=ctx.device)).policy
    ctx.sync()
    sl_seconds = time.perf_counter() - start
    accuracy = action_accuracy(sl, data)
    chance = random_policy_accuracy(data)
    assert accuracy > 3 * chance, f"behaviour cloning on the device: accuracy {accuracy:.2f}, chance {chance:.2f}"
    learner = clone_policy(sl, deterministic=False, seed=1)
    result = train_ppo(learner, make_partner("conceder"), PPOConfig(total_games=4096, games_per_iteration=1024))
    last = result.history[-1]
    assert all(np.isfinite(v) for k, v in last.items() if k != "pareto"), f"non-finite PPO statistics: {last}"
    actions = learner.act_batch(data.observations[:512], data.masks[:512])
    assert data.masks[np.arange(512), actions].all(), "the device policy chose an illegal action"
    return (f"BC {len(data)} acts x 3 epochs in {sl_seconds:.1f} s (acc {accuracy:.2f}); PPO "
            f"{last['env_steps_per_s']:,.0f} env steps/s, score {last['score']:.2f}")


# --------------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------------


@gpu_check("training: RLlib PPO learner on the device (partner pool, mlp), export to TorchPolicy")
def check_rllib_learner(ctx: CheckContext) -> str:
    import ray

    from parley.agents.training import rllib_setups as setups
    from parley.agents.training.rllib import current_policy
    from parley.envs.negotiation import BatchedNegotiation, sample_context_arrays

    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    settings = setups.PPOSettings(train_batch_size=4096, minibatch_size=1024, num_epochs=2, num_envs_per_env_runner=64)
    algo = setups.partner_pool_config(["boulware", "conceder", "pareto"], settings=settings, device=ctx.device,
                                      seed=0).build_algo()
    try:
        results = algo.learner_group.foreach_learner(
            lambda learner: str(next(learner.module["default_policy"].parameters()).device))
        devices = [result.get() for result in results]
        assert all(str(d).startswith(ctx.device.split(":")[0]) for d in devices), f"learner on {devices}"
        start = time.perf_counter()
        steps = 0
        for _ in range(3):
            steps += int(algo.train()["env_runners"]["num_env_steps_sampled"])
        ctx.sync()
        seconds = time.perf_counter() - start
        policy = current_policy(algo, "default_policy", "mlp", {}, 36)
    finally:
        algo.stop()
        if started:
            ray.shutdown()
    rng = np.random.default_rng(0)
    game = BatchedNegotiation(32)
    counts, values = sample_context_arrays(rng, 32)
    game.reset_games(np.arange(32), counts, values, np.zeros(32, dtype=np.int64))
    actions = policy.act_batch(game.observations(np.zeros(32, dtype=np.int64)), game.legal_masks())
    assert game.legal_masks()[np.arange(32), actions].all(), "exported policy chose an illegal act"
    return f"learner on {devices[0]}; {steps:,} env steps in {seconds:.1f} s ({steps / seconds:,.0f} steps/s incl. updates)"


@gpu_check("training: native PPO run on the device (partner pool, transformer), resume, load_policy")
def check_native_training(ctx: CheckContext) -> str:
    import tempfile

    from parley.agents import load_policy
    from parley.agents.training.run import TrainConfig, resolve_train_config, train

    with tempfile.TemporaryDirectory() as run:
        config = TrainConfig(framework="native", backbone="transformer", backbone_config={"d_model": 64, "n_layers": 2},
                             partners=["boulware", "conceder", "pareto"], iterations=2, checkpoint_every=1, out=run,
                             device=ctx.device, live=False)
        start = time.perf_counter()
        first = train(config, evaluate=False)
        resumed = train(resolve_train_config({"resume": True, "out": run, "iterations": 3}), evaluate=False)
        ctx.sync()
        seconds = time.perf_counter() - start
        assert resumed.iterations == 3 and resumed.env_steps > first.env_steps
        policy = load_policy(run, device="cpu")
        assert policy.metadata["iteration"] == 3
    return f"{resumed.env_steps:,} learner steps in {seconds:.1f} s ({resumed.env_steps / seconds:,.0f}/s incl. updates)"


def run(checks: list[Check], ctx: CheckContext) -> list[tuple[str, str, str, float]]:
    results = []
    for check in checks:
        start = time.perf_counter()
        try:
            summary, status = check.fn(ctx), "PASS"
        except Exception as err:  # noqa: BLE001 - a failing check must not stop the others
            summary, status = f"{type(err).__name__}: {err}", "FAIL"
            traceback.print_exc()
        seconds = time.perf_counter() - start
        results.append((status, check.name, summary, seconds))
        print(f"[{status}] {check.name} ({seconds:.1f} s): {summary}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="parley GPU checks")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--only", default="", help="run checks whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for i, check in enumerate(CHECKS, 1):
            print(f"{i:2d}. {check.name}")
        return 0
    device = resolve_device(args.device)
    if not device.startswith("cuda"):
        print("no CUDA device in use: running on CPU as a smoke test of the checks themselves", flush=True)
    else:
        print(f"device: {torch.cuda.get_device_name(device)}", flush=True)
    selected = [c for c in CHECKS if args.only.lower() in c.name.lower()]
    if not selected:
        print(f"no check matches {args.only!r}; use --list")
        return 1
    start = time.perf_counter()
    results = run(selected, CheckContext(device))
    failed = [r for r in results if r[0] == "FAIL"]
    print(f"\n{len(results) - len(failed)}/{len(results)} checks passed in {time.perf_counter() - start:.0f} s on {device}")
    for status, name, _summary, seconds in results:
        print(f"  {status}  {seconds:6.1f}s  {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
