"""Model-judge rewards, as GURU (Reasoning360) asks them: `--reward-fn judge` (GURU's
stem_llm_judge, for `stem_web`) and `--reward-fn math_judge` (GURU's math_llm_judge, for math rows
whose extra_info names `reward_metric: math_llm_judge`).

- judge: the student answer is the last `\\boxed{...}` of the response (none: 0, no question
  asked); the judge (TIGER-Lab/general-verifier's prompt) gets `extra_info["question"]`, the
  ground truth and that answer, thinking off; "Final Decision: Yes" in its answer is 1, "Final
  Decision: No" 0.
- math_judge: the answer is the last box after the last `</think>` (else that whole text). GURU's
  rule-based graders decide first (prm800k's, then the math_equal of PRIME, with pi as 3.14 too
  when either side has `\\pi`); only a boxed answer they reject goes to the judge, whose answer is
  1 when it says CORRECT and not INCORRECT.

Prompts are GURU's, word for word; questions go out at temperature 0 through
scoring.judge_client. An answer holding neither verdict, or a judge that cannot be reached, makes
the row an error (kind `judge_garbage`, `judge_connection`, ...), never a 0. The verdict cache key
holds the judge model (in the reward's version) and everything the prompt is made of.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rollouts.errors import UserInputError
from rollouts.io import to_python
from scoring.judge_client import JudgeError, JudgeSettings, Question, ask_judge
from scoring.rewards.extract import THINK_CLOSE, Extraction
from scoring.types import RewardResult

STEM_PROMPT = (
    "User: ### Question: {question}\n\n"
    "### Ground Truth Answer: {reference}\n\n"
    "### Student Answer: {student}\n\n"
    "For the above question, please verify if the student's answer is equivalent to the ground "
    "truth answer.\n"
    "Do not solve the question by yourself; just check if the student's answer is equivalent to "
    "the ground truth answer.\n"
    'If the student\'s answer is correct, output "Final Decision: Yes". If the student\'s answer '
    'is incorrect, output "Final Decision: No". Assistant:'
)
STEM_EXTRA_BODY = {"chat_template_kwargs": {"enable_thinking": False}}

MATH_PROMPT = """You are a teacher and your task is to grade the student's answer with the reference answer.

Question: {question}

Student's Answer: {student}

Reference Answer: {reference}

You only need to refer to the reference answer to grade the student's answer. Sometimes the student's answer is expressed in a different way from the reference answer, but the meaning is the same, and you should still consider it correct. If they are not equivalent in mathematical sense, you should consider it incorrect.

Note 1: You don't need to solve the problem yourself. Just grade the student's answer based on the reference answer.

Note 2: If the reference answer is a range, please make sure the student's answer is strictly identical, including the open or closed interval.

Note 3: If the reference answer is an expression and it looks like the student's answer is equivalent to the reference answer, you should present the derivation process to check if they are equivalent.

Note 4: If the reference answer includes multiple solutions, please make sure the student's answer covers all of them.

Please provide a brief explanation (a few sentences) of your grading process and put your final grade in the following format:

Final Grade: CORRECT or INCORRECT
"""  # noqa: E501  (GURU's prompt, word for word)


def last_box_content(text: str) -> str | None:
    """The stripped content of the last `\\boxed{...}` (or `\\fbox{...}`): from the first `{`
    after it to its match; None when there is none or it never closes, or it is empty."""
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth, left = 0, None
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
            left = i if left is None else left
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[left + 1 : i].strip() if left is not None else None
    return None


def question_of(extra_info: Any) -> str:
    extra = to_python(extra_info)
    if not isinstance(extra, dict) or "question" not in extra:
        raise UserInputError(
            "a judged row needs extra_info['question'] (the question the judge is shown)"
        )
    return str(extra["question"])


def stem_verdict(text: str) -> bool:
    if "Final Decision: Yes" in text:
        return True
    if "Final Decision: No" in text:
        return False
    raise JudgeError("garbage", f"no 'Final Decision: Yes/No' in the judge's answer {text[:120]!r}")


def math_verdict(text: str) -> bool:
    if "INCORRECT" in text:
        return False
    if "CORRECT" in text:
        return True
    raise JudgeError("garbage", f"no CORRECT or INCORRECT in the judge's answer {text[:120]!r}")


class _JudgeReward:
    uses_context = True  # the question is in extra_info

    def __init__(self, settings: JudgeSettings | None) -> None:
        if settings is None:
            raise UserInputError(
                f"--reward-fn {self.name} needs a judge model: pass --judge-base-url URL, "
                f"--judge-server-info FILE or --judge-model PATH"
            )
        self.settings = settings
        self.version = f"1+judge={settings.model}"

    name = "judge"

    def _ask(self, prompt: str, extra_body: dict[str, Any] | None) -> str:
        return ask_judge(self.settings, prompt, extra_body)

    def question(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> Question | None:
        """What judge() would ask the judge model for this answer (None: nothing), so that
        `score` can ask every row's question at once before judging (scoring.judge_client)."""
        raise NotImplementedError

    def check_rows(
        self, ground_truths: Sequence[Any], extra_infos: Sequence[Any],
        rows: Sequence[int] | None = None,
    ) -> None:
        """Every judged row has its question, before any is asked."""
        numbers = range(len(extra_infos)) if rows is None else rows
        for row, extra_info in zip(numbers, extra_infos, strict=True):
            try:
                question_of(extra_info)
            except UserInputError as exc:
                raise UserInputError(f"{self.name}: row {row}: {exc}") from exc


class StemJudgeReward(_JudgeReward):
    """GURU's stem_llm_judge: the general verifier's Yes/No on the last boxed answer."""

    name = "judge"

    def extract(self, response: str) -> Extraction:
        answer = last_box_content(response)
        return Extraction(answer, "boxed") if answer else Extraction(None, "none")

    def question(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> Question:
        prompt = STEM_PROMPT.format(
            question=question_of(extra_info), reference=str(ground_truth), student=answer
        )
        return prompt, STEM_EXTRA_BODY

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        prompt, extra_body = self.question(answer, ground_truth, data_source, extra_info)
        correct = stem_verdict(self._ask(prompt, extra_body))
        return RewardResult(score=float(correct), acc=correct, pred=answer, status="ok",
                            extra={"judged_by": "model"})


def rule_verdict(answer: str, gold: str) -> bool:
    """GURU's graders before the judge: prm800k's, then math_equal (pi also as 3.14)."""
    from scoring.rewards.guru.grader import math_equal
    from scoring.rewards.guru.prm800k import grade_answer

    if grade_answer(answer, gold):
        return True
    try:
        if "\\pi" in answer or "\\pi" in gold:
            return any(math_equal(answer, gold, pi=pi) for pi in (math.pi, 3.14))
        return bool(math_equal(answer, gold))
    except Exception:  # the grader fails on odd input: not equal, as for GURU
        return False


class MathJudgeReward(_JudgeReward):
    """GURU's math_llm_judge: rule-based graders first, the judge for boxed answers they reject."""

    name = "math_judge"

    def extract(self, response: str) -> Extraction:
        return Extraction(response.split(THINK_CLOSE)[-1], "after_think")

    def question(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> Question | None:
        """The judge's question when the rule graders reject a boxed answer (as judge() asks)."""
        question = question_of(extra_info)
        gold = str(ground_truth)
        boxed = last_box_content(answer)
        if not boxed or rule_verdict(boxed, gold):
            return None
        return MATH_PROMPT.format(question=question, student=boxed, reference=gold), None

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        question = question_of(extra_info)
        gold = str(ground_truth)
        boxed = last_box_content(answer)
        student = boxed if boxed else answer
        if rule_verdict(student, gold):
            return RewardResult(score=1.0, acc=True, pred=student, status="ok",
                                extra={"judged_by": "rule"})
        if not boxed:
            return RewardResult(score=0.0, acc=False, pred=student, status="ok",
                                extra={"judged_by": "rule"})
        prompt = MATH_PROMPT.format(question=question, student=student, reference=gold)
        correct = math_verdict(self._ask(prompt, None))
        return RewardResult(score=float(correct), acc=correct, pred=student, status="ok",
                            extra={"judged_by": "model"})
