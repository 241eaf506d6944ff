"""The reward-function contract.

A reward function is split in two so that work can be shared: `extract` (cheap, main process)
finds the answer in a response; `judge` (possibly slow, in a worker process under a hard time
limit) turns one distinct (answer, ground truth) into a RewardResult. Verdicts are cached and
deduplicated by (name, version, answer, ground truth), plus the data source and extra_info for
functions whose `uses_context` is true.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from scoring.rewards.extract import Extraction
from scoring.types import RewardResult

if TYPE_CHECKING:  # the judge's HTTP client (aiohttp) is imported only by runs that use it
    from scoring.judge_client import JudgeSettings

DEFAULT_PASS_THRESHOLD = 1.0


@dataclass(frozen=True, kw_only=True)
class RewardOptions:
    """Run-wide settings that reward functions may read (the same in every worker)."""

    allow_unsandboxed: bool = False
    judge: JudgeSettings | None = None  # the judge model of `judge` and `math_judge`
    # A custom function's number (or dict without `acc`) counts as a pass at this score or above.
    pass_threshold: float = DEFAULT_PASS_THRESHOLD


class RewardFn(Protocol):
    """What the scorer needs from a reward function."""

    name: str
    version: str
    uses_context: bool

    def extract(self, response: str) -> Extraction: ...

    def judge(
        self,
        answer: str,
        ground_truth: Any,
        data_source: str,
        extra_info: dict[str, Any] | None,
    ) -> RewardResult: ...


NO_ANSWER = RewardResult(score=0.0, acc=False, pred=None, status="no_answer")

# The equivalence class shared by every answer the verifier accepts (equal to the gold answer).
CORRECT_CLASS = "=gold"


def binary(correct: bool, pred: str, wrong_class: str | None) -> RewardResult:
    """A 1/0 verdict; correct answers share one class for majority voting, wrong ones their own."""
    return RewardResult(
        score=1.0 if correct else 0.0,
        acc=correct,
        pred=pred,
        status="ok",
        answer_class=CORRECT_CLASS if correct else wrong_class,
    )
