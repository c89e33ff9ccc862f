"""Benchmark the policy backbones, invertible attention and int8 compression on CPU.

Prints four tables and writes them to its section of benchmarks/RESULTS.md with the date, the command
and the machine:

1. per backbone and size: parameters, trainable parameters, forward and forward+backward latency,
   activation memory (bytes of tensors saved for backward, counted with saved_tensors_hooks);
2. invertible attention: fixed-point iterations to 1e-5 and reconstruction error vs the Lipschitz
   coefficient c (weights scaled up so every spectral normalisation is active: the worst case);
3. invertible attention: activation memory and fwd+bwd time with and without memory-saving backprop
   at depth 4 / 8 / 16;
4. int8 vs float32: latency, checkpoint size and output error, for each quantization backend.

Ratios are measured side by side in one run. Targets (issue): <= 30 iterations at the default c; >= 3x
less activation memory at depth 16; int8 >= 1.5x faster and >= 3.5x smaller on CPU.

    OMP_NUM_THREADS=1 python benchmarks/backbones.py            # ~2-4 minutes on 2 cores
    OMP_NUM_THREADS=1 python benchmarks/backbones.py --quick    # smaller repeat counts
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch
from common import best_time, save_results_section
from torch import nn

from parley.agents.nn.backbones import make_backbone, sample_observations
from parley.agents.nn.compacter import merge_adapters
from parley.agents.nn.compress import model_size_bytes, quantize_int8
from parley.agents.nn.invertible import (
    InvertibleSequential,
    SpectralLinear,
    invertible_attention_blocks,
    saved_activation_bytes,
    update_spectral_norms,
)
from parley.envs.negotiation import NUM_ACTIONS

BATCH = 64

SIZES: dict[str, list[tuple[str, dict]]] = {
    "mlp": [("64x2", {"hidden_sizes": (64, 64)}), ("256x2", {"hidden_sizes": (256, 256)}),
            ("1024x2", {"hidden_sizes": (1024, 1024)})],
    "transformer": [("d32 L2", {"d_model": 32, "n_layers": 2}), ("d64 L2", {"d_model": 64, "n_layers": 2}),
                    ("d128 L4", {"d_model": 128, "n_layers": 4})],
    "compacter": [("d64 L2", {"d_model": 64, "n_layers": 2}), ("d64 L2 ++", {"d_model": 64, "n_layers": 2, "plus_plus": True}),
                  ("d128 L4", {"d_model": 128, "n_layers": 4})],
    "invertible_attention": [("d32 x2", {"d_model": 32, "depth": 2}), ("d64 x2", {"d_model": 64, "depth": 2}),
                             ("d64 x2 l2", {"d_model": 64, "depth": 2, "variant": "l2"}),
                             ("d128 x4", {"d_model": 128, "depth": 4})],
}


def kib(n: float) -> str:
    return f"{n / 1024:,.1f}"


def backbone_table(obs: torch.Tensor, repeats: int) -> list[str]:
    rows = ["| backbone | size | params | trainable | fwd ms | fwd+bwd ms | activation KiB |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for name, sizes in SIZES.items():
        for label, config in sizes:
            torch.manual_seed(0)
            net = make_backbone(name, obs.shape[1], device="cpu", **config)
            params = list(net.parameters())
            total = sum(p.numel() for p in params)
            trainable = sum(p.numel() for p in params if p.requires_grad)
            net.eval()
            with torch.inference_mode():
                fwd = best_time(lambda net=net: net(obs), repeats)
            net.train()

            def step(net=net) -> None:
                net.zero_grad(set_to_none=True)
                net(obs).square().mean().backward()

            both = best_time(step, repeats)
            act = saved_activation_bytes(lambda net=net: net(obs))
            rows.append(f"| {name} | {label} | {total:,} | {trainable:,} | {fwd * 1e3:.2f} | {both * 1e3:.2f} | {kib(act)} |")
            print(rows[-1], flush=True)
    return rows


def saturated_stack(dim: int, depth: int, coeff: float, variant: str, memory_saving: bool = True,
                    seed: int = 0) -> InvertibleSequential:
    torch.manual_seed(seed)
    seq = InvertibleSequential(invertible_attention_blocks(dim, depth, 4, 2, coeff, variant), memory_saving=memory_saving)
    with torch.no_grad():
        for m in seq.modules():
            if isinstance(m, SpectralLinear):
                m.weight.mul_(10)
    update_spectral_norms(seq, 100)
    return seq.eval()


def inverse_table() -> list[str]:
    rows = ["| variant | c | iterations to 1e-5 (max over blocks) | mean per block | reconstruction rel. error |",
            "|---|---:|---:|---:|---:|"]
    torch.manual_seed(1)
    x = torch.randn(BATCH, 14, 64) / 8  # unit-norm tokens, as the backbones feed them
    for variant in ("dot", "l2"):
        for coeff in (0.5, 0.7, 0.9, 0.95, 0.99):
            seq = saturated_stack(64, 2, coeff, variant)
            with torch.no_grad():
                y = seq(x)
            rec, iterations, _ = seq.inverse(y, tol=1e-5, max_iter=200)
            mean_it = sum(s[0] for s in seq.last_inverse_stats) / len(seq.last_inverse_stats)
            err = float(torch.linalg.vector_norm(rec - x) / torch.linalg.vector_norm(x))
            rows.append(f"| {variant} | {coeff} | {iterations} | {mean_it:.1f} | {err:.2e} |")
            print(rows[-1], flush=True)
    return rows


def memory_table(repeats: int) -> tuple[list[str], float]:
    rows = ["| depth (layers) | blocks | plain autograd KiB | memory-saving KiB | ratio | plain fwd+bwd ms | memory-saving fwd+bwd ms |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    torch.manual_seed(2)
    x = torch.randn(BATCH, 14, 64) / 8
    ratio16 = 0.0
    for depth in (4, 8, 16):
        measured = {}
        for flag in (False, True):
            seq = saturated_stack(64, depth, 0.9, "dot", memory_saving=flag)
            act = saved_activation_bytes(lambda seq=seq: seq(x.clone().requires_grad_(True)))

            def step(seq=seq) -> None:
                seq.zero_grad(set_to_none=True)
                seq(x.clone().requires_grad_(True)).square().mean().backward()

            measured[flag] = (act, best_time(step, max(2, repeats // 4), warmup=1))
        ratio = measured[False][0] / measured[True][0]
        ratio16 = ratio if depth == 16 else ratio16
        rows.append(f"| {depth} | {2 * depth} | {kib(measured[False][0])} | {kib(measured[True][0])} | {ratio:.1f}x | "
                    f"{measured[False][1] * 1e3:.1f} | {measured[True][1] * 1e3:.1f} |")
        print(rows[-1], flush=True)
    return rows, ratio16


def policy(name: str, obs_size: int, **config) -> nn.Module:
    torch.manual_seed(0)
    backbone = make_backbone(name, obs_size, device="cpu", **config)
    if name == "compacter":
        merge_adapters(backbone)
    return nn.Sequential(backbone, nn.Linear(backbone.out_dim, NUM_ACTIONS)).eval()


def quant_table(obs: torch.Tensor, repeats: int) -> list[str]:
    rows = ["| model (+252 head) | backend | batch | fp32 ms | int8 ms | speed-up | fp32 KiB | int8 KiB | smaller | rel. error |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    backends = ["dynamic"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao  # noqa: F401
        backends.append("torchao")
    except ImportError:
        print("torchao not installed: skipping its rows", flush=True)
    models = [("mlp 256x2", "mlp", {"hidden_sizes": (256, 256)}), ("mlp 1024x2", "mlp", {"hidden_sizes": (1024, 1024)}),
              ("transformer d64 L2", "transformer", {}), ("transformer d128 L4", "transformer", {"d_model": 128, "n_layers": 4}),
              ("compacter d64 L2 (merged)", "compacter", {})]
    big = torch.cat([obs] * 4)
    for label, name, config in models:
        model = policy(name, obs.shape[1], **config)
        for backend in backends:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                q = quantize_int8(model, backend=backend)
            for batch_obs in (obs, big):
                with torch.inference_mode():
                    ref = model(batch_obs)
                    err = float(torch.linalg.vector_norm(q(batch_obs) - ref) / torch.linalg.vector_norm(ref))
                    t32 = best_time(lambda m=model, b=batch_obs: m(b), repeats)
                    t8 = best_time(lambda m=q, b=batch_obs: m(b), repeats)
                s32, s8 = model_size_bytes(model), model_size_bytes(q)
                rows.append(f"| {label} | {backend} | {len(batch_obs)} | {t32 * 1e3:.2f} | {t8 * 1e3:.2f} | {t32 / t8:.2f}x | "
                            f"{kib(s32)} | {kib(s8)} | {s32 / s8:.2f}x | {err:.3f} |")
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--no-append", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    repeats = 5 if args.quick else 20
    obs = torch.from_numpy(sample_observations(BATCH, seed=0)[0])
    start = time.time()

    print("\n## Backbones", flush=True)
    t1 = backbone_table(obs, repeats)
    print("\n## Invertible attention: fixed-point inverse", flush=True)
    t2 = inverse_table()
    print("\n## Invertible attention: memory-saving backprop", flush=True)
    t3, ratio16 = memory_table(repeats)
    print("\n## int8 vs fp32", flush=True)
    t4 = quant_table(obs, repeats)
    elapsed = time.time() - start
    print(f"\nfinished in {elapsed:.0f} s; activation memory ratio at depth 16: {ratio16:.1f}x")
    if args.no_append:
        return

    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores visible, Python {platform.python_version()}, "
               f"torch {torch.__version__}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
               f"torch threads {torch.get_num_threads()}")
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    now = datetime.datetime.now(datetime.timezone.utc)
    save_results_section(
            f"\n## Policy backbones, invertible attention, int8 ({now:%Y-%m-%d %H:%M} UTC)\n\n"
            f"Command: `{command}`  \nMachine: {machine}  \n"
            f"Batch {BATCH} negotiation observations (max_turns 10); best of {repeats} timings; activation memory = "
            "bytes of tensors saved for backward (saved_tensors_hooks). Run time "
            f"{elapsed:.0f} s.\n\n"
            "Backbones (compacter: transformer frozen, adapters and layer norms trained; invertible: memory-saving on):\n\n"
            + "\n".join(t1)
            + "\n\nInvertible attention, fixed-point inverse vs the Lipschitz coefficient c (2 layers = 4 blocks, width 64, "
            "14 tokens; weights scaled x10 so every spectral norm sits at c):\n\n"
            + "\n".join(t2)
            + "\n\nActivation memory with and without memory-saving backprop (dot variant, width 64, 14 tokens):\n\n"
            + "\n".join(t3)
            + "\n\nint8 dynamic quantization vs float32 (CPU inference):\n\n"
            + "\n".join(t4) + "\n")


if __name__ == "__main__":
    main()
