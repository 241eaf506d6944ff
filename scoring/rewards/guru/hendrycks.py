"""The MATH dataset's answer normaliser (Hendrycks et al.), as GURU's graders use it.

`strip_string` rewrites LaTeX spellings of one answer to one string (`\\dfrac12` and `1/2` both
become `\\frac{1}{2}`); `is_equiv` compares two answers that way. Some inputs make the normaliser
fail (a trailing `\\sqrt` or `\\frac`, two `\\text{ ` unit markers); callers decide what a failure
means, as the graders they mirror do, so the errors are raised, not hidden.
"""

from __future__ import annotations

import re

_TEXT_ONLY = re.compile(r"^\\text\{(?P<text>.+?)\}$")


def strip_string(text: str) -> str:
    """The normal form of one answer. Raises IndexError/ValueError on the inputs noted above."""
    for old, new in (
        ("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
        ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", ""),
    ):
        text = text.replace(old, new)
    text = _drop_right_units(text)
    text = text.replace("\\%", "")
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # `k = 5`: a short name on the left goes
        text = sides[1]
    text = _brace_sqrt(text).replace(" ", "")
    text = _brace_fracs(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _slash_to_frac(text)


def _drop_right_units(text: str) -> str:
    """`5\\text{ cm}` -> `5`; more than one `\\text{ ` is an error."""
    if "\\text{ " not in text:
        return text
    parts = text.split("\\text{ ")
    if len(parts) != 2:
        raise ValueError("several \\text{ unit markers")
    return parts[0]


def _brace_sqrt(text: str) -> str:
    """`\\sqrt3` -> `\\sqrt{3}` (IndexError when `\\sqrt` ends the text)."""
    if "\\sqrt" not in text:
        return text
    head, *tails = text.split("\\sqrt")
    out = [head]
    for tail in tails:
        out.append("\\sqrt" + tail if tail[0] == "{" else "\\sqrt{" + tail[0] + "}" + tail[1:])
    return "".join(out)


def _brace_fracs(text: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{72}` -> `\\frac{1}{72}` (IndexError when `\\frac`
    ends the text; a `\\frac` followed by one character leaves the whole text as it was)."""
    head, *tails = text.split("\\frac")
    out = [head]
    for tail in tails:
        out.append("\\frac")
        if tail[0] == "{":
            out.append(tail)
            continue
        if len(tail) < 2:
            return text
        first, second, rest = tail[0], tail[1], tail[2:]
        if second != "{":
            out.append("{" + first + "}{" + second + "}" + rest)
        else:
            out.append("{" + first + "}" + second + rest)
    return "".join(out)


def _slash_to_frac(text: str) -> str:
    """`3/4` -> `\\frac{3}{4}` when both sides are integers written plainly."""
    parts = text.split("/")
    if len(parts) != 2:
        return text
    try:
        numerator, denominator = int(parts[0]), int(parts[1])
    except ValueError:
        return text
    if text != f"{numerator}/{denominator}":
        return text
    return "\\frac{" + str(numerator) + "}{" + str(denominator) + "}"


def is_equiv(first: str | None, second: str | None) -> bool:
    """Equal normal forms; when normalising fails, equal texts."""
    if first is None or second is None:
        return first is None and second is None
    try:
        return strip_string(first) == strip_string(second)
    except Exception:
        return first == second


def normalize_answer(answer: str | None) -> str | None:
    """prm800k's form: spaces trimmed, a whole-answer `\\text{...}` unwrapped, then
    strip_string; when that fails, the unwrapped text."""
    if answer is None:
        return None
    answer = answer.strip()
    try:
        match = _TEXT_ONLY.search(answer)
        if match is not None:
            answer = match.group("text").strip()
        return strip_string(answer)
    except Exception:
        return answer


def last_boxed(text: str) -> str | None:
    """The last `\\boxed{...}` (or `\\fbox{...}`) with its command, as verl's MATH reward finds
    it: a `\\boxed ` followed by a space anywhere wins and runs to the next `$`; an unclosed box
    is None. Braces are counted from the command on."""
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth = 0
    for index in range(start, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start : index + 1]
    return None


def remove_boxed(boxed: str) -> str:
    """The inside of `\\boxed{...}` or what follows `\\boxed `; ValueError for anything else
    (an `\\fbox{...}`, for one)."""
    if "\\boxed " in boxed:
        if not boxed.startswith("\\boxed "):
            raise ValueError("not a \\boxed answer")
        return boxed[len("\\boxed ") :]
    if not boxed.startswith("\\boxed{") or not boxed.endswith("}"):
        raise ValueError("not a \\boxed{} answer")
    return boxed[len("\\boxed{") : -1]
