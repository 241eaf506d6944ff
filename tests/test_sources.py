"""The data-source table: dispatch by prefix and dataset name, `reward_metric` variants, and the
list in docs/scoring.md, which must be the table's own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rollouts.errors import UserInputError
from scoring.rewards.registry import BUILTINS, dispatch, dispatch_all
from scoring.rewards.sources import SOURCES, Source, find_source, markdown_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "scoring.md"
BEGIN = "<!-- sources table:"
END = "<!-- end of sources table -->"


def test_every_row_names_a_builtin_reward() -> None:
    for source in SOURCES:
        for reward in (source.reward, *source.metrics.values()):
            assert reward in BUILTINS, (source.pattern, reward)


def test_no_two_rows_claim_the_same_names() -> None:
    keys = [(s.match, s.pattern, s.contains) for s in SOURCES]
    assert len(keys) == len(set(keys))


def test_docs_list_is_generated_from_the_table() -> None:
    text = DOC.read_text()
    block = text[text.index(BEGIN) : text.index(END)]
    table = block.split("\n", 1)[1].strip()
    assert table == markdown_table(), (
        "docs/scoring.md's data-source list is out of date; run python scripts/docs_sources.py"
    )


def test_longest_prefix_and_contains_win() -> None:
    rows = (
        Source(pattern="stem__", reward="mcq", origin="x"),
        Source(pattern="stem__gpqa", reward="qa", origin="x"),
        Source(pattern="stem__gpqa", reward="math", origin="x", contains="no_box"),
    )
    from scoring.rewards import sources

    ranked = sources._ranked(rows)
    assert [s.reward for s in ranked] == ["math", "qa", "mcq"]


@pytest.mark.parametrize("pattern", ["Math__", " math__"])
def test_patterns_are_lower_case(pattern: str) -> None:
    with pytest.raises(ValueError, match="lower case"):
        Source(pattern=pattern, reward="math", origin="x")


def test_dataset_name_and_case() -> None:
    assert dispatch("OpenAI/GSM8K") == "gsm8k"
    assert dispatch("foo__gsm8k_platinum") == "gsm8k"
    assert find_source("poetry__sonnets") is None


def test_unknown_sources_are_one_error_naming_each_once() -> None:
    with pytest.raises(UserInputError) as info:
        dispatch_all(["my/poetry", "my/poetry", "logic__nothing", "openai/gsm8k"], [None, "x", None, None])
    message = str(info.value)
    assert message.count("'my/poetry'") == 1 and "'logic__nothing'" in message
    assert "--reward-fn" in message and "\n" not in message
    assert re.search(r"no reward function for data_source", message)
