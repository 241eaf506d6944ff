"""`rollouts prepare KIND SOURCE -o OUT` and `rollouts prepare mix A B ... -o MIX`."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from rollouts.clitools import echo_err, handle_errors
from rollouts.errors import UserInputError
from rollouts.io import table_format, write_table_atomic
from scoring.journal import VerdictJournal
from scoring.prepare.build import KINDS, PrepareOptions, PrepareResult, prepare, write_prepared
from scoring.prepare.code import CHECK_TIMEOUT_S, KEPT_CHECKS
from scoring.prepare.kinds import ConvertOptions
from scoring.prepare.mix import mix
from scoring.workers import default_workers

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group("prepare", context_settings=CONTEXT)
def prepare_group() -> None:
    """Convert raw datasets into verl's parquet schema, or mix prepared sets.

    \b
      rollouts prepare gsm8k data/gsm8k_test.parquet -o prepared/gsm8k.parquet
      rollouts prepare math HuggingFaceH4/MATH-500 --split test -o prepared/math500.parquet
      rollouts prepare mix prepared/gsm8k.parquet prepared/qa.parquet --ratio 1:1 -o mix.parquet

    The output goes straight into `rollouts generate`, `score --reward-fn auto` and verl training.
    """


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("source"),
        click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
                     help="Output file (.parquet or .jsonl)."),
        click.option("--split", default=None,
                     help="Split of a dataset folder or hub id; also recorded in extra_info."),
        click.option("--template", default=None,
                     help="Template name (math, gsm8k, code, qa, mcq, none) or text with {question}."),
        click.option("--system-prompt", default=None, help="A system message before each prompt."),
        click.option("--limit", type=int, default=None, help="A seeded random sample of N rows."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of --limit and of option shuffling (GPQA)."),
        click.option("--data-source", default=None,
                     help="data_source of every row (default: DOMAIN__SOURCE-NAME; gsm8k: openai/gsm8k)."),
        click.option("--strict", is_flag=True, help="Fail when any row's answer cannot be extracted."),
        click.option("--overwrite", is_flag=True, help="Replace an existing output file."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def code_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--verify/--no-verify", default=True, show_default=True,
                     help="Run reference solutions against their tests in the sandbox; drop failures."),
        click.option("--allow-unsandboxed", is_flag=True,
                     help="Verify without bubblewrap (runs dataset code unisolated)."),
        click.option("--check-timeout", "check_timeout_s", type=float,
                     default=CHECK_TIMEOUT_S, show_default=True,
                     help="Seconds a reference solution gets for all its tests; past it, it fails."),
        click.option("--workers", type=int, default=default_workers, show_default="cores",
                     help="Reference solutions checked at once."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def run_prepare(kind: str, output: Path, source: str, **values: Any) -> None:
    table_format(output)
    if output.exists() and not values["overwrite"]:
        raise UserInputError(f"{output} exists; pass --overwrite to replace it")
    options = PrepareOptions(
        split=values["split"], template=values["template"], system_prompt=values["system_prompt"],
        limit=values["limit"], seed=values["seed"], data_source=values["data_source"],
        strict=values["strict"], verify_code=values.get("verify", True),
        allow_unsandboxed=values.get("allow_unsandboxed", False),
        convert=values.get("convert") or ConvertOptions(seed=values["seed"]),
        custom_domain=values.get("domain") or "math",
    )
    if options.verify_code and "check_timeout_s" in values:
        if values["check_timeout_s"] <= 0 or values["workers"] < 1:
            raise UserInputError("--check-timeout must be > 0 seconds and --workers at least 1")
        # Checks kept as they are made: a rerun after an interruption does not run them again.
        checks = VerdictJournal(output, fresh=values["overwrite"], kept=KEPT_CHECKS)
        options = dataclasses.replace(
            options, check_timeout_s=values["check_timeout_s"], workers=values["workers"],
            checks=checks, echo=echo_err,
        )
    try:
        result = prepare(kind, source, options)
        write_prepared(result, output, overwrite=values["overwrite"])
    finally:
        if options.checks is not None:
            options.checks.close()
    if options.checks is not None:
        options.checks.finish()
    report(result, output)


def report(result: PrepareResult, output: Path) -> None:
    summary = result.summary()
    if result.unextractable:
        shown = ", ".join(summary["unextractable_ids"])
        echo_err(f"skipped {len(result.unextractable)} row(s) without a usable answer "
                 f"(first ids: {shown}); --strict makes this an error")
    if result.failed_reference:
        shown = ", ".join(summary["failed_reference_ids"])
        echo_err(f"dropped {len(result.failed_reference)} code item(s) whose reference solution "
                 f"fails its own tests (first ids: {shown})")
    if result.duplicates:
        shown = ", ".join(summary["duplicate_ids"])
        echo_err(f"dropped {len(result.duplicates)} row(s) repeating an earlier prompt "
                 f"(first ids: {shown}); each prompt is kept once")
    click.echo(json.dumps({**summary, "output": str(output)}))


def _kind_command(kind: str, help_text: str) -> click.Command:
    @common_options
    @handle_errors
    def command(source: str, output: Path, **values: Any) -> None:
        run_prepare(kind, output, source, **values)

    command.__doc__ = help_text
    decorated = code_options(command) if kind == "code" else command
    return click.command(kind, context_settings=CONTEXT)(decorated)


KIND_HELP = {
    "gsm8k": "GSM8K (question/answer with '####'): ground truth is the number after '####'.",
    "math": "MATH, MATH-500, AIME/AMC: `answer`, else the last \\boxed{} of `solution`.",
    "code": "HumanEval, MBPP, APPS/TACO, CodeContests, LiveCodeBench: tests for `score --reward-fn code`.",
    "qa": "NaturalQuestions, TriviaQA, SQuAD: a list of gold answers.",
    "mcq": "GPQA, MMLU, MMLU-Pro, ARC, HellaSwag: lettered options, the gold letter.",
    "arcagi": "GURU: ARC-AGI tasks (train/test grid pairs) -> simulation__arcagi1, <answer> grids.",
    "barc": "GURU: BARC rows (examples: grid pairs) -> simulation__barc, <answer> grids.",
    "zebra_puzzle": "GURU: zebra puzzles (instruction, clues, solved grid) -> "
    "logic__zebra_puzzle_dataset.",
    "ordering_puzzle": "GURU: ordering puzzles (instruction, input, ordered names) -> "
    "logic__ordering_puzzle_dataset.",
    "graph_puzzle": "GURU: graph search puzzles (prompt, correct_response) -> "
    "logic__graph_logical_dataset.",
    "livebench": "GURU: LiveBench rows (turns, ground_truth, task) -> ood__livebench.",
    "ifeval": "GURU: google/IFEval rows -> ood__ifeval (kwargs as the ground truth).",
    "ifbench": "GURU: IF_multi_constraints rows (messages, ground_truth) -> ood__ifbench.",
    "stem_web": "GURU: WebInstruct rows (question, answer) -> stem_web, judged by a model.",
}
for _name in KINDS:
    prepare_group.add_command(_kind_command(_name, KIND_HELP[_name]))


@prepare_group.command("custom", context_settings=CONTEXT)
@common_options
@code_options
@click.option("--question-col", required=True, help="Column holding the question.")
@click.option("--answer-col", default=None, help="Column holding the answer (or the gold letter/index).")
@click.option("--choices-col", default=None, help="Column holding the options: multiple choice.")
@click.option("--tests-col", default=None, help="Column holding code tests: code.")
@click.option("--domain", type=click.Choice(["math", "qa"]), default="math", show_default=True,
              help="Domain of answer-only rows.")
@handle_errors
def custom(source: str, output: Path, question_col: str, answer_col: str | None,
           choices_col: str | None, tests_col: str | None, **values: Any) -> None:
    """Any dataset, with its columns named: question + answer, + choices, or + tests."""
    values["convert"] = ConvertOptions(
        seed=values["seed"], question_col=question_col, answer_col=answer_col,
        choices_col=choices_col, tests_col=tests_col,
    )
    run_prepare("custom", output, source, **values)


@prepare_group.command("mix", context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--ratio", default=None, help="Shares per input in order, e.g. 2:1:1.")
@click.option("--equal", is_flag=True, help="The same share for every input.")
@click.option("--size", type=int, default=None,
              help="Rows in the mix (default: the largest mix that oversamples nothing).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@handle_errors
def mix_command(inputs: tuple[Path, ...], output: Path, ratio: str | None, equal: bool,
                size: int | None, seed: int, overwrite: bool) -> None:
    """A shuffled mixed-domain set from prepared files, in the proportions asked for."""
    table_format(output)
    if output.exists() and not overwrite:
        raise UserInputError(f"{output} exists; pass --overwrite to replace it")
    rows, shares = mix(list(inputs), ratio=ratio, equal=equal, size=size, seed=seed)
    import pyarrow as pa

    write_table_atomic(pa.Table.from_pylist(rows), output)
    for share in shares:
        echo_err(f"{share.path}: {share.taken} of {share.available} rows ({share.how})")
    click.echo(json.dumps({
        "output": str(output), "rows": len(rows),
        "inputs": [{"path": s.path, "available": s.available, "taken": s.taken, "how": s.how}
                   for s in shares],
    }))


main = prepare_group
