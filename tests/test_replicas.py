"""Replicas of one model on one GPU (server.replicas): how many `auto` starts, how memory and
ports are split, and `rollouts serve --replicas`, managed servers and `server: {replicas: N}`
running real stand-in vLLM processes behind the router."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml

from rollouts.errors import UserInputError
from rollouts.runconfig import load_plan
from server.replicas import (
    auto_replicas,
    parse_replicas,
    replica_configs,
    resolve_replicas,
    weights_bytes,
)
from server.vllm import ServerConfig
from tests.fake_vllm import FAKE_VLLM_COMMAND, live_pids
from tests.generate_helpers import read_rows, run_generate, verl_rows, write_jsonl
from tests.test_server_cli import Serve, cleanup, get_json, post_completion  # noqa: F401

GIB = 2**30


def test_auto_starts_two_only_for_weights_small_next_to_the_gpu() -> None:
    one_gpu = ServerConfig(model="m")
    assert auto_replicas(one_gpu, int(0.8 * GIB), 80 * GIB)[0] == 2  # 0.39B model, one H100
    assert auto_replicas(one_gpu, int(2.7 * GIB), 80 * GIB)[0] == 2  # 1.36B: 3.4%
    assert auto_replicas(one_gpu, 16 * GIB, 80 * GIB)[0] == 1  # 8B: a fifth of the memory
    assert auto_replicas(one_gpu, None, 80 * GIB) == (1, "one replica: the model's weights unknown")
    assert auto_replicas(one_gpu, GIB, None) == (1, "one replica: the GPU's memory unknown")
    assert auto_replicas(ServerConfig(model="m", tensor_parallel_size=2), GIB, 80 * GIB)[0] == 1


def test_weights_are_the_folders_weight_files(tmp_path: Path) -> None:
    (tmp_path / "model-00001.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "model-00002.safetensors").write_bytes(b"x" * 500)
    (tmp_path / "tokenizer.json").write_bytes(b"x" * 9999)
    assert weights_bytes(str(tmp_path)) == 1500
    assert weights_bytes("Qwen/Qwen2.5-0.5B") is None  # a hub id: unknown here
    assert weights_bytes(str(tmp_path / "nothing")) is None


def test_without_a_gpu_auto_is_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    (tmp_path / "m.safetensors").write_bytes(b"x")
    assert resolve_replicas("auto", ServerConfig(model=str(tmp_path)))[0] == 1
    assert resolve_replicas(3, ServerConfig(model=str(tmp_path)))[0] == 3


def test_each_replica_has_its_share_of_memory_its_port_and_log(tmp_path: Path) -> None:
    config = ServerConfig(model="m", gpu_memory_utilization=0.85, port=8000,
                          log_file=tmp_path / "vllm.log", info_file=tmp_path / "s.json")
    first, second = replica_configs(config, 2)
    assert (first.gpu_memory_utilization, second.gpu_memory_utilization) == (0.425, 0.425)
    assert (first.port, second.port) == (8000, 8001)
    assert (first.log_file, second.log_file) == (tmp_path / "vllm-r0.log", tmp_path / "vllm-r1.log")
    assert first.info_file is None and second.info_file is None  # the group writes one
    three = replica_configs(ServerConfig(model="m"), 3)  # vLLM's default 0.9, ports chosen free
    assert [c.gpu_memory_utilization for c in three] == [0.3] * 3
    assert {c.port for c in three} == {None}
    assert replica_configs(config, 1) == [config]
    with pytest.raises(UserInputError, match="tensor_parallel_size and data_parallel_size 1"):
        replica_configs(ServerConfig(model="m", tensor_parallel_size=2), 2)


@pytest.mark.parametrize("bad", ["0", "-1", "two", 1.5, True])
def test_bad_replicas_are_one_line_errors(bad: object) -> None:
    with pytest.raises(UserInputError, match="'auto' or a whole number >= 1"):
        parse_replicas(bad)
    assert parse_replicas("AUTO") == "auto" and parse_replicas("2") == 2


def test_serve_starts_replicas_one_info_file_and_stops_them_all(
    tmp_path: Path, cleanup: list[Serve]  # noqa: F811
) -> None:
    run = Serve(tmp_path, "--replicas", "2", "--gpu-memory-utilization", "0.8")
    cleanup.append(run)
    urls = [run.base_url(), run.base_url()]  # one line per replica
    info = json.loads(run.info_file.read_text())
    assert info["base_urls"] == urls and info["base_url"] == urls[0]
    assert len(set(urls)) == 2 and len(info["pids"]) == 2
    assert info["max_num_seqs"] == 512
    for url in urls:
        post_completion(url)
        assert get_json(f"{url}/v1/models")["data"] == [{"id": "tiny", "object": "model"}]
    for index in range(2):  # each its own process, log and share of the memory
        log = (tmp_path / f"vllm-r{index}.log").read_text()
        assert "--gpu-memory-utilization 0.4 " in log.splitlines()[0]
    run.proc.send_signal(signal.SIGTERM)
    code, _, err = run.finish()
    assert code == 0, err
    assert live_pids(info["pids"]) == []
    assert not run.info_file.exists()


def test_one_replica_dying_stops_the_others(tmp_path: Path, cleanup: list[Serve]) -> None:  # noqa: F811
    run = Serve(tmp_path, "--replicas", "2", FAKE_VLLM_DIE_AFTER="1")  # after the probe
    cleanup.append(run)
    first, _ = run.base_url(), run.base_url()
    pids = json.loads(run.info_file.read_text())["pids"]
    with pytest.raises(OSError):
        post_completion(first)
    code, _, err = run.finish()
    assert code == 1 and "while serving" in err
    assert live_pids(pids) == []


def test_generate_spreads_prompts_over_the_replicas_of_a_server_info(
    tmp_path: Path, cleanup: list[Serve]  # noqa: F811
) -> None:
    peak = tmp_path / "peak"
    run = Serve(tmp_path, "--replicas", "2", FAKE_VLLM_PEAK_FILE=str(peak), FAKE_VLLM_DELAY="0.05")
    cleanup.append(run)
    run.base_url(), run.base_url()
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(40))
    out = tmp_path / "o.parquet"
    run_generate(source, "-o", out, "--server-info", run.info_file, "--n", "2")
    assert len(read_rows(out)) == 80
    summary = json.loads((tmp_path / "o.parquet.summary.json").read_text())
    servers = summary["concurrency"]["servers"]
    assert len(servers) == 2
    # The info file said each serves 512 at most: a full batch and a request queued behind.
    assert all(s["history"][0][1] == 512 + 6 for s in servers), servers
    assert len(list(tmp_path.glob("peak.*"))) == 2  # both replicas served requests
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish()[0] == 0


def test_managed_replicas_from_the_command_line_and_a_run_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLOUTS_VLLM", FAKE_VLLM_COMMAND)
    monkeypatch.setenv("FAKE_VLLM_PEAK_FILE", str(tmp_path / "peak"))
    monkeypatch.setenv("FAKE_VLLM_DELAY", "0.05")
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(30))
    out = tmp_path / "o.parquet"
    run_generate(source, "-o", out, "--model", "tiny", "--n", "2", "--replicas", "2")
    assert len(read_rows(out)) == 60
    assert len(list(tmp_path.glob("peak.*"))) == 2
    summary = json.loads((tmp_path / "o.parquet.summary.json").read_text())
    assert len(summary["concurrency"]["servers"]) == 2

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model": "tiny", "server": {"replicas": 2}, "output_dir": str(tmp_path / "runs"),
        "defaults": {"n": 2}, "datasets": [{"path": str(source)}],
    }))
    from rollouts.launch import plan_replicas

    assert plan_replicas(load_plan(config)) == 2
    config.write_text(config.read_text().replace("replicas: 2", "replicas: none"))
    with pytest.raises(UserInputError, match="server: replicas must be 'auto' or a whole number"):
        load_plan(config)
