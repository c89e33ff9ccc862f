"""Load test of the study web app: N simulated participants at once against ``parley serve`` on loopback.

Starts the server as a subprocess on a free 127.0.0.1 port (a fresh SQLite study database in a
temporary folder, a scripted agent, no think time), with ``--workers`` app processes sharing the port
and the database, then runs N participants concurrently from one asyncio client. Each participant
goes through the whole flow (enter, consent, instructions, start), plays ``--games`` negotiations
(random demands, agreeing to the agent's offer half the time), answers the survey after each, and
pauses ``--pause`` seconds (+-50% jitter) before each act as a person would (people take several
seconds). Participants arrive uniformly over ``--ramp`` seconds. Reported: act latency p50/p99/max
as seen by the client (the person's act, the agent's reply and both event writes), acts per second,
and errors (any non-2xx answer, or a request whose connection failed before any worker was killed).

``--kill-worker-at S`` adds, for each setting with two or more workers, a run in which one worker is
killed with SIGKILL S seconds in. A participant whose request is cut off resumes by its link (enters
again, gets its state, and goes on) through the other worker or the one the server restarts. Lost
events are acts whose answer the client received but which are not in the database afterwards.

Example::

    python benchmarks/web_load.py --sessions 200 --workers 2 --games 2 --pause 1.0 --ramp 10 \
        --synchronous FULL --kill-worker-at 8

Prints a table and writes it to its section of benchmarks/RESULTS.md with the date, the command and the machine.
Only loopback traffic: the server binds 127.0.0.1 and the client talks to nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
from common import save_results_section
from sqlalchemy import select
from sqlalchemy.orm import Session

from parley.envs.negotiation import encode_act
from parley.human_eval.db import Event, make_engine
from parley.human_eval.security import TokenSigner
from parley.human_eval.server import worker_pids

ADMIN = "web-load-admin-token-0123456789"
# The server's token secret, so the simulated participants can sign their own recruitment links.
SECRET = "web-load-secret-0123456789abcdef"
LINKS = TokenSigner(SECRET)
MAX_SESSIONS = 500


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, agent: str, games: int, synchronous: str,
                 workers: int = 1) -> tuple[subprocess.Popen, int]:
    config = folder / "agents.yaml"
    config.write_text(f"study: load\nagents: [{{name: {agent}, partner: {agent}}}]\ncontexts: {{count: 50, seed: 0}}\n"
                      f"think_time_s: 0\nsessions_per_participant: {games}\nrate_per_s: 50\nrate_burst: 200\n")
    port = free_port()
    log = (folder / "server.log").open("ab")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PARLEY_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "parley.cli", "serve", "--agents", str(config), "--db",
                             f"sqlite:///{folder / 'study.db'}", "--host", "127.0.0.1", "--port", str(port),
                             "--admin-token", ADMIN, "--secret", SECRET, "--sqlite-synchronous", synchronous,
                             "--workers", str(workers)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {(folder / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200 and (
                    workers == 1 or len(worker_pids(proc.pid)) >= workers):
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start within 60 s")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM (the supervisor stops its workers), SIGKILL if it hangs."""
    workers = worker_pids(proc.pid)
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class LoopbackHTTP:
    """A minimal HTTP/1.1 keep-alive client on one connection, as a browser tab holds one.

    Much lighter than a general client, so the load generator leaves the shared CPU cores to the server.
    It only ever connects to 127.0.0.1.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, bytes]:
        return await asyncio.wait_for(self._request(method, path, body, headers or {}), timeout=30)

    async def _request(self, method: str, path: str, body, headers: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Content-Type: application/json",
                 f"Content-Length: {len(payload)}"] + [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Stats:
    def __init__(self) -> None:
        self.act_ms: list[float] = []
        self.probe_ms: list[float] = []
        self.errors: list[str] = []
        self.games = 0
        self.deals = 0
        self.acked: list[tuple[int, int, int]] = []  # (game id, turn, action) of every act answered 200
        self.interrupted = 0  # requests cut off by a killed worker
        self.resumed = 0  # participants who entered again by their link after that
        self.finished = 0  # participants who played every game and answered every survey
        self.kill_time: float | None = None  # perf_counter when a worker was killed


class _CutOff(Exception):
    """The request's connection failed: the worker serving it may have been killed."""


class SimulatedParticipant:
    """One participant: the whole flow by its study link, resuming by that link when a request is cut off."""

    def __init__(self, port: int, index: int, games: int, pause: float, stats: Stats, rng: random.Random) -> None:
        self.port, self.games, self.pause, self.stats, self.rng = port, games, pause, stats, rng
        pid = f"sim-{index}"
        self.link = {"study": "load", "pid": pid, "sig": LINKS.sign_link("load", pid)}
        self.http = LoopbackHTTP(port)
        self.headers: dict = {}

    async def call(self, method: str, path: str, body=None, timed: bool = False):
        started = time.perf_counter()
        try:
            status, data = await self.http.request(method, path, body, self.headers)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as err:
            await self.http.close()
            if self.stats.kill_time is None:
                self.stats.errors.append(f"{path}: {type(err).__name__}")
                return None
            self.stats.interrupted += 1
            raise _CutOff() from err
        if timed:
            self.stats.act_ms.append((time.perf_counter() - started) * 1000)
        if status >= 300:
            self.stats.errors.append(f"{path}: {status} {data[:120]!r}")
            return None
        return json.loads(data)

    async def enter(self) -> dict | None:
        entered = await self.call("POST", "/api/enter", self.link)
        if entered is None:
            return None
        self.headers = {"X-Session-Token": entered["token"]}
        return entered["state"]

    async def resume(self) -> dict | None:
        """Enter again by the link until a worker answers (the other one, or a restarted one)."""
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.2)
            try:
                state = await self.enter()
            except _CutOff:
                continue
            self.stats.resumed += 1
            return state
        self.stats.errors.append("could not resume within 60 s")
        return None

    async def run(self, ramp: float) -> None:
        await asyncio.sleep(self.rng.random() * ramp)  # arrivals spread over the ramp, not in lock-step
        try:
            try:
                state = await self.enter()
            except _CutOff:
                state = await self.resume()
            while state is not None:
                try:
                    state = await self.step(state)
                except _CutOff:
                    state = await self.resume()
        finally:
            await self.http.close()

    async def step(self, state: dict) -> dict | None:
        """Take the next step from ``state``; the new state, or None when done (or on an error)."""
        stage = state["stage"]
        if stage in ("consent", "instructions"):
            return await self.call("POST", f"/api/{stage}", {})
        if stage == "ready" and state["sessions_used"] < self.games:
            return await self.call("POST", "/api/games", {})
        if stage == "negotiation":
            view = await self.play(state["game"])
            return None if view is None else {"stage": "survey", "game": view}
        if stage == "survey":
            done = await self.call("POST", f"/api/games/{state['game']['game_id']}/survey",
                                   {"fair": 3, "human_like": 3, "negotiate_again": 3})
            if done is None:
                return None
            self.stats.games += 1
            self.stats.deals += state["game"]["outcome"]["result"] == "deal"
            return done["state"]
        if stage in ("done", "ready"):
            self.stats.finished += state["completed"] >= self.games
            return None
        self.stats.errors.append(f"unexpected stage {stage!r}")
        return None

    async def play(self, view: dict) -> dict | None:
        counts = [i["count"] for i in view["items"]]
        while view["status"] == "active":
            await asyncio.sleep(self.pause * (0.5 + self.rng.random()))
            body = {"kind": "agree"} if view["can_agree"] and self.rng.random() < 0.5 else {
                "kind": "propose", "split": [self.rng.randint(c // 2, c) for c in counts], "message": "load test"}
            body["turn"] = view["turn"]
            new = await self.call("POST", f"/api/games/{view['game_id']}/act", body, timed=True)
            if new is None:
                return None
            self.stats.acked.append((view["game_id"], body["turn"], encode_act(body["kind"], body.get("split"))))
            view = new
        return view


def lost_events(db: Path, acked: list[tuple[int, int, int]]) -> int:
    """Acts the client saw answered that the database does not hold at their turn."""
    engine = make_engine(f"sqlite:///{db}")
    try:
        with Session(engine) as s:
            rows = s.execute(select(Event.game_id, Event.actor, Event.action).where(Event.kind == "act")
                             .order_by(Event.game_id, Event.seq)).all()
    finally:
        engine.dispose()
    acts: dict[int, list[tuple[str, int]]] = {}
    for game_id, actor, action in rows:
        acts.setdefault(game_id, []).append((actor, action))
    return sum(1 for game_id, turn, action in acked
               if turn >= len(acts.get(game_id, [])) or acts[game_id][turn] != ("human", action))


async def probe(port: int, stats: Stats, done: asyncio.Event) -> None:
    """A trivial request (GET /healthz) five times a second: the machine's and HTTP stack's share of latency."""
    http = LoopbackHTTP(port)
    while not done.is_set():
        started = time.perf_counter()
        try:
            status, _ = await http.request("GET", "/healthz")
            if status == 200:
                stats.probe_ms.append((time.perf_counter() - started) * 1000)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            await http.close()
        try:
            await asyncio.wait_for(done.wait(), timeout=0.2)
        except asyncio.TimeoutError:
            pass
    await http.close()


async def run_load(port: int, sessions: int, games: int, pause: float, ramp: float, seed: int,
                   kill_at: float | None = None, server_pid: int | None = None) -> tuple[Stats, float]:
    stats = Stats()
    started = time.perf_counter()
    done = asyncio.Event()
    prober = asyncio.create_task(probe(port, stats, done))

    async def kill_one_worker() -> None:
        await asyncio.sleep(kill_at)
        victim = worker_pids(server_pid)[0]
        stats.kill_time = time.perf_counter()
        os.kill(victim, signal.SIGKILL)

    killer = asyncio.create_task(kill_one_worker()) if kill_at else None
    await asyncio.gather(*(SimulatedParticipant(port, i, games, pause, stats, random.Random(seed * 100_003 + i))
                           .run(ramp) for i in range(sessions)))
    elapsed = time.perf_counter() - started
    done.set()
    await prober
    if killer is not None:
        await killer
    return stats, elapsed


def run_one(synchronous: str, workers: int, sessions: int, kill_at: float | None, args) -> dict:
    """One server, one load; the row of the table."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(Path(tmp), args.agent, args.games, synchronous, workers)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        server = [proc.pid] + worker_pids(proc.pid)
        cpu0 = [process_cpu_s(pid) for pid in server]
        restarted = None
        try:
            stats, elapsed = asyncio.run(run_load(port, sessions, args.games, args.pause, args.ramp, args.seed,
                                                  kill_at, proc.pid))
            cpu1 = [process_cpu_s(pid) for pid in server]
            if kill_at:
                restarted = len(worker_pids(proc.pid)) >= workers
        finally:
            stop_server(proc)
        lost = lost_events(Path(tmp) / "study.db", stats.acked)
    # CPU time of the server processes over the run; a killed worker's share is gone, so none for those runs.
    cpu = float("nan") if kill_at or None in cpu0 + cpu1 else \
        (sum(cpu1) - sum(cpu0)) * 1000 / max(1, len(stats.act_ms))
    lat = np.array(stats.act_ms) if stats.act_ms else np.array([np.nan])
    probe_ms = np.array(stats.probe_ms) if stats.probe_ms else np.array([np.nan])
    for e in stats.errors[:5]:
        print("error:", e, file=sys.stderr)
    return {"sync": synchronous, "workers": workers, "sessions": sessions,
            "kill": f"at {kill_at:g} s" + ("" if restarted is None else (", restarted" if restarted else ", not restarted"))
            if kill_at else "-",
            "acts": len(stats.act_ms), "games": stats.games, "deals": stats.deals,
            "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)), "max": float(lat.max()),
            "h50": float(np.percentile(probe_ms, 50)), "h99": float(np.percentile(probe_ms, 99)),
            "rate": len(stats.act_ms) / elapsed, "errors": len(stats.errors), "interrupted": stats.interrupted,
            "resumed": stats.resumed, "finished": stats.finished, "lost": lost, "wall": elapsed, "cpu": cpu,
            "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[10, 50], help="concurrent participants per run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="app processes of the server per run")
    parser.add_argument("--games", type=int, default=2, help="negotiations per participant")
    parser.add_argument("--pause", type=float, default=0.2, help="mean seconds a participant waits before each act")
    parser.add_argument("--ramp", type=float, default=10.0, help="participants arrive uniformly over this many seconds")
    parser.add_argument("--agent", default="boulware", help="scripted partner the participants meet")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], nargs="+", default=["FULL", "NORMAL"],
                        help="SQLite synchronous modes to compare (FULL: durable on power loss; NORMAL: on crashes)")
    parser.add_argument("--kill-worker-at", type=float, default=None, metavar="S",
                        help="also run each setting of 2+ workers with one worker killed (SIGKILL) S seconds in")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-append", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    if any(not 1 <= n <= MAX_SESSIONS for n in args.sessions):
        parser.error(f"--sessions must be 1..{MAX_SESSIONS}")
    if any(not 1 <= w <= 16 for w in args.workers):
        parser.error("--workers must be 1..16")
    if not 1 <= args.games <= 20 or not 0 <= args.pause <= 10 or not 0 <= args.ramp <= 600:
        parser.error("--games must be 1..20, --pause 0..10 and --ramp 0..600")
    if args.kill_worker_at is not None and not (0 < args.kill_worker_at <= 600 and max(args.workers) >= 2):
        parser.error("--kill-worker-at needs a time in 0..600 s and a run with --workers 2 or more")

    runs = [(mode, w, n, None) for mode in args.synchronous for w in args.workers for n in args.sessions]
    if args.kill_worker_at is not None:
        runs += [(mode, w, n, args.kill_worker_at) for mode, w, n, _ in runs if w >= 2]
    rows = [run_one(*run, args) for run in runs]

    header = ("| SQLite sync | workers | sessions | worker killed | acts | games | deals | act p50 ms | act p99 ms "
              "| act max ms | healthz p50 ms | healthz p99 ms | acts/s | errors | cut off | resumed | finished "
              "| lost events | wall s | server CPU ms/act | load avg before |\n"
              "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [f"| {r['sync']} | {r['workers']} | {r['sessions']} | {r['kill']} | {r['acts']} | {r['games']} "
             f"| {r['deals']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['h50']:.1f} | {r['h99']:.1f} "
             f"| {r['rate']:.1f} | {r['errors']} | {r['interrupted']} | {r['resumed']} | {r['finished']} "
             f"| {r['lost']} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['load']:.1f} |" for r in rows]
    table = header + "\n" + "\n".join(lines)
    print(table)
    if args.no_append:
        return
    command = "python benchmarks/web_load.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores visible (server and client share them), "
               f"Python {platform.python_version()}; SQLite in WAL mode")
    section = (f"\n## Study web app under load ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
               f"Command: `{command}`  \nMachine: {machine}  \n"
               f"`parley serve --workers N` subprocess on 127.0.0.1 (N app processes on one port and one SQLite "
               f"file) against the scripted `{args.agent}` partner, no think time; "
               f"participants arrive uniformly over {args.ramp:g} s; each runs the whole flow and {args.games} "
               f"negotiation(s) with a survey, pausing "
               f"{args.pause:g} s (+-50%) before each act. Latency is one act request as the client sees it: the "
               f"person's act, the agent's reply and their events in one durable commit. healthz is a trivial "
               f"request sent five times a second during the same run: the machine's and HTTP stack's share. "
               f"Server CPU ms/act is the server processes' CPU time over the run divided by the acts (it includes "
               f"the flow and survey requests). In a 'worker killed' run one worker gets SIGKILL mid-study: 'cut "
               f"off' counts requests that lost their connection, 'resumed' participants who entered again by "
               f"their link, 'finished' participants who completed every game and survey, and 'lost events' acts "
               f"whose answer the client received but which are missing from the database. "
               f"The load average before each run shows how busy the shared machine was. SQLite sync FULL (the "
               f"default) makes each commit survive power loss; NORMAL survives process crashes. Targets: act p99 "
               f"<= 50 ms with 200 participants over 2 workers, 0 errors, 0 lost events, every participant "
               f"finished.\n\n{table}\n")
    save_results_section(section)


if __name__ == "__main__":
    main()
