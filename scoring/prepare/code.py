"""Code datasets → a question and tests in a form `score --reward-fn code` reads, plus the
reference solution when the dataset has one, so that items whose own solution fails are dropped.

Ground truth is always JSON text (as verl's PRIME code data stores it), so code rows of different
formats share one column type:
  HumanEval                      {"test": "def check(candidate): ...", "entry_point": "f"}
  MBPP                           {"test_list": [...], "test_setup_code": "..."}
  APPS / TACO                    {"inputs": [...], "outputs": [...]} (+ "fn_name" for call-based)
  CodeContests                   {"inputs": [...], "outputs": [...]} from public + private tests
  LiveCodeBench                  stdin tests as above; functional tests with "fn_name", each input
                                 the JSON values of the arguments, one per line
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from scoring.journal import VerdictJournal
from scoring.prepare.kinds import ConvertOptions, Item, Unextractable, first
from scoring.rewards.base import RewardOptions
from scoring.types import RewardResult
from scoring.workers import WorkerPool, WorkItem

PYTHON3 = 3  # CodeContests' language id for Python 3


def fenced(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


def _json(value: Any) -> Any:
    """A field stored as JSON text (APPS, TACO, LiveCodeBench) or already decoded."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise Unextractable(f"test field is not valid JSON ({exc})") from exc
    return value


def _humaneval(row: dict[str, Any]) -> Item:
    stub = str(row["prompt"])
    return Item(
        question=f"Complete the following Python function.\n\n{fenced(stub)}",
        ground_truth=json.dumps({"test": row["test"], "entry_point": row["entry_point"]}),
        extra={"entry_point": str(row["entry_point"])},
        reference_solution=fenced(stub + str(row.get("canonical_solution") or "")),
    )


def _mbpp(row: dict[str, Any]) -> Item:
    tests = [str(t) for t in row["test_list"]]
    text = str(first(row, "text", "prompt"))
    question = f"{text}\nYour code should pass these tests:\n\n" + "\n".join(tests)
    ground_truth = {"test_list": tests, "test_setup_code": str(row.get("test_setup_code") or "")}
    return Item(
        question=question,
        ground_truth=json.dumps(ground_truth),
        reference_solution=fenced(str(row["code"])) if row.get("code") else None,
    )


def _starter(question: str, starter_code: Any) -> str:
    if starter_code and str(starter_code).strip():
        return f"{question}\n\nStart from this code:\n{fenced(str(starter_code))}"
    return question


def _apps(row: dict[str, Any]) -> Item:
    tests = _json(row["input_output"])
    if not isinstance(tests, dict) or not tests.get("inputs"):
        raise Unextractable("input_output holds no tests")
    ground_truth = {"inputs": tests["inputs"], "outputs": tests["outputs"]}
    if tests.get("fn_name"):
        ground_truth["fn_name"] = tests["fn_name"]
    solutions = _json(row.get("solutions") or "[]")
    return Item(
        question=_starter(str(row["question"]), row.get("starter_code")),
        ground_truth=json.dumps(ground_truth),
        reference_solution=fenced(solutions[0]) if solutions else None,
    )


def _code_contests(row: dict[str, Any]) -> Item:
    inputs: list[str] = []
    outputs: list[str] = []
    for key in ("public_tests", "private_tests"):
        tests = row.get(key) or {}
        inputs += [str(i) for i in tests.get("input") or []]
        outputs += [str(o) for o in tests.get("output") or []]
    if not inputs:
        raise Unextractable("no public or private tests")
    solutions = row.get("solutions") or {}
    python = [
        code for lang, code in zip(solutions.get("language") or [], solutions.get("solution") or [],
                                   strict=False)
        if lang == PYTHON3
    ]
    return Item(
        question=str(row["description"]),
        ground_truth=json.dumps({"inputs": inputs, "outputs": outputs}),
        reference_solution=fenced(python[0]) if python else None,
    )


def _livecodebench(row: dict[str, Any]) -> Item:
    cases = list(_json(row["public_test_cases"]) or [])
    private = row.get("private_test_cases")
    if isinstance(private, str) and private.lstrip().startswith("["):
        cases += _json(private)
    if not cases:
        raise Unextractable("no test cases")
    ground_truth: dict[str, Any] = {
        "inputs": [case["input"] for case in cases],
        "outputs": [case["output"] for case in cases],
    }
    if any(case.get("testtype") == "functional" for case in cases):
        metadata = _json(row.get("metadata") or "{}")
        if not metadata.get("func_name"):
            raise Unextractable("functional tests without metadata.func_name")
        ground_truth["fn_name"] = metadata["func_name"]
        ground_truth["inputs"] = [
            [json.loads(line) for line in str(text).splitlines() if line.strip()]
            for text in ground_truth["inputs"]
        ]
        ground_truth["outputs"] = [json.loads(str(out)) for out in ground_truth["outputs"]]
    return Item(
        question=_starter(str(row["question_content"]), row.get("starter_code")),
        ground_truth=json.dumps(ground_truth),
        extra={"question_id": str(row.get("question_id") or "")},
    )


# (distinguishing columns, converter); the first whose columns are all present is used.
CODE_LAYOUTS: tuple[tuple[tuple[str, ...], Callable[[dict[str, Any]], Item]], ...] = (
    (("prompt", "test", "entry_point"), _humaneval),
    (("test_list", "code"), _mbpp),
    (("question", "input_output"), _apps),
    (("description", "public_tests"), _code_contests),
    (("question_content", "public_test_cases"), _livecodebench),
)


def convert_code(row: dict[str, Any], options: ConvertOptions) -> Item:
    for columns, convert in CODE_LAYOUTS:
        if all(c in row for c in columns):
            return convert(row)
    raise Unextractable("no known code-dataset layout")


def convert_custom_tests(row: dict[str, Any], options: ConvertOptions) -> Item:
    assert options.question_col and options.tests_col
    tests = row[options.tests_col]
    if tests is None or (isinstance(tests, (str, list)) and not tests):
        raise Unextractable(f"empty {options.tests_col!r}")
    return Item(
        question=str(row[options.question_col]),
        ground_truth=tests if isinstance(tests, str) else json.dumps(tests),
    )


# A reference solution gets this long for all of its tests together: one that never ends would
# otherwise cost each test's own limit (6 s x 30 tests: 3 minutes for one item).
CHECK_TIMEOUT_S = 60.0
PROGRESS_EVERY_S = 5.0
# Reference checks kept across an interrupted run: results and timeouts (the limit is in the key);
# a sandbox failure or an error is checked again.
KEPT_CHECKS = frozenset({"ok", "no_answer", "timeout"})


def reference_key(item: Item, timeout_s: float) -> str:
    """What a reference check's verdict depends on (its limit included): the journal's key."""
    text = json.dumps([item.reference_solution, item.ground_truth, dict(item.extra), timeout_s],
                      sort_keys=True, default=str)
    return "reference:" + hashlib.sha256(text.encode()).hexdigest()


def failing_references(
    items: list[tuple[int, Item]], *, workers: int, allow_unsandboxed: bool = False,
    timeout_s: float = CHECK_TIMEOUT_S, journal: VerdictJournal | None = None,
    echo: Callable[[str], None] | None = None,
) -> set[int]:
    """Indexes of items whose reference solution does not pass its own tests in the sandbox
    within `timeout_s` (all tests together; the worker and its sandbox are killed past it).

    Checks run in parallel worker processes; each verdict goes to `journal` as it comes back, so
    an interrupted run's checks are not run again by the next (`journal.load`)."""
    from scoring.code_reward import check_sandbox

    check_sandbox(allow_unsandboxed=allow_unsandboxed)
    checked = [(index, item) for index, item in items if item.reference_solution]
    keys = {index: reference_key(item, timeout_s) for index, item in checked}
    verdicts: dict[str, RewardResult] = journal.load() if journal is not None else {}
    todo = {
        keys[index]: WorkItem(keys[index], "code", item.reference_solution or "", item.ground_truth,
                              "codegen", dict(item.extra))
        for index, item in checked if keys[index] not in verdicts
    }
    kept = [verdicts[keys[index]] for index, _ in checked if keys[index] not in todo]
    progress = _CheckProgress(len(checked), kept, echo)

    def arrived(fresh: dict[str, RewardResult]) -> None:
        if journal is not None:
            journal.append(fresh)
        progress.add(fresh)

    if todo:
        options = RewardOptions(allow_unsandboxed=allow_unsandboxed)
        with WorkerPool(max(1, workers), timeout_s, options, max_batch=1) as pool:
            verdicts.update(pool.run(list(todo.values()), on_results=arrived))
    progress.finish()
    return {index for index, _ in checked if not verdicts[keys[index]].acc}


class _CheckProgress:
    """A line on stderr every PROGRESS_EVERY_S while reference solutions are checked."""

    def __init__(
        self, total: int, kept: list[RewardResult], echo: Callable[[str], None] | None
    ) -> None:
        self.total, self.done = total, len(kept)
        self.failed = sum(not verdict.acc for verdict in kept)
        self.echo = echo
        self.last = time.monotonic()
        self.shown = ""
        if echo is not None and total:
            resumed = f" ({len(kept)} kept from an interrupted run)" if kept else ""
            echo(f"checking {total} reference solution(s) in the sandbox{resumed}")

    def add(self, fresh: dict[str, RewardResult]) -> None:
        self.done += len(fresh)
        self.failed += sum(not verdict.acc for verdict in fresh.values())
        if time.monotonic() - self.last >= PROGRESS_EVERY_S:
            self.last = time.monotonic()
            self._show()

    def finish(self) -> None:
        if self.total:
            self._show()

    def _show(self) -> None:
        line = f"checked {self.done}/{self.total} reference solution(s), {self.failed} failed"
        if self.echo is not None and line != self.shown:
            self.shown = line
            self.echo(line)
