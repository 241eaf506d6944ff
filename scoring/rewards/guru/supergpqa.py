"""GURU's SuperGPQA reward (Reasoning360 `supergpqa`): `stem__supergpqa*` and `stem__gpqa*`
data sources not named `no_box`.

The reply is cut to the assistant's part (after the first `<|im_start|>assistant` when the text
holds a `<|im_start|>user` turn, else after the last `Assistant:`) and at the first `</s>`,
`<|im_end|>` or `<|endoftext|>`. Its answer is the inside of the last `\\boxed{...}` (two levels
of nested braces at most), else the text after the last `Final Answer:` (else `The answer is:`) up
to the end of its line. The choice is the first of the letters A-J, in that order, that the
answer contains (`\\boxed{\\textbf{C}}` is C). 1.0 when it equals the gold, else 0.0.

When no answer or no letter is found, Reasoning360 picks a random letter (right one time in ten);
we score 0.0 with status `no_answer`.
"""

from __future__ import annotations

import re
from typing import Any

from scoring.rewards.base import binary
from scoring.rewards.extract import Extraction
from scoring.types import RewardResult

LETTERS = "ABCDEFGHIJ"
_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}")
_FINAL_ANSWER = re.compile(r"Final Answer:((?:[^<]|<[^<])*?)\n")
_THE_ANSWER_IS = re.compile(r"The answer is:((?:[^<]|<[^<])*?)\n")
_BEFORE_ASSISTANT = re.compile(r"^.*?<\|im_start\|>assistant", re.DOTALL)
STOP_WORDS = ("</s>", "<|im_end|>", "<|endoftext|>")


def assistant_text(response: str) -> str:
    if "<|im_start|>user" in response:
        text = _BEFORE_ASSISTANT.sub("<|im_start|>assistant", response, count=1)
    elif "Assistant:" in response:
        text = response.split("Assistant:")[-1].strip()
    else:
        text = response
    for stop in STOP_WORDS:
        if stop in text:
            text = text.split(stop)[0].strip()
    return text


def answer_text(response: str) -> str | None:
    text = assistant_text(response)
    boxes = list(_BOXED.finditer(text))
    if boxes and boxes[-1].group(1):
        return boxes[-1].group(1)
    for pattern in (_FINAL_ANSWER, _THE_ANSWER_IS):
        lines = list(pattern.finditer(text))
        if lines:
            return lines[-1].group(1)
    return None


class GuruSuperGpqaReward:
    name = "guru_supergpqa"
    version = "1"
    uses_context = False

    def extract(self, response: str) -> Extraction:
        answer = answer_text(response)
        if answer is None:
            return Extraction(None, "none")
        letter = next((letter for letter in LETTERS if letter in answer), None)
        return Extraction(letter, "boxed") if letter else Extraction(None, "no_letter")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        return binary(answer == ground_truth, answer, "letter:" + answer)
