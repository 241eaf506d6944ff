"""Graph search puzzles (GURU's `logic__graph*`): `--reward-fn graph_puzzle`.

The ground truth is a word of letters (`fdebme`). The answer is the last one-line
`<answer>...</answer>` when, stripped, it is only ASCII letters; it passes when equal to the ground
truth ignoring case. Anything else scores 0, as in GURU's reward.
"""

from __future__ import annotations

import re
from typing import Any

from scoring.rewards.base import binary
from scoring.rewards.extract import Extraction, last_tag
from scoring.types import RewardResult

_LETTERS = re.compile(r"[A-Za-z]+")


class GraphPuzzleReward:
    """Case-insensitive match of a word of letters."""

    name = "graph_puzzle"
    version = "1"
    uses_context = False

    def extract(self, response: str) -> Extraction:
        answer = last_tag(response)
        if answer is None:
            return Extraction(None, "none")
        if not _LETTERS.fullmatch(answer):
            return Extraction(None, "not_letters")
        return Extraction(answer.lower(), "tag")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        return binary(answer == str(ground_truth).lower(), answer, "word:" + answer)
