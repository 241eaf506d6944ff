"""Small helpers for the generate tests: input files and CLI runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from click.testing import CliRunner, Result

from rollouts.cli import main


def verl_rows(count: int, chat: bool = True, tag: str = "q") -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        text = f"{tag} {i}: what is {i} + {i}?"
        rows.append(
            {
                "prompt": [{"role": "user", "content": text}] if chat else text,
                "data_source": "openai/gsm8k",
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
                "extra_info": {"index": i, "split": "test"},
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pd.DataFrame(rows).to_parquet(path)
    return path


def run_generate(*args: str | Path, expect: int | None = 0) -> Result:
    result = CliRunner().invoke(main, ["generate", *map(str, args), "--no-progress"])
    if expect is not None:
        assert result.exit_code == expect, (result.output, result.exception)
    return result


def read_rows(path: Path) -> pd.DataFrame:
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    return pd.read_parquet(path)
