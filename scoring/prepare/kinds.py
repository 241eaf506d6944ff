"""One converter per KIND: a raw row of a public dataset → the question, its ground truth and the
facts worth keeping in `extra_info`. Each kind knows the field names of the datasets it reads.

A converter raises `Unextractable` when a row has the fields but no usable answer (the row is
dropped and counted); `required_columns` lets the caller reject a source that lacks the fields
altogether before any row is converted.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

LETTERS = string.ascii_uppercase


class Unextractable(ValueError):
    """A row whose answer cannot be read; the message says why."""


class WrongType(TypeError):
    """A field holding another type than the kind reads (a list where text is expected): the
    source is not what the kind thinks, so the run stops, naming the row."""


def text_field(row: dict[str, Any], *names: str) -> str:
    """The first of `names` present, which must be text (a number is taken as its digits)."""
    name = next((n for n in names if row.get(n) is not None), None)
    if name is None:
        raise KeyError(names[0])
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise WrongType(f"field {name!r} holds a {type(value).__name__} ({str(value)[:40]!r}), "
                        "where text is expected")
    return str(value)


@dataclass
class Item:
    """One converted row before templating."""

    question: str
    ground_truth: Any
    extra: dict[str, Any] = field(default_factory=dict)
    reference_solution: str | None = None


@dataclass(frozen=True)
class Kind:
    """How to convert one family of datasets.

    layouts: the alternative sets of columns a source may have (the first that fits is used);
    domain: the `domain__` prefix of data_source and the default template; ability: verl's field.
    """

    name: str
    domain: str
    ability: str
    template: str
    layouts: tuple[tuple[str, ...], ...]
    convert: Callable[[dict[str, Any], ConvertOptions], Item]


@dataclass(frozen=True)
class ConvertOptions:
    seed: int = 0
    question_col: str | None = None
    answer_col: str | None = None
    choices_col: str | None = None
    tests_col: str | None = None


def first(row: dict[str, Any], *names: str) -> Any:
    """The first of `names` present (and not null) in the row."""
    return next((row[n] for n in names if row.get(n) is not None), None)


# ------------------------------------------------------------------------------ gsm8k, math

_GSM8K_ANSWER = re.compile(r"#### (\-?[0-9\.\,]+)")


def gsm8k_ground_truth(solution: str) -> str:
    """verl's rule: the number after `####`, commas removed (the last `####` when there are several)."""
    found = _GSM8K_ANSWER.findall(solution)
    if not found:
        raise Unextractable("no '#### <number>' in the answer")
    return str(found[-1]).replace(",", "")


def convert_gsm8k(row: dict[str, Any], options: ConvertOptions) -> Item:
    answer = text_field(row, "answer")
    question = text_field(row, "question")
    return Item(
        question=question,
        ground_truth=gsm8k_ground_truth(answer),
        extra={"answer": answer, "question": question},
    )


# An `answer` field longer than this, or of several lines, is a worked solution, not a final answer.
FINAL_ANSWER_CHARS = 120


def math_ground_truth(row: dict[str, Any]) -> str:
    """A short `answer` field wins (MATH-500, AIME, AMC); a gsm8k-style worked answer gives the
    number after its `####`; else the last \\boxed{} of the solution (or of the worked answer)."""
    from scoring.rewards.extract import last_boxed  # imports every reward: only when needed

    names = [n for n in ("answer", "final_answer", "expected_answer") if row.get(n) is not None]
    answer = text_field(row, *names).strip() if names else ""
    if answer and _GSM8K_ANSWER.search(answer):
        return gsm8k_ground_truth(answer)
    if answer and "\n" not in answer and len(answer) <= FINAL_ANSWER_CHARS:
        return answer
    solution = answer or (text_field(row, "solution") if row.get("solution") is not None else "")
    boxed = last_boxed(solution) if solution else None
    if boxed is None or boxed.answer is None:
        if answer:
            raise Unextractable("the answer field is a worked solution with no '#### N' and no "
                                "\\boxed{} final answer")
        raise Unextractable("no answer field and no complete \\boxed{} in the solution")
    return boxed.answer


def convert_math(row: dict[str, Any], options: ConvertOptions) -> Item:
    question = text_field(row, "problem", "question", "Problem", "Question")
    extra: dict[str, Any] = {"question": question}
    for key in ("level", "type", "subject"):
        if row.get(key) is not None:
            extra[key] = str(row[key])
    return Item(question=question, ground_truth=math_ground_truth(row), extra=extra)


# ------------------------------------------------------------------------------ qa


def qa_answers(row: dict[str, Any]) -> list[str]:
    """NQ-open (`answer` list), TriviaQA (`answer.value`/`aliases`), SQuAD (`answers.text`)."""
    value = first(row, "answers", "answer", "golden_answers")
    if isinstance(value, dict):  # TriviaQA {value, aliases, ...}; SQuAD {text: [...], ...}
        value = value.get("text") or [value.get("value"), *(value.get("aliases") or [])]
    golds = value if isinstance(value, list) else [value]
    unique = list(dict.fromkeys(str(g).strip() for g in golds if g is not None and str(g).strip()))
    if not unique:
        raise Unextractable("no non-empty gold answer")
    return unique


def convert_qa(row: dict[str, Any], options: ConvertOptions) -> Item:
    question = text_field(row, "question", "query").strip()
    context = row.get("context")
    text = f"Context: {context}\n\n{question}" if context else question
    return Item(question=text, ground_truth=qa_answers(row), extra={"question": question})


# ------------------------------------------------------------------------------ mcq


def lettered(question: str, options: Sequence[str]) -> str:
    lines = [f"{LETTERS[i]}. {str(option).strip()}" for i, option in enumerate(options)]
    return question.strip() + "\n\n" + "\n".join(lines)


def _gpqa(row: dict[str, Any], options: ConvertOptions) -> tuple[str, list[str], int]:
    """GPQA keeps the right answer apart: options are shuffled with a per-row seed."""
    correct = str(row["Correct Answer"]).strip()
    choices = [correct] + [str(row[f"Incorrect Answer {i}"]).strip() for i in (1, 2, 3)]
    order = list(range(4))
    random.Random(f"{options.seed}:{row['Question']}").shuffle(order)
    return str(row["Question"]), [choices[i] for i in order], order.index(0)


def _letter_index(value: Any, count: int, labels: Sequence[str] | None = None) -> int:
    """An answer given as a letter, a label (ARC uses '1'..'4' too) or a 0-based index."""
    if labels is not None and str(value) in [str(label) for label in labels]:
        return [str(label) for label in labels].index(str(value))
    text = str(value).strip().strip("()").upper()
    if len(text) == 1 and text in LETTERS[:count]:
        return LETTERS.index(text)
    if isinstance(value, int) or text.isdigit():
        return int(text)
    raise Unextractable(f"answer {value!r} is neither a letter nor an index")


def _choices(row: dict[str, Any], options: ConvertOptions) -> tuple[str, list[str], int]:
    if "Correct Answer" in row:
        return _gpqa(row, options)
    if "endings" in row:  # HellaSwag
        context = first(row, "ctx") or f"{row.get('ctx_a', '')} {row.get('ctx_b', '')}".strip()
        endings = [str(e) for e in row["endings"]]
        return f"Choose the most plausible continuation.\n\n{context}", endings, int(row["label"])
    question = str(first(row, "question", "Question"))
    raw = row[options.choices_col] if options.choices_col else first(row, "choices", "options")
    labels = None
    if isinstance(raw, dict):  # ARC: {"text": [...], "label": ["A", ...] or ["1", ...]}
        labels, raw = list(raw.get("label") or []), list(raw.get("text") or [])
    choices = [str(c) for c in raw or []]
    if options.answer_col:
        answer = row[options.answer_col]
    else:
        answer = first(row, "answer_index", "answerKey", "answer", "label")
    return question, choices, _letter_index(answer, len(choices), labels)


def convert_mcq(row: dict[str, Any], options: ConvertOptions) -> Item:
    question, choices, index = _choices(row, options)
    if len(choices) < 2 or len(choices) > len(LETTERS):
        raise Unextractable(f"{len(choices)} options; need 2 to {len(LETTERS)}")
    if not 0 <= index < len(choices):
        raise Unextractable(f"answer index {index} outside the {len(choices)} options")
    return Item(
        question=lettered(question, choices),
        ground_truth=LETTERS[index],
        extra={"question": question, "choices": choices, "answer_text": choices[index]},
    )


# ------------------------------------------------------------------------------ custom


def convert_custom_answer(row: dict[str, Any], options: ConvertOptions) -> Item:
    assert options.question_col and options.answer_col
    answer = row[options.answer_col]
    if answer is None or not str(answer).strip():
        raise Unextractable(f"empty {options.answer_col!r}")
    ground_truth = [str(a) for a in answer] if isinstance(answer, list) else str(answer).strip()
    return Item(question=text_field(row, options.question_col), ground_truth=ground_truth)


def convert_custom_mcq(row: dict[str, Any], options: ConvertOptions) -> Item:
    assert options.question_col and options.choices_col and options.answer_col
    renamed = {"question": row[options.question_col], **row}
    return convert_mcq(renamed, options)
