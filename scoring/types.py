"""The contract between the scorer and reward functions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

ScoreStatus = Literal["ok", "no_answer", "timeout", "error", "sandbox_error"]
SCORE_STATUSES: tuple[str, ...] = ("ok", "no_answer", "timeout", "error", "sandbox_error")
# Statuses of rows the reward function could not judge (it raised, returned no finite number, or
# the sandbox failed): `score --on-error` decides what they count as. A timeout is a verdict (the
# answer made the verifier hang), and a failed generation is the rollout's own result.
REWARD_ERROR_STATUSES: tuple[str, ...] = ("error", "sandbox_error")
# The start of `score_error` for a reward that returned inf or NaN.
NON_FINITE_KIND = "NonFiniteScore"


@dataclass
class RewardResult:
    """The verdict on one response.

    score: the reward (float); acc: counted as a pass; pred: the extracted answer (None when none
    was found); status: one of SCORE_STATUSES; extra: reward-specific columns (how the answer was
    found, the fraction of tests passed, the first failing test's reason, ...); answer_class: the
    answer's equivalence class for majority voting (equivalent answers such as `1/2` and `0.5` share
    one), None when answers cannot be compared.
    """

    score: float
    acc: bool
    pred: str | None
    status: ScoreStatus = "ok"
    extra: dict[str, Any] = field(default_factory=dict)
    answer_class: str | None = None


def generation_failed(value: Any) -> bool:
    """The `error` column of a rollout row: null on success, a kind and message otherwise."""
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return not (isinstance(value, str | dict | list) and len(value) == 0)
