"""The main job end to end, as the README's demo runs it: generate -> score -> filter-difficulty."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from rollouts.cli import main as rollouts_main
from rollouts.tiny_model import build_tiny_model
from scoring.filter_cli import main as filter_main
from scoring.score_cli import main as score_main


def invoke(command: object, args: list[str]) -> str:
    result = CliRunner().invoke(command, args)  # type: ignore[arg-type]
    assert result.exit_code == 0, (result.output, result.exception)
    return str(result.output)


def test_bundled_dataset_generate_score_filter(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "tiny")
    data = resources.files("rollouts") / "data" / "math_demo.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(rows) == 24
    subset = tmp_path / "demo.jsonl"
    subset.write_text("".join(json.dumps(r) + "\n" for r in rows[10:14]))  # both data sources
    rollouts = tmp_path / "rollouts.parquet"
    invoke(rollouts_main, ["generate", str(subset), "-o", str(rollouts), "--backend", "hf",
                           "--model", str(model), "--n", "2", "--max-tokens", "8", "--no-progress"])
    generated = pd.read_parquet(rollouts)
    assert len(generated) == 8 and generated["error"].isna().all()
    scored = tmp_path / "scored.parquet"
    invoke(score_main, [str(rollouts), "-o", str(scored), "--no-cache", "--summary",
                        str(tmp_path / "summary.json")])
    frame = pd.read_parquet(scored)
    assert set(frame["reward_fn"]) == {"math", "gsm8k"}
    assert frame["score_status"].isin(["ok", "no_answer"]).all()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "gsm8k_additions" in json.dumps(summary) and "math__additions" in json.dumps(summary)
    invoke(filter_main, [str(scored), "-o", str(tmp_path / "buckets"), "--strategy", "bins"])
    buckets = json.loads((tmp_path / "buckets" / "summary.json").read_text())
    assert "impossible" in json.dumps(buckets)
    kept = pd.read_parquet(tmp_path / "buckets" / "impossible.parquet")
    assert len(kept) == 4  # random weights solve nothing; every prompt row comes back once
    assert {"prompt", "reward_model", "data_source", "pass_rate"} <= set(kept.columns)
