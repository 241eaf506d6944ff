"""GURU's table reward (Reasoning360 `tablereason`): `table__*` (hitab, multihier, finqa).

The response is lower-cased; the answer is the inside of the last `\\boxed{}` after the last
`</think>`, found as verl's MATH reward finds boxes, with `\\\\text{x}` unwrapped and doubled backslashes dropped; with no box, the
whole text. One answer: evaluated as a number (`,` `$` `\\` dropped, `%` is `/ 100`, `:` is `/`)
and compared by `math_equal` with a relative tolerance of 1e-3; if it is not a number, the MATH
normal forms are compared. Several answers (`a|b|c` in the gold): both sides split on `|`,
sorted, and compared pair by pair that way. 1.0 or 0.0.

Where Reasoning360 raises, we score 0.0 with status `error`: a last box written `\\fbox{...}`.
"""

from __future__ import annotations

import re
from typing import Any

from scoring.rewards.base import binary
from scoring.rewards.extract import Extraction
from scoring.rewards.guru.grader import math_equal
from scoring.rewards.guru.hendrycks import is_equiv, last_boxed, remove_boxed
from scoring.rewards.guru.pyeval import literal_eval
from scoring.types import RewardResult

_TEXT = re.compile(r"\\\\text\{([^}]*)\}")
_DOUBLE_BACKSLASH = re.compile(r"\\\\")
NOT_BOXED = "\x00unboxable"  # an answer GURU cannot read: its box helper raises


def single_correct(answer: str, gold: str) -> bool:
    """One table answer against one gold."""
    text = (answer.replace(",", "").replace("%", " / 100").replace("$", "")
            .replace(":", "/").replace("\\", ""))
    try:
        number = float(literal_eval(text))
        return math_equal(number, gold, tolerance=1e-3)
    except Exception:  # not a number (or the grader failed): compare as MATH answers
        return is_equiv(answer, gold)


def table_verdict(answer: str, gold: str) -> bool:
    if "|" not in gold:
        return single_correct(answer, gold)
    golds = sorted(item.strip() for item in gold.split("|"))
    answers = sorted(item.strip() for item in answer.split("|"))
    if len(golds) != len(answers):
        return False
    for each_gold, each_answer in zip(golds, answers, strict=True):
        if not single_correct(each_answer, each_gold):
            return False
    return True


class GuruTableReward:
    """tablereason: boxed answer (else the whole reply), numbers with tolerance, lists by `|`."""

    name = "guru_table"
    version = "1"
    uses_context = False

    def extract(self, response: str) -> Extraction:
        text = response.lower().split("</think>")[-1]
        boxed = last_boxed(text)
        if boxed is None:
            return Extraction(text, "response")
        try:
            inside = remove_boxed(boxed)
        except ValueError:
            return Extraction(NOT_BOXED, "boxed")
        return Extraction(_DOUBLE_BACKSLASH.sub("", _TEXT.sub(r"\1", inside)), "boxed")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        if answer == NOT_BOXED:
            return RewardResult(score=0.0, acc=False, pred=None, status="error",
                                extra={"score_error": "the last box is not \\boxed{...}"})
        correct = table_verdict(answer, str(ground_truth).lower())
        return binary(correct, answer, "guru_table:" + answer.strip())
