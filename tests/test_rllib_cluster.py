"""``parley train --address`` on a real multi-process Ray cluster (``pytest -m slow``): a head node and a
second node started with ``ray start`` on this machine, two remote env runners, then both nodes stopped."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

pytest.importorskip("ray")

from parley.agents.training.run import read_progress  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_node(*args: str) -> subprocess.Popen:
    """``ray start ... --block`` in its own process group, so that stopping it ends only this node. Each
    node gets its own dashboard agent port (two nodes share this machine) and token authentication."""
    return subprocess.Popen([shutil.which("ray") or "ray", "start", "--block", "--num-cpus", "1",
                             "--disable-usage-stats", "--dashboard-agent-listen-port", str(free_port()), *args],
                            env={**os.environ, "RAY_AUTH_MODE": "token"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def stop_node(node: subprocess.Popen) -> None:
    if node.poll() is None:
        os.killpg(node.pid, signal.SIGTERM)
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()


def wait_for_port(host: str, port: int, timeout: float = 120.0) -> None:
    """Wait until the head's GCS accepts connections (ray.init would otherwise wait on it for minutes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(1.0)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(1)
    raise AssertionError(f"nothing listens on port {port} after {timeout:.0f} s")


def wait_for_cpus(address: str, cpus: int, timeout: float = 120.0) -> None:
    """Wait until the cluster at ``address`` reports ``cpus`` CPUs (both nodes joined)."""
    code = f"import ray; ray.init(address={address!r}); print(int(ray.cluster_resources().get('CPU', 0)))"
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # `ray start` clusters use token authentication
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        seen = probe.stdout.strip().splitlines()[-1:] if probe.returncode == 0 else probe.stderr[-300:]
        if probe.returncode == 0 and seen and int(seen[0]) >= cpus:
            return
        time.sleep(2)
    raise AssertionError(f"the cluster at {address} did not reach {cpus} CPUs: {seen}")


@pytest.mark.slow
def test_parley_train_runs_on_a_two_node_cluster(tmp_path):
    from ray.util import get_node_ip_address

    host, port = get_node_ip_address(), free_port()  # Ray's nodes listen on this machine's address
    address = f"{host}:{port}"
    # Its own temp dir keeps this cluster out of /tmp/ray, where a plain ray.init() on this machine looks
    # for one to join; a short path, since Ray's sockets live there.
    temp_dir = tempfile.mkdtemp(prefix="parley-ray-", dir="/tmp")
    head = start_node("--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", temp_dir,
                      "--ray-client-server-port", str(free_port()))
    nodes = [head]
    try:
        wait_for_port(host, port)
        wait_for_cpus(address, 1)
        nodes.append(start_node("--address", address))
        wait_for_cpus(address, 2)
        run = tmp_path / "cluster"
        train = subprocess.run(
            [sys.executable, "-m", "parley.cli", "train", "--address", address, "--num-env-runners", "2",
             "--num-envs", "32", "--iterations", "2", "--train-batch-size", "1024", "--minibatch-size", "512",
             "--num-epochs", "1", "--eval-episodes", "5", "--heldout-episodes", "0", "--out", str(run), "--no-live"],
            env={**os.environ, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=400)
        assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
        rows = read_progress(run)
        assert [int(r["iteration"]) for r in rows] == [1, 2] and int(rows[-1]["env_steps"]) >= 2048
        assert (run / "policy").is_dir()
    finally:
        for node in reversed(nodes):
            stop_node(node)
        shutil.rmtree(temp_dir, ignore_errors=True)
