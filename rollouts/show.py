"""Look at samples: rollouts or scored rows, grouped by prompt, in a terminal or one HTML page.

Reads long rows (one per sample) or verl's wide form (`responses`: a list per prompt). Columns
used when present: prompt, prompt_id, data_source, response, pred (extracted answer), score, acc,
finish_reason, error. The HTML page is self-contained (rollouts/data/show.html: the rows as JSON
and a small script): open it anywhere, filter by data source, score and finish reason; the filters
also live in the URL fragment, e.g. `page.html#source=gsm8k&score=fail&finish=length`.
"""

from __future__ import annotations

import html
import json
import textwrap
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from rollouts.errors import UserInputError
from rollouts.io import read_table, to_python

SAMPLE_COLUMNS = ("response", "pred", "score", "acc", "finish_reason", "error", "sample_idx")
TEXT_WIDTH = 100
MAX_RESPONSE_CHARS = 2000  # per response in the terminal; the HTML page keeps everything


@dataclass(frozen=True)
class ShowFilter:
    prompts: int | None = 5  # prompts shown (None: all)
    prompt_id: str | None = None  # a prompt_id or its prefix
    failed: bool = False  # only samples that failed: an error, or scored and not passed
    samples: int | None = None  # samples shown per prompt (None: all)
    passed: bool = False  # only samples that were scored and passed


def prompt_text(prompt: Any) -> str:
    """A string prompt as is; chat messages as `role: content` lines."""
    prompt = to_python(prompt)
    if isinstance(prompt, list):
        return "\n".join(
            f"{m.get('role', '?')}: {m.get('content', '')}" if isinstance(m, dict) else str(m)
            for m in prompt
        )
    return "" if prompt is None else str(prompt)


def load_samples(path: Path) -> pd.DataFrame:
    """One row per sample, whatever the file's form, with a `prompt_key` to group by."""
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
    for column in SAMPLE_COLUMNS + ("data_source",):
        if column not in frame.columns:
            frame[column] = None
    return frame


def failed_mask(frame: pd.DataFrame) -> pd.Series:
    errored = frame["error"].notna()
    if frame["acc"].notna().any():
        return errored | (frame["acc"] != True)  # noqa: E712 (None counts as not passed)
    return errored | (frame["score"].notna() & (frame["score"].fillna(0) <= 0))


def select(frame: pd.DataFrame, chosen: ShowFilter) -> pd.DataFrame:
    if chosen.prompt_id:
        frame = frame[frame["prompt_key"].str.startswith(chosen.prompt_id)]
        if frame.empty:
            raise UserInputError(f"no prompt_id starts with {chosen.prompt_id!r}")
    if chosen.failed and chosen.passed:
        raise UserInputError("--failed and --passed exclude each other; give one")
    if chosen.failed:
        frame = frame[failed_mask(frame)]
    if chosen.passed:
        frame = frame[~failed_mask(frame) & (frame["acc"].notna() | frame["score"].notna())]
    if chosen.prompts is not None:
        keep = list(dict.fromkeys(frame["prompt_key"]))[: chosen.prompts]
        frame = frame[frame["prompt_key"].isin(keep)]
    if chosen.samples is not None:
        frame = frame.groupby("prompt_key", sort=False).head(chosen.samples)
    return frame


def _value(value: Any) -> str:
    value = to_python(value)
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_terminal(frame: pd.DataFrame) -> str:
    """Prompt, then each response with its answer, score, finish reason and error."""
    blocks = []
    for key, group in frame.groupby("prompt_key", sort=False):
        first = group.iloc[0]
        head = f"== prompt {str(key)[:16]}  data_source={_value(first['data_source'])}"
        lines = [head, textwrap.indent(first["prompt_text"], "   ")]
        for _, row in group.iterrows():
            lines.append(
                f"-- sample {_value(row['sample_idx'])}: answer={_value(row['pred'])} "
                f"score={_value(row['score'])} finish={_value(row['finish_reason'])}"
                + (f" error={row['error']}" if row["error"] is not None and row["error"] == row["error"] else "")
            )
            text = "" if row["response"] is None else str(row["response"])
            if len(text) > MAX_RESPONSE_CHARS:
                text = text[:MAX_RESPONSE_CHARS] + f" [... {len(text) - MAX_RESPONSE_CHARS} more chars]"
            lines.append(textwrap.indent(text, "   "))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def page_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {
            "prompt_id": str(row["prompt_key"]),
            "prompt": row["prompt_text"],
            "data_source": _value(row["data_source"]),
            "sample_idx": _value(row["sample_idx"]),
            "response": "" if row["response"] is None else str(row["response"]),
            "pred": _value(row["pred"]),
            "score": to_python(row["score"]) if row["score"] == row["score"] else None,
            "passed": not failed,
            "finish_reason": _value(row["finish_reason"]),
            "error": _value(row["error"]),
        }
        for (_, row), failed in zip(frame.iterrows(), failed_mask(frame), strict=True)
    ]


def render_html(frame: pd.DataFrame, title: str) -> str:
    """One self-contained page: the template with the rows inlined as JSON."""
    template = (resources.files("rollouts") / "data" / "show.html").read_text(encoding="utf-8")
    data = json.dumps(page_rows(frame), ensure_ascii=False).replace("</", "<\\/")
    return template.replace("{{TITLE}}", html.escape(title)).replace("{{ROWS_JSON}}", data)
