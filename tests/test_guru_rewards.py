"""GURU rewards where they differ from Reasoning360 on purpose, and the pieces they share.
(Row-by-row agreement with Reasoning360's verdicts is tests/test_guru_reference.py.)"""

from __future__ import annotations

import pytest

from scoring.rewards.base import RewardOptions
from scoring.rewards.guru.pyeval import NotLiteral, literal_eval
from scoring.rewards.registry import get_reward_fn
from scoring.types import RewardResult


def verdict(spec: str, response: str, gold: object, source: str = "x") -> RewardResult:
    reward = get_reward_fn(spec, RewardOptions())
    extraction = reward.extract(response)
    if extraction.answer is None:
        return RewardResult(score=0.0, acc=False, pred=None, status="no_answer")
    return reward.judge(extraction.answer, gold, source, {})


@pytest.mark.parametrize(("text", "value"), [
    ("3 / 100", 0.03), (" 12.5", 12.5), ("2*3.14", 6.28), ("-(4)", -4), ("(1, 2)", (1, 2)),
    ("2 ** 10", 1024), ("7 // 2", 3),
])
def test_arithmetic_is_evaluated_as_python_would(text: str, value: object) -> None:
    assert literal_eval(text) == value


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')", "open('/etc/passwd')", "abs(-3)", "x + 1", "9 ** 9 ** 9",
    "'ab' * 10 ** 8",
])
def test_anything_but_arithmetic_is_never_run(text: str) -> None:
    with pytest.raises(NotLiteral):
        literal_eval(text)


def test_python_syntax_errors_are_evals_errors() -> None:
    with pytest.raises(SyntaxError):
        literal_eval("05")
    with pytest.raises(ZeroDivisionError):
        literal_eval("1/0")


def test_supergpqa_without_a_letter_is_no_answer_not_a_random_pick() -> None:
    for response in (r"\boxed{b}", "no boxed answer at all", r"\boxed{}"):
        result = verdict("guru_supergpqa", response, "B")
        assert (result.score, result.status) == (0.0, "no_answer"), response


def test_table_answer_that_names_a_function_is_compared_as_text() -> None:
    # GURU would run `abs(-3)`; we compare it as a MATH answer, so it is not 3.
    assert verdict("guru_table", r"\boxed{abs(-3)}", "3").score == 0.0
    assert verdict("guru_table", r"\boxed{3}", "3").score == 1.0


def test_table_fbox_is_an_error_row_as_guru_raises() -> None:
    assert verdict("guru_table", r"\fbox{12}", "12").status == "error"


def test_guru_math_keeps_unreduced_fractions_wrong_where_math_verify_accepts() -> None:
    assert verdict("guru_math", r"\boxed{\frac{2}{4}}", r"\frac{1}{2}").score == 0.0
    assert verdict("math", r"\boxed{\frac{2}{4}}", r"\frac{1}{2}").score == 1.0


def test_coder1_stdin_tests_stop_at_the_first_failure_and_name_it() -> None:
    import json

    gold = json.dumps({"inputs": [f"{i} {i}\n" for i in range(6)],
                       "outputs": [f"{2 * i}\n" for i in range(6)]})
    right = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    wrong_late = "```python\na, b = map(int, input().split())\nprint(a + b if a < 4 else 0)\n```"
    crashes = "```python\na, b = map(int, input().split())\nprint(a + b)\nraise SystemExit(a == 2)\n```"
    assert verdict("guru_code", right, gold).score == 1.0
    late = verdict("guru_code", wrong_late, gold)
    assert late.score == 0.0 and late.extra["first_failure"] == "test 4: wrong output"
    crash = verdict("guru_code", crashes, gold)
    assert crash.extra["first_failure"] == "test 2: exit status 1"


def test_a_program_printing_forever_fails_without_holding_its_output() -> None:
    import json

    gold = json.dumps({"inputs": ["1\n"], "outputs": ["1\n"]})
    result = verdict("guru_code", "```python\nwhile True:\n    print('x' * 1000)\n```", gold)
    assert result.score == 0.0 and result.status == "ok"
    assert result.extra["first_failure"].startswith("test 0: ")
