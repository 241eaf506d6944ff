"""Exact arithmetic for the answers most math sets have: integers, decimals, fractions and rational
multiples of a square root (`42`, `-0.75`, `\\frac{3}{4}`, `2\\sqrt{3}`, `\\frac{\\sqrt{2}}{2}`).

When gold and answer are both of these forms the math reward decides without Math-Verify: for two
exact numbers its verdict is exact equality anyway (see `math.exact_numbers_equal`), and parsing
LaTeX with Math-Verify costs milliseconds per answer where this costs microseconds. Anything else
(`1,000`, `\\pi`, units, sets, 7-decimal floats that Math-Verify would round) returns None here and
goes to Math-Verify.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# Math-Verify rounds floats to 6 decimals; beyond that its verdict is not plain equality.
MAX_DECIMALS = 6
MAX_RADICAND = 10**6
_INT = r"\d+"
_PATTERNS = [
    ("decimal", re.compile(r"(?P<sign>-?)(?P<num>\d+\.\d+|\d+)")),
    ("slash", re.compile(r"(?P<sign>-?)(?P<num>\d+)/(?P<den>\d+)")),
    ("frac", re.compile(r"(?P<sign>-?)\\[dt]?frac\{(?P<num>\d+)\}\{(?P<den>\d+)\}")),
    ("sqrt", re.compile(r"(?P<sign>-?)(?P<num>\d*)\\sqrt\{(?P<rad>\d+)\}")),
    ("frac_sqrt", re.compile(
        r"(?P<sign>-?)\\[dt]?frac\{(?P<num>\d*)\\sqrt\{(?P<rad>\d+)\}\}\{(?P<den>\d+)\}"
    )),
]


@dataclass(frozen=True)
class Surd:
    """coefficient * sqrt(radicand), radicand square-free (1 for rationals): a canonical form."""

    coefficient: Fraction
    radicand: int
    decimal: bool

    @property
    def terminates(self) -> bool:
        """Exactly representable with MAX_DECIMALS decimals (Math-Verify's rounding is then exact)."""
        return self.radicand == 1 and (10**MAX_DECIMALS) % self.coefficient.denominator == 0


def parse_surd(text: str) -> Surd | None:
    """The exact value of a simple number, or None when the text is anything else."""
    compact = text.replace(" ", "")
    for kind, pattern in _PATTERNS:
        match = pattern.fullmatch(compact)
        if match is None:
            continue
        parts = match.groupdict()
        if kind == "decimal" and "." in parts["num"] and len(parts["num"].split(".")[1]) > MAX_DECIMALS:
            return None
        numerator = Fraction(parts["num"] or "1")
        denominator = int(parts.get("den") or 1)
        if denominator == 0:
            return None
        radicand = int(parts.get("rad") or 1)
        if radicand > MAX_RADICAND:
            return None
        square, free = _split_square(radicand)
        value = numerator * square / denominator
        if parts["sign"]:
            value = -value
        if free == 0:
            value, free = Fraction(0), 1
        return Surd(value, free, decimal=kind == "decimal" and "." in parts["num"])
    return None


def _split_square(n: int) -> tuple[int, int]:
    """n = square**2 * free with free square-free."""
    if n == 0:
        return 0, 0
    square, free, factor = 1, n, 2
    while factor * factor <= free:
        while free % (factor * factor) == 0:
            free //= factor * factor
            square *= factor
        factor += 1
    return square, free


def exact_verdict(gold: str, answer: str) -> bool | None:
    """True/False when both are simple numbers that compare exactly; None to ask Math-Verify."""
    gold_value = parse_surd(gold)
    if gold_value is None:
        return None
    answer_value = parse_surd(answer)
    if answer_value is None:
        return None
    # A float against a non-terminating value is decided by Math-Verify's rounding, not here.
    if (gold_value.decimal or answer_value.decimal) and not (
        gold_value.terminates and answer_value.terminates
    ):
        return None
    return (gold_value.coefficient, gold_value.radicand) == (
        answer_value.coefficient,
        answer_value.radicand,
    )
