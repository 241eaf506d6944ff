"""Finding and reading a report's inputs: scored files, globs, directories and sweep roots.

Each input file gets a label (the run it holds): `--label NAME=FILE` names it by hand; a sweep
root's manifest (`sweep.parquet` or `sweep.jsonl`, one row per combination: its name, its
parameters, its outputs, its status) gives the checkpoint and the swept settings that vary; any other
file is labelled by its model (the summary `rollouts generate` wrote beside the output, the rows'
`model` column, or the file name) followed by what else differs between the inputs: temperature,
top_p, n, system prompt and, when two runs would otherwise share prompts, the input file
(`base temperature=0.6`, `base input=kept`). Two files that still hold the same prompts of one run
are refused by name. A label's step is parsed from the checkpoint name. Files are reduced to
per-prompt records one at a time (scoring.report.prompts), so memory follows prompts, not rows.
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
from scoring.metrics import reward_errors
from scoring.report.naming import series_of, step_of
from scoring.report.prompts import LABEL, SAMPLE, TASK, PromptScores, merge, summarise

MANIFEST_NAMES = ("sweep.parquet", "sweep.jsonl")
SCORED_SUFFIXES = (".scored.parquet", ".scored.jsonl")
# `rollouts sweep` writes done, errors (done, with failed generations), partial, pending, failed.
DONE_STATUSES = {"done", "errors"}
# Sweep parameters that say which data ran, not which model: never part of a label.
DATA_PARAMETERS = {"dataset", "datasets", "data", "inputs", "input", "output", "outputs", "prompts"}
MODEL_PARAMETERS = ("checkpoint", "model")
MANIFEST_BOOKKEEPING = {"group", "config_hash", "directory", "rows", "error_rows", "error"}
TASK_COLUMNS = ("data_source", "dataset")
REWARD_ERROR = "reward_error"  # column read_rows adds: the row's reward failed (see reward_error_rows)
NOT_SCORED = "has no '{column}' column; run `score` on it first (score {path})"


# What tells one run from another, in label order, after its model; `input` only when needed.
RUN_SETTINGS = ("temperature", "top_p", "n", "system_prompt")
INPUT_SETTING = "input"


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
    aliases: dict[str, str] = field(default_factory=dict)  # full model name or input file -> its label
    shapes: dict[str, RunShape] = field(default_factory=dict)  # label -> its responses' lengths
    # (label, task) -> rows whose reward failed, left out of every metric
    error_rows: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """Labels by step (labels without one last), then by name."""
        return sorted(self.steps, key=lambda label: (self.steps[label] is None, self.steps[label] or 0, label))

    @property
    def tasks(self) -> list[str]:
        return sorted({task for _, task in self.cells})


# ---------------------------------------------------------------- finding inputs


def resolve_inputs(
    inputs: Sequence[str | Path], labels: dict[str, str] | None = None
) -> tuple[list[Source], list[str]]:
    """Files, globs, plain directories (their scored files) and sweep roots -> sources, notes.

    `labels` (NAME -> FILE, from --label) names files by hand; a file named there and not among
    the inputs is added to them."""
    labels = labels or {}
    if not inputs and not labels:
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
    return with_hand_labels(sources, labels), notes


def with_hand_labels(sources: list[Source], labels: dict[str, str]) -> list[Source]:
    """Sources with the --label names applied (files named only there appended)."""
    by_file: dict[Path, str] = {}
    for name, file in labels.items():
        [path] = expand_paths([file]) if any(ch in file for ch in "*?[") else [Path(file)]
        if not path.is_file():
            raise UserInputError(f"--label {name}={file}: no such file")
        by_file[path.resolve()] = name
    found = {source.path.resolve() for source in sources}
    sources = sources + [Source(path) for path in by_file if path not in found]
    return [
        Source(s.path, by_file[s.path.resolve()])
        if s.path.resolve() in by_file else s
        for s in sources
    ]


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
    models = [next((str(p[k]) for k in MODEL_PARAMETERS if p.get(k)), "") for p in parameters]
    short = short_names(models)
    return [label or name for name, label in zip(names, run_labels(parameters, keys, short), strict=True)]


def _varying(runs: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[str]:
    return [k for k in keys if len({json.dumps(r.get(k), sort_keys=True, default=str) for r in runs}) > 1]


def run_labels(runs: Sequence[dict[str, Any]], keys: Sequence[str], short: dict[str, str]) -> list[str]:
    """Per run: its model's short name, then `key=value` for each of `keys` that varies."""
    varying = [k for k in _varying(runs, keys) if k not in MODEL_PARAMETERS]
    models = [next((str(r[k]) for k in MODEL_PARAMETERS if r.get(k)), "") for r in runs]
    labels = []
    for run, model in zip(runs, models, strict=True):
        rest = [f"{k}={_shown(run.get(k))}" for k in varying]
        labels.append(" ".join(part for part in [short.get(model, model), *rest] if part))
    return labels


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


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
    runs: list[RunPart] = []
    for source in sources:
        rows = read_rows(source, want_split)
        errors = error_counts(rows)
        judged = rows[~rows[REWARD_ERROR]]
        runs.append(RunPart(source, run_settings(source, rows), summarise(judged, str(source.path)),
                            RunShape.of(rows) if rows[LABEL].nunique() == 1 else RunShape(), errors))
        del rows, judged
    named, full_names = label_runs(runs)
    parts: dict[tuple[str, str], list[PromptScores]] = {}
    for run, label in zip(runs, named, strict=True):
        for (row_label, task), scores in run.cells.items():
            parts.setdefault((label or row_label, task), []).append(scores)
    # Model paths are shown by the fewest trailing parts that tell them apart.
    short = short_names(sorted({label for label, _ in parts}))
    cells = {(short[label], task): merge(found, f"{label} / {task}") for (label, task), found in parts.items()}
    error_rows: dict[tuple[str, str], int] = {}
    for run, label in zip(runs, named, strict=True):
        for (row_label, task), count in run.errors.items():
            key = (short.get(label or row_label, label or row_label), task)
            error_rows[key] = error_rows.get(key, 0) + count
    labels = sorted(set(short.values()))
    aliases = {full: label for full, label in short.items() if full != label}
    aliases.update({full: short[label] for full, label in full_names.items() if full != short[label]})
    for run, label in zip(runs, named, strict=True):
        if label is not None:
            aliases.setdefault(str(run.source.path), short[label])
            aliases.setdefault(table_stem(run.source.path), short[label])
    shapes: dict[str, RunShape] = {}
    for run, label in zip(runs, named, strict=True):
        if run.shape.samples and run.cells:  # a file of one run (several models: not measured)
            name = short[label if label is not None else next(iter(run.cells))[0]]
            shapes[name] = shapes.get(name, RunShape()) + run.shape
    return Loaded(
        cells=cells,
        steps={label: step_of(label) for label in labels},
        series={label: series_of(label) for label in labels},
        notes=notes,
        aliases=aliases,
        shapes=shapes,
        error_rows=error_rows,
    )


@dataclass
class RunShape:
    """What a run's responses look like: their lengths in tokens, and how many hit max_tokens."""

    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0))
    truncated: int = 0
    samples: int = 0

    @classmethod
    def of(cls, rows: pd.DataFrame) -> RunShape:
        tokens = (pd.to_numeric(rows["completion_tokens"], errors="coerce").dropna().to_numpy()
                  if "completion_tokens" in rows.columns else np.zeros(0))
        truncated = int((rows["finish_reason"] == "length").sum()) if "finish_reason" in rows.columns else 0
        return cls(tokens, truncated, len(rows) if "finish_reason" in rows.columns else 0)

    def __add__(self, other: RunShape) -> RunShape:
        return RunShape(np.concatenate([self.tokens, other.tokens]), self.truncated + other.truncated,
                        self.samples + other.samples)


@dataclass
class RunPart:
    """One input file read: its source, what its run was (None when its rows hold several
    models), and its prompts per (label from the rows, task)."""

    source: Source
    settings: dict[str, Any] | None
    cells: dict[tuple[str, str], PromptScores]
    shape: RunShape = field(default_factory=RunShape)
    errors: dict[tuple[str, str], int] = field(default_factory=dict)  # reward-error rows left out


def run_settings(source: Source, rows: pd.DataFrame) -> dict[str, Any] | None:
    """The model and sampling settings of the run a file holds, from its generate summary and rows."""
    if source.label is not None:
        return None
    if isinstance(rows[LABEL], pd.Series) and rows[LABEL].nunique() > 1:
        return None  # several models in one file: labelled row by row
    config, datasets = _summary(source.path)
    sampling = config.get("sampling") or {}
    settings: dict[str, Any] = {"model": str(rows[LABEL].iloc[0]) if len(rows) else table_stem(source.path)}
    if "checkpoint" in rows.columns and rows["checkpoint"].nunique() == 1:
        settings["checkpoint"] = str(rows["checkpoint"].iloc[0])  # rows of a hot-swapped server
    for key in ("temperature", "top_p"):
        value = sampling.get(key)
        if value is None and key in rows.columns and rows[key].nunique() == 1:
            value = to_python(rows[key].iloc[0])
        settings[key] = value
    settings["n"] = config.get("n") or (int(rows[SAMPLE].max()) + 1 if len(rows) else None)
    settings["system_prompt"] = config.get("system_prompt")
    if datasets:
        settings[INPUT_SETTING] = ",".join(sorted(datasets))
    elif "dataset" in rows.columns:
        settings[INPUT_SETTING] = ",".join(sorted(rows["dataset"].astype(str).unique()))
    else:
        settings[INPUT_SETTING] = table_stem(source.path)
    return settings


def label_runs(runs: Sequence[RunPart]) -> tuple[list[str | None], dict[str, str]]:
    """Each file's label (None: labelled row by row): the model plus the settings that differ,
    the input file too when two runs would otherwise hold the same prompts; and the same labels
    with the model's full name -> the label."""
    with_settings = [i for i, run in enumerate(runs) if run.settings is not None]
    settings = [runs[i].settings or {} for i in with_settings]
    models = short_names(sorted({str(s["model"]) for s in settings}))
    clash: tuple[RunPart, RunPart, str, str] | None = None
    for keys in (RUN_SETTINGS, (*RUN_SETTINGS, INPUT_SETTING)):
        labels: list[str | None] = [run.source.label for run in runs]
        full: dict[str, str] = {}
        shown = run_labels(settings, ("model", *keys), models)
        for index, label, long in zip(with_settings, shown, run_labels(settings, ("model", *keys), {}), strict=True):
            labels[index] = label
            full[long] = label
        clash = _shared_prompts(runs, labels)
        if clash is None:
            return labels, full
    assert clash is not None
    first, second, label, prompt = clash
    raise UserInputError(
        f"{first.source.path} and {second.source.path} both hold prompt {prompt} of {label!r} "
        "(the same model, settings and input); pass each output once, or tell them apart with "
        "--label NAME=FILE"
    )


def _shared_prompts(
    runs: Sequence[RunPart], labels: Sequence[str | None]
) -> tuple[RunPart, RunPart, str, str] | None:
    """Two files given the same label that hold a prompt of the same task, if any."""
    seen: dict[tuple[str, str], tuple[RunPart, np.ndarray]] = {}
    for run, label in zip(runs, labels, strict=True):
        for (row_label, task), scores in run.cells.items():
            key = (label or row_label, task)
            if key in seen:
                other, ids = seen[key]
                common = np.intersect1d(ids, scores.prompt_ids)
                if len(common):
                    return other, run, key[0], str(common[0])
                seen[key] = (run, np.concatenate([ids, scores.prompt_ids]))
            else:
                seen[key] = (run, scores.prompt_ids)
    return None


def read_rows(source: Source, want_split: bool) -> pd.DataFrame:
    """The columns a report needs, long form, with `label` and `task` set."""
    path = source.path
    present = set(_columns(path))
    for column in ("score", "acc"):
        if column not in present:
            raise UserInputError(f"{path} " + NOT_SCORED.format(column=column, path=path))
    task_column = next((c for c in TASK_COLUMNS if c in present), None)
    wanted = ["score", "acc", "prompt_id", "sample_idx", "answer_class", "model", "split", "data_idx",
              "temperature", "top_p", "dataset", "completion_tokens", "finish_reason", "checkpoint",
              "score_status", "error"]
    if task_column:
        wanted.append(task_column)
    if want_split and "split" not in present and "extra_info" in present:
        wanted.append("extra_info")
    rows = read_table(path, [c for c in dict.fromkeys(wanted) if c in present])
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
    rows[REWARD_ERROR] = reward_error_rows(rows)
    return rows


def reward_error_rows(rows: pd.DataFrame) -> np.ndarray:
    """Rows whose reward function failed, as `score` marks them (status error or sandbox_error
    on a generation that succeeded), plus any non-finite score: left out of every metric, as
    `score`'s default --on-error does, rather than counted as wrong answers."""
    failed = reward_errors(rows) if "score_status" in rows.columns else np.zeros(len(rows), dtype=bool)
    score = pd.to_numeric(rows["score"], errors="coerce").to_numpy(dtype=np.float64)
    return failed | ~np.isfinite(score)


def error_counts(rows: pd.DataFrame) -> dict[tuple[str, str], int]:
    """Reward-error rows per (label, task), for the cells that have any."""
    errors = rows.loc[rows[REWARD_ERROR], [LABEL, TASK]].astype(str)
    counts = errors.value_counts()
    return {(str(key[0]), str(key[1])): int(count) for key, count in zip(counts.index, counts, strict=True)}


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
    if "score_status" in rows.columns and len(rows) and isinstance(to_python(rows["score_status"].iloc[0]), list):
        listed.append("score_status")
    wide = rows.copy()
    for column in listed:
        wide[column] = [to_python(v) if v is not None else [] for v in wide[column]]
    wide["sample_idx"] = [list(range(len(v))) for v in wide["score"]]
    if "prompt_id" not in wide.columns and "data_idx" not in wide.columns:
        wide["data_idx"] = np.arange(len(wide))
    long = wide.explode([*listed, "sample_idx"], ignore_index=True)
    long = long[long["sample_idx"].notna()].reset_index(drop=True)
    long["score"] = pd.to_numeric(long["score"], errors="coerce").astype(np.float64)
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
    model = _summary(path)[0].get("model")
    return str(model) if model else None


def _summary(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The run config and input dataset names of the generate summary beside a (scored) output."""
    stem = table_stem(path)
    for name in (f"{stem}.parquet.summary.json", f"{stem}.jsonl.summary.json", f"{stem}.summary.json"):
        candidate = path.parent / name
        if candidate.is_file():
            try:
                summary = json.loads(candidate.read_text(encoding="utf-8"))
                config = summary.get("config") or {}
                datasets = [str(d["name"]) for d in summary.get("datasets") or []]
            except (OSError, json.JSONDecodeError, AttributeError, KeyError, TypeError):
                return {}, []
            return (config if isinstance(config, dict) else {}), datasets
    return {}, []
