"""DCP checkpoint → HuggingFace conversion and its cache, on a tiny random-weight model built here."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from click.testing import CliRunner
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from rollouts.checkpoint import (
    CACHE_ENV,
    MARKER_FILE,
    check_against_base,
    convert_checkpoint,
    is_converted,
)
from rollouts.cli import main
from rollouts.errors import UserInputError
from rollouts.tiny_model import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 120.0


def save_dcp(state: dict[str, torch.Tensor] | dict[str, object], path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no process group: expected here
        dcp.save(state, checkpoint_id=str(path))
    return path


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("base") / "model")


@pytest.fixture(scope="module")
def trained(base_model: Path) -> torch.nn.Module:
    """The base model with changed weights: what a training run would have saved."""
    model = AutoModelForCausalLM.from_pretrained(base_model)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model


@pytest.fixture
def checkpoint(trained: torch.nn.Module, tmp_path: Path) -> Path:
    """Saved as trainers do: {"model": state_dict, "optim": ...} with .metadata at the top."""
    optim = {"step": torch.tensor(7), "lr": torch.tensor([1e-5])}
    return save_dcp({"model": trained.state_dict(), "optim": optim}, tmp_path / "global_step_7")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def assert_same_tensors(converted: Path, model: torch.nn.Module) -> None:
    loaded = AutoModelForCausalLM.from_pretrained(converted)
    expected = model.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name


def complete_entries(cache: Path) -> list[Path]:
    return [p for p in cache.iterdir() if p.is_dir() and is_converted(p)] if cache.exists() else []


def test_converted_checkpoint_loads_with_every_tensor_and_generation_equal(
    checkpoint: Path, trained: torch.nn.Module, base_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "hf"
    result = CliRunner().invoke(main, ["convert-checkpoint", str(checkpoint),
                                       "--base-model", str(base_model), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out.resolve())
    assert_same_tensors(out, trained)
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == json.loads((base_model / "config.json").read_text())["dtype"]
    assert (out / "model.safetensors").is_file() and (out / MARKER_FILE).is_file()
    assert "lm_head.weight" not in load_file(out / "model.safetensors")  # tied: one copy

    tokenizer = AutoTokenizer.from_pretrained(out)
    inputs = tokenizer("def parse(line):", return_tensors="pt")
    converted = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        want = trained.generate(**inputs, max_new_tokens=12, do_sample=False)
        got = converted.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert torch.equal(want, got)


def test_flat_state_dict_under_model_subfolder_goes_to_the_cache(
    trained: torch.nn.Module, base_model: Path, tmp_path: Path, cache: Path
) -> None:
    ckpt = tmp_path / "step_3"
    save_dcp(dict(trained.state_dict()), ckpt / "model")
    converted = convert_checkpoint(ckpt, str(base_model))
    assert converted.parent == cache and converted.name.startswith("step_3-")
    assert_same_tensors(converted, trained)
    # A second call reuses the entry without converting.
    assert convert_checkpoint(ckpt, str(base_model)) == converted


def test_the_checkpoints_own_tokenizer_folder_is_used(
    checkpoint: Path, base_model: Path, tmp_path: Path
) -> None:
    own = AutoTokenizer.from_pretrained(base_model)
    own.add_special_tokens({"additional_special_tokens": ["<|tool_call|>"]})
    own.save_pretrained(checkpoint / "huggingface")
    converted = convert_checkpoint(checkpoint, str(base_model))
    assert "<|tool_call|>" in AutoTokenizer.from_pretrained(converted).get_vocab()


def test_a_folder_without_metadata_is_refused_in_one_line(base_model: Path, tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "__0_0.distcp").write_bytes(b"x")
    with pytest.raises(UserInputError) as info:
        convert_checkpoint(tmp_path / "ckpt", str(base_model))
    message = str(info.value)
    assert ".metadata" in message and "ckpt" in message and "\n" not in message


def test_a_base_model_that_does_not_fit_names_the_first_mismatch(
    checkpoint: Path, base_model: Path, tmp_path: Path, cache: Path
) -> None:
    other = tmp_path / "other-base"
    shutil.copytree(base_model, other)
    config = json.loads((other / "config.json").read_text())
    config["intermediate_size"] = 192
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError) as info:
        check_against_base(checkpoint, str(other))
    message = str(info.value)
    assert "model.layers.0.mlp.down_proj.weight" in message and "[128, 256]" in message
    assert "\n" not in message
    with pytest.raises(UserInputError, match="down_proj"):
        convert_checkpoint(checkpoint, str(other))
    assert not cache.exists() or not any(cache.iterdir())


def test_an_existing_different_output_is_not_overwritten_without_force(
    checkpoint: Path, base_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="--force"):
        convert_checkpoint(checkpoint, str(base_model), output=out)
    assert (out / "notes.txt").read_text() == "mine"
    convert_checkpoint(checkpoint, str(base_model), output=out, force=True)
    assert is_converted(out) and not (out / "notes.txt").exists()


def test_force_converts_again_and_a_changed_checkpoint_is_converted_again(
    checkpoint: Path, trained: torch.nn.Module, base_model: Path, cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = convert_checkpoint(checkpoint, str(base_model))
    assert "converting" in capsys.readouterr().err
    assert convert_checkpoint(checkpoint, str(base_model)) == first
    assert "converting" not in capsys.readouterr().err
    assert convert_checkpoint(checkpoint, str(base_model), force=True) == first
    assert "converting" in capsys.readouterr().err
    assert is_converted(first)

    # The training run overwrites the checkpoint at the same path.
    changed = {k: v + 1.0 for k, v in trained.state_dict().items()}
    shutil.rmtree(checkpoint)
    save_dcp({"model": changed}, checkpoint)
    second = convert_checkpoint(checkpoint, str(base_model))
    assert second != first and is_converted(second)
    weights = load_file(second / "model.safetensors")
    assert torch.equal(weights["model.norm.weight"], changed["model.norm.weight"])


# -- real processes ------------------------------------------------------------------------------

# Runs a conversion in its own process; the weight writing (the long part) is held at a gate so
# the test can act while it is midway: GATE=wait waits for the file GO, GATE=hang never returns.
CONVERTER = """
import os, pathlib, sys, time
import rollouts.checkpoint as checkpoint
original = checkpoint.write_safetensors
def held(state, out):
    with open(os.environ["COUNT_FILE"], "a") as handle:
        handle.write(f"{os.getpid()}\\n")
    pathlib.Path(os.environ["STARTED_FILE"]).touch()
    while os.environ["GATE"] == "hang" or not pathlib.Path(os.environ["GO_FILE"]).exists():
        time.sleep(0.05)
    original(state, out)
checkpoint.write_safetensors = held
print(checkpoint.convert_checkpoint(sys.argv[1], sys.argv[2]), flush=True)
"""


def start_converter(
    checkpoint: Path, base_model: Path, tmp_path: Path, gate: str, name: str
) -> tuple[subprocess.Popen[str], Path]:
    env = {**os.environ, "GATE": gate, "COUNT_FILE": str(tmp_path / "count"),
           "STARTED_FILE": str(tmp_path / "started"), "GO_FILE": str(tmp_path / "go"),
           "PYTHONPATH": str(ROOT)}
    stderr = tmp_path / f"{name}.err"
    with stderr.open("w") as handle:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-c", CONVERTER, str(checkpoint), str(base_model)],
            env=env, stdout=subprocess.PIPE, stderr=handle, text=True,
        )
    return process, stderr


def wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_concurrent_conversions_convert_once_and_share_the_directory(
    checkpoint: Path, base_model: Path, tmp_path: Path, cache: Path
) -> None:
    first, first_err = start_converter(checkpoint, base_model, tmp_path, "wait", "a")
    second, second_err = start_converter(checkpoint, base_model, tmp_path, "wait", "b")
    try:
        wait_for((tmp_path / "started").exists, "one conversion to start")
        wait_for(lambda: "waiting for another process" in first_err.read_text()
                 + second_err.read_text(), "the other process to wait on the lock")
        (tmp_path / "go").touch()
        outputs = [p.communicate(timeout=WAIT_S)[0].strip() for p in (first, second)]
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert first.returncode == 0 and second.returncode == 0, (
        first_err.read_text(), second_err.read_text())
    assert outputs[0] == outputs[1] and is_converted(Path(outputs[0]))
    assert len((tmp_path / "count").read_text().split()) == 1  # converted once
    assert complete_entries(cache) == [Path(outputs[0])]


def test_a_conversion_killed_midway_leaves_nothing_complete_looking(
    checkpoint: Path, base_model: Path, tmp_path: Path, cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    process, _ = start_converter(checkpoint, base_model, tmp_path, "hang", "killed")
    try:
        wait_for((tmp_path / "started").exists, "the conversion to reach the weights")
        # Config and tokenizer are written by now: the state a path-keyed cache took as done.
        temps = list(cache.glob(".*.tmp-*"))
        assert len(temps) == 1 and (temps[0] / "config.json").is_file()
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert complete_entries(cache) == []
    assert [p for p in cache.iterdir() if not p.name.startswith(".")] == []

    converted = convert_checkpoint(checkpoint, str(base_model))
    assert "converting" in capsys.readouterr().err
    assert is_converted(converted)
    assert list(cache.glob(".*.tmp-*")) == []  # the killed one's leftovers are gone


def test_a_run_plan_on_a_dcp_checkpoint_serves_the_conversion_under_the_checkpoints_name(
    checkpoint: Path, base_model: Path, tmp_path: Path
) -> None:
    from rollouts.checkpoint import resolve_plan_model
    from rollouts.runconfig import load_plan

    (tmp_path / "d.jsonl").write_text('{"prompt": "hi"}\n')
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"model": str(checkpoint), "base_model": str(base_model),
                                  "datasets": [{"path": "d.jsonl"}]}))
    plan = load_plan(config, progress=False)
    resolved = resolve_plan_model(plan)
    assert is_converted(Path(resolved.model))
    assert resolved.server["served_model_name"] == str(checkpoint) == plan.jobs[0].model
    assert resolve_plan_model(resolved) == resolved  # a HuggingFace directory is served as is

    config.write_text(json.dumps({"model": str(checkpoint), "datasets": [{"path": "d.jsonl"}]}))
    with pytest.raises(UserInputError, match="set `base_model`"):
        resolve_plan_model(load_plan(config, progress=False))


def test_waiting_for_a_conversion_held_elsewhere_gives_up_after_the_timeout(
    checkpoint: Path, base_model: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from filelock import FileLock

    from rollouts.checkpoint import cache_entry
    from rollouts.errors import OutputConflictError

    entry = cache_entry(checkpoint, str(base_model))
    cache.mkdir()
    with FileLock(str(cache / f".{entry.name}.lock")), pytest.raises(OutputConflictError) as info:
        convert_checkpoint(checkpoint, str(base_model), lock_timeout_s=0.5)
    assert "gave up after 0.5s waiting for the conversion" in str(info.value)
    assert "waiting for another process converting" in capsys.readouterr().err
    assert not entry.exists()


def test_a_failed_write_leaves_no_entry_and_no_temp_folder(
    checkpoint: Path, base_model: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rollouts.checkpoint as module
    from rollouts.errors import StorageError

    def disk_full(state: object, out: Path) -> None:
        (out / "model.safetensors").write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "write_safetensors", disk_full)
    with pytest.raises(StorageError, match="No space left on device") as info:
        convert_checkpoint(checkpoint, str(base_model))
    assert "\n" not in str(info.value)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []
