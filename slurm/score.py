"""A run config's `score:` section: the merged outputs are scored in a job that follows the merge.

    score: {reward: auto, workers: 8, timeout: 10, on_error: fail}

One submit then gives scored outputs: `rollouts slurm submit` queues `rollouts slurm score RUN_DIR`
after the merge job (afterany), which scores every output the merge wrote, as `score` does (beside
each output unless `output` names a folder: <stem>.scored.parquet and its results JSON). A merge
that did not complete leaves nothing to score: the job says so and fails. Rows whose reward failed
fail the job too (exit 3, as `score` exits), their scored files written all the same, unless
`on_error` is skip or zero (as `score --on-error`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollouts.errors import UserInputError
from rollouts.io import write_json_atomic
from rollouts.runconfig import read_yaml_mapping

SCORE_MARKER = "score.json"  # the score job's outcome

SCORE_KEYS: dict[str, str] = {
    "reward": "reward function: auto (by data_source), a built-in name, or FILE.py:FUNCTION",
    "workers": "worker processes judging answers (default: the job's CPUs)",
    "timeout": "hard limit per item in seconds (default as `score`)",
    "allow_unsandboxed": "run code rewards without bubblewrap when it cannot start (unsafe)",
    "output": "folder of the scored files (default: beside each output)",
    "summary": "a batch summary JSON over every output",
    "on_error": "rows whose reward failed: fail (default: left out of the metrics, the job exits 3), "
                "skip (left out, exit 0) or zero (counted as wrong), as `score --on-error`",
}


@dataclass(frozen=True, kw_only=True)
class ScoreSection:
    reward: str = "auto"
    workers: int | None = None
    timeout_s: float | None = None
    allow_unsandboxed: bool = False
    output: Path | None = None
    summary: Path | None = None
    on_error: str = "fail"


def load_score_section(config_path: Path, *, base_dir: Path | None = None) -> ScoreSection | None:
    """The checked `score:` section of a run config, or None without one."""
    data = read_yaml_mapping(config_path, "config")
    if data.get("score") is None:
        return None
    section = data["score"]
    where = f"{config_path}: score"
    if not isinstance(section, dict):
        raise UserInputError(f"{where}: expected a mapping such as {{reward: auto}}")
    unknown = sorted(set(section) - set(SCORE_KEYS))
    if unknown:
        raise UserInputError(f"{where}: unknown key(s) {unknown}; known keys: {', '.join(SCORE_KEYS)}")
    base = base_dir or config_path.resolve().parent
    score = ScoreSection(
        reward=str(section.get("reward", "auto")),
        workers=_positive(section.get("workers"), "workers", where),
        timeout_s=_seconds(section.get("timeout"), where),
        allow_unsandboxed=bool(section.get("allow_unsandboxed", False)),
        output=_path(base, section.get("output")),
        summary=_path(base, section.get("summary")),
        on_error=_on_error(section.get("on_error", "fail"), where),
    )
    _check_reward(score.reward, where)
    return score


def _positive(value: Any, key: str, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(f"{where}: {key} must be a whole number of at least 1, not {value!r}")
    return value


def _seconds(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise UserInputError(f"{where}: timeout must be a number of seconds above 0, not {value!r}")
    return float(value)


def _on_error(value: Any, where: str) -> str:
    from scoring.scorer import ON_ERROR_CHOICES

    if value not in ON_ERROR_CHOICES:
        raise UserInputError(f"{where}: on_error must be one of {', '.join(ON_ERROR_CHOICES)}, not {value!r}")
    return str(value)


def _path(base: Path, value: Any) -> Path | None:
    if not value:
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def _check_reward(reward: str, where: str) -> None:
    from scoring.rewards.registry import canonical_spec, validate_spec

    try:
        validate_spec(canonical_spec(reward))
    except UserInputError as exc:
        raise UserInputError(f"{where}: {exc}") from exc


def score_run(run_dir: Path) -> dict[str, Any]:
    """Score the outputs of a completed merge with the run's `score:` section; the batch summary."""
    from scoring.cache import default_cache_dir
    from scoring.scorer import ScoreConfig, score_files
    from slurm.merge import read_merge_marker
    from slurm.submit import read_run

    recorded = read_run(run_dir)
    snapshot = Path(recorded.get("snapshot") or recorded["config"])
    section = load_score_section(snapshot, base_dir=Path(recorded.get("base_dir") or snapshot.parent))
    if section is None:
        raise UserInputError(f"{snapshot}: no `score:` section; nothing to score")
    marker = read_merge_marker(run_dir)
    if marker.get("state") != "merged":
        raise UserInputError(
            f"{run_dir}: the merge did not complete ({marker.get('message', 'no merge yet')}); "
            f"nothing scored: finish the run, then `score` its outputs or submit again"
        )
    options: dict[str, Any] = {"reward_fn": section.reward, "cache_dir": default_cache_dir(),
                               "allow_unsandboxed": section.allow_unsandboxed,
                               "on_error": section.on_error}
    if section.workers is not None:
        options["workers"] = section.workers
    if section.timeout_s is not None:
        options["timeout_s"] = section.timeout_s
    outputs = [str(item["output"]) for item in marker["outputs"]]
    # The merge just wrote these outputs: scores of an earlier merge are replaced.
    batch = score_files(outputs, ScoreConfig(**options), output=section.output,
                        summary=section.summary, overwrite=True)
    failed = failed_rows_message(batch, run_dir) if section.on_error == "fail" else None
    write_json_atomic({
        "state": "failed" if failed else "scored", "message": failed,
        "error_rows": int(batch["error_rows"]), "on_error": section.on_error,
        "job": os.environ.get("SLURM_JOB_ID"), "at": time.time(), "outputs": [
            {"input": item["input"], "output": item["output"], "rows": item["rows"]}
            for item in batch["inputs"]
        ],
    }, run_dir / SCORE_MARKER)
    return batch


def failed_rows_message(batch: dict[str, Any], run_dir: Path) -> str | None:
    """What failed the score step: rows whose reward failed, per data source; None without any."""
    if not batch["error_rows"]:
        return None
    per_source = ", ".join(
        f"{source}={metrics['error_rows']}"
        for item in batch["inputs"]
        for source, metrics in item["data_sources"].items()
        if metrics["error_rows"]
    )
    return (f"{batch['error_rows']} rows failed in the reward function ({per_source}), left out of "
            f"the metrics; see their score_error column, fix the reward and run `rollouts slurm "
            f"score {run_dir}` (only those rows are judged again), or set score: {{on_error: skip}} "
            "to accept the metrics without them")


def read_score_marker(run_dir: Path) -> dict[str, Any]:
    try:
        marker: dict[str, Any] = json.loads((run_dir / SCORE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return marker
