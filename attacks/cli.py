"""``parley bench attacks``: the attack x defense grid of :mod:`parley.attacks.bench` from the shell."""

from __future__ import annotations

import json

import typer
from rich.console import Console

console = Console()


def split_names(names: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``: a comma-separated option's names."""
    return tuple(n.strip() for n in names.split(",") if n.strip())


def bench_group(app: typer.Typer) -> typer.Typer:
    """The ``bench`` command group of ``app``, created by the first domain that adds a benchmark to it."""
    bench = next((g.typer_instance for g in app.registered_groups if g.name == "bench"), None)
    if bench is None:
        bench = typer.Typer(help="Benchmarks over grids of agents, attacks and defenses.", no_args_is_help=True)
        app.add_typer(bench, name="bench")
    return bench


def ray_address_option() -> typer.models.OptionInfo:
    """``--address`` / ``--ray-address``: a Ray cluster to run a bench's cells on."""
    return typer.Option(None, "--address", "--ray-address",
                        help="Run cells as tasks on this Ray cluster ('auto' finds a local one).")


def executor_option() -> typer.models.OptionInfo:
    """``--executor``: where a bench's cells run."""
    return typer.Option("auto", help="auto, ray, process or serial (auto: ray with --address, processes with "
                                     "--workers > 1, else serial).")


def _options(pairs: list[str], kind: str) -> dict[str, dict[str, object]]:
    """``["sleeper_agent.steps=60", ...]`` -> ``{"sleeper_agent": {"steps": 60}}`` (values read as JSON
    when they parse, else kept as strings)."""
    out: dict[str, dict[str, object]] = {}
    for item in pairs:
        name, dot, rest = item.partition(".")
        key, eq, raw = rest.partition("=")
        if not dot or not eq or not key:
            raise typer.BadParameter(f"{item!r}: expected {kind}.OPTION=VALUE, e.g. sleeper_agent.steps=60")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(name, {})[key] = value
    return out


def bench_attacks(
    dataset: str = typer.Option("mnist5k", help="mnist5k (default: 5,000 real 28x28 digits), digits (8x8, fast "
                                                 "smoke setting), synthetic, cifar10 or mnist (the last two need "
                                                 "--data-path)."),
    attacks: str = typer.Option("sleeper_agent,badnets,htba,random", help="Comma-separated attack names."),
    defenses: str = typer.Option("none,spectral", help="Comma-separated defense names."),
    pairs: int = typer.Option(10, min=1, help="Source/target class pairs (shared by every cell); the table "
                                              "gives means over pairs with a 95% confidence interval."),
    seeds: int = typer.Option(1, min=1, help="Seeds per pair."),
    pair_seed: int = typer.Option(0, help="Seed of the source/target pair draw."),
    workers: int = typer.Option(1, min=1, help="Cells run in parallel."),
    address: str | None = ray_address_option(),
    executor: str = executor_option(),
    out: str = typer.Option("bench-attacks", "--out", "-o", help="Folder for results.csv, summary.md and asr.png."),
    budget: float = typer.Option(0.05, help="Poisoned share of the training set, in (0, 1]."),
    eps: float = typer.Option(16 / 255, show_default="16/255", help="l-infinity bound of clean-label perturbations in [0, 1] pixel "
                                             "units, in (0, 1]; stamp attacks (badnets, clean_label) paste "
                                             "a full-contrast trigger."),
    trigger_placement: str = typer.Option("random", help="random (a fresh place per image) or fixed (the "
                                                         "bottom-right corner, as BackdoorBench's BadNets)."),
    victim: str = typer.Option("small_cnn", help="Victim architecture."),
    width: int | None = typer.Option(None, min=1, help="Victim width (channels of its first layer)."),
    recipe: str = typer.Option("dataset", help="Victim schedule: tiny, dataset or paper."),
    epochs: int | None = typer.Option(None, min=1, help="Stretch or squeeze the recipe to this many epochs."),
    train_subset: int | None = typer.Option(None, min=1, help="Keep this many training images per class."),
    data_path: str | None = typer.Option(None, help="Folder of local CIFAR-10 / MNIST files."),
    attack_option: list[str] = typer.Option([], "--attack-option", help="ATTACK.OPTION=VALUE, repeatable "
                                                                        "(e.g. sleeper_agent.steps=60)."),
    defense_option: list[str] = typer.Option([], "--defense-option", help="DEFENSE.OPTION=VALUE, repeatable."),
    threads: int = typer.Option(1, min=1, help="torch threads per cell."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Run every attack x defense x pair x seed cell as a poisoning_v0 episode; skip cells already in
    OUT/results.csv; write a table of means over pairs with 95% confidence intervals, and plots."""
    from parley.attacks.bench import BenchConfig, run_grid, summarize, summary_markdown, validate

    config = BenchConfig(
        dataset=dataset, attacks=split_names(attacks), defenses=split_names(defenses), pairs=pairs, seeds=seeds,
        pair_seed=pair_seed, budget=budget, eps=eps, victim=victim,
        victim_kwargs={"width": width} if width else {}, recipe=recipe,
        epochs=epochs, attack_kwargs=_options(attack_option, "ATTACK"),
        defense_kwargs=_options(defense_option, "DEFENSE"),
        dataset_kwargs={"path": data_path} if data_path else {}, train_subset=train_subset, workers=workers,
        executor=executor, ray_address=address, threads_per_worker=threads, device=device, out=out,
        trigger_placement=trigger_placement)
    try:
        validate(config)
        rows = run_grid(config, progress=not quiet)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    failed = sum(1 for r in rows if r.get("error"))
    console.print(summary_markdown(summarize(rows, config), config))
    console.print(f"results: {out}/results.csv, {out}/summary.md, {out}/asr.png")
    if failed:
        console.print(f"[yellow]{failed} cell(s) failed; their errors are in results.csv and a rerun retries them[/]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``parley bench attacks`` (creating the ``bench`` group unless another domain already did)."""
    bench_group(app).command("attacks")(bench_attacks)
