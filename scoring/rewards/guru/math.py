"""GURU's math reward (Reasoning360 `naive_dapo`), which `auto` uses for `math__*` data sources.

The answer is the inside of the last `\\boxed{}` (or `\\fbox{}`) after the last `</think>`; a
response with no box (or an empty one) is graded whole, as GURU grades it. An unclosed `<think>`
is not special: the whole response is searched. It is right when prm800k's grader accepts it
(`prm800k.grade_answer`), else when `math_equal` does (`grader`), except that GURU never
accepts through `math_equal` when the answer or the gold contains `\\pi` (its call there has a
misspelt keyword, so it always fails). 1.0 or 0.0.

Our own `math` reward (Math-Verify) stays the default for other data sources: it reads `Answer:`
lines, reduces fractions and knows more LaTeX, so its verdicts differ from GURU's by design.
"""

from __future__ import annotations

from typing import Any

from scoring.rewards.base import binary
from scoring.rewards.extract import Extraction
from scoring.rewards.guru.grader import math_equal
from scoring.rewards.guru.hendrycks import normalize_answer
from scoring.rewards.guru.prm800k import grade_answer, load_libraries
from scoring.types import RewardResult

THINK_CLOSE = "</think>"


def inside_last_box(text: str) -> str | None:
    """The stripped inside of the last `\\boxed` (else `\\fbox`), braces counted from the
    command; None when it has no braces or never closes."""
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    opened_at = None
    depth = 0
    for index in range(start, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
            if opened_at is None:
                opened_at = index
        elif char == "}":
            depth -= 1
            if depth == 0:
                if opened_at is None:
                    return None
                return text[opened_at + 1 : index].strip()
    return None


def math_verdict(answer: str, gold: str) -> bool:
    """naive_dapo's decision on one answer."""
    if grade_answer(answer, gold):
        return True
    if "\\pi" in answer or "\\pi" in gold:
        return False
    try:
        return math_equal(answer, gold)
    except Exception:  # GURU counts a grader error as a wrong answer
        return False


class GuruMathReward:
    """naive_dapo: boxed answer (else the whole reply) graded by prm800k, then math_equal."""

    name = "guru_math"
    version = "1"
    uses_context = False

    def __init__(self) -> None:
        load_libraries()

    def extract(self, response: str) -> Extraction:
        text = response.split(THINK_CLOSE)[-1]
        boxed = inside_last_box(text)
        if boxed:
            return Extraction(boxed, "boxed")
        return Extraction(text, "response")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        correct = math_verdict(answer, str(ground_truth))
        return binary(correct, answer, "guru_math:" + str(normalize_answer(answer)))
