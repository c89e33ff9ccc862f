"""Learning benchmark: how fast PPO learns to negotiate, RLlib vs SB3 vs native PPO, Compacter vs full
fine-tuning.

    python benchmarks/learning.py                       # every part
    python benchmarks/learning.py --parts beat speed    # only some parts
    python benchmarks/learning.py --no-append           # print only

``beat``      PPO (RLlib, then parley's native trainer), mlp backbone, against the whole scripted suite
              (partner drawn per episode). After every iteration (at most every 5 training seconds)
              the greedy policy plays ``--eval-episodes`` games against each scripted partner; the clock
              stops when its mean score beats the best scripted partner's mean score against the same
              suite on the same contexts. Evaluation time is left out of the clock. Also reports env
              steps/s during training and writes the learning curve to ``benchmarks/learning_curve.png``.
``speed``     RLlib vs Stable-Baselines3 MaskablePPO vs native PPO on the same env-step budget: wall time,
              env steps/s, greedy score against the suite.
``adapters``  a transformer policy (d_model ``--d-model``, ``--n-layers`` blocks) pretrained against
              ``--pretrain-partners`` (by default boulware, linear, tit_for_tat; never the new pool) is
              fine-tuned against conceder, fair_split and pareto from the same weights, with the same
              seed, env-step budget and PPO settings: once with every weight trained, then once per
              ``--adapter-arms`` placement with Compacter adapters only. Reports per arm the return
              ratio (adapters / full), the gain recovered ((adapters - before) / (full - before)) and the
              trainable fraction over every parameter of the policy, heads included; greedy score over
              ``--adapter-eval-episodes`` games per new-pool partner. ``--finetune-seeds N`` repeats each
              fine-tuning with N seeds and reports mean +- standard error, ratios paired by seed;
              ``--pretrain-seeds`` repeats the study from several pretrained policies and adds each arm's
              mean over them. ``--pretrain-dir DIR`` keeps each pretraining in DIR/seed-S with its
              finished fine-tunings (``finetune_results.json``), which a later run with the same
              settings reuses (fine-tuning is deterministic given its seeds); ``--full-scores`` passes
              full fine-tuning's scores measured before. ``--full-epochs``/``--adapter-epochs`` and
              ``--full-batch``/``--adapter-batch`` set each arm's PPO epochs per batch and env steps per
              batch; ``--pretrain-lr`` and ``--pretrain-steps`` the pretraining's rate and length.

Each part writes its own section of ``benchmarks/RESULTS.md`` (date, command, machine, table), replacing
the section an earlier run of that part wrote. docs/studies/compacter.md reports the adapters study.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from common import machine, write_results_section

from parley.agents.evaluation import evaluate_policy
from parley.agents.partners.scripted import list_partners, make_partner
from parley.agents.training.run import CONFIG_FILE, DEFAULT_ADAPTER_LR, DEFAULT_LR, TrainConfig, train

DEFAULT_EPOCHS = TrainConfig.num_epochs
DEFAULT_BATCH = TrainConfig.train_batch_size

HERE = Path(__file__).resolve().parent
CURVE = HERE / "learning_curve.png"
EVAL_SEED = 777  # contexts for every comparison against the suite (never the corpus test split)
OLD_POOL = ["boulware", "linear", "tit_for_tat"]
NEW_POOL = ["conceder", "fair_split", "pareto"]
# Each part writes its own section of RESULTS.md, replaced when that part runs again.
PART_TITLES = {"beat": "Learning: time to beat the best scripted partner",
               "speed": "Learning: RLlib vs SB3 vs native PPO on one env-step budget",
               "adapters": "Learning: Compacter vs full fine-tuning"}


def suite_score(policy, episodes: int, partners="suite") -> float:
    return evaluate_policy(policy, partners, episodes=episodes, seed=EVAL_SEED)[-1].score


def best_scripted(episodes: int) -> tuple[str, float]:
    scores = {name: suite_score(make_partner(name, seed=1), episodes) for name in list_partners()}
    best = max(scores, key=scores.get)
    return best, scores[best]


FRAMEWORK_LABELS = {"rllib": "RLlib PPO", "native": "native PPO", "sb3": "SB3 MaskablePPO"}
EVAL_INTERVAL_S = 5.0  # training seconds between evaluations (native iterations take about one second)


def time_to_beat(workdir: Path, target: float, episodes: int, max_minutes: float, lr: float,
                 framework: str = "rllib") -> dict:
    curve: list[tuple[float, int, float]] = []
    eval_seconds = 0.0
    last_eval = -EVAL_INTERVAL_S
    beaten: dict = {}

    def on_iteration(row, current_policy) -> bool:
        nonlocal eval_seconds, last_eval
        train_clock = row["elapsed_s"] - eval_seconds  # the evaluations so far sit inside elapsed_s
        if train_clock - last_eval < EVAL_INTERVAL_S:
            return train_clock > 60 * max_minutes
        last_eval = train_clock
        tick = time.perf_counter()
        score = suite_score(current_policy(), episodes)
        eval_seconds += time.perf_counter() - tick
        curve.append((train_clock, row["env_steps"], score))
        print(f"  iter {row['iteration']:3d}  {train_clock:6.0f} s  {row['env_steps']:8d} steps  "
              f"{row['steps_per_s']:6.0f} steps/s  greedy score vs suite {score:.2f} (target {target:.2f})", flush=True)
        if score > target and not beaten:
            beaten.update(seconds=train_clock, steps=row["env_steps"], iteration=row["iteration"])
            return True
        return train_clock > 60 * max_minutes

    result = train(TrainConfig(framework=framework, partners=["suite"], iterations=100_000,
                               out=str(workdir / f"beat-{framework}"), lr=lr, checkpoint_every=100_000, live=False),
                   evaluate=False, on_iteration=on_iteration)
    steps_per_s = result.env_steps / max(result.elapsed_s - eval_seconds, 1e-9)
    return {"curve": curve, "beaten": beaten, "steps_per_s": steps_per_s, "env_steps": result.env_steps,
            "iter_rates": [r["steps_per_s"] for r in result.history]}


def plot_curve(curves: dict[str, list[tuple[float, int, float]]], target: float, best_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for framework, curve in curves.items():
        ax.plot([c[0] / 60 for c in curve], [c[2] for c in curve], marker="o", markersize=3,
                label=f"{FRAMEWORK_LABELS[framework]} (mlp), greedy")
    ax.axhline(target, color="grey", linestyle="--", label=f"best scripted partner ({best_name})")
    ax.set_xlabel("training wall-clock (minutes, 2 CPU cores)")
    ax.set_ylabel("mean score vs scripted suite")
    ax.set_title("Learning to negotiate against the scripted suite")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(CURVE, dpi=120)
    plt.close(fig)


def framework_run(framework: str, workdir: Path, steps: int, episodes: int) -> dict:
    start = time.perf_counter()
    result = train(TrainConfig(framework=framework, partners=["suite"], timesteps=steps, out=str(workdir / framework),
                               checkpoint_every=10_000, live=False), evaluate=False)
    wall = time.perf_counter() - start
    from parley.agents.nn.torch_policy import TorchPolicy

    score = suite_score(TorchPolicy.load(result.policy_dir, device="cpu"), episodes)
    return {"wall": wall, "steps": result.env_steps, "rate": result.env_steps / max(result.elapsed_s, 1e-9),
            "score": score}


def finished_pretraining(directory: Path, steps: int, seed: int, backbone_config: dict, lr: float,
                         partners: list[str]):
    """The policy of a pretraining in ``directory`` that ran its ``steps`` env steps with ``seed``,
    learning rate ``lr``, the transformer shape ``backbone_config`` and the partner pool ``partners``,
    else None (an interrupted one, or one from another seed, rate, shape or pool, does not count)."""
    from parley.agents.nn.torch_policy import load_policy

    try:
        policy = load_policy(directory, device="cpu")
        config = TrainConfig.from_yaml(directory / CONFIG_FILE)
    except (FileNotFoundError, ValueError):
        return None
    if config.seed != seed or config.lr != lr or sorted(config.partners) != sorted(partners):
        return None
    if any(config.backbone_config.get(k) != v for k, v in backbone_config.items()):
        return None
    return policy if policy.metadata.get("env_steps", 0) >= steps else None


@dataclass
class AdapterStudy:
    """Settings of the adapters part: one pretraining against ``pretrain_partners`` (OLD_POOL unless
    told), then fine-tuning arms against NEW_POOL from its weights."""

    pretrain_steps: int
    finetune_steps: int
    episodes: int  # games per new-pool partner per evaluation
    backbone_config: dict  # the pretrained transformer's shape
    arms: dict[str, dict]  # label -> Compacter options
    full_lr: float
    adapter_lr: float
    full_epochs: int = DEFAULT_EPOCHS  # PPO passes over each batch
    adapter_epochs: int = DEFAULT_EPOCHS
    full_batch: int = DEFAULT_BATCH  # env steps per PPO batch
    adapter_batch: int = DEFAULT_BATCH
    framework: str = "rllib"
    finetune_seeds: int = 1
    first_seed: int = 0
    pretrain_seed: int = 0
    pretrain_lr: float = DEFAULT_LR
    pretrain_partners: list[str] = field(default_factory=lambda: list(OLD_POOL))
    pretrain_dir: Path | None = None  # keep the pretraining here, and reuse a finished one found here
    full_scores: list[float] | None = None  # full fine-tuning's scores per seed, measured before: not rerun


def ppo_batches(epochs: int, batch: int) -> dict:
    """PPO settings of one arm: ``epochs`` passes over batches of ``batch`` env steps, in minibatches of
    the usual size or the whole batch if it is smaller."""
    return {"num_epochs": epochs, "train_batch_size": batch,
            "minibatch_size": min(TrainConfig.minibatch_size, batch)}


class FinetuneCache:
    """Fine-tuning results kept beside a pretraining (``--pretrain-dir``), keyed by every setting that
    changes them, so that a rerun or a second study from the same pretraining reuses finished arms.
    Fine-tuning is deterministic given its seeds, so a kept result is what a rerun would measure."""

    FILE = "finetune_results.json"

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def _load(self) -> dict:
        return json.loads(self.path.read_text()) if self.path and self.path.is_file() else {}

    @staticmethod
    def _key(settings: dict) -> str:
        return json.dumps(settings, sort_keys=True)

    def get(self, settings: dict) -> dict | None:
        return self._load().get(self._key(settings))

    def put(self, settings: dict, result: dict) -> None:
        if self.path is None:
            return
        # Read again before writing: another study may have added results from the same pretraining.
        results = {**self._load(), self._key(settings): result}
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(results, indent=1))
        partial.replace(self.path)


def finetune_key(study: AdapterStudy, label: str, extra: dict, seed: int) -> dict:
    """Every setting that changes one fine-tuning's result: what a kept result is found by. A second
    process may fine-tune some arms from the same ``--pretrain-dir`` and keep them under this key."""
    return {"arm": label, **extra, "finetune_steps": study.finetune_steps, "seed": seed,
            "framework": study.framework, "episodes": study.episodes}


def finetune_arms(study: AdapterStudy) -> dict[str, dict]:
    """The study's fine-tuning arms, full fine-tuning first: label -> its TrainConfig settings."""
    arms = {"full": {"lr": study.full_lr, **ppo_batches(study.full_epochs, study.full_batch)}}
    arms.update({label: {"adapters": "compacter", "backbone_config": options, "lr": study.adapter_lr,
                         **ppo_batches(study.adapter_epochs, study.adapter_batch)}
                 for label, options in study.arms.items()})
    return arms


def finetune_once(study: AdapterStudy, pretrain_out: Path, out: Path, seed: int, extra: dict) -> dict:
    """Fine-tune the pretrained policy against NEW_POOL once (``extra``: the arm's TrainConfig settings)
    and measure it: score against the new pool, wall time, env steps, and the trainable count read off
    the fine-tuned network with exactly the freezing training applied."""
    from parley.agents.nn.compacter import (
        adapter_modules,
        count_parameters,
        freeze_all_but_adapters,
        trained_beside_adapters,
    )
    from parley.agents.nn.torch_policy import TorchPolicy

    start = time.perf_counter()
    tuned = train(TrainConfig(framework=study.framework, partners=NEW_POOL, init_from=str(pretrain_out),
                              timesteps=study.finetune_steps, seed=seed, out=str(out),
                              checkpoint_every=10_000, live=False, **extra), evaluate=False)
    policy = TorchPolicy.load(tuned.policy_dir, device="cpu")
    result = {"score": suite_score(policy, study.episodes, NEW_POOL), "wall": time.perf_counter() - start,
              "steps": tuned.env_steps}
    if "adapters" in extra:
        freeze_all_but_adapters(policy.model)
        adapted = [name for name, _ in adapter_modules(policy.model)]
        also = trained_beside_adapters(policy.model)
        result["trained"] = (f"adapters on {', '.join(adapted)} (PHM fast weights and biases, shared slow "
                             "weights)" + (f", plus {', '.join(also)} trained in full" if also else ""))
    result["trainable"], result["total"] = count_parameters(policy.model)
    return result


def adapters_run(workdir: Path, study: AdapterStudy) -> dict:
    """Pretrain against ``study.pretrain_partners``, then fine-tune against NEW_POOL from the same
    weights: once with every weight trained (unless ``study.full_scores`` gives its scores), then once
    per adapter arm, each with fine-tuning seeds
    ``study.first_seed .. study.first_seed + study.finetune_seeds - 1``.

    Every arm gets the same env-step budget and PPO settings; only the learning rate, the number of PPO
    epochs per batch and the batch size may differ (full fine-tuning its own, adapters theirs). The
    trainable count is read off each fine-tuned adapter network itself, with exactly the freezing
    training applied, over every parameter of the policy (backbone, policy and value heads).
    """
    from parley.agents.nn.compacter import count_parameters
    from parley.agents.nn.torch_policy import TorchPolicy

    start = time.perf_counter()
    pretrain_out = study.pretrain_dir or workdir / "pretrain"
    base_policy = finished_pretraining(pretrain_out, study.pretrain_steps, study.pretrain_seed,
                                       study.backbone_config, study.pretrain_lr, study.pretrain_partners)
    reused = base_policy is not None
    if reused:
        print(f"reusing the pretraining in {pretrain_out}", flush=True)
    else:
        # Results kept beside an earlier pretraining in this folder do not belong to the new one.
        (pretrain_out / FinetuneCache.FILE).unlink(missing_ok=True)
        base = train(TrainConfig(framework=study.framework, backbone="transformer",
                                 backbone_config=study.backbone_config, partners=study.pretrain_partners,
                                 timesteps=study.pretrain_steps, seed=study.pretrain_seed,
                                 lr=study.pretrain_lr, out=str(pretrain_out), checkpoint_every=10_000,
                                 live=False), evaluate=False)
        base_policy = TorchPolicy.load(base.policy_dir, device="cpu")
    rows = {"pretrain_wall": time.perf_counter() - start, "pretrain_reused": reused, "arms": {},
            "pretrain_steps": base_policy.metadata.get("env_steps", study.pretrain_steps)}
    rows["before"] = suite_score(base_policy, study.episodes, NEW_POOL)
    arms = finetune_arms(study)
    if study.full_scores:
        # Full fine-tuning is deterministic given the pretraining and seeds, so its earlier scores stand.
        trainable, _ = count_parameters(base_policy.model)
        rows["full"] = {"score": float(np.mean(study.full_scores)), "scores": list(study.full_scores),
                        "wall": float("nan"), "steps": study.finetune_steps, "trainable": trainable, "reused": True}
        del arms["full"]
    cache = FinetuneCache(pretrain_out / FinetuneCache.FILE if study.pretrain_dir else None)
    for index, (label, extra) in enumerate(arms.items()):
        runs, kept = [], 0
        for seed in range(study.first_seed, study.first_seed + study.finetune_seeds):
            key = finetune_key(study, label, extra, seed)
            run = cache.get(key)
            if run is None:
                run = finetune_once(study, pretrain_out, workdir / f"ft-{index}-{seed}", seed, extra)
                cache.put(key, run)
            else:
                kept += 1
                print(f"reusing {label} seed {seed} from {cache.path}", flush=True)
            runs.append(run)
            print(f"{label} seed {seed}: {run['score']:.3f}", flush=True)
        scores = [r["score"] for r in runs]
        arm = {"score": float(np.mean(scores)), "scores": scores, "kept": kept,
               "wall": float(np.mean([r["wall"] for r in runs])),
               "steps": int(np.mean([r["steps"] for r in runs])),
               "trainable": runs[-1]["trainable"], "total": runs[-1]["total"]}
        if label == "full":
            rows["full"] = arm
        else:
            rows["arms"][label] = {**arm, "trained": runs[-1]["trained"]}
    return rows


def mean_se(values: list[float], digits: int = 2) -> str:
    """``mean`` for one value, ``mean ± standard error`` for several."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1) / np.sqrt(len(values)):.{digits}f}"


def ppo_text(epochs: int, batch: int) -> str:
    """One arm's PPO settings in words, for its table row."""
    return f"{epochs} PPO epochs per batch of {batch:,} steps"


def kept_text(arm: dict) -> str:
    """Says how many of an arm's runs were kept from an earlier study from the same pretraining."""
    if not arm.get("kept"):
        return ""
    return f" ({arm['kept']} of {len(arm['scores'])} run(s) kept from an earlier study, {FinetuneCache.FILE})"


def adapter_rows(ad: dict, args: argparse.Namespace,
                 pretrain_seed: int) -> tuple[list[str], dict[str, tuple[float, float]]]:
    """Table rows of one adapter study (one pretrained policy), and each arm's mean return ratio and
    gain recovered (percent) over its fine-tuning seeds."""
    before, full = ad["before"], ad["full"]
    seeds = args.finetune_seeds
    seed_range = f"{args.first_finetune_seed}-{args.first_finetune_seed + seeds - 1}"
    # Several pretrained policies share one table: every row of a study names its pretraining.
    tag = f" [pretraining seed {pretrain_seed}]" if len(args.pretrain_seeds) > 1 else ""
    pretrain_time = "reused from --pretrain-dir" if ad["pretrain_reused"] else f"{ad['pretrain_wall']:.0f} s"
    lines = [f"| {FRAMEWORK_LABELS[args.adapter_framework]}, transformer d_model {args.d_model}, 4 heads, "
             f"{args.n_layers} layer(s): score vs new pool before fine-tuning{tag} | {before:.2f} | pretrained "
             f"{ad['pretrain_steps']:,} steps (seed {pretrain_seed}, lr {args.pretrain_lr:g}) vs "
             f"{','.join(args.pretrain_partners)} ({pretrain_time}); new "
             f"pool {','.join(NEW_POOL)}; {100 * before / full['score']:.1f}% of full fine-tuning's score already |",
             f"| full fine-tuning: score vs new pool{tag} | {mean_se(full['scores'])} | "
             + ("given with --full-scores (measured before with the same pretraining and seeds); "
                if full.get("reused")
                else f"{full['steps']:,} env steps, {full['wall']:.0f} s{kept_text(full)}; ")
             + f"lr {args.full_lr:g}, {ppo_text(args.full_epochs, args.full_batch)}; "
               f"all {full['trainable']:,} parameters |"]
    means = {}
    for label, arm in ad["arms"].items():
        # Paired by fine-tuning seed: arm and full fine-tuning with the same seed form one ratio.
        ratios = [100 * a / f for a, f in zip(arm["scores"], full["scores"])]
        recovered = [100 * (a - before) / (f - before) if f != before else float("nan")
                     for a, f in zip(arm["scores"], full["scores"])]
        means[label] = (float(np.mean(ratios)), float(np.mean(recovered)))
        lines.append(f"| {label}, adapters only: score vs new pool{tag} | {mean_se(arm['scores'])} | "
                     f"{arm['steps']:,} env steps, {arm['wall']:.0f} s{kept_text(arm)}; "
                     f"lr {args.adapter_lr:g}, {ppo_text(args.adapter_epochs, args.adapter_batch)}; "
                     f"same seed(s) and other PPO settings; {arm['trained']} |")
        lines.append(f"| {label}: return ratio (adapters / full) / gain recovered{tag} | {mean_se(ratios, 1)}% / "
                     f"{mean_se(recovered, 0)}% | target >= 95% return ratio; gain recovered = (adapters - "
                     f"before) / (full - before); {args.adapter_eval_episodes} games per new-pool partner"
                     f"{f'; mean ± SE over fine-tuning seeds {seed_range}, paired by seed' if seeds > 1 else ''} |")
        lines.append(f"| {label}: trainable fraction{tag} | {100 * arm['trainable'] / arm['total']:.3f}% | "
                     f"{arm['trainable']:,} of {arm['total']:,} policy parameters (backbone + policy and "
                     "value heads); target <= 0.1% |")
    return lines, means


ADAPTER_PLACEMENTS = {"ff": "the feed-forward sublayer", "attn": "the attention sublayer",
                      "norm": "the final LayerNorm", "policy_head": "the policy head's logits"}


def adapter_arm(spec: str, variant: str, n: int, rank: int, reduction: int) -> tuple[str, dict]:
    """(label, Compacter options) of one ``--adapter-arms`` entry: ``default`` or comma-separated targets,
    optionally followed by ``@parallel`` (adapters beside their modules, from the modules' inputs), then
    ``:REDUCTION`` for that arm (e.g. ``policy_head:8``), then ``+NAME,NAME`` for parameters trained in
    full beside the adapters (e.g. ``policy_head+value_head.bias``)."""
    spec, _, also = spec.partition("+")
    also_train = [name for name in also.split(",") if name]
    spec, _, own_reduction = spec.partition(":")
    if own_reduction:
        if not own_reduction.isdigit() or int(own_reduction) < 1:
            raise SystemExit(f"--adapter-arms {spec}:{own_reduction}: the reduction after ':' must be a positive "
                             "integer")
        reduction = int(own_reduction)
    spec, _, placement = spec.partition("@")
    if placement not in ("", "parallel"):
        raise SystemExit(f"--adapter-arms {spec}@{placement}: the only placement after '@' is 'parallel'")
    options = {"n": n, "rank": rank, "reduction": reduction, "plus_plus": variant == "compacter++"}
    shape = f"n {n}, rank {rank}, reduction {reduction}"
    extra = f", {' and '.join(also_train)} trained" if also_train else ""
    if also_train:
        options["also_train"] = also_train
    if placement:
        options["placement"] = placement
    if spec == "default":
        beside = ", in parallel" if placement else ""
        return f"{'Compacter++' if options['plus_plus'] else 'Compacter'} ({shape}{beside}{extra})", options
    targets = [t for t in spec.split(",") if t]
    # Beside the policy head an adapter reads the head's input features, not its logits.
    names = {**ADAPTER_PLACEMENTS, "policy_head": "the policy head"} if placement else ADAPTER_PLACEMENTS
    places = " + ".join(names.get(t, t) for t in targets)
    return f"Compacter {'beside' if placement else 'on'} {places} ({shape}{extra})", {**options, "target_modules": targets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=["beat", "speed", "adapters"],
                        choices=["beat", "speed", "adapters"])
    parser.add_argument("--eval-episodes", type=int, default=100, help="games per scripted partner per evaluation")
    parser.add_argument("--max-minutes", type=float, default=15.0, help="cap on the time-to-beat run")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    parser.add_argument("--speed-steps", type=int, default=100_000, help="env-step budget of RLlib vs SB3 vs native")
    parser.add_argument("--frameworks", nargs="+", default=["rllib", "native"], choices=["rllib", "native"],
                        help="trainers raced against the best scripted partner in the 'beat' part")
    parser.add_argument("--pretrain-steps", type=int, default=80_000,
                        help="adapters part: env steps of the transformer pretraining against the first pool")
    parser.add_argument("--pretrain-partners", nargs="+", default=OLD_POOL, metavar="PARTNER",
                        help="adapters part: the pretraining's partner pool (none of the new pool's: the "
                             "study measures adapting to partners the policy has not met)")
    parser.add_argument("--pretrain-lr", type=float, default=DEFAULT_LR,
                        help="adapters part: learning rate of the pretraining (wider transformers may need a "
                             "smaller one)")
    parser.add_argument("--finetune-steps", type=int, default=40_000,
                        help="adapters part: env steps of each fine-tuning arm (the same for both)")
    parser.add_argument("--pretrain-dir", default=None,
                        help="adapters part: keep each pretraining run in DIR/seed-S, or reuse the finished one found "
                             "there (several adapter studies from one pretraining)")
    parser.add_argument("--pretrain-seeds", type=int, nargs="+", default=[0],
                        help="adapters part: seeds of the pretraining; with several, every arm is fine-tuned from "
                             "each pretrained policy and the table adds its mean over them")
    parser.add_argument("--first-finetune-seed", type=int, default=0,
                        help="adapters part: the first fine-tuning seed (fresh seeds confirm a choice made on others)")
    parser.add_argument("--finetune-seeds", type=int, default=1,
                        help="adapters part: fine-tune every arm with N seeds (from --first-finetune-seed) from the "
                             "same pretraining and report mean +- standard error over them")
    parser.add_argument("--full-lr", type=float, default=DEFAULT_LR, help="learning rate of full fine-tuning")
    parser.add_argument("--full-epochs", type=int, default=DEFAULT_EPOCHS,
                        help="adapters part: PPO epochs per batch of full fine-tuning")
    parser.add_argument("--full-scores", type=float, nargs="+", default=None,
                        help="adapters part, one pretraining seed: full fine-tuning's scores for the fine-tuning "
                             "seeds, measured before from the same pretraining, --full-epochs and "
                             "--full-batch; full fine-tuning is then not rerun (it is deterministic given "
                             "its seeds) and the table says so")
    parser.add_argument("--adapter-framework", default="rllib", choices=["rllib", "native"],
                        help="trainer of the adapters part (pretraining and both fine-tuning arms)")
    parser.add_argument("--adapter-lr", type=float, default=DEFAULT_ADAPTER_LR,
                        help="learning rate of adapter-only fine-tuning (few weights take a larger step)")
    parser.add_argument("--adapter-epochs", type=int, default=DEFAULT_EPOCHS,
                        help="adapters part: PPO epochs per batch of adapter-only fine-tuning")
    parser.add_argument("--full-batch", type=int, default=DEFAULT_BATCH,
                        help="adapters part: env steps per PPO batch of full fine-tuning")
    parser.add_argument("--adapter-batch", type=int, default=DEFAULT_BATCH,
                        help="adapters part: env steps per PPO batch of adapter-only fine-tuning")
    parser.add_argument("--d-model", type=int, default=256, help="transformer width for the adapter comparison")
    parser.add_argument("--n-layers", type=int, default=1, help="transformer blocks for the adapter comparison")
    parser.add_argument("--adapter-variant", choices=["compacter++", "compacter"], default="compacter++",
                        help="compacter++: adapters after the feed-forward sublayers only; compacter: also after "
                             "self-attention")
    parser.add_argument("--adapter-arms", nargs="+", default=["default", "policy_head@parallel:16"],
                        help="adapter arms fine-tuned from the same pretrained policy: 'default' (the variant's "
                             "placement) or comma-separated module names, e.g. policy_head (an adapter on the "
                             "action logits), norm (the backbone's final LayerNorm), ff,policy_head; '@parallel' puts "
                             "the adapters beside those modules (policy_head@parallel: from the head's input "
                             "features to a change of its logits); ':N' sets "
                             "that arm's reduction (e.g. policy_head:8, a bottleneck of 32 on the 252 logits); "
                             "'+NAME,...' trains those parameters in full beside the adapters and counts them "
                             "(e.g. policy_head+value_head.bias: the critic's bias follows the new pool's returns)")
    parser.add_argument("--adapter-n", type=int, default=4, help="PHM n (number of Kronecker summands)")
    parser.add_argument("--adapter-rank", type=int, default=1, help="rank of the fast PHM weights")
    parser.add_argument("--adapter-reduction", type=int, default=32, help="bottleneck = d_model / reduction")
    parser.add_argument("--adapter-eval-episodes", type=int, default=1000,
                        help="adapters part: games per partner of the new pool per evaluation (the gap being "
                             "measured is a few tenths of a point, so more games than elsewhere)")
    parser.add_argument("--no-append", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    if args.full_scores and (len(args.full_scores) != args.finetune_seeds or len(args.pretrain_seeds) > 1):
        raise SystemExit(f"--full-scores takes one score per fine-tuning seed ({args.finetune_seeds}) and one "
                         f"pretraining seed; got {len(args.full_scores)} scores for pretraining seeds "
                         f"{args.pretrain_seeds}")
    from parley.agents.partners.pool import resolve_partner_names

    try:
        args.pretrain_partners = resolve_partner_names(args.pretrain_partners)
    except ValueError as error:
        raise SystemExit(f"--pretrain-partners: {error}") from None
    if set(args.pretrain_partners) & set(NEW_POOL):
        raise SystemExit(f"--pretrain-partners may not include the fine-tuning pool ({', '.join(NEW_POOL)}); "
                         f"got {', '.join(args.pretrain_partners)}")
    where = machine()
    import ray

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    workdir = Path(tempfile.mkdtemp(prefix="parley-learning-"))
    tables: dict[str, list[str]] = {}  # part -> its table's lines, each part its own RESULTS.md section
    try:
        best_name, target = best_scripted(args.eval_episodes)
        head = ["| measure | value | target / note |", "|---|---:|---|",
                f"| best scripted partner vs suite (mean score) | {target:.2f} | {best_name} |"]
        if "beat" in args.parts:
            lines = tables["beat"] = list(head)
            curves = {}
            for framework in args.frameworks:
                label = FRAMEWORK_LABELS[framework]
                print(f"{label}: time to beat {best_name} ({target:.2f}) ...", flush=True)
                beat = time_to_beat(workdir, target, args.eval_episodes, args.max_minutes, args.lr, framework)
                curves[framework] = beat["curve"]
                if beat["beaten"]:
                    b = beat["beaten"]
                    lines.append(f"| {label} (mlp) time to beat it | {b['seconds'] / 60:.1f} min | target <= 15 min; "
                                 f"{b['steps']:,} env steps, iteration {b['iteration']} |")
                else:
                    last = beat["curve"][-1] if beat["curve"] else (0.0, 0, float("nan"))
                    lines.append(f"| {label} (mlp) time to beat it | not within {args.max_minutes:g} min | target "
                                 f"<= 15 min; reached {last[2]:.2f} after {last[1]:,} env steps |")
                best_score = max(c[2] for c in beat["curve"])
                lines.append(f"| {label} best greedy score vs suite | {best_score:.2f} | over {len(beat['curve'])} "
                             "evaluations |")
                lines.append(f"| {label} env steps/s during training (incl. PPO updates) | "
                             f"{beat['steps_per_s']:,.0f} | target >= 5,000; best iteration "
                             f"{max(beat['iter_rates']):,.0f}/s |")
            plot_curve(curves, target, best_name)
            lines.append(f"| learning curve | `benchmarks/{CURVE.name}` | |")
        if "speed" in args.parts:
            lines = tables["speed"] = list(head)
            print("RLlib vs SB3 vs native on the same budget ...", flush=True)
            rl = framework_run("rllib", workdir, args.speed_steps, args.eval_episodes)
            sb = framework_run("sb3", workdir, args.speed_steps, args.eval_episodes)
            na = framework_run("native", workdir, args.speed_steps, args.eval_episodes)
            lines.append(f"| RLlib, {rl['steps']:,} env steps: wall / steps/s / score | {rl['wall']:.0f} s / "
                         f"{rl['rate']:,.0f} / {rl['score']:.2f} | batched vector env, 128 games |")
            lines.append(f"| SB3 MaskablePPO, {sb['steps']:,} env steps: wall / steps/s / score | {sb['wall']:.0f} s / "
                         f"{sb['rate']:,.0f} / {sb['score']:.2f} | 16 single envs (DummyVecEnv) |")
            lines.append(f"| native PPO, {na['steps']:,} env steps: wall / steps/s / score | {na['wall']:.0f} s / "
                         f"{na['rate']:,.0f} / {na['score']:.2f} | whole games in lockstep, 2,048 per iteration |")
            lines.append(f"| RLlib / SB3 steps/s | {rl['rate'] / sb['rate']:.2f}x | same budget, same backbone |")
            lines.append(f"| native / RLlib steps/s | {na['rate'] / rl['rate']:.2f}x | same budget, same backbone |")
        if "adapters" in args.parts:
            lines = tables["adapters"] = list(head)
            print("Compacter vs full fine-tuning ...", flush=True)
            cfg = {"d_model": args.d_model, "n_heads": 4, "n_layers": args.n_layers}
            arms = dict(adapter_arm(spec, args.adapter_variant, args.adapter_n, args.adapter_rank,
                                    args.adapter_reduction) for spec in args.adapter_arms)
            per_policy: dict[str, list[tuple[float, float]]] = {}
            for pretrain_seed in args.pretrain_seeds:
                ad = adapters_run(workdir / f"seed-{pretrain_seed}", AdapterStudy(
                    pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps,
                    episodes=args.adapter_eval_episodes, backbone_config=cfg, arms=arms, full_lr=args.full_lr,
                    adapter_lr=args.adapter_lr, full_epochs=args.full_epochs, adapter_epochs=args.adapter_epochs,
                    full_batch=args.full_batch, adapter_batch=args.adapter_batch,
                    framework=args.adapter_framework, finetune_seeds=args.finetune_seeds,
                    first_seed=args.first_finetune_seed, pretrain_seed=pretrain_seed,
                    pretrain_lr=args.pretrain_lr, pretrain_partners=args.pretrain_partners,
                    full_scores=args.full_scores,
                    pretrain_dir=Path(args.pretrain_dir) / f"seed-{pretrain_seed}" if args.pretrain_dir else None))
                study_lines, study_means = adapter_rows(ad, args, pretrain_seed)
                lines.extend(study_lines)
                for label, means in study_means.items():
                    per_policy.setdefault(label, []).append(means)
            if len(args.pretrain_seeds) > 1:
                seeds_text = " / ".join(str(s) for s in args.pretrain_seeds)
                for label, means in per_policy.items():
                    ratios, recovered = zip(*means)
                    lines.append(f"| {label}: return ratio / gain recovered, mean over pretrained policies | "
                                 f"{mean_se(list(ratios), 1)}% / {mean_se(list(recovered), 0)}% | ± is the SE over "
                                 f"pretrained policies (seeds {seeds_text}): "
                                 f"{' / '.join(f'{r:.1f}' for r in ratios)}%; target >= 95% |")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        ray.shutdown()
    for part, lines in tables.items():
        table = "\n".join(lines)
        print(table)
        if not args.no_append:
            write_results_section(
                PART_TITLES[part], where,
                f"Scores are points out of 10, greedy policy, {args.eval_episodes} seeded games per scripted "
                f"partner (contexts sampled from the rules, seed {EVAL_SEED}); steps/s counts the learner's "
                "env steps including the PPO updates. The machine is shared, so throughput varies with load.",
                table)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
