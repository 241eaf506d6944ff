"""GURU's CRUXEval reward (Reasoning360 `cruxeval`): `simulation__cruxeval*` (-i and -o).

The gold is `{"functional": CODE}` (the function under test). The reply after the first
`</think>` (the whole reply without one) is cut to the first ```python block; the function and
that assertion are run together, `exec` in empty globals, within 3 seconds, in the sandbox. 1.0
when it runs without an exception, else 0.0. A reply with no ```python block is run as it is.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from scoring.rewards.base import RewardOptions, binary
from scoring.rewards.extract import Extraction
from scoring.rewards.guru.run_python import run_exec_check
from scoring.sandbox import SandboxLimits
from scoring.types import RewardResult

EXEC_SECONDS = 3.0
LIMITS = SandboxLimits(wall_s=EXEC_SECONDS + 3, cpu_s=int(EXEC_SECONDS) + 2, memory_mb=1024)


def assertion_of(reply: str) -> str:
    """The ```python block after the first `</think>`, as cruxeval cuts it."""
    text = reply
    if "</think>" in text:
        parts = re.split(r"</think>", text)
        text = parts[1]
    pieces = re.split(r"```python", text)
    if len(pieces) < 2:
        return text
    return re.split(r"```", pieces[1])[0]


def functional_of(ground_truth: Any) -> str:
    """The `functional` code of a gold: JSON text, a Python dict literal, or a dict."""
    if isinstance(ground_truth, dict):
        return str(ground_truth["functional"])
    text = str(ground_truth)
    try:
        gold = json.loads(text)
    except ValueError:
        gold = ast.literal_eval(text)
    return str(gold["functional"])


class GuruCruxevalReward:
    name = "guru_cruxeval"
    version = "1"
    uses_context = False
    needs_sandbox = True

    def __init__(self, options: RewardOptions) -> None:
        self.options = options

    def extract(self, response: str) -> Extraction:
        return Extraction(assertion_of(response), "code")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        program = functional_of(ground_truth) + "\n" + answer
        outcome = run_exec_check(program, EXEC_SECONDS, LIMITS, self.options.allow_unsandboxed)
        if outcome.sandbox_failed:
            return RewardResult(score=0.0, acc=False, pred=answer, status="sandbox_error",
                                extra={"score_error": outcome.reason})
        result = binary(outcome.ok, answer, None)
        result.extra = {"first_failure": outcome.reason}
        return result
