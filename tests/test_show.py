"""`rollouts show`: the terminal view, and the HTML page checked in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from rollouts.cli import main


def sample(prompt_id: str, source: str, idx: int, response: str | None, pred: str | None,
           score: float | None, finish: str | None, error: str | None = None) -> dict[str, Any]:
    question = {"p1": "What is 2 + 3?", "p2": "What is 40 + 2?", "p3": "Name a prime."}[prompt_id]
    return {"prompt_id": prompt_id, "data_idx": int(prompt_id[1]), "sample_idx": idx,
            "data_source": source, "prompt": [{"role": "user", "content": question}],
            "response": response, "pred": pred, "score": score,
            "acc": None if score is None else score > 0, "finish_reason": finish, "error": error}


ROWS = [
    sample("p1", "math__additions", 0, "\\boxed{5}", "5", 1.0, "stop"),
    sample("p1", "math__additions", 1, "\\boxed{6}", "6", 0.0, "stop"),
    sample("p2", "gsm8k_additions", 0, "#### 42", "42", 1.0, "stop"),
    sample("p2", "gsm8k_additions", 1, "#### 4 4 4 4 4", "4", 0.0, "length"),
    sample("p3", "gsm8k_additions", 0, None, None, None, None, "http_500: server error"),
]


@pytest.fixture
def scored(tmp_path: Path) -> Path:
    path = tmp_path / "scored.parquet"
    pd.DataFrame(ROWS).to_parquet(path)
    return path


def show(*args: str | Path) -> str:
    result = CliRunner().invoke(main, ["show", *map(str, args)])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_terminal_view_groups_samples_by_prompt(scored: Path) -> None:
    text = show(scored, "--n", "3")
    assert text.index("user: What is 2 + 3?") < text.index("\\boxed{5}") < text.index("What is 40 + 2?")
    assert "-- sample 1: answer=6 score=0 finish=stop" in text
    assert "finish=length" in text and "error=http_500: server error" in text
    assert "data_source=gsm8k_additions" in text


def test_filters_prompts_failed_and_prompt_id(scored: Path) -> None:
    assert "What is 40 + 2?" not in show(scored, "--n", "1")
    failed = show(scored, "--failed", "--n", "10")
    assert "\\boxed{6}" in failed and "\\boxed{5}" not in failed and "#### 42" not in failed
    assert "http_500" in failed
    first = show(scored, "--n", "2", "--samples", "1")
    assert "\\boxed{5}" in first and "#### 42" in first and "\\boxed{6}" not in first
    only = show(scored, "--prompt-id", "p2")
    assert "#### 42" in only and "What is 2 + 3?" not in only
    passed = show(scored, "--passed", "--n", "10")
    assert "\\boxed{5}" in passed and "#### 42" in passed
    assert "\\boxed{6}" not in passed and "http_500" not in passed
    both = CliRunner().invoke(main, ["show", str(scored), "--passed", "--failed"])
    assert both.exit_code == 1 and "--failed and --passed exclude each other" in both.output


def test_wide_rollouts_are_shown_per_sample(tmp_path: Path) -> None:
    path = tmp_path / "wide.jsonl"
    path.write_text(json.dumps({"prompt": "Say hi", "responses": ["hi", "hello"]}) + "\n")
    text = show(path)
    assert "-- sample 0:" in text and "-- sample 1:" in text and "hello" in text


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["show", str(tmp_path / "none.parquet")])
    assert result.exit_code != 0


def chromium_dom(page: Path, fragment: str = "") -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("Chromium is not installed: apt-get install chromium (the page test needs it)")
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
         f"file://{page}{'#' + fragment if fragment else ''}"],
        capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def visible_samples(dom: str) -> list[str]:
    """(source, score, finish) of the sample rows the script left visible."""
    rows = re.findall(r'<tr class="sample [^"]*"([^>]*)>', dom)
    return [" ".join(re.findall(r'data-(?:source|score|finish)="([^"]*)"', attrs))
            for attrs in rows if "hidden" not in attrs]


def test_html_page_renders_and_filters_in_chromium(scored: Path, tmp_path: Path) -> None:
    page = tmp_path / "samples.html"
    show(scored, "--html", page)
    assert "<script src" not in page.read_text() and "<link" not in page.read_text()  # one file
    everything = chromium_dom(page)
    assert "5 of 5 samples shown" in everything
    assert len(visible_samples(everything)) == 5
    assert "What is 40 + 2?" in everything and "#### 4 4 4 4 4" in everything
    assert visible_samples(chromium_dom(page, "source=gsm8k_additions")) == [
        "gsm8k_additions stop pass", "gsm8k_additions length fail", "gsm8k_additions - fail"]
    failed = chromium_dom(page, "score=fail&finish=length")
    assert visible_samples(failed) == ["gsm8k_additions length fail"]
    assert "1 of 5 samples shown" in failed
