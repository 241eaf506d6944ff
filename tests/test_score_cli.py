"""End-to-end tests of `score`: the real command on real files in tmp_path, real worker processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from rollouts.dataset import prompt_id_for
from scoring.score_cli import main
from scoring.scorer import ScoreConfig, score_files

CALL_LOG_REWARD = """
import json, os

def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    with open(os.environ["CALL_LOG"], "a") as log:
        log.write(json.dumps(solution_str) + "\\n")
    return {"score": float(solution_str.strip() == str(ground_truth)), "length": len(solution_str)}
"""

HANG_REWARD = """
import time

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    if solution_str == "hang":
        time.sleep(600)
    return 1.0
"""


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One-line click errors (not raised exceptions) and a cache inside tmp_path."""
    monkeypatch.delenv("ROLLOUTS_RAISE", raising=False)
    monkeypatch.setenv("ROLLOUTS_SCORE_CACHE", str(tmp_path / "cache"))


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def rollout(prompt: str, idx: int, response: str | None, gold: Any, source: str, **extra: Any) -> dict[str, Any]:
    row = {
        "prompt": [{"role": "user", "content": prompt}],
        "response": response,
        "sample_idx": idx,
        "data_idx": 0,
        "prompt_id": f"id-{prompt}",
        "data_source": source,
        "reward_model": {"style": "rule", "ground_truth": gold},
        "extra_info": {"split": "test"},
        "error": None,
        "finish_reason": "stop",
    }
    row.update(extra)
    return row


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def mixed_rows() -> list[dict[str, Any]]:
    return [
        rollout("m1", 0, r"so \boxed{\frac{1}{2}}", "0.5", "aime"),
        rollout("m1", 1, r"Answer: $0.5$", "0.5", "aime"),
        rollout("m1", 2, r"\boxed{\frac{1}{2006!}}", "0.5", "aime"),
        rollout("m1", 3, None, "0.5", "aime", error={"kind": "http_500", "message": "boom"},
                finish_reason=None),
        rollout("g1", 0, "#### 1,200", "1200", "openai/gsm8k"),
        rollout("g1", 1, "I give up", "1200", "openai/gsm8k"),
        rollout("c1", 0, "Answer: (B)", "B", "gpqa"),
        rollout("c1", 1, "Answer: (D)", "B", "gpqa"),
    ]


def test_long_jsonl_auto_dispatch_outputs_and_results(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "run.jsonl", mixed_rows())
    result = run(source, "--workers", "1")
    assert result.exit_code == 0, result.output
    scored = pd.read_parquet(tmp_path / "run.scored.parquet")
    assert list(scored["score"]) == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert list(scored["score_status"]) == ["ok", "ok", "ok", "error", "ok", "no_answer", "ok", "ok"]
    assert list(scored["reward_fn"]) == ["math"] * 4 + ["gsm8k"] * 2 + ["mcq"] * 2
    assert list(scored["pred"][:3]) == [r"\frac{1}{2}", "0.5", r"\frac{1}{2006!}"]
    assert list(scored["pred_source"][:3]) == ["boxed", "answer_line", "boxed"]
    assert scored["acc"].dtype == bool and scored["reward_fn_version"].notna().all()
    # Input columns are carried through untouched.
    assert list(scored["prompt_id"]) == [r["prompt_id"] for r in mixed_rows()]
    assert scored["extra_info"][0] == {"split": "test"}
    results = json.loads((tmp_path / "run.scored.results.json").read_text())
    math_metrics = results["data_sources"]["aime"]
    assert math_metrics["n_prompts"] == 1 and math_metrics["mean@n"] == 0.5
    assert math_metrics["pass@k"]["1"] == 0.5 and math_metrics["pass@k"]["4"] == 1.0
    assert math_metrics["status_counts"]["error"] == 1
    assert results["data_sources"]["openai/gsm8k"]["status_counts"]["no_answer"] == 1
    assert "aime: prompts=1 mean@n=0.5000 pass@1=0.5000" in result.output


def test_failed_generations_never_reach_the_reward_fn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("CALL_LOG", str(log))
    reward = tmp_path / "my_reward.py"
    reward.write_text(CALL_LOG_REWARD)
    rows = [
        rollout("p", 0, "42", "42", "anything"),
        rollout("p", 1, "secret", "42", "anything", error="timeout: no response"),
        rollout("p", 2, "41", "42", "anything"),
    ]
    source = write_jsonl(tmp_path / "run.jsonl", rows)
    result = run(source, "--reward-fn", f"{reward}:compute_score", "--workers", "1", "--no-cache")
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(line) for line in log.read_text().splitlines()) == ["41", "42"]
    scored = pd.read_parquet(tmp_path / "run.scored.parquet")
    assert list(scored["score_status"]) == ["ok", "error", "ok"]
    assert list(scored["score"]) == [1.0, 0.0, 0.0]
    # The dict's extra key became a column; the name records file and function.
    assert list(scored["length"][[0, 2]]) == [2, 2]
    assert set(scored["reward_fn"]) == {"my_reward.py:compute_score"}


def test_wide_parquet_is_exploded_with_sample_idx_and_stable_prompt_id(tmp_path: Path) -> None:
    wide = pd.DataFrame(
        {
            "prompt": ["What is 1+1?", "What is 2+2?"],
            "data_source": ["lighteval/MATH", "lighteval/MATH"],
            "reward_model": [{"ground_truth": "2"}, {"ground_truth": "4"}],
            "responses": [[r"\boxed{2}", r"\boxed{3}", r"\boxed{2}"], [r"\boxed{4}", "no"]],
        }
    )
    wide.to_parquet(tmp_path / "wide.parquet")
    out = tmp_path / "wide_scored.parquet"
    assert run(tmp_path / "wide.parquet", "-o", out, "--workers", "1").exit_code == 0
    scored = pd.read_parquet(out)
    assert list(scored["sample_idx"]) == [0, 1, 2, 0, 1]
    assert list(scored["data_idx"]) == [0, 0, 0, 1, 1]
    assert list(scored["response"]) == [r"\boxed{2}", r"\boxed{3}", r"\boxed{2}", r"\boxed{4}", "no"]
    assert list(scored["acc"]) == [True, False, True, True, False]
    ids = scored["prompt_id"].tolist()
    assert ids[0] == ids[1] == ids[2] != ids[3] == ids[4]
    assert ids[0] == prompt_id_for("lighteval/MATH", "What is 1+1?")
    results = json.loads((tmp_path / "wide_scored.results.json").read_text())
    assert results["data_sources"]["lighteval/MATH"]["pass@k"]["2"] == pytest.approx((1 - 0 / 3 + 1) / 2)
    # Same input, same output, prompt ids included.
    out2 = tmp_path / "again.parquet"
    assert run(tmp_path / "wide.parquet", "-o", out2, "--workers", "1").exit_code == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out2), scored)


def test_glob_of_inputs_to_directory_with_batch_summary(tmp_path: Path) -> None:
    rows = mixed_rows()
    write_jsonl(tmp_path / "ckpt_a.jsonl", rows[:4])
    write_jsonl(tmp_path / "ckpt_b.jsonl", rows[4:])
    out_dir = tmp_path / "scored"
    summary = tmp_path / "summary.json"
    result = run(str(tmp_path / "ckpt_*.jsonl"), "-o", out_dir, "--summary", summary, "--workers", "2")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "ckpt_a.scored.parquet", "ckpt_a.scored.results.json",
        "ckpt_b.scored.parquet", "ckpt_b.scored.results.json",
    ]
    batch = json.loads(summary.read_text())
    assert [Path(i["input"]).name for i in batch["inputs"]] == ["ckpt_a.jsonl", "ckpt_b.jsonl"]
    assert set(batch["inputs"][1]["data_sources"]) == {"openai/gsm8k", "gpqa"}
    assert batch["totals"]["rows"] == 8 and batch["totals"]["generation_errors"] == 1


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "run.jsonl", mixed_rows()[:2])
    assert run(source, "--workers", "1").exit_code == 0
    output = tmp_path / "run.scored.parquet"
    before = output.read_bytes()
    refused = run(source, "--workers", "1")
    assert refused.exit_code == 1
    assert "exists" in refused.output and "--overwrite" in refused.output
    assert output.read_bytes() == before
    assert run(source, "--workers", "1", "--overwrite").exit_code == 0


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    return lines[0]


def test_bad_input_gives_one_line_errors_before_work(tmp_path: Path) -> None:
    rows = mixed_rows()[:2]
    no_response = write_jsonl(tmp_path / "a.jsonl", [{k: v for k, v in r.items() if k != "response"} for r in rows])
    assert "no 'response'" in _one_line_error(run(no_response))
    no_gold = write_jsonl(tmp_path / "b.jsonl", [{k: v for k, v in r.items() if k != "reward_model"} for r in rows])
    assert "no ground truth" in _one_line_error(run(no_gold))
    good = write_jsonl(tmp_path / "c.jsonl", rows)
    assert "unknown reward function 'mathh'" in _one_line_error(run(good, "--reward-fn", "mathh"))
    lacking = tmp_path / "lacking.py"
    lacking.write_text("def something_else(*a):\n    return 1.0\n")
    assert "defines no function 'compute_score'" in _one_line_error(
        run(good, "--reward-fn", f"{lacking}:compute_score")
    )
    unknown = write_jsonl(tmp_path / "d.jsonl", [rollout("p", 0, "x", "1", "my/poetry")])
    assert "no reward function for data_source 'my/poetry'" in _one_line_error(run(unknown))
    assert not list(tmp_path.glob("*.scored.*"))


def test_hung_reward_becomes_timeout_row_and_run_goes_on(tmp_path: Path) -> None:
    reward = tmp_path / "hang.py"
    reward.write_text(HANG_REWARD)
    rows = [rollout("p", i, text, "x", "s") for i, text in enumerate(["a", "hang", "b"])]
    source = write_jsonl(tmp_path / "run.jsonl", rows)
    result = run(source, "--reward-fn", f"{reward}:compute_score", "--timeout", "1",
                 "--workers", "1", "--no-cache")
    assert result.exit_code == 0, result.output
    scored = pd.read_parquet(tmp_path / "run.scored.parquet")
    assert list(scored["score_status"]) == ["ok", "timeout", "ok"]
    assert list(scored["score"]) == [1.0, 0.0, 1.0]
    assert "worker killed" in scored["score_error"][1]


def test_second_run_is_served_from_cache_with_identical_output(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "run.jsonl", mixed_rows())
    config = ScoreConfig(workers=1, cache_dir=tmp_path / "verdicts")
    first = score_files([source], config, output=tmp_path / "one.parquet")
    assert first["totals"]["cache_hits"] == 0 and first["totals"]["judged"] == 6
    second = score_files([source], config, output=tmp_path / "two.parquet")
    assert second["totals"]["cache_hits"] == 6 and second["totals"]["judged"] == 0
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet")
    )


def test_repeated_answers_are_judged_once(tmp_path: Path) -> None:
    rows = [rollout("p", i, text, "7", "math") for i, text in
            enumerate([r"\boxed{7}", r"Answer: 7", r"\boxed{ 7 }", r"\boxed{8}"] * 4)]
    source = write_jsonl(tmp_path / "run.jsonl", rows)
    batch = score_files([source], ScoreConfig(workers=1, cache_dir=None))
    assert batch["totals"]["distinct_items"] == 2 and batch["totals"]["judged"] == 2
    scored = pd.read_parquet(tmp_path / "run.scored.parquet")
    assert list(scored["acc"]) == [True, True, True, False] * 4


def test_code_rows_run_in_the_sandbox_end_to_end(tmp_path: Path) -> None:
    tests = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
    right = "```python\ndef add(a, b):\n    return a + b\n```"
    half = "```python\ndef add(a, b):\n    return 3\n```"
    rows = [
        rollout("add", 0, right, tests, "codegen__mbpp"),
        rollout("add", 1, half, tests, "codegen__mbpp"),
        rollout("add", 2, "", tests, "codegen__mbpp"),
    ]
    source = write_jsonl(tmp_path / "code.jsonl", rows)
    result = run(source, "--workers", "1", "--no-cache")
    assert result.exit_code == 0, result.output
    scored = pd.read_parquet(tmp_path / "code.scored.parquet")
    assert list(scored["reward_fn"]) == ["guru_code"] * 3
    assert list(scored["score"]) == [1.0, 0.0, 0.0]
    assert list(scored["pass_fraction"]) == [1.0, 0.5, 0.0]
    assert list(scored["score_status"]) == ["ok", "ok", "no_answer"]


def test_jsonl_output_file_is_strict_json_with_nulls(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "run.jsonl", mixed_rows())
    out = tmp_path / "out" / "scored.jsonl"
    assert run(source, "-o", out, "--workers", "1", "--no-cache").exit_code == 0

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    rows = [json.loads(line, parse_constant=refuse) for line in out.read_text().splitlines()]
    assert len(rows) == 8
    assert rows[3]["score_status"] == "error" and rows[3]["pred"] is None and rows[3]["response"] is None
    assert rows[0]["error"] is None and rows[0]["score"] == 1.0
    assert (tmp_path / "out" / "scored.results.json").is_file()


def test_a_glob_never_reads_the_files_score_wrote_for_it(tmp_path: Path) -> None:
    rows = mixed_rows()
    runs = tmp_path / "runs"
    runs.mkdir()
    write_jsonl(runs / "a.jsonl", rows[:4])
    write_jsonl(runs / "b.jsonl", rows[4:])
    summary = runs / "summary.json"
    assert run(str(runs / "*"), "--summary", summary).exit_code == 0
    written = sorted(p.name for p in runs.iterdir())
    result = run(str(runs / "*"), "--summary", summary, "--overwrite")  # matches last run's outputs
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in runs.iterdir()) == written  # no a.scored.scored.parquet
    batch = json.loads(summary.read_text())
    assert [Path(i["input"]).name for i in batch["inputs"]] == ["a.jsonl", "b.jsonl"]
    assert "note: left out 5 file(s) the inputs matched that this command writes itself" in result.output


def test_undecodable_jsonl_lines_are_one_line_errors_naming_file_and_line(tmp_path: Path) -> None:
    good = (json.dumps(rollout("p", 0, r"\boxed{1}", "1", "math")) + "\n").encode()
    latin = json.dumps(rollout("p", 1, "caf\u00e9", "1", "math"), ensure_ascii=False)
    source = tmp_path / "latin1.jsonl"
    source.write_bytes(good + latin.encode("latin-1") + b"\n")
    line = _one_line_error(run(source))
    assert f"{source} line 2: invalid UTF-8 byte 0xE9 at byte" in line and "fix: re-encode" in line
    # A lone surrogate escape: valid JSON text, but no string any file format can hold.
    lone = json.dumps(rollout("p", 2, "half \ud83d of an emoji", "1", "math"))
    assert "\\ud83d" in lone
    source = tmp_path / "surrogate.jsonl"
    source.write_bytes(good + good + lone.encode() + b"\n")
    line = _one_line_error(run(source))
    assert f"{source} line 3: a lone surrogate \\ud83d in a string" in line
    assert not list(tmp_path.glob("*.scored.*"))


PLUS_MINUS_REWARD = """
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    right = solution_str.strip() == ground_truth
    if data_source == "dapo":  # verl's DAPO: +1/-1 and its own acc
        return {"score": 1.0 if right else -1.0, "acc": right, "pred": solution_str.strip()}
    return 1.0 if right else (0.1 if solution_str.strip().isdigit() else 0.0)  # format credit
"""


def test_mean_at_n_is_accuracy_with_plus_minus_and_partial_rewards(tmp_path: Path) -> None:
    """mean@n and pass@k count passes: a dict's own `acc`, else score >= --pass-threshold (1.0);
    the raw reward mean is mean_score@n."""
    reward = tmp_path / "pm.py"
    reward.write_text(PLUS_MINUS_REWARD)
    rows = [rollout("a", i, text, "7", source)
            for source in ("dapo", "partial") for i, text in enumerate(["7", "8", "9", "7", "x"])]
    source = write_jsonl(tmp_path / "run.jsonl", rows)
    result = run(source, "--reward-fn", reward, "--workers", "1", "--no-cache")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run.scored.results.json").read_text())["data_sources"]
    assert metrics["dapo"]["mean@n"] == pytest.approx(0.4)
    assert metrics["dapo"]["pass@k"]["1"] == pytest.approx(0.4)
    assert metrics["dapo"]["mean_score@n"] == pytest.approx(-0.2)
    assert metrics["partial"]["mean@n"] == pytest.approx(0.4)  # 0.1 for "8" and "9" is no pass
    assert metrics["partial"]["mean_score@n"] == pytest.approx(0.44)
    assert "dapo: prompts=1 mean@n=0.4000 mean_score@n=-0.2000" in result.output
    lenient = run(source, "--reward-fn", reward, "--workers", "1", "--no-cache",
                  "--pass-threshold", "0.1", "-o", tmp_path / "lenient.parquet")
    assert lenient.exit_code == 0, lenient.output
    metrics = json.loads((tmp_path / "lenient.results.json").read_text())["data_sources"]
    assert metrics["partial"]["mean@n"] == pytest.approx(0.8)
    assert metrics["dapo"]["mean@n"] == pytest.approx(0.4)  # its own acc
