"""GURU's code reward (Reasoning360 `coder1`): `codegen__*` data sources (mbpp, humaneval,
leetcode2k, livecodebench, primeintellect, taco), run in our bubblewrap sandbox.

The program: every fenced block (```lang or ```, each line after the fence up to a line before
the closing fence) after the first `</think>` (the whole reply when there is none), joined with
newlines and stripped. No block: 0.0. The gold is JSON:
  {"functional": TESTS}       the program, then TESTS (asserts), run as one script; extra_info
                              `prefix` (imports, class stubs) goes before the program, twice
                              over, as coder1 does
  {"inputs": [...], "outputs": [...]}   the program run once per input on stdin; each run must
                              exit 0 and print the expected output, compared line by line and
                              token by token: numbers within 1e-6, yes/no in any case
                              (coder1_compare); the runs of one row share one sandbox
A run has coder1's 30 seconds. coder1's `pytest` and `solution_file` golds (used by none of
GURU's sets) are an error row here. 1.0 when everything passes, else 0.0; the first failure is kept.

Golds in other forms (our `prepare`'s assert lists, HumanEval `check` functions, ...) are judged
by our own `code` checker, as `--reward-fn code` would; GURU itself rejects them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from scoring.rewards.base import RewardOptions, binary
from scoring.rewards.code import code_version
from scoring.rewards.extract import Extraction
from scoring.rewards.guru.run_python import Outcome, run_program, run_stdio_tests
from scoring.sandbox import SandboxLimits
from scoring.types import RewardResult

RUN_SECONDS = 30.0
# coder1's limits (30 s, 10 GB of address space); an output may reach 256 MiB.
LIMITS = SandboxLimits(wall_s=RUN_SECONDS, cpu_s=int(RUN_SECONDS), memory_mb=10240, max_procs=64,
                       file_size_mb=256, tmp_size_mb=512)
_FENCED = re.compile(r"```(?:\w+)?\n(.*?)\n```", re.DOTALL)
_AFTER_THINK = re.compile(r"</think>(.*)", re.DOTALL)


def program_of(reply: str) -> str:
    """coder1's program: the fenced blocks after the first `</think>`, joined."""
    match = _AFTER_THINK.search(reply)
    text = match.group(1).strip() if match else reply
    return "\n".join(_FENCED.findall(text)).strip()


def coder1_gold(ground_truth: Any) -> dict[str, Any] | None:
    """The gold as coder1 reads it, or None when it is in another form."""
    gold = ground_truth
    if isinstance(gold, str):
        try:
            gold = json.loads(gold)
        except ValueError:
            return None
    if not isinstance(gold, dict):
        return None
    if any(key in gold for key in ("functional", "solution_file", "pytest")):
        return gold
    if "inputs" in gold and "outputs" in gold:
        return gold
    return None


class GuruCodeReward:
    """coder1's verdicts; other gold forms go to our `code` checker."""

    name = "guru_code"
    uses_context = True
    needs_sandbox = True

    def __init__(self, options: RewardOptions) -> None:
        self.options = options
        self.version = "1+" + code_version()

    def extract(self, response: str) -> Extraction:
        return Extraction(response, "response")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        gold = coder1_gold(ground_truth)
        if gold is None:
            from scoring.code_reward import score_code

            result: RewardResult = score_code(
                answer, ground_truth, extra_info, allow_unsandboxed=self.options.allow_unsandboxed
            )
            return result
        program = program_of(answer)
        if not program:
            return RewardResult(score=0.0, acc=False, pred=None, status="no_answer")
        outcome = self._run(program, gold, extra_info or {})
        if outcome.sandbox_failed:
            return RewardResult(score=0.0, acc=False, pred=program, status="sandbox_error",
                                extra={"score_error": outcome.reason})
        result = binary(outcome.ok, program, None)
        result.extra = {"first_failure": outcome.reason}
        return result

    def _run(self, program: str, gold: dict[str, Any], extra_info: dict[str, Any]) -> Outcome:
        allow = self.options.allow_unsandboxed
        if "functional" in gold:
            prefix = extra_info.get("prefix")
            if prefix is not None:
                program = f"{prefix}\n{prefix}\n{program}"
            return run_program(program + "\n" + str(gold["functional"]), "", LIMITS, allow)
        if "solution_file" in gold or "pytest" in gold:
            raise ValueError("coder1 pytest and solution_file golds are not supported")
        tests = [(str(stdin), str(expected))
                 for stdin, expected in zip(gold["inputs"], gold["outputs"], strict=False)]
        return run_stdio_tests(program, tests, RUN_SECONDS, LIMITS, allow)
