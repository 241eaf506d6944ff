"""Zebra (Einstein) puzzles (GURU's `logic__zebra_puzzle*`): `--reward-fn zebra_puzzle`.

The ground truth is the solved grid, `{"header": [...], "rows": [[...], ...]}`. The answer is the
last one-line `<answer>...</answer>`, read as a Python literal, else as JSON. The score is cell
accuracy: the share of the ground truth's rows x header cells that the answer's `rows` hold
unchanged at the same place (Python equality: `"1"` is not `1`). An answer that is not a dict,
lacks `rows`, or is missing any row or cell the ground truth has scores 0, as in GURU's reward.
`acc` is true only for a full grid.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from rollouts.io import to_python
from scoring.rewards.extract import Extraction, last_tag
from scoring.types import RewardResult


def read_literal(text: str) -> Any:
    """A Python literal, else JSON; None when the text is neither."""
    try:
        return ast.literal_eval(text)
    except (SyntaxError, ValueError):
        try:
            return json.loads(text)
        except ValueError:
            return None
    except Exception:  # deep nesting, unhashable keys: no answer
        return None


def cell_accuracy(answer: Any, gold: dict[str, Any]) -> float:
    if not isinstance(answer, dict):
        return 0.0
    rows, columns = len(gold["rows"]), len(gold["header"])
    try:
        correct = sum(
            answer["rows"][i][j] == gold["rows"][i][j] for i in range(rows) for j in range(columns)
        )
    except Exception:  # a missing row or cell, rows that cannot be indexed
        return 0.0
    return correct / (rows * columns)


class ZebraPuzzleReward:
    """Cell accuracy of the answer's grid."""

    name = "zebra_puzzle"
    version = "1"
    uses_context = False

    def extract(self, response: str) -> Extraction:
        answer = last_tag(response)
        return Extraction(answer, "tag") if answer is not None else Extraction(None, "none")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        gold = to_python(ground_truth)
        if isinstance(gold, str):
            gold = read_literal(gold)
        try:
            score = cell_accuracy(read_literal(answer), gold)
        except Exception:  # a ground truth without rows or header: GURU scores 0 too
            score = 0.0
        return RewardResult(score=score, acc=score == 1.0, pred=answer, status="ok")
