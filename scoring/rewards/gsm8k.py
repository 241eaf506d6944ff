"""GSM8K: the number after the last `####` (or in the last `\\boxed{}`), compared as a number."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from scoring.rewards.base import NO_ANSWER, binary
from scoring.rewards.extract import Extraction, final_text, last_boxed
from scoring.types import RewardResult

HASH_MARK = "####"
# The number right after the mark (past spaces, `$`, `\$` and bold markers), nothing later.
_AFTER_MARK = re.compile(r"(?:\s|\*\*|\\?\$)*(?P<number>-?\d[\d,]*(?:\.\d+)?)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def normalize_number(text: str) -> str | None:
    """`$1,234.50` -> `1234.5`: thousands separators, currency and trailing zeros go."""
    cleaned = text.replace(",", "").replace("$", "").replace("\\!", "").replace("{,}", "")
    match = _NUMBER.search(cleaned.replace(" ", ""))
    if match is None:
        return None
    try:
        value = Decimal(match.group(0))
    except InvalidOperation:
        return None
    normalized = format(value.normalize(), "f")
    return "0" if normalized in ("-0", "0") else normalized


class Gsm8kReward:
    """Numeric exact match on the final answer."""

    name = "gsm8k"
    version = "2"
    uses_context = False

    def extract(self, response: str) -> Extraction:
        text = final_text(response)
        if isinstance(text, Extraction):
            return text
        if HASH_MARK in text:
            number = number_after_mark(text)
            return Extraction(number, "hash_mark") if number else Extraction(None, "none")
        boxed = last_boxed(text)
        if boxed is not None and boxed.answer is not None:
            number = normalize_number(boxed.answer)
            return Extraction(number, "boxed") if number else Extraction(None, "none")
        return boxed or Extraction(None, "none")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        pred = normalize_number(answer)
        if pred is None:
            return NO_ANSWER
        gold = gold_number(ground_truth)
        return binary(gold is not None and Decimal(pred) == Decimal(gold), pred, "num:" + pred)


def gold_number(ground_truth: Any) -> str | None:
    """GSM8K golds come as `72` or as a worked solution ending in `#### 72`."""
    text = str(ground_truth)
    return number_after_mark(text) if HASH_MARK in text else normalize_number(text)


def number_after_mark(text: str) -> str | None:
    """The number right after the last `####` (`#### 72`, `#### $1,200`), else None."""
    match = _AFTER_MARK.match(text, text.rfind(HASH_MARK) + len(HASH_MARK))
    return normalize_number(match.group("number")) if match else None
