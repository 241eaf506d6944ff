"""The instruction checks that open-instruct's IFEvalG set adds to Google's IFEval (the ids of
GURU's `ood__ifbench`: `keywords:word_once`, `copy:repeat_phrase`, `count:counting_composition`,
...), written here from their published behaviour.

Each check declares the parameters it takes; a parameter it needs that is missing (or empty, the
reference's own test) is an error, never a random draw (the reference then picks a value at
random, so its verdict changes from run to run). `build(instruction_id, kwargs)` returns an
object with `check_following(response) -> bool`, like IFEval's classes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rollouts.errors import UserInputError

RELATIONS = ("less than", "at least")
Params = dict[str, Any]


def _sentences(text: str) -> list[str]:
    from if_verifiable.ifeval.instructions_util import split_into_sentences

    return list(split_into_sentences(text))


def _tokens(text: str) -> list[str]:
    import nltk

    return list(nltk.word_tokenize(text))


def _occurrences(keyword: str, text: str) -> int:
    # The keyword is a regular expression there (not escaped), and so it is here.
    return len(re.findall(keyword, text, flags=re.IGNORECASE))


def _same_text(value: str, wanted: str) -> bool:
    return value.strip().lower() == wanted.strip().lower()


def _paragraph_count_ok(paragraphs: list[str], wanted: int) -> bool:
    """Empty paragraphs only at the ends (not counted), and `wanted` others."""
    count = len(paragraphs)
    for index, paragraph in enumerate(paragraphs):
        if not paragraph.strip():
            if index in (0, len(paragraphs) - 1):
                count -= 1
            else:
                return False
    return count == wanted


# ---------------------------------------------------------------- the checks


def repeat_phrase(value: str, p: Params) -> bool:
    """The phrase `small_n` times (first to last word), each with exactly one word changed."""
    words = p["phrase"].split()
    found = re.findall(rf"{words[0]} .*? {words[-1]}", value)
    if len(found) != p["small_n"]:
        return False
    differences = 0
    for phrase in found:
        parts = phrase.split()
        if len(parts) != len(words):
            return False
        differences = sum(1 for mine, theirs in zip(parts, words, strict=True) if mine != theirs)
        if differences > 1:
            return False
    return differences == 1  # the last phrase decides, as in the reference


def copy_span(value: str, p: Params) -> bool:
    return _same_text(value, p["prompt_to_repeat"][p["n_start"] : p["n_end"]])


def sentence_hyphens(value: str, p: Params) -> bool:
    if "-" not in value:
        return False
    parts = value.split("-")
    return all(part.strip() == part and " " not in part for part in parts) and len(parts) >= 2


def no_adjacent_consecutive(value: str, p: Params) -> bool:
    words = value.split()
    for first, second in zip(words, words[1:], strict=False):
        a, b = first[0].lower(), second[0].lower()
        if len(a) != 1 or len(b) != 1 or ord(b) - ord(a) == 1:  # `İ`.lower() is two letters
            return False
    return True


def square_brackets(value: str, p: Params) -> bool:
    return all(word.startswith("[") and word.endswith("]") for word in value.split())


def word_count_different(value: str, p: Params) -> bool:
    found = _occurrences(p["keyword"], value)
    return found < p["frequency"] if p["relation"] == RELATIONS[0] else found >= p["frequency"]


def paragraphs_by_divider(value: str, p: Params) -> bool:
    return _paragraph_count_ok(re.split(r"\s?\*\*\*\s?", value), 2)


def paragraphs_by_blank_line(value: str, p: Params) -> bool:
    return _paragraph_count_ok(re.split(r"\n\n", value), 2)


def first_word_of_sentences(value: str, p: Params) -> bool:
    for sentence in _sentences(value):
        if not sentence.strip() or sentence.split()[0].strip().lower() != p["first_word"].lower():
            return False
    return True


def first_word_of_answer(value: str, p: Params) -> bool:
    words = value.split()
    return bool(value.strip() and words) and words[0].strip().lower() == p["first_word"].lower()


def _last_word(text: str) -> str:
    return re.sub(r"[^\w\s]", "", text.split()[-1].strip()).lower()


def last_word_of_sentences(value: str, p: Params) -> bool:
    return all(
        sentence.strip() and _last_word(sentence) == p["last_word"].lower()
        for sentence in _sentences(value)
    )


def bigram_wrapping(value: str, p: Params) -> bool:
    words = value.split()
    return all(
        words[i].startswith("<<") and words[i + 1].endswith(">>")
        for i in range(0, len(words) - 1, 2)
    )


def copying_multiple(value: str, p: Params) -> bool:
    copies = value.split("******")
    return len(copies) == p["N"] and all(_same_text(c, p["prompt_to_repeat"]) for c in copies)


def letter_counting(value: str, p: Params) -> bool:
    letters = len(re.findall(r"[a-zA-Z]", value))
    if p["relation"] == "at least":
        return letters >= p["N"]
    return p["relation"] == "less than" and letters < p["N"]


def counting_composition(value: str, p: Params) -> bool:
    """Three `***`-separated paragraphs of `n_sent` sentences of `n_words` tokens. An empty
    paragraph at either end is not counted but still fails the sentence count (the reference
    checks every paragraph)."""
    paragraphs = re.split(r"\s?\*\*\*\s?", value)
    count = len(paragraphs)
    for index, paragraph in enumerate(paragraphs):
        if not paragraph.strip():
            if index in (0, len(paragraphs) - 1):
                count -= 1
            else:
                return False
        sentences = _sentences(paragraph)
        if len(sentences) != p["n_sent"]:
            return False
        if any(len(_tokens(sentence)) != p["n_words"] for sentence in sentences):
            return False
    return count == 3


def count_unique(value: str, p: Params) -> bool:
    tokens = _tokens(value)
    return len(tokens) == len(set(tokens))


def keyword_position(value: str, p: Params) -> bool:
    sentences = _sentences(value)
    if len(sentences) < p["n"]:
        return False
    tokens = _tokens(sentences[p["n"] - 1])
    return len(tokens) >= p["m"] and tokens[p["m"] - 1] == p["keyword"]


def start_end(value: str, p: Params) -> bool:
    words = value.split("-") if "-" in value else _tokens(value)
    return len(words) >= 2 and words[0].lower() == words[-1].lower()


# ---------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Check:
    """One instruction: the parameters its builder takes, those it needs, and its rule."""

    rule: Callable[[str, Params], bool]
    takes: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()


def _text(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _first_text(value: Any) -> Any:
    """A one-item list stands for its item (the reference's rule for these parameters)."""
    return value.strip() if isinstance(value, str) else value[0].strip()


CHECKS: dict[str, Check] = {
    "copy:repeat_phrase": Check(repeat_phrase, ("phrase", "small_n"), ("phrase", "small_n")),
    "copy:copy": Check(
        lambda v, p: _same_text(v, p["prompt_to_repeat"]), ("prompt_to_repeat",),
        ("prompt_to_repeat",),
    ),
    "new:copy_span_idx": Check(
        copy_span, ("prompt_to_repeat", "n_start", "n_end"), ("prompt_to_repeat", "n_start", "n_end")
    ),
    "detectable_format:sentence_hyphens": Check(sentence_hyphens),
    "keywords:no_adjacent_consecutive": Check(no_adjacent_consecutive),
    "detectable_format:square_brackets": Check(square_brackets),
    "keywords:word_once": Check(
        lambda v, p: _occurrences(p["keyword"], v) == 1, ("keyword",), ("keyword",)
    ),
    "keywords:word_count_different_numbers": Check(
        word_count_different, ("keyword", "frequency", "relation"), ("keyword",)
    ),
    "keywords:exclude_word_harder": Check(
        lambda v, p: " " + p["keyword"] + " " not in v, ("keyword", "instruction"), ("keyword",)
    ),
    "paragraphs:paragraphs": Check(paragraphs_by_divider),
    "paragraphs:paragraphs2": Check(paragraphs_by_blank_line),
    "first_word:first_word_sent": Check(first_word_of_sentences, ("first_word",), ("first_word",)),
    "first_word:first_word_answer": Check(first_word_of_answer, ("first_word",), ("first_word",)),
    "last_word:last_word_sent": Check(last_word_of_sentences, ("last_word",), ("last_word",)),
    "last_word:last_word_answer": Check(
        lambda v, p: _last_word(v) == p["last_word"].lower(), ("last_word",), ("last_word",)
    ),
    "detectable_format:bigram_wrapping": Check(bigram_wrapping),
    "copy:copying_simple": Check(
        lambda v, p: _same_text(v, p["prompt_to_repeat"]), ("prompt_to_repeat",),
        ("prompt_to_repeat",),
    ),
    "copy:copying_multiple": Check(
        copying_multiple, ("prompt_to_repeat", "N"), ("prompt_to_repeat", "N")
    ),
    "punctuation:punctuation_dot": Check(lambda v, p: "." not in v),
    "punctuation:punctuation_exclamation": Check(lambda v, p: "!" not in v),
    "count:lowercase_counting": Check(
        lambda v, p: len(re.findall(r"\b[a-z]+\b", v)) <= p["N"], ("N",), ("N",)
    ),
    "letters:letter_counting": Check(letter_counting, ("N", "relation"), ("N", "relation")),
    "count:counting_composition": Check(
        counting_composition, ("n_sent", "n_words"), ("n_sent", "n_words")
    ),
    "count:count_unique": Check(count_unique),
    "count:count_increment_word": Check(
        lambda v, p: _occurrences(p["keyword1"], v) == 1 and _occurrences(p["keyword2"], v) == 2,
        ("keyword1", "keyword2"), ("keyword1", "keyword2"),
    ),
    "keywords:palindrome": Check(lambda v, p: any(w == w[::-1] for w in v.split())),
    "keywords:keyword_specific_position": Check(
        keyword_position, ("keyword", "n", "m"), ("keyword", "n", "m")
    ),
    "keywords:start_end": Check(start_end),
}
# How each parameter is read before use (the reference strips texts, takes a list's first item).
READERS: dict[str, Callable[[Any], Any]] = {
    "phrase": _text, "keyword": _text, "first_word": _text, "keyword1": _text, "keyword2": _text,
    "last_word": _text,
}
FIRST_ITEM = {"last_word:last_word_sent", "keywords:keyword_specific_position"}


@dataclass(frozen=True)
class BuiltCheck:
    """A check with its parameters, ready to judge responses."""

    instruction_id: str
    check: Check
    params: Params

    def check_following(self, value: str) -> bool:
        return bool(self.check.rule(value, self.params))


def _missing(instruction_id: str, check: Check, params: Params) -> list[str]:
    """Needed parameters the reference would draw at random (it tests each with `not`, except
    `frequency`, drawn only when None or negative)."""
    missing = [name for name in check.needs if not params.get(name)]
    if instruction_id == "keywords:word_count_different_numbers":
        frequency = params.get("frequency")
        if frequency is None or frequency < 0:
            missing.append("frequency")
        if params.get("relation") is None:
            missing.append("relation")
    return missing


def build(instruction_id: str, kwargs: Mapping[str, Any]) -> BuiltCheck:
    """The check of an IFEvalG-only instruction with its kwargs; one-line errors for kwargs it
    does not take, lacks, or cannot use."""
    check = CHECKS[instruction_id]
    unknown = sorted(set(kwargs) - set(check.takes))
    if unknown:
        raise UserInputError(
            f"instruction {instruction_id} takes no {', '.join(unknown)} (it takes "
            f"{', '.join(check.takes) or 'nothing'}); fix the row's kwargs"
        )
    params = dict(kwargs)
    missing = _missing(instruction_id, check, params)
    if missing:
        raise UserInputError(
            f"instruction {instruction_id}: kwargs lack {', '.join(missing)} (given "
            f"{dict(kwargs)!r}); the check cannot run without them (the reference would pick "
            f"them at random); give them in the row's kwargs"
        )
    if instruction_id == "first_word:first_word_sent" and not isinstance(params["first_word"], str):
        raise UserInputError(
            f"instruction {instruction_id}: first_word must be a string, not "
            f"{params['first_word']!r}"
        )
    if instruction_id == "keywords:word_count_different_numbers" and params["relation"] not in RELATIONS:
        raise UserInputError(
            f"instruction {instruction_id}: relation {params['relation']!r} is not one "
            f"of {', '.join(RELATIONS)}"
        )
    for name, value in params.items():
        if name in READERS and value is not None:
            params[name] = _first_text(value) if instruction_id in FIRST_ITEM else READERS[name](value)
    return BuiltCheck(instruction_id, check, params)
