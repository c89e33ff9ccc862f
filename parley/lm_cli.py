"""``parley train-lm`` and ``parley lm serve``: the dialogue model and text players over HTTP."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()
lm_app = typer.Typer(help="Text players over HTTP (an OpenAI-compatible chat-completions endpoint).",
                     no_args_is_help=True)


def train_lm_command(
    corpus: Path = typer.Option(..., "--corpus", help="The Deal-or-No-Deal corpus directory (data.txt, val.txt) "
                                "or one data.txt / val.txt file."),
    out: Path = typer.Option(..., "--out", help="Directory to write the model to (lm.json, lm.pt)."),
    epochs: int = typer.Option(8, min=1, help="Passes over the training dialogues."),
    max_minutes: float = typer.Option(30.0, min=0.01, help="Stop after this many minutes (after the current batch)."),
    hidden: int = typer.Option(128, min=8, help="GRU state size."),
    embed: int = typer.Option(64, min=8, help="Word embedding size."),
    batch_size: int = typer.Option(32, min=1, help="Dialogues per batch."),
    lr: float = typer.Option(2e-3, min=0.0, help="Adam learning rate."),
    threads: int = typer.Option(1, min=1, help="Torch threads (more pay only on an idle machine)."),
    seed: int = typer.Option(0, help="Seed of the initial weights and batch order."),
) -> None:
    """Train the dialogue model on the corpus on CPU; it then plays the text game and `parley lm serve`."""
    from parley.agents.lm.model import LMConfig
    from parley.agents.lm.train import TrainLMConfig, train_language_model

    if not corpus.exists():
        raise typer.BadParameter(f"no corpus at {corpus}", param_hint="--corpus")
    config = TrainLMConfig(epochs=epochs, batch_size=batch_size, lr=lr, max_minutes=max_minutes, seed=seed,
                           threads=threads)
    try:
        summary = train_language_model(corpus, out, config, LMConfig(embed_dim=embed, hidden_dim=hidden),
                                       log=console.print)
    except (ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(str(err), param_hint="--corpus") from None
    console.print(f"saved to {out}: validation perplexity {summary['valid_perplexity']:.2f} after "
                  f"{summary['minutes']:.1f} min")


@lm_app.command("serve")
def serve_command(
    model: str = typer.Argument(..., help="A language model directory (parley train-lm), a saved policy directory "
                                "or a scripted partner's name (these two speak through the realiser)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
    name: str | None = typer.Option(None, help="Model id in requests and /v1/models; MODEL's name when left out."),
    seed: int = typer.Option(0, help="Seed of the player's sampling and wording."),
    max_messages: int = typer.Option(20, min=1, help="Utterances a game may hold before the selections."),
    max_utterance_chars: int = typer.Option(400, min=1, help="Longest utterance accepted."),
) -> None:
    """Serve a text player as POST /v1/chat/completions and GET /v1/models (see docs/language.md)."""
    from parley.agents.lm.server import serve
    from parley.text import make_text_player

    try:
        player = make_text_player(model, seed=seed)
    except (ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(str(err), param_hint="MODEL") from None
    model_name = name or Path(model).name or model
    console.print(f"serving {model_name!r} on http://{host}:{port}/v1/chat/completions")
    serve(player, model_name, host=host, port=port, max_messages=max_messages,
          max_utterance_chars=max_utterance_chars)


def register(app: typer.Typer) -> None:
    app.command("train-lm")(train_lm_command)
    app.add_typer(lm_app, name="lm")
