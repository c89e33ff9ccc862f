"""Shared fixtures: the corpus directory when ../shared exists, and generated context files always."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def corpus_dir() -> Path | None:
    """The Deal-or-No-Deal corpus directory, or None on machines without it."""
    path = SHARED_DATA / "dealornodeal"
    return path if (path / "val.txt").is_file() else None


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray instance on 2 CPUs for one test module (the module imports ray or skips first)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def write_text_games_corpus(path: Path, games: int = 60, seed: int = 0) -> Path:
    """Text games between scripted partners (through the realiser), written as corpus lines in the
    ``data.txt`` format (each game once from each side), for tests that need a corpus file."""
    from parley.envs.negotiation import sample_context
    from parley.envs.negotiation_text_v0 import SELECTION_TOKEN, TextNegotiationState
    from parley.text import make_text_player

    rng = np.random.default_rng(seed)
    names = ("boulware", "conceder", "pareto", "linear")
    lines = []
    for game in range(games):
        ctx = sample_context(rng)
        players = [make_text_player(names[game % 4], seed=game), make_text_player(names[(game + 1) % 4], seed=1000 + game)]
        state = TextNegotiationState(ctx, first_player=game % 2)
        while not state.terminal:
            state.send(players[state.current_player].reply(state.observation(state.current_player)))
        metrics = state.metrics()
        for side in (0, 1):
            talk = " ".join(f"{'YOU' if s == side else 'THEM'}: {t} <eos>" for s, t in state.messages
                            if t != SELECTION_TOKEN)
            own = state.selections[side]
            other = state.selections[1 - side]
            picks = [f"item{i}={k}" for sel in (own, other) if isinstance(sel, tuple) for i, k in enumerate(sel)]
            if not isinstance(own, tuple) or not isinstance(other, tuple):
                picks = ["<no_agreement>"]
            outcome = "agree" if metrics["agreement"] else "disagree"
            context = " ".join(f"{c} {v}" for c, v in zip(ctx.counts, ctx.values[side]))
            partner = " ".join(f"{c} {v}" for c, v in zip(ctx.counts, ctx.values[1 - side]))
            lines.append(f"{context} {talk} YOU: <selection> {' '.join(picks)} <eos> "
                         f"reward={int(metrics['scores'][side])} {outcome} {partner}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def text_games_corpus(tmp_path_factory) -> Path:
    """A small generated corpus file in the data.txt format (see :func:`write_text_games_corpus`)."""
    return write_text_games_corpus(tmp_path_factory.mktemp("text_corpus") / "data.txt")


@pytest.fixture(scope="session")
def tiny_language_model(text_games_corpus, tmp_path_factory) -> Path:
    """A dialogue model trained for a few seconds on the generated corpus."""
    from parley.agents.lm.model import LMConfig
    from parley.agents.lm.train import TrainLMConfig, train_language_model

    out = tmp_path_factory.mktemp("lm") / "tiny"
    train_language_model(text_games_corpus, out, TrainLMConfig(epochs=4, batch_size=16, lr=1e-2),
                         LMConfig(embed_dim=16, context_dim=8, hidden_dim=32), log=lambda *_: None)
    return out


@contextlib.contextmanager
def _served_in_thread(app):
    """``app`` served by uvicorn in a thread on a free loopback port; yields ``http://127.0.0.1:PORT``."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        instance.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def serve_app():
    """``with serve_app(app) as base_url:`` serves an ASGI app by uvicorn in a thread on loopback."""
    return _served_in_thread
