"""GURU (Reasoning360) domains: our verdicts equal Reasoning360's, row by row, through `score`.

The rows and the reference verdicts live in tests/guru_reference/ (see its README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from rollouts.errors import UserInputError
from scoring.scorer import ScoreConfig, score_files

REFERENCE = Path(__file__).parent / "guru_reference"
DOMAINS = ["arcagi", "zebra_puzzle", "ordering_puzzle", "graph", "livebench", "ifeval", "ifbench",
           "math", "table", "gpqa", "codeio", "math_variants", "table_variants"]
# Run model code in the sandbox (coder1 has 30 seconds per run, and a row uses them all).
SANDBOXED = ["cruxeval", "code"]


def reference_rows(domain: str) -> list[dict[str, Any]]:
    lines = (REFERENCE / f"{domain}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def rollout_file(rows: list[dict[str, Any]], path: Path) -> Path:
    """The rows as rollouts in verl's schema (one prompt per row)."""
    with path.open("w") as out:
        for i, row in enumerate(rows):
            rollout = {
                "prompt": f"prompt {i}",
                "data_idx": i,
                "sample_idx": 0,
                "response": row["response"],
                "data_source": row["data_source"],
                "reward_model": {"style": "rule", "ground_truth": row["ground_truth"]},
                "extra_info": row["extra_info"],
            }
            out.write(json.dumps(rollout) + "\n")
    return path


def scored(path: Path, reward_fn: str = "auto") -> pd.DataFrame:
    score_files([path], ScoreConfig(workers=1, reward_fn=reward_fn, cache_dir=None))
    (output,) = path.parent.glob(f"{path.stem}.scored.*[!n]")
    return pd.read_parquet(output) if output.suffix == ".parquet" else pd.read_json(output, lines=True)


def differences(rows: list[dict[str, Any]], frame: pd.DataFrame) -> list[str]:
    found = []
    for i, row in enumerate(rows):
        got = frame.iloc[i]
        want = row["reference"]
        if "raises" in want:
            if got["score_status"] != "error":
                found.append(f"row {i}: reference raises {want['raises']}, we scored {got['score']}")
        elif got["score_status"] == "error" or got["score"] != want["score"]:
            found.append(f"row {i}: reference {want['score']!r}, we {got['score']!r} "
                         f"({got['score_status']}) for {row['response'][:60]!r}")
    return found


@pytest.mark.parametrize("domain", DOMAINS)
def test_verdicts_equal_reasoning360(domain: str, tmp_path: Path) -> None:
    rows = reference_rows(domain)
    frame = scored(rollout_file(rows, tmp_path / f"{domain}.jsonl"))
    assert len(frame) == len(rows)
    assert differences(rows, frame) == []


@pytest.mark.slow
@pytest.mark.parametrize("domain", SANDBOXED)
def test_sandboxed_verdicts_equal_reasoning360(domain: str, tmp_path: Path) -> None:
    rows = reference_rows(domain)
    frame = scored(rollout_file(rows, tmp_path / f"{domain}.jsonl"))
    assert differences(rows, frame) == []


def test_one_mixed_file_scores_every_domain(tmp_path: Path) -> None:
    rows = [row for domain in DOMAINS for row in reference_rows(domain)]
    frame = scored(rollout_file(rows, tmp_path / "mixed.jsonl"))
    assert differences(rows, frame) == []
    assert set(frame["reward_fn"]) == {
        "arcagi", "zebra_puzzle", "ordering_puzzle", "graph_puzzle", "livebench", "guru_ifeval",
        "guru_ifbench", "guru_math", "guru_prime_math", "guru_table", "guru_gpqa", "guru_supergpqa",
        "guru_codeio",
    }


def test_a_source_without_reward_stops_the_mixed_file_before_any_work(tmp_path: Path) -> None:
    rows = [row for domain in ("math", "table") for row in reference_rows(domain)]
    rows += [dict(rows[0], data_source="poetry__sonnets") for _ in range(3)]
    source = rollout_file(rows, tmp_path / "mixed.jsonl")
    with pytest.raises(UserInputError) as caught:
        score_files([source], ScoreConfig(workers=1, cache_dir=None))
    message = str(caught.value)
    assert message.count("poetry__sonnets") == 1 and "--reward-fn" in message, message
    assert "math__" not in message and "\n" not in message
    assert list(tmp_path.glob("mixed.scored.*")) == []


REFUSED = [
    (domain, i, row)
    for domain in ("ifeval_refused", "ifbench_refused")
    for i, row in enumerate(reference_rows(domain))
]


@pytest.mark.parametrize(("domain", "i", "row"), REFUSED, ids=[f"{d}-{i}" for d, i, _ in REFUSED])
def test_instructions_without_their_kwargs_are_refused_before_scoring(
    domain: str, i: int, row: dict[str, Any], tmp_path: Path
) -> None:
    """Where Reasoning360 draws parameters at random (or raises), the run stops with one line
    naming the row and the instruction, and nothing is written."""
    assert row["reference"].get("random") or "raises" in row["reference"]
    source = rollout_file([row], tmp_path / "refused.jsonl")
    with pytest.raises(UserInputError) as caught:
        score_files([source], ScoreConfig(workers=1))
    message = str(caught.value)
    assert "\n" not in message and "row 0" in message, message
    ids = row["extra_info"]["instruction_id_list"] if row["extra_info"] else None
    assert (ids or [""])[0] in message or "instruction" in message, message
    assert list(tmp_path.glob("refused.scored.*")) == []
