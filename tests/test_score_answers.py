"""Answers read as a careful grader would: each case below was scored wrongly before."""

from __future__ import annotations

import pytest

from scoring.rewards import RewardOptions, get_reward_fn
from scoring.types import RewardResult

OPTIONS = RewardOptions()


def verdict(reward_name: str, response: str, ground_truth: object) -> RewardResult:
    """Extract then judge, as the scorer does (minus the worker process)."""
    reward = get_reward_fn(reward_name, OPTIONS)
    extraction = reward.extract(response)
    if extraction.answer is None:
        return RewardResult(0.0, False, None, "no_answer")
    return reward.judge(extraction.answer, ground_truth, "test", None)


@pytest.mark.parametrize(
    ("response", "gold"),
    [
        (r"It costs \boxed{\$12}.", "12"),
        (r"So the total is \boxed{18.90}.", r"\$18.90"),
        (r"Answer: \$7.50", "7.5"),
        ("Answer: 34 dollars", "34"),
        ("The side is 12 cm long.\nAnswer: 12 cm", "12"),
        (r"\boxed{5 apples}", "5"),
        (r"\boxed{34\text{ dollars}}", "34"),
        ("The answer is 42.", "42"),
        ("Adding them, the final answer is $\\frac{1}{2}$ because both halves match.", "1/2"),
    ],
)
def test_math_reads_the_stated_number(response: str, gold: str) -> None:
    result = verdict("math", response, gold)
    assert (result.status, result.score) == ("ok", 1.0), result


def test_math_units_rule_keeps_mathematics() -> None:
    assert verdict("math", r"Answer: 2 pi", "2").score == 0.0


@pytest.mark.parametrize(
    ("response", "gold", "score"),
    [
        ("The answer is (B) because (C) is too large.", "B", 1.0),
        ("the final answer is D", "D", 1.0),
        ("Answer: A and C", "A", 0.0),
        ("Answer: (A), (C)", "C", 0.0),
        ("A", "A", 1.0),
        ("(A)", 0, 1.0),
        ("**C.**", "C", 1.0),
    ],
)
def test_mcq_takes_the_answer_statement(response: str, gold: object, score: float) -> None:
    assert verdict("mcq", response, gold).score == score


def test_mcq_several_options_is_no_answer() -> None:
    assert verdict("mcq", "Answer: A and C", "A").status == "no_answer"


def test_qa_compares_after_nfkc() -> None:
    assert verdict("qa", "Answer: H₂O", "H2O").score == 1.0
    assert verdict("qa", "<answer>ﬁsh</answer>", "fish").score == 1.0


@pytest.mark.parametrize(
    ("response", "gold", "score"),
    [
        ("3 apples and 5 pears make 8 fruit.\n#### 8", "8", 1.0),
        ("#### The total is 3 apples and 5 pears", "3", 0.0),
        ("first #### 4\nthen corrected #### $1,200", "1200", 1.0),
        ("#### **72**", "Natalia sold 48/2 = 24 clips in May.\n#### 72", 1.0),
    ],
)
def test_gsm8k_reads_the_number_right_after_the_last_mark(response: str, gold: str, score: float) -> None:
    assert verdict("gsm8k", response, gold).score == score
