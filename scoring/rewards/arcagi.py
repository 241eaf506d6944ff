"""ARC-style grids (GURU's `simulation__arcagi*` and `simulation__barc`): `--reward-fn arcagi`.

The ground truth is the output grid, a list of rows of colour numbers. The answer is the last
`<answer>...</answer>` (it may span lines): its line breaks are dropped, `...` reads as -1, and the
text from the first `[[` to the next `]]` is read as a Python literal; anything unreadable, ragged
or holding a non-list row reads as the grid `[[0]]`. Cells are compared as integers (`"3"`, `3.0`
and `3.7` all read 3), after padding both grids to the larger shape; a pass needs every cell equal
and none padded (-1 is the padding, so a -1 cell never matches). This is GURU's rule, verdict for
verdict: the score is 1 or 0, as theirs is (their cell accuracy is computed but not returned).
"""

from __future__ import annotations

import ast
from typing import Any

import numpy as np

from rollouts.io import to_python
from scoring.rewards.base import binary
from scoring.rewards.extract import Extraction, last_tag
from scoring.types import RewardResult

PAD = -1
FALLBACK_GRID: list[list[int]] = [[0]]


def read_grid(answer: str | None) -> list[Any]:
    """The grid an answer states, or FALLBACK_GRID."""
    if answer is None:
        return FALLBACK_GRID
    text = answer.replace("\n", "").replace("...", "-1")
    start = text.find("[[")
    end = text.find("]]", start) if start >= 0 else -1
    if end < 0:
        return FALLBACK_GRID
    try:
        grid = ast.literal_eval(text[start : end + 2])
    except Exception:  # literal_eval raises several kinds on model text
        return FALLBACK_GRID
    if not all(isinstance(row, list) for row in grid):
        return FALLBACK_GRID
    return list(grid)


def _int_cells(grid: Any) -> np.ndarray:
    try:
        with np.errstate(all="ignore"):  # inf and nan cells cast as numpy casts them (no warning)
            return np.stack(grid).astype(int)
    except Exception:  # ragged rows, words, numbers past int64
        return np.array(FALLBACK_GRID)


def _padded(grid: Any, shape: tuple[int, int]) -> np.ndarray:
    padded = np.full(shape, PAD, dtype=int)
    cells = _int_cells(grid)
    try:
        padded[: cells.shape[0], : cells.shape[1]] = cells
    except ValueError as exc:  # a grid of three dimensions
        raise ValueError(
            f"arcagi: the answer is not a 2-D grid ({exc}); GURU's reward fails too"
        ) from exc
    return padded


def grids_equal(answer: list[Any], gold: list[Any]) -> bool:
    shape = (max(len(answer), len(gold)), max(len(answer[0]), len(gold[0])))
    mine, theirs = _padded(answer, shape), _padded(gold, shape)
    return bool(((mine == theirs) & (mine != PAD) & (theirs != PAD)).all())


class ArcagiReward:
    """1 when the answer's grid is the output grid, else 0."""

    name = "arcagi"
    version = "1"
    uses_context = False

    def extract(self, response: str) -> Extraction:
        """The last answer tag's text; a response without one is judged as the grid [[0]]."""
        answer = last_tag(response, multiline=True)
        return Extraction(answer, "tag") if answer is not None else Extraction("", "none")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        grid = read_grid(answer) if answer else FALLBACK_GRID
        correct = grids_equal(grid, to_python(ground_truth))
        return binary(correct, answer, "grid:" + answer)
