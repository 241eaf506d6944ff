"""An array task's own work, run in this process (no scheduler needed): several servers per node,
each on its own GPUs, behind one router; units spread over them; the merge gives every sample."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from slurm.merge import merge_run
from slurm.status import format_status, run_status
from slurm.submit import load_run, write_run_dir
from slurm.task import Task, run_task
from slurm.units import done_ids
from tests.fake_vllm import FAKE_VLLM_COMMAND
from tests.generate_helpers import verl_rows, write_jsonl


def write_config(tmp_path: Path, gpus_per_node: int, tensor_parallel: int) -> Path:
    write_jsonl(tmp_path / "d.jsonl", verl_rows(12))
    config = {
        "model": "tiny-model", "max_concurrent": 4, "output_dir": "out",
        "server": {"tensor_parallel_size": tensor_parallel},
        "defaults": {"n": 2, "max_tokens": 8}, "datasets": [{"path": "d.jsonl"}],
        "slurm": {"array_size": 1, "gpus_per_node": gpus_per_node, "unit_prompts": 3,
                  "heartbeat": 1, "lease_timeout": 10},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_servers_per_node_each_get_their_own_gpus(tmp_path: Path) -> None:
    run = load_run(write_config(tmp_path, gpus_per_node=8, tensor_parallel=2))
    configs = Task(run, run.slurm.run_dir)._server_configs(4)
    assert [c.env["CUDA_VISIBLE_DEVICES"] for c in configs] == ["0,1", "2,3", "4,5", "6,7"]
    assert all(c.tensor_parallel_size == 2 for c in configs)
    assert len({c.log_file for c in configs}) == 4


def test_a_task_serves_two_servers_and_finishes_every_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLOUTS_VLLM", FAKE_VLLM_COMMAND)
    monkeypatch.setenv("FAKE_VLLM_DELAY", "0.05")
    run = load_run(write_config(tmp_path, gpus_per_node=2, tensor_parallel=1))
    run_dir = run.slurm.run_dir
    write_run_dir(run, run_dir)
    assert run_task(run_dir) == "done"
    assert len(done_ids(run_dir)) == 4
    assert len(list((run_dir / "logs").glob("server-*-*.log"))) == 2
    [merged] = merge_run(run_dir)
    rows = pd.read_parquet(merged.output)
    assert len(rows) == 24 and rows["error"].isna().all()
    assert rows["data_idx"].tolist() == sorted(rows["data_idx"].tolist())  # input order
    assert rows["endpoint"].nunique() == 2  # both servers served


def test_auto_gives_each_server_of_a_task_its_adaptive_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `auto` in a task: every unit in flight shares each server's limit (rollouts.concurrency),
    # which starts at the server's max_num_seqs (6 sequences: 3 requests of n=2) and a request
    # queued behind them (8), and the task's stats file shows it per server.
    monkeypatch.setenv("ROLLOUTS_VLLM", FAKE_VLLM_COMMAND)
    monkeypatch.setenv("FAKE_VLLM_DELAY", "0.2")
    monkeypatch.setenv("FAKE_VLLM_PEAK_FILE", str(tmp_path / "peak"))
    path = write_config(tmp_path, gpus_per_node=2, tensor_parallel=1)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["max_concurrent"] = "auto"
    config["server"]["extra_args"] = ["--max-num-seqs", "6"]
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    run = load_run(path)
    run_dir = run.slurm.run_dir
    write_run_dir(run, run_dir)
    assert run_task(run_dir) == "done"
    assert len(done_ids(run_dir)) == 4
    [stats] = [json.loads(p.read_text()) for p in (run_dir / "tasks").glob("*.json")]
    servers = stats["concurrency"]
    assert [s["mode"] for s in servers] == ["auto", "auto"]
    assert all(s["history"][0][1] == 8 for s in servers), servers
    highest = max(limit for s in servers for _, limit in s["history"])
    peaks = [int(p.read_text()) for p in tmp_path.glob("peak.*")]
    # Both servers filled to their limit, never over it (without it: 12 sequences at once).
    assert len(peaks) == 2 and min(peaks) >= 6 and max(peaks) <= highest, (peaks, servers)
    assert "limit_seqs=8,8" in format_status(run_status(run_dir))


def test_replicas_share_each_gpu_of_a_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `server: {replicas: 2}` on a node of one GPU: two servers on GPU 0, each with half the
    # memory, behind the task's router.
    monkeypatch.setenv("ROLLOUTS_VLLM", FAKE_VLLM_COMMAND)
    monkeypatch.setenv("FAKE_VLLM_DELAY", "0.05")
    path = write_config(tmp_path, gpus_per_node=1, tensor_parallel=1)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["server"].update(replicas=2, gpu_memory_utilization=0.9)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    run = load_run(path)
    run_dir = run.slurm.run_dir
    write_run_dir(run, run_dir)
    assert run_task(run_dir) == "done"
    logs = sorted((run_dir / "logs").glob("server-*-*.log"))
    assert [log.name.rsplit("-", 1)[1] for log in logs] == ["r0.log", "r1.log"]
    for log in logs:
        assert "--gpu-memory-utilization 0.45 " in log.read_text().splitlines()[0]
    [merged] = merge_run(run_dir)
    rows = pd.read_parquet(merged.output)
    assert len(rows) == 24 and rows["endpoint"].nunique() == 2
