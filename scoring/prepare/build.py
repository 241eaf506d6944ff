"""`prepare`: a raw dataset → verl's parquet schema, ready for generate, score and training.

Rows: `data_source`, `prompt` (chat messages), `ability`, `reward_model` {style, ground_truth},
`extra_info` {split, index, id, template, template_hash, and what the kind keeps}.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollouts.errors import UserInputError
from rollouts.io import table_format, write_table_atomic
from scoring.journal import VerdictJournal
from scoring.prepare import code, guru, kinds
from scoring.prepare.kinds import ConvertOptions, Item, Kind, Unextractable, WrongType
from scoring.prepare.sources import load_rows, source_name
from scoring.prepare.templates import apply_template, resolve_template, template_hash

KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("gsm8k", "math", "math", "gsm8k", (("question", "answer"),), kinds.convert_gsm8k),
        Kind("math", "math", "math", "math",
             (("problem", "answer"), ("problem", "solution"), ("question", "answer"),
              ("Problem", "Answer")),
             kinds.convert_math),
        Kind("code", "codegen", "code", "code", tuple(c for c, _ in code.CODE_LAYOUTS),
             code.convert_code),
        Kind("qa", "qa", "qa", "qa",
             (("question", "answer"), ("question", "answers"), ("question", "golden_answers")),
             kinds.convert_qa),
        Kind("mcq", "mcq", "mcq", "mcq",
             (("Question", "Correct Answer"), ("ctx", "endings", "label"),
              ("question", "choices"), ("question", "options")),
             kinds.convert_mcq),
        # GURU (Reasoning360) domains: their wording, their data-source names
        Kind("arcagi", "simulation", "reasoning", "arcagi", (("train", "test"),),
             guru.convert_arcagi),
        Kind("barc", "simulation", "reasoning", "arcagi", (("examples",),), guru.convert_barc),
        Kind("zebra_puzzle", "logic", "logical_reasoning", "zebra_puzzle",
             (("instruction", "clues", "ground_truth"),), guru.convert_zebra),
        Kind("ordering_puzzle", "logic", "logical_reasoning", "ordering_puzzle",
             (("instruction", "input", "ground_truth"),), guru.convert_ordering),
        Kind("graph_puzzle", "logic", "logical_reasoning", "graph_puzzle",
             (("prompt", "correct_response"),), guru.convert_graph),
        Kind("livebench", "ood", "ood", "none", (("turns", "ground_truth", "task"),),
             guru.convert_livebench),
        Kind("ifeval", "ood", "ood", "none", (("prompt", "instruction_id_list", "kwargs"),),
             guru.convert_ifeval),
        Kind("ifbench", "ood", "ood", "none", (("messages", "ground_truth"),),
             guru.convert_ifbench),
        Kind("stem_web", "stem", "stem", "stem_web", (("question", "answer"),),
             guru.convert_stem_web),
    )
}
# gsm8k keeps verl's own data_source name, which `score --reward-fn auto` knows.
FIXED_DATA_SOURCES = {
    "gsm8k": "openai/gsm8k",
    # GURU's names, which `auto` sends to the GURU rewards (arcagi: pass --data-source
    # simulation__arcagi2 for ARC-AGI-2)
    "arcagi": "simulation__arcagi1", "barc": "simulation__barc",
    "zebra_puzzle": "logic__zebra_puzzle_dataset",
    "ordering_puzzle": "logic__ordering_puzzle_dataset",
    "graph_puzzle": "logic__graph_logical_dataset",
    "livebench": "ood__livebench", "ifeval": "ood__ifeval", "ifbench": "ood__ifbench",
    "stem_web": "stem_web",
}
ID_COLUMNS = ("id", "task_id", "problem_id", "unique_id", "question_id", "key", "Record ID",
              "idx", "index")
SHOWN_IDS = 5
# Column names that usually hold the question / the answer, for the mapping a bad source is offered.
QUESTION_LIKE = ("question", "problem", "Question", "Problem", "prompt", "query", "text", "input")
ANSWER_LIKE = ("answer", "answers", "solution", "Answer", "target", "label", "output", "gold")


@dataclass(frozen=True, kw_only=True)
class PrepareOptions:
    split: str | None = None
    template: str | None = None
    system_prompt: str | None = None
    limit: int | None = None
    seed: int = 0
    data_source: str | None = None
    strict: bool = False
    verify_code: bool = True
    allow_unsandboxed: bool = False
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    check_timeout_s: float = code.CHECK_TIMEOUT_S  # per reference solution, all its tests
    checks: VerdictJournal | None = None  # reference checks kept across an interrupted run
    echo: Callable[[str], None] | None = None  # progress lines
    convert: ConvertOptions = field(default_factory=ConvertOptions)
    custom_domain: str = "math"


@dataclass
class PrepareResult:
    rows: list[dict[str, Any]]
    data_source: str
    read: int
    unextractable: list[tuple[str, str]]  # (source id, why)
    failed_reference: list[str]  # source ids whose reference solution failed its tests
    duplicates: list[str] = field(default_factory=list)  # source ids of prompts seen before

    def summary(self) -> dict[str, Any]:
        return {
            "data_source": self.data_source,
            "rows_read": self.read,
            "rows_written": len(self.rows),
            "unextractable": len(self.unextractable),
            "unextractable_ids": [i for i, _ in self.unextractable[:SHOWN_IDS]],
            "failed_reference_solution": len(self.failed_reference),
            "failed_reference_ids": self.failed_reference[:SHOWN_IDS],
            "duplicate_prompts": len(self.duplicates),
            "duplicate_ids": self.duplicates[:SHOWN_IDS],
        }


def custom_kind(options: ConvertOptions, domain: str) -> Kind:
    """`custom`: the user maps the columns; tests make it code, choices mcq, else `domain`."""
    if not options.question_col:
        raise UserInputError("custom needs --question-col and one of --answer-col / --tests-col")
    columns: tuple[str, ...]
    if options.tests_col:
        columns = (options.question_col, options.tests_col)
        return Kind("custom", "codegen", "code", "code", (columns,), code.convert_custom_tests)
    if not options.answer_col:
        raise UserInputError("custom needs --answer-col (or --tests-col for code)")
    if options.choices_col:
        columns = (options.question_col, options.choices_col, options.answer_col)
        return Kind("custom", "mcq", "mcq", "mcq", (columns,), kinds.convert_custom_mcq)
    if domain not in ("math", "qa"):
        raise UserInputError(f"--domain {domain!r}: use math or qa for custom answer columns")
    columns = (options.question_col, options.answer_col)
    return Kind("custom", domain, domain, domain, (columns,), kinds.convert_custom_answer)


def kind_for(name: str, options: PrepareOptions) -> Kind:
    if name == "custom":
        return custom_kind(options.convert, options.custom_domain)
    if name not in KINDS:
        raise UserInputError(f"unknown kind {name!r}; use {', '.join([*KINDS, 'custom'])}")
    return KINDS[name]


def check_columns(kind: Kind, rows: list[dict[str, Any]], source: str) -> None:
    """One error naming the missing columns and the `custom` mapping that would read the source."""
    present = set(rows[0]) if rows else set()
    if any(set(layout) <= present for layout in kind.layouts):
        return
    wanted = " or ".join("+".join(layout) for layout in kind.layouts[:4])
    question = next((c for c in QUESTION_LIKE if c in present), "COL")
    answer = next((c for c in ANSWER_LIKE if c in present), "COL")
    raise UserInputError(
        f"{source}: {kind.name} needs the columns {wanted}; it has {', '.join(sorted(present))}. "
        f"Map yours with: rollouts prepare custom {source} --question-col {question} "
        f"--answer-col {answer} (or --tests-col / --choices-col)"
    )


def prepare(kind_name: str, source: str, options: PrepareOptions) -> PrepareResult:
    """Read, convert, template and (for code with reference solutions) verify every row."""
    kind = kind_for(kind_name, options)
    template = resolve_template(options.template, kind.template)
    rows = load_rows(source, options.split)
    if not rows:
        raise UserInputError(f"{source}: no rows to prepare")
    check_columns(kind, rows, source)
    indexed = _select(list(enumerate(rows)), options)
    items, unextractable = _convert(kind, indexed, options, source)
    if options.strict and unextractable:
        raise UserInputError(_unextractable_message(unextractable) + "; drop --strict to skip them")
    failed: set[int] = set()
    if kind.domain == "codegen" and options.verify_code:
        failed = code.failing_references(
            items, workers=options.workers, allow_unsandboxed=options.allow_unsandboxed,
            timeout_s=options.check_timeout_s, journal=options.checks, echo=options.echo,
        )
    data_source = options.data_source or _default_data_source(kind, source)
    split = options.split or "test"
    built = [
        _verl_row(item, index, rows[index], kind, data_source, template, split, options)
        for index, item in items
        if index not in failed
    ]
    failed_ids = [_source_id(rows[index], index) for index, _ in items if index in failed]
    kept_indices = [index for index, _ in items if index not in failed]
    built, duplicates = _drop_duplicate_prompts(built, [_source_id(rows[i], i) for i in kept_indices])
    return PrepareResult(built, data_source, len(indexed), unextractable, failed_ids, duplicates)


def _drop_duplicate_prompts(
    built: list[dict[str, Any]], ids: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows with each prompt once (the first kept), and the source ids of the others:
    `generate` samples a prompt N times already and refuses a file that repeats one."""
    seen: set[str] = set()
    kept, duplicates = [], []
    for row, source_id in zip(built, ids, strict=True):
        key = json.dumps(row["prompt"], sort_keys=True)
        if key in seen:
            duplicates.append(source_id)
        else:
            seen.add(key)
            kept.append(row)
    return kept, duplicates


def write_prepared(result: PrepareResult, output: Path, *, overwrite: bool) -> None:
    table_format(output)
    if output.exists() and not overwrite:
        raise UserInputError(f"{output} exists; pass --overwrite to replace it")
    if not result.rows:
        raise UserInputError("no row could be prepared; nothing written")
    import pyarrow as pa

    write_table_atomic(pa.Table.from_pylist(result.rows), output)


def _select(
    indexed: list[tuple[int, dict[str, Any]]], options: PrepareOptions
) -> list[tuple[int, dict[str, Any]]]:
    """`--limit N` takes a seeded random sample (in source order), not just the first N rows."""
    if options.limit is None or options.limit >= len(indexed):
        return indexed
    if options.limit <= 0:
        raise UserInputError(f"--limit {options.limit}: give a positive number of rows")
    chosen = random.Random(options.seed).sample(range(len(indexed)), options.limit)
    return [indexed[i] for i in sorted(chosen)]


def _convert(
    kind: Kind, indexed: list[tuple[int, dict[str, Any]]], options: PrepareOptions, source: str
) -> tuple[list[tuple[int, Item]], list[tuple[str, str]]]:
    items: list[tuple[int, Item]] = []
    unextractable: list[tuple[str, str]] = []
    for index, row in indexed:
        try:
            items.append((index, kind.convert(row, options.convert)))
        except WrongType as exc:
            raise UserInputError(
                f"{source} row {index} (id {_source_id(row, index)}): {exc}; fix the source, or "
                f"map other columns with `rollouts prepare custom`"
            ) from exc
        except (Unextractable, KeyError, TypeError, ValueError) as exc:
            unextractable.append((_source_id(row, index), str(exc) or type(exc).__name__))
    return items, unextractable


def _unextractable_message(unextractable: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{i}: {why}" for i, why in unextractable[:SHOWN_IDS])
    return f"{len(unextractable)} row(s) without a usable answer (first: {shown})"


def _default_data_source(kind: Kind, source: str) -> str:
    return FIXED_DATA_SOURCES.get(kind.name) or f"{kind.domain}__{source_name(source)}"


def _source_id(row: dict[str, Any], index: int) -> str:
    value = next((row[c] for c in ID_COLUMNS if row.get(c) is not None), None)
    return str(value) if value is not None else str(index)


def _verl_row(
    item: Item, index: int, raw: dict[str, Any], kind: Kind, data_source: str, template: str,
    split: str, options: PrepareOptions,
) -> dict[str, Any]:
    messages = [{"role": "system", "content": options.system_prompt}] if options.system_prompt else []
    messages.append({"role": "user", "content": apply_template(template, item.question)})
    extra_info = {
        "split": split,
        "index": index,
        "id": _source_id(raw, index),
        "template": template,
        "template_hash": template_hash(template),
        **item.extra,
    }
    return {
        "data_source": data_source,
        "prompt": messages,
        "ability": kind.ability,
        "reward_model": {"style": "rule", "ground_truth": item.ground_truth},
        "extra_info": extra_info,
    }
