"""``parley`` commands of the oracles domain: ``tda`` and ``oracle queue list|show|answer|stats``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()

oracle_app = typer.Typer(help="Expert oracles: the human-oracle query queue.", no_args_is_help=True)
queue_app = typer.Typer(help="List and answer queries waiting for a human oracle.", no_args_is_help=True)
oracle_app.add_typer(queue_app, name="queue")

DB_OPTION = typer.Option(..., "--db", help="The queue's SQLite file (e.g. RUN_DIR/oracle_queue.sqlite).")


def _open_queue(db: Path, must_exist: bool = True):
    from parley.oracles.queue import QueryQueue

    if must_exist and not db.is_file():
        raise typer.BadParameter(f"no query queue at {db}", param_hint="--db")
    return QueryQueue(db)


@queue_app.command("list")
def queue_list(db: Path = DB_OPTION,
               all_queries: bool = typer.Option(False, "--all", help="Also list answered queries."),
               limit: int = typer.Option(50, "--limit", min=1, help="At most this many rows.")) -> None:
    """List pending (or all) queries."""
    queue = _open_queue(db)
    items = queue.list(None if all_queries else "pending", limit=limit)
    table = Table(title=f"oracle queries in {db} ({queue.stats()})")
    for col in ("id", "status", "batch", "items", "turn", "responder"):
        table.add_column(col)
    for item in items:
        q = item.query
        table.add_row(item.id, item.status, item.batch or "", str(q.counts), str(len(q.history) + 1), str(q.responder))
    console.print(table)


@queue_app.command("show")
def queue_show(query_id: str = typer.Argument(..., help="A query id from `parley oracle queue list`."),
               db: Path = DB_OPTION) -> None:
    """Show a query the way an annotator needs it: items, both valuations, the dialogue, the legal acts."""
    queue = _open_queue(db)
    try:
        item = queue.get(query_id)
    except KeyError as err:
        raise typer.BadParameter(str(err), param_hint="QUERY_ID") from None
    console.print(f"[bold]{item.id}[/bold] ({item.status})")
    console.print(item.query.describe(), soft_wrap=True, markup=False)
    answers = queue.answers([item.id])
    if item.id in answers:
        console.print(f"answer: {json.dumps(answers[item.id].to_dict())}")


@queue_app.command("answer")
def queue_answer(
    query_id: str = typer.Argument(..., help="A query id from `parley oracle queue list`."),
    act: str = typer.Argument(..., help="'propose B H L', 'insist B H L' (items the responder keeps), "
                                        "'agree' or 'walk_away'."),
    db: Path = DB_OPTION,
    acceptable: bool | None = typer.Option(None, "--acceptable/--not-acceptable",
                                           help="Would the responder accept the standing proposal?"),
    counter: str | None = typer.Option(None, help="A Pareto-improving counter-offer 'B H L' (items kept)."),
    annotator: str | None = typer.Option(None, "--annotator", help="Who answers (stored with the answer)."),
) -> None:
    """Answer a query; an illegal act is rejected with the reason and nothing is stored."""
    from parley.oracles.base import IllegalOracleAnswerError
    from parley.oracles.queue import parse_act_text

    queue = _open_queue(db)
    try:
        action = parse_act_text(act)
        counter_split = None
        if counter is not None:
            parts = [p for p in counter.replace(",", " ").split() if p]
            if len(parts) != 3 or not all(p.isdigit() for p in parts):
                raise IllegalOracleAnswerError(f"--counter needs three item counts 'B H L', got {counter!r}")
            counter_split = tuple(int(p) for p in parts)
        answer = queue.answer(query_id, action, acceptable=acceptable, counter_offer=counter_split,
                              annotator=annotator or "")
    except KeyError as err:
        raise typer.BadParameter(str(err), param_hint="QUERY_ID") from None
    except (IllegalOracleAnswerError, ValueError) as err:
        raise typer.BadParameter(f"rejected, nothing stored: {err}", param_hint="ACT") from None
    console.print(f"stored: {json.dumps(answer.to_dict())}")


@queue_app.command("stats")
def queue_stats(db: Path = DB_OPTION) -> None:
    """Counts of pending and answered queries."""
    console.print(json.dumps(_open_queue(db).stats()))


def _make_oracle(spec: str, out: Path, wait_seconds: float):
    from parley.oracles.expert import ScriptedExpert
    from parley.oracles.human import HumanOracle
    from parley.oracles.model import ModelOracle

    if spec == "scripted":
        return ScriptedExpert()
    if spec.startswith("model:"):
        path = Path(spec[len("model:"):])
        if not path.exists():
            raise typer.BadParameter(f"no policy at {path}", param_hint="--oracle")
        return ModelOracle(path)
    if spec == "human" or spec.startswith("human:"):
        db = Path(spec[len("human:"):]) if spec.startswith("human:") else out / "oracle_queue.sqlite"
        return HumanOracle(db, wait_seconds=wait_seconds)
    raise typer.BadParameter(f"unknown oracle {spec!r}; use 'scripted', 'model:PATH' or 'human[:QUEUE.sqlite]'",
                             param_hint="--oracle")


def load_training_corpus(corpus: Path | None, synthetic_dialogues: int, seed: int, max_turns: int = 10):
    """The parsed corpus (or the synthetic stand-in) as dialogues, with a one-line description."""
    from parley.agents.partners.synthetic import synthetic_corpus
    from parley.envs.corpus import coverage_report, load_corpus

    if corpus is None:
        dialogues = synthetic_corpus(synthetic_dialogues, seed=seed, max_turns=max_turns)
        return dialogues, f"synthetic corpus: {len(dialogues)} scripted-partner dialogues"
    if not corpus.exists():
        raise typer.BadParameter(f"no corpus at {corpus}", param_hint="--corpus")
    dialogues = load_corpus(corpus)
    return dialogues, f"corpus {corpus}: {coverage_report(dialogues, max_turns)}"


def tda_command(
    oracle: str = typer.Option("scripted", help="'scripted', 'model:PATH' (a saved policy) or "
                                                "'human[:QUEUE.sqlite]' (default queue: OUT/oracle_queue.sqlite)."),
    rounds: int = typer.Option(5, min=1, help="Acquisition rounds."),
    queries_per_round: int = typer.Option(300, min=0, help="Oracle queries per round (the budget)."),
    out: Path = typer.Option(..., "--out", "-o",
                             help="Run directory: logs, checkpoints, final metrics (resumes if it exists)."),
    corpus: Path | None = typer.Option(None, help="Deal-or-No-Deal data.txt / val.txt or its directory; "
                                                  "without it a synthetic corpus of scripted dialogues is used."),
    selection: str = typer.Option("likelihood", help="likelihood | novelty | ensemble | random."),
    games_per_round: int = typer.Option(6_000, min=1, help="PPO training games per round."),
    oracle_weight: float = typer.Option(30.0, min=0, help="Weight of an oracle answer vs a corpus act in the partner's loss."),
    sl_epochs: int = typer.Option(8, min=1, help="Behaviour-cloning epochs for the initial SL policy."),
    synthetic_dialogues: int = typer.Option(3000, min=10, help="Size of the synthetic corpus (no --corpus)."),
    eval_episodes: int = typer.Option(500, "--eval-episodes", min=1,
                                      help="Games per evaluation partner for the final metrics."),
    eval_games: int | None = typer.Option(None, "--eval-games", min=1, hidden=True,
                                          help="Old spelling of --eval-episodes."),
    wait_seconds: float = typer.Option(0.0, min=0, help="Human oracle: how long to wait for answers per round."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed for the corpus, training and evaluation."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
) -> None:
    """Targeted data acquisition: RL learner, oracle queries where it leaves the corpus, partner updates.

    Per-round logs, checkpoints and final metrics go under --out; rerunning with the same options resumes.
    """
    from dataclasses import asdict

    from parley.agents.evaluation import eval_table, evaluate_policy
    from parley.agents.training.ppo import PPOConfig
    from parley.agents.training.supervised import SupervisedConfig
    from parley.envs.corpus import corpus_dataset
    from parley.oracles.selection import SELECTIONS
    from parley.oracles.tda import TDAConfig, run_tda

    eval_games = eval_episodes if eval_games is None else eval_games
    if selection not in SELECTIONS:
        raise typer.BadParameter(f"unknown selection {selection!r}; choose one of {', '.join(SELECTIONS)}",
                                 param_hint="--selection")
    out.mkdir(parents=True, exist_ok=True)
    the_oracle = _make_oracle(oracle, out, wait_seconds)
    dialogues, description = load_training_corpus(corpus, synthetic_dialogues, seed)
    console.print(description)
    data = corpus_dataset(dialogues)
    if len(data) == 0:
        raise typer.BadParameter("the corpus gave no usable acts", param_hint="--corpus")
    config = TDAConfig(rounds=rounds, queries_per_round=queries_per_round, selection=selection, oracle_weight=oracle_weight,
                       eval_games=eval_games, seed=seed, ppo=PPOConfig(total_games=games_per_round),
                       supervised=SupervisedConfig(epochs=sl_epochs, seed=seed, device=device))
    try:
        result = run_tda(data, the_oracle, config, out, log=console.print)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    suite_rows = evaluate_policy(result.learner, "suite", episodes=eval_games, seed=seed + 1000,
                                 max_turns=config.ppo.max_turns)
    (model_row, _) = evaluate_policy(result.learner, {"partner model": result.partner}, episodes=eval_games,
                                     seed=seed + 2000, max_turns=config.ppo.max_turns)
    final = {"scripted_suite": {row.partner: asdict(row) for row in suite_rows}, "partner_model": asdict(model_row),
             "rounds": [r.__dict__ for r in result.logs], "corpus": description}
    (out / "final_metrics.json").write_text(json.dumps(final, indent=2, default=float))
    console.print(eval_table([*suite_rows, model_row],
                             title=f"TDA learner after {rounds} rounds ({out / 'final_metrics.json'})"))


def register(app: typer.Typer) -> None:
    app.add_typer(oracle_app, name="oracle")
    app.command("tda")(tda_command)


@oracle_app.command("coverage")
def coverage_command(corpus: Path = typer.Argument(..., help="data.txt, val.txt or the corpus directory.")) -> None:
    """Parse a Deal-or-No-Deal file into coarse acts and report the parser's coverage."""
    from parley.envs.corpus import coverage_report, load_corpus

    if not corpus.exists():
        raise typer.BadParameter(f"no corpus at {corpus}", param_hint="CORPUS")
    console.print(str(coverage_report(load_corpus(corpus))))
