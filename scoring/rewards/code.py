"""Code: the whole response goes to `scoring.code_reward.score_code`, which runs the tests in the
sandbox. Imported lazily: only runs that score code need the sandbox."""

from __future__ import annotations

import hashlib
import importlib
import inspect
from typing import Any

from rollouts.errors import UserInputError
from scoring.rewards.base import RewardOptions
from scoring.rewards.extract import Extraction
from scoring.types import RewardResult

CODE_MODULES = ("scoring.code_reward", "scoring.sandbox")


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise UserInputError(
            f"code reward unavailable: cannot import {name} ({exc}); score code rows elsewhere"
        ) from exc


def code_version() -> str:
    """Verdicts change when the code checker or its sandbox does: hash their sources."""
    digest = hashlib.sha256()
    for name in CODE_MODULES:
        digest.update(inspect.getsource(_import(name)).encode())
    return "1+" + digest.hexdigest()[:10]


def check_sandbox(options: RewardOptions) -> None:
    """Fails with the reason when code cannot be run safely (and unsandboxed is not allowed)."""
    _import("scoring.code_reward").check_sandbox(allow_unsandboxed=options.allow_unsandboxed)


class CodeReward:
    """All tests must pass for 1.0; the fraction passed is one of the checker's extra columns."""

    name = "code"
    uses_context = True
    needs_sandbox = True  # the run checks up front that the sandbox can start

    def __init__(self, options: RewardOptions) -> None:
        self.options = options
        self.version = code_version()

    def extract(self, response: str) -> Extraction:
        return Extraction(response, "response")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        score_code = _import("scoring.code_reward").score_code
        result: RewardResult = score_code(
            answer, ground_truth, extra_info, allow_unsandboxed=self.options.allow_unsandboxed
        )
        return result
