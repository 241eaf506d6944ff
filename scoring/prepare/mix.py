"""`prepare mix`: prepared sets → one shuffled mixed-domain set with the proportions asked for.

Each input is one share of the mix. With `--size`, an input smaller than its share is oversampled
(all its rows, then a seeded draw with replacement) and a larger one is capped (a seeded draw
without replacement). Without `--size`, the mix is the largest that needs no oversampling.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollouts.errors import UserInputError
from rollouts.io import iter_records


@dataclass(frozen=True)
class MixShare:
    path: str
    available: int
    taken: int

    @property
    def how(self) -> str:
        if self.taken > self.available:
            return "oversampled"
        return "capped" if self.taken < self.available else "all rows"


def parse_ratio(text: str | None, count: int, equal: bool) -> list[float] | None:
    """`2:1:1` → weights, one per input; None means "as the inputs' sizes are"."""
    if equal and text:
        raise UserInputError("give --ratio or --equal, not both")
    if equal:
        return [1.0] * count
    if not text:
        return None
    try:
        weights = [float(part) for part in text.split(":")]
    except ValueError as exc:
        raise UserInputError(f"--ratio {text!r}: use numbers joined by ':', e.g. 2:1:1") from exc
    if len(weights) != count:
        raise UserInputError(
            f"--ratio {text!r} has {len(weights)} part(s) for {count} input(s); give one per input"
        )
    if any(w <= 0 or not math.isfinite(w) for w in weights):
        raise UserInputError(f"--ratio {text!r}: every part must be a positive number")
    return weights


def target_counts(sizes: list[int], weights: list[float] | None, size: int | None) -> list[int]:
    if weights is None:
        if size is None:
            return list(sizes)
        weights = [float(s) for s in sizes]
    shares = [w / sum(weights) for w in weights]
    if size is None:  # the largest mix in which no input is oversampled
        total = min(n / share for n, share in zip(sizes, shares, strict=True))
        return [math.floor(total * share + 1e-9) for share in shares]
    counts = [math.floor(size * share) for share in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: size * shares[i] - counts[i],
                          reverse=True)
    for i in by_remainder[: size - sum(counts)]:
        counts[i] += 1
    return counts


def draw(rows: list[dict[str, Any]], count: int, rng: random.Random) -> list[dict[str, Any]]:
    if count <= len(rows):
        return rng.sample(rows, count)
    return rows + rng.choices(rows, k=count - len(rows))


def mix(
    inputs: list[Path], *, ratio: str | None, equal: bool, size: int | None, seed: int
) -> tuple[list[dict[str, Any]], list[MixShare]]:
    if len(inputs) < 2:
        raise UserInputError("mix needs two or more prepared files")
    if size is not None and size <= 0:
        raise UserInputError(f"--size {size}: give a positive number of rows")
    weights = parse_ratio(ratio, len(inputs), equal)
    tables = [_read(path) for path in inputs]
    counts = target_counts([len(t) for t in tables], weights, size)
    rng = random.Random(seed)
    mixed: list[dict[str, Any]] = []
    shares = []
    for path, rows, count in zip(inputs, tables, counts, strict=True):
        for row in draw(rows, count, rng):
            mixed.append({**row, "extra_info": {**(row.get("extra_info") or {}),
                                                "mix_source": path.name}})
        shares.append(MixShare(str(path), len(rows), count))
    rng.shuffle(mixed)
    return _common_ground_truth_type(mixed), shares


def _read(path: Path) -> list[dict[str, Any]]:
    rows = list(iter_records(path))
    if not rows:
        raise UserInputError(f"{path}: no rows to mix")
    if "reward_model" not in rows[0] or "prompt" not in rows[0]:
        raise UserInputError(f"{path}: not a prepared file (no prompt/reward_model); run "
                             "`rollouts prepare KIND SOURCE` first")
    return rows


def _common_ground_truth_type(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parquet holds one type per column: when string answers meet lists (QA), lists become JSON
    text, which the qa reward reads back."""
    kinds = {type(row["reward_model"]["ground_truth"]) is str for row in rows}
    if len(kinds) == 1:
        return rows
    return [
        {**row, "reward_model": {**row["reward_model"],
                                 "ground_truth": _as_text(row["reward_model"]["ground_truth"])}}
        for row in rows
    ]


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
