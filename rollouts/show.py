"""Look at samples: rollouts or scored rows, grouped by prompt, in a terminal or one HTML page.

Reads long rows (one per sample) or verl's wide form (`responses`: a list per prompt), from one file
or several (runs of the same prompts, shown side by side). Columns used when present: prompt,
prompt_id, data_source, reward_model.ground_truth / ground_truth (the gold answer), response, pred
(the extracted answer), score, acc, score_status, finish_reason, error, error_kind.

Each sample gets a verdict (`pass`, `fail`, `error`: the request failed, or `-`: not scored) and a
status (the error kind, a scoring status other than ok, the finish reason, and `truncated` when the
generation hit max_tokens); each prompt its gold answer and pass rate per run.
The HTML page is built by rollouts.show_page.
"""

from __future__ import annotations

import operator
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rollouts.errors import UserInputError
from rollouts.io import read_table, to_python

SAMPLE_COLUMNS = ("response", "pred", "score", "acc", "finish_reason", "error", "error_kind",
                  "score_status", "sample_idx")
TEXT_WIDTH = 100
MAX_RESPONSE_CHARS = 2000  # per response in the terminal; the HTML page keeps everything
SORTS = ("file", "pass-rate", "-pass-rate")
# --where COL OP VALUE: the operators, longest first so that `>=` is not read as `>`.
WHERE_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "!=": operator.ne, ">=": operator.ge, "<=": operator.le, "=": operator.eq,
    ">": operator.gt, "<": operator.lt, "~": lambda column, text: column.astype(str).str.contains(
        text, case=False, regex=False, na=False),
}
WHERE = re.compile(r"^\s*([\w.]+)\s*(!=|>=|<=|=|>|<|~)\s*(.*?)\s*$")


@dataclass(frozen=True)
class ShowFilter:
    prompts: int | None = 5  # prompts shown (None: all)
    prompt_id: str | None = None  # a prompt_id or its prefix
    failed: bool = False  # only samples that failed: an error, or scored and not passed
    samples: int | None = None  # samples shown per prompt (None: all)
    passed: bool = False  # only samples that were scored and passed
    where: tuple[str, ...] = field(default_factory=tuple)  # COL OP VALUE conditions, all must hold
    sort: str = "file"  # file order, or by pass rate (hardest first; `-pass-rate` easiest first)


def prompt_text(prompt: Any) -> str:
    """A string prompt as is; chat messages as `role: content` lines."""
    prompt = to_python(prompt)
    if isinstance(prompt, list):
        return "\n".join(
            f"{m.get('role', '?')}: {m.get('content', '')}" if isinstance(m, dict) else str(m)
            for m in prompt
        )
    return "" if prompt is None else str(prompt)


def gold_answer(row: pd.Series) -> str | None:
    """The ground truth a row is scored against, as text."""
    value = None
    if "ground_truth" in row.index:
        value = to_python(row["ground_truth"])
    if value is None and "reward_model" in row.index:
        model = to_python(row["reward_model"])
        value = model.get("ground_truth") if isinstance(model, dict) else None
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def load_samples(paths: Sequence[Path]) -> pd.DataFrame:
    """One row per sample of every file, with `run` (the file), `prompt_key`, `gold`, `verdict`
    and `status`."""
    frames = [_load_one(path) for path in paths]
    runs = run_names(paths)
    for frame, run in zip(frames, runs, strict=True):
        frame["run"] = run
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frame["verdict"] = verdicts(frame)
    frame["status"] = statuses(frame)
    # Each prompt's pass count per run, over all its samples (before any filter is applied).
    keys = [frame["prompt_key"], frame["run"]]
    frame["run_scored"] = frame["verdict"].isin(["pass", "fail", "error"]).groupby(keys).transform("sum")
    frame["run_passed"] = (frame["verdict"] == "pass").groupby(keys).transform("sum")
    return frame


def run_names(paths: Sequence[Path]) -> list[str]:
    """A name per file: its name without extensions, or its folder too when names repeat."""
    stems = [_stem(path.name) for path in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{path.parent.name}/{stem}" for path, stem in zip(paths, stems, strict=True)]


def _stem(name: str) -> str:
    """`t0.6` for t0.6.scored.parquet, t0.6.parquet and t0.6.jsonl."""
    for suffix in (".parquet", ".pq", ".jsonl", ".ndjson", ".json"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.removesuffix(".scored") or name


def _load_one(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise UserInputError(f"{path} does not exist; pass a rollouts or scored file")
    frame = read_table(path)
    if "responses" in frame.columns and "response" not in frame.columns:
        frame = frame.explode("responses").rename(columns={"responses": "response"})
        frame["sample_idx"] = frame.groupby(level=0).cumcount()
        frame = frame.reset_index(drop=True)
    if "response" not in frame.columns:
        raise UserInputError(f"{path} has no `response` or `responses` column: not rollouts")
    order = [c for c in ("dataset", "data_idx", "sample_idx") if c in frame.columns]
    frame = frame.sort_values(order, kind="stable").reset_index(drop=True) if order else frame
    frame["prompt_text"] = frame["prompt"].map(prompt_text) if "prompt" in frame.columns else ""
    key = frame["prompt_id"] if "prompt_id" in frame.columns else frame["prompt_text"]
    frame["prompt_key"] = key.astype(str)
    frame["gold"] = _gold_column(frame)
    for column in SAMPLE_COLUMNS + ("data_source",):
        if column not in frame.columns:
            frame[column] = None
    return frame


def _gold_column(frame: pd.DataFrame) -> list[str | None]:
    """The gold answer of each row, worked out once per prompt."""
    if "ground_truth" not in frame.columns and "reward_model" not in frame.columns:
        return [None] * len(frame)
    firsts = frame.drop_duplicates("prompt_key")
    gold = {key: gold_answer(row) for key, (_, row) in zip(firsts["prompt_key"], firsts.iterrows(), strict=True)}
    return [gold[key] for key in frame["prompt_key"]]


def verdicts(frame: pd.DataFrame) -> np.ndarray:
    """Per sample: pass, fail, error (no response: the request failed) or - (not scored)."""
    errored = frame["error"].notna().to_numpy()
    if frame["acc"].notna().any():
        scored = frame["acc"].notna().to_numpy()
        passed = (frame["acc"] == True).to_numpy()  # noqa: E712 (None counts as not passed)
    else:
        scored = frame["score"].notna().to_numpy()
        passed = (frame["score"].fillna(0) > 0).to_numpy()
    verdict = np.where(scored, np.where(passed, "pass", "fail"), "-").astype(object)
    verdict[errored] = "error"
    return verdict


def statuses(frame: pd.DataFrame) -> list[str]:
    """Per sample: the error kind, a scoring status other than ok, the finish reason, truncated."""
    out = []
    for kind, error, score_status, finish in zip(frame["error_kind"], frame["error"],
                                                 frame["score_status"], frame["finish_reason"], strict=True):
        parts = []
        if _present(error):
            parts.append(f"error {kind if _present(kind) else str(error).split(':', 1)[0]}")
        if _present(score_status) and score_status != "ok":
            parts.append(str(score_status))
        if _present(finish):
            parts.append(f"finish {finish}")
        if finish == "length":
            parts.append("truncated")
        out.append(", ".join(parts) or "-")
    return out


def _present(value: Any) -> bool:
    return value is not None and value == value and value != ""


def failed_mask(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(np.isin(frame["verdict"], ["fail", "error"]), index=frame.index)


def prompt_pass_rates(frame: pd.DataFrame) -> pd.Series:
    """Pass rate per prompt over its runs' samples (NaN when none is scored), in file order."""
    runs = frame.drop_duplicates(["prompt_key", "run"])
    totals = runs.groupby("prompt_key", sort=False)[["run_passed", "run_scored"]].sum()
    return totals["run_passed"] / totals["run_scored"].replace(0, np.nan)


def where_mask(frame: pd.DataFrame, conditions: Sequence[str]) -> pd.Series:
    """Rows meeting every `COL OP VALUE` (=, !=, >, >=, <, <=, ~ for 'contains')."""
    mask = pd.Series(True, index=frame.index)
    for condition in conditions:
        match = WHERE.match(condition)
        if not match:
            raise UserInputError(f"--where {condition!r}: write COLUMN OP VALUE with OP one of "
                                 f"{' '.join(WHERE_OPERATORS)} (e.g. --where 'finish_reason=length')")
        column, op, text = match.groups()
        if column not in frame.columns:
            known = ", ".join(c for c in frame.columns if not c.startswith("prompt_"))
            raise UserInputError(f"--where {condition!r}: no column {column!r}; the columns are {known}")
        values = frame[column]
        wanted: Any = text
        if op != "~" and pd.api.types.is_numeric_dtype(values):
            try:
                wanted = float(text)
            except ValueError:
                raise UserInputError(f"--where {condition!r}: {column} holds numbers; compare it with one") from None
        elif op != "~":
            values = values.map(lambda v: None if v is None else str(to_python(v)))
        mask &= WHERE_OPERATORS[op](values, wanted).fillna(False).astype(bool)
    return mask


def select(frame: pd.DataFrame, chosen: ShowFilter) -> pd.DataFrame:
    if chosen.prompt_id:
        frame = frame[frame["prompt_key"].str.startswith(chosen.prompt_id)]
        if frame.empty:
            raise UserInputError(f"no prompt_id starts with {chosen.prompt_id!r}")
    if chosen.failed and chosen.passed:
        raise UserInputError("--failed and --passed exclude each other; give one")
    if chosen.sort not in SORTS:
        raise UserInputError(f"--sort {chosen.sort!r}: use one of {', '.join(SORTS)}")
    if chosen.where:
        frame = frame[where_mask(frame, chosen.where)]
    if chosen.failed:
        frame = frame[failed_mask(frame)]
    if chosen.passed:
        frame = frame[frame["verdict"] == "pass"]
    if chosen.sort != "file":
        frame = sort_by_pass_rate(frame, descending=chosen.sort.startswith("-"))
    if chosen.prompts is not None:
        keep = list(dict.fromkeys(frame["prompt_key"]))[: chosen.prompts]
        frame = frame[frame["prompt_key"].isin(keep)]
    if chosen.samples is not None:
        frame = frame.groupby(["prompt_key", "run"], sort=False).head(chosen.samples)
    return frame


def sort_by_pass_rate(frame: pd.DataFrame, descending: bool) -> pd.DataFrame:
    """Prompts by their mean pass rate over the runs (hardest first), file order among equals."""
    rate = prompt_pass_rates(frame)
    order = rate.sort_values(ascending=not descending, kind="stable", na_position="last")
    rank = {key: i for i, key in enumerate(order.index)}
    position = frame["prompt_key"].map(rank)
    return frame.assign(_rank=position).sort_values("_rank", kind="stable").drop(columns="_rank")


def _value(value: Any) -> str:
    value = to_python(value)
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_terminal(frame: pd.DataFrame) -> str:
    """Prompt with its gold answer and pass rate, then each response with its verdict, answer,
    score and status."""
    blocks = []
    several = frame["run"].nunique() > 1
    for key, group in frame.groupby("prompt_key", sort=False):
        first = group.iloc[0]
        head = (f"== prompt {str(key)[:16]}  data_source={_value(first['data_source'])}"
                f"  gold={_value(first['gold'])}  " + _rates_text(group))
        lines = [head, textwrap.indent(first["prompt_text"], "   ")]
        for _, row in group.iterrows():
            run = f" [{row['run']}]" if several else ""
            lines.append(
                f"-- sample {_value(row['sample_idx'])}{run}: {row['verdict']} answer={_value(row['pred'])} "
                f"score={_value(row['score'])} {row['status']}"
                + (f" error={row['error']}" if _present(row["error"]) else "")
            )
            text = "" if row["response"] is None else str(row["response"])
            if len(text) > MAX_RESPONSE_CHARS:
                text = text[:MAX_RESPONSE_CHARS] + f" [... {len(text) - MAX_RESPONSE_CHARS} more chars]"
            lines.append(textwrap.indent(text, "   "))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _rates_text(group: pd.DataFrame) -> str:
    """`passed 3/8` per run (of all the prompt's samples, whatever is shown)."""
    runs = group.drop_duplicates("run")
    parts = []
    for _, row in runs.iterrows():
        name = f"{row['run']} " if len(runs) > 1 else ""
        scored, passed = int(row["run_scored"]), int(row["run_passed"])
        parts.append(f"{name}passed {passed}/{scored}" if scored else f"{name}not scored")
    return "  ".join(parts)
