"""The arena's speed and ChatAgent's overhead per turn.

1. ``parley arena`` with 8 scripted and policy players (default: six scripted partners and two saved
   policies; ``--policy RUN`` names trained ones, else two untrained networks are saved and used, which
   cost as much per act as trained ones), ``--games`` games per pair (200), coarse acts, in this process:
   wall time of the games and of the ratings (``--bootstrap`` resamples) and the report, with the load
   average before and after.
2. ChatAgent's overhead per turn against an instant local server (a loopback HTTP server that answers
   every request at once with a fixed legal JSON move): the agent's own time per turn (prompt, parsing,
   checks; the turn's wall time minus the time in HTTP exchanges) and the whole turn including the
   loopback round trip. Also ``mode="chat"`` against ``parley lm serve boulware`` (the served player's
   reply is the "model's time" there).

Writes its section of benchmarks/RESULTS.md.

    python benchmarks/arena.py [--games 200] [--turns 2000] [--policy RUN ...] [--no-append]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from common import append_results, machine

from parley.agents.arena import ArenaSettings, run_arena, write_report
from parley.agents.llm import ChatAgent
from parley.envs.negotiation import NegotiationState, sample_context

SCRIPTED = ["boulware", "conceder", "linear", "fair_split", "hardliner", "random"]
MOVE = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content":
                   '{"action": "walk_away"}'}, "finish_reason": "stop"}]}).encode()


def instant_server() -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out at once, as real servers send them

        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 -- http.server's naming
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(MOVE)))
            self.end_headers()
            self.wfile.write(MOVE)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def arena_timing(games: int, bootstrap: int, policies: list[str]) -> tuple[str, dict]:
    from parley.agents.nn.torch_policy import TorchPolicy
    from parley.envs.negotiation import observation_size

    folder = Path(tempfile.mkdtemp(prefix="arena-bench-"))
    if not policies:
        for backbone in ("mlp", "transformer"):
            path = folder / f"{backbone}-untrained"
            TorchPolicy(backbone, observation_size(), deterministic=True, seed=0, device="cpu").save(path)
            policies.append(str(path))
    players = SCRIPTED[: 8 - len(policies)] + [f"policy:{p}" for p in policies]
    load_before = os.getloadavg()
    start = time.perf_counter()
    rows = run_arena(players, folder / "out", ArenaSettings(games=games))
    played = time.perf_counter() - start
    start = time.perf_counter()
    ratings = write_report(rows, folder / "out", bootstrap=bootstrap)
    rated = time.perf_counter() - start
    load_after = os.getloadavg()
    figures = {"players": len(players), "pairs": len(players) * (len(players) - 1) // 2, "games": len(rows),
               "play_s": played, "rate_s": rated, "load": (load_before[0], load_after[0])}
    board = "\n".join(f"| {k} | {r.player} | {r.rating:.0f} | {r.low:.0f} to {r.high:.0f} | {r.score:.2f} | "
                      f"{100 * r.agreement:.1f} |" for k, r in enumerate(ratings, 1))
    return board, figures


def overhead(turns: int) -> dict:
    server = instant_server()
    agent = ChatAgent(f"http://127.0.0.1:{server.server_address[1]}/v1", "instant")
    rng = np.random.default_rng(0)
    states = [NegotiationState(sample_context(rng)) for _ in range(64)]
    cases = [(s.observation(s.current_player), s.legal_action_mask(s.current_player)) for s in states]
    for obs, mask in cases[:20]:  # warm-up: connection, imports
        agent.act(obs, mask)
    agent.stats.model_seconds = 0.0
    start = time.perf_counter()
    for k in range(turns):
        agent.act(*cases[k % len(cases)])
    wall = time.perf_counter() - start
    model = agent.stats.model_seconds
    server.shutdown()
    return {"turn_ms": 1000 * wall / turns, "own_ms": 1000 * (wall - model) / turns, "http_ms": 1000 * model / turns}


def chat_overhead(turns: int) -> dict | None:
    try:
        import uvicorn

        from parley.agents.lm.server import create_app
    except ImportError:
        return None
    from parley.envs.negotiation_text_v0 import format_observation
    from parley.text import make_text_player

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(make_text_player("boulware", seed=0), "boulware"),
                                           host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    agent = ChatAgent(f"http://127.0.0.1:{port}/v1", "boulware", mode="chat")
    observation = format_observation((1, 4, 1), (4, 1, 2), [(1, "I'd like the hats and you get the rest.")])
    for _ in range(20):
        agent.reply(observation)
    agent.stats.model_seconds = 0.0
    start = time.perf_counter()
    for _ in range(turns):
        agent.reply(observation)
    wall = time.perf_counter() - start
    server.should_exit = True
    return {"turn_ms": 1000 * wall / turns, "own_ms": 1000 * (wall - agent.stats.model_seconds) / turns}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", type=int, default=200, help="games per pair")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the ratings")
    parser.add_argument("--turns", type=int, default=2000, help="ChatAgent turns timed")
    parser.add_argument("--policy", action="append", default=[], help="a saved policy or run (repeatable)")
    parser.add_argument("--no-append", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    board, arena = arena_timing(args.games, args.bootstrap, list(args.policy))
    json_turn = overhead(args.turns)
    chat_turn = chat_overhead(max(1, args.turns // 4))
    untrained = "" if args.policy else " (the two policies are untrained networks, mlp and transformer)"
    table = (f"Arena: {arena['players']} players{untrained}, {arena['pairs']} pairs, {arena['games']:,} games "
             f"({args.games} per pair, coarse acts): games {arena['play_s']:.1f} s, ratings with {args.bootstrap} "
             f"bootstrap resamples and the report {arena['rate_s']:.1f} s, "
             f"{arena['play_s'] + arena['rate_s']:.1f} s in all (target: 120 s). Load average "
             f"{arena['load'][0]:.1f} before, {arena['load'][1]:.1f} after.\n\n"
             "| # | player | rating | 95% interval | score | agreement % |\n|---:|---|---:|---|---:|---:|\n"
             f"{board}\n\n"
             "| ChatAgent turn | per turn (ms) |\n|---|---:|\n"
             f"| json mode, the agent's own time (prompt, parsing, checks; target 2 ms) | {json_turn['own_ms']:.3f} |\n"
             f"| json mode, HTTP exchange with the instant loopback server | {json_turn['http_ms']:.3f} |\n"
             f"| json mode, whole turn | {json_turn['turn_ms']:.3f} |\n")
    if chat_turn is not None:
        table += (f"| chat mode vs `parley lm serve boulware`, the agent's own time | {chat_turn['own_ms']:.3f} |\n"
                  f"| chat mode vs `parley lm serve boulware`, whole turn (served player included) | "
                  f"{chat_turn['turn_ms']:.3f} |\n")
    note = (f"One process, torch with one thread; {args.turns} json-mode turns on 64 sampled game states, "
            f"{max(1, args.turns // 4)} chat-mode turns.")
    print(table)
    if not args.no_append:
        append_results("Arena and ChatAgent overhead", machine(), note, table)


if __name__ == "__main__":
    main()
