"""Hot swap in `rollouts sweep`: one managed server for consecutive checkpoints, its weights
swapped through vLLM's dev endpoints (the stand-in serves them), checked, and a restart when a swap
fails or does not take; dev mode only on loopback servers."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner, Result

import rollouts.client as client
from rollouts.checkpoint import CACHE_ENV
from rollouts.cli import main
from rollouts.hotswap import dev_mode_allowed
from tests.checkpoint_writers import trained_state
from tests.generate_helpers import verl_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[1]

# The stand-in vllm, logging each start (with whether dev mode is on), each swap, and each
# completed request with the answer it gave.
LOGGING_VLLM = f"""
import json, os, sys
sys.path.insert(0, {str(ROOT)!r})
from tests import fake_vllm

LOG = os.environ["SWAP_SERVER_LOG"]

def record(event):
    with open(LOG, "a") as handle:
        handle.write(json.dumps(event) + "\\n")

record({{"event": "start", "model": sys.argv[2], "pid": os.getpid(),
        "dev_mode": os.environ.get("VLLM_SERVER_DEV_MODE"), "argv": sys.argv[1:]}})
original_rpc = fake_vllm.FakeEngine.collective_rpc

async def logged_rpc(self, request):
    response = await original_rpc(self, request)
    record({{"event": "swap", "status": response.status, "model": self.model}})
    return response

fake_vllm.FakeEngine.collective_rpc = logged_rpc
fake_vllm.main(sys.argv[1:])
"""


@pytest.fixture
def server_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "logging_vllm.py"
    script.write_text(LOGGING_VLLM)
    log = tmp_path / "server-events.jsonl"
    monkeypatch.setenv("ROLLOUTS_VLLM", f"{sys.executable} {script}")
    monkeypatch.setenv("SWAP_SERVER_LOG", str(log))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(client, "INITIAL_RETRY_DELAY_S", 0.01)
    return log


def events(log: Path, kind: str) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    return [e for e in lines if e["event"] == kind]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, tiny_base_model: Path) -> Path:
    """Three DCP checkpoints of one architecture, each with its own weights."""
    import torch.distributed.checkpoint as dcp

    root = tmp_path_factory.mktemp("swap-ckpts")
    for step in (10, 20, 30):
        state = trained_state(tiny_base_model, step).state_dict()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # no process group: expected here
            dcp.save({"model": state}, checkpoint_id=str(root / f"global_step_{step}"))
    return root


def sweep_file(tmp_path: Path, folder: Path, base: Path, out: str, **extra: Any) -> Path:
    write_jsonl(tmp_path / "d.jsonl", verl_rows(3))
    data = {"checkpoints": f"{folder}/global_step_*", "base_model": str(base),
            "output_dir": out, "datasets": ["d.jsonl"], "defaults": {"n": 2, "max_tokens": 6},
            "grid": {"temperature": [0.0, 1.0]}, **extra}
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(path: Path, *args: str, expect: int = 0) -> Result:
    result = CliRunner().invoke(main, ["sweep", str(path), "--no-progress", *args])
    assert result.exit_code == expect, (result.output, result.exception)
    return result


def responses(out: Path) -> dict[tuple[str, float], list[str]]:
    manifest = pd.read_parquet(out / "sweep.parquet")
    answers = {}
    for row in manifest.itertuples():
        rows = pd.read_parquet(row.outputs[0]).sort_values(["prompt_id", "sample_idx"])
        assert set(rows["model"]) == {row.model}  # rows name the checkpoint actually loaded
        answers[(Path(row.model).name, float(rows["temperature"].iloc[0]))] = list(rows["response"])
    return answers


@pytest.mark.slow
def test_a_sweep_swaps_weights_on_one_server_and_answers_as_restarts_do(
    tmp_path: Path, server_log: Path, checkpoints: Path, tiny_base_model: Path
) -> None:
    result = run(sweep_file(tmp_path, checkpoints, tiny_base_model, "swapped"))
    starts = events(server_log, "start")
    assert len(starts) == 1 and starts[0]["dev_mode"] == "1"
    swaps = events(server_log, "swap")
    assert [Path(s["model"]).name.split("-")[0] for s in swaps] == ["global_step_20",
                                                                  "global_step_30"]
    manifest = pd.read_parquet(tmp_path / "swapped" / "sweep.parquet")
    loads = [str(x).split()[0] for x in manifest["load"]]
    assert loads == ["start", "start", "swap", "swap", "swap", "swap"]
    assert "global_step_20" in result.stderr and "swap" in result.stderr

    run(sweep_file(tmp_path, checkpoints, tiny_base_model, "restarted"), "--no-hot-swap")
    assert len(events(server_log, "start")) == 1 + 3
    swapped, restarted = responses(tmp_path / "swapped"), responses(tmp_path / "restarted")
    assert swapped == restarted
    by_step = {step: answers for (step, t), answers in swapped.items() if t == 1.0}
    assert len({tuple(a) for a in by_step.values()}) == 3  # each checkpoint answers its own way


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ignore", "fail"])
def test_a_swap_that_fails_or_does_not_take_falls_back_to_a_restart(
    tmp_path: Path, server_log: Path, checkpoints: Path, tiny_base_model: Path,
    monkeypatch: pytest.MonkeyPatch, mode: str,
) -> None:
    monkeypatch.setenv("FAKE_VLLM_SWAP", mode)
    path = sweep_file(tmp_path, checkpoints, tiny_base_model, "out",
                      checkpoints=[str(checkpoints / "global_step_10"),
                                   str(checkpoints / "global_step_20")],
                      grid={"temperature": [1.0]})
    result = run(path)
    assert len(events(server_log, "start")) == 2
    manifest = pd.read_parquet(tmp_path / "out" / "sweep.parquet")
    assert manifest["load"][0].startswith("start")
    # A swap the server ignored is caught by the reference taken at conversion when the tiny
    # model's greedy tokens lead clearly there, else by answers equal to the old weights'.
    whys = (("differ from the reference", "did not change") if mode == "ignore"
            else ("collective_rpc answered 500",))
    load = manifest["load"][1]
    assert load.startswith("restart") and any(why in load for why in whys), load
    assert "swap failed" in result.stderr
    plain = sweep_file(tmp_path, checkpoints, tiny_base_model, "plain",
                       checkpoints=[str(checkpoints / "global_step_10"),
                                    str(checkpoints / "global_step_20")],
                       grid={"temperature": [1.0]})
    run(plain, "--no-hot-swap")
    assert responses(tmp_path / "out") == responses(tmp_path / "plain")


def test_dev_mode_only_on_loopback() -> None:
    assert dev_mode_allowed("127.0.0.1") and dev_mode_allowed("::1")
    assert dev_mode_allowed("localhost") and dev_mode_allowed("127.0.0.2")
    assert not dev_mode_allowed("0.0.0.0") and not dev_mode_allowed("10.1.2.3")
    assert not dev_mode_allowed("node17")


def test_a_server_listening_beyond_loopback_never_gets_dev_mode_even_with_an_api_key(
    tmp_path: Path, server_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM's --api-key guards /v1 only, not /collective_rpc: no key makes dev mode safe."""
    for step in (1, 2):
        folder = tmp_path / "ckpts" / f"global_step_{step}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"step": step}))
    write_jsonl(tmp_path / "d.jsonl", verl_rows(2))
    path = tmp_path / "open.yaml"
    path.write_text(yaml.safe_dump({
        "checkpoints": "ckpts/global_step_*", "output_dir": "out", "datasets": ["d.jsonl"],
        "server": {"host": "0.0.0.0", "extra_args": ["--api-key", "secret"]},
    }))
    result = run(path)
    starts = events(server_log, "start")
    assert "hot swap off" in result.stderr and "0.0.0.0" in result.stderr
    assert starts and all(s["dev_mode"] is None for s in starts)
    assert events(server_log, "swap") == []
