"""Reading the server-info file that `rollouts serve --info-file` writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rollouts.errors import UserInputError
from server.info import ServerInfo, read_server_info

GOOD = {
    "base_url": "http://10.0.0.5:8000",
    "model": "policy",
    "pid": 4242,
    "tp": 2,
    "dp": 4,
    "started_at": "2026-11-23T04:00:00+00:00",
    "log_file": "/tmp/vllm.log",
    "hostname": "gpu-17",
}


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_reads_every_field(tmp_path: Path) -> None:
    info = read_server_info(write(tmp_path / "s.json", GOOD))
    assert info == ServerInfo(**GOOD)  # type: ignore[arg-type]


def test_optional_fields_may_be_absent(tmp_path: Path) -> None:
    minimal = {k: GOOD[k] for k in ("base_url", "model", "pid")}
    info = read_server_info(write(tmp_path / "s.json", minimal))
    assert (info.base_url, info.model, info.pid, info.tp, info.dp) == (
        "http://10.0.0.5:8000", "policy", 4242, 1, 1
    )


def test_unknown_fields_are_ignored(tmp_path: Path) -> None:
    assert read_server_info(write(tmp_path / "s.json", {**GOOD, "new": 1})).pid == 4242


def test_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"no server info file; is `rollouts serve --info-file"):
        read_server_info(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"model": "m", "pid": 1}), "lacks base_url"),
        (json.dumps({**GOOD, "pid": "12"}), "'pid' should be int"),
        (json.dumps({**GOOD, "tp": True}), "'tp' should be int"),
        (json.dumps({**GOOD, "base_url": "10.0.0.5:8000"}), "is not an http"),
    ],
)
def test_invalid_files_are_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(content)
    with pytest.raises(UserInputError, match=message) as excinfo:
        read_server_info(path)
    assert str(path) in str(excinfo.value)
