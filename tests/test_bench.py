"""The attack x defense grid: validation before work, episodes per cell, CSV resume, summary, CLI."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from parley.attacks.bench import (
    BenchConfig,
    draw_pairs,
    grid_cells,
    mean_ci95,
    read_rows,
    run_grid,
    summarize,
    summary_markdown,
    validate,
)
from parley.cli import app


def _tiny(tmp_path, **changes) -> BenchConfig:
    base = dict(dataset="digits", attacks=("badnets",), defenses=("none", "spectral", "strip"), pairs=1, seeds=1,
                budget=0.05, recipe="tiny", train_subset=30, victim_kwargs={"width": 8}, out=str(tmp_path / "out"),
                device="cpu", defense_kwargs={"strip": {"n_overlays": 8}})
    base.update(changes)
    return BenchConfig(**base)


def test_validation_names_every_problem_before_any_work(tmp_path):
    config = _tiny(tmp_path, dataset="imagenet", attacks=("badnets", "nope"), defenses=("spectrall",))
    with pytest.raises(ValueError) as info:
        run_grid(config, progress=False)
    message = str(info.value)
    assert "unknown dataset 'imagenet'" in message and "digits" in message
    assert "unknown attack(s) 'nope'" in message and "sleeper_agent" in message
    assert "unknown defense(s) 'spectrall'" in message and "spectral" in message
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="badnets"):
        validate(_tiny(tmp_path, attack_kwargs={"badnets": {"no_such_option": 1}}))
    with pytest.raises(ValueError, match="not in the grid: htba"):
        validate(_tiny(tmp_path, attack_kwargs={"htba": {}}))
    with pytest.raises(ValueError, match="cifar10.*path"):
        validate(_tiny(tmp_path, dataset="cifar10"))


def test_pairs_are_distinct_shared_and_seeded():
    pairs = draw_pairs(10, 5, seed=3)
    assert len(set(pairs)) == 5 and all(s != t for s, t in pairs)
    assert pairs == draw_pairs(10, 5, seed=3) and pairs != draw_pairs(10, 5, seed=4)
    with pytest.raises(ValueError, match="only 6"):
        draw_pairs(3, 7)
    cells = grid_cells(BenchConfig(attacks=("a", "b"), defenses=("none", "spectral"), pairs=2, seeds=3), 10)
    assert len(cells) == 2 * 2 * 2 * 3
    assert {(c.source_class, c.target_class) for c in cells} == set(draw_pairs(10, 2, 0))


def test_grid_runs_episodes_writes_outputs_and_skips_done_cells_on_rerun(tmp_path):
    config = _tiny(tmp_path)
    rows = run_grid(config, progress=False)
    assert len(rows) == 3 and not any(r["error"] for r in rows)
    by_defense = {r["defense"]: r for r in rows}
    for row in rows:
        assert 0.0 <= float(row["attack_success_rate"]) <= 1.0
        assert 0.0 <= float(row["clean_accuracy"]) <= 1.0
        assert int(row["poisons"]) == 15  # 5% of 300 training images
    assert int(by_defense["none"]["removed"]) == 0
    assert int(by_defense["spectral"]["removed"]) > 0 and by_defense["spectral"]["poison_recall"] != ""
    assert 0.0 <= float(by_defense["strip"]["strip_detection_rate"]) <= 1.0
    out = tmp_path / "out"
    assert "| badnets | spectral | 1 |" in (out / "summary.md").read_text()
    assert (out / "asr.png").stat().st_size > 1000

    ran = []
    again = run_grid(config, progress=False, on_row=ran.append)
    assert ran == [] and len(again) == 3  # every cell was already in the CSV
    more = run_grid(_tiny(tmp_path, defenses=("none", "spectral", "strip", "dp_sgd")), progress=False,
                    on_row=ran.append)
    assert [r["defense"] for r in ran] == ["dp_sgd"] and len(more) == 4
    assert len(read_rows(out / "results.csv")) == 4


def test_summary_averages_seeds_per_pair_then_gives_a_95_ci_over_pairs_and_skips_failed_cells():
    def row(source, seed, asr):
        return {"attack": "a", "defense": "none", "source_class": source, "target_class": 9, "seed": seed,
                "attack_success_rate": asr, "clean_accuracy": "0.9", "error": ""}

    # pair 1: seeds 0.1 and 0.3 -> 0.2; pair 2: 0.4; pair 3: 0.6
    rows = [row(1, 0, "0.1"), row(1, 1, "0.3"), row(2, 0, "0.4"), row(3, 0, "0.6")]
    rows.append({"attack": "a", "defense": "none", "source_class": 4, "target_class": 9,
                 "attack_success_rate": "", "error": "RuntimeError: boom"})
    (entry,) = summarize(rows)
    assert entry["cells"] == 4 and entry["failed"] == 1 and entry["pairs"] == 3
    mean, half = entry["attack_success_rate"]
    # t(0.975, 2) = 4.303; the pair means 0.2, 0.4, 0.6 have sample std 0.2
    assert mean == pytest.approx(0.4) and half == pytest.approx(4.3027 * 0.2 / math.sqrt(3), rel=1e-3)
    assert math.isnan(entry["craft_time_s"][0])
    assert "| a | none | 4 (1 failed) | 40.0 ± 49.7 | – | 90.0 ± 0.0 |" in summary_markdown([entry])
    assert mean_ci95([0.5]) == (0.5, pytest.approx(math.nan, nan_ok=True))


def test_cli_rejects_unknown_names_and_runs_a_cell(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["bench", "attacks", "--attacks", "badnets,teleport", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "teleport" in bad.output
    assert not (tmp_path / "x").exists()
    good = runner.invoke(app, ["bench", "attacks", "--attacks", "random", "--defenses", "none", "--pairs", "1",
                               "--seeds", "1", "--recipe", "tiny", "--train-subset", "20", "--width", "8",
                               "--budget", "0.05", "--device", "cpu", "--quiet", "--out", str(tmp_path / "cli")])
    assert good.exit_code == 0, good.output
    assert "| random | none | 1 |" in good.output
    assert len(read_rows(tmp_path / "cli" / "results.csv")) == 1


def test_local_processes_run_cells(tmp_path):
    config = _tiny(tmp_path, attacks=("random",), defenses=("none", "mixup"), workers=2, executor="process",
                   defense_kwargs={})
    rows = run_grid(config, progress=False)
    assert sorted(r["defense"] for r in rows) == ["mixup", "none"]
    assert not any(r["error"] for r in rows)


@pytest.mark.slow
def test_ray_tasks_run_cells(tmp_path):
    pytest.importorskip("ray")
    config = _tiny(tmp_path, attacks=("random",), defenses=("none", "cutout"), workers=2, executor="ray",
                   defense_kwargs={})
    rows = run_grid(config, progress=False)
    assert sorted(r["defense"] for r in rows) == ["cutout", "none"]
    assert not any(r["error"] for r in rows)


def load_benchmark(name: str, monkeypatch):
    """Import ``benchmarks/<name>.py`` as a module (the scripts are not part of the package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    monkeypatch.syspath_prepend(str(path.parent))  # the scripts import the benchmarks' common module
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # their dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_poisoning_digits_variants_change_the_dataset_schedule_or_a_named_preset(monkeypatch):
    from parley.attacks.datasets import make_synthetic
    from parley.attacks.sleeper_agent import SleeperAgentConfig

    module = load_benchmark("poisoning_digits", monkeypatch)
    small = make_synthetic(num_classes=3, image_size=8, channels=1, train_per_class=4, test_per_class=2, seed=0)
    assert module.parse_variant("aug:augment=True,lr_drops=(0.5,0.75)", small) == (
        "aug", SleeperAgentConfig.small_images(augment=True, lr_drops=(0.5, 0.75)))
    assert module.parse_variant("paper:preset=paper", small) == ("paper", SleeperAgentConfig.paper())
    assert module.parse_variant("p4:preset=paper,steps=4", small) == ("p4", SleeperAgentConfig.paper(steps=4))
    with pytest.raises(SystemExit, match="preset must be one of paper, small_images"):
        module.parse_variant("x:preset=fast", small)
    with pytest.raises(SystemExit, match="SleeperAgentConfig field"):
        module.parse_variant("x:stepz=3", small)
    with pytest.raises(SystemExit, match="LABEL:FIELD=VALUE"):
        module.parse_variant("nolabel", small)
    assert "no augmentation while crafting" in module.describe(SleeperAgentConfig.small_images())
    assert "matched against 2 surrogate(s)" in module.describe(SleeperAgentConfig.small_images())
    assert "divided by 10 at steps 93/156/218" in module.describe(SleeperAgentConfig.paper())


def test_sleeper_vs_art_reads_variants_and_pairs_and_refuses_bad_ones(monkeypatch):
    from parley.attacks.sleeper_agent import SleeperAgentConfig

    module = load_benchmark("sleeper_vs_art", monkeypatch)
    base = SleeperAgentConfig.small_images()
    assert module.parse_variants("", base) == [("parley", base)]
    variants = module.parse_variants("base;snap:surrogate_snapshots=(0.25,0.5),steps=80", base)
    assert [name for name, _ in variants] == ["parley base", "parley snap"]
    assert variants[0][1] == base
    assert variants[1][1] == SleeperAgentConfig.small_images(surrogate_snapshots=(0.25, 0.5), steps=80)
    with pytest.raises(SystemExit, match="SleeperAgentConfig field"):
        module.parse_variants("x:no_such_field=1", base)
    with pytest.raises(SystemExit, match="Python literal"):
        module.parse_variants("x:steps=many", base)
    assert module.parse_pairs("2->3, 8->4", 10) == [(2, 3), (8, 4)]
    for bad in ("2-3", "3->3", "2->10"):
        with pytest.raises(SystemExit, match="--pair-list"):
            module.parse_pairs(bad, 10)


def test_sleeper_schedule_curve_averages_each_setting_over_its_pairs(monkeypatch):
    module = load_benchmark("sleeper_schedule", monkeypatch)

    def row(schedule, budget, eps, pair, asr, clean=0.97):
        return {"schedule": schedule, "overrides": {}, "budget": budget, "eps_255": eps, "pair": list(pair),
                "asr": asr, "clean_accuracy": clean, "width": 16, "craft_s": 1.0}

    rows = [row("small_images", 0.05, 128.0, (3, 8), 0.75), row("small_images", 0.05, 16.0, (3, 8), 0.10),
            row("small_images", 0.05, 128.0, (6, 1), 0.35), row("none", 0.05, 16.0, (3, 8), 0.0625, 0.98),
            row("small_images", 0.05, 128.0, (7, 1), 0.5375, 0.94), row("small_images", 0.1, 64.0, (3, 8), 0.9)]
    lines = module.curve(rows).splitlines()[2:]
    assert len(lines) == 4  # one line per setting, the patch alone first, then by budget and eps
    assert lines[0].startswith("| none | – | – | – | 16 | 3->8 | 6.2 |")
    assert lines[1].startswith("| small_images | – | 5% | 16/255 | 16 | 3->8 | 10.0 | 10.0-10.0 |")
    assert lines[2] == "| small_images | – | 5% | 128/255 | 16 | 3->8, 6->1, 7->1 | 54.6 | 35.0-75.0 | 96.0 |"
    assert lines[3].startswith("| small_images | – | 10% | 64/255 | 16 | 3->8 | 90.0 |")


def test_learning_adapter_arms_become_compacter_options_the_backbone_accepts(monkeypatch):
    from parley.agents.nn.compacter import CompacterBackboneConfig

    module = load_benchmark("learning", monkeypatch)
    label, options = module.adapter_arm("policy_head@parallel:16+value_head.bias", "compacter++", 4, 1, 32)
    assert label == "Compacter beside the policy head (n 4, rank 1, reduction 16, value_head.bias trained)"
    assert options == {"n": 4, "rank": 1, "reduction": 16, "plus_plus": True, "placement": "parallel",
                       "also_train": ["value_head.bias"], "target_modules": ["policy_head"]}
    label, options = module.adapter_arm("default", "compacter", 4, 1, 32)
    assert label == "Compacter (n 4, rank 1, reduction 32)" and "placement" not in options
    assert module.adapter_arm("ff,policy_head:8", "compacter++", 4, 1, 32)[1]["target_modules"] == ["ff", "policy_head"]
    for arm in ("policy_head@parallel:16+value_head.bias", "default", "ff,policy_head:8"):
        CompacterBackboneConfig(**module.adapter_arm(arm, "compacter++", 4, 1, 32)[1])  # every key is a field
    with pytest.raises(SystemExit, match="the only placement after '@' is 'parallel'"):
        module.adapter_arm("policy_head@side", "compacter++", 4, 1, 32)
    with pytest.raises(SystemExit, match="must be a positive integer"):
        module.adapter_arm("policy_head:0", "compacter++", 4, 1, 32)


def test_learning_adapter_rows_pair_ratios_by_seed_and_name_the_pretraining(monkeypatch):
    import argparse

    module = load_benchmark("learning", monkeypatch)
    study = {"before": 5.0, "pretrain_reused": True, "pretrain_wall": 0.0, "pretrain_steps": 80_000,
             "full": {"score": 6.5, "scores": [6.0, 7.0], "steps": 40_000, "wall": 300.0, "trainable": 1000},
             "arms": {"beside": {"scores": [5.7, 6.3], "steps": 40_000, "wall": 100.0, "trainable": 1,
                                 "total": 1000, "trained": "adapters on policy_head"}}}
    args = argparse.Namespace(finetune_seeds=2, first_finetune_seed=0, pretrain_seeds=[0, 3], adapter_framework="rllib",
                              d_model=256, n_layers=1, full_lr=1e-3, adapter_lr=1e-2, adapter_eval_episodes=1000,
                              full_epochs=4, adapter_epochs=16, full_batch=8192, adapter_batch=2048,
                              pretrain_lr=3e-4, pretrain_partners=["boulware", "hardliner"])
    lines, means = module.adapter_rows(study, args, 3)
    # Paired by seed: 5.7/6.0 = 95% and 6.3/7.0 = 90%, not 12.0/13.0; gain recovered 70% and 65%.
    ratio, recovered = means["beside"]
    assert ratio == pytest.approx(92.5) and recovered == pytest.approx(67.5)
    assert all("[pretraining seed 3]" in line for line in lines)
    assert "(seed 3, lr 0.0003) vs boulware,hardliner" in lines[0]
    assert any("92.5 ± 2.5% / 68 ± " in line for line in lines)
    assert any("16 PPO epochs per batch of 2,048 steps" in line for line in lines if "adapters only" in line)
    assert any("4 PPO epochs per batch of 8,192 steps" in line
               for line in lines if "full fine-tuning" in line)
    args.pretrain_seeds = [3]
    assert not any("pretraining seed 3]" in line for line in module.adapter_rows(study, args, 3)[0])


def test_learning_full_scores_must_match_the_fine_tuning_seeds(monkeypatch):
    module = load_benchmark("learning", monkeypatch)
    monkeypatch.setattr("sys.argv", ["learning.py", "--parts", "adapters", "--finetune-seeds", "3", "--full-scores", "6.2",
                                     "6.3", "--no-append"])
    with pytest.raises(SystemExit, match=r"one score per fine-tuning seed \(3\).*got 2 scores"):
        module.main()
    monkeypatch.setattr("sys.argv", ["learning.py", "--parts", "adapters", "--pretrain-seeds", "0", "1",
                                     "--full-scores", "6.2", "--no-append"])
    with pytest.raises(SystemExit, match="one pretraining seed"):
        module.main()


def test_learning_pretrains_only_against_partners_outside_the_fine_tuning_pool(monkeypatch):
    module = load_benchmark("learning", monkeypatch)
    monkeypatch.setattr("sys.argv", ["learning.py", "--parts", "adapters", "--pretrain-partners", "boulware",
                                     "conceder", "--no-append"])
    with pytest.raises(SystemExit, match=r"may not include the fine-tuning pool \(conceder, fair_split, pareto\)"):
        module.main()
    monkeypatch.setattr("sys.argv", ["learning.py", "--parts", "adapters", "--pretrain-partners", "bulware",
                                     "--no-append"])
    with pytest.raises(SystemExit, match="unknown partner 'bulware'; known partners: random"):
        module.main()


def test_learning_reuses_a_pretraining_only_with_the_same_seed_rate_shape_pool_and_steps(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import yaml

    from parley.agents.training.run import TrainConfig

    module = load_benchmark("learning", monkeypatch)
    monkeypatch.setattr("parley.agents.nn.torch_policy.load_policy",
                        lambda *args, **kwargs: SimpleNamespace(metadata={"env_steps": 81_920}))
    shape = {"d_model": 512, "n_heads": 4, "n_layers": 1}
    pool = ["boulware", "linear", "hardliner"]
    saved = TrainConfig(backbone="transformer", backbone_config=shape, seed=0, lr=3e-4, partners=pool).to_dict()
    (tmp_path / module.CONFIG_FILE).write_text(yaml.safe_dump(saved))

    def found(steps=80_000, seed=0, backbone_config=shape, lr=3e-4, partners=("hardliner", "boulware", "linear")):
        return module.finished_pretraining(tmp_path, steps, seed, backbone_config, lr, list(partners)) is not None

    assert found()
    assert not found(lr=1e-3)
    assert not found(seed=1)
    assert not found(backbone_config={**shape, "d_model": 256})
    assert not found(partners=module.OLD_POOL)
    assert not found(steps=100_000)  # interrupted before the requested budget
    assert not module.finished_pretraining(tmp_path / "empty", 80_000, 0, shape, 3e-4, pool)


def test_learning_keeps_finished_fine_tunings_beside_the_pretraining_and_reuses_only_identical_ones(
        monkeypatch, tmp_path):
    from types import SimpleNamespace

    module = load_benchmark("learning", monkeypatch)
    calls = []

    def fake_finetune(study, pretrain_out, out, seed, extra):
        calls.append((extra.get("adapters"), extra["num_epochs"], seed))
        result = {"score": 6.0 + 0.1 * seed + 0.01 * extra["num_epochs"], "wall": 1.0,
                  "steps": study.finetune_steps, "trainable": 10, "total": 1000}
        return {**result, "trained": "adapters on policy_head"} if "adapters" in extra else result

    monkeypatch.setattr(module, "finished_pretraining",
                        lambda *args: SimpleNamespace(metadata={"env_steps": 80_000}))
    monkeypatch.setattr(module, "suite_score", lambda *args: 5.0)
    monkeypatch.setattr(module, "finetune_once", fake_finetune)

    def study(**changes):
        settings = dict(pretrain_steps=80_000, finetune_steps=40_000, episodes=10,
                        backbone_config={"d_model": 8}, arms={"beside": {"target_modules": ["policy_head"]}},
                        full_lr=1e-3, adapter_lr=1e-2, finetune_seeds=2, pretrain_dir=tmp_path)
        return module.AdapterStudy(**{**settings, **changes})

    first = module.adapters_run(tmp_path / "work", study())
    assert len(calls) == 4 and (tmp_path / module.FinetuneCache.FILE).is_file()
    again = module.adapters_run(tmp_path / "work", study())
    assert len(calls) == 4  # every run was kept
    assert again["arms"]["beside"]["scores"] == first["arms"]["beside"]["scores"]
    assert again["full"]["kept"] == 2 and first["full"]["kept"] == 0
    # Another epoch count is another fine-tuning: only the adapters are trained again.
    changed = module.adapters_run(tmp_path / "work", study(adapter_epochs=16))
    assert calls[4:] == [("compacter", 16, 0), ("compacter", 16, 1)]
    assert changed["full"]["scores"] == first["full"]["scores"]
    assert changed["arms"]["beside"]["scores"] != first["arms"]["beside"]["scores"]
    # Without --pretrain-dir nothing is kept.
    module.adapters_run(tmp_path / "other", study(pretrain_dir=None))
    assert len(calls) == 10
