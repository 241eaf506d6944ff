"""`rollouts report` end to end on small scored files: every number of one task by hand, the other
files it writes, sweep roots, split selection, wide rows, bad input, and the HTML page in Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from rollouts.cli import main
from rollouts.errors import UserInputError
from scoring.report import ReportOptions, build_report


@pytest.fixture(autouse=True)
def one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROLLOUTS_RAISE", raising=False)


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["report", *map(str, args)], catch_exceptions=False)


def prompt_rows(model: str, task: str, prompt: str, accs: list[int], classes: list[str] | None, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "model": model, "data_source": task, "prompt_id": prompt, "sample_idx": i,
            "score": float(acc), "acc": bool(acc), "pred": None,
            "answer_class": classes[i] if classes else None, "score_status": "ok", **extra,
        }
        for i, acc in enumerate(accs)
    ]


def write(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


# math__t: 2 prompts x 4 samples with answer classes; math__u: 10 prompts x 1 sample;
# code__c: no answer classes, 1 or 2 samples, one prompt on each side only.
BASE_U = [1, 0, 0, 0, 0, 0, 0, 0, 1, 1]
TUNED_U = [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]


def test_ranks_on_accuracy_not_the_raw_reward(tmp_path: Path) -> None:
    """verl's DAPO rewards (+1 right, -1 wrong, less an overlong penalty): mean@n, what reports
    rank on by default, is the share of passing samples; the raw mean is mean_score@n."""
    def rows(model: str, scores: list[float]) -> list[dict[str, Any]]:
        out = []
        for prompt in range(2):
            for sample, value in enumerate(scores):
                out.append({"model": model, "data_source": "math__dapo", "prompt_id": f"p{prompt}",
                            "sample_idx": sample, "score": value, "acc": value > 0, "pred": None,
                            "answer_class": None, "score_status": "ok"})
        return out

    # `short`: 2 of 4 right, wrong ones short; `long`: 3 of 4 right, wrong one cut off with a
    # penalty; the raw means say `short` (-0.0 vs -0.125), accuracy says `long`.
    short = write(rows("short", [1.0, 1.0, -1.0, -1.0]), tmp_path / "short.scored.parquet")
    long = write(rows("long", [0.5, 0.5, 0.5, -2.0]), tmp_path / "long.scored.parquet")
    result = run(short, long, "-o", tmp_path / "report")
    assert result.exit_code == 0, result.output
    tidy = pd.read_parquet(tmp_path / "report" / "metrics.parquet")
    task = tidy[tidy["level"] == "task"].set_index(["label", "metric"])["value"]
    assert task[("short", "mean@n")] == 0.5 and task[("long", "mean@n")] == 0.75
    assert task[("short", "mean_score@n")] == 0.0 and task[("long", "mean_score@n")] == -0.125
    best = json.loads((tmp_path / "report" / "report.json").read_text())["best"]
    assert {entry["label"] for entry in best} == {"long"}


def hand_tables(directory: Path) -> list[Path]:
    base = (
        prompt_rows("base", "math__t", "p1", [1, 0, 1, 0], ["a", "b", "a", "c"])
        + prompt_rows("base", "math__t", "p2", [0, 0, 0, 1], ["x", "y", "y", "z"])
        + [r for i, acc in enumerate(BASE_U) for r in prompt_rows("base", "math__u", f"q{i}", [acc], ["g" if acc else "w"])]
        + prompt_rows("base", "code__c", "c1", [1, 1], None)
        + prompt_rows("base", "code__c", "c2", [0, 1], None)
        + prompt_rows("base", "code__c", "c3", [0], None)
    )
    tuned = (
        prompt_rows("tuned", "math__t", "p1", [1, 1, 1, 0], ["a", "a", "a", "b"])
        + prompt_rows("tuned", "math__t", "p2", [0, 0, 1, 1], ["x", "x", "z", "z"])
        + [r for i, acc in enumerate(TUNED_U) for r in prompt_rows("tuned", "math__u", f"q{i}", [acc], ["g" if acc else "w"])]
        + prompt_rows("tuned", "code__c", "c1", [1, 1], None)
        + prompt_rows("tuned", "code__c", "c2", [1, 1], None)
        + prompt_rows("tuned", "code__c", "c4", [1, 0], None)
    )
    return [write(base, directory / "base.scored.parquet"), write(tuned, directory / "tuned.scored.parquet")]


def test_every_number_of_one_task_by_hand(tmp_path: Path) -> None:
    inputs = hand_tables(tmp_path / "scored")
    result = run(*inputs, "-o", tmp_path / "report", "--baseline", "base")
    assert result.exit_code == 0, result.output
    tidy = pd.read_parquet(tmp_path / "report" / "metrics.parquet")
    task = tidy[(tidy["level"] == "task") & (tidy["label"] == "base") & (tidy["task"] == "math__t")]
    got = {r["metric"]: (r["value"], r["ci_low"], r["ci_high"], r["n_prompts"]) for r in task.to_dict("records")}
    # Per prompt: mean 1/2 and 1/4; pass@2 = 1 - C(2,2)/C(4,2) = 5/6 and 1 - C(3,2)/C(4,2) = 1/2;
    # pass@3 = 1 and 1 - C(3,3)/C(4,3) = 3/4; majority votes: p1 "a" wins (pass) at every k,
    # p2 "x", then "x" (tie, first seen), then "y" twice (fail). With two prompts the 95% interval
    # is the two prompts' values.
    expected = {
        "mean@n": (0.375, 0.25, 0.5), "mean_score@n": (0.375, 0.25, 0.5),
        "pass@1": (0.375, 0.25, 0.5), "pass@2": (2 / 3, 0.5, 5 / 6),
        "pass@3": (0.875, 0.75, 1.0), "pass@4": (1.0, 1.0, 1.0),
        **{f"maj@{k}": (0.5, 0.0, 1.0) for k in range(1, 5)},
    }
    assert set(got) == set(expected)
    for metric, values in expected.items():
        assert got[metric][:3] == pytest.approx(values), metric
        assert got[metric][3] == 2

    def value(level: str, label: str, where: str, metric: str = "mean@n") -> float:
        column = "task" if level == "task" else "domain"
        row = tidy[(tidy["level"] == level) & (tidy["label"] == label) & (tidy[column] == where) & (tidy["metric"] == metric)]
        return float(row["value"].iloc[0])

    # Domains and overall are macro-averages over tasks: math = (0.375 + 0.3) / 2.
    assert value("task", "base", "math__u") == pytest.approx(0.3)
    assert value("task", "base", "code__c") == pytest.approx(0.5)
    assert value("domain", "base", "math") == pytest.approx(0.3375)
    assert value("overall", "base", "overall") == pytest.approx((0.375 + 0.3 + 0.5) / 3)
    # Mixed n: pass@2 of code__c covers the two prompts with 2 samples (each has a pass: 1.0).
    coverage = tidy[(tidy["label"] == "base") & (tidy["task"] == "code__c") & (tidy["metric"] == "pass@2")]
    assert int(coverage["n_prompts"].iloc[0]) == 2 and coverage["value"].iloc[0] == pytest.approx(1.0)

    comparisons = tidy[tidy["level"] == "comparison"].set_index("task")
    # math__t: differences (0.25, 0.25): 2 of the 4 sign patterns are as large. math__u: exact
    # McNemar with 1 vs 7 discordant prompts. code__c: one nonzero difference: p = 1.
    assert comparisons.loc["math__t", ["value", "p_value"]].tolist() == pytest.approx([0.25, 0.5])
    assert comparisons.loc["math__t", "test"] == "sign-flip"
    assert comparisons.loc["math__u", ["value", "p_value"]].tolist() == pytest.approx([0.6, 18 / 256])
    assert comparisons.loc["math__u", "test"] == "mcnemar"
    assert comparisons.loc["code__c", "p_value"] == pytest.approx(1.0)
    # Holm over the three tasks: 3 x 18/256, then max(that, 2 x 0.5), then 1.
    assert comparisons["p_holm"].to_dict() == pytest.approx({"math__t": 1.0, "math__u": 3 * 18 / 256, "code__c": 1.0})
    assert not comparisons["significant"].any()
    unpaired = comparisons.loc["code__c", ["n_prompts", "only_baseline", "only_label"]].tolist()
    assert unpaired == [2, 1, 1]

    page = (tmp_path / "report" / "report.md").read_text()
    assert "| math__t | 0.375 [0.250, 0.500] | 0.625 [0.500, 0.750] |" in page
    assert "| tuned | code__c | 1 | 1 | 2 |" in page  # prompts present on one side only
    assert "code__c: samples per prompt vary (1, 2)" in page
    assert "| code__c | base | k=1: 3, k=2: 2 |" in page and "| code__c | tuned | k=1: 3, k=2: 3 |" in page
    assert "| math__t | base |" not in page.split("prompts with at least k samples")[1]
    document = json.loads((tmp_path / "report" / "report.json").read_text())
    assert document["options"]["baseline"] == "base"
    assert {m["label"] for m in document["models"]} == {"base", "tuned"}
    assert "note: the best checkpoints are chosen and reported on the same prompts" in result.output


def checkpoint_tables(directory: Path, rates: dict[str, list[float]], prompts: int = 60, samples: int = 4, seed: int = 0) -> list[Path]:
    """Scored files of checkpoints global_step_{100,200,...} with known pass rates per task."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(len(next(iter(rates.values())))):
        label = f"ckpts/global_step_{100 * (index + 1)}"
        rows = []
        for task, per_step in rates.items():
            for p in range(prompts):
                accs = (rng.random(samples) < per_step[index]).astype(int).tolist()
                rows += prompt_rows(label, task, f"{task}-{p}", accs, [str(a) for a in accs])
        paths.append(write(rows, directory / f"step{index}.scored.parquet"))
    return paths


def test_learning_curves_best_checkpoint_and_significant_changes(tmp_path: Path) -> None:
    rates = {"math__a": [0.3, 0.5, 0.8], "math__b": [0.4, 0.5, 0.7], "logic__z": [0.6, 0.6, 0.3]}
    checkpoint_tables(tmp_path / "scored", rates)
    out = tmp_path / "report"
    # Models are shown by the shortest unique end of their path; the full path names them too.
    result = run(tmp_path / "scored", "-o", out, "--baseline", "ckpts/global_step_100", "--metric", "pass@1")
    assert result.exit_code == 0, result.output
    assert "best math: global_step_300" in result.output
    assert "best logic: global_step_" in result.output
    assert {p.name for p in out.glob("*.png")} == {"curves_all.png", "curve_math.png", "curve_logic.png", "curve_overall.png", "pass_at_k.png"}
    assert (out / "curves_all.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.md").read_text()
    assert "![learning curves of every domain](curves_all.png)" in page
    improvements = page.split("### Improvements that survive correction")[1].split("###")[0]
    regressions = page.split("### Regressions that survive correction")[1].split("##")[0]
    assert "| global_step_300 | math__a |" in improvements
    assert "| global_step_300 | logic__z |" in regressions
    assert "logic__z" not in improvements
    tidy = pd.read_parquet(out / "metrics.parquet")
    steps = tidy[tidy["level"] == "domain"].groupby("label")["step"].first().to_dict()
    assert steps == {"global_step_100": 100, "global_step_200": 200, "global_step_300": 300}


def test_same_seed_same_numbers(tmp_path: Path) -> None:
    inputs = checkpoint_tables(tmp_path / "scored", {"math__a": [0.3, 0.6]}, prompts=30)
    tables = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        build_report(inputs, tmp_path / name, ReportOptions(seed=seed, baseline="ckpts/global_step_100"))
        tables.append(pd.read_parquet(tmp_path / name / "metrics.parquet"))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert not tables[0]["ci_low"].equals(tables[2]["ci_low"])
    assert tables[0]["value"].equals(tables[2]["value"])


def test_select_on_chooses_on_one_split_and_reports_on_the_others(tmp_path: Path) -> None:
    # A is better on the val prompts, B on the test prompts: A is chosen, and shown with its test score.
    rows = []
    for label, val_acc, test_acc in (("A", 1, 0), ("B", 0, 1)):
        for p in range(4):
            rows += prompt_rows(label, "math__s", f"v{p}", [val_acc], None, split="val")
            rows += prompt_rows(label, "math__s", f"t{p}", [test_acc], None, split="test")
    path = write(rows, tmp_path / "s.scored.parquet")
    result = build_report([path], tmp_path / "r", ReportOptions(select_on="val"))
    overall = next(b for b in result.analysis.best if b["domain"] == "overall")
    assert (overall["label"], overall["selection_value"], overall["value"]) == ("A", 1.0, 0.0)
    assert not any("optimistic" in note for note in result.analysis.notes)
    with pytest.raises(UserInputError, match=r"--select-on 'dev': no such split; the splits are test, val"):
        build_report([path], tmp_path / "r2", ReportOptions(select_on="dev"))
    # verl keeps the split in extra_info.
    nested = [{**{k: v for k, v in r.items() if k != "split"}, "extra_info": {"split": r["split"], "index": 0}} for r in rows]
    result = build_report([write(nested, tmp_path / "e.scored.parquet")], tmp_path / "r3", ReportOptions(select_on="val"))
    assert next(b for b in result.analysis.best if b["domain"] == "overall")["label"] == "A"


def test_wide_rows_give_the_same_numbers_as_long_rows(tmp_path: Path) -> None:
    long_path = hand_tables(tmp_path / "long")[0]
    long = pd.read_parquet(long_path)
    wide = long.groupby(["model", "data_source", "prompt_id"], sort=False).agg(
        {"score": list, "acc": list, "answer_class": list}
    ).reset_index()
    wide_path = write(wide.to_dict("records"), tmp_path / "wide" / "base.scored.parquet")
    numbers = []
    for name, path in (("l", long_path), ("w", wide_path)):
        build_report([path], tmp_path / name, ReportOptions())
        numbers.append(pd.read_parquet(tmp_path / name / "metrics.parquet"))
    pd.testing.assert_frame_equal(numbers[0], numbers[1])


# ---------------------------------------------------------------- sweep roots


def test_sweep_root_through_its_manifest(tmp_path: Path) -> None:
    """A sweep expanded by rollouts.sweep itself, its outputs scored, its manifest written."""
    from rollouts.sweep import expand_sweep, manifest_rows, write_manifest

    for step in (50, 500):
        (tmp_path / "ckpts" / f"global_step_{step}").mkdir(parents=True)
        (tmp_path / "ckpts" / f"global_step_{step}" / "config.json").write_text("{}")
    write([{"prompt": "q", "data_source": "math__gsm8k"}], tmp_path / "data" / "gsm8k.parquet")
    sweep = expand_sweep(
        {
            "checkpoints": "ckpts/global_step_*", "output_dir": "sweep",
            "datasets": [{"path": "data/gsm8k.parquet"}], "grid": {"temperature": [0.6, 1.0]},
        },
        tmp_path,
    )
    rng = np.random.default_rng(0)
    for combination in sweep.combinations:
        [output] = combination.outputs()
        rows = [r for p in range(20) for r in prompt_rows("served-name", "math__gsm8k", f"p{p}", rng.integers(0, 2, 2).tolist(), None)]
        write(rows, output)  # the rollouts (status done), and their scored version beside them
        write(rows, output.with_name(output.name.replace(".parquet", ".scored.parquet")))
    write_manifest(sweep, manifest_rows(sweep))
    result = run(tmp_path / "sweep", "-o", tmp_path / "report", "--baseline", "global_step_50 temperature=0.6")
    assert result.exit_code == 0, result.output
    tidy = pd.read_parquet(tmp_path / "report" / "metrics.parquet")
    labels = set(tidy["label"])
    assert labels == {f"global_step_{s} temperature={t}" for s in (50, 500) for t in (0.6, 1.0)}
    assert set(tidy["step"].dropna()) == {50, 500}
    series = json.loads((tmp_path / "report" / "report.json").read_text())["models"]
    assert {m["series"] for m in series} == {"temperature=0.6", "temperature=1.0"}
    # The README's example names the checkpoint only: each run is compared at its own temperature.
    result = run(tmp_path / "sweep", "-o", tmp_path / "readme", "--baseline", "global_step_50")
    assert result.exit_code == 0, result.output
    comparisons = json.loads((tmp_path / "readme" / "report.json").read_text())["comparisons"]
    assert {(c["label"], c["baseline"]) for c in comparisons} == {
        (f"global_step_500 temperature={t}", f"global_step_50 temperature={t}") for t in (0.6, 1.0)
    }


def test_hand_written_jsonl_manifest_skips_unfinished_combinations(tmp_path: Path) -> None:
    rows = prompt_rows("m", "math__a", "p", [1, 0], None)
    write(rows, tmp_path / "root" / "t0.6-abc123" / "a.t0.6.scored.parquet")
    lines = [
        {"combination": "t0.6-abc123", "parameters": {"model": "/ck/step_10", "temperature": 0.6},
         "outputs": ["t0.6-abc123/a.t0.6.jsonl"], "status": "done"},
        {"combination": "t1.0-def456", "parameters": {"model": "/ck/step_10", "temperature": 1.0},
         "outputs": ["t1.0-def456/a.parquet"], "status": "partial"},
    ]
    (tmp_path / "root" / "sweep.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = build_report([tmp_path / "root"], tmp_path / "r", ReportOptions())
    assert result.analysis.labels == ["step_10 temperature=0.6"]
    assert "sweep combination t1.0-def456 is partial: left out" in result.analysis.notes


# ---------------------------------------------------------------- bad input


def test_bad_input_is_one_line_before_any_output(tmp_path: Path) -> None:
    scored = hand_tables(tmp_path / "scored")
    unscored = write([{"prompt_id": "p", "response": "r", "data_source": "math__a"}], tmp_path / "raw.parquet")
    out = tmp_path / "report"
    (tmp_path / "empty").mkdir()
    cases = [
        ((unscored,), f"Error: {unscored} has no 'score' column; run `score` on it first (score {unscored})"),
        ((*scored, "--baseline", "nope"), "Error: --baseline 'nope' matches no model; the models are: 'base', 'tuned'"),
        ((*scored, "--metric", "best@3"), "Error: --metric 'best@3': use mean@n, mean_score@n, pass@K or maj@K with K >= 1"),
        ((tmp_path / "empty",), f"Error: {tmp_path / 'empty'}: no scored files"),
        ((tmp_path / "missing.parquet",), f"Error: {tmp_path / 'missing.parquet'}: no such file"),
    ]
    for args, message in cases:
        result = run(*args, "-o", out)
        assert result.exit_code == 1, args
        assert result.output.startswith(message), result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_unavailable_metric_is_skipped_with_a_note(tmp_path: Path) -> None:
    scored = hand_tables(tmp_path / "scored")
    result = run(*scored, "-o", tmp_path / "r", "--metric", "maj@2")
    assert result.exit_code == 0, result.output
    assert "note: maj@2 is not available for code__c (no answer classes (its reward gives none)) for base, tuned" in result.output
    result = run(*scored, "-o", tmp_path / "r2", "--metric", "pass@4")
    assert "note: pass@4 is not available for code__c (no prompt has 4 samples)" in result.output
    assert "| code__c | — | — |" in (tmp_path / "r2" / "report.md").read_text()


def test_existing_report_is_kept_unless_overwrite(tmp_path: Path) -> None:
    scored = hand_tables(tmp_path / "scored")
    assert run(*scored, "-o", tmp_path / "r").exit_code == 0
    before = (tmp_path / "r" / "report.md").read_text()
    result = run(*scored, "-o", tmp_path / "r", "--metric", "pass@2")
    assert result.exit_code == 1 and "report.md exists; pass --overwrite" in result.output
    assert (tmp_path / "r" / "report.md").read_text() == before
    assert run(*scored, "-o", tmp_path / "r", "--metric", "pass@2", "--overwrite").exit_code == 0
    assert (tmp_path / "r" / "report.md").read_text() != before


# ---------------------------------------------------------------- HTML in a real browser


def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "install Debian's chromium package (apt-get install chromium) to run this test"
    checkpoint_tables(tmp_path / "scored", {"math__a": [0.3, 0.6], "logic__b": [0.5, 0.4]}, prompts=30)
    result = run(tmp_path / "scored", "-o", tmp_path / "r", "--format", "html", "--baseline", "ckpts/global_step_100")
    assert result.exit_code == 0, result.output
    page = tmp_path / "r" / "report.html"
    assert 'src="http' not in page.read_text() and "<link" not in page.read_text()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--allow-file-access-from-files"]
    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert dom.count("<table>") >= 4 and "math__a" in dom and "logic__b" in dom
    assert dom.count('src="data:image/png;base64,') >= 3  # curves inline: one file, nothing fetched
    shot = tmp_path / "page.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2400, 1200)
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1])[::97], axis=0)) > 20  # tables and plots drawn


def test_domains_mapping_and_json_lines_input(tmp_path: Path) -> None:
    rows = [r for task in ("aime", "gsm8k", "mbpp") for r in prompt_rows("m", task, f"{task}-1", [1, 0], None)]
    scored = tmp_path / "m.scored.jsonl"
    scored.write_text("".join(json.dumps(row) + "\n" for row in rows))
    mapping = tmp_path / "domains.yaml"
    mapping.write_text("math: [aime, gsm8k]\nmbpp: code\n")
    result = run(scored, "-o", tmp_path / "r", "--domains", mapping)
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "r" / "report.json").read_text())
    assert {t["task"]: t["domain"] for t in document["tasks"]} == {"aime": "math", "gsm8k": "math", "mbpp": "code"}
    mapping.write_text("math: 3\n")
    result = run(scored, "-o", tmp_path / "r2", "--domains", mapping)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: --domains {mapping}: 'math' maps to 3; use a domain name or a list of tasks")


def test_a_model_missing_a_task_is_noted_and_its_average_says_over_how_many(tmp_path: Path) -> None:
    rows = prompt_rows("a", "math__x", "p", [1], None) + prompt_rows("a", "math__y", "q", [0], None)
    rows += prompt_rows("b", "math__x", "p", [1], None)
    result = build_report([write(rows, tmp_path / "s.scored.parquet")], tmp_path / "r", ReportOptions(baseline="a"))
    assert "b has no scores for 1 task(s) of math: its math average is over the other 1 (n_tasks)" in result.analysis.notes
    domain = result.analysis.metrics.query("level == 'domain' and metric == 'mean@n'").set_index("label")
    assert domain.loc["a", ["value", "n_tasks"]].tolist() == [0.5, 2]
    assert domain.loc["b", ["value", "n_tasks"]].tolist() == [1.0, 1]
    assert result.analysis.comparisons["task"].tolist() == ["math__x"]


# ---------------------------------------------------------------- labels from what differs


def run_file(directory: Path, name: str, accs: list[int], **settings: Any) -> Path:
    """A scored run of model `m` on 6 prompts (2 samples each) with sampling settings as columns."""
    rows = [r for p, acc in enumerate(accs) for r in prompt_rows("m", "math__a", f"p{p}", [acc, acc], None, **settings)]
    return write(rows, directory / f"{name}.scored.parquet")


def test_runs_of_one_model_are_labelled_by_what_differs(tmp_path: Path) -> None:
    hot = run_file(tmp_path, "t1.0", [1, 0, 1, 0, 1, 0], temperature=1.0, dataset="math")
    cold = run_file(tmp_path, "t0.6", [1, 1, 1, 1, 1, 0], temperature=0.6, dataset="math")
    result = run(hot, cold, "-o", tmp_path / "r", "--baseline", "t1.0")  # a file names its run
    assert result.exit_code == 0, result.output
    comparison = json.loads((tmp_path / "r" / "report.json").read_text())["comparisons"]
    assert {(c["label"], c["baseline"]) for c in comparison} == {("m temperature=0.6", "m temperature=1.0")}
    # The same settings on another input file (a bucket file generated again): the input tells them apart.
    kept = run_file(tmp_path, "kept", [1, 1, 1, 1, 1, 1], temperature=1.0, dataset="kept")
    result = run(hot, kept, "-o", tmp_path / "r2", "--baseline", "t1.0")
    assert result.exit_code == 0, result.output
    labels = set(pd.read_parquet(tmp_path / "r2" / "metrics.parquet")["label"])
    assert labels == {"m input=math", "m input=kept"}


def test_hand_labels_and_a_real_duplicate_names_both_files(tmp_path: Path) -> None:
    first = run_file(tmp_path, "a", [1, 0, 1, 0, 1, 0])
    copy = tmp_path / "copy" / "a.scored.parquet"
    copy.parent.mkdir()
    shutil.copy(first, copy)
    result = run(first, copy, "-o", tmp_path / "r")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {first} and {copy} both hold prompt p0 of 'm'")
    assert "--label NAME=FILE" in result.output and len(result.output.strip().splitlines()) == 1
    result = run("--label", f"before={first}", "--label", f"after={copy}", "-o", tmp_path / "r", "--baseline", "before")
    assert result.exit_code == 0, result.output
    comparison = json.loads((tmp_path / "r" / "report.json").read_text())["comparisons"]
    assert {(c["label"], c["baseline"]) for c in comparison} == {("after", "before")}


def test_best_checkpoint_is_chosen_on_the_prompts_every_model_shares(tmp_path: Path) -> None:
    """global_step_200 was scored on 4 easy prompts only: 0.75 against 0.4 on all of its own,
    yet on those 4 prompts global_step_100 passes every one."""
    first = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    rows = [r for i, acc in enumerate(first)
            for r in prompt_rows("ckpts/global_step_100", "math__a", f"p{i}", [acc], None)]
    write(rows, tmp_path / "scored" / "step100.scored.parquet")
    later = [1, 1, 1, 0]
    rows = [r for i, acc in enumerate(later)
            for r in prompt_rows("ckpts/global_step_200", "math__a", f"p{i}", [acc], None)]
    write(rows, tmp_path / "scored" / "step200.scored.parquet")
    out = tmp_path / "report"
    result = run(tmp_path / "scored", "-o", out)
    assert result.exit_code == 0, result.output
    assert "best math: global_step_100" in result.output
    assert "math__a: the models were scored on different prompts" in result.output
    assert "chosen on the 4 they all share" in result.output
    page = (out / "report.md").read_text()
    assert "shared by every model" in page.split("Best checkpoint")[1]


def test_the_checkpoint_column_names_a_run_served_under_one_model_name(tmp_path: Path) -> None:
    """A hot-swapped server answers under its first model's name: the rows' checkpoint tells."""
    early = run_file(tmp_path, "a", [1, 0, 1, 0, 1, 0], checkpoint="ckpts/global_step_50")
    late = run_file(tmp_path, "b", [1, 1, 1, 1, 1, 0], checkpoint="ckpts/global_step_100")
    result = run(early, late, "-o", tmp_path / "r", "--baseline", "global_step_50")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert {(c["label"], c["baseline"]) for c in report["comparisons"]} == {("global_step_100", "global_step_50")}
    assert {m["step"] for m in report["models"]} == {50, 100}


def test_reward_error_rows_are_left_out_of_every_metric_and_counted(tmp_path: Path) -> None:
    """Rows whose reward failed (error, sandbox_error, a non-finite score) are no wrong answers:
    report leaves them out as `score` does by default and says how many per run and task; a row
    whose generation failed stays a wrong answer."""
    def row(prompt: str, sample: int, acc: int, status: str = "ok", score: float | None = None,
            error: str | None = None) -> dict[str, Any]:
        return {"model": "m", "data_source": "math__t", "prompt_id": prompt, "sample_idx": sample,
                "score": float(acc) if score is None else score, "acc": bool(acc), "pred": None,
                "answer_class": None, "score_status": status, "error": error}

    rows = [
        row("p1", 0, 1), row("p1", 1, 0, "error"), row("p1", 2, 0, "sandbox_error"), row("p1", 3, 1),
        row("p2", 0, 1), row("p2", 1, 0, "error", score=float("nan")), row("p2", 2, 0, score=float("inf")),
        row("p2", 3, 0, "error", error="ServerError: 500"),  # generation failed: a wrong answer
    ]
    path = write(rows, tmp_path / "m.scored.parquet")
    result = CliRunner().invoke(main, ["report", str(path), "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    tidy = pd.read_parquet(tmp_path / "report" / "metrics.parquet")
    task = tidy[tidy["level"] == "task"].set_index("metric")["value"]
    # p1: 2 of 2 judged pass; p2: 1 of 2 judged (sample 0 right, the failed generation wrong).
    assert task["mean@n"] == pytest.approx((1.0 + 0.5) / 2)
    assert task["pass@1"] == pytest.approx(0.75)
    document = json.loads((tmp_path / "report" / "report.json").read_text())
    assert document["error_rows"] == [{"label": "m", "task": "math__t", "error_rows": 4}]
    page = (tmp_path / "report" / "report.md").read_text()
    assert "reward errors (left out)" in page
    assert "4 row(s) whose reward failed" in result.output and "m / math__t: 4" in result.output
