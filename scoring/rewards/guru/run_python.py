"""Running GURU's code checks in our bubblewrap sandbox (scoring.sandbox).

`run_program` runs a program as a script (coder1 runs `python3 -c CODE`, success is exit status
0); `run_stdio_tests` runs it once per test input, inside one sandbox (a harness in the box
starts the program afresh for each input and compares its output there, so the sandbox's own
start is paid once per row, not once per test); `run_exec_check` runs it the way cruxeval's
harness does, `exec` in empty globals with its output swallowed and a wall-clock alarm, success
when the exec returns.
"""

from __future__ import annotations

import inspect
import json
import secrets
from dataclasses import dataclass, replace

from scoring import code_reward, sandbox
from scoring.rewards.guru import coder1_compare
from scoring.sandbox import RunResult, SandboxLimits


@dataclass(frozen=True)
class Outcome:
    ok: bool
    stdout: str
    reason: str | None = None
    sandbox_failed: bool = False


def run_program(code: str, stdin: str, limits: SandboxLimits, allow_unsandboxed: bool) -> Outcome:
    backend = code_reward.resolve_backend(allow_unsandboxed)
    run = sandbox.execute(backend, {"main.py": code}, "main.py", stdin=stdin.encode(), limits=limits)
    return _outcome(run, limits)


def _outcome(run: RunResult, limits: SandboxLimits) -> Outcome:
    try:
        stdout = run.stdout.decode()
    except UnicodeDecodeError:
        return Outcome(False, "", "output is not UTF-8")
    reason = run.failure_reason(limits)
    return Outcome(reason is None, stdout, reason, run.sandbox_failed)


_EXEC_HARNESS = """\
import contextlib, io, os, signal, sys
class _Expired(Exception):
    pass
def _expired(signum, frame):
    raise _Expired()
source = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "check.py")).read()
sink = io.StringIO()
signal.signal(signal.SIGALRM, _expired)
signal.setitimer(signal.ITIMER_REAL, float(sys.argv[2]))
passed = False
try:
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        sys.stdin = io.StringIO()
        exec(source, {})
    passed = True
except BaseException:
    pass
signal.setitimer(signal.ITIMER_REAL, 0)
if passed:
    os.write(1, sys.argv[1].encode())
"""


def run_exec_check(program: str, seconds: float, limits: SandboxLimits,
                   allow_unsandboxed: bool) -> Outcome:
    """`exec(program, {})` within `seconds`; passed when it returned (a marker on stdout, so that
    a program that exits early or prints cannot pass by accident)."""
    backend = code_reward.resolve_backend(allow_unsandboxed)
    nonce = secrets.token_hex(8)
    run = sandbox.execute(backend, {"harness.py": _EXEC_HARNESS, "check.py": program},
                          "harness.py", args=[nonce, str(seconds)], limits=limits)
    if run.sandbox_failed:
        return Outcome(False, "", run.failure_reason(limits), True)
    passed = run.stdout.endswith(nonce.encode())
    return Outcome(passed, "", None if passed else (run.failure_reason(limits) or "assertion failed"))


_STDIO_HARNESS = """\
import json, os, subprocess, sys
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)  # python -I leaves the script's folder off the path
from coder1_compare import outputs_equal
nonce, seconds = sys.argv[1], float(sys.argv[2])
with open(os.path.join(here, "tests.json")) as handle:
    tests = json.load(handle)
def report(index, verdict):
    os.write(1, (nonce + " " + json.dumps([index, verdict]) + "\\n").encode())
for index, (stdin, expected) in enumerate(tests):
    # The output goes to a file, not to this process's memory: the file size limit and the
    # bounded /tmp stop a program that prints forever.
    with open("stdout.txt", "wb") as sink:
        try:
            run = subprocess.run([sys.executable, "-I", os.path.join(here, "main.py")],
                                 input=stdin.encode(), stdout=sink, stderr=subprocess.DEVNULL,
                                 timeout=seconds)
        except subprocess.TimeoutExpired:
            report(index, "timed out after %gs" % seconds)
            break
    if run.returncode != 0:
        report(index, "exit status %d" % run.returncode)
        break
    with open("stdout.txt", "rb") as produced:
        data = produced.read()
    try:
        output = data.decode()
    except UnicodeDecodeError:
        report(index, "output is not UTF-8")
        break
    if not outputs_equal(output.strip(), expected.strip()):
        report(index, "wrong output")
        break
    report(index, "ok")
"""


def run_stdio_tests(program: str, tests: list[tuple[str, str]], seconds: float,
                    limits: SandboxLimits, allow_unsandboxed: bool) -> Outcome:
    """coder1's stdin/stdout tests: each input in a fresh process of the program, `seconds`
    each, exit status 0 and the expected output (coder1_compare) needed; stops at the first
    failure. All tests run in one sandbox whose clock restarts at each test's report."""
    if not tests:
        return Outcome(True, "")
    backend = code_reward.resolve_backend(allow_unsandboxed)
    nonce = secrets.token_hex(8)
    files = {"harness.py": _STDIO_HARNESS, "main.py": program, "tests.json": json.dumps(tests),
             "coder1_compare.py": inspect.getsource(coder1_compare)}
    step = seconds + 5  # the harness's own start and bookkeeping around each run
    run = sandbox.execute(backend, files, "harness.py", args=[nonce, str(seconds)],
                          limits=replace(limits, wall_s=step), progress_marker=nonce.encode(),
                          max_wall_s=step * len(tests))
    if run.sandbox_failed:
        return Outcome(False, "", run.failure_reason(limits), True)
    verdicts = _reports(run.stdout, nonce)
    for index, verdict in verdicts:
        if verdict != "ok":
            return Outcome(False, "", f"test {index}: {verdict}")
    if len(verdicts) == len(tests):
        return Outcome(True, "")
    reason = run.failure_reason(replace(limits, wall_s=step)) or "the test harness stopped"
    return Outcome(False, "", f"test {len(verdicts)}: {reason}")


def _reports(stdout: bytes, nonce: str) -> list[tuple[int, str]]:
    found = []
    for line in stdout.decode("utf-8", "replace").splitlines():
        if line.startswith(nonce + " "):
            index, verdict = json.loads(line[len(nonce) + 1 :])
            found.append((int(index), str(verdict)))
    return found
