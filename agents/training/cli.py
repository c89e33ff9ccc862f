"""``parley train`` and ``parley eval`` (registered by :mod:`parley.agents.cli`).

Every ``train`` flag defaults to None here so that only flags given on the command line override the
``--config`` YAML file (or, with ``--resume``, the run's saved configuration); the real defaults live
in :class:`parley.agents.training.run.TrainConfig`.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def train_command(
    framework: str | None = typer.Option(None, "--framework", help="rllib (default), sb3, or native (parley's own single-process PPO, fastest on one machine)."),
    backbone: str | None = typer.Option(None, "--backbone", "-b",
                                        help="mlp (default), transformer, compacter or invertible_attention."),
    backbone_config: str | None = typer.Option(None, "--backbone-config",
                                               help="Backbone options as inline YAML, e.g. '{d_model: 32}'."),
    partners: str | None = typer.Option(None, "--partners", "-p",
                                        help="Comma-separated scripted partners drawn per episode, or 'suite'."),
    self_play: bool | None = typer.Option(None, "--self-play/--no-self-play",
                                          help="Self-play against a league of frozen snapshots (RLlib)."),
    independent: bool | None = typer.Option(None, "--independent/--no-independent",
                                            help="Two independent learners, one per seat (RLlib)."),
    iterations: int | None = typer.Option(None, "--iterations", "-i", help="Training iterations (default 15)."),
    timesteps: int | None = typer.Option(None, "--timesteps", "-t", help="Stop after this many env steps."),
    num_env_runners: int | None = typer.Option(None, "--num-env-runners",
                                               help="Remote RLlib env runners (0: sample in the driver)."),
    num_envs: int | None = typer.Option(None, "--num-envs", help="Games per env runner, batched (default 128)."),
    address: str | None = typer.Option(None, "--address", help="Join an existing Ray cluster, e.g. 'auto'."),
    device: str | None = typer.Option(None, "--device", help="auto (default), cpu or cuda: where the learner runs."),
    config: Path | None = typer.Option(None, "--config", help="YAML file with any of these settings."),
    out: str | None = typer.Option(None, "--out", "-o", help="Run directory (default runs/<setup>-<time>)."),
    resume: bool | None = typer.Option(None, "--resume", help="Continue the run in --out from its last checkpoint."),
    seed: int | None = typer.Option(None, "--seed", "-s", help="Seed (default 0)."),
    init_from: str | None = typer.Option(None, "--init-from", help="Start from a saved policy or run."),
    adapters: str | None = typer.Option(None, "--adapters",
                                        help="'compacter': train only Compacter adapters of --init-from's transformer."),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every", help="Checkpoint every N iterations."),
    eval_episodes: int | None = typer.Option(None, "--eval-episodes", help="Games per partner in the final eval."),
    league_size: int | None = typer.Option(None, "--league-size", help="Frozen snapshots in the self-play league."),
    league_threshold: float | None = typer.Option(None, "--league-threshold",
                                                  help="Mean score at which the learner joins the league."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate [default: 1e-3; 1e-2 with --adapters]."),
    train_batch_size: int | None = typer.Option(None, "--train-batch-size", help="Env steps per PPO iteration."),
    minibatch_size: int | None = typer.Option(None, "--minibatch-size", help="PPO minibatch size."),
    num_epochs: int | None = typer.Option(None, "--num-epochs", help="PPO epochs per iteration."),
    live: bool | None = typer.Option(None, "--live/--no-live", help="Live table while training."),
) -> None:
    """Train a negotiation policy with PPO; ends with an evaluation table and the checkpoint path."""
    import yaml

    from parley.agents.training.run import TrainConfigError, resolve_train_config, train

    parsed_backbone_config = None
    if backbone_config is not None:
        try:
            parsed_backbone_config = yaml.safe_load(backbone_config)
        except yaml.YAMLError as err:
            _fail(f"--backbone-config is not valid YAML: {err}")
        if not isinstance(parsed_backbone_config, dict):
            _fail("--backbone-config must be a mapping, e.g. '{d_model: 32, n_layers: 2}'")
    cli = dict(framework=framework, backbone=backbone, backbone_config=parsed_backbone_config, partners=partners,
               self_play=self_play, independent=independent, iterations=iterations, timesteps=timesteps,
               num_env_runners=num_env_runners, num_envs_per_env_runner=num_envs, address=address, device=device,
               out=out, resume=resume, seed=seed, init_from=init_from, adapters=adapters,
               checkpoint_every=checkpoint_every, eval_episodes=eval_episodes, league_size=league_size,
               league_threshold=league_threshold, lr=lr, train_batch_size=train_batch_size,
               minibatch_size=minibatch_size, num_epochs=num_epochs, live=live)
    try:
        resolved = resolve_train_config(cli, config)
    except TrainConfigError as err:
        _fail(str(err))
    console.print(f"training: {resolved.framework}, setup {resolved.setup}, backbone {resolved.backbone}, "
                  f"partners {','.join(resolved.partners)} -> {resolved.out}")
    try:
        result = train(resolved, console=console)
    except TrainConfigError as err:
        _fail(str(err))
    from parley.agents.evaluation import eval_table

    console.print(eval_table(result.eval_rows, title=f"Greedy policy vs each partner ({resolved.eval_episodes} games)"))
    console.print(f"trained {result.iterations} iterations, {result.env_steps} env steps in {result.elapsed_s:.0f} s")
    console.print(f"checkpoint: {result.checkpoint}")
    console.print(f"policy:     {result.policy_dir}  (parley.agents.load_policy('{result.run_dir}'))")


def eval_command(
    path: str = typer.Argument(..., help="A training run, a checkpoint, a policy directory or an SB3 zip."),
    partners: str = typer.Option("suite", "--partners", "-p", help="Comma-separated scripted partners, or 'suite'."),
    episodes: int = typer.Option(200, "--episodes", "-n", min=1, help="Games against each partner."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed for contexts and first movers."),
    max_turns: int = typer.Option(10, "--max-turns", min=1, help="Acts per game before it ends with no deal."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the rows to this CSV."),
) -> None:
    """Evaluate a trained policy against scripted partners: score, agreement, Pareto, Nash product."""
    from parley.agents.evaluation import eval_table, evaluate_policy, write_eval_csv
    from parley.agents.nn.torch_policy import load_policy
    from parley.agents.partners.pool import resolve_partner_names

    try:
        names = resolve_partner_names(partners)
    except ValueError as err:
        _fail(str(err))
    if not Path(path).exists():
        _fail(f"no run, checkpoint or policy at {path}")
    try:
        policy = load_policy(path)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    rows = evaluate_policy(policy, names, episodes=episodes, seed=seed, max_turns=max_turns)
    console.print(eval_table(rows, title=f"{path}: greedy policy vs each partner ({episodes} games)"))
    if out is not None:
        console.print(f"wrote {write_eval_csv(rows, out, policy=path)}")


COMMANDS = [("train", train_command), ("eval", eval_command)]
