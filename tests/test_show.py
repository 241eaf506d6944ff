"""`rollouts show`: the terminal view, and the HTML page checked in a real headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from rollouts.cli import main


def sample(prompt_id: str, source: str, idx: int, response: str | None, pred: str | None,
           score: float | None, finish: str | None, error: str | None = None) -> dict[str, Any]:
    question = {"p1": "What is 2 + 3?", "p2": "What is 40 + 2?", "p3": "Name a prime."}[prompt_id]
    gold = {"p1": "5", "p2": "42", "p3": "7"}[prompt_id]
    return {"prompt_id": prompt_id, "data_idx": int(prompt_id[1]), "sample_idx": idx,
            "data_source": source, "prompt": [{"role": "user", "content": question}],
            "reward_model": {"style": "rule", "ground_truth": gold},
            "response": response, "pred": pred, "score": score,
            "acc": None if score is None else score > 0, "finish_reason": finish, "error": error,
            "error_kind": error.split(":")[0] if error else None}


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
    assert "-- sample 1: fail answer=6 score=0 finish stop" in text
    assert "-- sample 1: fail answer=4 score=0 finish length, truncated" in text
    assert "-- sample 0: error answer=- score=- error http_500 error=http_500: server error" in text
    assert "== prompt p1  data_source=math__additions  gold=5  passed 1/2" in text
    assert "data_source=gsm8k_additions  gold=42  passed 1/2" in text


def test_where_and_sort_by_pass_rate(scored: Path) -> None:
    truncated = show(scored, "--where", "finish_reason=length", "--n", "10")
    assert "#### 4 4 4 4 4" in truncated and "#### 42" not in truncated and "boxed" not in truncated
    assert "passed 1/2" in truncated  # the prompt's rate counts all its samples
    assert "\\boxed{6}" in show(scored, "--where", "score<1", "--where", "response~boxed")
    hardest = show(scored, "--sort", "pass-rate", "--n", "3")
    assert hardest.index("gold=7") < hardest.index("gold=5")  # 0/1 before 1/2
    bad = CliRunner().invoke(main, ["show", str(scored), "--where", "nope=1"])
    assert bad.exit_code == 1 and "no column 'nope'" in bad.output


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
    assert "-- sample 0: -" in text and "-- sample 1: -" in text and "hello" in text


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["show", str(tmp_path / "none.parquet")])
    assert result.exit_code != 0


def chromium_dom(page: Path, fragment: str = "") -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("Chromium is not installed: apt-get install chromium (the page test needs it)")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--dump-dom",
             f"file://{page}{'#' + fragment if fragment else ''}"],
            capture_output=True, text=True, timeout=120, check=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return done.stdout


def visible_samples(dom: str) -> list[str]:
    """(verdict, finish) of the samples drawn on the page."""
    return [" ".join(found) for found in re.findall(r'<div class="sample [^"]*" data-verdict="([^"]*)" data-finish="([^"]*)"', dom)]


def count_line(dom: str) -> str:
    return re.search(r'<span id="count">([^<]*)</span>', dom).group(1)  # type: ignore[union-attr]


def test_html_page_renders_and_filters_in_chromium(scored: Path, tmp_path: Path) -> None:
    page = tmp_path / "samples.html"
    show(scored, "--html", page)
    assert "<script src" not in page.read_text() and "<link" not in page.read_text()  # one file
    everything = chromium_dom(page)
    assert count_line(everything) == "3 of 3 prompts, 5 of 5 samples shown"
    assert len(visible_samples(everything)) == 5
    assert "What is 40 + 2?" in everything and "#### 4 4 4 4 4" in everything
    assert "gold 42" in everything and "passed 1/2" in everything
    assert "finish length, truncated" in everything and "error http_500" in everything
    assert visible_samples(chromium_dom(page, "source=gsm8k_additions")) == ["pass stop", "fail length", "error -"]
    failed = chromium_dom(page, "verdict=fail&finish=length")
    assert visible_samples(failed) == ["fail length"]
    assert count_line(failed) == "1 of 3 prompts, 1 of 5 samples shown"
    searched = chromium_dom(page, "q=PRIME")
    assert count_line(searched) == "1 of 3 prompts, 1 of 5 samples shown"
    in_responses = chromium_dom(page, "q=4%204%204")  # found in a response, not in a prompt
    assert count_line(in_responses) == "1 of 3 prompts, 2 of 5 samples shown"
    hardest = chromium_dom(page, "sort=pass-rate")
    assert hardest.index("Name a prime.") < hardest.index("What is 2 + 3?")


HOSTILE = [
    "<!--<script>",
    "</script><img src=x onerror=\"document.body.setAttribute('data-pwned', 'img')\">",
    "<script>document.body.setAttribute('data-pwned', 'script')</script>",
    "{{DATA}} {{TITLE}} \u2028 ]]> <![CDATA[ \\u003c/script>",
]


def test_hostile_responses_and_file_names_show_as_text_and_run_nothing(tmp_path: Path) -> None:
    rows = [dict(sample("p1", "math__additions", i, text, text, 0.0, "stop"), prompt=[{"role": "user", "content": text}])
            for i, text in enumerate(HOSTILE)]
    for i, row in enumerate(rows):
        row["prompt_id"] = f"p{i}<img src=x onerror=alert(1)>"
        row["data_source"] = "<b>{{TITLE}}</b>"
    name = "<img src=x onerror=\"document.body.setAttribute('data-pwned','name')\">{{DATA}}<!--"
    folder = tmp_path / "runs"
    folder.mkdir()
    scored = folder / f"{name}.parquet"
    pd.DataFrame(rows).to_parquet(scored)
    page = tmp_path / "hostile.html"
    show(scored, "--html", page)
    dom = chromium_dom(page)
    assert "data-pwned" not in re.search(r"<body[^>]*>", dom).group(0)  # type: ignore[union-attr]
    assert count_line(dom) == "4 of 4 prompts, 4 of 4 samples shown"
    # Each hostile text is on the page as text (escaped in the DOM), responses and prompts alike.
    for text in HOSTILE:
        assert dom.count(html.escape(text, quote=False)) >= 2, text
    assert html.escape(name, quote=False) in dom  # the file name in the heading, as text
    assert "<img src=\"x\"" not in dom and "<b>" not in dom


def test_runs_are_named_by_their_files() -> None:
    from rollouts.show import run_names

    assert run_names([Path("a/t0.6.scored.parquet"), Path("b/t1.0.jsonl")]) == ["t0.6", "t1.0"]
    assert run_names([Path("a/x.scored.parquet"), Path("b/x.parquet")]) == ["a/x", "b/x"]


def test_two_runs_side_by_side_on_the_same_prompt(scored: Path, tmp_path: Path) -> None:
    later = tmp_path / "later.parquet"
    frame = pd.read_parquet(scored)
    frame["response"] = frame["response"].map(lambda r: "later " + r if isinstance(r, str) else None)
    frame["acc"] = True
    frame.to_parquet(later)
    text = show(scored, later, "--prompt-id", "p1")
    assert "passed 1/2" in text and "later passed 2/2" in text
    assert "-- sample 0 [later]: pass" in text
    page = tmp_path / "diff.html"
    show(scored, later, "--html", page)
    dom = chromium_dom(page)
    card = dom[dom.index('data-prompt="p1"'):dom.index('data-prompt="p2"')]
    assert card.count('<div class="run">') == 2
    assert "scored: passed 1/2" in card and "later: passed 2/2" in card
    assert card.index("\\boxed{5}") < card.index("later \\boxed{5}")


@pytest.mark.slow
def test_a_page_of_100000_samples_paints_within_two_seconds(tmp_path: Path) -> None:
    """100,000 samples (12,500 prompts x 8, responses of 50-500 characters, 30 MB of page): the
    page draws its first page of prompts within 2 s of navigation in headless Chromium, and
    then holds every sample."""
    rng = np.random.default_rng(0)
    prompts, n = 12_500, 8
    lengths = rng.integers(50, 500, prompts * n)
    words = ["the", "model", "thinks", "step", "by", "step", "and", "writes", "\\boxed{42}", "at", "the", "end"]
    text = " ".join(words * 10)
    frame = pd.DataFrame({
        "prompt_id": np.repeat([f"{i:016x}" for i in range(prompts)], n),
        "data_idx": np.repeat(np.arange(prompts), n),
        "sample_idx": np.tile(np.arange(n), prompts),
        "data_source": np.repeat(np.where(np.arange(prompts) % 2, "math__a", "math__b"), n),
        "prompt": np.repeat([f"Question {i}: what is {i} + {i}?" for i in range(prompts)], n),
        "response": [text[:k] for k in lengths],
        "pred": "42", "score": rng.integers(0, 2, prompts * n).astype(float),
        "finish_reason": "stop",
    })
    frame["acc"] = frame["score"] > 0
    scored = tmp_path / "big.parquet"
    frame.to_parquet(scored)
    page = tmp_path / "big.html"
    show(scored, "--html", page)
    dom = chromium_dom(page)
    assert count_line(dom) == "12500 of 12500 prompts, 100000 of 100000 samples shown"
    assert dom.count('<div class="prompt"') == 20  # one page of prompts
    first_render_ms = int(re.search(r'data-first-render-ms="(\d+)"', dom).group(1))  # type: ignore[union-attr]
    assert first_render_ms < 2000, first_render_ms
    assert 'data-complete-ms="' in dom
