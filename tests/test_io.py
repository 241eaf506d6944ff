"""Table I/O shared by every command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rollouts.errors import UserInputError
from rollouts.io import expand_paths, read_table, write_table_atomic


def test_jsonl_output_writes_null_for_missing_values(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1.0, np.nan], "b": ["x", None]})
    path = tmp_path / "t.jsonl"
    write_table_atomic(frame, path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"a": 1.0, "b": "x"}, {"a": None, "b": None}]


def test_parquet_round_trip_keeps_nested_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame({"reward_model": [{"ground_truth": "1"}], "prompt": [[{"role": "user", "content": "hi"}]]})
    path = tmp_path / "t.parquet"
    write_table_atomic(frame, path)
    back = read_table(path)
    assert back.iloc[0]["reward_model"] == {"ground_truth": "1"}
    assert not list(tmp_path.glob(".*tmp*"))


def test_expand_paths_sorts_globs_and_refuses_missing(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.jsonl"):
        (tmp_path / name).write_text("{}\n")
    assert [p.name for p in expand_paths([str(tmp_path / "*.jsonl")])] == ["a.jsonl", "b.jsonl"]
    with pytest.raises(UserInputError, match="no such file"):
        expand_paths([tmp_path / "c.jsonl"])
