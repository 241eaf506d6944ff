"""GURU's `prime_math` reward, which `auto` uses for `math__*` rows whose extra_info says
`reward_metric: prime_math`.

The answer: after the last `answer:` / `answer is` / `answers are` (any case); before the last
`is answer` / `is the answer` / `are the answers`; the inside of the last `\\boxed{}` if any; cut
at the last `. `; then after the last `be `, `is `, `are `, `=`, `: `, `get ` (or those words
before a line break). Right when prm800k's grader accepts it, else when `math_equal` does (with
`\\pi` in either, as 3.14159... or as 3.14: either may match). 1.0 or 0.0.
"""

from __future__ import annotations

import math
from typing import Any

from scoring.rewards.base import binary
from scoring.rewards.extract import Extraction
from scoring.rewards.guru.grader import math_equal
from scoring.rewards.guru.hendrycks import normalize_answer
from scoring.rewards.guru.math import inside_last_box
from scoring.rewards.guru.prm800k import grade_answer, load_libraries
from scoring.types import RewardResult

_AFTER = ("answer:", "answer is", "answers are")
_BEFORE = ("is answer", "is the answer", "are answers", "are the answers")
_LAST_WORDS = ("be ", "is ", "are ", "=", ": ", "get ", "be\n", "is\n", "are\n", ":\n", "get\n")


def prime_answer(response: str) -> str:
    """The answer prime_math grades (see the module docstring)."""
    for marker in _AFTER:
        at = response.lower().rfind(marker)
        if at != -1:
            response = response[at + len(marker) :].strip()
    for marker in _BEFORE:
        at = response.lower().rfind(marker)
        if at != -1:
            response = response[:at].strip()
    boxed = inside_last_box(response)
    if boxed:
        response = boxed
    if ". " in response:
        response = response[: response.lower().rfind(". ")].strip()
    for marker in _LAST_WORDS:
        at = response.lower().rfind(marker)
        if at != -1:
            response = response[at + len(marker) :].strip()
    return response


def prime_verdict(answer: str, gold: str) -> bool:
    if grade_answer(answer, gold):
        return True
    try:
        if "\\pi" in answer or "\\pi" in gold:
            verdicts = [math_equal(answer, gold, pi=pi) for pi in (math.pi, 3.14)]
            return any(verdicts)
        return math_equal(answer, gold)
    except Exception:  # GURU counts a grader error as a wrong answer
        return False


class GuruPrimeMathReward:
    """prime_math: the answer found by its phrases and box, graded by prm800k."""

    name = "guru_prime_math"
    version = "1"
    uses_context = False

    def __init__(self) -> None:
        load_libraries()

    def extract(self, response: str) -> Extraction:
        return Extraction(prime_answer(response), "answer_phrase")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        correct = prime_verdict(answer, str(ground_truth))
        return binary(correct, answer, "guru_prime_math:" + str(normalize_answer(answer)))
