"""Finding and reading a report's inputs: scored files, globs, directories and sweep roots.

Each input file gets a label (the model or checkpoint it holds), taken from, in order: the sweep
manifest of a sweep root (`sweep.parquet` or `sweep.jsonl`, one row per combination: its name, its
parameters, its outputs, its status), the summary `rollouts generate` wrote beside the output, the
rows' `model` column, or the file name. A label's step is parsed from the checkpoint name. Files are
reduced to per-prompt records one at a time (scoring.report.prompts), so memory follows prompts, not
rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from rollouts.errors import UserInputError
from rollouts.io import (
    JSON_SUFFIXES,
    JSONL_SUFFIXES,
    PARQUET_SUFFIXES,
    expand_paths,
    read_table,
    to_python,
)
from scoring.report.naming import series_of, step_of
from scoring.report.prompts import LABEL, TASK, PromptScores, merge, summarise

MANIFEST_NAMES = ("sweep.parquet", "sweep.jsonl")
SCORED_SUFFIXES = (".scored.parquet", ".scored.jsonl")
# `rollouts sweep` writes done, errors (done, with failed generations), partial, pending, failed.
DONE_STATUSES = {"done", "errors"}
# Sweep parameters that say which data ran, not which model: never part of a label.
DATA_PARAMETERS = {"dataset", "datasets", "data", "inputs", "input", "output", "outputs", "prompts"}
MODEL_PARAMETERS = ("checkpoint", "model")
MANIFEST_BOOKKEEPING = {"group", "config_hash", "directory", "rows", "error_rows", "error"}
TASK_COLUMNS = ("data_source", "dataset")
NOT_SCORED = "has no '{column}' column; run `score` on it first (score {path})"


@dataclass(frozen=True)
class Source:
    """One scored file and, when known from outside its rows, the label of what it holds."""

    path: Path
    label: str | None = None


@dataclass
class Loaded:
    """Every input reduced to prompts: cells[(label, task)], plus what was learnt on the way."""

    cells: dict[tuple[str, str], PromptScores]
    steps: dict[str, int | None]
    series: dict[str, str]
    notes: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # full model name -> its label

    @property
    def labels(self) -> list[str]:
        """Labels by step (labels without one last), then by name."""
        return sorted(self.steps, key=lambda label: (self.steps[label] is None, self.steps[label] or 0, label))

    @property
    def tasks(self) -> list[str]:
        return sorted({task for _, task in self.cells})


# ---------------------------------------------------------------- finding inputs


def resolve_inputs(inputs: Sequence[str | Path]) -> tuple[list[Source], list[str]]:
    """Files, globs, plain directories (their scored files) and sweep roots -> sources, notes."""
    if not inputs:
        raise UserInputError("no inputs given; pass scored files, globs or directories")
    sources: list[Source] = []
    notes: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            manifest = next((path / n for n in MANIFEST_NAMES if (path / n).is_file()), None)
            if manifest is not None:
                sources += read_manifest(manifest, notes)
            else:
                sources += [Source(p) for p in scored_files_under(path)]
        else:
            sources += [Source(p) for p in expand_paths([str(item)])]
    return sources, notes


def scored_files_under(directory: Path) -> list[Path]:
    found = sorted(p for suffix in SCORED_SUFFIXES for p in directory.rglob(f"*{suffix}"))
    if not found:
        raise UserInputError(
            f"{directory}: no scored files (*.scored.parquet or *.scored.jsonl) under it; "
            f"run `score` on its outputs first"
        )
    return found


def read_manifest(manifest: Path, notes: list[str]) -> list[Source]:
    """A sweep root's combinations -> the scored files of its finished ones, labelled."""
    frame = read_table(manifest)
    name_column = _first_column(frame, ("combination", "name", "slug", "run"), manifest)
    outputs_column = _first_column(frame, ("outputs", "output", "paths"), manifest)
    status = frame["status"].astype(str).str.lower() if "status" in frame.columns else None
    parameters = [_parameters(frame, i, {name_column, outputs_column, "status"}) for i in range(len(frame))]
    for i, params in enumerate(parameters):
        if not any(params.get(k) for k in MODEL_PARAMETERS) and "model" in frame.columns:
            params["model"] = to_python(frame["model"].iloc[i])  # not swept: the same for all
    labels = _combination_labels(frame[name_column].astype(str).tolist(), parameters)
    sources = []
    for position in range(len(frame)):
        row = frame.iloc[position]
        name = str(row[name_column])
        if status is not None and status.iloc[position] not in DONE_STATUSES:
            notes.append(f"sweep combination {name} is {status.iloc[position]}: left out")
            continue
        if status is not None and status.iloc[position] == "errors":
            notes.append(f"sweep combination {name} has failed generations (scored as errors)")
        for output in _as_list(row[outputs_column]):
            path = _locate(manifest.parent, name, Path(str(output)))
            sources.append(Source(scored_file_for(path), labels[position]))
    if not sources:
        raise UserInputError(f"{manifest}: no finished combination to report; finish the sweep first")
    return sources


def _first_column(frame: pd.DataFrame, names: Sequence[str], where: Path) -> str:
    for name in names:
        if name in frame.columns:
            return name
    raise UserInputError(f"{where}: no {' / '.join(names)} column; is it a sweep manifest?")


def _as_list(value: Any) -> list[Any]:
    value = to_python(value)
    if isinstance(value, str) and value.startswith("["):
        value = json.loads(value)
    if isinstance(value, dict):
        return list(value.values())
    return list(value) if isinstance(value, list | tuple) else [value]


def _parameters(frame: pd.DataFrame, position: int, known: set[str]) -> dict[str, Any]:
    """A combination's parameters: a `parameters` column (mapping or JSON), or the other columns."""
    row = frame.iloc[position]
    for column in ("parameters", "params"):
        if column in frame.columns:
            value = to_python(row[column])
            return json.loads(value) if isinstance(value, str) else dict(value or {})
    return {c: to_python(row[c]) for c in frame.columns if c not in known | MANIFEST_BOOKKEEPING}


def _combination_labels(names: list[str], parameters: list[dict[str, Any]]) -> list[str]:
    """The model/checkpoint name plus the other parameters whose values vary across the sweep."""
    keys = sorted({k for p in parameters for k in p} - DATA_PARAMETERS)
    varying = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True, default=str) for p in parameters}) > 1]
    models = [next((str(p[k]) for k in MODEL_PARAMETERS if p.get(k)), "") for p in parameters]
    short = short_names(models)
    labels = []
    for name, params, model in zip(names, parameters, (short[m] for m in models), strict=True):
        rest = [f"{k}={params.get(k)}" for k in varying if k not in MODEL_PARAMETERS]
        label = " ".join(part for part in [model, *rest] if part)
        labels.append(label or name)
    return labels


def short_names(paths: Sequence[str]) -> dict[str, str]:
    """The fewest trailing path parts that tell the models apart (`global_step_50`, or
    `global_step_50/actor` when every checkpoint ends in `actor`)."""
    distinct = sorted(set(paths))
    parts = {p: Path(p.rstrip("/")).parts or ("",) for p in distinct}
    depth = 1
    while depth < max((len(v) for v in parts.values()), default=1):
        names = ["/".join(v[-depth:]) for v in parts.values()]
        if len(set(names)) == len(names):
            break
        depth += 1
    return {p: "/".join(parts[p][-depth:]) for p in distinct}


def _locate(root: Path, combination: str, output: Path) -> Path:
    for candidate in (output, root / output, root / combination / output):
        if candidate.exists() or _scored_sibling(candidate) is not None:
            return candidate
    raise UserInputError(f"{root}: output {output} of combination {combination} is missing")


def _scored_sibling(path: Path) -> Path | None:
    if path.name.endswith(SCORED_SUFFIXES):
        return path if path.is_file() else None
    stem = table_stem(path)
    for suffix in SCORED_SUFFIXES:
        if (path.parent / f"{stem}{suffix}").is_file():
            return path.parent / f"{stem}{suffix}"
    return None


def table_stem(path: Path) -> str:
    """`gsm8k.t0.6` for gsm8k.t0.6.parquet and for gsm8k.t0.6.scored.parquet."""
    name = path.name
    for suffix in (*SCORED_SUFFIXES, *PARQUET_SUFFIXES, *JSONL_SUFFIXES, *JSON_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def scored_file_for(output: Path) -> Path:
    """The scored version of a rollout output: itself if scored, else `<stem>.scored.*` beside it."""
    sibling = _scored_sibling(output)
    if sibling is not None:
        return sibling
    if output.is_file() and "score" in _columns(output):
        return output
    raise UserInputError(f"{output} is not scored; run `score` on it first (score {output})")


# ---------------------------------------------------------------- reading rows


def _columns(path: Path) -> list[str]:
    if path.name.lower().endswith((".parquet", ".pq")):
        return list(pq.read_schema(path).names)
    return list(read_table(path).columns)


def load(sources: Sequence[Source], notes: list[str], want_split: bool = False) -> Loaded:
    """Read every source and reduce it to prompts (one file in memory at a time)."""
    parts: dict[tuple[str, str], list[PromptScores]] = {}
    for source in sources:
        rows = read_rows(source, want_split)
        for key, scores in summarise(rows, str(source.path)).items():
            parts.setdefault(key, []).append(scores)
        del rows
    # Model paths are shown by the fewest trailing parts that tell them apart.
    short = short_names(sorted({label for label, _ in parts}))
    cells = {(short[label], task): merge(found, f"{label} / {task}") for (label, task), found in parts.items()}
    labels = sorted(set(short.values()))
    return Loaded(
        cells=cells,
        steps={label: step_of(label) for label in labels},
        series={label: series_of(label) for label in labels},
        notes=notes,
        aliases={full: label for full, label in short.items() if full != label},
    )


def read_rows(source: Source, want_split: bool) -> pd.DataFrame:
    """The columns a report needs, long form, with `label` and `task` set."""
    path = source.path
    present = set(_columns(path))
    for column in ("score", "acc"):
        if column not in present:
            raise UserInputError(f"{path} " + NOT_SCORED.format(column=column, path=path))
    task_column = next((c for c in TASK_COLUMNS if c in present), None)
    wanted = ["score", "acc", "prompt_id", "sample_idx", "answer_class", "model", "split", "data_idx"]
    if task_column:
        wanted.append(task_column)
    if want_split and "split" not in present and "extra_info" in present:
        wanted.append("extra_info")
    rows = read_table(path, [c for c in wanted if c in present])
    if len(rows) and isinstance(to_python(rows["score"].iloc[0]), list):
        rows = explode_wide(rows)
    rows[TASK] = rows[task_column].astype(str) if task_column else "unknown"
    rows[LABEL] = source.label or label_from_files(path, rows)
    if "prompt_id" not in rows.columns:
        if "data_idx" not in rows.columns:
            raise UserInputError(f"{path}: no 'prompt_id' or 'data_idx' column to group samples by prompt")
        rows["prompt_id"] = rows["data_idx"].astype(str)
    if "sample_idx" not in rows.columns:
        rows["sample_idx"] = rows.groupby(["task", "prompt_id"], sort=False).cumcount()
    if "extra_info" in rows.columns:
        rows["split"] = [_split_of(e) for e in rows["extra_info"]]
    return rows


def _split_of(extra_info: Any) -> str | None:
    value = to_python(extra_info)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return str(value["split"]) if isinstance(value, dict) and value.get("split") is not None else None


def explode_wide(rows: pd.DataFrame) -> pd.DataFrame:
    """Wide scored rows (lists of per-sample scores) -> one row per sample."""
    listed = [c for c in ("score", "acc", "answer_class") if c in rows.columns]
    wide = rows.copy()
    for column in listed:
        wide[column] = [to_python(v) if v is not None else [] for v in wide[column]]
    wide["sample_idx"] = [list(range(len(v))) for v in wide["score"]]
    if "prompt_id" not in wide.columns and "data_idx" not in wide.columns:
        wide["data_idx"] = np.arange(len(wide))
    long = wide.explode([*listed, "sample_idx"], ignore_index=True)
    long = long[long["sample_idx"].notna()].reset_index(drop=True)
    long["score"] = long["score"].astype(np.float64)
    long["acc"] = long["acc"].astype(bool)
    return long


def label_from_files(path: Path, rows: pd.DataFrame) -> str | pd.Series:
    """The generate summary's model, else the rows' `model` column, else the file's name."""
    summary_model = _summary_model(path)
    if summary_model:
        return summary_model
    if "model" in rows.columns and rows["model"].notna().all():
        return rows["model"].astype(str)
    return table_stem(path)


def _summary_model(path: Path) -> str | None:
    stem = table_stem(path)
    for name in (f"{stem}.parquet.summary.json", f"{stem}.jsonl.summary.json", f"{stem}.summary.json"):
        candidate = path.parent / name
        if candidate.is_file():
            try:
                model = json.loads(candidate.read_text(encoding="utf-8")).get("config", {}).get("model")
            except (OSError, json.JSONDecodeError, AttributeError):
                return None
            return str(model) if model else None
    return None
