"""Multiple choice: the chosen letter (A-J) from the last `Answer:` line, `\\boxed{}` or `(X)`."""

from __future__ import annotations

import re
from typing import Any

from scoring.rewards.base import NO_ANSWER, binary
from scoring.rewards.extract import Extraction, final_text, last_answer_line, last_boxed
from scoring.types import RewardResult

LETTERS = "ABCDEFGHIJ"
_LETTER = re.compile(r"^\s*\(?\s*(?:\\text\{\s*)?\(?([A-J])\)?(?:\s*\})?\s*\)?(?:[.:)\s]|$)")
_PAREN = re.compile(r"\(([A-J])\)")


def letter_of(text: str) -> str | None:
    """`B`, `(B)`, `B.`, `\\text{B}`, `B) 42` -> `B`."""
    match = _LETTER.match(text.strip().strip("*$"))
    return match.group(1) if match else None


def gold_letter(ground_truth: Any) -> str | None:
    """A letter (`B`, `(B)`) or a 0-based option index."""
    if isinstance(ground_truth, int) and 0 <= ground_truth < len(LETTERS):
        return LETTERS[ground_truth]
    text = str(ground_truth).strip()
    if text.isdigit() and int(text) < len(LETTERS):
        return LETTERS[int(text)]
    return letter_of(text.upper())


class McqReward:
    """Exact match of the chosen letter."""

    name = "mcq"
    version = "1"
    uses_context = False

    def extract(self, response: str) -> Extraction:
        text = final_text(response)
        if isinstance(text, Extraction):
            return text
        line = last_answer_line(text)
        if line is not None and letter_of(line):
            return Extraction(letter_of(line), "answer_line")
        boxed = last_boxed(text)
        if boxed is not None and boxed.answer is not None and letter_of(boxed.answer):
            return Extraction(letter_of(boxed.answer), "boxed")
        parens = _PAREN.findall(text)
        if parens:
            return Extraction(parens[-1], "paren")
        return Extraction(None, "none")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        pred = letter_of(answer)
        if pred is None:
            return NO_ANSWER
        return binary(pred == gold_letter(ground_truth), pred, "letter:" + pred)
