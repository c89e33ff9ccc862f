"""parley without the ``rl`` extra: every module outside the RLlib / SB3 backends imports, and
``parley train --framework native`` trains, in a Python where Ray, Stable-Baselines3, sb3-contrib,
pandas and TensorBoard cannot be imported.

The check runs in a subprocess whose ``sys.modules`` holds ``None`` for those packages -- what Python
does for a package that is not installed: ``import ray`` raises ``ImportError`` and
``importlib.util.find_spec("ray")`` returns ``None``. CI repeats the training run in a real virtual
environment without the extra (``.ci/run``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from parley.agents.training.run import read_progress

#: What ``pip install parley`` without ``[rl]`` lacks.
RL_EXTRA_MODULES = ("ray", "stable_baselines3", "sb3_contrib", "pandas", "tensorboard")
#: The backends that are the RLlib / SB3 integration itself; everything else must import without them.
NEEDS_RL_EXTRA = frozenset({
    "parley.agents.training.rllib_connector",
    "parley.agents.training.rllib_envs",
    "parley.agents.training.rllib_module",
    "parley.agents.training.rllib_overlap",
    "parley.agents.training.rllib_setups",
    "parley.agents.training.sb3",
})
#: The package's top-level folders (see pyproject's package-dir).
DOMAINS = ("parley", "parley.envs", "parley.agents", "parley.oracles", "parley.attacks", "parley.human_eval")

SCRIPT = textwrap.dedent("""
    import importlib, json, pkgutil, sys

    blocked, needs_rl, domains, argv = json.loads(sys.argv[1])
    for name in blocked:
        sys.modules[name] = None

    found = set()
    for domain in domains:
        package = importlib.import_module(domain)
        found.add(domain)
        found.update(m.name for m in pkgutil.walk_packages(package.__path__, domain + "."))
    imported, failed, refused = [], {}, {}
    for name in sorted(found):
        try:
            importlib.import_module(name)
            imported.append(name)
        except ImportError as err:
            (refused if name in needs_rl else failed)[name] = str(err)

    from parley.cli import app

    def run(args):
        try:
            app(args, prog_name="parley", standalone_mode=False)
        except BaseException as err:
            return f"{type(err).__name__}: {err}"
        return None

    train_error = run(argv)
    other_frameworks = {framework: run(["train", "--framework", framework, "--out", out])
                        for framework, out in (("rllib", argv[-1] + "-rllib"), ("sb3", argv[-1] + "-sb3"))}
    leaked = sorted(n for n in blocked if sys.modules.get(n) is not None)
    print("RESULT " + json.dumps(dict(imported=imported, failed=failed, refused=refused, train_error=train_error,
                                      other_frameworks=other_frameworks, leaked=leaked)))
""")


def test_modules_and_native_training_work_without_the_rl_extra(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--framework", "native", "--iterations", "2", "--no-live",
            "--backbone-config", "{hidden_sizes: [16]}", "--train-batch-size", "256",
            "--minibatch-size", "128", "--eval-episodes", "4", "--out", str(out)]
    payload = json.dumps([RL_EXTRA_MODULES, sorted(NEEDS_RL_EXTRA), DOMAINS, argv])
    proc = subprocess.run([sys.executable, "-c", SCRIPT, payload], capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])

    assert result["failed"] == {}, f"failed to import without the rl extra: {result['failed']}"
    # The block is real: the backends that are the Ray / SB3 integration cannot import.
    assert set(result["refused"]) == NEEDS_RL_EXTRA
    assert "parley.agents.training.native" in result["imported"]
    assert "parley.agents.evaluation" in result["imported"]
    assert len(result["imported"]) > 40  # the walk found the package, not just its top level
    assert result["leaked"] == []

    assert result["train_error"] is None, result["train_error"] + proc.stdout[-3000:]
    assert [int(row["iteration"]) for row in read_progress(out)] == [1, 2]
    assert (out / "policy").is_dir() and (out / "eval.csv").is_file()
    assert (out / "checkpoints" / "iter_000002").is_dir()

    # RLlib and SB3 say what is missing and how to get it, before creating a run directory.
    for framework, error in result["other_frameworks"].items():
        assert error is not None and error.startswith("BadParameter"), error
        assert f"--framework {framework} needs" in error and "pip install 'parley[rl]'" in error
        assert not (tmp_path / f"run-{framework}").exists()
