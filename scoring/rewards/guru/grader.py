"""`math_equal`, the second check of GURU's math rewards and the numeric check of its table
reward (PRIME's grader, from ToRA / prm800k).

In order: `$5` and `5%` lose their signs; `10_2` (a base) becomes the integer 10; `\\pi` becomes
a number and the result is evaluated (pyeval); equal strings (case and spaces aside); equal
numbers within a relative tolerance, also as a percentage (`0.5` = `50`); brackets and braces
ignored; then tuples, intervals and `Point(...)` element by element. GURU's last step, sympy's
`simplify` and `N`, never succeeds there: it is entered through a timeout helper that cannot be
used as a context manager, so it always answers False; we answer False without running it.

Errors that GURU's grader lets escape (a `_` answer that is not a number in some base, a
`Point` against an empty gold) escape here too: its callers treat them as wrong answers.
"""

from __future__ import annotations

import math
import re
from typing import Any

from scoring.rewards.guru.pyeval import literal_eval

_DOLLARS = re.compile(r"\$\d+(\.\d+)?")
_PERCENT = (re.compile(r"^\d+(\.\d+)?%$"), re.compile(r"^\d+(\.\d+)?\\%$"))
_INTERVALS = (
    (re.compile(r"^Interval\((.*)\)$"), "[{}]"),
    (re.compile(r"^Interval\.Ropen\((.*)\)$"), "[{})"),
    (re.compile(r"^Interval\.Lopen\((.*)\)$"), "({}]"),
    (re.compile(r"^Interval\.open\((.*)\)$"), "({})"),
)
MAX_PREDICTION = 1000


def math_equal(prediction: Any, reference: Any, include_percentage: bool = True,
               tolerance: float = 1e-4, pi: float = math.pi) -> bool:
    """Whether the prediction equals the reference (see the module docstring)."""
    prediction, reference = _normalize(prediction, pi), _normalize(reference, pi)
    if isinstance(prediction, str) and len(prediction) > MAX_PREDICTION:
        prediction = prediction[:MAX_PREDICTION]
    if isinstance(prediction, str) and isinstance(reference, str) and (
        prediction.strip().lower() == reference.strip().lower()
        or prediction.replace(" ", "") == reference.replace(" ", "")
    ):
        return True
    numbers = _as_numbers(prediction, reference)
    if numbers is not None:
        return _numbers_close(*numbers, include_percentage, tolerance)
    if not prediction and prediction not in [0, False]:
        return False
    return _structured_equal(str(prediction).strip(), str(reference).strip(),
                             include_percentage, tolerance)


def _normalize(answer: Any, pi: float) -> Any:
    if isinstance(answer, str) and _DOLLARS.match(answer):
        return answer[1:]
    if isinstance(answer, str) and any(p.match(answer) for p in _PERCENT):
        return answer.replace("\\%", "").replace("%", "")
    if isinstance(answer, str) and "_" in answer:
        return int(float(answer.split("_")[0]))  # `10_2`: a number in base 2 (ValueError if not)
    if isinstance(answer, str) and "\\pi" in answer:
        return _with_pi(answer, pi)
    return answer


def _with_pi(text: str, pi: float) -> Any:
    """`2\\pi` -> `2*3.14159...`, `\\pi/2` -> `1*3.14159.../2`, then evaluated when it can be."""
    at = text.find("\\pi")
    while at != -1:
        factor = f"*{pi}" if at > 0 and text[at - 1].isdigit() else f"1*{pi}"
        text = text[:at] + factor + text[at + 3 :]
        at = text.find("\\pi", at + 1)
    try:
        return literal_eval(text)
    except Exception:
        return text


def _as_float(value: Any) -> float | None:
    text = str(value)
    try:
        if "{,}" in text:
            return float(text.replace("{,}", ""))
        return float(text.replace(",", ""))
    except ValueError:
        return None


def _as_numbers(prediction: Any, reference: Any) -> tuple[float, float] | None:
    predicted, expected = _as_float(prediction), _as_float(reference)
    if predicted is None or expected is None:
        return None
    return predicted, expected


def _numbers_close(prediction: float, reference: float, include_percentage: bool,
                   tolerance: float) -> bool:
    candidates = [reference / 100, reference, reference * 100] if include_percentage else [reference]
    return any(math.isclose(c, prediction, rel_tol=tolerance) for c in candidates)


def _as_interval(prediction: str) -> str:
    """sympy's `Interval.Ropen(a, b)` -> `[a, b)`."""
    for pattern, shape in _INTERVALS:
        match = pattern.match(prediction)
        if match:
            return shape.format(match.group(1))
    return prediction


def _structured_equal(prediction: str, reference: str, include_percentage: bool,
                      tolerance: float) -> bool:
    prediction = _as_interval(prediction)
    strip_outer = _strip_brackets(prediction, reference)
    if _without_brackets(prediction, strip_outer) == _without_brackets(reference, strip_outer):
        return True

    def each_equal(pairs: list[tuple[str, str]]) -> bool:
        # Every pair is compared (an error in any escapes), then all must hold.
        verdicts = [math_equal(p, r, include_percentage, tolerance) for p, r in pairs]
        return all(verdicts)

    if (prediction and reference and prediction[0] in "([" and prediction[-1] in ")]"
            and prediction[0] == reference[0] and prediction[-1] == reference[-1]):
        parts = prediction[1:-1].split(","), reference[1:-1].split(",")
        if len(parts[0]) == len(parts[1]) and each_equal(list(zip(*parts, strict=True))):
            return True
    if "," in prediction and "," in reference:
        predicted = [item.strip() for item in prediction.split(",")]
        expected = [item.strip() for item in reference.split(",")]
        if len(predicted) == len(expected):
            return each_equal(list(zip(predicted, expected, strict=True)))
    if prediction.startswith("Point") and reference[0] == "(" and reference[-1] == ")":
        predicted = prediction[prediction.find("(") + 1 : -1].split(",")
        expected = reference[1:-1].split(",")
        if len(predicted) == len(expected) and each_equal(list(zip(predicted, expected, strict=True))):
            return True
    return False


def _strip_brackets(prediction: str, reference: str) -> bool:
    """Outer brackets are ignored unless they tell an open from a closed interval."""
    return (prediction.startswith("[") and prediction.endswith("]") and not reference.startswith("(")) or (
        prediction.startswith("(") and prediction.endswith(")") and not reference.startswith("[")
    )


def _without_brackets(text: str, strip_outer: bool) -> str:
    if strip_outer:
        text = text.strip("[]()")
    for char in "{}()":
        text = text.replace(char, "")
    return text

