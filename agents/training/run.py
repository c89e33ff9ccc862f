"""``parley train``: PPO for negotiation agents with RLlib (new API stack), Stable-Baselines3 or natively.

Everything a run needs is one :class:`TrainConfig`; the command line, a YAML file (``--config``) and
``--resume`` all fill it, and :meth:`TrainConfig.validate` rejects bad input before any work starts.

A run directory (``--out runs/NAME``) holds::

    config.yaml                      the resolved configuration (what --resume reads back)
    progress.csv                     one row per iteration: steps, steps/s, score, agreement, Pareto, ...
    tb/                              the same numbers for TensorBoard
    checkpoints/iter_000010/         algorithm state (RLlib checkpoint or SB3 zip) + policy/ + meta.json
    policy/                          the latest policy as a TorchPolicy directory
    eval.csv                         the final evaluation against the partner suite
    heldout.csv                      the final evaluation against held-out partner families
                                     (parley.agents.heldout; gap to the best scripted partner)

``parley.agents.load_policy(run_dir)`` (or a checkpoint directory) loads the trained policy without Ray.

Setups (RLlib): ``partners`` -- one learner against scripted partners drawn per episode (default);
``self-play`` -- against a league of frozen snapshots; ``independent`` -- two learners, one per seat.
Stable-Baselines3 trains ``MaskablePPO`` against the partner pool only; so does ``native``, parley's own
single-process masked PPO on the batched rules (:mod:`parley.agents.training.native`), the fastest
on one machine.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from parley.envs.negotiation import DEFAULT_MAX_TURNS, observation_size

FRAMEWORKS = ("rllib", "sb3", "native")
#: The packages (parley's ``rl`` extra) each framework imports; ``native`` needs only the core dependencies.
FRAMEWORK_MODULES = {"rllib": ("ray",), "sb3": ("stable_baselines3", "sb3_contrib")}
ADAPTERS = ("compacter",)
DEFAULT_PARTNERS = ("boulware", "linear", "conceder", "fair_split", "tit_for_tat", "pareto")
#: The training budget when neither --iterations nor --timesteps is given, in env steps (the learner's
#: decisions, about 200,000 games): against the default partners this is where the policy passes the
#: best scripted partner on the training families' validation games by about one point (docs/training.md).
DEFAULT_TIMESTEPS = 550_000
#: Partners a ``family:NAME`` entry of ``--partners`` adds to the population (parley.agents.training.population).
DEFAULT_FAMILY_MEMBERS = 6
#: How each game's partner is drawn from the population (prioritised: native trainer only).
PARTNER_SAMPLING = ("uniform", "prioritised")
DEFAULT_LR = 1e-3
# A few hundred adapter weights want a larger step than a whole network (docs/studies/compacter.md).
DEFAULT_ADAPTER_LR = 1e-2
CHECKPOINTS = "checkpoints"
POLICY_DIR = "policy"
CONFIG_FILE = "config.yaml"
PROGRESS_FILE = "progress.csv"
META_FILE = "meta.json"


class TrainConfigError(ValueError):
    """A training configuration that cannot run; the message says what is wrong and what is allowed."""


@dataclass
class TrainConfig:
    """Every setting of a training run (each is a ``parley train`` flag and a key of ``--config`` YAML)."""

    framework: str = "rllib"
    backbone: str = "mlp"
    backbone_config: dict[str, Any] = field(default_factory=dict)
    partners: list[str] = field(default_factory=lambda: list(DEFAULT_PARTNERS))
    family_members: int = DEFAULT_FAMILY_MEMBERS  # partners drawn per family:NAME entry of partners
    partner_sampling: str = "uniform"  # or "prioritised": by the learner's gap to the best scripted partner
    self_play: bool = False
    independent: bool = False
    iterations: int | None = None
    timesteps: int | None = None
    num_env_runners: int = 0
    num_envs_per_env_runner: int = 128
    address: str | None = None
    device: str = "auto"
    out: str | None = None
    resume: bool = False
    seed: int = 0
    init_from: str | None = None
    adapters: str | None = None
    checkpoint_every: int = 5
    eval_episodes: int = 200
    eval_partners: str = "suite"
    heldout_episodes: int | None = None  # games per held-out partner family (None: eval_episodes; 0: none)
    league_size: int = 4
    league_threshold: float = 5.0
    max_turns: int = DEFAULT_MAX_TURNS
    lr: float | None = None  # None: DEFAULT_LR, or DEFAULT_ADAPTER_LR when only adapters train
    entropy_coeff: float = 0.01
    reward_scale: float = 0.1
    train_batch_size: int = 8192
    minibatch_size: int = 2048
    num_epochs: int = 4
    opponent_model_coef: float = 0.0  # native: weight of the auxiliary opponent-model loss (0: no head)
    opponent_model_target: str = "reply"  # native: what the head predicts (ppo.OPPONENT_MODEL_TARGETS)
    live: bool = True
    verbose: bool = False  # RLlib: Ray's and RLlib's log on the console instead of only in runs/NAME/ray.log
    overlap_sampling: bool = True  # RLlib: sample the next batch on a remote env runner during the update
    precision: str = "float32"  # RLlib and native: the update's matrix products (parley.utils.PRECISIONS)

    @property
    def setup(self) -> str:
        return "self-play" if self.self_play else "independent" if self.independent else "partners"

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "the configuration") -> TrainConfig:
        """Build from a dict (YAML keys may use dashes); unknown keys are an error naming the allowed ones."""
        clean = {str(k).replace("-", "_"): v for k, v in (values or {}).items()}
        unknown = sorted(set(clean) - set(cls.field_names()))
        if unknown:
            raise TrainConfigError(f"unknown setting(s) {unknown} in {source}; allowed: {', '.join(cls.field_names())}")
        if isinstance(clean.get("partners"), str):
            clean["partners"] = [p.strip() for p in clean["partners"].split(",") if p.strip()]
        return cls(**clean)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise TrainConfigError(f"no config file at {path}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise TrainConfigError(f"{path} is not valid YAML: {err}") from None
        if not isinstance(values, dict):
            raise TrainConfigError(f"{path} must hold a mapping of settings, got {type(values).__name__}")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------------------------------------

    def validate(self) -> TrainConfig:
        """Check every setting; return a copy with defaults filled in (partners expanded, out chosen)."""
        from parley.agents.nn.backbones import backbone_config, list_backbones
        from parley.agents.partners.pool import resolve_partner_names
        from parley.agents.training.population import resolve_population
        from parley.utils import resolve_device

        if self.framework not in FRAMEWORKS:
            raise TrainConfigError(f"unknown framework {self.framework!r}; use one of {', '.join(FRAMEWORKS)}")
        missing = [m for m in FRAMEWORK_MODULES.get(self.framework, ()) if importlib.util.find_spec(m) is None]
        if missing:
            raise TrainConfigError(f"--framework {self.framework} needs {' and '.join(missing)} (not installed): "
                                   "install parley's rl extra (pip install 'parley[rl]'), or train with "
                                   "--framework native, which needs neither Ray nor Stable-Baselines3")
        backbones = list_backbones()
        if self.backbone not in backbones:
            raise TrainConfigError(f"unknown backbone {self.backbone!r}; available: {', '.join(backbones)}")
        if not isinstance(self.backbone_config, dict):
            raise TrainConfigError(f"backbone_config must be a mapping, got {type(self.backbone_config).__name__}")
        if self.adapters is None:
            try:
                backbone_config(self.backbone, **{k: v for k, v in self.backbone_config.items()
                                                  if k not in ("device", "bf16", "layout")})
            except (TypeError, ValueError) as err:
                raise TrainConfigError(str(err)) from None
        try:
            partners = resolve_population(self.partners)
            if self.eval_partners != "suite":
                resolve_partner_names(self.eval_partners)
        except ValueError as err:
            raise TrainConfigError(str(err)) from None
        if self.self_play and self.independent:
            raise TrainConfigError("choose one setup: --self-play or --independent, not both")
        if self.framework in ("sb3", "native"):
            what = {"sb3": "Stable-Baselines3", "native": "the native trainer"}[self.framework]
            if self.self_play or self.independent:
                raise TrainConfigError(f"{what} trains against the partner pool only; --self-play and "
                                       "--independent need --framework rllib")
            if self.address is not None or self.num_env_runners:
                raise TrainConfigError("--address and --num-env-runners are Ray settings; they need --framework rllib")
        if self.partner_sampling not in PARTNER_SAMPLING:
            raise TrainConfigError(f"unknown partner sampling {self.partner_sampling!r}; use one of "
                                   f"{', '.join(PARTNER_SAMPLING)}")
        if not (isinstance(self.opponent_model_coef, (int, float)) and math.isfinite(self.opponent_model_coef)
                and self.opponent_model_coef >= 0):
            raise TrainConfigError(f"opponent-model-coef must be a number >= 0 (0: off), got {self.opponent_model_coef!r}")
        from parley.agents.training.ppo import OPPONENT_MODEL_TARGETS

        if self.opponent_model_target not in OPPONENT_MODEL_TARGETS:
            raise TrainConfigError(f"unknown opponent-model target {self.opponent_model_target!r}; use one of "
                                   f"{', '.join(OPPONENT_MODEL_TARGETS)}")
        if self.opponent_model_coef > 0 and self.framework != "native":
            raise TrainConfigError("--opponent-model-coef needs --framework native (the auxiliary opponent-model "
                                   f"head is trained by parley's own PPO), not --framework {self.framework}")
        from parley.utils import PRECISIONS

        if self.precision not in PRECISIONS:
            raise TrainConfigError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if self.precision != "float32" and self.framework == "sb3":
            raise TrainConfigError("--precision needs --framework rllib or native (Stable-Baselines3 trains in "
                                   "float32)")
        if self.partner_sampling == "prioritised" and self.framework != "native":
            raise TrainConfigError("--partner-sampling prioritised needs --framework native (RLlib and "
                                   "Stable-Baselines3 draw partners uniformly)")
        for name in ("iterations", "timesteps"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise TrainConfigError(f"--{name} must be at least 1, got {value}")
        positive = ("num_envs_per_env_runner", "checkpoint_every", "eval_episodes", "league_size", "max_turns",
                    "train_batch_size", "minibatch_size", "num_epochs")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise TrainConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.heldout_episodes is not None and self.heldout_episodes < 0:
            raise TrainConfigError(f"heldout-episodes must be 0 (no held-out table) or more, got {self.heldout_episodes}")
        if self.num_env_runners < 0:
            raise TrainConfigError(f"--num-env-runners must be 0 or more, got {self.num_env_runners}")
        if self.minibatch_size > self.train_batch_size:
            raise TrainConfigError(f"minibatch-size ({self.minibatch_size}) cannot exceed train-batch-size "
                                   f"({self.train_batch_size})")
        lr = self.lr if self.lr is not None else DEFAULT_ADAPTER_LR if self.adapters else DEFAULT_LR
        for name, value in (("lr", lr), ("reward_scale", self.reward_scale)):
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise TrainConfigError(f"{name.replace('_', '-')} must be a positive number, got {value!r}")
        try:
            resolve_device(self.device)
        except ValueError as err:
            raise TrainConfigError(str(err)) from None
        if self.adapters is not None:
            if self.adapters not in ADAPTERS:
                raise TrainConfigError(f"unknown adapters {self.adapters!r}; use one of {', '.join(ADAPTERS)}")
            if self.init_from is None:
                raise TrainConfigError("--adapters fine-tunes a trained policy: give it with --init-from CHECKPOINT")
            from parley.agents.nn.compacter import HEAD_TARGETS

            head_targets = [t for t in self.backbone_config.get("target_modules") or [] if t in HEAD_TARGETS]
            if head_targets and self.framework == "sb3":
                raise TrainConfigError(f"adapters on {', '.join(head_targets)} need parley's own actor-critic "
                                       "network (--framework rllib or native); SB3's heads are its own")
            if self.backbone_config.get("also_train") and self.framework == "sb3":
                raise TrainConfigError("also_train names parameters of parley's own actor-critic network "
                                       "(--framework rllib or native); SB3's heads are its own")
        if self.init_from is not None:
            if not Path(self.init_from).exists():
                raise TrainConfigError(f"--init-from: nothing at {self.init_from}")
            if self.resume:
                raise TrainConfigError("--resume continues a run; --init-from starts a new one: use only one")
        out = self.out or default_run_name(self)
        if self.resume:
            if self.out is None:
                raise TrainConfigError("--resume needs --out pointing at the run to continue")
            if latest_checkpoint(Path(self.out)) is None:
                raise TrainConfigError(f"--resume: no checkpoint under {Path(self.out) / CHECKPOINTS}")
        timesteps = self.timesteps
        if self.iterations is None and timesteps is None:
            timesteps = DEFAULT_TIMESTEPS
        return self.replace(partners=partners, out=str(out), timesteps=timesteps, lr=lr)


def default_run_name(config: TrainConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return str(Path("runs") / f"{config.framework}-{config.setup}-{config.backbone}-{stamp}")


def resolve_train_config(cli: dict[str, Any], config_file: str | Path | None = None) -> TrainConfig:
    """Defaults, then the YAML file (or, with ``resume``, the run's saved config), then explicit flags.

    ``cli`` holds only the flags given on the command line (None values are ignored).
    """
    given = {k: v for k, v in cli.items() if v is not None}
    base: dict[str, Any] = {}
    if config_file is not None:
        base.update(TrainConfig.from_yaml(config_file).to_dict())
    if given.get("resume"):
        out = given.get("out") or base.get("out")
        if out is None:
            raise TrainConfigError("--resume needs --out pointing at the run to continue")
        saved = Path(out) / CONFIG_FILE
        if not saved.is_file():
            raise TrainConfigError(f"--resume: {out} has no {CONFIG_FILE}; is it a parley training run?")
        base.update(TrainConfig.from_yaml(saved).to_dict())
        base["init_from"] = None
    base.update(given)
    return TrainConfig.from_dict(base).validate()


# --------------------------------------------------------------------------------------------------
# Run directory, logs, checkpoints
# --------------------------------------------------------------------------------------------------


def checkpoint_dirs(run: Path) -> list[Path]:
    root = Path(run) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"iter_\d+", p.name) and (p / META_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run: Path) -> Path | None:
    found = checkpoint_dirs(run)
    return found[-1] if found else None


class RunLogger:
    """Appends a row per iteration to ``progress.csv`` and to TensorBoard."""

    COLUMNS = ("iteration", "env_steps", "steps_per_s", "score", "partner_score", "agreement", "pareto",
               "episodes", "league_snapshots", "elapsed_s")

    def __init__(self, run: Path, *, resume_from: int = 0) -> None:
        self.path = Path(run) / PROGRESS_FILE
        if self.path.is_file() and resume_from:
            rows = [r for r in read_progress(run) if int(r["iteration"]) <= resume_from]
            self._write_all(rows)
        elif not resume_from or not self.path.is_file():
            self._write_all([])
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(run) / "tb"))
        except ImportError:  # TensorBoard is optional; the CSV carries the same numbers
            self.writer = None

    def _write_all(self, rows: list[dict]) -> None:
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in self.COLUMNS})

    def log(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.COLUMNS).writerow({k: row.get(k, "") for k in self.COLUMNS})
        if self.writer is not None:
            for key in ("score", "partner_score", "agreement", "pareto", "steps_per_s", "league_snapshots"):
                value = row.get(key)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"train/{key}", value, global_step=int(row["env_steps"]))
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_progress(run: Path) -> list[dict[str, Any]]:
    path = Path(run) / PROGRESS_FILE
    if not path.is_file():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def write_meta(directory: Path, **facts: Any) -> None:
    (Path(directory) / META_FILE).write_text(json.dumps(facts, indent=2, sort_keys=True))


def read_meta(directory: Path) -> dict[str, Any]:
    return json.loads((Path(directory) / META_FILE).read_text())


def publish_policy(run: Path, checkpoint: Path) -> Path:
    """Copy a checkpoint's policy to ``run/policy`` (what ``load_policy(run)`` loads)."""
    target = Path(run) / POLICY_DIR
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(Path(checkpoint) / POLICY_DIR, target)
    return target


# --------------------------------------------------------------------------------------------------
# Live view
# --------------------------------------------------------------------------------------------------


def _fmt(value: Any, pct: bool = False) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{100 * value:.1f}" if pct else f"{value:.2f}"


class LiveView:
    """A rich live table of the latest iterations (plain lines when output is not a terminal)."""

    def __init__(self, console, title: str, enabled: bool = True, rows: int = 12) -> None:
        self.console = console
        self.title = title
        self.rows: list[dict[str, Any]] = []
        self.max_rows = rows
        self.live = None
        self.plain = console is None or not console.is_terminal or not enabled
        if not self.plain:
            from rich.live import Live

            self.live = Live(self._table(), console=console, refresh_per_second=4)
            self.live.start()

    def _table(self):
        from rich.table import Table

        table = Table(title=self.title)
        for column in ("iter", "env steps", "steps/s", "score", "partner", "agree %", "Pareto %", "league", "time s"):
            table.add_column(column, justify="right")
        for row in self.rows[-self.max_rows:]:
            table.add_row(str(row["iteration"]), str(row["env_steps"]), f"{row['steps_per_s']:.0f}",
                          _fmt(row.get("score")), _fmt(row.get("partner_score")), _fmt(row.get("agreement"), True),
                          _fmt(row.get("pareto"), True), str(row.get("league_snapshots", "")),
                          f"{row['elapsed_s']:.0f}")
        return table

    def update(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.live is not None:
            self.live.update(self._table())
        elif self.console is not None:
            self.console.print(
                f"iter {row['iteration']:>4}  steps {row['env_steps']:>9}  {row['steps_per_s']:>7.0f}/s  "
                f"score {_fmt(row.get('score'))}  partner {_fmt(row.get('partner_score'))}  "
                f"agree {_fmt(row.get('agreement'), True)}%  Pareto {_fmt(row.get('pareto'), True)}%")

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    policy_dir: Path
    checkpoint: Path
    iterations: int
    env_steps: int
    elapsed_s: float
    history: list[dict[str, Any]]
    eval_rows: list | None = None
    heldout: Any = None  # parley.agents.heldout.HeldoutReport of the final policy


def train(config: TrainConfig, *, console=None, evaluate: bool = True,
          on_iteration: Callable[[dict[str, Any], Callable[[], Any]], bool | None] | None = None) -> TrainResult:
    """Run training as configured; returns where the policy and checkpoints are.

    ``on_iteration(row, current_policy)`` is called after every iteration with the logged row and a
    function returning the current weights as a TorchPolicy; returning True stops the run early (the
    learning benchmark uses it to stop once the policy beats the best scripted partner).
    """
    config = config.validate()
    run = Path(config.out)
    run.mkdir(parents=True, exist_ok=True)
    (run / CONFIG_FILE).write_text(yaml.safe_dump({**config.to_dict(), "resume": False}, sort_keys=False))
    if config.framework == "rllib":
        from parley.agents.training.rllib import train_rllib

        result = train_rllib(config, run, console=console, on_iteration=on_iteration)
    elif config.framework == "sb3":
        from parley.agents.training.sb3 import train_sb3

        result = train_sb3(config, run, console=console, on_iteration=on_iteration)
    else:
        from parley.agents.training.native import train_native

        result = train_native(config, run, console=console, on_iteration=on_iteration)
    if evaluate:
        from parley.agents.evaluation import evaluate_policy, write_eval_csv
        from parley.agents.nn.torch_policy import TorchPolicy

        policy = TorchPolicy.load(result.policy_dir, device="cpu")
        result.eval_rows = evaluate_policy(policy, config.eval_partners, episodes=config.eval_episodes,
                                           seed=config.seed + 12345, max_turns=config.max_turns)
        write_eval_csv(result.eval_rows, run / "eval.csv", policy=str(result.policy_dir))
        heldout_episodes = config.eval_episodes if config.heldout_episodes is None else config.heldout_episodes
        if heldout_episodes:
            from parley.agents.heldout import evaluate_heldout, write_heldout_csv

            result.heldout = evaluate_heldout(policy, episodes=heldout_episodes, seed=config.seed,
                                              max_turns=config.max_turns)
            write_heldout_csv(result.heldout, run / "heldout.csv", policy=str(result.policy_dir))
    return result


def observation_size_for(config: TrainConfig) -> int:
    return observation_size(config.max_turns)


def stop_reached(config: TrainConfig, iteration: int, env_steps: int) -> bool:
    if config.iterations is not None and iteration >= config.iterations:
        return True
    return config.timesteps is not None and env_steps >= config.timesteps


def make_row(iteration: int, env_steps: int, steps_this_iter: int, iter_seconds: float, elapsed: float,
             metrics: dict[str, Any], league_snapshots: int | str = "") -> dict[str, Any]:
    def num(key: str) -> float:
        value = metrics.get(key)
        return float(value) if isinstance(value, (int, float)) else math.nan

    return {
        "iteration": iteration,
        "env_steps": int(env_steps),
        "steps_per_s": steps_this_iter / max(iter_seconds, 1e-9),
        "score": num("score"),
        "partner_score": num("partner_score"),
        "agreement": num("agreement"),
        "pareto": num("pareto"),
        "episodes": int(metrics.get("episodes", 0) or 0),
        "league_snapshots": league_snapshots,
        "elapsed_s": elapsed,
    }


def init_policy_for(config: TrainConfig):
    """The policy ``--init-from`` names, as a TorchPolicy (CPU), or None."""
    if config.init_from is None:
        return None
    from parley.agents.nn.torch_policy import TorchPolicy, load_policy

    policy = load_policy(config.init_from, device="cpu")
    if not isinstance(policy, TorchPolicy):
        raise TrainConfigError(f"--init-from {config.init_from} is a {type(policy).__name__}, not a trained "
                               "neural policy")
    return policy


def network_plan(config: TrainConfig, init_policy) -> tuple[str, dict[str, Any], str]:
    """(backbone, backbone_config, trainable) of the network to train, given ``--init-from``/``--adapters``."""
    if init_policy is None:
        return config.backbone, dict(config.backbone_config), "all"
    if config.adapters is None:
        return init_policy.backbone_name, dict(init_policy.backbone_config), "all"
    if init_policy.backbone_name != "transformer":
        raise TrainConfigError(f"--adapters compacter fine-tunes a transformer policy; {config.init_from} has "
                               f"backbone {init_policy.backbone_name!r}")
    from parley.agents.nn.backbones import TransformerConfig
    from parley.agents.nn.compacter import CompacterBackboneConfig

    # The adapters' own options come from --backbone-config; the transformer's shape comes from the policy,
    # its layer norms stay frozen and its weights are loaded by transfer_weights, not by ``pretrained``.
    transformer_fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    adapter_fields = {f.name for f in dataclasses.fields(CompacterBackboneConfig)} - transformer_fields \
        - {"train_layer_norms", "pretrained"}
    adapter_options = {k: v for k, v in config.backbone_config.items() if k in adapter_fields}
    backbone_config = {**init_policy.backbone_config, "train_layer_norms": False, **adapter_options}
    return "compacter", backbone_config, "adapters"


def transfer_weights(source_state: dict[str, Any], target_model) -> dict[str, Any]:
    """Map a plain network's weights onto ``target_model``, which may hold Compacter adapters.

    Adapted modules keep their original weights under ``<name>.base``; adapter weights have no source
    and keep their (near-identity) initialisation, and so does an opponent-model head the source lacks
    (a source's head the target lacks is dropped: acting does not use it). Returns the full state dict
    to load.
    """
    target = target_model.state_dict()
    merged = {}
    for key, value in target.items():
        if ".adapter." in key or (key.startswith("opponent_head.") and key not in source_state):
            merged[key] = value
            continue
        source_key = key.replace(".base.", ".")
        if source_key not in source_state:
            raise TrainConfigError(f"the --init-from policy has no weight for {source_key!r}; its network "
                                   "differs from the one being trained")
        merged[key] = source_state[source_key]
    return merged
