"""Finding the final answer in a response: `<think>` stripping, last `\\boxed{}`, `Answer:` lines.

Pure string functions, cheap enough to run in the main process for every row, so that only the
distinct extracted answers go on to the (slower) verifiers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

THINK_CLOSE = "</think>"
THINK_OPEN = "<think>"
BOXED_COMMANDS = ("\\boxed", "\\fbox")

_ANSWER_LINE = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is)?\s*[:：]\s*\**\s*(?P<answer>[^\n]*)", re.IGNORECASE
)
# "The answer is X" / "the final answer is X", without a colon: the statement ends at the end of
# its sentence or at a reason ("because ...").
_ANSWER_IS = re.compile(r"\banswer\s+is\s+\**\s*(?P<answer>[^\n]*)", re.IGNORECASE)
_STATEMENT_END = re.compile(r"\.\s|\s+(?:because|since|as|which|so)\s", re.IGNORECASE)
# A number followed by unit words (`34 dollars`, `12 cm`, `5 apples`, `34\text{ dollars}`).
_NUMBER_WITH_UNITS = re.compile(
    r"(?P<number>-?\d[\d,]*(?:\.\d+)?)\s*(?:\\(?:text|mbox|mathrm)\{\s*)?"
    r"(?P<words>[A-Za-z]{2,}\.?(?:\s+[A-Za-z]{2,}\.?){0,2})\s*\}?"
)
# Words after a number that are mathematics, not units.
_NOT_UNITS = {"pi", "sqrt", "times", "cdot", "frac", "or", "and", "to", "mod", "pmod", "le", "ge"}


class Extraction(NamedTuple):
    """What a reward function will judge (a tuple: one is made for every row scored).

    answer: the normalised answer the verifier sees (the whole response for code and custom
    rewards); None when no answer was found. source: how it was found (boxed, answer_line,
    hash_mark, tag, paren, response) or why none was (none, truncated, unfinished_think).
    """

    answer: str | None
    source: str


def strip_think(text: str) -> str | None:
    """The text after the last `</think>`; None when a `<think>` block never closed (cut off)."""
    close = text.rfind(THINK_CLOSE)
    if close >= 0:
        return text[close + len(THINK_CLOSE) :]
    if THINK_OPEN in text:
        return None
    return text


def collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def _brace_depths(text: str, start: int = 0) -> Iterator[tuple[int, int]]:
    """(index, depth after it) for each unescaped `{` or `}` from `start` (`\\x` skips x)."""
    depth = 0
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char in "{}":
            depth += 1 if char == "{" else -1
            yield i, depth
        i += 1


def braces_balanced(text: str) -> bool:
    """True when every `{` closes and nothing closes early (escaped `\\{` `\\}` ignored)."""
    if "{" not in text and "}" not in text:
        return True
    depth = 0
    for _, depth in _brace_depths(text):
        if depth < 0:
            return False
    return depth == 0


def looks_truncated(answer: str) -> bool:
    """An answer cut off mid-LaTeX: unbalanced braces or a dangling `\\`, `^`, `_`."""
    stripped = answer.rstrip()
    return not braces_balanced(stripped) or stripped.endswith(("\\", "^", "_", "{"))


def _matching_brace(text: str, open_at: int) -> int | None:
    """Index of the `}` closing the `{` at open_at, or None when the text ends first."""
    first_close = text.find("}", open_at)
    inner = text[open_at + 1 : first_close]
    if first_close >= 0 and "{" not in inner and "\\" not in inner:
        return first_close  # no nesting: the common case, without a character loop
    for index, depth in _brace_depths(text, open_at):
        if depth == 0:
            return index
    return None


def last_boxed(text: str) -> Extraction | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (or `\\boxed 5`); None when there is none.

    A last box that never closes gives Extraction(None, "truncated"): the answer was cut off.
    """
    start = max(text.rfind(BOXED_COMMANDS[0]), text.rfind(BOXED_COMMANDS[1]))
    if start < 0:
        return None
    command = next(c for c in BOXED_COMMANDS if text.startswith(c, start))
    rest_at = start + len(command)
    rest = text[rest_at:]
    if rest.startswith(" ") and not rest.lstrip().startswith("{"):
        # `\boxed 5`: the answer runs to the next `$` or end of line.
        token = re.split(r"[$\n]", rest.strip(), maxsplit=1)[0]
        return Extraction(collapse_whitespace(token) or None, "boxed")
    brace = text.find("{", rest_at)
    if brace < 0 or text[rest_at:brace].strip():
        return None
    close = _matching_brace(text, brace)
    if close is None:
        return Extraction(None, "truncated")
    return Extraction(collapse_whitespace(text[brace + 1 : close]), "boxed")


# What may stand between boxes that list one answer's parts: `$\\boxed{-2}$ and $\\boxed{5}$`,
# `$x=\\boxed{1}$, $x=\\boxed{2}$`, `\\boxed{3} \\quad \\text{or} \\quad \\boxed{4}` (not `no wait`).
_BETWEEN_PARTS = re.compile(
    r"(?:\s|\$|\\[()]|,|;|\band\b|\bor\b|\\quad|\\qquad|\\text\{\s*(?:and|or)?\s*\}|"
    r"\b[a-zA-Z](?:_\{?\w+\}?)?\s*=)*"
)


def boxes_on_last_line(text: str) -> list[str]:
    """The contents of the boxes on the line of the last `\\boxed{}` when they list one answer's
    parts (only connectives such as `and`, `,` or `x =` between them), repeats dropped: `the
    solutions are $\\boxed{-2}$ and $\\boxed{5}$` -> ["-2", "5"]. Otherwise the last box alone
    (`\\boxed{5} no wait \\boxed{6}` -> ["6"])."""
    last = text.rfind(BOXED_COMMANDS[0])
    if last < 0:
        return []
    start = text.rfind("\n", 0, last) + 1
    end = text.find("\n", last)
    line = text[start : end if end >= 0 else len(text)]
    parts: list[tuple[int, int, str]] = []  # (start, end, content) of each closed box
    for match in re.finditer(r"\\boxed\s*\{", line):
        close = _matching_brace(line, match.end() - 1)
        if close is not None:
            parts.append((match.start(), close + 1, collapse_whitespace(line[match.end() : close])))
    listed = parts[-1:]
    for before, after in zip(reversed(parts[:-1]), reversed(parts[1:]), strict=True):
        if not _BETWEEN_PARTS.fullmatch(line[before[1] : after[0]]):
            break
        listed.insert(0, before)
    found: list[str] = []
    for _, _, content in listed:
        if content and content not in found:
            found.append(content)
    return found


def strip_math_delimiters(answer: str) -> str:
    """`$x$`, `\\(x\\)`, `\\[x\\]`, trailing full stops and bold markers off an answer line."""
    text = answer.strip().strip("*").strip()
    text = text.rstrip(".").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(left) and text.endswith(right) and len(text) > len(left) + len(right):
            text = text[len(left) : len(text) - len(right)].strip()
            break
    return text.rstrip(".").strip()


def last_answer_line(text: str) -> str | None:
    """The answer of the last answer statement, delimiters removed: the rest of the line after
    `Answer:` (or `final answer is:`), or the rest of the sentence after `the answer is`."""
    lines = list(_ANSWER_LINE.finditer(text))
    statements = list(_ANSWER_IS.finditer(text))
    line = lines[-1] if lines else None
    statement = statements[-1] if statements else None
    if line is None and statement is None:
        return None
    if statement is not None and (line is None or statement.start() > line.start()):
        # "the answer is: X" is an answer line; "the answer is X." ends with its sentence.
        answer = _STATEMENT_END.split(statement.group("answer") + " ", maxsplit=1)[0]
    else:
        assert line is not None
        answer = line.group("answer")
    return collapse_whitespace(strip_math_delimiters(answer)) or None


def clean_math_answer(answer: str) -> str:
    """`\\$` is a dollar sign, not a delimiter (`\\$12` is 12); a number followed by unit words
    is the number (`34 dollars`, `12 cm`)."""
    text = answer.replace("\\$", "").strip()
    match = _NUMBER_WITH_UNITS.fullmatch(text)
    if match and not {w.rstrip(".").lower() for w in match.group("words").split()} & _NOT_UNITS:
        return match.group("number")
    return text


def final_text(response: str) -> Extraction | str:
    """The response after reasoning, or an Extraction saying why there is none."""
    text = strip_think(response)
    if text is None:
        return Extraction(None, "unfinished_think")
    return text


def boxed_then_answer_line(response: str) -> Extraction:
    """The math rule: last `\\boxed{}`, else the last `Answer:` line; cut-off LaTeX is no answer."""
    text = final_text(response)
    if isinstance(text, Extraction):
        return text
    boxed = last_boxed(text)
    if boxed is not None and boxed.answer is not None:
        return _checked(Extraction(clean_math_answer(boxed.answer), boxed.source))
    line = last_answer_line(text)
    if line is not None:
        return _checked(Extraction(clean_math_answer(line), "answer_line"))
    if boxed is not None:
        return boxed
    return Extraction(None, "none")


def _checked(extraction: Extraction) -> Extraction:
    if not extraction.answer or looks_truncated(extraction.answer):
        return Extraction(None, "truncated")
    return extraction


_TAG_PATTERNS: dict[tuple[str, bool], re.Pattern[str]] = {}


def last_tag(text: str, tag: str = "answer", *, multiline: bool = False) -> str | None:
    """The stripped text of the last `<tag>...</tag>`, None when there is none.

    Matching is lazy from the first opening tag, as GURU's rewards do: without `multiline`, a tag
    whose content spans lines is not found (their zebra, ordering and graph rewards)."""
    key = (tag, multiline)
    pattern = _TAG_PATTERNS.get(key)
    if pattern is None:
        flags = re.DOTALL if multiline else 0
        pattern = _TAG_PATTERNS[key] = re.compile(f"<{tag}>(.*?)</{tag}>", flags)
    last = None
    for match in pattern.finditer(text):
        last = match
    return last.group(1).strip() if last is not None else None
