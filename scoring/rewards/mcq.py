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
# Two options joined: "A and C", "(A), (C)", "B or D" is not one answer.
_SEVERAL = re.compile(r"\b([A-J])\b\)?\s*(?:,|and|or|&|/)\s*\(?([A-J])\b")
# A response that is nothing but a letter: "A", "(A)", "**A.**".
_ONLY_LETTER = re.compile(r"\W*\(?([A-J])\)?\W*")


def letter_of(text: str) -> str | None:
    """`B`, `(B)`, `B.`, `\\text{B}`, `B) 42` -> `B`."""
    match = _LETTER.match(text.strip().strip("*$"))
    return match.group(1) if match else None


def statement_letter(text: str) -> tuple[str | None, bool]:
    """The single option an answer statement names, and whether it names several."""
    if _SEVERAL.search(text):
        return None, True
    letter = letter_of(text)
    if letter:
        return letter, False
    named = set(_PAREN.findall(text))
    if len(named) == 1:
        return named.pop(), False
    return None, len(named) > 1


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
    version = "2"
    uses_context = False

    def extract(self, response: str) -> Extraction:
        """The letter of the last answer statement (`Answer: B`, `the answer is (B) because (C)
        ...`), else of the last box, else a response that is only a letter, else the last `(X)`.
        A statement naming several options (`A and C`) is no answer."""
        text = final_text(response)
        if isinstance(text, Extraction):
            return text
        for source, found in (("answer_line", last_answer_line(text)), ("boxed", _boxed_answer(text))):
            if found is not None:
                letter, several = statement_letter(found)
                if letter:
                    return Extraction(letter, source)
                if several:
                    return Extraction(None, "several")
        only = _ONLY_LETTER.fullmatch(text.strip())
        if only:
            return Extraction(only.group(1), "response")
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


def _boxed_answer(text: str) -> str | None:
    boxed = last_boxed(text)
    return boxed.answer if boxed is not None else None
