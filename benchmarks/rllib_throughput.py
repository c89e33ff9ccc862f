"""RLlib throughput: env steps per second of sampling + training for parley train's setups.

    python benchmarks/rllib_throughput.py                 # every row, writes its RESULTS.md section
    python benchmarks/rllib_throughput.py --no-append     # print only
    python benchmarks/rllib_throughput.py --quality-iterations 0   # skip the training-quality check

Rows (PPO, mlp backbone, ``parley train``'s defaults: 8,192 env steps per iteration, minibatch 2,048, 4
epochs, 128 games per env runner), each timed over ``--iterations`` ``algo.train()`` calls after one
untimed warm-up iteration, all in this one run so the rows compare on the same machine load:

* the default ``parley train`` setup (learner vs the scripted partner pool, sampling in the driver), as it
  runs now (torch on one thread, as Ray sets up its workers) and the way it ran before (RLlib's plain env
  runner, torch on every core);
* RLlib self-play on the batched rules (``NegotiationVectorMultiAgentEnv``) and on the per-step PettingZoo
  adapter (``batched=False``, RLlib's plain multi-agent env runner, torch on every core);
* the native trainer (``--framework native``) at the same batch, as it runs (torch on every core) and
  with torch on one thread;
* the partner pool on 1 and on 2 remote env runners (one CPU each); "sampling/s per runner" is the env
  steps each runner samples per second of sampling, the figure to plan a cluster with.

Training quality: self-play trained for ``--quality-iterations`` iterations on each path from the same
seed; the greedy learner plays ``--eval-episodes`` games against every scripted partner.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

from common import machine, write_results_section

POOL = ["boulware", "linear", "conceder", "fair_split", "tit_for_tat", "pareto"]


def time_iterations(config, iterations: int, *, one_thread: bool) -> dict:
    """Build the algorithm, run one warm-up iteration, then time ``iterations`` more."""
    from parley.agents.training.rllib_envs import one_torch_thread

    with one_torch_thread() if one_thread else contextlib.nullcontext():
        algo = config.build_algo()
        try:
            algo.train()
            steps = sampling_s = 0.0
            start = time.perf_counter()
            for _ in range(iterations):
                result = algo.train()
                steps += result["env_runners"]["num_env_steps_sampled"]
                sampling_s += float(result.get("timers", {}).get("env_runner_sampling_timer", float("nan")))
            seconds = time.perf_counter() - start
            return {"steps": int(steps), "seconds": seconds, "rate": steps / seconds,
                    "sampling_rate": steps / sampling_s if sampling_s > 0 else float("nan")}
        finally:
            algo.stop()


def native_rate(iterations: int, batch: int, *, one_thread: bool) -> float:
    """Env steps/s of the native trainer over ``iterations`` iterations after one warm-up iteration."""
    from parley.agents.training.rllib_envs import one_torch_thread
    from parley.agents.training.run import TrainConfig, train

    with tempfile.TemporaryDirectory() as out, one_torch_thread() if one_thread else contextlib.nullcontext():
        result = train(TrainConfig(framework="native", iterations=iterations + 1, train_batch_size=batch, out=out,
                                   live=False), evaluate=False)
    first, last = result.history[0], result.history[-1]
    return (last["env_steps"] - first["env_steps"]) / (last["elapsed_s"] - first["elapsed_s"])


def self_play_quality(iterations: int, batched: bool, episodes: int, seed: int):
    """Train self-play ``iterations`` iterations on one path; the greedy learner's eval rows."""
    from parley.agents.evaluation import evaluate_policy
    from parley.agents.partners.scripted import list_partners
    from parley.agents.training import rllib_setups as setups
    from parley.agents.training.rllib import current_policy
    from parley.agents.training.rllib_envs import one_torch_thread

    config = setups.self_play_config(settings=setups.PPOSettings(), seed=seed, batched=batched)
    with one_torch_thread():
        algo = config.build_algo()
        try:
            steps = 0
            for _ in range(iterations):
                steps += algo.train()["env_runners"]["num_env_steps_sampled"]
            policy = current_policy(algo, setups.LEARNER, "mlp", {}, 36)
        finally:
            algo.stop()
    rows = evaluate_policy(policy, list(list_partners()), episodes=episodes, seed=seed)
    return steps, rows[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per row (3)")
    parser.add_argument("--quality-iterations", type=int, default=4,
                        help="self-play iterations per path for the quality check (4; 0 skips it)")
    parser.add_argument("--eval-episodes", type=int, default=100, help="games per scripted partner (100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-append", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    import ray
    from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from parley.agents.training import rllib_setups as setups
    from parley.agents.training.rllib import ray_log_to_file

    where = machine()
    settings = setups.PPOSettings(num_envs_per_env_runner=128)
    rows: list[tuple[str, str, dict | float]] = []
    with tempfile.TemporaryDirectory() as logs, ray_log_to_file(Path(logs) / "ray.log"):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            pool = setups.partner_pool_config(POOL, settings=settings, seed=args.seed)
            rows.append(("default `parley train` (partner pool, driver samples)", "now",
                         time_iterations(pool, args.iterations, one_thread=True)))
            before = setups.partner_pool_config(POOL, settings=settings, seed=args.seed).env_runners(
                env_runner_cls=SingleAgentEnvRunner)
            rows.append(("default `parley train` (partner pool, driver samples)", "before",
                         time_iterations(before, args.iterations, one_thread=False)))
            rows.append(("RLlib self-play, league of 4", "batched rules",
                         time_iterations(setups.self_play_config(settings=settings, seed=args.seed),
                                         args.iterations, one_thread=True)))
            per_step = setups.self_play_config(settings=settings, seed=args.seed, batched=False).env_runners(
                env_runner_cls=MultiAgentEnvRunner)
            rows.append(("RLlib self-play, league of 4", "per-step adapter (before)",
                         time_iterations(per_step, args.iterations, one_thread=False)))
            for runners in (1, 2):
                remote = setups.PPOSettings(num_envs_per_env_runner=128, num_env_runners=runners)
                rows.append(("partner pool, remote env runners", f"{runners} runner{'s' * (runners > 1)}",
                             time_iterations(setups.partner_pool_config(POOL, settings=remote, seed=args.seed),
                                             args.iterations, one_thread=True)))
            quality = []
            if args.quality_iterations > 0:
                for batched in (True, False):
                    quality.append((batched, *self_play_quality(args.quality_iterations, batched,
                                                                args.eval_episodes, args.seed)))
        finally:
            ray.shutdown()
    for one_thread in (False, True):
        rows.append(("native trainer (`--framework native`), same batch",
                     "torch on one thread" if one_thread else "torch on every core (as it runs)",
                     native_rate(args.iterations, 8192, one_thread=one_thread)))

    lines = ["| setup | path | env steps/s (sampling + training) | sampling only, per runner |",
             "|---|---|---:|---:|"]
    for name, path, value in rows:
        if isinstance(value, dict):
            runners = 2 if path.startswith("2") else 1
            lines.append(f"| {name} | {path} | {value['rate']:,.0f} | {value['sampling_rate'] / runners:,.0f} |")
        else:
            lines.append(f"| {name} | {path} | {value:,.0f} | -- |")
    rate = {(n, p): v["rate"] for n, p, v in rows if isinstance(v, dict)}
    pool_name, sp_name, remote_name = rows[0][0], rows[2][0], rows[4][0]
    ratios = (f"Ratios in this run: default setup now / before {rate[(pool_name, 'now')] / rate[(pool_name, 'before')]:.1f}x; "
              f"self-play batched / per-step {rate[(sp_name, 'batched rules')] / rate[(sp_name, 'per-step adapter (before)')]:.1f}x; "
              f"2 env runners / 1 {rate[(remote_name, '2 runners')] / rate[(remote_name, '1 runner')]:.2f}x.")
    table = "\n".join(lines) + "\n\n" + ratios
    if quality:
        table += ("\n\nTraining quality at equal env steps (self-play, learner's greedy play vs every scripted "
                  f"partner, {args.eval_episodes} games each, seed {args.seed}):\n\n"
                  "| self-play env | env steps | score | partner score | agreement % | Pareto % |\n"
                  "|---|---:|---:|---:|---:|---:|\n")
        for batched, steps, row in quality:
            table += (f"| {'batched rules' if batched else 'per-step adapter'} | {steps:,} | {row.score:.2f} | "
                      f"{row.partner_score:.2f} | {100 * row.agreement:.1f} | {100 * row.pareto:.1f} |\n")
    print(table)
    if not args.no_append:
        note = ("Each row times `algo.train()` over the same run, so rows compare at the same machine load; "
                "the load average is in the machine line. Ray is started with 2 CPUs.")
        write_results_section("RLlib throughput", where, note, table)


if __name__ == "__main__":
    main()
