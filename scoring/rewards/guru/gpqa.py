"""GURU's GPQA reward (Reasoning360 `gpqa`), for `stem__gpqa*` data sources named `no_box`.

The answer is the letter of the first `Answer: X` in the whole response (any case, spaces or
tabs around the colon, an optional `$` around the letter; A-D only, and a lower-case letter is
kept lower case, so it never equals the gold). No such line: 0.0. Otherwise 1.0 when the letter
equals the gold, else 0.0.
"""

from __future__ import annotations

import re
from typing import Any

from scoring.rewards.base import binary
from scoring.rewards.extract import Extraction
from scoring.types import RewardResult

_ANSWER = re.compile(r"(?i)Answer[ \t]*:[ \t]*\$?([A-D])\$?")


class GuruGpqaReward:
    name = "guru_gpqa"
    version = "1"
    uses_context = False

    def extract(self, response: str) -> Extraction:
        match = _ANSWER.search(response)
        return Extraction(match.group(1), "answer_line") if match else Extraction(None, "none")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        return binary(answer == ground_truth, answer, "letter:" + answer)
