"""The main job end to end, as the README's demo runs it (generate -> score -> filter-difficulty),
and the research loop around it with nothing but the tools in between: prepare -> generate ->
score -> filter-difficulty -> generate on the kept prompts -> score -> report comparing the runs."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from rollouts.cli import main as rollouts_main
from rollouts.tiny_model import build_tiny_model
from scoring.filter_cli import main as filter_main
from scoring.score_cli import main as score_main


def invoke(command: object, args: list[str]) -> str:
    result = CliRunner().invoke(command, args)  # type: ignore[arg-type]
    assert result.exit_code == 0, (result.output, result.exception)
    return str(result.output)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def test_bundled_dataset_generate_score_filter(tmp_path: Path, tiny_model: Path) -> None:
    model = tiny_model
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
    assert set(frame["reward_fn"]) == {"guru_math", "gsm8k"}
    assert frame["score_status"].isin(["ok", "no_answer"]).all()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "gsm8k_additions" in json.dumps(summary) and "math__additions" in json.dumps(summary)
    invoke(filter_main, [str(scored), "-o", str(tmp_path / "buckets"), "--strategy", "bins"])
    buckets = json.loads((tmp_path / "buckets" / "summary.json").read_text())
    assert "impossible" in json.dumps(buckets)
    kept = pd.read_parquet(tmp_path / "buckets" / "impossible.parquet")
    assert len(kept) == 4  # random weights solve nothing; every prompt row comes back once
    assert {"prompt", "reward_model", "data_source", "pass_rate"} <= set(kept.columns)


RAW_GSM8K_STYLE = [  # a raw benchmark as users bring it: worked answers ending in '#### N'
    {"question": f"Tom has {a} apples and buys {b} more. How many now?",
     "answer": f"He has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"}
    for a, b in [(3, 4), (12, 30), (7, 7), (250, 31), (9, 1)]
]


def test_the_research_loop_with_nothing_but_the_tools_in_between(tmp_path: Path, tiny_model: Path) -> None:
    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in [*RAW_GSM8K_STYLE, RAW_GSM8K_STYLE[0]]))
    prompts = tmp_path / "prompts.parquet"
    invoke(rollouts_main, ["prepare", "math", str(raw), "-o", str(prompts)])
    gold = [r["reward_model"]["ground_truth"] for r in pd.read_parquet(prompts).to_dict("records")]
    assert gold == ["7", "42", "14", "281", "10"]  # finals, the repeated prompt dropped

    hf = ["--backend", "hf", "--model", str(tiny_model), "--max-tokens", "8", "--no-progress"]
    invoke(rollouts_main, ["generate", str(prompts), "-o", str(tmp_path / "first.parquet"), "--n", "2", *hf])
    invoke(score_main, [str(tmp_path / "first.parquet"), "--no-cache"])
    first = pd.read_parquet(tmp_path / "first.scored.parquet")
    failed = first.groupby("prompt_id")["acc"].sum().loc[lambda s: s == 0].index
    # The prompts the model never solves are the ones to work on.
    invoke(filter_main, [str(tmp_path / "first.scored.parquet"), "-o", str(tmp_path / "buckets"),
                         "--strategy", "k-of-n", "--max-k", "0"])
    kept = tmp_path / "buckets" / "kept.parquet"
    assert sorted(pd.read_parquet(kept)["prompt_id"]) == sorted(failed) and len(failed)

    invoke(rollouts_main, ["generate", str(kept), "-o", str(tmp_path / "again.parquet"), "--n", "3",
                           "--temperature", "0.6", *hf])
    invoke(score_main, [str(tmp_path / "again.parquet"), "--no-cache"])
    output = invoke(rollouts_main, ["report", str(tmp_path / "first.scored.parquet"),
                                    str(tmp_path / "again.scored.parquet"), "-o", str(tmp_path / "report"),
                                    "--baseline", "first"])
    assert "against first" in output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    [comparison] = report["comparisons"]
    assert comparison["label"] == "tiny temperature=0.6 n=3"
    assert comparison["baseline"] == "tiny temperature=1.0 n=2"
    assert comparison["n_pairs"] == len(failed)  # the same prompts, paired across the runs
