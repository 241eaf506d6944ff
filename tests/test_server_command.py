"""The `vllm serve` command line, config validation and finding the vLLM executable."""

from __future__ import annotations

import importlib.metadata
import os
import stat
import sys
from pathlib import Path

import pytest

import server.vllm
from rollouts.errors import UserInputError
from server.vllm import INSTALL_HINT, ServerConfig, build_vllm_command, resolve_launcher


@pytest.fixture(autouse=True)
def no_vllm_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine without vLLM, unless a test says otherwise."""
    monkeypatch.setattr(server.vllm, "supports_stream_interval", lambda: False)


def test_minimal_command_has_the_throughput_and_sampling_defaults() -> None:
    config = ServerConfig(model="Qwen/Qwen2.5-0.5B", port=8123, vllm_command="vllm")
    assert build_vllm_command(config) == [
        "vllm", "serve", "Qwen/Qwen2.5-0.5B",
        "--host", "127.0.0.1", "--port", "8123",
        "--served-model-name", "Qwen/Qwen2.5-0.5B",
        "--seed", "0", "--generation-config", "vllm",
        "--disable-uvicorn-access-log",
        "--max-num-seqs", "512",
    ]  # fmt: skip


def test_every_option_and_extra_args_last() -> None:
    config = ServerConfig(
        model="/models/m",
        tensor_parallel_size=4,
        data_parallel_size=2,
        host="0.0.0.0",
        gpu_memory_utilization=0.85,
        max_model_len=4096,
        served_model_name="policy",
        seed=7,
        extra_args=("--max-num-seqs", "256", "--enable-prefix-caching"),
        vllm_command="python3 -m vllm.entrypoints.cli.main",
    )
    command = build_vllm_command(config, port=9000)
    assert " ".join(command) == (
        "python3 -m vllm.entrypoints.cli.main serve /models/m --host 0.0.0.0 --port 9000 "
        "--served-model-name policy --tensor-parallel-size 4 --data-parallel-size 2 "
        "--gpu-memory-utilization 0.85 --max-model-len 4096 --seed 7 --generation-config vllm "
        "--disable-uvicorn-access-log --max-num-seqs 256 --enable-prefix-caching"
    )


@pytest.mark.parametrize("given", [("--max-num-seqs", "1024"), ("--max-num-seqs=1024",)])
def test_the_batch_default_gives_way_to_the_users(given: tuple[str, ...]) -> None:
    config = ServerConfig(model="m", port=1, vllm_command="vllm", extra_args=given)
    assert " ".join(build_vllm_command(config)).count("--max-num-seqs") == 1
    assert config.max_num_seqs == 1024
    # A data-parallel server runs each engine's batch: past one engine's CUDA-graph edge.
    assert ServerConfig(model="m", data_parallel_size=2).max_sequences == 1024
    with pytest.raises(UserInputError, match="--max-num-seqs must be a whole number"):
        ServerConfig(model="m", extra_args=("--max-num-seqs", "many"))


def test_stream_interval_is_set_where_vllm_has_it_unless_given(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server.vllm, "supports_stream_interval", lambda: True)
    command = build_vllm_command(ServerConfig(model="m", port=1, vllm_command="vllm"))
    assert command[command.index("--stream-interval") + 1] == "16"
    for given in (("--stream-interval", "1"), ("--stream-interval=4",)):
        config = ServerConfig(model="m", port=1, vllm_command="vllm", extra_args=given)
        assert " ".join(build_vllm_command(config)).count("--stream-interval") == 1


@pytest.mark.parametrize(("version", "expected"),
                         [("0.24.0", True), ("0.12.0rc1", True), ("0.11.0", False),
                          ("0.9.2", False), (None, False)])
def test_which_vllm_has_stream_interval(
    monkeypatch: pytest.MonkeyPatch, version: str | None, expected: bool
) -> None:
    def installed(name: str) -> str:
        if version is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return version

    monkeypatch.undo()  # the real function, with a stand-in for the installed version
    monkeypatch.setattr(importlib.metadata, "version", installed)
    assert server.vllm.supports_stream_interval() is expected


def test_auto_port_needs_the_chosen_port() -> None:
    config = ServerConfig(model="m", vllm_command="vllm")
    with pytest.raises(ValueError, match="pass the chosen port"):
        build_vllm_command(config)
    assert build_vllm_command(config, port=1234)[5:7] == ["--port", "1234"]


def test_vllm_command_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOUTS_VLLM", "/opt/fake vllm")
    assert ServerConfig(model="m").vllm_command == "/opt/fake vllm"
    monkeypatch.delenv("ROLLOUTS_VLLM")
    assert ServerConfig(model="m").vllm_command == "vllm"


@pytest.mark.parametrize(
    "flag", ["--port", "--port=1", "--host", "--served-model-name", "-tp", "--data-parallel-size"]
)
def test_extra_args_cannot_override_managed_flags(flag: str) -> None:
    with pytest.raises(UserInputError, match="cannot be passed through"):
        ServerConfig(model="m", extra_args=(flag, "1"))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model", "", "a model is required"),
        ("tensor_parallel_size", 0, "tensor_parallel_size must be >= 1"),
        ("data_parallel_size", 0, "data_parallel_size must be >= 1"),
        ("port", 70000, "port must be in 1..65535"),
        ("gpu_memory_utilization", 1.5, "gpu_memory_utilization must be in"),
        ("max_model_len", 0, "max_model_len must be >= 1"),
        ("ready_timeout", 0, "must be > 0 seconds"),
        ("vllm_command", " ", "is empty"),
    ],
)
def test_config_is_validated(field: str, value: object, message: str) -> None:
    values: dict[str, object] = {"model": "m", field: value}
    with pytest.raises(UserInputError, match=message):
        ServerConfig(**values)  # type: ignore[arg-type]


def test_config_accepts_string_paths() -> None:
    config = ServerConfig(model="m", log_file="a/log.txt", info_file="b.json")  # type: ignore[arg-type]
    assert config.log_file == Path("a/log.txt")
    assert config.info_file == Path("b.json")


def test_missing_vllm_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no vllm on PATH
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])
    with pytest.raises(UserInputError) as excinfo:
        resolve_launcher(["vllm", "serve", "m"])
    assert str(excinfo.value) == INSTALL_HINT == "vLLM is not installed: pip install 'rollouts[vllm]'"


def test_importable_vllm_runs_as_a_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    package = tmp_path / "lib" / "vllm"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    assert resolve_launcher(["vllm", "serve", "m"]) == [
        sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", "m"
    ]


def test_launcher_on_path_is_used_as_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    exe = tmp_path / "vllm"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ["PATH"])
    assert resolve_launcher(["vllm", "serve", "m"]) == ["vllm", "serve", "m"]
    assert resolve_launcher([str(exe), "serve"]) == [str(exe), "serve"]


def test_unknown_custom_launcher_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="nowhere/vllm: no such executable"):
        resolve_launcher([str(tmp_path / "nowhere" / "vllm"), "serve", "m"])
