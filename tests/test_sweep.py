"""Sweep expansion as data: combinations, slugs and hashes, groups, checkpoint order, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from rollouts.cli import main
from rollouts.errors import UserInputError
from rollouts.sweep import expand_sweep, order_by_step, step_number


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name in ("gsm8k", "math"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"prompt": "1+1?"}) + "\n")
    for step in (500, 50, 100, 5):
        folder = tmp_path / "ckpts" / f"global_step_{step}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
    return tmp_path


def sweep_of(workdir: Path, **data: Any) -> Any:
    return expand_sweep(data, workdir, where="s.yaml")


@pytest.mark.parametrize(
    ("name", "step"),
    [("global_step_50", 50), ("step_7", 7), ("checkpoint-1200", 1200), ("epoch_30", 30),
     ("iter_0000400", 400), ("run3-global_step_20", 20), ("final", None), ("step-9", 9)],
)
def test_step_number_is_parsed_from_the_name(name: str, step: int | None) -> None:
    assert step_number(f"/ckpts/{name}") == step


def test_checkpoints_are_ordered_by_step_numerically() -> None:
    names = ["epoch_30", "final", "epoch_5", "epoch_10"]
    assert order_by_step(names) == ["epoch_5", "epoch_10", "epoch_30", "final"]


def test_checkpoint_glob_expands_in_step_order_with_one_group_each(workdir: Path) -> None:
    sweep = sweep_of(workdir, checkpoints="ckpts/global_step_*", datasets=["gsm8k.jsonl"],
                     grid={"temperature": [0.6, 1.0, 1.2]}, output_dir="out")
    models = [Path(c.config["model"]).name for c in sweep.combinations]
    assert models[::3] == ["global_step_5", "global_step_50", "global_step_100", "global_step_500"]
    assert len(sweep.combinations) == 12
    assert [len(g.combinations) for g in sweep.groups] == [3, 3, 3, 3]  # one model load each
    assert sweep.varying == ("model", "temperature")


def test_grid_and_zip_combine_and_slugs_name_the_varying_values(workdir: Path) -> None:
    sweep = sweep_of(
        workdir, model="Qwen/Qwen2.5-0.5B", datasets=[{"path": "gsm8k.jsonl"}],
        defaults={"n": 8}, grid={"temperature": [0.6, 1.0]},
        zip={"top_p": [0.9, 1.0], "seed": [1, 2]}, output_dir="out",
    )
    values = [(c.values["temperature"], c.values["top_p"], c.values["seed"])
              for c in sweep.combinations]
    assert values == [(0.6, 0.9, 1), (0.6, 1.0, 2), (1.0, 0.9, 1), (1.0, 1.0, 2)]
    first = sweep.combinations[0]
    assert first.slug == f"t0.6-p0.9-s1-{first.config_hash}" and len(first.config_hash) == 6
    assert first.directory == (workdir / "out" / first.slug).resolve()
    entry = first.config["datasets"][0]
    assert entry["temperature"] == 0.6 and entry["top_p"] == 0.9 and first.config["seed"] == 1
    assert entry["output"] == str(first.directory / "gsm8k.parquet")
    assert entry["path"] == str(workdir / "gsm8k.jsonl")
    # seed is a server setting: each seed is its own model load.
    assert [len(g.combinations) for g in sweep.groups] == [2, 2]


def test_the_hash_follows_results_not_operational_options(workdir: Path) -> None:
    base = {"model": "m", "datasets": ["gsm8k.jsonl"], "grid": {"n": [4, 8]}, "output_dir": "o"}
    hashes = [c.config_hash for c in sweep_of(workdir, **base).combinations]
    faster = [c.config_hash for c in sweep_of(workdir, **base, max_concurrent=512,
                                              retry_errors=True).combinations]
    other = [c.config_hash for c in sweep_of(workdir, **base, defaults={"max_tokens": 64})
             .combinations]
    assert hashes == faster
    assert len(set(hashes)) == 2 and not set(hashes) & set(other)


def test_datasets_swept_are_one_per_combination_and_grouped_per_model(workdir: Path) -> None:
    sweep = sweep_of(
        workdir, checkpoints=["ckpts/global_step_100", "ckpts/global_step_50"],
        grid={"temperature": [0.6, 1.0], "datasets": ["gsm8k.jsonl", {"path": "math.jsonl",
                                                                     "name": "math500"}]},
        output_dir="out",
    )
    assert len(sweep.combinations) == 8 and len(sweep.groups) == 2
    assert sweep.combinations[0].slug.startswith("global_step_50-t0.6-gsm8k-")
    assert sweep.combinations[1].slug.startswith("global_step_50-t0.6-math500-")
    group = sweep.groups[0]
    config = group.run_config(group.combinations, sweep.root)
    outputs = [d["output"] for d in config["datasets"]]
    assert len(outputs) == 4 and len(set(outputs)) == 4
    assert {Path(o).parent.name for o in outputs} == {c.slug for c in group.combinations}
    assert config["model"].endswith("global_step_50")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"model": "m", "datasets": ["gsm8k.jsonl"], "grid": {"gpu_memory_utilization": [0.8]}},
         "`gpu_memory_utilization` cannot be swept"),
        ({"model": "m", "datasets": ["gsm8k.jsonl"], "zip": {"temperature": [0.6, 1.0],
                                                           "top_p": [0.9, 0.95, 1.0]}},
         "zip lists differ in length (temperature: 2, top_p: 3)"),
        ({"checkpoints": "ckpts/step_*", "datasets": ["gsm8k.jsonl"]},
         "'ckpts/step_*' matches no directory"),
        ({"checkpoints": ["gsm8k.jsonl"], "datasets": ["gsm8k.jsonl"]}, "is not a directory"),
        ({"checkpoints": ["."], "datasets": ["gsm8k.jsonl"]}, "no config.json"),
        ({"model": "m", "checkpoints": ["ckpts/global_step_5"], "datasets": ["gsm8k.jsonl"]},
         "set `model` or `checkpoints`, not both"),
        ({"model": "m", "datasets": ["gsm8k.jsonl"], "grid": {"temperature": 0.6}},
         "`temperature` must be a non-empty list"),
        ({"model": "m", "datasets": ["gsm8k.jsonl"], "grid": {"n": [1]}, "zip": {"n": [2]}},
         "swept under both grid and zip"),
        ({"model": "m", "grid": {"n": [1, 2]}}, "no datasets"),
        ({"model": "m", "datasets": {"path": "gsm8k.jsonl"}}, "no datasets"),
        ({"model": "m", "datasets": ["gsm8k.jsonl"], "zip": {"checkpoints": "ckpts/*",
                                                           "temperature": [0.1, 0.2]}},
         "zip lists differ in length (checkpoints: 4, temperature: 2)"),
        ({"model": "m", "datasets": ["gsm8k.jsonl"], "grids": {"n": [1]}}, "unknown key(s) ['grids']"),
    ],
)
def test_bad_sweeps_are_refused_in_one_line(
    workdir: Path, data: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserInputError) as info:
        sweep_of(workdir, **data)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("s.yaml")


def test_dry_run_prints_the_table_and_runs_nothing(workdir: Path) -> None:
    sweep_file = workdir / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "checkpoints": "ckpts/global_step_5*", "output_dir": "out",
        "datasets": ["gsm8k.jsonl", "math.jsonl"], "grid": {"temperature": [0.6, 1.0]},
    }))
    result = CliRunner().invoke(main, ["sweep", str(sweep_file), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["combination", "group", "model", "temperature", "status"]
    assert len(lines) == 1 + 6
    models = [line.split()[2] for line in lines[1::2]]
    assert models == ["global_step_5", "global_step_50", "global_step_500"]
    assert lines[2].split()[0].startswith("global_step_5-t1.0-")
    assert all(line.split()[-1] == "pending" for line in lines[1:])
    assert "6 combinations in 3 model load(s)" in result.stderr
    assert not (workdir / "out").exists()


def test_dry_run_on_slurm_prints_one_job_per_checkpoint_and_submits_nothing(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no sbatch: a dry run must not need it
    sweep_file = workdir / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "checkpoints": ["ckpts/global_step_50", "ckpts/global_step_5"], "output_dir": "out",
        "datasets": ["gsm8k.jsonl", "math.jsonl"], "grid": {"temperature": [0.6, 1.0]},
        "slurm": {"array_size": 3, "time": "02:00:00", "job_name": "eval", "log_dir": "logs"},
    }, sort_keys=False))
    result = CliRunner().invoke(main, ["sweep", str(sweep_file), "--dry-run", "--slurm"])
    assert result.exit_code == 0, result.output
    arrays = result.stdout.split("array script =====")[1:]
    assert len(arrays) == 2
    for array, step in zip(arrays, ("global_step_5-", "global_step_50-"), strict=True):
        assert "#SBATCH --array=0-2" in array  # 4 datasets x 1 prompt: 4 units, 3 tasks
        assert f"#SBATCH --job-name=eval-{step}" in array
        assert f"#SBATCH --output={workdir / 'logs' / step}" in array
        assert "#SBATCH --time=02:00:00" in array and "slurm task" in array
    assert not (workdir / "out").exists() and not (workdir / "logs").exists()


def test_slurm_needs_a_slurm_section(workdir: Path) -> None:
    sweep_file = workdir / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({"model": "m", "datasets": ["gsm8k.jsonl"]}))
    result = CliRunner().invoke(main, ["sweep", str(sweep_file), "--slurm"])
    assert result.exit_code == 1 and "needs a `slurm:` section" in result.stderr
