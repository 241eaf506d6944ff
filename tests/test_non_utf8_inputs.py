"""Input that is not UTF-8 (a latin-1 byte in a jsonl, json or csv line, or in a parquet string
value): `generate`, `score` and `prepare` stop before any work with one line naming the file, the
line (or row group, row and column) and the byte. Real commands in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINE = ('{{"prompt": "{text}", "question": "{text}", "answer": "#### 1", "data_source": '
        '"openai/gsm8k", "response": "1", "reward_model": {{"ground_truth": "1"}}}}\n')


def write_input(folder: Path, kind: str) -> Path:
    good, bad = b"what is 1?", "caf\xe9 au lait".encode("latin-1")
    path = folder / f"bad.{kind}"
    if kind in ("jsonl", "json"):
        lines = [LINE.format(text=t.decode("latin-1")).encode("latin-1") for t in (good, bad)]
        path.write_bytes(b"".join(lines))
    elif kind == "csv":
        path.write_bytes(b"question,answer\n" + good + b",#### 1\n" + bad + b",#### 1\n")
    else:
        raw = pa.array([good, good, bad], type=pa.binary())
        text = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())  # not validated
        table = pa.table({"prompt": text, "question": text, "answer": ["#### 1"] * 3,
                          "data_source": ["openai/gsm8k"] * 3, "response": ["1"] * 3,
                          "reward_model": [{"ground_truth": "1"}] * 3})
        pq.write_table(table, path, row_group_size=2)
    return path


COMMANDS = {
    "generate": ["-m", "rollouts.cli", "generate", "{input}", "-o", "{out}.parquet",
                 "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--no-progress"],
    "score": ["-c", "from scoring.score_cli import main; main()", "{input}", "-o", "{out}.scored.parquet", "--no-cache"],
    "prepare": ["-m", "rollouts.cli", "prepare", "gsm8k", "{input}", "-o", "{out}.parquet"],
}


@pytest.mark.parametrize(("command", "kind"), [
    ("generate", "json"), ("generate", "parquet"), ("score", "json"), ("score", "parquet"),
    ("prepare", "json"), ("prepare", "csv"), ("prepare", "parquet"),
])
def test_invalid_utf8_is_one_line_naming_where(tmp_path: Path, command: str, kind: str) -> None:
    source = write_input(tmp_path, kind)
    args = [a.format(input=source, out=tmp_path / "out") for a in COMMANDS[command]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ROLLOUTS_RAISE", None)
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    where = ("row group 1 (row 2), column 'prompt'" if kind == "parquet" and command != "prepare"
             else "row group 1 (row 2)" if kind == "parquet" else "line 3" if kind == "csv"
             else "line 2")
    assert lines[0].startswith(f"Error: {source} {where}"), lines[0]
    assert "invalid UTF-8 byte 0xE9" in lines[0]
    assert not list(tmp_path.glob("out*"))
