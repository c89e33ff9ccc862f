"""RLlib throughput: env steps per second of sampling + training for parley train's setups.

    python benchmarks/rllib_throughput.py                 # every row, writes its RESULTS.md section
    python benchmarks/rllib_throughput.py --no-append     # print only
    python benchmarks/rllib_throughput.py --quality-iterations 0   # skip the training-quality check

Rows (PPO, mlp backbone, ``parley train``'s defaults: 8,192 env steps per iteration, minibatch 2,048, 4
epochs, 128 games per env runner, torch on one thread), each timed over ``--iterations`` ``algo.train()``
calls after one untimed warm-up iteration, all in this one run so the rows compare on the same machine
load:

* the default ``parley train`` setup (learner vs the scripted partner pool) as it runs (parley's batched env
  runner and batched learner connector, one remote env runner sampling the next batch while the learner
  updates: ``PPOSettings(overlap_sampling=True)``), the same sampling then updating in the driver
  (``overlap_sampling=False``), with RLlib's env runner (``batched_sampling=False`` too), with RLlib's env
  runner and default per-episode PPO learner pipeline (``batched_learner=False`` too), and overlapped at
  minibatch 4,096;
* RLlib self-play on the batched rules along the same paths (its batched env runner plays whole games);
* the partner pool sampling then updating on 1 and on 2 remote env runners (one CPU each); "sampling/s per
  runner" is the env steps each runner samples per second of sampling, the figure to plan a cluster with
  (not shown for overlapped rows, whose sampling timer only measures the wait for the batch);
* the native trainer (``--framework native``) at the same batch, as it runs (torch on every core) and
  with torch on one thread.

"Where the time goes" splits the default setup's iteration into sampling (overlapped: waiting for the
batch), the learner connector and the SGD steps (RLlib's own timers, mean per timed iteration), and gives
the CPU time per iteration of the driver and of the remote env runner: unlike wall time it hardly depends
on other work on the machine, and env steps per the larger of the two is the rate with a free core each.

Training quality at equal env steps: each path trains the partner-pool and the self-play setups for ``--quality-iterations`` iterations from the same seed; the greedy learner plays
``--eval-episodes`` games against every scripted partner.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

from common import machine, write_results_section

POOL = ["boulware", "linear", "conceder", "fair_split", "tit_for_tat", "pareto"]
DEFAULT_SETUP = "default `parley train` (partner pool)"
SELF_PLAY = "RLlib self-play, league of 4"
REMOTE = "partner pool, remote env runners"
OVERLAPPED = "batched, remote env runner samples during the update"
BATCHED = "batched env runner + batched learner connector, sampling then update"
RLLIB_RUNNER = "RLlib's env runner + batched learner connector"
RLLIB = "RLlib's env runner + RLlib's PPO learner pipeline"
BIG_MINIBATCH = "batched, overlapped, minibatch 4,096"
BFLOAT16 = "batched, overlapped, learner in bfloat16"
SEQUENTIAL = {"overlap_sampling": False}
#: PPOSettings changes of each path of the default setup
PATHS = {OVERLAPPED: {"overlap_sampling": True}, BATCHED: SEQUENTIAL,
         RLLIB_RUNNER: {"batched_sampling": False, **SEQUENTIAL},
         RLLIB: {"batched_sampling": False, "batched_learner": False, **SEQUENTIAL},
         BIG_MINIBATCH: {"minibatch_size": 4096, "overlap_sampling": True},
         BFLOAT16: {"overlap_sampling": True, "precision": "bfloat16"}}
SELF_PLAY_PATHS = {path: changes for path, changes in PATHS.items() if path != BIG_MINIBATCH}


def remote_runners_cpu_s(algo) -> float:
    """CPU seconds the remote env runners' processes have used so far, summed (0 without remote runners).
    The call waits behind a sample request in flight, so it counts that request's sampling too."""
    if algo.env_runner_group.num_remote_env_runners() == 0:
        return 0.0
    return float(sum(algo.env_runner_group.foreach_env_runner(lambda runner: time.process_time(),
                                                             local_env_runner=False)))


def time_iterations(config, iterations: int) -> dict:
    """Build the algorithm, run one warm-up iteration, then time ``iterations`` more (torch on one thread).

    Besides wall time it counts CPU time: the driver's and the remote env runners' per iteration. They do
    not depend on the machine's load the way wall time does; the iteration takes at least the larger of
    the two, and about that on a machine with a free core for each process."""
    from parley.agents.training.rllib_envs import one_torch_thread

    with one_torch_thread():
        algo = config.build_algo()
        try:
            algo.train()
            runners_cpu = remote_runners_cpu_s(algo)
            driver_cpu = time.process_time()
            steps = sampling_s = connector_s = update_s = 0.0
            start = time.perf_counter()
            for _ in range(iterations):
                result = algo.train()
                steps += result["env_runners"]["num_env_steps_sampled"]
                timers = result.get("timers", {})
                sampling_s += float(timers.get("env_runner_sampling_timer", float("nan")))
                update_s += float(timers.get("learner_update_timer", float("nan")))
                connector = result.get("learners", {}).get("__all_modules__", {}).get("learner_connector", {})
                connector_s += float(connector.get("connector_pipeline_timer", float("nan")))
            seconds = time.perf_counter() - start
            driver_cpu = time.process_time() - driver_cpu
            # after the timed iterations: the request in flight stands for the one the warm-up left
            runners = max(algo.env_runner_group.num_remote_env_runners(), 1)
            runners_cpu = (remote_runners_cpu_s(algo) - runners_cpu) / runners
            return {"steps": int(steps), "seconds": seconds, "rate": steps / seconds,
                    "cpu": {"driver": driver_cpu / iterations, "runner": runners_cpu / iterations},
                    "sampling_rate": steps / sampling_s if sampling_s > 0 else float("nan"),
                    "split": {"iteration": seconds / iterations, "sampling": sampling_s / iterations,
                              "learner connector": connector_s / iterations,
                              "SGD": (update_s - connector_s) / iterations, "steps": steps / iterations}}
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


def training_quality(config, module_id: str, iterations: int, episodes: int, seed: int):
    """Train ``iterations`` iterations; the env steps and the greedy learner's row against every scripted
    partner."""
    from parley.agents.evaluation import evaluate_policy
    from parley.agents.partners.scripted import list_partners
    from parley.agents.training.rllib import current_policy
    from parley.agents.training.rllib_envs import one_torch_thread

    with one_torch_thread():
        algo = config.build_algo()
        try:
            steps = 0
            for _ in range(iterations):
                steps += algo.train()["env_runners"]["num_env_steps_sampled"]
            policy = current_policy(algo, module_id, "mlp", {}, 36)
        finally:
            algo.stop()
    rows = evaluate_policy(policy, list(list_partners()), episodes=episodes, seed=seed)
    return steps, rows[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per row (3)")
    parser.add_argument("--quality-iterations", type=int, default=4,
                        help="training iterations per row of the quality check (4; 0 skips it)")
    parser.add_argument("--eval-episodes", type=int, default=100, help="games per scripted partner (100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-append", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    import ray

    from parley.agents.training import rllib_setups as setups
    from parley.agents.training.rllib import ray_log_to_file

    where = machine()

    def settings(**changes) -> setups.PPOSettings:
        return setups.PPOSettings(num_envs_per_env_runner=128, **changes)

    rows: list[tuple[str, str, dict | float]] = []
    quality = []
    with tempfile.TemporaryDirectory() as logs, ray_log_to_file(Path(logs) / "ray.log"):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            for path, changes in PATHS.items():
                rows.append((DEFAULT_SETUP, path, time_iterations(
                    setups.partner_pool_config(POOL, settings=settings(**changes), seed=args.seed), args.iterations)))
            for path, changes in SELF_PLAY_PATHS.items():
                rows.append((SELF_PLAY, path, time_iterations(
                    setups.self_play_config(settings=settings(**changes), seed=args.seed), args.iterations)))
            for runners in (1, 2):
                rows.append((REMOTE, f"{runners} runner{'s' * (runners > 1)}", time_iterations(
                    setups.partner_pool_config(POOL, settings=settings(num_env_runners=runners, **SEQUENTIAL),
                                               seed=args.seed), args.iterations)))
            if args.quality_iterations > 0:
                for path, changes in PATHS.items():
                    config = setups.partner_pool_config(POOL, settings=settings(**changes), seed=args.seed)
                    quality.append((DEFAULT_SETUP, path, *training_quality(
                        config, "default_policy", args.quality_iterations, args.eval_episodes, args.seed)))
                for path, changes in SELF_PLAY_PATHS.items():
                    config = setups.self_play_config(settings=settings(**changes), seed=args.seed)
                    quality.append((SELF_PLAY, path, *training_quality(
                        config, setups.LEARNER, args.quality_iterations, args.eval_episodes, args.seed)))
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
            per_runner = "--" if "overlapped" in path or path == OVERLAPPED else \
                f"{value['sampling_rate'] / runners:,.0f}"
            lines.append(f"| {name} | {path} | {value['rate']:,.0f} | {per_runner} |")
        else:
            lines.append(f"| {name} | {path} | {value:,.0f} | -- |")
    rate = {(n, p): v["rate"] for n, p, v in rows if isinstance(v, dict)}
    ratios = (f"Ratios in this run, default setup: overlapped / sampling then update "
              f"{rate[(DEFAULT_SETUP, OVERLAPPED)] / rate[(DEFAULT_SETUP, BATCHED)]:.2f}x (self-play "
              f"{rate[(SELF_PLAY, OVERLAPPED)] / rate[(SELF_PLAY, BATCHED)]:.2f}x); "
              f"batched runner + connector / RLlib's defaults "
              f"{rate[(DEFAULT_SETUP, BATCHED)] / rate[(DEFAULT_SETUP, RLLIB)]:.2f}x (the batched learner connector "
              f"alone {rate[(DEFAULT_SETUP, RLLIB_RUNNER)] / rate[(DEFAULT_SETUP, RLLIB)]:.2f}x); minibatch 4,096 / "
              f"2,048 {rate[(DEFAULT_SETUP, BIG_MINIBATCH)] / rate[(DEFAULT_SETUP, OVERLAPPED)]:.2f}x (both overlapped); "
              f"learner in bfloat16 / float32 {rate[(DEFAULT_SETUP, BFLOAT16)] / rate[(DEFAULT_SETUP, OVERLAPPED)]:.2f}x "
              f"(self-play {rate[(SELF_PLAY, BFLOAT16)] / rate[(SELF_PLAY, OVERLAPPED)]:.2f}x, both overlapped); self-play, "
              f"batched / RLlib's defaults {rate[(SELF_PLAY, BATCHED)] / rate[(SELF_PLAY, RLLIB)]:.2f}x; "
              f"2 env runners / 1 {rate[(REMOTE, '2 runners')] / rate[(REMOTE, '1 runner')]:.2f}x.")
    table = "\n".join(lines) + "\n\n" + ratios
    split = {path: (v["split"], v["cpu"]) for n, path, v in rows if n == DEFAULT_SETUP and path != BIG_MINIBATCH}
    table += ("\n\nWhere the time of one default iteration goes (s per iteration: RLlib's timers, then CPU time of "
              "the driver and of the remote env runner; the last column, env steps per the larger CPU time, is "
              "the rate with a free core for each process):\n\n"
              "| path | env steps | sampling (overlapped: waiting for it) | learner connector | SGD | whole iteration "
              "| driver CPU | env runner CPU | env steps/s with free cores |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    for path, (part, cpu) in split.items():
        table += (f"| {path} | {part['steps']:,.0f} | {part['sampling']:.2f} | {part['learner connector']:.2f} | "
                  f"{part['SGD']:.2f} | {part['iteration']:.2f} | {cpu['driver']:.2f} | {cpu['runner']:.2f} | "
                  f"{part['steps'] / max(cpu['driver'], cpu['runner']):,.0f} |\n")
    if quality:
        table += ("\nTraining quality at equal env steps (learner's greedy play vs every scripted partner, "
                  f"{args.eval_episodes} games each, seed {args.seed}):\n\n"
                  "| setup | path | env steps | score | partner score | agreement % | Pareto % |\n"
                  "|---|---|---:|---:|---:|---:|---:|\n")
        for name, path, steps, row in quality:
            table += (f"| {name} | {path} | {steps:,} | {row.score:.2f} | {row.partner_score:.2f} | "
                      f"{100 * row.agreement:.1f} | {100 * row.pareto:.1f} |\n")
    print(table)
    if not args.no_append:
        note = ("Each row times `algo.train()` over the same run, so rows compare at the same machine load; "
                "the load average is in the machine line. Ray is started with 2 CPUs.")
        write_results_section("RLlib throughput", where, note, table)


if __name__ == "__main__":
    main()
