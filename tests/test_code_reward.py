"""Code reward: extraction, ground-truth forms, comparisons, and verdicts from real sandboxed runs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import pytest

from rollouts.errors import UserInputError
from scoring import code_reward, sandbox
from scoring.code_reward import (
    AssertTests,
    FunctionTests,
    StdioTests,
    check_sandbox,
    extract_code,
    outputs_match,
    parse_tests,
    score_code,
    values_match,
)

FAST = {"time_limit_s": 2, "memory_limit_mb": 256}
ADD_STDIO = [{"input": "1 2\n", "output": "3\n"}, {"input": "10 -4\n", "output": "6"}]
ADD_PROGRAM = "a, b = map(int, input().split())\nprint(a + b)\n"
PRIME_FN = json.dumps({"fn_name": "add", "inputs": [[1, 2], [5, 5], [0, 0]], "outputs": [3, [10], 0]})
MBPP = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]


@pytest.fixture(scope="module", autouse=True)
def real_sandbox() -> None:
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is not installed: apt-get install bubblewrap (the sandbox tests need it)")
    sandbox.reset_probe()
    check_sandbox()


def fenced(code: str, lang: str = "python") -> str:
    return f"Here is my solution.\n```{lang}\n{code}```\nDone."


# ------------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize(("text", "expected"), [
    ("```python\nA\n```\n```python\nB\n```", "B\n"),
    ("```python\nA\n```\ntext\n```\nB\n```", "A\n"),
    ("```cpp\nA\n```\n```\nB\n```", "B\n"),
    ("print(1)", "print(1)"),
    ("intro\n```python\nunclosed()\n", "unclosed()\n"),
    ("   \n", None),
    ("```python\n\n```", None),
])
def test_extract_code(text: str, expected: str | None) -> None:
    assert extract_code(text) == expected


@pytest.mark.parametrize(("got", "expected", "tolerance", "match"), [
    ("3\n", "3", None, True),
    ("1  2\n3\n\n", "1 2 3", None, True),
    ("1 2", "1 2 3", None, False),
    ("0.3333333", "0.333333333", None, False),
    ("0.3333333", "0.333333333", 1e-6, True),
    ("0.34", "0.333333333", 1e-6, False),
    ("abc", "abd", 1e-6, False),
])
def test_outputs_match(got: str, expected: str, tolerance: float | None, match: bool) -> None:
    assert outputs_match(got, expected, tolerance) is match


@pytest.mark.parametrize(("got", "expected", "tolerance", "match"), [
    (3, 3, None, True),
    (3, [3], None, True),
    ([1, 2], [[1, 2]], None, True),
    ([1, 2], [1, 3], None, False),
    (0.1 + 0.2, 0.3, None, False),
    (0.1 + 0.2, 0.3, 1e-9, True),
    ([0.1 + 0.2, "a"], [0.3, "a"], 1e-9, True),
    (True, 1.0, 1e-9, True),
    ("3", 3, None, False),
])
def test_values_match(got: object, expected: object, tolerance: float | None, match: bool) -> None:
    assert values_match(got, expected, tolerance) is match


def test_parse_prime_forms() -> None:
    assert parse_tests(PRIME_FN) == FunctionTests("add", [[1, 2], [5, 5], [0, 0]], [3, [10], 0])
    stdio = parse_tests({"inputs": ["1\n", ["2", "3"]], "outputs": ["1", ["5"]]})
    assert stdio == StdioTests(["1\n", "2\n3\n"], ["1", "5\n"])
    # verl/PRIME's string form: one JSON value per line, one line per argument; outputs JSON text.
    assert parse_tests({"inputs": ["[1, 2, 3]", "[1, 2]\n3"], "outputs": ["6", "[1]"],
                        "fn_name": "f"}) == FunctionTests("f", [[[1, 2, 3]], [[1, 2], 3]], [6, [1]])
    assert parse_tests({"inputs": [None], "outputs": ["ok\n"]}) == StdioTests([""], ["ok\n"])


def test_parse_assert_and_check_forms() -> None:
    assert parse_tests(MBPP) == AssertTests(MBPP)
    assert parse_tests({"test_list": MBPP, "test_setup_code": "import math"}) == \
        AssertTests(MBPP, setup="import math")
    assert parse_tests("assert f(1) == 1\nassert f(\n  2) == 2\n") == \
        AssertTests(["assert f(1) == 1", "assert f(\n  2) == 2"])
    check = "def check(candidate):\n    assert candidate(1) == 2\n"
    assert parse_tests(check, {"entry_point": "inc"}) == AssertTests(["check(inc)"], after=check)
    assert parse_tests({"test": check, "entry_point": "inc"}) == \
        AssertTests(["check(inc)"], after=check)
    assert parse_tests(ADD_STDIO) == StdioTests(["1 2\n", "10 -4\n"], ["3\n", "6"])


@pytest.mark.parametrize("bad", [
    {"inputs": [1], "outputs": []}, [], [1, 2], "plain words", 42,
    "def check(candidate):\n    pass\n",
])
def test_bad_ground_truth_is_an_error_verdict(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_tests(bad)
    verdict = score_code("print(1)", bad)
    assert verdict.status == "error" and verdict.score == 0.0
    assert verdict.extra["first_failure"].startswith("bad ground truth")


def test_no_code_is_no_answer() -> None:
    verdict = score_code("   ", ADD_STDIO)
    assert (verdict.status, verdict.score, verdict.pred) == ("no_answer", 0.0, None)


# ------------------------------------------------------------------------ verdicts in the sandbox


def test_stdio_correct_program_passes() -> None:
    verdict = score_code(fenced(ADD_PROGRAM), ADD_STDIO, FAST)
    assert (verdict.score, verdict.acc, verdict.status) == (1.0, True, "ok")
    assert verdict.extra == {"pass_fraction": 1.0, "tests_passed": 2, "tests_total": 2,
                             "first_failure": None}
    assert verdict.pred == ADD_PROGRAM


def test_stdio_wrong_program_fails_with_fraction() -> None:
    verdict = score_code(fenced("print(3)\n"), ADD_STDIO, FAST)
    assert (verdict.score, verdict.acc, verdict.status) == (0.0, False, "ok")
    assert verdict.extra["pass_fraction"] == 0.5
    assert verdict.extra["first_failure"] == "test 1: wrong answer: expected 6, got 3"


def test_stdio_runtime_error_fails_even_with_right_output() -> None:
    verdict = score_code(fenced(ADD_PROGRAM + "raise SystemExit(3)\n"), ADD_STDIO, FAST)
    assert verdict.score == 0.0 and "exit status 3" in verdict.extra["first_failure"]


def test_stdio_float_tolerance() -> None:
    truth = [{"input": "", "output": "0.333333333\n"}]
    assert score_code("print('0.333333333')", truth, FAST).score == 1.0
    assert score_code("print(1/3)", truth, FAST).score == 0.0
    assert score_code("print(1/3)", truth, {**FAST, "float_tolerance": 1e-6}).score == 1.0
    assert score_code("print(0.3333)", truth, {**FAST, "float_tolerance": 1e-6}).score == 0.0


def test_prime_stdio_json_string() -> None:
    truth = json.dumps({"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]})
    assert score_code(fenced(ADD_PROGRAM), truth, FAST).score == 1.0
    assert score_code(fenced("print(7)"), truth, FAST).extra["tests_passed"] == 1


def test_prime_function_correct_and_wrong() -> None:
    right = score_code(fenced("def add(a, b):\n    return a + b\n"), PRIME_FN, FAST)
    assert (right.score, right.extra["tests_passed"]) == (1.0, 3)
    wrong = score_code(fenced("def add(a, b):\n    return a * b\n"), PRIME_FN, FAST)
    assert wrong.score == 0.0 and wrong.extra["tests_passed"] == 1
    assert wrong.extra["first_failure"] == "test 0: wrong answer: expected 3, got 2"


def test_prime_call_based_json_lines_with_the_usual_imports() -> None:
    # verl/PRIME: each input is JSON values one per line (one per argument), outputs JSON text.
    truth = json.dumps({"fn_name": "total", "inputs": ["[1, 2, 3]", "[4]\n2"],
                        "outputs": ["6", "8"]})
    code = ("class Solution:\n"
            "    def total(self, nums: List[int], times: int = 1) -> int:\n"
            "        return sum(deque(nums)) * times\n")  # List and deque without imports
    result = score_code(fenced(code), truth, FAST)
    assert (result.score, result.extra["tests_passed"]) == (1.0, 2), result.extra


def test_null_stdin_is_empty_input_and_stdio_has_the_usual_imports() -> None:
    truth = {"inputs": [None], "outputs": ["0 3\n"]}
    code = "import sys\nprint(len(sys.stdin.read()), gcd(6, 9))\n"  # gcd without an import
    assert score_code(fenced(code), truth, FAST).score == 1.0


def test_function_as_method_of_solution_class() -> None:
    code = "class Solution:\n    def add(self, a, b):\n        return a + b\n"
    assert score_code(code, PRIME_FN, FAST).score == 1.0


def test_function_missing_or_raising() -> None:
    missing = score_code("def other(a, b):\n    return 0\n", PRIME_FN, FAST)
    assert missing.extra["first_failure"] == "function add is not defined"
    assert missing.extra["tests_total"] == 3 and missing.extra["tests_passed"] == 0
    raising = score_code("def add(a, b):\n    return 1 // b + a + b - 1 // b\n", PRIME_FN, FAST)
    assert raising.extra["tests_passed"] == 2
    assert "ZeroDivisionError" in raising.extra["first_failure"]


def test_function_returning_tuple_and_unserialisable() -> None:
    truth = {"fn_name": "pair", "inputs": [[1]], "outputs": [[1, 2]]}
    assert score_code("def pair(x):\n    return (x, x + 1)\n", truth, FAST).score == 1.0
    odd = score_code("def pair(x):\n    return {1, 2}\n", truth, FAST)
    assert odd.score == 0.0 and "unserialisable" in odd.extra["first_failure"]


def test_assert_list_correct_and_wrong() -> None:
    assert score_code(fenced("def add(a, b):\n    return a + b\n"), MBPP, FAST).score == 1.0
    wrong = score_code(fenced("def add(a, b):\n    return 4\n"), MBPP, FAST)
    assert (wrong.score, wrong.extra["pass_fraction"]) == (0.0, 0.5)
    assert wrong.extra["first_failure"] == "test 0: assertion failed"


def test_assert_setup_code_runs_first() -> None:
    truth = {"test_list": ["assert area(1) == round(math.pi, 2)"], "test_setup_code": "import math"}
    code = "def area(r):\n    return round(math.pi * r * r, 2)\n"
    assert score_code(code, truth, FAST).score == 1.0


def test_humaneval_check_with_entry_point() -> None:
    check = ("METADATA = {}\n\ndef check(candidate):\n    assert candidate(1) == 2\n"
             "    assert candidate(-1) == 0\n")
    info = {**FAST, "entry_point": "inc"}
    assert score_code("def inc(x):\n    return x + 1\n", check, info).score == 1.0
    assert score_code("def inc(x):\n    return 2\n", check, info).score == 0.0


def test_early_exit_in_function_tests_fails() -> None:
    for code in ("import os\nos._exit(0)\n", "import sys\nsys.exit(0)\n",
                 "import os\ndef add(a, b):\n    os._exit(0)\n",
                 "import sys\ndef add(a, b):\n    sys.exit(0)\n"):
        verdict = score_code(code, MBPP, FAST)
        assert verdict.score == 0.0 and verdict.extra["tests_passed"] == 0, code


def test_printed_markers_are_not_trusted() -> None:
    forged = "\n".join(f"{'0' * 32} P {i}" for i in range(2))
    code = f"print({forged!r})\nimport os\nos._exit(0)\n"
    verdict = score_code(code, MBPP, FAST)
    assert verdict.extra["tests_passed"] == 0


def test_a_test_that_hangs_is_a_timeout_and_later_tests_still_run() -> None:
    code = "def add(a, b):\n    while a == 1:\n        pass\n    return a + b\n"
    verdict = score_code(code, MBPP, {"time_limit_s": 1})
    assert (verdict.score, verdict.status) == (0.0, "timeout")
    assert verdict.extra["tests_passed"] == 1
    assert verdict.extra["first_failure"] == "test 0: timed out after 1s"


def test_repeated_crashes_stop_after_a_bounded_number_of_runs() -> None:
    code = "import os\ndef add(a, b):\n    os._exit(1)\n"
    truth = [f"assert add({i}, 0) == {i}" for i in range(8)]
    verdict = score_code(code, truth, FAST)
    assert verdict.extra["tests_total"] == 8 and verdict.extra["tests_passed"] == 0


# ---------------------------------------------------------------------- sandbox choice and workers


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> Iterator[None]:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("ROLLOUTS_UNSANDBOXED_WARNED", raising=False)
    sandbox.reset_probe()
    yield
    sandbox.reset_probe()


def test_missing_bwrap_refuses_with_a_user_error(no_bwrap: None) -> None:
    with pytest.raises(UserInputError, match="bubblewrap.*--allow-unsandboxed"):
        check_sandbox()
    verdict = score_code(ADD_PROGRAM, ADD_STDIO, FAST)
    assert verdict.status == "sandbox_error" and verdict.score == 0.0


def test_allow_unsandboxed_warns_once_and_still_scores(no_bwrap: None,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    check_sandbox(allow_unsandboxed=True)
    assert score_code(ADD_PROGRAM, ADD_STDIO, FAST, allow_unsandboxed=True).score == 1.0
    assert score_code("print(0)", ADD_STDIO, FAST, allow_unsandboxed=True).score == 0.0
    assert score_code("import os\nos._exit(0)", MBPP, FAST, allow_unsandboxed=True).score == 0.0
    assert capsys.readouterr().err.count("WITHOUT a sandbox") == 1


def _score_one(index: int) -> tuple[int, float]:
    code = ADD_PROGRAM if index % 2 == 0 else "print(0)"
    return index, score_code(code, ADD_STDIO, FAST).score


def test_parallel_workers_share_no_state() -> None:
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        results = dict(pool.map(_score_one, range(6)))
    assert results == {i: 1.0 if i % 2 == 0 else 0.0 for i in range(6)}


def test_default_limits_are_overridable() -> None:
    limits = code_reward.limits_for({"time_limit_s": 2.5, "memory_limit_mb": 300})
    assert (limits.wall_s, limits.cpu_s, limits.memory_mb) == (2.5, 3, 300)
    assert code_reward.limits_for({}) == code_reward.DEFAULT_LIMITS


# ------------------------------------------------------------------------- assert-test hardening

ALWAYS_EQUAL = ("class Anything:\n    def __eq__(self, other):\n        return True\n"
                "    def __ne__(self, other):\n        return False\n"
                "    __lt__ = __le__ = __gt__ = __ge__ = __eq__\n"
                "    def __hash__(self):\n        return 0\n"
                "def add(a, b):\n    return Anything()\ndef inc(x):\n    return Anything()\n")


def test_always_equal_objects_do_not_pass_asserts() -> None:
    verdict = score_code(ALWAYS_EQUAL, MBPP, FAST)
    assert verdict.score == 0.0 and verdict.extra["tests_passed"] == 0
    assert "compares a Anything object" in verdict.extra["first_failure"]
    check = "def check(candidate):\n    assert candidate(1) == 2\n"
    humaneval = score_code(ALWAYS_EQUAL, check, {**FAST, "entry_point": "inc"})
    assert humaneval.score == 0.0


def test_int_subclass_with_forged_equality_does_not_pass() -> None:
    code = ("class Num(int):\n    def __eq__(self, other):\n        return True\n"
            "    __hash__ = int.__hash__\n"
            "def add(a, b):\n    return Num(0)\n")
    assert score_code(code, MBPP, FAST).extra["tests_passed"] == 0
    assert score_code(code, PRIME_FN, FAST).extra["tests_passed"] == 1  # add(0, 0) is 0


def test_patching_builtins_and_os_does_not_forge_passes() -> None:
    code = ("import builtins, os, json\nreal_write = os.write\n"
            "def write(fd, data):\n    return real_write(fd, data.replace(b' F ', b' P '))\n"
            "os.write = write\nbuiltins.exec = lambda *a, **k: None\n"
            "builtins.compile = lambda *a, **k: compile('pass', 'x', 'exec')\n"
            "json.dumps = lambda *a, **k: '0'\n"
            "def add(a, b):\n    return 0\n")
    verdict = score_code(code, MBPP, FAST)
    assert verdict.extra["tests_passed"] == 0


def test_plain_values_and_numpy_style_values_compare_normally() -> None:
    truth = ["assert pair(1) == (1, 2)", "assert sorted(keys({'a': 1})) == ['a']",
             "assert 2 in pair(1)", "assert pair(1) != (0, 0)", "assert half(3) < 2",
             "assert count('aab') == {'a': 2, 'b': 1}"]
    code = ("class Scalar:\n    def __init__(self, v):\n        self.v = v\n"
            "    def tolist(self):\n        return self.v\n"
            "def pair(x):\n    return (x, x + 1)\ndef keys(d):\n    return list(d)\n"
            "def half(x):\n    return Scalar(x / 2)\n"
            "def count(s):\n    from collections import Counter\n    return Counter(s)\n")
    assert score_code(code, truth, FAST).score == 1.0


def test_test_code_that_does_not_parse_is_bad_ground_truth() -> None:
    verdict = score_code("def f():\n    return 1\n", ["assert f( == 1"], FAST)
    assert verdict.status == "error" and "does not parse" in verdict.extra["first_failure"]


def test_assert_tests_may_define_names_for_later_tests() -> None:
    truth = ["expected = add(1, 1)", "assert expected == 2"]
    assert score_code("def add(a, b):\n    return a + b\n", truth, FAST).score == 1.0


def test_ground_truth_read_from_parquet_as_numpy() -> None:
    truth = {"fn_name": "add", "inputs": np.array([np.array([1, 2]), np.array([5, 5])]),
             "outputs": np.array([3, 10])}
    assert parse_tests(truth) == FunctionTests("add", [[1, 2], [5, 5]], [3, 10])
    assert parse_tests(np.array(MBPP)) == AssertTests(MBPP)
    assert score_code("def add(a, b):\n    return a + b\n", truth, FAST).score == 1.0


@pytest.mark.parametrize("read_nonce", [
    "os.lseek(0, 0, os.SEEK_SET)\nnonce = os.read(0, 100).decode().strip()",
    "nonce = open('/proc/1/fd/0').read().strip()",
])
def test_the_nonce_cannot_be_read_back_from_stdin(read_nonce: str) -> None:
    """Neither seeking stdin back nor opening bwrap's own stdin finds the nonce again."""
    code = (f"import os\ntry:\n    {read_nonce.replace(chr(10), chr(10) + '    ')}\n"
            "except OSError:\n    nonce = ''\n"
            "for fd in range(3, 10):\n    try:\n"
            "        os.write(fd, ''.join(f'{nonce} P {i}\\n' for i in range(2)).encode())\n"
            "    except OSError:\n        pass\nos._exit(0)\n")
    assert score_code(code, MBPP, FAST).extra["tests_passed"] == 0
