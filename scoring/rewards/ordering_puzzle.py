"""Ordering puzzles (GURU's `logic__ordering_puzzle*`): `--reward-fn ordering_puzzle`.

The ground truth is the ordered list of names (`["owl", "hawk", "robin"]`). The answer is the
last one-line `<answer>...</answer>`: its first bracketed list gives the names, each the run of
letters, digits, `_` and spaces between quotes or commas, lower-cased and stripped. The score is 1
when that list equals the ground truth exactly (so a ground truth with capitals never passes, as in
GURU's reward), else 0.

One deliberate difference: when the answer holds no bracketed list, GURU's reward runs the
answer as Python code (`eval`); model output is never run here, so such an answer scores 0 (theirs
scores 1 for an answer like `'owl hawk robin'.split()` and fails otherwise).
"""

from __future__ import annotations

import re
from typing import Any

from rollouts.io import to_python
from scoring.rewards.base import binary
from scoring.rewards.extract import Extraction, last_tag
from scoring.types import RewardResult

# A bracketed list of at least one item (quotes and spaces around items allowed).
_LIST = re.compile(r"\[[\s'\"]*([^\],]+)[\s'\"]*(?:,[\s'\"]*([^\],]+)[\s'\"]*)*\]")
_NAME = re.compile(r"['\"]?([\w\s]+)['\"]?")


def read_names(answer: str) -> list[str] | None:
    found = _LIST.search(answer)
    if found is None:
        return None
    names = (name.lower().strip() for name in _NAME.findall(found.group(0)))
    return [name for name in names if name]


class OrderingPuzzleReward:
    """1 when the answer lists the names in the ground truth's order."""

    name = "ordering_puzzle"
    version = "1"
    uses_context = False

    def extract(self, response: str) -> Extraction:
        answer = last_tag(response)
        if answer is None:
            return Extraction(None, "none")
        if read_names(answer) is None:
            return Extraction(None, "no_list")
        return Extraction(answer, "tag")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        names = read_names(answer)
        return binary(names == to_python(ground_truth), answer, "names:" + answer)
