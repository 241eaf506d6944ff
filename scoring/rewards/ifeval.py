"""Instruction following (IFEval and IFBench): `score --reward-fn ifeval`.

Each row names its instructions with IFEval's fields `instruction_id_list` and `kwargs` (one
kwargs dict per instruction), found in the first of these places that has them:

- `reward_model.ground_truth` (or a `ground_truth` column): a dict, its JSON text, or a list of
  such dicts (open-instruct writes `[{"instruction_id": [...], "kwargs": [...]}]`, also as
  Python-literal text); `instruction_id` is accepted for `instruction_id_list`;
- `extra_info`: a dict holding the same keys;
- the row's own columns (google/IFEval and allenai/IFBench rows), see `instruction_ground_truths`.

The checks are IFEval's (Google) and IFBench's (AI2) as packaged by `if-verifiable`; the verdict
rules are those of the reference evaluation code (lm-evaluation-harness `ifeval/utils.py`,
IFBench `evaluation_lib.py`): strict checks the response as it is; loose passes when any of eight
variants passes (the response, without its first line, last line or both, each with and without
markdown asterisks). An empty response follows nothing. `score` is the prompt-level strict verdict.
"""

from __future__ import annotations

import ast
import json
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pandas as pd

from rollouts.errors import UserInputError
from rollouts.io import to_python
from scoring.rewards.extract import THINK_CLOSE, Extraction, strip_think
from scoring.types import RewardResult

ID_KEYS = ("instruction_id_list", "instruction_id")
KWARGS_KEY = "kwargs"
# Extra columns of scored rows (counts, so that metrics need no JSON parsing).
N_COLUMN = "ifeval_instructions"
STRICT_COLUMN = "ifeval_followed_strict"
LOOSE_COLUMN = "ifeval_followed_loose"
RESULTS_COLUMN = "ifeval_results"


@dataclass(frozen=True)
class Instructions:
    """One row's instructions: ids and one kwargs dict per id."""

    ids: tuple[str, ...]
    kwargs: tuple[dict[str, Any], ...]


# ---------------------------------------------------------------- reading rows


def _parsed_text(value: Any) -> Any:
    """JSON text, or Python-literal text (single quotes, None), decoded; other values as they are."""
    if not isinstance(value, str):
        return to_python(value)
    text = value.strip()
    if not text or text[0] not in "[{":
        return value
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return value


def _from_mapping(value: Any) -> Instructions | None:
    """Instructions from a dict with IFEval's keys, or a one-dict list of it; None if absent."""
    value = _parsed_text(value)
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        found = [_from_mapping(v) for v in value]
        if all(f is not None for f in found):
            ids = tuple(i for f in found if f is not None for i in f.ids)
            kwargs = tuple(k for f in found if f is not None for k in f.kwargs)
            return Instructions(ids, kwargs)
    if not isinstance(value, Mapping):
        return None
    key = next((k for k in ID_KEYS if value.get(k) is not None), None)
    if key is None:
        return None
    raw_ids = _parsed_text(value[key])
    id_list = [raw_ids] if isinstance(raw_ids, str) else list(raw_ids)
    raw_kwargs = _parsed_text(value.get(KWARGS_KEY))
    if raw_kwargs is None:
        raw_kwargs = [{}] * len(id_list)
    if isinstance(raw_kwargs, Mapping):
        raw_kwargs = [raw_kwargs]
    kwarg_list = [_parsed_text(k) or {} for k in raw_kwargs]
    if len(kwarg_list) != len(id_list) or not all(isinstance(k, Mapping) for k in kwarg_list):
        raise UserInputError(
            f"ifeval: {len(id_list)} instruction id(s) but kwargs {raw_kwargs!r}; give one "
            f"kwargs dict per instruction"
        )
    return Instructions(tuple(map(str, id_list)), tuple(dict(k) for k in kwarg_list))


def read_instructions(ground_truth: Any, extra_info: Any) -> Instructions:
    """The row's instructions (see the module docstring), or a one-line error."""
    for place in (ground_truth, _parsed_text(extra_info)):
        found = _from_mapping(place)
        if found is not None:
            if not found.ids:
                raise UserInputError("ifeval: a row has an empty instruction_id_list")
            return found
    raise UserInputError(
        f"ifeval: no instruction_id_list in ground truth {str(ground_truth)[:80]!r} or "
        f"extra_info; give IFEval's instruction_id_list and kwargs (see docs/ifeval.md)"
    )


def has_instruction_columns(frame: pd.DataFrame) -> bool:
    return "instruction_id_list" in frame.columns


def instruction_ground_truths(frame: pd.DataFrame) -> list[Any]:
    """Ground truths built from IFEval's own columns (google/IFEval, allenai/IFBench rows)."""
    kwargs = frame[KWARGS_KEY] if KWARGS_KEY in frame.columns else [None] * len(frame)
    return [
        {"instruction_id_list": to_python(ids), KWARGS_KEY: to_python(k)}
        for ids, k in zip(frame["instruction_id_list"], kwargs, strict=True)
    ]


# ---------------------------------------------------------------- checking


@dataclass(frozen=True)
class _Checker:
    """One instruction's class and the kwargs rule of its benchmark's reference code."""

    cls: Any
    kwargs: dict[str, Any]


def _checkers(instructions: Instructions) -> list[_Checker]:
    """Checker classes per instruction; unknown ids are one error naming all of them."""
    from scoring.rewards.ifeval_data import instruction_registries

    ifeval, ifbench = instruction_registries()
    unknown = sorted({i for i in instructions.ids if i not in ifeval and i not in ifbench})
    if unknown:
        raise UserInputError(
            f"ifeval: unknown instruction id(s) {', '.join(unknown)}; known ids are IFEval's and "
            f"IFBench's (see docs/ifeval.md)"
        )
    checkers = []
    for instruction_id, raw in zip(instructions.ids, instructions.kwargs, strict=True):
        kwargs = {key: _integral(value) for key, value in raw.items()}
        if instruction_id in ifeval:
            # lm-evaluation-harness drops every falsy kwarg; IFBench's code only None.
            kept = {k: v for k, v in kwargs.items() if v}
            checkers.append(_Checker(ifeval[instruction_id], kept))
        else:
            kept = {k: v for k, v in kwargs.items() if v is not None}
            checkers.append(_Checker(ifbench[instruction_id], kept))
    return checkers


def _integral(value: Any) -> Any:
    """A whole float as an int: parquet and pandas make `1.0` of an integer kwarg padded with
    nulls (no check takes a float; `range(1.0)` raises)."""
    value = to_python(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_RANDOM_FUNCTIONS = ("randint", "randrange", "choice", "choices", "sample", "shuffle", "random",
                     "uniform")


@contextmanager
def random_draws() -> Iterator[list[str]]:
    """Records calls of the `random` module's functions, which a check makes to pick a
    parameter it was not given (its instruction's text is then made up: nothing to verify)."""
    drawn: list[str] = []
    originals = {name: getattr(random, name) for name in _RANDOM_FUNCTIONS}

    def recorder(name: str) -> Callable[..., Any]:
        def record(*args: Any, **kwargs: Any) -> Any:
            drawn.append(name)
            return originals[name](*args, **kwargs)

        return record

    for name in _RANDOM_FUNCTIONS:
        setattr(random, name, recorder(name))
    try:
        yield drawn
    finally:
        for name, function in originals.items():
            setattr(random, name, function)


def _built(instruction_id: str, checker: _Checker) -> Any:
    """The check with its kwargs; one-line errors for kwargs it rejects or lacks."""
    instance = checker.cls(instruction_id)
    with random_draws() as drawn:
        try:
            instance.build_description(**checker.kwargs)
        except Exception as exc:  # a kwarg the check does not take, or a value it cannot use
            raise UserInputError(
                f"ifeval: instruction {instruction_id}: invalid kwargs {checker.kwargs!r} "
                f"({type(exc).__name__}: {exc}); fix the row's kwargs"
            ) from exc
    if drawn:
        picked = instance.get_instruction_args() or {}
        missing = sorted(k for k, v in picked.items() if v is not None and k not in checker.kwargs)
        raise UserInputError(
            f"ifeval: instruction {instruction_id}: kwargs lack {', '.join(missing) or 'a value'} "
            f"(given {checker.kwargs!r}; lm-evaluation-harness drops empty and zero values), so "
            f"its check would pick them at random; give them in the row's kwargs"
        )
    return instance


def loose_variants(response: str) -> list[str]:
    """The reference's eight loose variants, in its order."""
    lines = response.split("\n")
    remove_first = "\n".join(lines[1:]).strip()
    remove_last = "\n".join(lines[:-1]).strip()
    remove_both = "\n".join(lines[1:-1]).strip()
    plain = [response, remove_first, remove_last, remove_both]
    return [
        response,
        response.replace("*", ""),
        *plain[1:],
        *(text.replace("*", "") for text in plain[1:]),
    ]


def check_instructions(
    response: str, instructions: Instructions
) -> tuple[list[bool], list[bool]]:
    """Strict and loose verdicts, one per instruction."""
    checkers = _checkers(instructions)
    needs_tagger(instructions)
    variants = loose_variants(response)
    strict, loose = [], []
    for instruction_id, checker in zip(instructions.ids, checkers, strict=True):
        instance = _built(instruction_id, checker)
        strict.append(bool(response.strip() and instance.check_following(response)))
        loose.append(any(v.strip() and instance.check_following(v) for v in variants))
    return strict, loose


TAGGED_INSTRUCTIONS = frozenset({"words:start_verb"})


def needs_tagger(instructions: Instructions) -> None:
    """IFBench's words:start_verb needs NLTK's tagger, which no package installs."""
    from scoring.rewards.ifeval_data import TAGGER_HELP, has_tagger

    if TAGGED_INSTRUCTIONS.intersection(instructions.ids) and not has_tagger():
        raise UserInputError(f"ifeval: words:start_verb cannot be checked: {TAGGER_HELP}")


# ---------------------------------------------------------------- the reward


def _checks_version() -> str:
    try:
        return metadata.version("if-verifiable")
    except metadata.PackageNotFoundError:
        return "missing"


class IfevalReward:
    """1.0 when every instruction is followed (strict); per-instruction results as extras."""

    name = "ifeval"
    uses_context = True  # instructions may live in extra_info

    def __init__(self) -> None:
        self.version = "1+if-verifiable-" + _checks_version()

    def extract(self, response: str) -> Extraction:
        """The response after any reasoning; a reasoning block that never closed follows nothing."""
        text = strip_think(response)
        if text is None:
            return Extraction("", "unfinished_think")
        if THINK_CLOSE in response:
            return Extraction(text.strip(), "after_think")
        return Extraction(text, "response")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        instructions = read_instructions(ground_truth, extra_info)
        strict, loose = check_instructions(answer, instructions)
        followed = all(strict)
        results = [
            {"id": i, "strict": s, "loose": loo}
            for i, s, loo in zip(instructions.ids, strict, loose, strict=True)
        ]
        return RewardResult(
            score=1.0 if followed else 0.0,
            acc=followed,
            pred=None,
            extra={
                N_COLUMN: len(strict),
                STRICT_COLUMN: sum(strict),
                LOOSE_COLUMN: sum(loose),
                "ifeval_fraction_strict": sum(strict) / len(strict),
                "ifeval_fraction_loose": sum(loose) / len(loose),
                RESULTS_COLUMN: results,
            },
        )

    def check_rows(
        self, ground_truths: Sequence[Any], extra_infos: Sequence[Any],
        rows: Sequence[int] | None = None,
    ) -> None:
        """Before any scoring: every row's instructions are readable, known, take their kwargs
        (all of them: none is left for the check to pick at random) and have the data they
        need. Errors name the row (its number in `rows`, counted from 0) and the instruction."""
        seen: set[str] = set()
        numbers = range(len(ground_truths)) if rows is None else rows
        for row, ground_truth, extra_info in zip(numbers, ground_truths, extra_infos, strict=True):
            try:
                instructions = read_instructions(ground_truth, extra_info)
                identity = repr(instructions)
                if identity in seen:
                    continue
                seen.add(identity)
                for instruction_id, checker in zip(
                    instructions.ids, _checkers(instructions), strict=True
                ):
                    _built(instruction_id, checker)
                needs_tagger(instructions)
            except UserInputError as exc:
                raise UserInputError(f"ifeval: row {row}: {str(exc).removeprefix('ifeval: ')}") from exc


# ---------------------------------------------------------------- metrics


def instruction_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """IFEval's four metrics over a data source's rows, when they were scored by ifeval.

    Prompt level: the share of rows following every instruction; instruction level: the share of
    all instructions followed. Every row given counts in all four: one without verdicts (its
    generation failed, or its reward failed under `--on-error zero`) follows none of its
    instructions, which the scorer counted into N_COLUMN (see instruction_counts). The scorer
    leaves rows out of all four alike (`--on-error fail|skip`) by not passing them."""
    if N_COLUMN not in frame.columns or "reward_fn" not in frame.columns:
        return {}
    rows = frame[frame["reward_fn"] == IfevalReward.name]
    if rows.empty:
        return {}
    total = rows[N_COLUMN].astype(float).fillna(0.0)
    metrics = {}
    for level, column in (("strict", STRICT_COLUMN), ("loose", LOOSE_COLUMN)):
        followed = rows[column].astype(float).fillna(0.0) if column in rows else total * 0
        every = (followed == total) & (total > 0)
        metrics[f"prompt_level_{level}_acc"] = float(every.sum() / len(rows))
        metrics[f"inst_level_{level}_acc"] = (
            float(followed.sum() / total.sum()) if total.sum() else 0.0
        )
    return metrics


def instruction_counts(ground_truths: Sequence[Any], extra_infos: Sequence[Any]) -> list[int | None]:
    """Each row's number of instructions (None where they cannot be read), for rows that got no
    verdict: instruction-level metrics count their instructions as not followed."""
    counts: list[int | None] = []
    for ground_truth, extra_info in zip(ground_truths, extra_infos, strict=True):
        try:
            counts.append(len(read_instructions(ground_truth, extra_info).ids))
        except UserInputError:
            counts.append(None)
    return counts
