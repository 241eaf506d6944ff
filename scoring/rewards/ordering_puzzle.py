"""Ordering puzzles (GURU's `logic__ordering_puzzle*`): `--reward-fn ordering_puzzle`.

The ground truth is the ordered list of names (`["owl", "hawk", "robin"]`). The answer is the
last one-line `<answer>...</answer>`: its first bracketed list gives the names, each the run of
letters, digits, `_` and spaces between quotes or commas, lower-cased and stripped. The score is 1
when that list equals the ground truth exactly (so a ground truth with capitals never passes, as in
GURU's reward), else 0.

When the answer holds no such list (`[]`, a trailing comma: `['owl', 'hawk',]`), GURU's reward
quotes its bare words and runs it as Python (`eval`); here it is read as a Python literal instead,
which gives the same value for every literal. One deliberate difference: model output is never
run, so an answer that is code (`'owl hawk robin'.split()`) scores 0 here (1 there).
"""

from __future__ import annotations

import ast
import re
from typing import Any

from rollouts.io import to_python
from scoring.rewards.base import binary
from scoring.rewards.extract import Extraction, last_tag
from scoring.types import RewardResult

# A bracketed list of at least one item (quotes and spaces around items allowed).
_LIST = re.compile(r"\[[\s'\"]*([^\],]+)[\s'\"]*(?:,[\s'\"]*([^\],]+)[\s'\"]*)*\]")
_NAME = re.compile(r"['\"]?([\w\s]+)['\"]?")
# A bare word inside brackets or between commas, to be quoted: `[owl, hawk]` -> `["owl", "hawk"]`.
_BARE_WORD = re.compile(r"(\[|\s*,\s*)(\w+)(\s*,|\])")


def read_names(answer: str) -> Any:
    """The names of the first bracketed list, lower-cased; else the answer, its bare words
    quoted, as a Python literal (whatever value it is); None when it is neither."""
    found = _LIST.search(answer)
    if found is not None:
        names = (name.lower().strip() for name in _NAME.findall(found.group(0)))
        return [name for name in names if name]
    try:
        return ast.literal_eval(_BARE_WORD.sub(r'\1"\2"\3', answer))
    except Exception:  # not a literal (GURU would run it as code: never here)
        return None


class OrderingPuzzleReward:
    """1 when the answer lists the names in the ground truth's order."""

    name = "ordering_puzzle"
    version = "2"
    uses_context = False

    def extract(self, response: str) -> Extraction:
        answer = last_tag(response)
        if answer is None:
            return Extraction(None, "none")
        return Extraction(answer, "tag")

    def judge(
        self, answer: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any] | None
    ) -> RewardResult:
        names = read_names(answer)
        return binary(names == to_python(ground_truth), answer, "names:" + answer)
