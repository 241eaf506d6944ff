"""Reward functions: extraction, verdicts, Math-Verify false-positive guards, dispatch, custom files."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollouts.errors import UserInputError
from scoring.rewards import RewardOptions, dispatch, dispatch_all, get_reward_fn
from scoring.rewards import math as math_reward
from scoring.rewards.custom import CustomReward, to_result
from scoring.rewards.exact import exact_verdict
from scoring.rewards.extract import boxed_then_answer_line, last_boxed
from scoring.types import RewardResult

OPTIONS = RewardOptions()


def verdict(reward_name: str, response: str, ground_truth: object) -> RewardResult:
    """Extract then judge, as the scorer does (minus the worker process)."""
    reward = get_reward_fn(reward_name, OPTIONS)
    extraction = reward.extract(response)
    if extraction.answer is None:
        return RewardResult(0.0, False, None, "no_answer", {"pred_source": extraction.source})
    result = reward.judge(extraction.answer, ground_truth, "test", None)
    result.extra["pred_source"] = extraction.source
    return result


# ------------------------------------------------------------------ math


@pytest.mark.parametrize(
    ("gold", "response"),
    [
        ("1/2004!", r"The probability is $\boxed{\frac{1}{2006!}}$."),
        ("1/2^{99}", r"so we get \boxed{1/2^{98}}"),
        (r"\frac{1}{2^{99}}", r"Answer: $\frac{1}{2^{98}}$"),
        ("4", r"Answer: 4\sqrt{2}"),
        ("4", r"The side is \boxed{4\sqrt{2}}."),
        ("3x-y+13=0", r"The line is \boxed{3x+4y+14=0}"),
        ("3x-y+13=0", r"Answer: 3x+4y+14=0"),
    ],
)
def test_math_rejects_math_verify_false_positives(gold: str, response: str) -> None:
    result = verdict("math", response, gold)
    assert result.status == "ok"
    assert result.acc is False
    assert result.score == 0.0


@pytest.mark.parametrize(
    "response",
    [
        r"Therefore \boxed{\frac{1}{",
        r"Answer: $\frac{1}{2",
        r"Answer: 4\sqrt{",
        r"so the answer is \boxed{2^",
    ],
)
def test_math_answer_cut_off_mid_latex_is_no_answer(response: str) -> None:
    result = verdict("math", response, r"\frac{1}{2}")
    assert (result.status, result.acc, result.pred) == ("no_answer", False, None)
    assert result.extra["pred_source"] == "truncated"


@pytest.mark.parametrize(
    ("gold", "response"),
    [
        ("1/2004!", r"\boxed{\frac{1}{2004!}}"),
        ("1/2^{99}", r"\boxed{2^{-99}}"),
        (r"\frac{1}{2}", r"\boxed{0.5}"),
        (r"2\sqrt{2}", r"\boxed{\sqrt{8}}"),
        ("3x-y+13=0", r"\boxed{-6x+2y-26=0}"),
        ("3x-y+13=0", r"\boxed{y = 3x + 13}"),
        ("x=3", r"\boxed{3}"),
        ("1000", r"Answer: $1{,}000$."),
    ],
)
def test_math_accepts_equivalent_forms(gold: str, response: str) -> None:
    assert verdict("math", response, gold).acc is True


def test_math_takes_last_boxed_after_think() -> None:
    response = r"<think>maybe \boxed{7}</think> Checking again: \boxed{5} no wait \boxed{6}"
    result = verdict("math", response, "6")
    assert (result.acc, result.pred, result.extra["pred_source"]) == (True, "6", "boxed")


def test_math_unfinished_think_is_no_answer() -> None:
    result = verdict("math", r"<think>the answer is \boxed{6}", "6")
    assert result.status == "no_answer"
    assert result.extra["pred_source"] == "unfinished_think"


def test_math_answer_line_used_when_no_box() -> None:
    result = verdict("math", "work...\nFinal Answer: $\\frac{3}{4}$.", "0.75")
    assert (result.acc, result.pred, result.extra["pred_source"]) == (True, "\\frac{3}{4}", "answer_line")


def test_math_response_without_answer_is_no_answer() -> None:
    result = verdict("math", "I computed 6 somewhere in the middle but gave no final answer", "6")
    assert (result.status, result.extra["pred_source"]) == ("no_answer", "none")


def test_math_accepts_any_of_several_golds() -> None:
    assert verdict("math", r"\boxed{-2}", ["2", "-2"]).acc is True


def test_math_equivalent_answers_share_a_class() -> None:
    math_fn = get_reward_fn("math", OPTIONS)
    half = math_fn.judge(r"\frac{1}{2}", "3", "s", None)
    point_five = math_fn.judge("0.5", "3", "s", None)
    third = math_fn.judge("1/3", "3", "s", None)
    correct = math_fn.judge("3.0", "3", "s", None)
    assert half.answer_class == point_five.answer_class != third.answer_class
    assert correct.answer_class == "=gold"


def test_boxed_extraction_handles_nesting_and_fbox() -> None:
    found = last_boxed(r"x \boxed{\frac{a}{b^{2}}} and \fbox{ 7 }")
    assert found is not None and found.answer == "7"
    nested = boxed_then_answer_line(r"\boxed{\left(\frac{1}{2}, 3\right)}")
    assert nested.answer == r"\left(\frac{1}{2}, 3\right)"


# ------------------------------------------------------------------ gsm8k


@pytest.mark.parametrize(
    ("response", "gold", "acc", "pred"),
    [
        ("so she pays 18 dollars.\n#### 18", "18", True, "18"),
        ("#### $1,234.00", "Natalia sold ... <<48/2=24>>\n#### 1234", True, "1234"),
        (r"The total is \boxed{72}", "72", True, "72"),
        ("#### 17", "18", False, "17"),
        ("#### -3.50", "-3.5", True, "-3.5"),
    ],
)
def test_gsm8k_numeric_match(response: str, gold: str, acc: bool, pred: str) -> None:
    result = verdict("gsm8k", response, gold)
    assert (result.acc, result.pred) == (acc, pred)


def test_gsm8k_without_marker_is_no_answer() -> None:
    assert verdict("gsm8k", "the answer is 18", "18").status == "no_answer"


# ------------------------------------------------------------------ qa


def test_qa_exact_match_after_squad_normalisation_and_f1() -> None:
    result = verdict("qa", "<answer>The Eiffel Tower!</answer>", ["eiffel tower", "Tour Eiffel"])
    assert result.acc is True and result.score == 1.0
    partial = verdict("qa", "Answer: the Eiffel Tower in Paris", ["eiffel tower"])
    assert partial.acc is False
    assert partial.extra["f1"] == pytest.approx(2 * (2 / 4) * 1 / (2 / 4 + 1))


def test_qa_whole_response_when_no_marker() -> None:
    result = verdict("qa", "  Paris. ", "paris")
    assert (result.acc, result.extra["pred_source"]) == (True, "response")


# ------------------------------------------------------------------ mcq


@pytest.mark.parametrize(
    ("response", "gold", "pred"),
    [
        ("Reasoning... Answer: (C)", "C", "C"),
        ("Answer: B. because", "B", "B"),
        (r"so \boxed{\text{D}}", "D", "D"),
        ("I pick (A) over (B), final: (J)", "J", "J"),
        ("Answer: C", 2, "C"),
    ],
)
def test_mcq_letter_forms(response: str, gold: object, pred: str) -> None:
    result = verdict("mcq", response, gold)
    assert (result.acc, result.pred) == (True, pred)


def test_mcq_wrong_letter_and_no_letter() -> None:
    assert verdict("mcq", "Answer: A", "B").acc is False
    assert verdict("mcq", "no idea", "B").status == "no_answer"


# ------------------------------------------------------------------ dispatch


@pytest.mark.parametrize(
    ("source", "reward"),
    [
        ("openai/gsm8k", "gsm8k"),
        ("lighteval/MATH", "math"),
        ("DigitalLearningGmbH/MATH-lighteval", "math"),
        ("HuggingFaceH4/MATH-500", "math"),
        ("math__aime_2024", "guru_math"),
        ("numina_olympiads", "math"),
        ("codegen__mbpp", "guru_code"),
        ("livecodebench", "code"),
        ("stem__gpqa", "guru_supergpqa"),
        ("stem__gpqa_diamond_no_box", "guru_gpqa"),
        ("stem__mmlu", "mcq"),
        ("Idavidrein/gpqa", "mcq"),
        ("hotpotqa", "qa"),
        ("qa__nq", "qa"),
    ],
)
def test_dispatch_on_data_source(source: str, reward: str) -> None:
    assert dispatch(source) == reward


def test_dispatch_all_lists_every_unknown_source() -> None:
    with pytest.raises(UserInputError) as info:
        dispatch_all(["openai/gsm8k", "my/poetry", "logic__zebra"])
    message = str(info.value)
    assert "'logic__zebra'" in message and "'my/poetry'" in message and "\n" not in message


def test_unknown_reward_name_is_one_line_error() -> None:
    with pytest.raises(UserInputError, match="unknown reward function 'maths'"):
        get_reward_fn("maths", OPTIONS)


# ------------------------------------------------------------------ custom


def test_custom_reward_verl_signature_float_and_dict(tmp_path: Path) -> None:
    path = tmp_path / "reward.py"
    path.write_text(
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):\n"
        "    return float(solution_str.strip() == ground_truth)\n"
        "def rich(data_source, solution_str, ground_truth, extra_info=None):\n"
        "    return {'score': 0.5, 'pred': solution_str[:3], 'length': len(solution_str),\n"
        "            'source': data_source, 'split': (extra_info or {}).get('split')}\n"
    )
    plain = CustomReward(f"{path}:compute_score")
    assert plain.judge(" 42 ", "42", "ds", None).score == 1.0
    assert plain.name == "reward.py:compute_score" and len(plain.version) == 12
    rich = CustomReward(f"{path}:rich").judge("hello", "x", "ds", {"split": "test"})
    assert (rich.score, rich.acc, rich.pred) == (0.5, False, "hel")  # below the pass threshold
    lenient = CustomReward(f"{path}:rich", pass_threshold=0.5)
    assert lenient.judge("hello", "x", "ds", None).acc
    assert lenient.version != CustomReward(f"{path}:rich").version  # acc is in cached verdicts
    assert rich.extra == {"length": 5, "source": "ds", "split": "test"}


def test_custom_file_without_function_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "reward.py"
    path.write_text("def other(*args):\n    return 1.0\n")
    with pytest.raises(UserInputError, match="defines no function 'compute_score'"):
        CustomReward(f"{path}:compute_score")


def test_custom_version_follows_file_content(tmp_path: Path) -> None:
    path = tmp_path / "reward.py"
    path.write_text("def compute_score(*a, **k):\n    return 1.0\n")
    first = CustomReward(f"{path}:compute_score").version
    path.write_text("def compute_score(*a, **k):\n    return 0.0\n")
    assert CustomReward(f"{path}:compute_score").version != first


def test_custom_dict_without_score_is_an_error() -> None:
    with pytest.raises(ValueError, match="no 'score'"):
        to_result({"acc": True})


# ------------------------------------------------------------------ shortcuts agree with Math-Verify

SIMPLE_NUMBERS = [
    "0", "2", "-2", "12", "12.0", "0.5", "-0.75", r"\frac{1}{2}", r"\dfrac{2}{4}", "1/2",
    r"-\frac{3}{4}", r"2\sqrt{3}", r"\sqrt{12}", r"\frac{\sqrt{2}}{2}", "0.333333", r"\frac{1}{3}",
]
CAS_ANSWERS = [r"\frac{\pi}{2}", r"\frac{3\pi}{6}", r"2\pi", r"\sqrt{2}+1", r"e^{2}", r"1,000"]


def _reference(gold: str, answer: str) -> tuple[bool, str | None]:
    """Math-Verify plus the guards, with no shortcut."""
    pred = math_reward.parse_answer(answer)
    correct = math_reward.is_equivalent(math_reward.gold_parsed(gold), pred)
    return correct, None if correct else math_reward.answer_class(pred)


@pytest.mark.parametrize("gold", SIMPLE_NUMBERS + CAS_ANSWERS[:3])
def test_shortcut_verdicts_and_classes_match_math_verify(gold: str) -> None:
    judge = get_reward_fn("math", OPTIONS).judge
    for answer in SIMPLE_NUMBERS + CAS_ANSWERS:
        result = judge(answer, gold, "s", None)
        assert (result.acc, None if result.acc else result.answer_class) == _reference(gold, answer), (
            gold,
            answer,
        )


def test_exact_verdict_declines_what_it_cannot_decide_exactly() -> None:
    # Math-Verify rounds floats to 6 decimals: 0.333333 vs 1/3 is its call, not plain equality.
    assert exact_verdict(r"\frac{1}{3}", "0.333333") is None
    assert exact_verdict("0.1234567", "0.1234568") is None
    assert exact_verdict(r"\pi", "3.14") is None
    assert exact_verdict(r"\frac{3}{4}", "0.75") is True
    assert exact_verdict(r"2\sqrt{3}", r"\sqrt{12}") is True
    assert exact_verdict("1/2004", "1/2006") is False
