"""Code rewards: extract the program from a response, run it against tests in the sandbox.

Ground truth forms (see `parse_tests`):
  - verl/PRIME JSON, a dict or its JSON string: {"inputs": [...], "outputs": [...], "fn_name": f}.
    With fn_name, each input is the JSON list of arguments of f (a method of class Solution also
    works) and the return value is compared to the output; without it, inputs/outputs are stdin and
    expected stdout of the whole program.
  - stdin/stdout pairs: [{"input": "...", "output": "..."}, ...].
  - assert strings (MBPP/HumanEval style): ["assert f(1) == 2", ...], run after the program; also a
    dict {"test_list": [...], "test_setup_code": "..."}; and HumanEval's `def check(candidate)` code
    (a string, or {"test": ..., "entry_point": ...}) with the entry point from extra_info.

A test passes only on its output: stdout compared token by token (whitespace-normalised, floats
within extra_info["float_tolerance"] when given), a return value compared outside the sandbox, or a
pass marker the harness prints after the test's asserts ran. Markers carry a random nonce that the
harness reads from a stdin pipe before the program is loaded, so a program that exits early or
prints look-alike lines produces no passes; comparisons in asserts are made by the harness on
built-in values only, so objects that claim equality with anything fail.

Limit of the assert form: the program runs in the harness's own interpreter, so code that inspects
that interpreter (stack frames, gc) can find the nonce and forge passes. Stdin/stdout and fn_name
tests do not have this weakness: their expected outputs never enter the sandbox.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import secrets
import sys
from dataclasses import dataclass, replace
from typing import Any

from rollouts.errors import UserInputError
from scoring import sandbox
from scoring.sandbox import Backend, RunResult, SandboxLimits, SandboxUnavailable
from scoring.types import RewardResult, ScoreStatus

DEFAULT_LIMITS = SandboxLimits(wall_s=6.0, cpu_s=6, memory_mb=1024, max_procs=32)
# A run of function/assert tests that dies inside a test is restarted after it this many times.
MAX_RESTARTS = 3
_WARNED_ENV = "ROLLOUTS_UNSANDBOXED_WARNED"
_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_SHOWN = 120


# ------------------------------------------------------------------------------ code extraction


def extract_code(text: str) -> str | None:
    """The last ```python block, else the last fenced block, else the raw text (None if empty)."""
    blocks = _FENCE.findall(text or "")
    python_blocks = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3")]
    chosen = python_blocks[-1] if python_blocks else (blocks[-1][1] if blocks else text or "")
    return chosen if chosen.strip() else None


# -------------------------------------------------------------------------------- test suites


@dataclass(frozen=True)
class StdioTests:
    inputs: list[str]
    outputs: list[str]


@dataclass(frozen=True)
class FunctionTests:
    fn_name: str
    inputs: list[list[Any]]
    outputs: list[Any]


@dataclass(frozen=True)
class AssertTests:
    asserts: list[str]
    setup: str = ""  # runs before the program (MBPP test_setup_code)
    after: str = ""  # runs after the program (HumanEval's `def check(candidate)`)


TestSuite = StdioTests | FunctionTests | AssertTests


def parse_tests(ground_truth: Any, extra_info: dict[str, Any] | None = None) -> TestSuite:
    """Read any supported ground-truth form; ValueError names what is wrong with it."""
    suite = _parse_any(ground_truth, extra_info or {})
    if isinstance(suite, AssertTests):
        _judged_sources(suite)
    return suite


def _plain_data(value: Any) -> Any:
    """Arrays and containers read from Parquet (numpy) as plain lists and dicts."""
    if isinstance(value, dict):
        return {k: _plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_data(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain_data(value.tolist())
    return value


def _parse_any(ground_truth: Any, extra_info: dict[str, Any]) -> TestSuite:
    ground_truth = _plain_data(ground_truth)
    if isinstance(ground_truth, bytes):
        ground_truth = ground_truth.decode()
    if isinstance(ground_truth, str):
        return _parse_string(ground_truth, extra_info)
    if isinstance(ground_truth, dict):
        return _parse_dict(ground_truth, extra_info)
    if isinstance(ground_truth, list):
        return _parse_list(ground_truth, extra_info)
    raise ValueError(f"unsupported ground truth type {type(ground_truth).__name__}")


def _parse_string(text: str, extra_info: dict[str, Any]) -> TestSuite:
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if isinstance(decoded, (dict, list)):
        return _parse_any(decoded, extra_info)
    if "def check(" in text:
        return _check_suite(text, extra_info.get("entry_point"))
    asserts = _split_asserts(text)
    if not asserts:
        raise ValueError("ground truth string is neither JSON, check() code nor asserts")
    return AssertTests(asserts, setup=str(extra_info.get("test_setup_code") or ""))


def _split_asserts(text: str) -> list[str]:
    """One test per top-level `assert` statement (continuation lines stay with it)."""
    tests: list[str] = []
    for line in text.splitlines():
        if line.startswith("assert"):
            tests.append(line)
        elif tests and line.strip():
            tests[-1] += "\n" + line
    return tests


def _check_suite(check_code: str, entry_point: Any) -> AssertTests:
    if not entry_point or not isinstance(entry_point, str):
        raise ValueError("check(candidate) tests need extra_info['entry_point']")
    return AssertTests([f"check({entry_point})"], after=check_code)


def _parse_dict(gt: dict[str, Any], extra_info: dict[str, Any]) -> TestSuite:
    if "inputs" in gt and "outputs" in gt:
        inputs, outputs = list(gt["inputs"]), list(gt["outputs"])
        if len(inputs) != len(outputs) or not inputs:
            raise ValueError(f"{len(inputs)} inputs for {len(outputs)} outputs")
        if gt.get("fn_name"):
            return FunctionTests(str(gt["fn_name"]), [_as_args(i) for i in inputs],
                                 [_as_output(i, o) for i, o in zip(inputs, outputs, strict=True)])
        return StdioTests([_as_text(i) for i in inputs], [_as_text(o) for o in outputs])
    if "test_list" in gt:
        setup = gt.get("test_setup_code") or extra_info.get("test_setup_code") or ""
        return AssertTests([str(t) for t in gt["test_list"]], setup=str(setup))
    if "test" in gt:
        return _check_suite(str(gt["test"]), gt.get("entry_point") or extra_info.get("entry_point"))
    raise ValueError(f"ground truth dict has none of inputs/outputs, test_list, test: {sorted(gt)}")


def _parse_list(items: list[Any], extra_info: dict[str, Any]) -> TestSuite:
    if not items:
        raise ValueError("ground truth is an empty list of tests")
    if all(isinstance(t, str) for t in items):
        return AssertTests(items, setup=str(extra_info.get("test_setup_code") or ""))
    if all(isinstance(t, dict) and "input" in t and "output" in t for t in items):
        return StdioTests([_as_text(t["input"]) for t in items],
                          [_as_text(t["output"]) for t in items])
    raise ValueError("a ground-truth list must hold assert strings or {input, output} dicts")


def _as_text(value: Any) -> str:
    """stdin/stdout given as a string, or as a list of lines; null is empty."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "\n".join(str(v) for v in value) + "\n"
    return str(value)


def _as_args(value: Any) -> list[Any]:
    """A list is the arguments; a string is verl/PRIME's form: one JSON value per line, one line
    per argument (`"[1, 2, 3]"` is one list argument, `"[1, 2]\n3"` two arguments)."""
    if isinstance(value, str):
        return [_json_or_text(line) for line in value.splitlines() if line.strip()]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _as_output(test_input: Any, output: Any) -> Any:
    """In the string (PRIME) form the expected return value is JSON text too."""
    return _json_or_text(output) if isinstance(test_input, str) and isinstance(output, str) else output


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# ------------------------------------------------------------------------------ output checks


def outputs_match(got: str, expected: str, tolerance: float | None = None) -> bool:
    """Whitespace-normalised token comparison; numeric tokens within `tolerance` when given."""
    got_tokens, expected_tokens = got.split(), expected.split()
    if got_tokens == expected_tokens:
        return True
    if tolerance is None or len(got_tokens) != len(expected_tokens):
        return False
    return all(g == e or _floats_close(g, e, tolerance) for g, e in zip(got_tokens, expected_tokens, strict=True))


def _floats_close(got: str, expected: str, tolerance: float) -> bool:
    try:
        return math.isclose(float(got), float(expected), rel_tol=tolerance, abs_tol=tolerance)
    except ValueError:
        return False


def values_match(got: Any, expected: Any, tolerance: float | None = None) -> bool:
    """Return value vs expected output; a one-element list also matches its element (APPS)."""
    if _equal(got, expected, tolerance):
        return True
    return isinstance(expected, list) and len(expected) == 1 and _equal(got, expected[0], tolerance)


def _equal(got: Any, expected: Any, tolerance: float | None) -> bool:
    if got == expected:
        return True
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(
            _equal(g, e, tolerance) for g, e in zip(got, expected, strict=True))
    numbers = (int, float)
    if (tolerance is not None and isinstance(got, numbers) and isinstance(expected, numbers)
            and not isinstance(got, bool) and not isinstance(expected, bool)):
        return math.isclose(got, expected, rel_tol=tolerance, abs_tol=tolerance)
    return False


# ------------------------------------------------------------------------------------ outcomes


@dataclass(frozen=True)
class TestOutcome:
    passed: bool
    reason: str = ""
    timed_out: bool = False
    sandbox_failed: bool = False


_PASS = TestOutcome(True)


def _from_run(run: RunResult, limits: SandboxLimits, context: str) -> TestOutcome:
    reason = run.failure_reason(limits) or "exited before finishing"
    return TestOutcome(False, f"{context}: {reason}", timed_out=run.timed_out,
                       sandbox_failed=run.sandbox_failed)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


# ---------------------------------------------------------------------------- stdin/stdout runs


# What verl's prime_code puts before every program: solutions may use these without importing them.
USUAL_IMPORTS = (
    "from typing import *\n"
    "import bisect, collections, copy, datetime, functools, heapq, itertools, math, operator, "
    "random, re, string, sys\n"
    "from collections import Counter, OrderedDict, defaultdict, deque\n"
    "from functools import lru_cache, reduce\n"
    "from heapq import heapify, heappop, heappush\n"
    "from bisect import bisect_left, bisect_right\n"
    "from itertools import accumulate, combinations, permutations, product\n"
    "from math import ceil, floor, gcd, inf, log, sqrt\n"
)


def with_usual_imports(code: str) -> str:
    """The program with USUAL_IMPORTS first (after any `from __future__` lines, which must lead)."""
    lines = code.splitlines(keepends=True)
    future = 0
    while future < len(lines) and lines[future].startswith("from __future__"):
        future += 1
    return "".join(lines[:future]) + USUAL_IMPORTS + "".join(lines[future:])


def run_stdio_tests(backend: Backend, code: str, suite: StdioTests, limits: SandboxLimits,
                    tolerance: float | None) -> list[TestOutcome]:
    """Each test in a fresh sandbox: the program with the test's stdin, stdout compared here."""
    code = with_usual_imports(code)
    outcomes = []
    for index, (stdin, expected) in enumerate(zip(suite.inputs, suite.outputs, strict=True)):
        run = sandbox.execute(backend, {"solution.py": code}, "solution.py",
                              stdin=stdin.encode(), limits=limits)
        if run.failure_reason(limits):
            outcomes.append(_from_run(run, limits, f"test {index}"))
            continue
        got = run.stdout.decode("utf-8", "replace")
        if outputs_match(got, expected, tolerance):
            outcomes.append(_PASS)
        else:
            outcomes.append(TestOutcome(False, f"test {index}: wrong answer: expected "
                                               f"{_short(expected.strip())}, got {_short(got.strip())}"))
    return outcomes


# ------------------------------------------------------------------- function and assert runs

# Runs inside the sandbox. Protocol on a private copy of stdout (the program's own prints go to
# stderr): "<nonce> B i" before test i, then "P i" (passed), "R i <json>" (return value), or
# "F i <json reason>"; "L - <json reason>" when the program fails to load; "D -" at the end.
# Everything the harness uses after the program is loaded is bound to locals first, so a program
# that patches builtins, os or json cannot turn a failure into a pass.
# Assert tests arrive rewritten (see judge_comparisons): each comparison yields
# (op, left, right) and the harness compares only built-in values, so an object whose __eq__
# always returns True does not pass.
HARNESS = r'''
import collections, json, operator, os, sys, types

def _main():
    write, exec_, compile_, isinstance_, type_, len_ = os.write, exec, compile, isinstance, type, len
    range_, str_, repr_, callable_, getattr_, hasattr_ = range, str, repr, callable, getattr, hasattr
    dumps, generator, stop_iteration, base_exc = json.dumps, types.GeneratorType, StopIteration, BaseException
    assertion, frozenset_, dict_, list_, tuple_, set_ = AssertionError, frozenset, dict, list, tuple, set
    scalars = frozenset_([int, float, complex, bool, str, bytes, type_(None)])
    # Standard dict types compare equal to plain dicts; compare them as plain dicts.
    mappings = frozenset_([dict, collections.OrderedDict, collections.defaultdict, collections.Counter])
    ops = {"Eq": operator.eq, "NotEq": operator.ne, "Lt": operator.lt, "LtE": operator.le,
           "Gt": operator.gt, "GtE": operator.ge, "In": lambda a, b: a in b,
           "NotIn": lambda a, b: a not in b}

    def describe(exc):
        try:
            text = str_(exc)
        except base_exc:
            text = ""
        return (type_(exc).__name__ + (": " + text if text else ""))[:300]

    def plain(value):
        """The value rebuilt from built-in types only; anything else cannot be compared."""
        kind = type_(value)
        if kind in scalars:
            return value
        if kind is list_ or kind is tuple_:
            return kind([plain(v) for v in value])
        if kind is set_ or kind is frozenset_:
            return kind(plain(v) for v in value)
        if kind in mappings:
            return {plain(k): plain(v) for k, v in dict_.items(value)}
        if hasattr_(kind, "tolist"):  # numpy arrays and scalars
            return plain(value.tolist())
        raise assertion("a test compares a %s object; only built-in values are compared" % kind.__name__)

    def drive(result):
        while isinstance_(result, generator) and result.gi_code.co_filename == "<tests>":
            reply = None
            try:
                while True:
                    op, left, right = result.send(reply)
                    reply = ops[op](plain(left), plain(right))
            except stop_iteration as stop:
                result = stop.value

    # The nonce comes on stdin, a seekable file: read it unbuffered, then put /dev/null in its
    # place so the program cannot seek back to it.
    nonce = os.read(0, 256).decode().strip()
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "job.json")) as f:
        job = json.load(f)
    with open(os.path.join(here, "solution.py")) as f:
        solution = f.read()
    out = os.dup(1)
    os.dup2(2, 1)
    tests, start, mode = job["tests"], job["start"], job["mode"]

    def mark(kind, index, payload=""):
        write(out, ("%s %s %s %s\n" % (nonce, kind, index, payload)).encode())

    namespace = {"__name__": "solution"}
    try:
        for name, source in (("<imports>", job["imports"]), ("<setup>", job["setup"]),
                             ("solution.py", solution),
                             ("<tests>", job["after"])):
            exec_(compile_(source, name, "exec"), namespace)
        target = None
        if mode == "function":
            target = namespace.get(job["fn_name"])
            if target is None and isinstance_(namespace.get("Solution"), type_):
                target = getattr_(namespace["Solution"](), job["fn_name"], None)
            if not callable_(target):
                mark("L", "-", dumps("function %s is not defined" % job["fn_name"]))
                return
    except base_exc as exc:
        mark("L", "-", dumps("program failed to load: " + describe(exc)))
        return
    for index in range_(start, len_(tests)):
        test = tests[index]
        mark("B", index)
        try:
            if mode == "function":
                value = target(*test)
                try:
                    encoded = dumps(value)
                except base_exc:
                    encoded = dumps({"unserialisable": repr_(value)[:200]})
                mark("R", index, encoded)
            else:
                exec_(compile_(test, "<tests>", "exec"), namespace)
                drive(namespace["__rollouts_test__"]())
                mark("P", index)
        except assertion as exc:
            mark("F", index, dumps("assertion failed" + (": " + describe(exc) if str_(exc) else "")))
        except base_exc as exc:
            mark("F", index, dumps(describe(exc)))
    mark("D", "-")

_main()
'''

TEST_FUNCTION = "__rollouts_test__"
_JUDGED_OPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn)


class _YieldComparisons(ast.NodeTransformer):
    """`a OP b` becomes `(yield ("OP", a, b))`; the harness sends back the honest result."""

    def visit_Compare(self, node: ast.Compare) -> ast.expr:
        self.generic_visit(node)
        if len(node.ops) != 1 or not isinstance(node.ops[0], _JUDGED_OPS):
            return node
        request = ast.Tuple([ast.Constant(type(node.ops[0]).__name__), node.left,
                             node.comparators[0]], ast.Load())
        return ast.Yield(request)

    # `yield` is not allowed in these scopes: their comparisons stay as written.
    def visit_Lambda(self, node: ast.Lambda) -> ast.expr:
        return node

    def visit_ListComp(self, node: ast.ListComp) -> ast.expr:
        return node

    def visit_SetComp(self, node: ast.SetComp) -> ast.expr:
        return node

    def visit_DictComp(self, node: ast.DictComp) -> ast.expr:
        return node

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> ast.expr:
        return node


class _JudgeAsserts(ast.NodeTransformer):
    """Rewrites the comparisons of assert statements, not entering nested functions or classes."""

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        node.test = _YieldComparisons().visit(node.test)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.stmt:
        return node

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.stmt:
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.stmt:
        return node


def judged_test(source: str) -> str:
    """One test statement as `def __rollouts_test__()` whose assert comparisons the harness judges.

    A lone expression is returned (so `check(f)` hands back check's generator); names the test
    assigns stay module globals, as when the statement ran at top level.
    """
    body = ast.parse(source).body
    if len(body) == 1 and isinstance(body[0], ast.Expr):
        body = [ast.Return(body[0].value)]
    assigned = sorted({node.id for stmt in body for node in ast.walk(stmt)
                       if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)})
    function = ast.parse(f"def {TEST_FUNCTION}():\n    pass\n").body[0]
    assert isinstance(function, ast.FunctionDef)
    judged = [_JudgeAsserts().visit(stmt) for stmt in body]
    function.body = ([ast.Global(assigned)] if assigned else []) + (judged or [ast.Pass()])
    return ast.unparse(ast.fix_missing_locations(ast.Module([function], type_ignores=[])))


def judged_check(source: str) -> str:
    """HumanEval's check code with the asserts directly in `def check` judged by the harness."""
    if not source.strip():
        return source
    module = ast.parse(source)
    for node in module.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check":
            node.body = [_JudgeAsserts().visit(stmt) for stmt in node.body]
    return ast.unparse(ast.fix_missing_locations(module))


def _judged_sources(suite: AssertTests) -> tuple[list[str], str]:
    try:
        return [judged_test(t) for t in suite.asserts], judged_check(suite.after)
    except SyntaxError as exc:
        raise ValueError(f"test code does not parse: {exc.msg} (line {exc.lineno})") from exc



@dataclass(frozen=True)
class _Marker:
    kind: str
    index: int
    payload: str


def parse_markers(stdout: bytes, nonce: str) -> list[_Marker]:
    """Harness lines carrying this run's nonce, in order; anything else is ignored."""
    pattern = re.compile(rf"^{re.escape(nonce)} ([BPRFLD]) (-|\d+) ?(.*)$")
    markers = []
    for line in stdout.decode("utf-8", "replace").splitlines():
        found = pattern.match(line)
        if found:
            index = -1 if found.group(2) == "-" else int(found.group(2))
            markers.append(_Marker(found.group(1), index, found.group(3)))
    return markers


def run_harness_tests(backend: Backend, code: str, suite: FunctionTests | AssertTests,
                      limits: SandboxLimits, tolerance: float | None) -> list[TestOutcome]:
    """All tests in one sandboxed harness; a run dying inside test i restarts after i."""
    total = len(suite.inputs) if isinstance(suite, FunctionTests) else len(suite.asserts)
    outcomes: list[TestOutcome | None] = [None] * total
    start, restarts = 0, 0
    while start < total:
        run, markers = _harness_run(backend, code, suite, start, limits)
        loaded = _apply_markers(markers, suite, outcomes, tolerance)
        pending = [i for i in range(start, total) if outcomes[i] is None]
        begun = [m.index for m in markers
                 if m.kind == "B" and 0 <= m.index < total and outcomes[m.index] is None]
        if not pending:
            break
        if loaded is not None or not begun or restarts >= MAX_RESTARTS:
            if loaded is not None:
                failure = TestOutcome(False, loaded)
            elif not begun:
                failure = _from_run(run, limits, "before the tests ran")
            else:
                failure = TestOutcome(False, f"not run: {MAX_RESTARTS} runs died in earlier tests")
            for i in pending:
                outcomes[i] = failure
            break
        outcomes[begun[-1]] = _from_run(run, limits, f"test {begun[-1]}")
        start, restarts = begun[-1] + 1, restarts + 1
    return [o if o is not None else TestOutcome(False, "no result") for o in outcomes]


def _harness_run(backend: Backend, code: str, suite: FunctionTests | AssertTests, start: int,
                 limits: SandboxLimits) -> tuple[RunResult, list[_Marker]]:
    nonce = secrets.token_hex(16)
    job: dict[str, Any]
    if isinstance(suite, FunctionTests):
        job = {"mode": "function", "fn_name": suite.fn_name, "tests": suite.inputs,
               "setup": "", "after": ""}
    else:
        tests, after = _judged_sources(suite)
        job = {"mode": "assert", "tests": tests, "setup": suite.setup, "after": after}
    job["start"] = start
    job["imports"] = USUAL_IMPORTS
    remaining = len(job["tests"]) - start
    # One process runs every remaining test: its CPU-time bound covers them all.
    run_limits = replace(limits, cpu_s=limits.cpu_s * remaining)
    run = sandbox.execute(backend, {"solution.py": code, "harness.py": HARNESS,
                                    "job.json": json.dumps(job)},
                          "harness.py", stdin=(nonce + "\n").encode(), limits=run_limits,
                          progress_marker=f"{nonce} B ".encode(),
                          max_wall_s=limits.wall_s * (remaining + 1))
    return run, parse_markers(run.stdout, nonce)


def _apply_markers(markers: list[_Marker], suite: FunctionTests | AssertTests,
                   outcomes: list[TestOutcome | None], tolerance: float | None) -> str | None:
    """Record each reported test; returns the load-failure reason if the program did not load."""
    for marker in markers:
        if marker.kind == "L":
            return str(_decode(marker.payload))
        if marker.kind not in "PRF" or not 0 <= marker.index < len(outcomes):
            continue
        index = marker.index
        if marker.kind == "P" and isinstance(suite, AssertTests):
            outcomes[index] = _PASS
        elif marker.kind == "F":
            outcomes[index] = TestOutcome(False, f"test {index}: {_decode(marker.payload)}")
        elif marker.kind == "R" and isinstance(suite, FunctionTests):
            outcomes[index] = _judge_value(index, _decode(marker.payload),
                                           suite.outputs[index], tolerance)
    return None


def _decode(payload: str) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return payload


def _judge_value(index: int, got: Any, expected: Any, tolerance: float | None) -> TestOutcome:
    if values_match(got, expected, tolerance):
        return _PASS
    return TestOutcome(False, f"test {index}: wrong answer: expected {_short(expected)}, "
                              f"got {_short(got)}")


# ------------------------------------------------------------------------------ sandbox choice


def check_sandbox(allow_unsandboxed: bool = False) -> None:
    """Fail fast when model code cannot be sandboxed here (the probe runs once per process)."""
    _resolve_backend(allow_unsandboxed)


def resolve_backend(allow_unsandboxed: bool) -> Backend:
    """The sandbox to run model code in; without one, the unsandboxed runner when allowed (with
    one loud warning), else a UserInputError saying how to get one."""
    return _resolve_backend(allow_unsandboxed)


def _resolve_backend(allow_unsandboxed: bool) -> Backend:
    try:
        return sandbox.probe()
    except SandboxUnavailable as exc:
        if not allow_unsandboxed:
            raise UserInputError(
                f"code rewards need a sandbox and it cannot start here ({exc}); install "
                "bubblewrap (apt-get install bubblewrap) or pass --allow-unsandboxed to run "
                "model-written code without isolation") from exc
        _warn_unsandboxed(str(exc))
        return sandbox.unsandboxed_backend()


def _warn_unsandboxed(reason: str) -> None:
    """One loud warning per run; worker processes inherit the flag through the environment."""
    if os.environ.get(_WARNED_ENV):
        return
    os.environ[_WARNED_ENV] = "1"
    bar = "!" * 78
    print(f"{bar}\nWARNING: --allow-unsandboxed: model-written code runs WITHOUT a sandbox\n"
          f"(only rlimits). It can read your files and secrets, use the network and kill your\n"
          f"processes. The sandbox is unavailable because: {reason}\n{bar}", file=sys.stderr)


# ---------------------------------------------------------------------------------- the reward


def limits_for(extra_info: dict[str, Any]) -> SandboxLimits:
    """Per-test bounds, from extra_info['time_limit_s'] / ['memory_limit_mb'] when present."""
    limits = DEFAULT_LIMITS
    if extra_info.get("time_limit_s"):
        seconds = float(extra_info["time_limit_s"])
        limits = replace(limits, wall_s=seconds, cpu_s=max(1, math.ceil(seconds)))
    if extra_info.get("memory_limit_mb"):
        limits = replace(limits, memory_mb=int(extra_info["memory_limit_mb"]))
    return limits


def score_code(solution_str: str, ground_truth: Any, extra_info: dict[str, Any] | None = None, *,
               allow_unsandboxed: bool = False) -> RewardResult:
    """Score 1.0 only if every test passed; the fraction passed and first failure in extras."""
    extra_info = extra_info or {}
    code = extract_code(solution_str)
    if code is None:
        return _verdict(None, [], "no_answer", "no code found in the response")
    try:
        suite = parse_tests(ground_truth, extra_info)
    except (ValueError, TypeError) as exc:
        return _verdict(code, [], "error", f"bad ground truth: {exc}")
    try:
        backend = _resolve_backend(allow_unsandboxed)
    except UserInputError as exc:
        return _verdict(code, [], "sandbox_error", str(exc))
    limits = limits_for(extra_info)
    tolerance = extra_info.get("float_tolerance")
    tolerance = float(tolerance) if tolerance is not None else None
    if isinstance(suite, StdioTests):
        outcomes = run_stdio_tests(backend, code, suite, limits, tolerance)
    else:
        outcomes = run_harness_tests(backend, code, suite, limits, tolerance)
    return _verdict(code, outcomes, _status(outcomes), None)


def _status(outcomes: list[TestOutcome]) -> ScoreStatus:
    if any(o.sandbox_failed for o in outcomes):
        return "sandbox_error"
    if any(o.timed_out for o in outcomes):
        return "timeout"
    return "ok"


def _verdict(code: str | None, outcomes: list[TestOutcome], status: ScoreStatus,
             reason: str | None) -> RewardResult:
    passed = sum(o.passed for o in outcomes)
    total = len(outcomes)
    acc = total > 0 and passed == total and status == "ok"
    first = reason or next((o.reason for o in outcomes if not o.passed), None)
    return RewardResult(score=1.0 if acc else 0.0, acc=acc, pred=code, status=status,
                        extra={"pass_fraction": passed / total if total else 0.0,
                               "tests_passed": passed, "tests_total": total,
                               "first_failure": first})
