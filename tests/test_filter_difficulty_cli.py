"""End-to-end tests of `filter-difficulty`: the real command on parquet/jsonl files in tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from scoring.filter_cli import main

PER_SAMPLE = ["response", "sample_idx", "score", "acc", "pred", "score_status", "finish_reason",
              "completion_tokens", "latency_s", "endpoint", "attempts", "error", "seed",
              "temperature", "model"]
STATS = ["pass_rate", "n_samples", "n_pass", "pass_rate_ci_low", "pass_rate_ci_high", "bucket"]


def sample_rows(
    prompt_id: str,
    passes: int,
    n: int,
    *,
    data_source: str = "math",
    dataset: str = "train",
    statuses: list[str] | None = None,
    data_idx: int = 0,
) -> list[dict[str, Any]]:
    """n scored samples of one prompt, the first `passes` of them correct."""
    rows = []
    for i in range(n):
        passed = i < passes
        status = statuses[i] if statuses else ("ok" if passed else "no_answer")
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"question {prompt_id}"}],
                "response": f"answer {i}",
                "sample_idx": i,
                "data_idx": data_idx,
                "prompt_id": prompt_id,
                "data_source": data_source,
                "ability": "math",
                "reward_model": {"ground_truth": f"gt-{prompt_id}", "style": "rule"},
                "extra_info": {"index": data_idx, "split": "train"},
                "temperature": 1.0,
                "seed": 1000 + i,
                "finish_reason": "stop",
                "completion_tokens": 10 + i,
                "latency_s": 0.5,
                "endpoint": "http://127.0.0.1:8000/v1",
                "model": "tiny",
                "attempts": 1,
                "error": None,
                "dataset": dataset,
                "score": 1.0 if passed else 0.0,
                "acc": passed,
                "pred": "42" if passed else None,
                "score_status": status,
                "reward_fn": "math_verify",
                "reward_fn_version": "1",
            }
        )
    return rows


def write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    if path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def standard_rows() -> list[dict[str, Any]]:
    """Eight prompts of 4 samples: pass counts 0..4 in math, plus three in code."""
    rows: list[dict[str, Any]] = []
    for k in range(5):
        rows += sample_rows(f"m{k}", k, 4, data_idx=k)
    for j, k in enumerate((0, 2, 4)):
        rows += sample_rows(f"c{j}", k, 4, data_source="code", data_idx=10 + j)
    return rows


def run(args: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("ROLLOUTS_RAISE", raising=False)
    return CliRunner().invoke(main, [str(a) for a in args])


def read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pandas()
    return pd.read_json(path, lines=True)


def test_band_writes_kept_and_dropped_prompt_rows_with_pass_rates(tmp_path, monkeypatch):
    scored = write_rows(standard_rows(), tmp_path / "scored.parquet")
    out = tmp_path / "out"
    result = run([scored, "-o", out, "--strategy", "band", "--min", "0.1", "--max", "0.9"],
                 monkeypatch)
    assert result.exit_code == 0, result.output

    kept = read(out / "kept.parquet")
    dropped = read(out / "dropped.parquet")
    assert sorted(kept["prompt_id"]) == ["c1", "m1", "m2", "m3"]
    assert sorted(dropped["prompt_id"]) == ["c0", "c2", "m0", "m4"]
    # One row per prompt, verl columns intact, per-sample columns gone, stat columns added.
    row = kept.set_index("prompt_id").loc["m3"]
    assert list(row["prompt"]) == [{"role": "user", "content": "question m3"}]
    assert row["reward_model"] == {"ground_truth": "gt-m3", "style": "rule"}
    assert row["extra_info"] == {"index": 3, "split": "train"}
    assert (row["data_source"], row["ability"], row["data_idx"]) == ("math", "math", 3)
    assert row["pass_rate"] == 0.75 and row["n_pass"] == 3 and row["n_samples"] == 4
    assert 0 < row["pass_rate_ci_low"] < 0.75 < row["pass_rate_ci_high"] < 1
    assert row["bucket"] == "kept"
    assert not set(PER_SAMPLE) & set(kept.columns)
    assert set(STATS) <= set(kept.columns)
    assert "set_aside_reason" not in kept.columns

    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "band"
    assert summary["parameters"] == {"min": 0.1, "max": 0.9}
    assert summary["pass_rule"] == "acc"
    assert summary["buckets"] == {"kept": 4, "dropped": 4, "set_aside": 0}
    assert summary["counts_by_data_source"]["math"] == {"kept": 3, "dropped": 2, "set_aside": 0}
    assert summary["counts_by_data_source"]["code"] == {"kept": 1, "dropped": 2, "set_aside": 0}
    assert summary["n_rows"] == 32 and summary["n_prompts"] == 8
    assert "kept" in result.output and str(out / "kept.parquet") in result.output


def test_unscoreable_prompts_are_set_aside_and_no_answer_is_a_fail(tmp_path, monkeypatch):
    rows = sample_rows("ok", 2, 4, statuses=["ok", "ok", "no_answer", "no_answer"])
    rows += sample_rows("slow", 1, 4, statuses=["ok", "timeout", "ok", "ok"])
    rows += sample_rows("boom", 0, 4, statuses=["sandbox_error", "ok", "error", "ok"])
    failed = sample_rows("genfail", 3, 4)
    failed[3]["error"] = "http_400: prompt longer than the context"
    rows += failed
    scored = write_rows(rows, tmp_path / "scored.parquet")
    out = tmp_path / "out"
    result = run([scored, "-o", out, "--strategy", "bins"], monkeypatch)
    assert result.exit_code == 0, result.output

    medium = read(out / "medium.parquet")
    assert list(medium["prompt_id"]) == ["ok"] and medium["pass_rate"].iloc[0] == 0.5
    aside = read(out / "set_aside.parquet").set_index("prompt_id")
    assert sorted(aside.index) == ["boom", "genfail", "slow"]
    assert set(aside["set_aside_reason"]) == {"unscoreable"}
    assert set(aside["bucket"]) == {"set_aside"}
    assert aside.loc["slow", "n_unscoreable"] == 1 and aside.loc["boom", "n_unscoreable"] == 2
    # The pass rate of a set-aside prompt counts only its scoreable samples.
    assert aside.loc["genfail", "pass_rate"] == 1.0 and aside.loc["genfail", "n_samples"] == 4
    for name in ("impossible", "very_hard", "hard", "easy", "very_easy", "perfect"):
        assert read(out / f"{name}.parquet").empty
    summary = json.loads((out / "summary.json").read_text())
    assert summary["set_aside"] == {
        "count": 3, "by_reason": {"unscoreable": 3}, "unscoreable_samples": 4
    }
    assert "3 prompt(s) have unscoreable samples" in result.stderr


def test_mixed_sample_counts_warn_and_are_set_aside_unless_keep_mixed(tmp_path, monkeypatch):
    rows = sample_rows("a", 2, 4) + sample_rows("b", 1, 4) + sample_rows("c", 1, 4)
    rows += sample_rows("short", 1, 3) + sample_rows("long", 3, 6)
    scored = write_rows(rows, tmp_path / "scored.parquet")

    out = tmp_path / "out"
    result = run([scored, "-o", out, "--strategy", "nonzero-variance"], monkeypatch)
    assert result.exit_code == 0, result.output
    assert "2 prompt(s) have a sample count other than the majority (4)" in result.stderr
    assert "--keep-mixed" in result.stderr
    aside = read(out / "set_aside.parquet")
    assert sorted(aside["prompt_id"]) == ["long", "short"]
    assert set(aside["set_aside_reason"]) == {"sample_count"}
    assert sorted(read(out / "kept.parquet")["prompt_id"]) == ["a", "b", "c"]
    counts = json.loads((out / "summary.json").read_text())["sample_counts"]
    assert counts["majority_by_dataset"] == {"train": 4}
    assert counts["histogram"] == {"3": 1, "4": 3, "6": 1}
    assert counts["n_mixed_prompts"] == 2 and counts["mixed_bucketed"] is False
    assert {e["key"] for e in counts["mixed_examples"]} == {"short", "long"}

    out2 = tmp_path / "out2"
    result = run([scored, "-o", out2, "--strategy", "nonzero-variance", "--keep-mixed"],
                 monkeypatch)
    assert result.exit_code == 0, result.output
    kept = read(out2 / "kept.parquet").set_index("prompt_id")
    assert sorted(kept.index) == ["a", "b", "c", "long", "short"]
    assert kept.loc["long", "n_samples"] == 6 and kept.loc["long", "pass_rate"] == 0.5
    assert read(out2 / "set_aside.parquet").empty


def test_missing_score_column_is_a_one_line_error_naming_score(tmp_path, monkeypatch):
    rows = [{k: v for k, v in r.items() if k not in ("score", "acc", "score_status")}
            for r in standard_rows()]
    scored = write_rows(rows, tmp_path / "rollouts.parquet")
    out = tmp_path / "out"
    result = run([scored, "-o", out], monkeypatch)
    assert result.exit_code == 1
    message = result.output.strip()
    assert message.startswith("Error:") and "no score column" in message
    assert "run `score`" in message and "\n" not in message
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "band", "--min", "0.9", "--max", "0.1"], "--min 0.9 must be below"),
        (["--strategy", "percentile", "--percentiles", "10,150"], "strictly between 0 and 100"),
        (["--strategy", "bins", "--k", "3"], "--k does not apply to --strategy bins"),
        (["--strategy", "k-of-n"], "needs --min-k"),
        (["--strategy", "k-of-n", "--min-k", "9"], "no prompt has more than 4 samples"),
        (["--percentiles", "33", "66"], "'66' looks like a number"),
    ],
)
def test_bad_options_fail_with_one_line_before_writing(tmp_path, monkeypatch, args, message):
    scored = write_rows(standard_rows(), tmp_path / "scored.parquet")
    out = tmp_path / "out"
    result = run([scored, "-o", out, *args], monkeypatch)
    assert result.exit_code == 1, result.output
    assert message in result.output and result.output.count("\n") == 1
    assert not out.exists()


def test_unknown_strategy_is_a_usage_error(tmp_path, monkeypatch):
    scored = write_rows(standard_rows(), tmp_path / "scored.parquet")
    result = run([scored, "-o", tmp_path / "out", "--strategy", "hardest"], monkeypatch)
    assert result.exit_code == 2
    assert "'hardest' is not one of" in result.output


def test_percentile_groups_by_dataset_and_prompt_id_across_files_and_globs(tmp_path, monkeypatch):
    # The same prompt_id in two datasets is two prompts; one prompt split across files is one.
    a = sample_rows("p1", 0, 4, dataset="gsm8k") + sample_rows("p2", 4, 4, dataset="gsm8k")
    b = sample_rows("p1", 2, 4, dataset="aime")
    split = sample_rows("p3", 1, 4, dataset="aime")
    write_rows(a + split[:2], tmp_path / "part-0.parquet")
    write_rows(b + split[2:], tmp_path / "part-1.parquet")
    out = tmp_path / "out"
    result = run([tmp_path / "part-*.parquet", "-o", out, "--percentiles", "50"], monkeypatch)
    assert result.exit_code == 0, result.output

    low = read(out / "p0-50.parquet")
    high = read(out / "p50-100.parquet")
    got = {(r.dataset, r.prompt_id): r.pass_rate for r in pd.concat([low, high]).itertuples()}
    assert got == {("gsm8k", "p1"): 0.0, ("gsm8k", "p2"): 1.0, ("aime", "p1"): 0.5,
                   ("aime", "p3"): 0.25}
    assert set(low["prompt_id"] + "@" + low["dataset"]) == {"p1@gsm8k", "p3@aime"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["details"]["cutoffs"] == [0.375]
    assert len(summary["inputs"]) == 2


def test_without_acc_a_pass_is_score_above_zero_or_the_threshold(tmp_path, monkeypatch):
    rows = []
    for pid, scores in {"x": [1.0, -1.0, -1.0, -1.0], "y": [0.5, 0.5, 0.9, 0.0]}.items():
        for r, score in zip(sample_rows(pid, 0, 4), scores, strict=True):
            del r["acc"]
            r["score"] = score
            rows.append(r)
    scored = write_rows(rows, tmp_path / "scored.parquet")

    out = tmp_path / "out"
    assert run([scored, "-o", out, "--strategy", "bins"], monkeypatch).exit_code == 0
    rates = pd.concat([read(p) for p in out.glob("*.parquet")]).set_index("prompt_id")
    assert rates.loc["x", "pass_rate"] == 0.25 and rates.loc["y", "pass_rate"] == 0.75
    assert json.loads((out / "summary.json").read_text())["pass_rule"] == "score > 0"

    out2 = tmp_path / "out2"
    result = run([scored, "-o", out2, "--strategy", "bins", "--pass-threshold", "0.9"],
                 monkeypatch)
    assert result.exit_code == 0, result.output
    rates = pd.concat([read(p) for p in out2.glob("*.parquet")]).set_index("prompt_id")
    assert rates.loc["y", "pass_rate"] == 0.25
    assert json.loads((out2 / "summary.json").read_text())["pass_rule"] == "score >= 0.9"


def test_jsonl_in_jsonl_out_groups_by_prompt_content_without_prompt_id(tmp_path, monkeypatch):
    rows = sample_rows("a", 1, 4) + sample_rows("b", 3, 4)
    for r in rows:
        del r["prompt_id"]
    rows[4]["prompt"] = "a plain completion prompt"
    for r in rows[4:]:
        r["prompt"] = "a plain completion prompt"
    scored = write_rows(rows, tmp_path / "scored.jsonl")
    out = tmp_path / "out"
    result = run([scored, "-o", out, "--strategy", "k-of-n", "--min-k", "2", "--format", "jsonl"],
                 monkeypatch)
    assert result.exit_code == 0, result.output

    lines = (out / "kept.jsonl").read_text().splitlines()
    assert len(lines) == 1
    kept = json.loads(lines[0])
    assert kept["prompt"] == "a plain completion prompt"
    assert kept["n_pass"] == 3 and kept["bucket"] == "kept"
    assert len(kept["prompt_id"]) == 16
    dropped = [json.loads(x) for x in (out / "dropped.jsonl").read_text().splitlines()]
    assert dropped[0]["prompt"] == [{"role": "user", "content": "question a"}]
    assert dropped[0]["reward_model"] == {"ground_truth": "gt-a", "style": "rule"}
    assert (out / "set_aside.jsonl").read_text() == ""

    # The generated prompt_id is a content hash: a second run gives the same ids.
    out2 = tmp_path / "out2"
    run([scored, "-o", out2, "--strategy", "k-of-n", "--min-k", "2", "--format", "jsonl"],
        monkeypatch)
    assert json.loads((out2 / "kept.jsonl").read_text())["prompt_id"] == kept["prompt_id"]


def test_other_columns_kept_only_when_constant_within_each_prompt(tmp_path, monkeypatch):
    rows = standard_rows()
    for r in rows:
        r["difficulty_tag"] = f"tag-{r['prompt_id']}"  # per prompt: kept
        r["pred_source"] = "boxed" if r["sample_idx"] % 2 else "last_line"  # per sample: dropped
        r["frac_tests"] = r["sample_idx"] / 4  # a reward extra: varies, dropped
    scored = write_rows(rows, tmp_path / "scored.parquet")
    out = tmp_path / "out"
    assert run([scored, "-o", out, "--strategy", "bins"], monkeypatch).exit_code == 0
    perfect = read(out / "perfect.parquet").set_index("prompt_id")
    assert perfect.loc["m4", "difficulty_tag"] == "tag-m4"
    assert "pred_source" not in perfect.columns and "frac_tests" not in perfect.columns
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dropped_per_sample_columns"] == ["frac_tests"]


def test_refuses_existing_buckets_and_overwrite_removes_stale_ones(tmp_path, monkeypatch):
    scored = write_rows(standard_rows(), tmp_path / "scored.parquet")
    out = tmp_path / "out"
    assert run([scored, "-o", out, "--strategy", "bins", "--plot"], monkeypatch).exit_code == 0
    before = (out / "perfect.parquet").read_bytes()

    result = run([scored, "-o", out, "--strategy", "bins"], monkeypatch)
    assert result.exit_code == 1
    assert "already holds bucket files" in result.output and "--overwrite" in result.output
    assert (out / "perfect.parquet").read_bytes() == before

    result = run([scored, "-o", out, "--strategy", "nonzero-variance", "--overwrite"],
                 monkeypatch)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["dropped.parquet", "kept.parquet", "set_aside.parquet", "summary.json"]


def test_plot_writes_a_png_histogram(tmp_path, monkeypatch):
    scored = write_rows(standard_rows(), tmp_path / "scored.parquet")
    out = tmp_path / "out"
    result = run([scored, "-o", out, "--plot"], monkeypatch)
    assert result.exit_code == 0, result.output
    png = (out / "pass_rates.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert json.loads((out / "summary.json").read_text())["files"]["plot"] == "pass_rates.png"
    assert not list(out.glob(".*tmp*"))


def test_console_command_separates_results_and_diagnostics(tmp_path):
    rows = standard_rows() + sample_rows("slow", 1, 4, statuses=["ok", "timeout", "ok", "ok"])
    scored = write_rows(rows, tmp_path / "scored.parquet")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "scoring.filter_cli", str(scored), "-o", str(out),
         "--strategy", "band", "--min", "0", "--max", "1"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "kept" in done.stdout and "warning" not in done.stdout
    assert done.stderr.startswith("warning: 1 prompt(s) have unscoreable samples")
    assert len(read(out / "kept.parquet")) == 4


def test_parquet_and_jsonl_inputs_together(tmp_path, monkeypatch):
    write_rows(sample_rows("a", 1, 4) + sample_rows("b", 4, 4), tmp_path / "one.parquet")
    write_rows(sample_rows("c", 2, 4, data_source="code"), tmp_path / "two.jsonl")
    out = tmp_path / "out"
    result = run([tmp_path / "one.parquet", tmp_path / "two.jsonl", "-o", out,
                  "--strategy", "nonzero-variance", "--format", "jsonl"], monkeypatch)
    assert result.exit_code == 0, result.output
    kept = [json.loads(x) for x in (out / "kept.jsonl").read_text().splitlines()]
    assert [(r["prompt_id"], r["data_source"], r["pass_rate"]) for r in kept] == [
        ("a", "math", 0.25), ("c", "code", 0.5)
    ]
    assert kept[0]["prompt"] == [{"role": "user", "content": "question a"}]
    dropped = [json.loads(x) for x in (out / "dropped.jsonl").read_text().splitlines()]
    assert [r["prompt_id"] for r in dropped] == ["b"]


def test_benchmark_data_runs_through_the_library(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_filter", Path(__file__).parent.parent / "benchmarks" / "bench_filter.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from scoring.difficulty import FilterConfig, make_strategy, run_filter

    data = tmp_path / "scored.parquet"
    assert bench.generate(data, 300, 8) == 2400
    config = FilterConfig(inputs=[data], output_dir=tmp_path / "out",
                          strategy=make_strategy("bins"))
    summary = run_filter(config).summary
    assert summary["n_rows"] == 2400 and summary["n_prompts"] == 300
    assert sum(summary["buckets"].values()) == 300
    perfect = pq.read_table(tmp_path / "out" / "perfect.parquet").to_pandas()
    assert (perfect["n_pass"] == 8).all() and "response" not in perfect.columns
    assert perfect["prompt"].iloc[0][0]["role"] == "system"


def test_empty_inputs_are_an_error_and_empty_files_are_skipped(tmp_path, monkeypatch):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = run([empty, "-o", tmp_path / "out"], monkeypatch)
    assert result.exit_code == 1 and "the inputs hold no rows" in result.output

    scored = write_rows(standard_rows(), tmp_path / "scored.parquet")
    result = run([empty, scored, "-o", tmp_path / "out2", "--strategy", "bins"], monkeypatch)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out2" / "summary.json").read_text())["n_prompts"] == 8


def test_missing_data_source_counts_as_unknown_and_plots_with_nothing_bucketed(
    tmp_path, monkeypatch
):
    rows = sample_rows("a", 1, 4, statuses=["ok", "timeout", "ok", "ok"])
    rows += sample_rows("b", 2, 4, statuses=["ok", "ok", "error", "ok"])
    for r in rows:
        r["data_source"] = None
    scored = write_rows(rows, tmp_path / "scored.parquet")
    out = tmp_path / "out"
    result = run([scored, "-o", out, "--strategy", "bins", "--plot"], monkeypatch)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts_by_data_source"]["unknown"]["set_aside"] == 2
    assert summary["n_bucketed"] == 0 and summary["mean_pass_rate"] is None
    assert (out / "pass_rates.png").read_bytes().startswith(b"\x89PNG")


def two_temperatures(tmp_path: Path) -> tuple[Path, Path]:
    """The same three prompts at two temperatures: all pass at 0.6, half at 1.0."""
    cold = [dict(r, temperature=0.6) for k in range(3) for r in sample_rows(f"p{k}", 4, 4, data_idx=k)]
    hot = [dict(r, temperature=1.0) for k in range(3) for r in sample_rows(f"p{k}", 2, 4, data_idx=k)]
    return write_rows(cold, tmp_path / "t0.6.parquet"), write_rows(hot, tmp_path / "t1.0.parquet")


def test_runs_sharing_prompts_are_not_pooled_silently(tmp_path, monkeypatch):
    cold, hot = two_temperatures(tmp_path)
    result = run([cold, hot, "-o", tmp_path / "out", "--strategy", "band"], monkeypatch)
    assert result.exit_code == 1
    assert ("the inputs hold 2 runs (model=tiny temperature=0.6; model=tiny temperature=1.0) with "
            "samples of the same 3 prompt(s)") in result.output
    assert "--group-by" in result.output and "--pool" in result.output
    assert not (tmp_path / "out").exists()

    result = run([cold, hot, "-o", tmp_path / "grouped", "--strategy", "band", "--min", "0.1",
                  "--max", "0.9", "--group-by", "temperature"], monkeypatch)
    assert result.exit_code == 0, result.output
    kept, dropped = read(tmp_path / "grouped" / "kept.parquet"), read(tmp_path / "grouped" / "dropped.parquet")
    assert sorted(kept["temperature"]) == [1.0] * 3 and set(kept["pass_rate"]) == {0.5}
    assert sorted(dropped["temperature"]) == [0.6] * 3 and set(dropped["pass_rate"]) == {1.0}

    result = run([cold, hot, "-o", tmp_path / "pooled", "--strategy", "band", "--pool"], monkeypatch)
    assert result.exit_code == 0, result.output
    assert "warning: pooling the samples of 2 runs" in result.output
    pooled = read(tmp_path / "pooled" / "kept.parquet")
    assert set(pooled["n_samples"]) == {8} and set(pooled["pass_rate"]) == {0.75}


def test_group_by_names_only_run_columns(tmp_path, monkeypatch):
    cold, _ = two_temperatures(tmp_path)
    result = run([cold, "-o", tmp_path / "out", "--group-by", "seed"], monkeypatch)
    assert result.exit_code == 1 and "--group-by seed: choose from model, checkpoint, temperature" in result.output
