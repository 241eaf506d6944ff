"""Input prompts: discovery, validation and streaming.

A dataset is one input file. Each row's prompt (column `prompt` by default) is either a string, sent
to /v1/completions, or a list of {role, content} messages, sent to /v1/chat/completions. Every other
column is carried to the output unchanged. A prompt is identified by `prompt_id`, a content hash of
the input file's name (without extensions) and the prompt, so resuming does not depend on row order.
A dataset's display name (the `dataset` column, logs, summaries) is the same file name unless a
run config gives it a `name:`; the prompt ids stay those of the file, so naming a dataset never
changes the ids of rows already generated.

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
    first_row: int = 0  # a slice (a SLURM work unit) streams rows first_row..first_row+num_prompts

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
    if parquet_schema is not None:
        _check_columns(path, parquet_schema.names, prompt_key)
    seen: set[int] = set()  # 64-bit digests only: memory stays small for millions of prompts
    digests: array[int] = array("Q")
    schemas: list[pa.Schema] = []
    batch: list[dict[str, Any]] = []
    chat = False
    for index, row in enumerate(iter_records(path)):
        if index == 0 and parquet_schema is None:
            _check_columns(path, list(row), prompt_key)
        where = f"{path} row {index}"
        prompt = normalize_prompt(row.get(prompt_key), where, system_prompt)
        chat = chat or not isinstance(prompt, str)
        digest = int(prompt_id_for(name, prompt), 16)
        if digest in seen:
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
    return Dataset(path=path, name=display_name or name, prompt_key=prompt_key,
                   num_prompts=len(seen), schema=schema, chat=chat, digests=digests,
                   stamp=_stamp(path))


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
    clashing = [c for c in names if c in GENERATED_COLUMNS]
    if clashing:
        raise UserInputError(
            f"{path}: input already has generated column(s) {clashing}; "
            "drop them or rename them before generating"
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
    rows = itertools.islice(iter_records(dataset.path), start, start + dataset.num_prompts)
    for index, row in enumerate(rows, start):
        where = f"{dataset.path} row {index}"
        prompt = normalize_prompt(row.get(dataset.prompt_key), where, system_prompt)
        prompt_id = f"{dataset.digests[index]:016x}"
        yield PromptRecord(
            dataset=dataset.name, data_idx=index, prompt_id=prompt_id, prompt=prompt, row=row
        )
