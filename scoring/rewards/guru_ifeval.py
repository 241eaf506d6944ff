"""Instruction following in GURU's (Reasoning360's) form: `ood__ifeval` and `ood__ifbench`
(`--reward-fn guru_ifeval`, `--reward-fn guru_ifbench`).

- `ood__ifeval` (google/IFEval): the ground truth is the list of kwargs dicts, one per
  instruction, padded with nulls (parquet's struct of every key); the ids are
  `extra_info["instruction_id_list"]`. Null kwargs are dropped, whole floats read as ints. The
  judged text is what follows the first `</think>` (up to a second one, if any).
- `ood__ifbench` (allenai/IF_multi_constraints_upto5, open-instruct's IFEvalG ids): the ground
  truth is `[{"instruction_id": [...], "kwargs": [...]}]` (a list, or its Python-literal text); only
  the first item counts, and kwargs are passed as given. The judged text follows the first
  `</think>`, stripped.

The score is 1 when every instruction is followed (strict, on the judged text; an empty text
follows nothing), as in GURU. IFEval's checks are Google's (the `if-verifiable` package);
IFEvalG's own are in scoring.rewards.ifevalg.

A check is never built without its parameters: IFEval's checks then draw them at random
(verdicts that change from run to run, and a cache that keeps one draw). Such a row, a kwarg a
check does not take, an unknown id, or `combination:repeat_prompt` without `prompt_to_repeat` is a
one-line error naming the row, before any scoring.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from typing import Any

from rollouts.errors import UserInputError
from rollouts.io import to_python
from scoring.rewards import ifevalg
from scoring.rewards.extract import THINK_CLOSE, Extraction
from scoring.rewards.ifeval import N_COLUMN, STRICT_COLUMN, random_draws
from scoring.tracebacks import describe_exception
from scoring.types import RewardResult

Instruction = tuple[str, dict[str, Any]]
# IFEvalG's second name for IFEval's letter-frequency check.
ALIASES = {"letters:letter_counting2": "keywords:letter_frequency"}


# ---------------------------------------------------------------- reading rows


def _decoded(value: Any) -> Any:
    """JSON or Python-literal text decoded; other values as plain Python."""
    value = to_python(value)
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError) as exc:
        raise UserInputError(f"cannot read {value[:80]!r} ({exc})") from exc


def _plain_kwargs(kwargs: Any, *, drop_nulls: bool) -> dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise UserInputError(f"kwargs {kwargs!r} is not a dict")
    return {
        key: int(value) if isinstance(value, float) else value
        for key, value in kwargs.items()
        if value is not None or not drop_nulls
    }


def ifeval_instructions(ground_truth: Any, extra_info: Any) -> list[Instruction]:
    """`ood__ifeval`: ids from extra_info, one null-padded kwargs dict per id in the ground truth."""
    extra = _decoded(extra_info)
    if not isinstance(extra, dict) or "instruction_id_list" not in extra:
        raise UserInputError(
            "extra_info has no instruction_id_list (GURU's ood__ifeval keeps the ids there)"
        )
    ids = [str(i) for i in _decoded(extra["instruction_id_list"])]
    kwargs = _decoded(ground_truth)
    if not isinstance(kwargs, list) or len(kwargs) < len(ids):
        raise UserInputError(
            f"the ground truth must be a list of {len(ids)} kwargs dict(s), one per instruction; "
            f"got {str(ground_truth)[:80]!r}"
        )
    return [(i, _plain_kwargs(k, drop_nulls=True)) for i, k in zip(ids, kwargs, strict=False)]


def ifbench_instructions(ground_truth: Any) -> list[Instruction] | None:
    """`ood__ifbench`: the first item's ids and kwargs; None for a ground truth that is not a
    non-empty list (GURU scores those 0)."""
    items = _decoded(ground_truth)
    if not isinstance(items, list) or not items:
        return None
    first = items[0]
    if not isinstance(first, dict):
        raise UserInputError(f"the ground truth's first item {first!r} is not a dict")
    ids = _decoded(first.get("instruction_id", []))
    kwargs = _decoded(first.get("kwargs", []))
    return [
        (str(i), _plain_kwargs(k, drop_nulls=False)) for i, k in zip(ids, kwargs, strict=False)
    ]


# ---------------------------------------------------------------- building checks


def _google_check(instruction_id: str, cls: Any, kwargs: dict[str, Any]) -> Any:
    check = cls(instruction_id)
    with random_draws() as drawn:
        try:
            check.build_description(**kwargs)
        except Exception as exc:  # a kwarg it does not take, or a value it cannot use
            raise UserInputError(
                f"instruction {instruction_id}: kwargs {kwargs!r} cannot be used "
                f"({describe_exception(exc)}); fix the row's kwargs"
            ) from exc
    if drawn:
        raise UserInputError(
            f"instruction {instruction_id}: kwargs {kwargs!r} lack a value the check needs, so "
            f"it would pick one at random; give it in the row's kwargs"
        )
    return check


def build_check(instruction_id: str, kwargs: dict[str, Any], *, ifevalg_ids: bool) -> Any:
    """IFEval's check (or, with `ifevalg_ids`, IFEvalG's) for one instruction, with its kwargs."""
    from scoring.rewards.ifeval_data import instruction_registries

    google, _ = instruction_registries()
    if ifevalg_ids and instruction_id in ifevalg.CHECKS:
        return ifevalg.build(instruction_id, kwargs)
    name = ALIASES.get(instruction_id, instruction_id) if ifevalg_ids else instruction_id
    if name not in google:
        known = "IFEval's and open-instruct IFEvalG's" if ifevalg_ids else "IFEval's"
        raise UserInputError(f"unknown instruction id {instruction_id!r}; known ids are {known}")
    return _google_check(instruction_id, google[name], kwargs)


# ---------------------------------------------------------------- the rewards


class _GuruInstructionReward:
    """1 when every instruction is followed; how many were, in extra columns."""

    version = "1"
    uses_context = True
    ifevalg_ids = False

    def instructions(self, ground_truth: Any, extra_info: Any) -> list[Instruction] | None:
        raise NotImplementedError

    def _checks(self, ground_truth: Any, extra_info: Any) -> list[Any] | None:
        found = self.instructions(ground_truth, extra_info)
        if found is None:
            return None
        return [build_check(i, k, ifevalg_ids=self.ifevalg_ids) for i, k in found]

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        checks = self._checks(ground_truth, extra_info)
        if checks is None:
            return RewardResult(score=0.0, acc=False, pred=None, status="ok")
        followed = [bool(answer.strip()) and bool(c.check_following(answer)) for c in checks]
        passed = all(followed)
        return RewardResult(
            score=1.0 if passed else 0.0,
            acc=passed,
            pred=None,
            extra={N_COLUMN: len(followed), STRICT_COLUMN: sum(followed)},
        )

    def check_rows(
        self, ground_truths: Sequence[Any], extra_infos: Sequence[Any],
        rows: Sequence[int] | None = None,
    ) -> None:
        """Every row's instructions are readable, known and take their kwargs, all of them."""
        from scoring.rewards.ifeval_data import instruction_registries

        instruction_registries()  # NLTK data and langdetect's seed, before any check is built
        numbers = range(len(ground_truths)) if rows is None else rows
        seen: set[str] = set()
        for row, ground_truth, extra_info in zip(numbers, ground_truths, extra_infos, strict=True):
            try:
                identity = repr((to_python(ground_truth), to_python(extra_info)))
                if identity not in seen:
                    seen.add(identity)
                    self._checks(ground_truth, extra_info)
            except UserInputError as exc:
                raise UserInputError(f"{self.name}: row {row}: {exc}") from exc

    name = "guru_instructions"


class GuruIfevalReward(_GuruInstructionReward):
    name = "guru_ifeval"

    def instructions(self, ground_truth: Any, extra_info: Any) -> list[Instruction]:
        return ifeval_instructions(ground_truth, extra_info)

    def extract(self, response: str) -> Extraction:
        """The text between the first `</think>` and the next (GURU's `split("</think>")[1]`)."""
        if THINK_CLOSE in response:
            return Extraction(response.split(THINK_CLOSE)[1], "after_think")
        return Extraction(response, "response")


class GuruIfbenchReward(_GuruInstructionReward):
    name = "guru_ifbench"
    ifevalg_ids = True

    def instructions(self, ground_truth: Any, extra_info: Any) -> list[Instruction] | None:
        return ifbench_instructions(ground_truth)

    def extract(self, response: str) -> Extraction:
        """Everything after the first `</think>`, stripped."""
        if THINK_CLOSE in response:
            return Extraction(response.split(THINK_CLOSE, 1)[1].strip(), "after_think")
        return Extraction(response.strip(), "response")
