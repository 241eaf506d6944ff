"""verl FSDP and NeMo-RL checkpoints, saved by a real 2-process gloo group, converted exactly;
checkpoints still being written, cut short, or converted onto a full disk refused in one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer

from rollouts.checkpoint import CACHE_ENV, IncompleteCheckpoint, convert_checkpoint, is_converted
from rollouts.checkpoint_layouts import detect_layout
from rollouts.cli import main
from tests.checkpoint_writers import trained_state

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # the trainers' fixtures: two 2-process groups (session-wide)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def assert_converted_exactly(converted: Path, base_model: Path, step: int) -> None:
    """Every tensor equal to what the trainer held, and greedy generation identical."""
    want = trained_state(base_model, step)
    got = AutoModelForCausalLM.from_pretrained(converted)
    expected, loaded = want.state_dict(), got.state_dict()
    assert set(loaded) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(loaded[name], tensor), name
    tokenizer = AutoTokenizer.from_pretrained(converted)
    inputs = tokenizer("What is 12 + 30?", return_tensors="pt")
    with torch.no_grad():
        reference = want.generate(**inputs, max_new_tokens=12, do_sample=False)
        output = got.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert torch.equal(reference, output)


def test_a_verl_fsdp_checkpoint_converts_exactly_with_the_base_it_names(
    trainer_checkpoints: dict[str, Path], tiny_base_model: Path, cache: Path
) -> None:
    step = trainer_checkpoints["verl"] / "global_step_2"
    layout = detect_layout(step)
    assert layout.kind == "verl-fsdp" and layout.weights == step / "actor"
    result = CliRunner().invoke(main, ["convert-checkpoint", str(step)])  # no --base-model
    assert result.exit_code == 0, result.output
    converted = Path(result.stdout.strip())
    assert converted.parent == cache and converted.name.startswith("global_step_2-")
    assert is_converted(converted)
    assert_converted_exactly(converted, tiny_base_model, 2)
    # The actor/ folder itself names the same checkpoint, and the cache entry is reused.
    assert convert_checkpoint(step / "actor") == converted


def test_a_nemo_rl_checkpoint_converts_exactly_with_the_model_its_config_names(
    trainer_checkpoints: dict[str, Path], tiny_base_model: Path
) -> None:
    step = trainer_checkpoints["nemo-rl"] / "step_3"
    layout = detect_layout(step)
    assert layout.kind == "nemo-rl" and layout.own_base == str(tiny_base_model)
    assert layout.tokenizer == (step / "policy" / "tokenizer").resolve()
    converted = convert_checkpoint(step)
    assert_converted_exactly(converted, tiny_base_model, 3)


def copy_without(source: Path, target: Path, *missing: str) -> Path:
    shutil.copytree(source, target)
    for name in missing:
        (target / name).unlink()
    return target


def test_checkpoints_still_being_written_are_reported_not_converted(
    trainer_checkpoints: dict[str, Path], tmp_path: Path, cache: Path
) -> None:
    verl = tmp_path / "verl"
    shutil.copytree(trainer_checkpoints["verl"], verl)
    # Step 5 midway: rank 0's shard written, rank 1's not; the trainer's marker still says 2.
    copy_without(verl / "global_step_2", verl / "global_step_5",
                 "actor/model_world_size_2_rank_1.pt")
    # Step 6: every shard there, but the trainer has not marked it done yet.
    shutil.copytree(verl / "global_step_2", verl / "global_step_6")
    nemo = trainer_checkpoints["nemo-rl"] / "step_3"
    cases = {
        verl / "global_step_5": "rank(s) [1] of 2 are missing",
        verl / "global_step_6": "latest_checkpointed_iteration.txt names step 2, not yet 6",
        copy_without(nemo, tmp_path / "nemo" / "step_7", "policy/weights/.metadata"):
            "shards but no .metadata",
        copy_without(nemo, tmp_path / "nemo" / "tmp_step_8"): "renames tmp_step_N to step_N",
    }
    for path, message in cases.items():
        with pytest.raises(IncompleteCheckpoint) as info:
            convert_checkpoint(path)
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
        result = CliRunner().invoke(main, ["convert-checkpoint", str(path)])
        assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.stderr
    assert not cache.exists() or not any(cache.iterdir())
    (verl / "latest_checkpointed_iteration.txt").write_text("6")  # the trainer finishes step 6
    assert is_converted(convert_checkpoint(verl / "global_step_6"))


def truncate(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def test_truncated_shards_are_one_line_errors(
    trainer_checkpoints: dict[str, Path], tmp_path: Path, cache: Path
) -> None:
    verl = shutil.copytree(trainer_checkpoints["verl"] / "global_step_2", tmp_path / "global_step_2")
    truncate(verl / "actor" / "model_world_size_2_rank_1.pt")
    nemo = shutil.copytree(trainer_checkpoints["nemo-rl"] / "step_3", tmp_path / "step_3")
    truncate(nemo / "policy" / "weights" / "__1_0.distcp")
    for path, message in ((verl, "model_world_size_2_rank_1.pt cannot be read"),
                          (nemo, "shard __1_0.distcp is truncated")):
        result = CliRunner().invoke(main, ["convert-checkpoint", str(path)])
        assert result.exit_code == 1, result.output
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("Error: ") and message in line, line
    assert not cache.exists() or [p for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_a_full_disk_is_one_line_and_leaves_no_entry(
    trainer_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """A real full disk: the conversion writes into a 300 kB tmpfs (bubblewrap's --size)."""
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is not installed: apt-get install bubblewrap (this test needs it)")
    step = trainer_checkpoints["verl"] / "global_step_1"
    inner = (f"{sys.executable} -m rollouts.cli convert-checkpoint {step} -o /mnt/out; "
             "echo status=$?; ls -a /mnt")
    command = ["bwrap", "--dev-bind", "/", "/", "--size", str(300 * 1024), "--tmpfs", "/mnt",
               "sh", "-c", inner]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if "status=" not in done.stdout:
        pytest.fail(f"bubblewrap cannot mount a tmpfs here: {done.stderr.strip()[:200]}")
    assert "status=1" in done.stdout, (done.stdout, done.stderr)
    [line] = [ln for ln in done.stderr.strip().splitlines() if not ln.startswith("rollouts: ")]
    assert line.startswith("Error: converting") and "No space left on device" in line, line
    assert "free space there" in line
    listing = done.stdout.split("status=1", 1)[1].split()
    assert "out" not in listing  # nothing complete-looking; the temp folder is gone too
    assert not [name for name in listing if ".tmp-" in name]
