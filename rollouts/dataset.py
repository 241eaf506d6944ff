"""Input prompts: discovery, validation and streaming.

A dataset is one input file. Each row's prompt (column `prompt` by default) is either a string, sent
to /v1/completions, or a list of {role, content} messages, sent to /v1/chat/completions. Every other
column is carried to the output unchanged. A prompt is identified by `prompt_id`, a content hash of
the input file's name (without extensions) and the prompt, so resuming does not depend on row order.
A dataset's display name (the `dataset` column, logs, summaries) is the same file name unless a
run config gives it a `name:`; the prompt ids stay those of the file, so naming a dataset never
changes the ids of rows already generated.

An output of the tools themselves is an input too: a rollouts file, a scored file or a bucket file
of filter-difficulty (any file holding a column that generation adds). Its prompt columns are
taken, the generated, scored and bucket columns are set aside, and each prompt is sampled once
however many rows (samples) it had, so the new run's identity is its prompts. A prompt keeps the
prompt id the file gives it, so the new run's rows pair up with those of the run it came from.

A dataset's identity for resuming (`input_identity`) is its name and a digest of its set of prompt
ids: computed from what validation already holds, so it costs no extra read of a big file, and it
changes when a prompt or the file name changes, not when rows are reordered (resuming is keyed by
prompt id) nor when only carried columns change.

Validation streams the whole file once before any request is sent, keeping only a 64-bit digest per
prompt (for duplicate detection), so memory does not grow with the prompt text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from rollouts.errors import UserInputError
from rollouts.io import expand_paths, iter_records, table_format
from rollouts.types import PromptInput

# Columns that generation adds to every row; an input that already has one is refused, since
# carrying it over would silently shadow either the input's value or ours.
GENERATED_COLUMNS: tuple[str, ...] = (
    "response",
    "sample_idx",
    "data_idx",
    "dataset",
    "prompt_id",
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
    "endpoint",
    "model",
    "attempts",
    "error",
    "error_kind",
    "config_hash",
)
# Columns that `score` and `filter-difficulty` add; set aside with the generated ones when an output
# of the tools goes back into generate (tests/test_generate_inputs.py checks the lists agree).
DERIVED_COLUMNS: tuple[str, ...] = (
    "score", "acc", "pred", "score_status", "reward_fn", "reward_fn_version", "pred_source",
    "answer_class", "score_error", "score_traceback",
    "pass_rate", "n_samples", "n_pass", "pass_rate_ci_low", "pass_rate_ci_high", "bucket",
    "n_unscoreable", "set_aside_reason",
)
CHAT_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
SCHEMA_SAMPLE_BATCH = 4096


@dataclass(frozen=True)
class Dataset:
    """One validated input file."""

    path: Path
    name: str  # shown in the `dataset` column, logs and summaries
    prompt_key: str
    num_prompts: int
    schema: pa.Schema
    chat: bool
    # The prompt id of every row in file order (8 bytes each), so streaming the prompts again
    # does not recompute hashes.
    digests: array[int] = field(default_factory=lambda: array("Q"), repr=False)
    stamp: tuple[int, int] = (0, 0)  # (size, mtime_ns) when validated
    first_row: int = 0  # a slice (a SLURM work unit) streams prompts first_row..first_row+num_prompts
    # An output of the tools as input: the columns set aside, and the file row of each prompt
    # (its first sample's row; empty when every file row is a prompt).
    set_aside: tuple[str, ...] = ()
    file_rows: array[int] = field(default_factory=lambda: array("Q"), repr=False)

    def slice(self, start: int, stop: int) -> Dataset:
        """The rows start..stop of this dataset, keeping their data_idx and prompt ids."""
        if not 0 <= start < stop <= self.first_row + self.num_prompts:
            raise ValueError(f"bad row range {start}..{stop} of {self.path}")
        return dataclasses.replace(self, first_row=start, num_prompts=stop - start)


@dataclass(frozen=True)
class PromptRecord:
    """One input row, ready to be sampled."""

    dataset: str
    data_idx: int
    prompt_id: str
    prompt: PromptInput
    row: dict[str, Any]


def prompt_id_for(dataset: str, prompt: PromptInput) -> str:
    """Stable id of a prompt within a dataset (16 hex digits of a SHA-256)."""
    canonical = orjson.dumps([dataset, prompt], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:16]


def input_identity(dataset: Dataset) -> dict[str, Any]:
    """What a resume must match: the dataset's name and a digest of its set of prompt ids."""
    ids = np.sort(np.frombuffer(dataset.digests, dtype=np.uint64))
    digest = hashlib.sha256(ids.tobytes()).hexdigest()[:16]
    return {"name": dataset.name, "prompts": dataset.num_prompts, "digest": digest}


def dataset_name(path: Path) -> str:
    """The dataset's name: the file name without its table extensions."""
    name = path.name
    for suffix in (".parquet", ".pq", ".jsonl", ".ndjson", ".json"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def normalize_prompt(value: Any, where: str, system_prompt: str | None) -> PromptInput:
    """Check one prompt value and apply the optional system prompt."""
    if isinstance(value, str):
        if not value.strip():
            raise UserInputError(f"{where}: empty prompt; remove the row or fill it in")
        if system_prompt:
            return [
                {"role": "system", "content": system_prompt},
                {"role": "user", "content": value},
            ]
        return value
    if isinstance(value, list | tuple):
        messages = [_check_message(m, where) for m in value]
        if not messages:
            raise UserInputError(f"{where}: empty message list; give at least one message")
        if system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system_prompt})
        return messages
    if value is None:
        raise UserInputError(f"{where}: prompt is null; remove the row or fill it in")
    raise UserInputError(
        f"{where}: prompt must be a string or a list of {{role, content}} messages, "
        f"not {type(value).__name__}"
    )


def _check_message(message: Any, where: str) -> dict[str, Any]:
    if not isinstance(message, dict) or "role" not in message or "content" not in message:
        raise UserInputError(
            f"{where}: malformed chat message {str(message)[:80]!r}; each message needs "
            "'role' and 'content'"
        )
    if message["role"] not in CHAT_ROLES:
        raise UserInputError(
            f"{where}: unknown chat role {message['role']!r}; use one of {sorted(CHAT_ROLES)}"
        )
    content = message["content"]
    if not isinstance(content, str | list) or (isinstance(content, str) and not content.strip()
                                                and message["role"] == "user"):
        raise UserInputError(f"{where}: empty or malformed content in a {message['role']} message")
    return {k: v for k, v in message.items() if v is not None}


def load_datasets(
    patterns: Sequence[str | Path],
    prompt_key: str = "prompt",
    system_prompt: str | None = None,
    name: str | None = None,
) -> list[Dataset]:
    """Find and validate every input file before any work is spent.

    `name` labels a single input file (a run config's `name:`)."""
    paths = expand_paths(patterns)
    if name is not None and len(paths) != 1:
        raise UserInputError(
            f"the dataset name {name!r} is given for {len(paths)} files ({patterns[0]}); "
            "a name labels one file: point `path` at one file or drop `name`"
        )
    datasets = [validate_dataset(p, prompt_key, system_prompt, name) for p in paths]
    names = [d.name for d in datasets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserInputError(
            f"two inputs share the dataset name(s) {duplicates}; rename one of the files"
        )
    return datasets


def validate_dataset(
    path: Path, prompt_key: str, system_prompt: str | None, display_name: str | None = None
) -> Dataset:
    """Stream one file once: check every prompt, detect duplicates, learn the column types."""
    table_format(path)
    name = dataset_name(path)  # prompt ids derive from the file's own name
    parquet_schema = _parquet_schema(path)
    set_aside: tuple[str, ...] = ()
    if parquet_schema is not None:
        _check_columns(path, parquet_schema.names, prompt_key)
        set_aside = derived_columns(parquet_schema.names)
    seen: set[int] = set()  # 64-bit digests only: memory stays small for millions of prompts
    digests: array[int] = array("Q")
    schemas: list[pa.Schema] = []
    file_rows: array[int] = array("Q")
    batch: list[dict[str, Any]] = []
    chat = False
    for index, row in enumerate(iter_records(path)):
        if index == 0 and parquet_schema is None:
            _check_columns(path, list(row), prompt_key)
            set_aside = derived_columns(list(row))
        where = f"{path} row {index}"
        prompt = normalize_prompt(row.get(prompt_key), where, system_prompt)
        chat = chat or not isinstance(prompt, str)
        digest = _kept_prompt_id(row) if set_aside else None
        if digest is None:
            digest = int(prompt_id_for(name, prompt), 16)
        if set_aside:
            if digest in seen:
                continue  # another sample of a prompt already taken
            file_rows.append(index)
            row = {k: v for k, v in row.items() if k not in set_aside}
        elif digest in seen:
            first = _first_row_with(path, name, prompt_key, system_prompt, digest)
            raise UserInputError(
                f"{path}: rows {first} and {index} hold the same prompt; "
                "deduplicate the input (each prompt is sampled --n times already)"
            )
        seen.add(digest)
        digests.append(digest)
        if parquet_schema is None:
            batch.append(row)
            if len(batch) >= SCHEMA_SAMPLE_BATCH:
                schemas.append(_infer_schema(path, batch))
                batch = []
    if not seen:
        raise UserInputError(f"{path}: no rows; check the file")
    if batch:
        schemas.append(_infer_schema(path, batch))
    schema = parquet_schema or _unify(path, schemas)
    if parquet_schema is None:
        _check_columns(path, schema.names, prompt_key)
    if set_aside:
        schema = pa.schema([f for f in schema if f.name not in set_aside])
        if len(file_rows) == index + 1:
            file_rows = array("Q")  # one row per prompt: nothing to skip
    return Dataset(path=path, name=display_name or name, prompt_key=prompt_key,
                   num_prompts=len(seen), schema=schema, chat=chat, digests=digests,
                   stamp=_stamp(path), set_aside=set_aside, file_rows=file_rows)


def derived_columns(names: Sequence[str]) -> tuple[str, ...]:
    """The columns to set aside when `names` are those of an output of the tools, else ()."""
    if not any(c in GENERATED_COLUMNS for c in names):
        return ()
    return tuple(c for c in names if c in GENERATED_COLUMNS or c in DERIVED_COLUMNS)


def _kept_prompt_id(row: dict[str, Any]) -> int | None:
    """The prompt id an output of the tools already gives its prompt, so that runs on a bucket
    file pair up with the run it came from (a report compares them on the same prompts)."""
    value = row.get("prompt_id")
    if isinstance(value, str) and len(value) == 16:
        try:
            return int(value, 16)
        except ValueError:
            return None
    return None


def reuse_note(dataset: Dataset) -> str | None:
    """One line saying what is taken from an output of the tools given as input, else None."""
    if not dataset.set_aside:
        return None
    rows = f" (one per prompt of its {len(dataset.file_rows)} rows)" if dataset.file_rows else ""
    return (f"{dataset.path}: an output of rollouts; taking its {dataset.num_prompts} prompt(s)"
            f"{rows}, setting aside {', '.join(dataset.set_aside)}")


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _first_row_with(
    path: Path, name: str, prompt_key: str, system_prompt: str | None, digest: int
) -> int:
    """Row index of the first prompt with this digest (a second scan, only for the error)."""
    for index, row in enumerate(iter_records(path)):
        prompt = normalize_prompt(row.get(prompt_key), f"{path} row {index}", system_prompt)
        if int(prompt_id_for(name, prompt), 16) == digest:
            return index
    return -1


def _check_columns(path: Path, names: list[str], prompt_key: str) -> None:
    if prompt_key not in names:
        raise UserInputError(
            f"{path}: no prompt column {prompt_key!r} (columns: {names}); pass --prompt-key NAME"
        )


def _parquet_schema(path: Path) -> pa.Schema | None:
    """A parquet file's own schema (exact types); None for json/jsonl, whose types are inferred."""
    if table_format(path) != "parquet":
        return None
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserInputError(f"{path}: cannot read parquet file ({exc}); check the file") from exc


def _unify(path: Path, schemas: list[pa.Schema]) -> pa.Schema:
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise UserInputError(
            f"{path}: a column holds values of mixed types ({exc}); make each column one type"
        ) from exc


def _infer_schema(path: Path, rows: list[dict[str, Any]]) -> pa.Schema:
    try:
        return pa.Table.from_pylist(rows).schema
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise UserInputError(
            f"{path}: a column holds values of mixed types ({exc}); make each column one type"
        ) from exc


def iter_prompts(dataset: Dataset, system_prompt: str | None) -> Iterator[PromptRecord]:
    """Stream a validated dataset's prompts in file order, with the ids found by validation."""
    if _stamp(dataset.path) != dataset.stamp:
        raise UserInputError(
            f"{dataset.path} changed after it was checked; rerun the command to check it again"
        )
    start = dataset.first_row
    rows = itertools.islice(_prompt_rows(dataset), start, start + dataset.num_prompts)
    for index, (file_row, row) in enumerate(rows, start):
        where = f"{dataset.path} row {file_row}"
        prompt = normalize_prompt(row.get(dataset.prompt_key), where, system_prompt)
        prompt_id = f"{dataset.digests[index]:016x}"
        yield PromptRecord(
            dataset=dataset.name, data_idx=index, prompt_id=prompt_id, prompt=prompt, row=row
        )


def _prompt_rows(dataset: Dataset) -> Iterator[tuple[int, dict[str, Any]]]:
    """(file row, row) of each prompt in file order, without the columns set aside."""
    records: Iterator[tuple[int, dict[str, Any]]] = enumerate(iter_records(dataset.path))
    if dataset.file_rows:
        wanted = set(dataset.file_rows)
        records = ((i, row) for i, row in records if i in wanted)
    if not dataset.set_aside:
        yield from records
        return
    for file_row, row in records:
        yield file_row, {k: v for k, v in row.items() if k not in dataset.set_aside}
