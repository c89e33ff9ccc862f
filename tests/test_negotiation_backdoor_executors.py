"""Where the negotiation-backdoor grid's cells run: Ray, processes or serially, with the same rows."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from parley.attacks import _cells
from parley.attacks.bench import read_rows
from parley.attacks.negotiation_bench import NegotiationBenchConfig, run_negotiation_grid
from parley.cli import app


def _tiny(tmp_path, name: str, **changes) -> NegotiationBenchConfig:
    base = dict(attacks=("none", "dirty_label"), defenses=("none", "trusted_oracle"), budgets=(0.05,), seeds=1,
                corpus_size=40, epochs=1, hidden=8, eval_games=10, eval_episodes=2, out=str(tmp_path / name))
    base.update(changes)
    return NegotiationBenchConfig(**base)


def _results(rows: list[dict[str, str]]) -> dict[tuple[str, ...], dict[str, str]]:
    """Rows keyed by their cell, without the wall-clock column."""
    return {(r["attack"], r["defense"], r["budget"], r["seed"]): {k: v for k, v in r.items() if k != "seconds"}
            for r in rows}


def test_unknown_executor_and_bad_settings_are_refused_with_the_allowed_names(tmp_path):
    with pytest.raises(ValueError, match="unknown executor 'cloud'; choose from auto, ray, process, serial"):
        _tiny(tmp_path, "x", executor="cloud")
    with pytest.raises(ValueError, match="workers must be >= 1"):
        _tiny(tmp_path, "x", workers=0)
    with pytest.raises(ValueError, match="needs the ray"):
        _tiny(tmp_path, "x", executor="process", ray_address="127.0.0.1:6379")
    bad = CliRunner().invoke(app, ["bench", "negotiation-backdoor", "--executor", "cloud", "--out",
                                   str(tmp_path / "cli")])
    assert bad.exit_code == 2 and "unknown executor 'cloud'" in bad.output and "serial" in bad.output
    assert not (tmp_path / "cli").exists()
    clash = CliRunner().invoke(app, ["bench", "negotiation-backdoor", "--executor", "serial", "--address",
                                     "10.0.0.1:6379", "--out", str(tmp_path / "cli")])
    assert clash.exit_code == 2 and "needs the ray" in clash.output


def test_where_cells_run_does_not_change_the_configuration_a_resume_matches():
    config = NegotiationBenchConfig()
    for changes in ({"executor": "ray"}, {"executor": "serial"}, {"ray_address": "10.0.0.1:6379"}, {"workers": 4}):
        assert dataclasses.replace(config, **changes).config_id() == config.config_id()


def test_auto_picks_ray_with_an_address_processes_with_workers_else_serial():
    assert _cells.executor_kind("auto", 1, "10.0.0.1:6379") == "ray"
    assert _cells.executor_kind("auto", 3, None) == "process"
    assert _cells.executor_kind("auto", 1, None) == "serial"
    assert _cells.executor_kind("process", 1, None) == "process"


@pytest.mark.slow
def test_ray_tasks_give_the_same_rows_as_a_serial_run_and_resume_from_them(tmp_path):
    pytest.importorskip("ray")
    serial = run_negotiation_grid(_tiny(tmp_path, "serial", executor="serial"), progress=False)
    on_ray = _tiny(tmp_path, "ray", executor="ray", workers=2)
    rows = run_negotiation_grid(on_ray, progress=False)
    assert len(rows) == 3 and not any(r["error"] for r in rows)
    assert _results(rows) == _results(serial)
    # A serial rerun of the same grid finds every cell the Ray run wrote and runs none.
    ran = []
    again = run_negotiation_grid(dataclasses.replace(on_ray, executor="serial"), progress=False, on_row=ran.append)
    assert ran == [] and len(again) == 3
    assert len(read_rows(tmp_path / "ray" / "results.csv")) == 3
