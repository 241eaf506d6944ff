"""`rollouts sweep` end to end against the stand-in `vllm`: model loads, resume after SIGKILL,
DCP checkpoints converted in the run, bad input refused before any server starts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner, Result

import rollouts.client as client
from rollouts.checkpoint import CACHE_ENV, is_converted
from rollouts.cli import main
from rollouts.errors import UserInputError
from tests.generate_helpers import verl_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 120.0

# The stand-in vllm, logging each start and each completed request (not the readiness probe) as
# a JSON line: what the server side saw, independent of the client's own bookkeeping.
LOGGING_VLLM = f"""
import asyncio, json, os, sys
sys.path.insert(0, {str(ROOT)!r})
from tests import fake_vllm
from rollouts.hotswap import PROBE_PROMPTS as PROBES

LOG = os.environ["SWEEP_SERVER_LOG"]
DELAY = float(os.environ.get("SWEEP_REQUEST_DELAY", "0"))

def record(event):
    with open(LOG, "a") as handle:
        handle.write(json.dumps(event) + "\\n")

record({{"event": "start", "pid": os.getpid(), "model": sys.argv[2]}})
original = fake_vllm.FakeEngine._generate

async def logged(self, body, prompt, chat):
    if DELAY:
        await asyncio.sleep(DELAY)
    response = await original(self, body, prompt, chat)
    if not (prompt == "Hello" and body.get("max_tokens") == 1) and prompt not in PROBES:
        record({{"event": "request", "model": body.get("model"), "prompt": prompt,
                "seed": body.get("seed"), "temperature": body.get("temperature")}})
    return response

fake_vllm.FakeEngine._generate = logged
fake_vllm.main(sys.argv[1:])
"""


@pytest.fixture
def server_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "logging_vllm.py"
    script.write_text(LOGGING_VLLM)
    log = tmp_path / "server-events.jsonl"
    monkeypatch.setenv("ROLLOUTS_VLLM", f"{sys.executable} {script}")
    monkeypatch.setenv("SWEEP_SERVER_LOG", str(log))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(client, "INITIAL_RETRY_DELAY_S", 0.01)
    return log


def events(log: Path, kind: str) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [e for e in lines if e["event"] == kind]


def make_checkpoints(root: Path, steps: list[int]) -> None:
    for step in steps:
        folder = root / "ckpts" / f"global_step_{step}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"step": step}))  # no swap between them


def write_sweep(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_sweep(sweep_file: Path, *args: str, expect: int = 0) -> Result:
    result = CliRunner().invoke(main, ["sweep", str(sweep_file), "--no-progress", *args])
    assert result.exit_code == expect, (result.output, result.exception)
    return result


def test_grid_over_checkpoints_loads_each_checkpoint_once(tmp_path: Path, server_log: Path) -> None:
    make_checkpoints(tmp_path, [20, 3])
    write_jsonl(tmp_path / "gsm8k.jsonl", verl_rows(3, tag="g"))
    write_jsonl(tmp_path / "math.jsonl", verl_rows(2, tag="m"))
    sweep_file = write_sweep(tmp_path / "sweep.yaml", {
        "checkpoints": "ckpts/global_step_*", "output_dir": "out", "max_concurrent": 4,
        "defaults": {"n": 2, "max_tokens": 8},
        "grid": {"temperature": [0.6, 1.0], "datasets": ["gsm8k.jsonl", "math.jsonl"]},
    })
    result = run_sweep(sweep_file)

    starts = events(server_log, "start")
    assert [Path(s["model"]).name for s in starts] == ["global_step_3", "global_step_20"]
    manifest = pd.read_parquet(tmp_path / "out" / "sweep.parquet")
    assert len(manifest) == 8 and set(manifest["status"]) == {"done"}
    assert list(manifest.columns[:6]) == [
        "combination", "group", "model", "temperature", "dataset", "params"]
    assert manifest["group"].nunique() == 2
    for row in manifest.itertuples():
        directory = Path(row.directory)
        config = yaml.safe_load((directory / "config.yaml").read_text())
        assert config["model"] == row.model and directory.name == row.combination
        output = pd.read_parquet(row.outputs[0])
        assert len(output) == (3 if row.dataset == "gsm8k" else 2) * 2 == row.rows
        assert set(output["temperature"]) == {row.temperature}
        assert set(output["model"]) == {row.model}
        assert (directory / f"{row.dataset}.parquet.summary.json").is_file()
    assert "global_step_3-t0.6-gsm8k-" in result.stdout
    requests = events(server_log, "request")
    assert len(requests) == 8 * 5 // 2  # n=2 in one request per prompt: 20 requests

    # A rerun finds everything finished: no model load, no request.
    again = run_sweep(sweep_file)
    assert len(events(server_log, "start")) == 2 and len(events(server_log, "request")) == 20
    assert "skipped" in again.stderr


def test_a_sweep_killed_midway_resumes_without_redoing_finished_work(
    tmp_path: Path, server_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_checkpoints(tmp_path, [1, 2])
    prompts = 150
    write_jsonl(tmp_path / "d.jsonl", verl_rows(prompts))
    sweep_file = write_sweep(tmp_path / "sweep.yaml", {
        "checkpoints": "ckpts/global_step_*", "output_dir": "out", "max_concurrent": 2,
        "samples_per_request": "1", "defaults": {"n": 2, "max_tokens": 8},
        "datasets": ["d.jsonl"], "grid": {"temperature": [1.0]},
    })
    monkeypatch.setenv("SWEEP_REQUEST_DELAY", "0.01")
    process = subprocess.Popen(
        [sys.executable, "-m", "rollouts.cli", "sweep", str(sweep_file), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ},
    )
    second = str((tmp_path / "ckpts" / "global_step_2").resolve())
    deadline = time.monotonic() + WAIT_S
    try:
        while sum(e["model"] == second for e in events(server_log, "request")) < 30:
            assert process.poll() is None, process.communicate()[1].decode()
            assert time.monotonic() < deadline, "the second checkpoint never started"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    before = events(server_log, "request")
    assert Counter(e["model"] for e in before)[second] < prompts * 2  # killed mid-checkpoint

    run_sweep(sweep_file)
    after = events(server_log, "request")[len(before):]
    starts = events(server_log, "start")
    assert [Path(s["model"]).name for s in starts] == ["global_step_1", "global_step_2",
                                                      "global_step_2"]
    assert {e["model"] for e in after} == {second}  # the finished checkpoint is not touched
    keys = Counter((e["model"], e["prompt"], e["seed"]) for e in before + after)
    assert len(keys) == 2 * prompts * 2  # every sample requested ...
    repeated = sum(count - 1 for count in keys.values())
    assert repeated <= 2  # ... once, but for those in flight at the kill (max_concurrent)
    manifest = pd.read_parquet(tmp_path / "out" / "sweep.parquet")
    assert list(manifest["status"]) == ["done", "done"] and list(manifest["rows"]) == [300, 300]
    for output in manifest["outputs"]:
        rows = pd.read_parquet(output[0])
        assert not rows.duplicated(["prompt_id", "sample_idx"]).any()


# -- DCP checkpoints in a sweep ------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rollouts.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("base") / "model")


def save_dcp_checkpoint(base_model: Path, path: Path) -> Path:
    import torch.distributed.checkpoint as dcp
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no process group: expected here
        dcp.save({"model": model.state_dict()}, checkpoint_id=str(path))
    return path


def test_dcp_checkpoints_are_converted_through_the_cache_and_served(
    tmp_path: Path, server_log: Path, base_model: Path
) -> None:
    save_dcp_checkpoint(base_model, tmp_path / "ckpts" / "step_4")
    write_jsonl(tmp_path / "d.jsonl", verl_rows(2))
    sweep_file = write_sweep(tmp_path / "sweep.yaml", {
        "checkpoints": ["ckpts/step_4"], "base_model": str(base_model), "output_dir": "out",
        "datasets": ["d.jsonl"], "grid": {"n": [1, 2]},
    })
    run_sweep(sweep_file)
    [start] = events(server_log, "start")
    served = Path(start["model"])
    assert served.parent == tmp_path / "cache" and is_converted(served)
    manifest = pd.read_parquet(tmp_path / "out" / "sweep.parquet")
    assert list(manifest["rows"]) == [2, 4]
    rows = pd.read_parquet(manifest["outputs"][0][0])
    assert set(rows["model"]) == {str((tmp_path / "ckpts" / "step_4").resolve())}


def test_bad_input_is_refused_before_any_server_starts(
    tmp_path: Path, server_log: Path, base_model: Path
) -> None:
    write_jsonl(tmp_path / "d.jsonl", verl_rows(2))
    make_checkpoints(tmp_path, [1])
    save_dcp_checkpoint(base_model, tmp_path / "ckpts" / "global_step_2")
    other = tmp_path / "other-base"
    shutil.copytree(base_model, other)
    config = json.loads((other / "config.json").read_text())
    config["hidden_size"] = 64
    (other / "config.json").write_text(json.dumps(config))
    cases = [
        ({"base_model": str(other)}, "`lm_head.weight` has shape [2048, 128] in the checkpoint"),
        ({}, "set `base_model`"),
        ({"base_model": str(base_model), "datasets": ["missing.jsonl"]}, "missing.jsonl: no such"),
        ({"base_model": str(base_model), "grid": {"temperature": ["hot"]}}, "bad sampling option"),
        ({"base_model": str(base_model), "grid": {"max_concurrent": [1, 2]}},
         "`max_concurrent` cannot be swept"),
    ]
    for index, (extra, message) in enumerate(cases):
        data = {"checkpoints": "ckpts/global_step_*", "output_dir": "out", "datasets": ["d.jsonl"],
                **extra}
        sweep_file = write_sweep(tmp_path / f"bad{index}.yaml", data)
        result = run_sweep(sweep_file, expect=1)
        last = result.stderr.strip().splitlines()[-1]
        assert message in last and last.startswith("Error: "), (message, result.stderr)
    assert events(server_log, "start") == []
    assert not (tmp_path / "out").exists()


def test_library_errors_are_one_line(tmp_path: Path) -> None:
    from rollouts.sweep import load_sweep

    with pytest.raises(UserInputError, match="no such sweep file"):
        load_sweep(tmp_path / "nope.yaml")


def test_a_slurm_job_of_the_sweep_serves_its_dcp_checkpoint_converted_on_the_node(
    tmp_path: Path, server_log: Path, base_model: Path
) -> None:
    from rollouts.sweep import load_sweep, write_group_config
    from slurm.submit import load_run
    from slurm.task import Task

    checkpoint = save_dcp_checkpoint(base_model, tmp_path / "ckpts" / "step_4").resolve()
    write_jsonl(tmp_path / "d.jsonl", verl_rows(2))
    sweep = load_sweep(write_sweep(tmp_path / "sweep.yaml", {
        "checkpoints": ["ckpts/step_4"], "base_model": str(base_model), "output_dir": "out",
        "datasets": ["d.jsonl"], "grid": {"temperature": [0.6, 1.0]},
        "slurm": {"array_size": 1, "job_name": "eval"},
    }))
    [group] = sweep.groups
    config = write_group_config(sweep, group, group.combinations, tmp_path / "groups",
                                with_slurm=True)
    run = load_run(config)  # what `rollouts slurm submit` and each array task read
    assert run.plan.model == str(checkpoint) and run.slurm.job_name == f"eval-{group.name}"
    assert [e.output for e in run.table.datasets] == [
        str(o) for c in group.combinations for o in c.outputs()]
    assert not (tmp_path / "cache").exists()  # nothing converted on the submitting node

    [server] = Task(run, run.slurm.run_dir)._server_configs(1)
    assert is_converted(Path(server.model)) and Path(server.model).parent == tmp_path / "cache"
    assert server.served_name == str(checkpoint) == run.plan.jobs[0].model


def test_one_damaged_checkpoint_fails_its_group_and_the_sweep_goes_on(
    tmp_path: Path, server_log: Path, base_model: Path
) -> None:
    for step in (1, 2, 3):
        save_dcp_checkpoint(base_model, tmp_path / "ckpts" / f"global_step_{step}")
    shard = next((tmp_path / "ckpts" / "global_step_2").glob("*.distcp"))
    with shard.open("r+b") as handle:
        handle.truncate(shard.stat().st_size // 2)
    write_jsonl(tmp_path / "d.jsonl", verl_rows(2))
    sweep_file = write_sweep(tmp_path / "sweep.yaml", {
        "checkpoints": "ckpts/global_step_*", "base_model": str(base_model), "output_dir": "out",
        "datasets": ["d.jsonl"],
    })
    result = run_sweep(sweep_file, expect=1)
    manifest = pd.read_parquet(tmp_path / "out" / "sweep.parquet")
    assert list(manifest["status"]) == ["done", "failed", "done"]
    error = manifest["error"][1]
    assert "__0_0.distcp is truncated" in error and "\n" not in error
    assert [Path(s["model"]).name.split("-")[0] for s in events(server_log, "start")] == [
        "global_step_1", "global_step_3"]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_glob_over_verl_checkpoints_finds_actor_and_needs_no_base_model(
    tmp_path: Path, server_log: Path, trainer_checkpoints: dict[str, Path]
) -> None:
    write_jsonl(tmp_path / "d.jsonl", verl_rows(2))
    verl = trainer_checkpoints["verl"]
    sweep_file = write_sweep(tmp_path / "sweep.yaml", {
        "checkpoints": f"{verl}/global_step_*", "output_dir": "out", "datasets": ["d.jsonl"],
    })
    run_sweep(sweep_file)
    starts = [Path(s["model"]) for s in events(server_log, "start")]
    assert starts[0].name.split("-")[0] == "global_step_1"  # then swapped to global_step_2
    assert all(is_converted(p) for p in starts)
    manifest = pd.read_parquet(tmp_path / "out" / "sweep.parquet")
    for row in manifest.itertuples():
        assert set(pd.read_parquet(row.outputs[0])["model"]) == {row.model}
        assert Path(row.model).parent == verl
