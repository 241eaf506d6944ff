"""The math reward against a careful human grader, on a hand-labelled set of realistic MATH, AIME
and olympiad-style responses (tests/data/math_graded_responses.jsonl: gold, response, whether a
grader accepts it, and the kind of notation). Equivalent notations are accepted: repeating
decimals, sets and intervals written as inequalities or other symbols, answers over several boxes
or wrapped in words, matrices in another environment, a final expression left unboxed,
algebraically equal forms. Nearby values of an exact decimal and Math-Verify's known false
positives (1/2004! vs 1/2006!, 1/2^99 vs 1/2^98, 4 vs 4 sqrt 2, non-proportional lines, answers
cut off) are rejected: not one false positive is allowed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from scoring.rewards.math import MathReward

GRADED = Path(__file__).parent / "data" / "math_graded_responses.jsonl"


def graded() -> list[dict[str, Any]]:
    return [json.loads(line) for line in GRADED.read_text(encoding="utf-8").splitlines()]


def verdict(reward: MathReward, case: dict[str, Any]) -> bool:
    extraction = reward.extract(case["response"])
    if extraction.answer is None:
        return False
    return reward.judge(extraction.answer, case["gold"], "math", None).acc


def test_agrees_with_the_human_grader() -> None:
    cases = graded()
    kinds = Counter(case["kind"] for case in cases)
    assert len(cases) >= 100 and all(kinds[k] >= 5 for k in (
        "repeating", "interval", "set", "boxes", "words", "matrix", "unboxed", "algebra",
        "decimal", "guard"))
    reward = MathReward()
    disagreements = [(c["kind"], c["gold"], c["response"][-60:], c["accept"])
                     for c in cases if verdict(reward, c) != c["accept"]]
    false_positives = [d for d in disagreements if not d[3]]
    assert false_positives == []
    agreement = 1 - len(disagreements) / len(cases)
    assert agreement >= 0.97, disagreements


@pytest.mark.parametrize(
    ("answer", "gold", "accept"),
    [
        (r"0.\overline{3}", r"\frac{1}{3}", True),
        (r"-1.\overline{6}", r"-\frac{5}{3}", True),
        (r"x \ge 1", r"[1, \infty)", True),
        (r"3 > x", r"(-\infty, 3)", True),
        (r"x \ge 1", r"x \geq 1", True),  # an inequality gold stays an inequality
        (r"x > 1", r"[1, \infty)", False),
        (r"\text{12 marbles}", "12", True),
        ("2.5000001", "2.5", False),
        ("2.50", "2.5", True),
    ],
)
def test_notations(answer: str, gold: str, accept: bool) -> None:
    assert MathReward().judge(answer, gold, "math", None).acc is accept
