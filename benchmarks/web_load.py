"""Load test of the study web app: N simulated participants at once against ``parley serve`` on loopback.

Starts the server as a subprocess on a free 127.0.0.1 port (a fresh SQLite study database in a
temporary folder, a scripted agent, no think time), then runs N participants concurrently from one
asyncio client. Each participant goes through the whole flow (enter, consent, instructions, start),
plays ``--games`` negotiations (random demands, agreeing to the agent's offer half the time), answers
the survey after each, and pauses ``--pause`` seconds (+-50% jitter) before each act as a person
would (people take several seconds). Participants arrive uniformly over ``--ramp`` seconds. Reported: act latency p50/p99/max as seen by the client (the person's act, the agent's
reply and both event writes), acts per second, and errors (any non-2xx answer or failed request).

Example::

    python benchmarks/web_load.py --sessions 10 50 --games 2 --pause 1.0 --ramp 10 --synchronous FULL NORMAL

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

from parley.human_eval.security import TokenSigner

ADMIN = "web-load-admin-token-0123456789"
# The server's token secret, so the simulated participants can sign their own recruitment links.
SECRET = "web-load-secret-0123456789abcdef"
LINKS = TokenSigner(SECRET)
MAX_SESSIONS = 500


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, agent: str, games: int, synchronous: str) -> tuple[subprocess.Popen, int]:
    config = folder / "agents.yaml"
    config.write_text(f"study: load\nagents: [{{name: {agent}, partner: {agent}}}]\ncontexts: {{count: 50, seed: 0}}\n"
                      f"think_time_s: 0\nsessions_per_participant: {games}\nrate_per_s: 50\nrate_burst: 200\n")
    port = free_port()
    log = (folder / "server.log").open("ab")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PARLEY_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "parley.cli", "serve", "--agents", str(config), "--db",
                             f"sqlite:///{folder / 'study.db'}", "--host", "127.0.0.1", "--port", str(port),
                             "--admin-token", ADMIN, "--secret", SECRET, "--sqlite-synchronous", synchronous],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {(folder / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start within 60 s")


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


async def participant(port: int, index: int, games: int, pause: float, ramp: float, stats: Stats,
                      rng: random.Random) -> None:
    http = LoopbackHTTP(port)

    async def call(method: str, path: str, body=None, headers=None, timed: bool = False):
        started = time.perf_counter()
        try:
            status, data = await http.request(method, path, body, headers)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as err:
            stats.errors.append(f"{path}: {type(err).__name__}")
            await http.close()
            return None
        if timed:
            stats.act_ms.append((time.perf_counter() - started) * 1000)
        if status >= 300:
            stats.errors.append(f"{path}: {status} {data[:120]!r}")
            return None
        return json.loads(data)

    await asyncio.sleep(rng.random() * ramp)  # participants arrive spread over the ramp, not in lock-step
    try:
        pid = f"sim-{index}"
        entered = await call("POST", "/api/enter", {"study": "load", "pid": pid, "sig": LINKS.sign_link("load", pid)})
        if entered is None:
            return
        h = {"X-Session-Token": entered["token"]}
        await call("POST", "/api/consent", {}, h)
        await call("POST", "/api/instructions", {}, h)
        for _ in range(games):
            state = await call("POST", "/api/games", {}, h)
            if state is None:
                return
            view = state["game"]
            counts = [i["count"] for i in view["items"]]
            while view["status"] == "active":
                await asyncio.sleep(pause * (0.5 + rng.random()))
                body = {"kind": "agree"} if view["can_agree"] and rng.random() < 0.5 else {
                    "kind": "propose", "split": [rng.randint(c // 2, c) for c in counts], "message": "load test"}
                body["turn"] = view["turn"]
                new = await call("POST", f"/api/games/{view['game_id']}/act", body, h, timed=True)
                if new is None:
                    return
                view = new
            stats.games += 1
            stats.deals += view["outcome"]["result"] == "deal"
            if await call("POST", f"/api/games/{view['game_id']}/survey",
                          {"fair": 3, "human_like": 3, "negotiate_again": 3}, h) is None:
                return
    finally:
        await http.close()


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


async def run_load(port: int, sessions: int, games: int, pause: float, ramp: float,
                   seed: int) -> tuple[Stats, float]:
    stats = Stats()
    started = time.perf_counter()
    done = asyncio.Event()
    prober = asyncio.create_task(probe(port, stats, done))
    await asyncio.gather(*(participant(port, i, games, pause, ramp, stats, random.Random(seed * 100_003 + i))
                           for i in range(sessions)))
    elapsed = time.perf_counter() - started
    done.set()
    await prober
    return stats, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[10, 50], help="concurrent participants per run")
    parser.add_argument("--games", type=int, default=2, help="negotiations per participant")
    parser.add_argument("--pause", type=float, default=0.2, help="mean seconds a participant waits before each act")
    parser.add_argument("--ramp", type=float, default=10.0, help="participants arrive uniformly over this many seconds")
    parser.add_argument("--agent", default="boulware", help="scripted partner the participants meet")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], nargs="+", default=["FULL", "NORMAL"],
                        help="SQLite synchronous modes to compare (FULL: durable on power loss; NORMAL: on crashes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-append", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    if any(not 1 <= n <= MAX_SESSIONS for n in args.sessions):
        parser.error(f"--sessions must be 1..{MAX_SESSIONS}")
    if not 1 <= args.games <= 20 or not 0 <= args.pause <= 10 or not 0 <= args.ramp <= 600:
        parser.error("--games must be 1..20, --pause 0..10 and --ramp 0..600")

    rows = []
    for synchronous, n in [(mode, n) for mode in args.synchronous for n in args.sessions]:
        with tempfile.TemporaryDirectory() as tmp:
            proc, port = start_server(Path(tmp), args.agent, args.games, synchronous)
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            cpu0 = process_cpu_s(proc.pid)
            try:
                stats, elapsed = asyncio.run(run_load(port, n, args.games, args.pause, args.ramp, args.seed))
                cpu1 = process_cpu_s(proc.pid)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        lat = np.array(stats.act_ms) if stats.act_ms else np.array([np.nan])
        cpu_per_act = (cpu1 - cpu0) * 1000 / max(1, len(stats.act_ms)) if cpu0 is not None and cpu1 is not None \
            else float("nan")
        probe = np.array(stats.probe_ms) if stats.probe_ms else np.array([np.nan])
        rows.append((synchronous, n, len(stats.act_ms), stats.games, stats.deals, float(np.percentile(lat, 50)),
                     float(np.percentile(lat, 99)), float(lat.max()), float(np.percentile(probe, 50)),
                     float(np.percentile(probe, 99)), len(stats.act_ms) / elapsed, len(stats.errors), elapsed,
                     cpu_per_act, load))
        for e in stats.errors[:5]:
            print("error:", e, file=sys.stderr)

    header = ("| SQLite sync | sessions | acts | games | deals | act p50 ms | act p99 ms | act max ms | healthz p50 ms "
              "| healthz p99 ms | acts/s | errors | wall s | server CPU ms/act | load avg before |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [f"| {mode} | {n} | {acts} | {g} | {d} | {p50:.1f} | {p99:.1f} | {mx:.1f} | {h50:.1f} | {h99:.1f} "
             f"| {rate:.1f} | {err} | {wall:.1f} | {cpu:.1f} | {load:.1f} |"
             for mode, n, acts, g, d, p50, p99, mx, h50, h99, rate, err, wall, cpu, load in rows]
    table = header + "\n" + "\n".join(lines)
    print(table)
    if args.no_append:
        return
    command = "python benchmarks/web_load.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores visible (server and client share them), "
               f"Python {platform.python_version()}; SQLite in WAL mode")
    section = (f"\n## Study web app under load ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
               f"Command: `{command}`  \nMachine: {machine}  \n"
               f"`parley serve` subprocess on 127.0.0.1 against the scripted `{args.agent}` partner, no think time; "
               f"participants arrive uniformly over {args.ramp:g} s; each runs the whole flow and {args.games} "
               f"negotiation(s) with a survey, pausing "
               f"{args.pause:g} s (+-50%) before each act. Latency is one act request as the client sees it: the "
               f"person's act, the agent's reply and their events in one durable commit. healthz is a trivial "
               f"request sent five times a second during the same run: the machine's and HTTP stack's share. Server CPU ms/act is the server "
               f"process's CPU time over the run divided by the acts (it includes the flow and survey requests). "
               f"The load average before each run shows how busy the shared machine was. SQLite sync FULL (the "
               f"default) makes each commit survive power loss; NORMAL survives process crashes. Target: p99 <= 50 "
               f"ms at 50 sessions, 0 errors.\n\n{table}\n")
    save_results_section(section)


if __name__ == "__main__":
    main()
