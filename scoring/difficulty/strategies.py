"""Bucketing strategies: percentile, band, bins, nonzero-variance, k-of-n."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from rollouts.errors import UserInputError
from scoring.difficulty.stats import pass_rates


class Strategy(Protocol):
    """Puts each prompt (given its passes and samples) into one of `bucket_names()`."""

    name: ClassVar[str]
    option_names: ClassVar[tuple[str, ...]]

    def bucket_names(self) -> list[str]: ...

    def assign(self, n_pass: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Bucket index per prompt, and details for the summary (e.g. computed cutoffs)."""
        ...

    def parameters(self) -> dict[str, Any]: ...


def rate_label(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class PercentileStrategy:
    """Cut at percentiles of the pass rate; the first bucket holds the hardest prompts.

    Cutoff c_i is numpy's (linear) percentile p_i of the bucketed prompts' pass rates; a prompt
    goes to the first bucket whose cutoff is >= its rate (ties stay together), else the last.
    """

    percentiles: tuple[float, ...] = (33.0, 66.0)
    name: ClassVar[str] = "percentile"
    option_names: ClassVar[tuple[str, ...]] = ("percentiles",)

    def __post_init__(self) -> None:
        values = tuple(float(p) for p in self.percentiles)
        object.__setattr__(self, "percentiles", values)
        if not values:
            raise UserInputError("--percentiles needs at least one value, e.g. --percentiles 33,66")
        if any(not 0.0 < p < 100.0 for p in values):
            raise UserInputError(
                f"--percentiles {','.join(map(rate_label, values))}: each must be strictly between "
                "0 and 100"
            )
        if any(b <= a for a, b in zip(values, values[1:], strict=False)):
            raise UserInputError(
                f"--percentiles {','.join(map(rate_label, values))}: give them in increasing order "
                "without repeats"
            )

    def bucket_names(self) -> list[str]:
        edges = (0.0, *self.percentiles, 100.0)
        return [f"p{rate_label(lo)}-{rate_label(hi)}" for lo, hi in zip(edges, edges[1:], strict=False)]

    def assign(self, n_pass: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        rates = pass_rates(n_pass, n)
        if rates.size == 0:
            return np.zeros(0, dtype=np.int64), {"cutoffs": []}
        cutoffs = np.percentile(rates, self.percentiles)
        return np.searchsorted(cutoffs, rates, side="left"), {"cutoffs": cutoffs.tolist()}

    def parameters(self) -> dict[str, Any]:
        return {"percentiles": list(self.percentiles)}


@dataclass(frozen=True)
class BandStrategy:
    """Keep prompts with min < pass rate < max (both strict); the rest are dropped."""

    min_rate: float = 0.0
    max_rate: float = 1.0
    name: ClassVar[str] = "band"
    option_names: ClassVar[tuple[str, ...]] = ("min_rate", "max_rate")

    def __post_init__(self) -> None:
        for flag, value in (("--min", self.min_rate), ("--max", self.max_rate)):
            if not 0.0 <= value <= 1.0:
                raise UserInputError(f"{flag} {rate_label(value)}: a pass rate must be in [0, 1]")
        if self.min_rate >= self.max_rate:
            raise UserInputError(
                f"--min {rate_label(self.min_rate)} must be below --max {rate_label(self.max_rate)}"
            )

    def bucket_names(self) -> list[str]:
        return ["kept", "dropped"]

    def assign(self, n_pass: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        rates = pass_rates(n_pass, n)
        kept = (rates > self.min_rate) & (rates < self.max_rate)
        return np.where(kept, 0, 1), {}

    def parameters(self) -> dict[str, Any]:
        return {"min": self.min_rate, "max": self.max_rate}


BIN_NAMES = ("impossible", "very_hard", "hard", "medium", "easy", "very_easy", "perfect")
BIN_EDGES = (0.2, 0.4, 0.6, 0.8)


@dataclass(frozen=True)
class BinsStrategy:
    """Fixed buckets: impossible (rate 0), very_hard (0, 0.2], hard (0.2, 0.4], medium (0.4, 0.6],
    easy (0.6, 0.8], very_easy (0.8, 1), perfect (rate 1)."""

    name: ClassVar[str] = "bins"
    option_names: ClassVar[tuple[str, ...]] = ()

    def bucket_names(self) -> list[str]:
        return list(BIN_NAMES)

    def assign(self, n_pass: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        rates = pass_rates(n_pass, n)
        # Interior bins are right-closed; all-fail and all-pass are decided on counts, not floats.
        index = 1 + np.searchsorted(np.asarray(BIN_EDGES), rates, side="left")
        index = np.where(n_pass == 0, 0, index)
        index = np.where(n_pass == n, len(BIN_NAMES) - 1, index)
        return index, {"edges": [0.0, *BIN_EDGES, 1.0]}

    def parameters(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class NonzeroVarianceStrategy:
    """Keep prompts with at least one pass and one fail (DAPO's dynamic sampling filter)."""

    name: ClassVar[str] = "nonzero-variance"
    option_names: ClassVar[tuple[str, ...]] = ()

    def bucket_names(self) -> list[str]:
        return ["kept", "dropped"]

    def assign(self, n_pass: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        kept = (n_pass > 0) & (n_pass < n)
        return np.where(kept, 0, 1), {}

    def parameters(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class KOfNStrategy:
    """Keep prompts solved by min_k <= n_pass <= max_k samples (inclusive); `k` means exactly k."""

    min_k: int | None = None
    max_k: int | None = None
    k: int | None = None
    name: ClassVar[str] = "k-of-n"
    option_names: ClassVar[tuple[str, ...]] = ("min_k", "max_k", "k")

    def __post_init__(self) -> None:
        if self.k is not None and (self.min_k is not None or self.max_k is not None):
            raise UserInputError("--k means exactly k passes; use it alone or use --min-k/--max-k")
        if self.k is None and self.min_k is None and self.max_k is None:
            raise UserInputError(
                "--strategy k-of-n needs --min-k K (at least K passes), --max-k K (at most K) "
                "or --k K (exactly K)"
            )
        for flag, value in (("--k", self.k), ("--min-k", self.min_k), ("--max-k", self.max_k)):
            if value is not None and value < 0:
                raise UserInputError(f"{flag} {value}: a number of passes cannot be negative")
        if self.low > self.high:
            raise UserInputError(f"--min-k {self.min_k} must not exceed --max-k {self.max_k}")

    @property
    def low(self) -> int:
        return self.k if self.k is not None else (self.min_k or 0)

    @property
    def high(self) -> int | float:
        if self.k is not None:
            return self.k
        return self.max_k if self.max_k is not None else math.inf

    def bucket_names(self) -> list[str]:
        return ["kept", "dropped"]

    def assign(self, n_pass: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        if n.size and self.low > int(n.max()):
            raise UserInputError(
                f"k-of-n: at least {self.low} passes asked, but no prompt has more than "
                f"{int(n.max())} samples; lower --min-k/--k"
            )
        kept = (n_pass >= self.low) & (n_pass <= self.high)
        return np.where(kept, 0, 1), {}

    def parameters(self) -> dict[str, Any]:
        high = None if math.isinf(self.high) else int(self.high)
        return {"min_k": self.low, "max_k": high}


STRATEGIES: dict[str, Callable[..., Strategy]] = {
    cls.name: cls
    for cls in (
        PercentileStrategy,
        BandStrategy,
        BinsStrategy,
        NonzeroVarianceStrategy,
        KOfNStrategy,
    )
}
OPTION_FLAGS = {
    "percentiles": "--percentiles",
    "min_rate": "--min",
    "max_rate": "--max",
    "min_k": "--min-k",
    "max_k": "--max-k",
    "k": "--k",
}


def make_strategy(name: str, **options: Any) -> Strategy:
    """Build a strategy by name; options left as None are unset; a set option that the strategy
    does not take is an error (so `--min` with `--strategy bins` never passes silently)."""
    factory = STRATEGIES.get(name)
    if factory is None:
        raise UserInputError(
            f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}"
        )
    given = {key: value for key, value in options.items() if value is not None}
    accepted: tuple[str, ...] = factory.option_names  # type: ignore[attr-defined]
    stray = [OPTION_FLAGS.get(key, key) for key in given if key not in accepted]
    if stray:
        raise UserInputError(
            f"{', '.join(stray)} does not apply to --strategy {name}; drop it or pick the "
            "strategy it belongs to"
        )
    return factory(**given)


def parse_percentiles(values: Sequence[str]) -> tuple[float, ...]:
    """'33,66', '33 66' or repeated values, to floats."""
    out: list[float] = []
    for value in values:
        for part in value.replace(",", " ").split():
            try:
                out.append(float(part))
            except ValueError as exc:
                raise UserInputError(
                    f"--percentiles {value!r}: expected numbers, e.g. --percentiles 33,66"
                ) from exc
    return tuple(out)


