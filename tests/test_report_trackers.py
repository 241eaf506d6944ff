"""`rollouts report --tensorboard DIR --wandb PROJECT`: every metric of every checkpoint, with its
interval, read back from the event files and from W&B's offline run files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from rollouts.cli import main


@pytest.fixture(autouse=True)
def one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROLLOUTS_RAISE", raising=False)


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["report", *map(str, args), "--bootstrap", "100", "--permutations", "100"],
                              catch_exceptions=False)


def scored_run(directory: Path, step: int | None, temperature: float, accs: list[int]) -> Path:
    """A scored run of checkpoint global_step_STEP (or model `base`) at one temperature: one
    sample per prompt of task math__a, one of logic__b."""
    model = f"ckpts/global_step_{step}" if step is not None else "base"
    rows: list[dict[str, Any]] = [
        {"model": model, "data_source": task, "prompt_id": f"{task}-{p}", "sample_idx": 0,
         "score": float(acc), "acc": bool(acc), "pred": None, "answer_class": None,
         "score_status": "ok", "temperature": temperature}
        for task in ("math__a", "logic__b") for p, acc in enumerate(accs)
    ]
    path = directory / f"{model.replace('/', '_')}-t{temperature}.scored.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


def sweep_inputs(directory: Path) -> list[Path]:
    """2 checkpoints x 2 temperatures; accuracy 1/4, 2/4 at t0.6 and 3/4, 4/4 at t1.0."""
    return [
        scored_run(directory, 50, 0.6, [1, 0, 0, 0]),
        scored_run(directory, 100, 0.6, [1, 1, 0, 0]),
        scored_run(directory, 50, 1.0, [1, 1, 1, 0]),
        scored_run(directory, 100, 1.0, [1, 1, 1, 1]),
    ]


def read_events(run_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {
        tag: {event.step: float(make_ndarray(event.tensor_proto)) for event in events.Tensors(tag)}
        for tag in events.Tags()["tensors"]
    }


def test_tensorboard_logs_every_metric_per_step_and_setting_with_intervals(tmp_path: Path) -> None:
    inputs = sweep_inputs(tmp_path / "scored")
    board = tmp_path / "board"
    result = run(*inputs, "-o", tmp_path / "report", "--tensorboard", board)
    assert result.exit_code == 0, result.output
    assert "tensorboard: 2 run(s)" in result.output
    assert sorted(p.name for p in board.iterdir()) == ["temperature=0.6", "temperature=1.0"]
    cold, hot = read_events(board / "temperature=0.6"), read_events(board / "temperature=1.0")
    assert cold["math__a/mean@n"] == pytest.approx({50: 0.25, 100: 0.5})
    assert hot["math__a/mean@n"] == pytest.approx({50: 0.75, 100: 1.0})
    assert hot["overall/mean@n"] == pytest.approx({50: 0.75, 100: 1.0})
    assert set(cold) >= {"logic__b/pass@1", "domain/math/mean@n", "domain/logic/mean@n_lo", "overall/mean@n_hi"}
    # The interval bounds are the report's own.
    tidy = pd.read_parquet(tmp_path / "report" / "metrics.parquet")
    row = tidy[(tidy["level"] == "task") & (tidy["task"] == "math__a") & (tidy["metric"] == "mean@n")
               & (tidy["label"].str.contains("global_step_50")) & (tidy["label"].str.contains("0.6"))].iloc[0]
    assert cold["math__a/mean@n_lo"][50] == pytest.approx(row["ci_low"])
    assert cold["math__a/mean@n_hi"][50] == pytest.approx(row["ci_high"])
    assert row["ci_low"] < 0.25 < row["ci_high"]


def test_a_model_without_a_step_is_logged_at_step_zero_and_says_so(tmp_path: Path) -> None:
    base = scored_run(tmp_path / "scored", None, 0.6, [1, 1, 0, 0])
    board = tmp_path / "board"
    result = run(base, "-o", tmp_path / "report", "--tensorboard", board)
    assert result.exit_code == 0, result.output
    assert "no checkpoint step in base: logged at step 0" in result.output
    (run_dir,) = board.iterdir()
    assert read_events(run_dir)["math__a/mean@n"] == pytest.approx({0: 0.5})


def test_wandb_offline_run_per_setting_holds_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wb").mkdir()
    inputs = sweep_inputs(tmp_path / "scored")
    result = run(*inputs, "-o", tmp_path / "report", "--wandb", "evals")
    assert result.exit_code == 0, result.output
    assert "wandb: 2 run(s) in project evals" in result.output
    runs = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    history = {}
    for run_dir in runs:  # W&B keeps an offline run as records in its .wandb file, read here
        name, project, rows = logged_run(next(run_dir.glob("*.wandb")))
        assert project == "evals"
        history[name] = rows
    assert [(h["_step"], h["math__a/mean@n"]) for h in history["temperature=0.6"]] == [(50, 0.25), (100, 0.5)]
    assert [(h["_step"], h["overall/mean@n"]) for h in history["temperature=1.0"]] == [(50, 0.75), (100, 1.0)]
    assert {"math__a/mean@n_lo", "math__a/mean@n_hi", "domain/logic/pass@1"} <= set(history["temperature=1.0"][0])


def wandb_records(path: Path) -> list[bytes]:
    """The records of a .wandb file: a 7-byte `:W&B` header, then LevelDB's log format (32 KiB
    blocks of chunks, each with a 7-byte header: crc32c, length, type full/first/middle/last)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, at = [], b"", 7
    while at + 7 <= len(data):
        left_in_block = 32768 - at % 32768
        if left_in_block < 7:  # too short for a chunk header: padding
            at += left_in_block
            continue
        length, kind = int.from_bytes(data[at + 4:at + 6], "little"), data[at + 6]
        chunk, at = data[at + 7:at + 7 + length], at + 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(pending)
    return records


def logged_run(path: Path) -> tuple[str, str, list[dict[str, Any]]]:
    """A .wandb file's run name, project and history rows, parsed with W&B's own protobufs."""
    from wandb.proto import wandb_internal_pb2

    name = project = ""
    rows = []
    for data in wandb_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "run":
            name, project = record.run.display_name, record.run.project
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return name, project, rows


def test_a_missing_tracker_package_is_one_line_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    inputs = sweep_inputs(tmp_path / "scored")
    result = run(*inputs, "-o", tmp_path / "report", "--wandb", "evals")
    assert result.exit_code != 0
    assert "--wandb needs the [trackers] extra: pip install 'rollouts[trackers]'" in result.output
    assert not (tmp_path / "report").exists()
