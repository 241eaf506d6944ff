"""Equivalent notations a careful grader accepts, rewritten into the form Math-Verify compares.

Pure string functions used by the math reward (scoring.rewards.math) on answers and gold answers:

- repeating decimals: `0.\\overline{3}`, `0.1\\overline{6}`, `1.\\overline{36}` -> `\\frac{p}{q}`;
- a set of reals written as inequalities, when the gold answer is an interval or a union of them:
  `x < 3` -> `(-\\infty, 3)`, `2 \\le x \\le 5` -> `[2, 5]`, `x<-2 \\text{ or } x>3` -> a union;
- a number wrapped in words: `\\text{4 ways}` -> `4`;
- a column vector `\\begin{pmatrix} 3 \\\\ -1 \\end{pmatrix}` also read as the tuple `(3, -1)`,
  and any matrix environment (`bmatrix`, `matrix`, `\\left(\\begin{array}...\\right)`) as `pmatrix`;
- several boxed answers on the final line joined into one list (`\\boxed{-2}` and `\\boxed{5}`);
- with no box and no answer statement, the last formula of the final paragraph (`... so $x = 7$.`).

Each rule reads one narrow form and leaves anything else as it is, so no wrong answer becomes a
right one: an inequality stays an inequality unless the gold is an interval, a vector a vector
unless the other side is a tuple.
"""

from __future__ import annotations

import re
from fractions import Fraction

# ---------------------------------------------------------------- repeating decimals

_REPEATING = re.compile(
    r"(?P<sign>-?)(?P<whole>\d*)\.(?P<fixed>\d*)\\overline\{(?P<repeat>\d+)\}"
)


def repeating_fraction(text: str) -> str:
    """`0.1\\overline{6}` -> `\\frac{1}{6}` (the whole text only; anything else unchanged)."""
    match = _REPEATING.fullmatch(text.replace(" ", ""))
    if match is None:
        return text
    fixed, repeat = match["fixed"], match["repeat"]
    whole = Fraction(int(match["whole"] or "0"))
    head = Fraction(int(fixed), 10 ** len(fixed)) if fixed else Fraction(0)
    tail = Fraction(int(repeat), (10 ** len(repeat) - 1) * 10 ** len(fixed))
    value = whole + head + tail
    if match["sign"]:
        value = -value
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value.denominator == 1:
        return f"{sign}{value.numerator}"
    return f"{sign}\\frac{{{value.numerator}}}{{{value.denominator}}}"


# ---------------------------------------------------------------- inequalities as intervals

_LESS = {"<": False, "\\lt": False, "\\le": True, "\\leq": True, "\\leqslant": True, "≤": True}
_MORE = {">": False, "\\gt": False, "\\ge": True, "\\geq": True, "\\geqslant": True, "≥": True}
_MIRROR = {
    **{r: ("\\ge" if closed else ">") for r, closed in _LESS.items()},
    **{r: ("\\le" if closed else "<") for r, closed in _MORE.items()},
}
_RELATION = r"(?:<|>|≤|≥|\\leqslant|\\geqslant|\\leq|\\geq|\\le|\\ge|\\lt|\\gt)"
_VALUE = r"-?[\w\\{}./^+\-]+?"
_VARIABLE = r"(?:[a-zA-Z]|\\(?:theta|alpha|beta|gamma|phi|varphi|psi|omega|lambda|mu|tau|rho|sigma))"
_CHAIN = re.compile(
    rf"(?P<low>{_VALUE})\s*(?P<r1>{_RELATION})\s*(?P<var>{_VARIABLE})\s*(?P<r2>{_RELATION})\s*(?P<high>{_VALUE})"
)
_ONE_SIDED = re.compile(rf"(?P<var>{_VARIABLE})\s*(?P<rel>{_RELATION})\s*(?P<value>{_VALUE})")
_FLIPPED = re.compile(rf"(?P<value>{_VALUE})\s*(?P<rel>{_RELATION})\s*(?P<var>{_VARIABLE})")
_OR = re.compile(r"\s*(?:\\text\{\s*or\s*\}|\\quad\s*\\text\{or\}\s*\\quad|\\lor|\\vee|\bor\b|\\cup|,)\s*")
_INTERVAL_GOLD = re.compile(r"^[\[(].*,.*[\])]$|\\infty")


def looks_like_interval(gold: str) -> bool:
    """An interval or a union of them (`(-\\infty, 3)`, `[2, 5]`, `(0,1)\\cup(2,3)`)."""
    return bool(_INTERVAL_GOLD.search(gold.replace(" ", ""))) and "=" not in gold


def _bracket(relation: str, left: bool) -> str:
    closed = _LESS.get(relation, _MORE.get(relation, False))
    if left:
        return "[" if closed else "("
    return "]" if closed else ")"


def _interval(part: str) -> str | None:
    """One inequality in one variable as interval notation, or None."""
    part = part.strip().strip("$").strip()
    match = _CHAIN.fullmatch(part)
    if match is not None:
        r1, r2 = match["r1"], match["r2"]
        if r1 in _LESS and r2 in _LESS:
            return f"{_bracket(r1, True)}{match['low']}, {match['high']}{_bracket(r2, False)}"
        if r1 in _MORE and r2 in _MORE:
            return f"{_bracket(r2, True)}{match['high']}, {match['low']}{_bracket(r1, False)}"
        return None
    match = _ONE_SIDED.fullmatch(part)
    if match is not None:
        rel, value = match["rel"], match["value"]
    else:
        match = _FLIPPED.fullmatch(part)
        if match is None:
            return None
        rel, value = _MIRROR[match["rel"]], match["value"]  # `3 > x` is `x < 3`
    if rel in _LESS:
        return f"(-\\infty, {value}{_bracket(rel, False)}"
    return f"{_bracket(rel, True)}{value}, \\infty)"


def inequalities_as_intervals(answer: str) -> str:
    """`x<-2 \\text{ or } x>3` -> `(-\\infty, -2) \\cup (3, \\infty)`; unchanged unless every
    part is an inequality in the same single variable."""
    parts = [p for p in _OR.split(answer) if p.strip()]
    if not parts:
        return answer
    variables = set(re.findall(rf"(?<![\\\w]){_VARIABLE}(?![a-zA-Z0-9])", answer))
    if len(variables) != 1:
        return answer
    intervals = [_interval(p) for p in parts]
    if any(i is None for i in intervals):
        return answer
    return " \\cup ".join(i for i in intervals if i is not None)


# ---------------------------------------------------------------- words, vectors, matrices

_TEXT_NUMBER = re.compile(r"\\(?:text|mbox|textbf)\{\s*(?P<number>-?\d[\d,]*(?:\.\d+)?)\s+[A-Za-z][A-Za-z ]*\}")
_COLUMN_VECTOR = re.compile(
    r"\\begin\{pmatrix\}(?P<body>[^&]*?)\\end\{pmatrix\}"
)
_ENVIRONMENTS = re.compile(r"\\(begin|end)\{(?:bmatrix|Bmatrix|vmatrix|matrix|smallmatrix)\}")
_ARRAY = re.compile(
    r"\\left\s*[(\[]\s*\\begin\{array\}\{[^}]*\}(?P<body>.*?)\\end\{array\}\s*\\right\s*[)\]]"
)


def number_in_words(answer: str) -> str:
    """`\\text{4 ways}` -> `4`."""
    match = _TEXT_NUMBER.fullmatch(answer.strip())
    return match["number"] if match else answer


def as_pmatrix(answer: str) -> str:
    """Any matrix environment as `pmatrix` (Math-Verify reads that one)."""
    answer = _ARRAY.sub(lambda m: f"\\begin{{pmatrix}}{m['body']}\\end{{pmatrix}}", answer)
    return _ENVIRONMENTS.sub(lambda m: f"\\{m[1]}{{pmatrix}}", answer)


def column_as_tuple(text: str) -> str | None:
    """`\\begin{pmatrix} 3 \\\\ -1 \\end{pmatrix}` -> `(3, -1)`; None for anything else."""
    match = _COLUMN_VECTOR.fullmatch(text.strip())
    if match is None:
        return None
    entries = [e.strip() for e in match["body"].split("\\\\") if e.strip()]
    return f"({', '.join(entries)})" if len(entries) > 1 else None


# ---------------------------------------------------------------- several boxes, no box

_MATH_SPANS = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\$(.+?)\$|\\\((.+?)\\\)", re.DOTALL)


def last_formula(text: str) -> str | None:
    """The last formula of the final paragraph, right of its last `=` (`$4! = 24$` -> `24`)."""
    paragraph = text.strip().rsplit("\n\n", 1)[-1]
    spans = [next(g for g in m.groups() if g is not None) for m in _MATH_SPANS.finditer(paragraph)]
    if not spans:
        return None
    formula = " ".join(spans[-1].split()).rstrip(".,; ")
    value = formula.rsplit("=", 1)[-1].strip()
    return value or None
