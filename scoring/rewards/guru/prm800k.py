"""prm800k's answer grader, the first check of GURU's math rewards (naive_dapo and prime_math).

An answer is right when (a) its MATH normal form equals the gold's, or (b) after prm800k's own
normalisation (units, `\\text{}`, LaTeX to text via pylatexenc, thousands commas) the two are equal
strings, or (c) element by element (tuples and intervals split on commas, brackets required to
match), sympy simplifies gold - answer to 0. Unreduced fractions (`2/4` for `1/2`) must match as
written, and an integer gold needs an integer answer: neither goes to sympy. sympy gets
SYMPY_SECONDS per element; a slower comparison is a wrong answer, as it is for GURU.
"""

from __future__ import annotations

import contextlib
import functools
import re
import signal
import threading
from collections.abc import Iterator
from typing import Any

from scoring.rewards.guru.hendrycks import normalize_answer

SYMPY_SECONDS = 10.0
_UNITS = (
    "degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week",
    "month", "year", "foot", "feet", "inch", "yard", "liter",
)
_UNIT_PATTERNS = [re.compile(unit + r"(es)?(s)? *(\^[0-9]+)?") for unit in _UNITS]
_TEXT_ONLY = re.compile(r"^\\text\{(?P<text>.+?)\}$")
_DEGREES = re.compile(r"\^ *\\circ")
_THIN_SPACE_COMMA = re.compile(r",\\! *")
_MINUS_SPACE = re.compile(r"- *")
_MIXED_NUMBER = re.compile(r"([0-9]) +([0-9])")
_THOUSANDS = re.compile(r"(\d)(,)(\d\d\d)($|\D)")
_FRACTION = re.compile(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$")
_BAD_FOR_SYMPY = ("^{", "^(")
_BAD_POWERS = (re.compile(r"\^[0-9]+\^"), re.compile(r"\^[0-9][0-9]+"))
_BRACKETS = "()[]"
_LATEX_SYMBOLS = (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*"))


def grade_answer(given: str, truth: str) -> bool:
    """prm800k's verdict on one answer against the gold."""
    if normalize_answer(truth) == normalize_answer(given):
        return True
    truth_normal, given_normal = normalize(truth), normalize(given)
    if truth_normal == given_normal:
        return True
    if not given_normal:
        return False
    truth_items, given_items = split_tuple(truth_normal), split_tuple(given_normal)
    if len(truth_items) > 1 and (
        truth_normal[0] != given_normal[0] or truth_normal[-1] != given_normal[-1]
    ):
        return False  # (a, b) is not [a, b]
    if len(truth_items) != len(given_items):
        return False
    return all(_items_equal(t, g) for t, g in zip(truth_items, given_items, strict=True))


def _items_equal(truth: str, given: str) -> bool:
    if _FRACTION.search(truth) and _FRACTION.search(given):
        return truth == given  # an unreduced fraction is not the reduced one
    if _str_is_int(truth) != _str_is_int(given):
        return False  # an integer gold needs an integer answer, not sympy's opinion
    return equal_under_sympy(truth, given)


def normalize(expr: str) -> str:
    """prm800k's `_normalize`."""
    match = _TEXT_ONLY.search(expr)
    if match is not None:
        expr = match.group("text")
    for old, new in (("\\%", "%"), ("\\$", "$"), ("$", ""), ("%", ""), (" or ", " , "),
                     (" and ", " , "), ("million", "*10^6"), ("billion", "*10^9"),
                     ("trillion", "*10^12")):
        expr = expr.replace(old, new)
    for pattern in _UNIT_PATTERNS:
        expr = pattern.sub("", expr)
    expr = _DEGREES.sub("", expr)
    if expr and expr[0] == "{" and expr[-1] == "}":
        expr = expr[1:-1]
    expr = _THIN_SPACE_COMMA.sub("", expr)
    if _is_float(expr) and _is_int(float(expr)):
        expr = str(int(round(float(expr))))
    if "\\" in expr:
        with contextlib.suppress(Exception):
            expr = latex_to_text(expr)
    expr = _MINUS_SPACE.sub("-", expr)
    expr = _MIXED_NUMBER.sub("\\1+\\2", expr)  # 7 3/4 -> 7+3/4
    expr = expr.lower()
    if _str_is_int(expr):
        expr = str(int(float(expr.replace(",", ""))))
    return expr


def load_libraries() -> None:
    """Import sympy and pylatexenc now: a reward calls it before the workers fork, so that each
    worker does not import them again on its first answer."""
    _latex_converter()
    from sympy.parsing import sympy_parser  # noqa: F401


@functools.lru_cache(maxsize=1)
def _latex_converter() -> Any:
    from pylatexenc import latex2text

    return latex2text.LatexNodes2Text()


def latex_to_text(expr: str) -> str:
    """LaTeX as plain text sympy can read (pylatexenc), with its symbols spelled out."""
    expr = expr.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac")
    expr = expr.replace("\\frac", " \\frac")  # mixed numbers: 1\frac{1}{2} -> 1 + ...
    expr = _latex_converter().latex_to_text(expr)
    for symbol, word in _LATEX_SYMBOLS:
        expr = expr.replace(symbol, word)
    return expr.strip()


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_int(value: float) -> bool:
    try:
        return abs(value - int(round(value))) <= 1e-7
    except (OverflowError, ValueError):
        return False


def strip_thousands(expr: str) -> str:
    """`1,234,567` -> `1234567`, leaving tuple commas (`1,2`) alone."""
    while True:
        stripped = _THOUSANDS.sub("\\1\\3\\4", expr)
        if stripped == expr:
            return stripped
        expr = stripped


def _str_is_int(text: str) -> bool:
    try:
        value = float(strip_thousands(text))
    except ValueError:
        return False
    return _is_int(value)


def split_tuple(expr: str) -> list[str]:
    """The elements of `(a, b)` / `[a, b)` (no nested brackets), else the expression alone."""
    expr = strip_thousands(expr)
    if not expr:
        return []
    inner = expr[1:-1]
    if (len(expr) > 2 and expr[0] in _BRACKETS and expr[-1] in _BRACKETS
            and not any(char in inner for char in _BRACKETS)):
        return [item.strip() for item in inner.split(",")]
    return [expr]


def _sympy_allowed(expr: str) -> bool:
    """No text (more than two distinct letters) and no towers of powers: sympy could hang."""
    letters = {char for char in expr.replace("sqrt", "").replace("frac", "") if char.isalpha()}
    if len(letters) > 2:
        return False
    if any(bad in expr for bad in _BAD_FOR_SYMPY):
        return False
    return not any(pattern.search(expr) for pattern in _BAD_POWERS)


def equal_under_sympy(truth: str, given: str) -> bool:
    """sympy simplifies (truth) - (given) to 0 within SYMPY_SECONDS."""
    expr = f"({truth})-({given})"
    if not _sympy_allowed(expr):
        return False
    try:
        with time_limit(SYMPY_SECONDS):
            return bool(_simplify(expr) == 0)
    except Exception:  # unparsable, sympy's own errors, or too slow: not equal
        return False


def _simplify(expr: str) -> Any:
    import sympy
    from sympy.parsing import sympy_parser

    transformations = sympy_parser.standard_transformations + (
        sympy_parser.implicit_multiplication_application,
    )
    parsed = sympy_parser.parse_expr(expr.replace("^", "**"), transformations=transformations)
    return sympy.simplify(parsed)


class SympyTimeout(Exception):
    """sympy took longer than its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """SIGALRM after `seconds` in the main thread (workers judge there); elsewhere no limit, the
    scorer's per-item wall clock still holds."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise SympyTimeout(f"sympy took more than {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
