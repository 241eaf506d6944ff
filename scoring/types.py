"""The contract between the scorer and reward functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ScoreStatus = Literal["ok", "no_answer", "timeout", "error", "sandbox_error"]
SCORE_STATUSES: tuple[str, ...] = ("ok", "no_answer", "timeout", "error", "sandbox_error")


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
