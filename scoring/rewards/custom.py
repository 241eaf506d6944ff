"""User reward functions from a file, with verl's signature, unchanged:
`compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)` returning a
float (or bool/int) or a dict with `score` (and optionally `acc`, `pred`; other keys become columns).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rollouts.errors import UserInputError
from rollouts.io import to_python
from scoring.rewards.extract import Extraction
from scoring.types import RewardResult

CustomFn = Callable[..., Any]


def parse_spec(spec: str) -> tuple[Path, str]:
    """`path/to/file.py:func` -> (path, func); `file.py` alone means `compute_score`."""
    path_text, _, func = spec.rpartition(":") if ":" in spec else (spec, "", "compute_score")
    if not path_text.endswith(".py"):
        raise UserInputError(
            f"--reward-fn {spec}: expected auto, a built-in name or PATH.py:FUNCTION"
        )
    return Path(path_text), func or "compute_score"


def load_function(path: Path, func: str) -> CustomFn:
    if not path.is_file():
        raise UserInputError(f"{path}: no such reward file; check the --reward-fn path")
    module_name = "rollouts_custom_reward_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserInputError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # user code may raise anything while loading
        raise UserInputError(f"{path}: fails to load ({type(exc).__name__}: {exc})") from exc
    function = getattr(module, func, None)
    if not callable(function):
        raise UserInputError(f"{path}: defines no function {func!r}; check --reward-fn PATH.py:FUNC")
    return function


class CustomReward:
    """A verl-style compute_score from a file; versioned by the file's content."""

    uses_context = True

    def __init__(self, spec: str) -> None:
        path, func = parse_spec(spec)
        self.function = load_function(path, func)
        self.name = f"{path.name}:{func}"
        self.version = hashlib.sha256(path.read_bytes()).hexdigest()[:12]

    def extract(self, response: str) -> Extraction:
        return Extraction(response, "response")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        value = self.function(data_source, answer, ground_truth, extra_info=extra_info)
        return to_result(value)


def to_result(value: Any) -> RewardResult:
    """verl's return forms: a number, or a dict with `score` whose other keys become columns."""
    value = to_python(value)
    if isinstance(value, dict):
        if "score" not in value:
            raise ValueError(f"reward dict has no 'score' key (keys: {sorted(value)})")
        extra = {k: v for k, v in value.items() if k not in ("score", "acc", "pred")}
        score = _as_score(value["score"])
        acc = bool(value["acc"]) if "acc" in value else score > 0
        pred = value.get("pred")
        return RewardResult(
            score=score,
            acc=acc,
            pred=None if pred is None else str(pred),
            extra=extra,
            answer_class=None if pred is None else "pred:" + str(pred),
        )
    score = _as_score(value)
    return RewardResult(score=score, acc=score > 0, pred=None)


def _as_score(value: Any) -> float:
    if isinstance(value, bool | int | float) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    raise ValueError(f"reward score must be a number, got {value!r}")
