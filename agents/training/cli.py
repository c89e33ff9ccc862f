"""``parley train`` and ``parley eval`` (registered by :mod:`parley.agents.cli`).

``parley train``'s defaults are :class:`parley.agents.training.run.TrainConfig`'s, shown in ``--help``;
only the flags given on the command line override the ``--config`` YAML file (or, with ``--resume``,
the run's saved configuration).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from parley.agents.training.run import DEFAULT_ADAPTER_LR, DEFAULT_LR, DEFAULT_TIMESTEPS, TrainConfig

console = Console()
DEFAULTS = TrainConfig()
#: Where a parameter's value came from when the user typed it (or set its environment variable).
GIVEN_SOURCES = ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


def train_command(
    ctx: typer.Context,
    framework: str = typer.Option(DEFAULTS.framework, "--framework",
                                  help="rllib, sb3, or native (parley's own single-process PPO, fastest on one "
                                       "machine, no Ray)."),
    backbone: str = typer.Option(DEFAULTS.backbone, "--backbone", "-b",
                                 help="mlp, transformer, compacter or invertible_attention."),
    backbone_config: str | None = typer.Option(None, "--backbone-config", show_default="the backbone's own",
                                               help="Backbone options as inline YAML, e.g. '{d_model: 32}'."),
    partners: str = typer.Option(",".join(DEFAULTS.partners), "--partners", "-p",
                                 help="Comma-separated population drawn per episode: scripted partners ('suite': "
                                      "all; 'default': these defaults) and training families as family:NAME "
                                      "(tactic, fair_split, pareto, stochastic, erratic)."),
    family_members: int = typer.Option(DEFAULTS.family_members, "--family-members", min=1,
                                       help="Partners with drawn parameters each family:NAME entry adds."),
    partner_sampling: str = typer.Option(DEFAULTS.partner_sampling, "--partner-sampling",
                                         help="How each game's partner is drawn: uniform, or prioritised (native: "
                                              "more often the partners the learner trails the best scripted "
                                              "partner against)."),
    self_play: bool = typer.Option(DEFAULTS.self_play, "--self-play/--no-self-play",
                                   help="Self-play against a league of frozen snapshots (RLlib)."),
    independent: bool = typer.Option(DEFAULTS.independent, "--independent/--no-independent",
                                     help="Two independent learners, one per seat (RLlib)."),
    iterations: int | None = typer.Option(None, "--iterations", "-i", min=1,
                                          show_default="none: --timesteps decides",
                                          help="Training iterations."),
    timesteps: int | None = typer.Option(None, "--timesteps", "-t", min=1,
                                         show_default=f"{DEFAULT_TIMESTEPS:,}, or none with --iterations",
                                         help="Stop after this many env steps (the learner's decisions)."),
    num_env_runners: int = typer.Option(DEFAULTS.num_env_runners, "--num-env-runners", min=0,
                                        help="Remote RLlib env runners (0: sample in the driver)."),
    num_envs: int = typer.Option(DEFAULTS.num_envs_per_env_runner, "--num-envs", min=1,
                                 help="Games per env runner, batched."),
    address: str | None = typer.Option(None, "--address", help="Join an existing Ray cluster, e.g. 'auto'."),
    device: str = typer.Option(DEFAULTS.device, "--device", help="auto, cpu or cuda: where the learner runs."),
    config: Path | None = typer.Option(None, "--config", help="YAML file with any of these settings."),
    out: Path | None = typer.Option(None, "--out", "-o", show_default="runs/FRAMEWORK-SETUP-BACKBONE-TIME",
                                    help="Run directory."),
    resume: bool = typer.Option(DEFAULTS.resume, "--resume", help="Continue the run in --out from its last checkpoint."),
    seed: int = typer.Option(DEFAULTS.seed, "--seed", "-s", help="Seed."),
    init_from: Path | None = typer.Option(None, "--init-from", help="Start from a saved policy or run."),
    adapters: str | None = typer.Option(None, "--adapters",
                                        help="'compacter': train only Compacter adapters of --init-from's transformer."),
    checkpoint_every: int = typer.Option(DEFAULTS.checkpoint_every, "--checkpoint-every", min=1,
                                         help="Checkpoint every N iterations."),
    eval_episodes: int = typer.Option(DEFAULTS.eval_episodes, "--eval-episodes", min=1,
                                      help="Games per partner in the final eval."),
    heldout_episodes: int | None = typer.Option(None, "--heldout-episodes", min=0,
                                                show_default="--eval-episodes",
                                                help="Games per held-out partner family in the final table "
                                                     "(0: none)."),
    league_size: int = typer.Option(DEFAULTS.league_size, "--league-size", min=1,
                                    help="Frozen snapshots in the self-play league."),
    league_threshold: float = typer.Option(DEFAULTS.league_threshold, "--league-threshold",
                                           help="Mean score at which the learner joins the league."),
    lr: float | None = typer.Option(None, "--lr", show_default=f"{DEFAULT_LR:g}; {DEFAULT_ADAPTER_LR:g} with --adapters",
                                    help="Learning rate."),
    train_batch_size: int = typer.Option(DEFAULTS.train_batch_size, "--train-batch-size", min=1,
                                         help="Env steps per PPO iteration."),
    minibatch_size: int = typer.Option(DEFAULTS.minibatch_size, "--minibatch-size", min=1, help="PPO minibatch size."),
    num_epochs: int = typer.Option(DEFAULTS.num_epochs, "--num-epochs", min=1, help="PPO epochs per iteration."),
    opponent_model_coef: float = typer.Option(DEFAULTS.opponent_model_coef, "--opponent-model-coef",
                                              help="Native: weight of an auxiliary head predicting the partner's "
                                                   "reply to each learner act (0: off)."),
    opponent_model_target: str = typer.Option(DEFAULTS.opponent_model_target, "--opponent-model-target",
                                              help="What that head predicts: reply (the partner's act) or agrees "
                                                   "(whether the partner agrees)."),
    live: bool = typer.Option(DEFAULTS.live, "--live/--no-live", help="Live table while training."),
    verbose: bool = typer.Option(DEFAULTS.verbose, "--verbose/--quiet",
                                 help="Show Ray's and RLlib's log on the console (otherwise only in OUT/ray.log)."),
    overlap_sampling: bool = typer.Option(DEFAULTS.overlap_sampling, "--overlap-sampling/--no-overlap-sampling",
                                          help="RLlib: a remote env runner samples the next batch while the "
                                               "learner updates on this one (weights one update older)."),
    precision: str = typer.Option(DEFAULTS.precision, "--precision",
                                  help="float32, bfloat16 or auto (bfloat16 where the CPU or GPU multiplies it "
                                       "natively): the format of the PPO update's matrix products; acting "
                                       "stays float32. RLlib and native."),
) -> None:
    """Train a negotiation policy with PPO; ends with an evaluation table and the checkpoint path."""
    import yaml

    from parley.agents.training.run import TrainConfigError, resolve_train_config, train

    parsed_backbone_config = None
    if backbone_config is not None:
        try:
            parsed_backbone_config = yaml.safe_load(backbone_config)
        except yaml.YAMLError as err:
            raise typer.BadParameter(f"not valid YAML: {err}", param_hint="--backbone-config") from None
        if not isinstance(parsed_backbone_config, dict):
            raise typer.BadParameter("must be a mapping, e.g. '{d_model: 32, n_layers: 2}'",
                                     param_hint="--backbone-config")
    values = dict(framework=framework, backbone=backbone, backbone_config=parsed_backbone_config,
                  partners=partners, family_members=family_members, partner_sampling=partner_sampling, self_play=self_play, independent=independent, iterations=iterations,
                  timesteps=timesteps, num_env_runners=num_env_runners, num_envs_per_env_runner=num_envs,
                  address=address, device=device, out=None if out is None else str(out), resume=resume, seed=seed,
                  init_from=None if init_from is None else str(init_from), adapters=adapters,
                  checkpoint_every=checkpoint_every, eval_episodes=eval_episodes, heldout_episodes=heldout_episodes,
                  league_size=league_size,
                  league_threshold=league_threshold, lr=lr, train_batch_size=train_batch_size,
                  minibatch_size=minibatch_size, num_epochs=num_epochs, opponent_model_coef=opponent_model_coef,
                  opponent_model_target=opponent_model_target, live=live, verbose=verbose, overlap_sampling=overlap_sampling,
                  precision=precision)
    parameter = {"num_envs_per_env_runner": "num_envs"}
    given = {key: value for key, value in values.items()
             if ctx.get_parameter_source(parameter.get(key, key)).name in GIVEN_SOURCES}
    try:
        resolved = resolve_train_config(given, config)
    except TrainConfigError as err:
        raise typer.BadParameter(str(err)) from None
    console.print(f"training: {resolved.framework}, setup {resolved.setup}, backbone {resolved.backbone}, "
                  f"partners {','.join(resolved.partners)} -> {resolved.out}")
    try:
        result = train(resolved, console=console)
    except TrainConfigError as err:
        raise typer.BadParameter(str(err)) from None
    from parley.agents.evaluation import eval_table

    console.print(eval_table(result.eval_rows, title=f"Greedy policy vs each partner ({resolved.eval_episodes} games)"))
    if result.heldout is not None:
        from parley.agents.heldout import heldout_table

        console.print(heldout_table(result.heldout, title="Greedy policy vs held-out partner families"))
    console.print(f"trained {result.iterations} iterations, {result.env_steps} env steps in {result.elapsed_s:.0f} s")
    console.print(f"checkpoint: {result.checkpoint}")
    console.print(f"policy:     {result.policy_dir}  (parley.agents.load_policy('{result.run_dir}'))")


def eval_command(
    path: str = typer.Argument(..., help="A training run, a checkpoint, a policy directory or an SB3 zip."),
    partners: str = typer.Option("suite", "--partners", "-p", help="Comma-separated scripted partners, or 'suite'."),
    episodes: int = typer.Option(200, "--episodes", "-n", min=1, help="Games against each partner."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed for contexts and first movers."),
    max_turns: int = typer.Option(DEFAULTS.max_turns, "--max-turns", min=1,
                                  help="Acts per game before it ends with no deal."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the rows to this CSV."),
    protocol: str = typer.Option("suite", "--protocol",
                                 help="suite: the scripted partners of --partners; heldout: the held-out partner "
                                      "families (parley.agents.heldout), with the best scripted partner on the "
                                      "same games and the gap; validation: the same table on the training "
                                      "families' validation games, for choosing settings."),
    corpus: Path | None = typer.Option(None, "--corpus",
                                       help="With --protocol heldout: a corpus directory; contexts come from its "
                                            "test.txt and a supervised corpus partner joins the families. With "
                                            "--protocol validation: a partner trained without val.txt plays on "
                                            "its contexts."),
    members: int = typer.Option(12, "--members", min=1,
                                help="With --protocol heldout: partners drawn per family."),
) -> None:
    """Evaluate a trained policy against scripted partners: score, agreement, Pareto, Nash product."""
    from parley.agents.evaluation import eval_table, evaluate_policy, write_eval_csv
    from parley.agents.nn.torch_policy import load_policy
    from parley.agents.partners.pool import resolve_partner_names

    if protocol not in ("suite", "heldout", "validation"):
        raise typer.BadParameter(f"unknown protocol {protocol!r}; use suite, heldout or validation",
                                 param_hint="--protocol")
    if corpus is not None and protocol == "suite":
        raise typer.BadParameter("--corpus is read by --protocol heldout and validation only", param_hint="--corpus")
    try:
        names = resolve_partner_names(partners)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--partners") from None
    if not Path(path).exists():
        raise typer.BadParameter(f"no run, checkpoint or policy at {path}", param_hint="PATH")
    split = "val.txt" if protocol == "validation" else "test.txt"
    if corpus is not None and not (corpus / split).is_file():
        raise typer.BadParameter(f"{corpus} holds no {split} (the corpus {protocol} split)", param_hint="--corpus")
    try:
        policy = load_policy(path)
    except (ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(str(err), param_hint="PATH") from None
    if protocol in ("heldout", "validation"):
        from parley.agents.heldout import (
            evaluate_heldout,
            evaluate_validation,
            heldout_table,
            train_corpus_partner,
            write_heldout_csv,
        )

        validation = protocol == "validation"
        corpus_partner = None
        if corpus is not None:
            console.print(f"training the supervised corpus partner on {corpus} (test dialogues"
                          f"{' and val.txt' if validation else ''} left out)")
            corpus_partner = train_corpus_partner(corpus, seed=seed, validation=validation)
        evaluate = evaluate_validation if validation else evaluate_heldout
        report = evaluate(policy, episodes=episodes, seed=seed, members=members, corpus=corpus,
                          corpus_partner=corpus_partner, max_turns=max_turns)
        which = "training families, validation games" if validation else "held-out partner families"
        console.print(heldout_table(report, title=f"{path}: greedy policy vs {which}"))
        if out is not None:
            console.print(f"wrote {write_heldout_csv(report, out, policy=path)}")
        return
    rows = evaluate_policy(policy, names, episodes=episodes, seed=seed, max_turns=max_turns)
    console.print(eval_table(rows, title=f"{path}: greedy policy vs each partner ({episodes} games)"))
    if out is not None:
        console.print(f"wrote {write_eval_csv(rows, out, policy=path)}")


COMMANDS = [("train", train_command), ("eval", eval_command)]
