"""Running GURU's code checks in our bubblewrap sandbox (scoring.sandbox).

`run_program` runs a program as a script (coder1 runs `python3 -c CODE`, success is exit status
0); `run_exec_check` runs it the way cruxeval's harness does, `exec` in empty globals with its
output swallowed and a wall-clock alarm, success when the exec returns.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from scoring import code_reward, sandbox
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
