"""Math answers checked with Math-Verify (gold first), guarded against its known false positives.

Math-Verify compares numbers after rounding and reads bare text loosely, which accepts some wrong
answers: `1/2006!` for `1/2004!` and `1/2^{98}` for `1/2^{99}` (both round to 0), `4` read out of
`4\\sqrt{2}`, `0` read out of `3x+4y+14=0`, and answers cut off mid-LaTeX. The guards: the answer
is extracted here and parsed inside math delimiters (so the whole answer is read), cut-off LaTeX is
no answer, exact numbers must be equal to 50 significant digits, and two implicit equations must be
proportional. Simple exact numbers (integers, fractions, `a\\sqrt{b}`) skip Math-Verify: see
`scoring.rewards.exact`. Math-Verify's own signal-based timeouts are off: the worker pool kills
hung items.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import sympy
from math_verify import parse, verify

from scoring.rewards.base import NO_ANSWER, binary
from scoring.rewards.exact import exact_verdict, parse_surd
from scoring.rewards.extract import (
    Extraction,
    boxed_then_answer_line,
    boxes_on_last_line,
    clean_math_answer,
    collapse_whitespace,
    final_text,
    looks_truncated,
)
from scoring.rewards.math_forms import (
    as_pmatrix,
    column_as_tuple,
    inequalities_as_intervals,
    last_formula,
    looks_like_interval,
    number_in_words,
    repeating_fraction,
)
from scoring.types import RewardResult

# Digits used to decide that two exact numbers are equal (1/2004! and 1/2006! differ at the 7th).
EXACT_DIGITS = 50
EXACT_REL_TOL = sympy.Float(10) ** -40


class _NoTimeoutNotice(logging.Filter):
    """Math-Verify warns once that its timeouts are off; here they are off on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _logger in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_logger).addFilter(_NoTimeoutNotice())


class MathReward:
    """Math-Verify with answer extraction and false-positive guards."""

    name = "math"
    version = "3"
    uses_context = False

    def extract(self, response: str) -> Extraction:
        """The last box (all boxes of its line, when there are several), else the last answer
        statement, else the last formula of the final paragraph."""
        found = boxed_then_answer_line(response)
        text = final_text(response)
        if isinstance(text, Extraction):
            return found
        if found.source == "boxed":
            boxes = [clean_math_answer(b) for b in boxes_on_last_line(text)]
            if len(boxes) > 1 and not any(looks_truncated(b) for b in boxes):
                return Extraction(", ".join(boxes), "boxes")
        if found.source == "none":
            formula = last_formula(text)
            if formula is not None and not looks_truncated(formula):
                return Extraction(clean_math_answer(formula), "last_formula")
        return found

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        shown = answer
        answer = rewritten(answer)
        golds = [rewritten(clean_math_answer(str(g))) for g in gold_list(ground_truth)]
        golds += [t for t in map(column_as_tuple, golds) if t is not None and answer.startswith("(")]
        decimals = [decimal_verdict(g, answer) for g in golds]
        if all(v is not None for v in decimals):
            correct = any(decimals)
            return binary(correct, shown, None if correct else exact_class(answer))
        exact = [exact_verdict(str(g), answer) for g in golds]
        if all(v is not None for v in exact):
            correct = any(exact)
            return binary(correct, shown, None if correct else exact_class(answer))
        pred = parse_answer(answer)
        if not pred:
            return NO_ANSWER
        correct = any(_equivalent_fast(gold_parsed(str(g)), _pred_for(g, answer, pred)) for g in golds)
        return binary(correct, shown, answer_class(pred))


def rewritten(text: str) -> str:
    """The notations of scoring.rewards.math_forms in the forms Math-Verify compares."""
    return as_pmatrix(number_in_words(repeating_fraction(text)))


def _pred_for(gold: str, answer: str, pred: list[Any]) -> list[Any]:
    """The parsed answer; an interval gold takes an answer written as inequalities as its set."""
    if looks_like_interval(gold):
        intervals = inequalities_as_intervals(answer)
        if intervals != answer:
            return parse_answer(intervals)
    return pred


_PLAIN_DECIMAL = re.compile(r"-?\d+(?:\.\d+)?")


def decimal_verdict(gold: str, answer: str) -> bool | None:
    """Two plain decimals are equal only when exactly equal (`2.5` is not `2.5000001`, which
    Math-Verify's rounding to 6 decimals accepts); None unless both are plain decimals."""
    if not (_PLAIN_DECIMAL.fullmatch(gold.strip()) and _PLAIN_DECIMAL.fullmatch(answer.strip())):
        return None
    return Fraction(gold.strip()) == Fraction(answer.strip())


def _equivalent_fast(gold: Sequence[Any], pred: Sequence[Any]) -> bool:
    """is_equivalent, skipping Math-Verify's symbolic simplification for distinct numbers."""
    if numbers_far_apart(_first_expr(gold), _first_expr(pred)):
        return False
    return is_equivalent(gold, pred)


# Two numbers this far apart differ after Math-Verify's rounding to 6 decimals, and symbolically.
FAR_ABS = 1e-5
FAR_REL = 1e-9


def numbers_far_apart(a: Any, b: Any) -> bool:
    """True only when both are plain numbers whose values clearly differ (Math-Verify says no)."""
    if not (_plain_number(a) and _plain_number(b)):
        return False
    try:
        x, y = complex(sympy.N(a, 20)), complex(sympy.N(b, 20))
    except (TypeError, ValueError, ArithmeticError):
        return False
    if not all(math.isfinite(v) for v in (x.real, x.imag, y.real, y.imag)):
        return False
    gap = abs(x - y)
    return gap > FAR_ABS and gap > FAR_REL * max(abs(x), abs(y))


def _plain_number(expr: Any) -> bool:
    """A number that Math-Verify compares by value (not a set, tuple, relation or matrix)."""
    return (
        isinstance(expr, sympy.Expr)
        and not isinstance(expr, sympy.Symbol)
        and bool(expr.is_number)
    )


def gold_list(ground_truth: Any) -> list[Any]:
    """Several acceptable gold answers may come as a list."""
    if isinstance(ground_truth, list | tuple):
        return list(ground_truth)
    return [ground_truth]


def _wrap(text: str) -> str:
    """Inside `$...$` Math-Verify reads the whole expression, not a number found in it."""
    if "\\boxed" in text or "$" in text:
        return text
    return f"${text}$"


def parse_answer(answer: str) -> list[Any]:
    return list(parse(_wrap(answer), parsing_timeout=None))


@functools.lru_cache(maxsize=4096)
def gold_parsed(gold: str) -> tuple[Any, ...]:
    """Gold answers repeat across the samples of a prompt: parse each once per process."""
    return tuple(parse(_wrap(collapse_whitespace(gold)), parsing_timeout=None))


def is_equivalent(gold: Sequence[Any], pred: Sequence[Any]) -> bool:
    """Math-Verify's verdict, overruled where it is a known false positive."""
    if not gold or not pred:
        return False
    if not verify(list(gold), list(pred), timeout_seconds=None):
        return False
    gold_expr, pred_expr = _first_expr(gold), _first_expr(pred)
    if gold_expr is None or pred_expr is None:
        return True
    if _is_exact_number(gold_expr) and _is_exact_number(pred_expr):
        return exact_numbers_equal(gold_expr, pred_expr)
    if _is_implicit_equation(gold_expr) and _is_implicit_equation(pred_expr):
        return equations_proportional(gold_expr, pred_expr)
    return True


def _first_expr(parsed: Sequence[Any]) -> Any:
    return next((p for p in parsed if isinstance(p, sympy.Basic)), None)


def _is_exact_number(expr: Any) -> bool:
    return bool(getattr(expr, "is_number", False)) and not expr.atoms(sympy.Float)


def exact_numbers_equal(a: sympy.Basic, b: sympy.Basic) -> bool:
    """Equal to EXACT_DIGITS significant digits, where Math-Verify rounds to 6 decimals."""
    try:
        x = sympy.N(a, EXACT_DIGITS)
        y = sympy.N(b, EXACT_DIGITS)
        scale = max(abs(x), abs(y))
        if scale == 0:
            return True
        return bool(abs(x - y) <= EXACT_REL_TOL * scale)
    except (TypeError, ValueError, ArithmeticError):
        return True  # not comparable numerically: keep Math-Verify's verdict


def _is_implicit_equation(expr: Any) -> bool:
    """An equation such as `3x-y+13=0`, not an assignment such as `x = 3`."""
    return isinstance(expr, sympy.Equality) and not isinstance(expr.lhs, sympy.Symbol)


def equations_proportional(a: sympy.Equality, b: sympy.Equality) -> bool:
    """Two equations describe the same set when one side-difference is a constant times the other."""
    try:
        ratio = sympy.simplify((a.lhs - a.rhs) / (b.lhs - b.rhs))
    except (TypeError, ValueError, ArithmeticError, ZeroDivisionError):
        return True
    return bool(ratio.is_number and ratio != 0 and ratio.is_finite)


def answer_class(pred: Sequence[Any]) -> str:
    """Equivalent answers share a class: numbers by value, expressions by sympy's canonical form."""
    expr = _first_expr(pred)
    if expr is None:
        return "str:" + collapse_whitespace(str(pred[0]))
    if getattr(expr, "is_number", False):
        # 12 significant digits in sympy's own floats (no underflow for 1/2006!).
        return "num:" + str(sympy.N(expr, 12))
    return "expr:" + str(expr)


def exact_class(answer: str) -> str | None:
    """The same class answer_class gives the Math-Verify parse of a simple number."""
    surd = parse_surd(answer)
    if surd is None:
        return None
    value = sympy.Rational(surd.coefficient.numerator, surd.coefficient.denominator)
    if surd.radicand != 1:
        value = value * sympy.sqrt(surd.radicand)
    return "num:" + str(sympy.N(value, 12))
