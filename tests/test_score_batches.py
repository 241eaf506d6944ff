"""`score` reads, scores and writes an input a batch at a time: memory holds a batch, not the file.

Counted, not timed: the scorer must never be handed more than --batch-rows rows, nothing may
read the whole input, and the output and results JSON must be those of the same input scored in
one batch.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scoring import scorer as scorer_module
from scoring.scorer import ScoreConfig, Scorer, score_files

ROWS = 600
BATCH = 50


def _rows(count: int, *, with_sample_idx: bool = True) -> pa.Table:
    """Math rows, 8 samples per prompt; `tests` is a string in the first half and a list in the
    second, so only the whole file shows it is a mixed column (written as JSON text)."""
    columns: dict[str, list] = {
        "prompt": [f"What is {i // 8} + 1?" for i in range(count)],
        "response": [f"so the answer is $\\boxed{{{(i // 8 + 1) if i % 3 else i % 7}}}$" for i in range(count)],
        "data_source": ["math__a" if i // 8 % 2 else "math__b" for i in range(count)],
        "reward_model": [{"style": "rule", "ground_truth": str(i // 8 + 1)} for i in range(count)],
    }
    if with_sample_idx:
        columns["sample_idx"] = [i % 8 for i in range(count)]
    return pa.table(columns)


def _write_parquet(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path, row_group_size=64)  # many row groups
    return path


def _write_jsonl(table: pa.Table, path: Path) -> Path:
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        row["tests"] = f"assert f({i})" if i < len(rows) // 2 else [f"assert f({i})"]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every frame the scorer is handed; reading a whole input fails the test."""
    sizes: list[int] = []
    real_score = Scorer.score

    def score(self: Scorer, frame: pd.DataFrame, *args: object, **kwargs: object) -> object:
        sizes.append(len(frame))
        return real_score(self, frame, *args, **kwargs)  # type: ignore[arg-type]

    def whole_read(path: object, *args: object, **kwargs: object) -> pd.DataFrame:
        raise AssertionError(f"{path} read whole")

    monkeypatch.setattr(Scorer, "score", score)
    monkeypatch.setattr(scorer_module, "read_table", whole_read)
    return sizes


def _score(path: Path, out: Path, batch_rows: int) -> dict:
    config = ScoreConfig(workers=2, cache_dir=None, batch_rows=batch_rows)
    batch = score_files([path], config, output=out)
    text = Path(batch["inputs"][0]["results"]).read_text()
    return json.loads(text.replace(str(out), "OUT"))  # the output's name is in the notes too


def _same_results(batched: dict, whole: dict) -> None:
    assert batched == whole


@pytest.mark.parametrize("with_sample_idx", [True, False])
def test_a_parquet_is_scored_a_batch_at_a_time_with_the_results_of_one_batch(
    tmp_path: Path, counted: list[int], with_sample_idx: bool
) -> None:
    source = _write_parquet(_rows(ROWS, with_sample_idx=with_sample_idx), tmp_path / "in.parquet")
    batched = _score(source, tmp_path / "batched.parquet", BATCH)
    assert counted and max(counted) <= BATCH and sum(counted) == ROWS
    counted.clear()
    whole = _score(source, tmp_path / "whole.parquet", ROWS)
    assert counted == [ROWS]
    _same_results(batched, whole)
    assert not (tmp_path / "batched.parquet.scoring").exists()
    assert pq.read_table(tmp_path / "batched.parquet").equals(pq.read_table(tmp_path / "whole.parquet"))
    samples = pd.read_parquet(tmp_path / "batched.parquet")
    assert sorted(samples.groupby("prompt_id")["sample_idx"].apply(sorted).map(tuple).unique()) \
        == [tuple(range(8))]  # numbered across batches when the input has no sample_idx


def test_a_jsonl_column_mixed_across_batches_is_json_text_in_every_batch(
    tmp_path: Path, counted: list[int]
) -> None:
    source = _write_jsonl(_rows(ROWS), tmp_path / "in.jsonl")
    batched = _score(source, tmp_path / "batched.jsonl", BATCH)
    assert max(counted) <= BATCH
    whole = _score(source, tmp_path / "whole.jsonl", ROWS)
    _same_results(batched, whole)
    assert batched["json_columns"] == ["tests"]
    lines = (tmp_path / "batched.jsonl").read_text().splitlines()
    assert lines == (tmp_path / "whole.jsonl").read_text().splitlines()
    assert json.loads(json.loads(lines[0])["tests"]) == "assert f(0)"
    assert json.loads(json.loads(lines[-1])["tests"]) == [f"assert f({ROWS - 1})"]


def test_reward_extras_typed_differently_by_two_batches_join_in_one_parquet(tmp_path: Path) -> None:
    reward = tmp_path / "reward.py"
    reward.write_text(
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
        "    n = int(solution_str)\n"
        "    note = n if n < 5 else f'big {n}'\n"
        "    return {'score': 1.0, 'note': note, **({'late': [n]} if n >= 5 else {})}\n"
    )
    rows = pa.table({"response": [str(i) for i in range(10)], "ground_truth": ["1"] * 10,
                     "prompt_id": [f"p{i}" for i in range(10)]})
    source = _write_parquet(rows, tmp_path / "in.parquet")
    config = ScoreConfig(reward_fn=f"{reward}:compute_score", workers=1, cache_dir=None, batch_rows=5)
    score_files([source], config, output=tmp_path / "out.parquet")
    scored = pq.read_table(tmp_path / "out.parquet")
    assert scored["note"].to_pylist() == [str(i) for i in range(5)] + [f"big {i}" for i in range(5, 10)]
    assert scored["late"].to_pylist() == [None] * 5 + [f"[{i}]" for i in range(5, 10)]  # JSON text


def test_one_jsonl_input_of_one_batch_is_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check's read is scored when a run's one input is a single batch read whole (a small
    run's start is not spent parsing its jsonl twice); more batches, or more inputs, are read
    again."""
    reads: list[str] = []
    real_batches = scorer_module.read_table_batches

    def read_table_batches(path: Path, rows: int, **kwargs: object) -> object:
        reads.append(Path(path).name)
        return real_batches(path, rows, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(scorer_module, "read_table_batches", read_table_batches)
    source = _write_jsonl(_rows(ROWS), tmp_path / "in.jsonl")
    whole = _score(source, tmp_path / "whole.jsonl", ROWS)
    assert reads == [source.name]
    reads.clear()
    batched = _score(source, tmp_path / "batched.jsonl", BATCH)
    assert reads == [source.name, source.name]
    _same_results(batched, whole)
    reads.clear()
    other = _write_jsonl(_rows(16), tmp_path / "other.jsonl")
    score_files([source, other], ScoreConfig(workers=2, cache_dir=None), output=tmp_path / "both")
    assert sorted(reads) == sorted([source.name, other.name] * 2)


def test_a_batch_on_which_every_item_fails_does_not_stop_a_file_that_has_passes(tmp_path: Path) -> None:
    reward = tmp_path / "reward.py"
    reward.write_text(
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
        "    if int(solution_str) >= 5:\n"
        "        raise ValueError('no')\n"
        "    return 1.0\n"
    )
    rows = pa.table({"response": [str(i) for i in range(10)], "ground_truth": ["1"] * 10,
                     "prompt_id": [f"p{i}" for i in range(10)]})
    source = _write_parquet(rows, tmp_path / "in.parquet")
    config = ScoreConfig(reward_fn=f"{reward}:compute_score", workers=1, cache_dir=None, batch_rows=5)
    batch = score_files([source], config, output=tmp_path / "out.parquet")
    assert batch["error_rows"] == 5  # the second batch's, as in one batch: not a failed run
    assert pq.read_table(tmp_path / "out.parquet")["score_status"].to_pylist() == ["ok"] * 5 + ["error"] * 5


def _sized_rows(count: int, response_bytes: int) -> pa.Table:
    """Rows whose responses are response_bytes of text, each different (as real ones are: a
    parquet file's dictionary would otherwise keep a few)."""
    text = random.Random(0).randbytes(response_bytes // 2 * count).hex()
    return pa.table({"response": [text[i * response_bytes:(i + 1) * response_bytes - 1] + str(i % 10)
                                  for i in range(count)],
                     "ground_truth": [str(i % 10) for i in range(count)],
                     "prompt_id": [f"p{i // 8}" for i in range(count)]})


def test_default_batches_of_short_rows_hold_a_20000_row_file_whole(
    tmp_path: Path, counted: list[int]
) -> None:
    """Without --batch-rows, a batch holds about a fixed amount of data: 20,000 short rows are one
    batch (each batch costs a fork of the workers and a part file), in parquet and in jsonl."""
    reward = tmp_path / "reward.py"
    reward.write_text("def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
                      "    return float(solution_str[-1] == ground_truth)\n")
    rows = _sized_rows(20_000, 40)
    config = ScoreConfig(reward_fn=f"{reward}:compute_score", workers=1, cache_dir=None)
    sources = [_write_parquet(rows, tmp_path / "in.parquet"), _write_jsonl(rows, tmp_path / "in.jsonl")]
    for source in sources:
        counted.clear()
        score_files([source], config, output=tmp_path / f"{source.suffix[1:]}.out{source.suffix}")
        assert counted == [20_000], source


def test_default_batches_of_8kb_rows_stay_small(tmp_path: Path) -> None:
    """Rows of 8 KB responses go about 5,000 to a batch (a 20,000-row batch of them peaked at
    1.2 GB); an explicit --batch-rows still wins."""
    rows = _sized_rows(6_000, 8_000)
    config = ScoreConfig(workers=1, cache_dir=None)
    for source in (_write_parquet(rows, tmp_path / "in.parquet"), _write_jsonl(rows, tmp_path / "in.jsonl")):
        assert 4_000 <= config.rows_per_batch(source) <= 5_300, source
        assert ScoreConfig(workers=1, cache_dir=None, batch_rows=7).rows_per_batch(source) == 7
