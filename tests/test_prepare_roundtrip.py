"""prepare → mix → `rollouts generate --backend hf` on a tiny model → `score --reward-fn auto`:
every prepared data source is scored by its own reward, and none errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from rollouts.cli import main as rollouts_main
from rollouts.tiny_model import build_tiny_model
from scoring.score_cli import main as score_main
from tests import prepare_fixtures as fx


def invoke(command: object, args: list[str]) -> str:
    result = CliRunner().invoke(command, args)  # type: ignore[arg-type]
    assert result.exit_code == 0, (result.output, result.exception)
    return str(result.output)


def test_prepared_sets_generate_and_score_with_their_own_rewards(tmp_path: Path) -> None:
    sources = {
        "gsm8k": ("gsm8k", fx.GSM8K[:2]),
        "math": ("math", fx.MATH),
        "mbpp": ("code", fx.MBPP),
        "apps": ("code", fx.APPS),
        "trivia": ("qa", fx.TRIVIAQA + fx.NQ),
        "mmlu": ("mcq", fx.MMLU + fx.ARC),
    }
    prepared = []
    for name, (kind, rows) in sources.items():
        out = tmp_path / f"{name}.parquet"
        invoke(rollouts_main, ["prepare", kind, str(fx.write_jsonl(tmp_path / f"{name}.jsonl", rows)),
                               "-o", str(out)])
        prepared.append(str(out))
    mixed = tmp_path / "mix.parquet"
    invoke(rollouts_main, ["prepare", "mix", *prepared, "-o", str(mixed)])

    model = build_tiny_model(tmp_path / "tiny")
    rollouts = tmp_path / "rollouts.parquet"
    invoke(rollouts_main, ["generate", str(mixed), "-o", str(rollouts), "--backend", "hf",
                           "--model", str(model), "--n", "1", "--max-tokens", "8",
                           "--no-progress"])
    scored = tmp_path / "scored.parquet"
    invoke(score_main, [str(rollouts), "-o", str(scored), "--reward-fn", "auto", "--no-cache"])
    frame = pd.read_parquet(scored)
    assert len(frame) == 11
    reward_by_source = frame.groupby("data_source")["reward_fn"].agg(set).to_dict()
    assert reward_by_source == {
        "openai/gsm8k": {"gsm8k"}, "math__math": {"guru_math"}, "codegen__mbpp": {"guru_code"},
        "codegen__apps": {"guru_code"}, "qa__trivia": {"qa"}, "mcq__mmlu": {"mcq"},
    }
    assert not frame["score_status"].isin(["error", "sandbox_error"]).any(), json.dumps(
        frame.filter(items=["data_source", "score_status", "score_error"]).to_dict(orient="records")
    )
