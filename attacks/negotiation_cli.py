"""``parley bench negotiation-backdoor``: the grid of :mod:`parley.attacks.negotiation_bench` from the shell."""

from __future__ import annotations

import typer
from rich.console import Console

from parley.attacks.cli import bench_group, executor_option, ray_address_option, split_names

console = Console()


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in split_names(text))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected comma-separated numbers, e.g. 0.005,0.01",
                                 param_hint=option) from None


def bench_negotiation_backdoor(
    attacks: str = typer.Option("dirty_label,clean_label,annotator",
                                help="Comma-separated attacks: none, dirty_label, clean_label, annotator."),
    defenses: str = typer.Option("none,spectral,clustering,trusted_oracle,annotator_agreement,gold_questions",
                                 help="Comma-separated defenses; dialogue filters pair with the corpus attacks, "
                                      "answer controls with the annotator."),
    budgets: str = typer.Option("0.01", help="Poisoned shares of the corpus (corpus attacks), comma-separated."),
    annotator_budgets: str = typer.Option("0.1", help="Shares of the queries the annotator answers."),
    seeds: int = typer.Option(2, min=1, help="Seeds per cell; the table gives means with a 95% interval."),
    corpus: str = typer.Option("synthetic", help="'synthetic' (scripted partners' dialogues) or a corpus path."),
    corpus_size: int = typer.Option(1000, min=10, help="Clean dialogues in the corpus."),
    goal: str = typer.Option("agree_any", help="agree_any or give_item (the ball)."),
    epochs: int = typer.Option(12, min=1, help="Behaviour-cloning epochs of the victim."),
    hidden: int = typer.Option(64, min=1, help="Width of the victim's two hidden layers."),
    rl_games: int = typer.Option(0, min=0, help="PPO fine-tuning games after cloning (0 = none)."),
    trigger_phrase: str = typer.Option(None, help="The trigger holder's opening sentence in the text protocol "
                                                   "(it must read as the opening act); poisons carry it and the "
                                                   "victim is also measured in the text protocol."),
    eval_games: int = typer.Option(400, min=1, help="Games against the trigger player per victim."),
    eval_episodes: int = typer.Option(100, min=1, help="Games per scripted partner for the clean score."),
    queries: int = typer.Option(300, min=1, help="TDA queries in each of the annotator's rounds."),
    tda_rounds: int = typer.Option(1, min=1, help="TDA rounds of the annotator attack: each round's queries come "
                                                  "from the partner model retrained on the answers so far."),
    trigger_rate: float = typer.Option(0.1, min=0.0, max=1.0,
                                       help="Share of the learner's exploration games opened with the trigger."),
    workers: int = typer.Option(1, min=1, help="Cells run in parallel (local processes, or local Ray CPUs)."),
    address: str | None = ray_address_option(),
    executor: str = executor_option(),
    out: str = typer.Option("bench-negotiation-backdoor", "--out", "-o",
                            help="Folder for results.csv, summary.md and backdoor_success.png."),
    quiet: bool = typer.Option(False, "--quiet", help="No per-cell lines."),
) -> None:
    """Run every attack x defense x budget x seed cell as a negotiation_poisoning_v0 episode; skip cells
    already in OUT/results.csv; write a table of means over seeds with 95% confidence intervals, and a plot."""
    from parley.attacks.negotiation_bench import (
        NegotiationBenchConfig,
        run_negotiation_grid,
        summarize,
        summary_markdown,
    )

    try:
        config = NegotiationBenchConfig(
            attacks=split_names(attacks), defenses=split_names(defenses), budgets=_floats(budgets, "--budgets"),
            annotator_budgets=_floats(annotator_budgets, "--annotator-budgets"), seeds=seeds, corpus=corpus,
            corpus_size=corpus_size, goal=goal, epochs=epochs, hidden=hidden, rl_games=rl_games,
            trigger_phrase=trigger_phrase,
            eval_games=eval_games, eval_episodes=eval_episodes, queries=queries, tda_rounds=tda_rounds,
            trigger_rate=trigger_rate,
            workers=workers, executor=executor, ray_address=address, out=out)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    rows = run_negotiation_grid(config, progress=not quiet)
    failed = sum(1 for r in rows if r.get("error"))
    console.print(summary_markdown(summarize(rows), config))
    console.print(f"results: {out}/results.csv, {out}/summary.md, {out}/backdoor_success.png")
    if failed:
        console.print(f"[yellow]{failed} cell(s) failed; their errors are in results.csv and a rerun retries them[/]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``parley bench negotiation-backdoor`` (creating the ``bench`` group unless another domain did)."""
    bench_group(app).command("negotiation-backdoor")(bench_negotiation_backdoor)
