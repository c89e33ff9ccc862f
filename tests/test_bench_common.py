"""benchmarks/common.py: a benchmark's run replaces its own section of RESULTS.md."""

import importlib.util
import sys
from pathlib import Path

import pytest

COMMON = Path(__file__).resolve().parents[1] / "benchmarks" / "common.py"


@pytest.fixture(scope="module")
def common():
    spec = importlib.util.spec_from_file_location("benchmarks_common", COMMON)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RESULTS_TEXT = """# Benchmark results

Intro paragraph.

## Alpha (2026-01-01 10:00 UTC)

old alpha table

## Beta, variant (2026-01-02 11:00 UTC)

beta table

## Gamma

- Date: 2026-01-03 12:00 UTC

gamma table
"""


def titles(text: str, common) -> list[str]:
    return [common.section_title(line) for line in text.splitlines() if line.startswith("## ")]


def test_section_title_drops_the_date_only(common):
    assert common.section_title("## Alpha (2026-01-01 10:00 UTC)") == "Alpha"
    assert common.section_title("## Sleeper (digits, test split)") == "Sleeper (digits, test split)"
    assert common.section_title("## Beta, variant (2026-01-02 11:00 UTC)") == "Beta, variant"


def test_replacing_a_section_keeps_the_others_and_its_place(common):
    new = "## Alpha (2026-02-01 09:00 UTC)\n\nnew alpha table\n"
    text = common.replace_section(RESULTS_TEXT, "Alpha", new)
    assert titles(text, common) == ["Alpha", "Beta, variant", "Gamma"]
    assert "new alpha table" in text and "old alpha table" not in text
    assert "beta table" in text and "gamma table" in text and "Intro paragraph." in text
    # Replacing again with the same title still leaves one section of it.
    again = common.replace_section(text, "Alpha", new.replace("new alpha", "newer alpha"))
    assert titles(again, common).count("Alpha") == 1
    assert "newer alpha table" in again and "new alpha table" not in again
    assert "\n\n\n" not in again


def test_a_new_title_is_appended(common):
    text = common.replace_section(RESULTS_TEXT, "Delta", "## Delta (2026-03-01 08:00 UTC)\n\ndelta table\n")
    assert titles(text, common) == ["Alpha", "Beta, variant", "Gamma", "Delta"]
    assert text.endswith("delta table\n")


def test_duplicate_sections_collapse_into_the_replacement(common):
    doubled = RESULTS_TEXT + "\n## Alpha (2026-01-04 10:00 UTC)\n\nsecond alpha table\n"
    text = common.replace_section(doubled, "Alpha", "## Alpha (2026-02-01 09:00 UTC)\n\nnew alpha table\n")
    assert titles(text, common) == ["Alpha", "Beta, variant", "Gamma"]
    assert "second alpha table" not in text


def test_a_section_with_another_title_is_refused(common):
    with pytest.raises(ValueError, match="Alpha"):
        common.replace_section(RESULTS_TEXT, "Alpha", "## Beta (2026-02-01 09:00 UTC)\n\ntable\n")


def test_write_results_section_replaces_on_rerun(common, tmp_path, monkeypatch):
    results = tmp_path / "RESULTS.md"
    results.write_text(RESULTS_TEXT)
    monkeypatch.setattr(common, "RESULTS", results)
    monkeypatch.setattr(sys, "argv", ["learning.py", "--parts", "beat"])
    for run in ("first run", "second run"):
        common.append_results("Beta, variant", "test machine", "a note", f"| {run} |")
    text = results.read_text()
    assert titles(text, common) == ["Alpha", "Beta, variant", "Gamma"]
    assert "| second run |" in text and "| first run |" not in text and "beta table" not in text
    assert "Command: `python benchmarks/learning.py --parts beat`" in text
    assert "old alpha table" in text and "gamma table" in text
    assert not (tmp_path / "RESULTS.md.partial").exists()


def load_learning(monkeypatch):
    """Import benchmarks/learning.py as a module; it imports ``common`` from its own folder."""
    path = COMMON.parent / "learning.py"
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location("learning", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "learning", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_learning_parts_replace_their_own_sections_on_rerun(monkeypatch, tmp_path):
    import ray

    learning = load_learning(monkeypatch)
    results = tmp_path / "RESULTS.md"
    results.write_text(RESULTS_TEXT)
    monkeypatch.setattr(sys.modules["common"], "RESULTS", results)
    monkeypatch.setattr(ray, "init", lambda **kwargs: None)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(learning, "best_scripted", lambda episodes: ("pareto", 6.08))
    monkeypatch.setattr(learning, "plot_curve", lambda *args: None)
    runs = iter(range(100))

    def time_to_beat(workdir, target, episodes, max_minutes, lr, framework):
        return {"curve": [(60.0, 1000, 6.1)], "beaten": {"seconds": 60.0, "steps": 1000, "iteration": 3},
                "steps_per_s": 5000.0, "env_steps": 1000, "iter_rates": [5000.0]}

    def framework_run(framework, workdir, steps, episodes):
        return {"wall": 10.0, "steps": steps, "rate": 1000.0 + next(runs), "score": 5.5}

    monkeypatch.setattr(learning, "time_to_beat", time_to_beat)
    monkeypatch.setattr(learning, "framework_run", framework_run)
    monkeypatch.setattr(sys, "argv", ["learning.py", "--parts", "beat", "speed", "--speed-steps", "100"])
    learning.main()
    learning.main()
    text = results.read_text()
    expected = [learning.PART_TITLES["beat"], learning.PART_TITLES["speed"]]
    assert titles(text, sys.modules["common"]) == ["Alpha", "Beta, variant", "Gamma", *expected]
    speed = text.split(f"## {learning.PART_TITLES['speed']}")[1]
    assert "| RLlib, 100 env steps" in speed and "time to beat it" not in speed
    assert "1,003 / 5.50" in speed and "1,000 / 5.50" not in speed  # the second run's rates, not the first's
