"""GURU domains round trip: `rollouts prepare KIND` → `rollouts generate` (a real HTTP server on
127.0.0.1) → `score --reward-fn auto`. Each prepared set carries GURU's prompt wording and data
source, and its ground truth is in the form its reward reads: the generated answers are judged
without errors, and a right answer written from each ground truth scores 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from rollouts.cli import main as rollouts_main
from rollouts.io import to_python
from scoring.score_cli import main as score_main
from tests.openai_server import FakeOpenAIServer

ARC_TASK = {
    "train": [{"input": [[1, 0], [0, 0]], "output": [[0, 1], [0, 0]]},
              {"input": [[0, 0], [1, 0]], "output": [[0, 0], [0, 1]]}],
    "test": [{"input": [[0, 0], [0, 1]], "output": [[0, 0], [1, 0]]}],
}
ZEBRA = {"instruction": "There are 2 houses.", "clues": ["The Brit is in house 1.", "The Pole is not."],
         "ground_truth": json.dumps({"header": ["Position", "Nationality"],
                                     "rows": [["1", "british"], ["2", "polish"]]})}
# kind -> (raw rows, the data source, a text the prompt must hold, a right answer from a row)
DOMAINS: dict[str, tuple[list[dict[str, Any]], str, str, Any]] = {
    "arcagi": ([ARC_TASK], "simulation__arcagi1", "What is the output grid?",
               lambda gt, extra: f"<answer>{json.dumps(gt)}</answer>"),
    "barc": ([{"examples": [[[[1.0]], [[2.0]]], [[[3.0]], [[6.0]]], [[[4.0]], [[8.0]]]]}],
             "simulation__barc", "Example 2\nInput: [[3]]\nOutput: [[6]]",
             lambda gt, extra: f"<answer>{json.dumps(gt)}</answer>"),
    "zebra_puzzle": ([ZEBRA], "logic__zebra_puzzle_dataset", "The clues are: The Brit",
                     lambda gt, extra: f"<answer>{json.dumps(gt)}</answer>"),
    "ordering_puzzle": ([{"instruction": "Order the birds", "input": "owl before hawk",
                          "ground_truth": ["owl", "hawk"]}],
                        "logic__ordering_puzzle_dataset", "The constraints are: owl before hawk.",
                        lambda gt, extra: f"<answer>{list(gt)!r}</answer>"),
    "graph_puzzle": ([{"prompt": "Find the path.", "correct_response": "abc", "look_ahead": 2}],
                     "logic__graph_logical_dataset", "for example <answer> fdebme </answer>",
                     lambda gt, extra: f"<answer>{gt}</answer>"),
    "livebench": ([{"turns": ["Fix the typos: Teh cat."], "ground_truth": "The cat.",
                    "task": "typos", "category": "language"}],
                  "ood__livebench", "Fix the typos", lambda gt, extra: gt),
    "ifeval": ([{"prompt": "Write without commas.", "instruction_id_list": ["punctuation:no_comma"],
                 "kwargs": [{"num_words": None, "relation": None}]}],
               "ood__ifeval", "Write without commas.", lambda gt, extra: "no commas at all"),
    "ifbench": ([{"messages": [{"role": "user", "content": "Say apple once."}],
                  "ground_truth": "[{'instruction_id': ['keywords:word_once'], "
                                  "'kwargs': [{'keyword': 'apple'}]}]"}],
                "ood__ifbench", "Say apple once.", lambda gt, extra: "an apple"),
}


def invoke(command: Any, args: list[Any]) -> str:
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return str(result.output)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("kind", list(DOMAINS))
def test_prepare_generate_score_round_trip(kind: str, tmp_path: Path) -> None:
    raw, data_source, in_prompt, right_answer = DOMAINS[kind]
    prepared = tmp_path / f"{kind}.parquet"
    invoke(rollouts_main, ["prepare", kind, write_jsonl(tmp_path / "raw.jsonl", raw), "-o", prepared])
    rows = pd.read_parquet(prepared)
    assert rows["data_source"].tolist() == [data_source] * len(raw)
    assert in_prompt in rows["prompt"][0][-1]["content"]

    rollouts = tmp_path / "rollouts.parquet"
    with FakeOpenAIServer() as server:
        invoke(rollouts_main, ["generate", prepared, "-o", rollouts, "--base-url", server.url,
                               "--n", "2", "--no-progress"])
    invoke(score_main, [rollouts, "--no-cache", "--workers", "1"])
    generated = pd.read_parquet(tmp_path / "rollouts.scored.parquet")
    assert not generated["score_status"].isin(["error", "sandbox_error"]).any()

    frame = pd.read_parquet(rollouts)
    frame["response"] = [
        right_answer(to_python(model["ground_truth"]), to_python(extra))
        for model, extra in zip(frame["reward_model"], frame["extra_info"], strict=True)
    ]
    right = tmp_path / "right.parquet"
    frame.to_parquet(right)
    invoke(score_main, [right, "--no-cache", "--workers", "1"])
    assert pd.read_parquet(tmp_path / "right.scored.parquet")["score"].tolist() == [1.0] * len(frame)


def test_stem_web_round_trip_through_a_judge(tmp_path: Path) -> None:
    raw = [{"question": "What is the present value?", "answer": "$8,645.09",
            "answer_type": "Float", "difficulty": "University"}]
    prepared = tmp_path / "stem.parquet"
    invoke(rollouts_main, ["prepare", "stem_web", write_jsonl(tmp_path / "raw.jsonl", raw),
                           "-o", prepared])
    rows = pd.read_parquet(prepared)
    assert rows["data_source"].tolist() == ["stem_web"]
    assert rows["prompt"][0][-1]["content"].startswith("You are a knowledgeable assistant.")
    frame = rows.assign(response=["So the value is \\boxed{8645.09}"], sample_idx=0, data_idx=0)
    rollouts = tmp_path / "rollouts.parquet"
    frame.to_parquet(rollouts)
    with FakeOpenAIServer() as judge:
        invoke(score_main, [rollouts, "--no-cache", "--workers", "1", "--judge-base-url", judge.url])
    assert pd.read_parquet(tmp_path / "rollouts.scored.parquet")["score"].tolist() == [1.0]


PROMPTS = Path(__file__).parent / "guru_reference" / "prompts.jsonl"


@pytest.mark.parametrize(
    "case", [json.loads(line) for line in PROMPTS.read_text().splitlines()], ids=lambda c: c["kind"]
)
def test_prompts_are_gurus_word_for_word(case: dict[str, Any], tmp_path: Path) -> None:
    """The user message equals what Reasoning360's data_preprocess script writes for the row."""
    prepared = tmp_path / "p.parquet"
    invoke(rollouts_main, ["prepare", case["kind"], write_jsonl(tmp_path / "raw.jsonl", [case["raw"]]),
                           "-o", prepared])
    assert pd.read_parquet(prepared)["prompt"][0][-1]["content"] == case["content"]
