"""How the stand-in servers (tests/openai_server.py, tests/fake_vllm.py) answer GURU's judge
prompts: the student's answer and the ground truth are read back from the prompt and compared
after dropping everything but letters, digits and dots (so `$8,645.09` is `8645.09`, which no
rule-based grader accepts). A question holding GARBAGE gets an answer with no verdict."""

from __future__ import annotations

import re

GARBAGE = "GARBAGE"
_STEM = re.compile(
    r"### Ground Truth Answer: (?P<gold>.*?)\n\n### Student Answer: (?P<student>.*?)\n\nFor the above",
    re.DOTALL,
)
_MATH = re.compile(
    r"Student's Answer: (?P<student>.*?)\n\nReference Answer: (?P<gold>.*?)\n\nYou only need",
    re.DOTALL,
)


def _same(first: str, second: str) -> bool:
    def bare(text: str) -> str:
        return re.sub(r"[^a-z0-9.]", "", text.lower())

    return bare(first) == bare(second)


def judge_reply(prompt: str) -> str | None:
    """The judge's answer to a GURU judge prompt, None for any other prompt."""
    stem, math = _STEM.search(prompt), _MATH.search(prompt)
    if stem is None and math is None:
        return None
    if GARBAGE in prompt:
        return "I would rather not say."
    found = stem or math
    assert found is not None
    same = _same(found["gold"], found["student"])
    if stem is not None:
        return f"The answers {'agree' if same else 'differ'}.\nFinal Decision: {'Yes' if same else 'No'}"
    return f"Compared with the reference.\nFinal Grade: {'CORRECT' if same else 'INCORRECT'}"
