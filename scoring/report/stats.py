"""Uncertainty for per-prompt scores: bootstrap intervals, paired tests, Holm's correction.

Every function takes per-prompt values (one number per prompt: its mean score, its pass@k estimate,
its majority vote) so that a prompt's samples stay together when resampling. NaN marks a prompt
where the metric is undefined (fewer than k samples); such prompts drop out of each replicate's mean,
as they drop out of the point estimate.

All randomness comes from the `numpy.random.Generator` passed in, so a seed fixes every number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_REPS = 1000
PERMUTATIONS = 5000


def resample_counts(rng: np.random.Generator, n_prompts: int, reps: int) -> np.ndarray:
    """(reps, n_prompts) counts: how often each prompt is drawn in each bootstrap replicate."""
    draws = rng.integers(0, n_prompts, size=(reps, n_prompts))
    offsets = np.arange(reps)[:, None] * n_prompts
    flat = np.bincount((draws + offsets).ravel(), minlength=reps * n_prompts)
    return flat.reshape(reps, n_prompts).astype(np.float32)


def bootstrap_means(
    values: np.ndarray,
    rng: np.random.Generator | None,
    reps: int = BOOTSTRAP_REPS,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """Bootstrap replicates of the column means of `values` (prompts x metrics, NaN = undefined).

    Returns (reps, metrics); a replicate that drew no prompt with the metric defined is NaN.
    `counts` (from resample_counts) replaces the draw, so several models scored on the same
    prompts can share one resampling of them.
    """
    matrix = values.reshape(len(values), -1)
    defined = ~np.isnan(matrix)
    if counts is None:
        if rng is None:
            raise ValueError("bootstrap_means needs a generator or counts")
        counts = resample_counts(rng, len(matrix), reps)
    # float32 halves the work of the one large product; counts are small integers and the values
    # lie in [0, 1], so the means keep about 7 significant digits.
    weights = counts.astype(np.float32, copy=False)
    totals = (weights @ np.where(defined, matrix, 0.0).astype(np.float32)).astype(np.float64)
    drawn = np.repeat(weights.sum(axis=1, dtype=np.float64)[:, None], matrix.shape[1], axis=1)
    partial = ~defined.all(axis=0)
    if partial.any():  # only metrics some prompts lack (pass@k with fewer than k samples)
        drawn[:, partial] = weights @ defined[:, partial].astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(drawn > 0, totals / np.where(drawn > 0, drawn, 1.0), np.nan)


def percentile_interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of each column of `replicates` (NaN replicates ignored)."""
    tail = (1.0 - confidence) / 2.0
    matrix = replicates.reshape(len(replicates), -1)
    if not np.isnan(matrix).any():
        low, high = np.quantile(matrix, [tail, 1.0 - tail], axis=0)
        return low, high
    low = np.full(matrix.shape[1], np.nan)
    high = np.full(matrix.shape[1], np.nan)
    for column in range(matrix.shape[1]):
        finite = matrix[:, column][~np.isnan(matrix[:, column])]
        if len(finite):
            low[column], high[column] = np.quantile(finite, [tail, 1.0 - tail])
    return low, high


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison on the prompts both sides have: B minus A."""

    n_pairs: int
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str  # "mcnemar" (exact), "sign-flip" (permutation) or "none" (no pairs)


def is_single_binary(a: np.ndarray, b: np.ndarray, a_n: np.ndarray, b_n: np.ndarray) -> bool:
    """One 0/1 sample per prompt on both sides: the case for McNemar's exact test."""
    single = bool(np.all(a_n == 1) and np.all(b_n == 1))
    return single and bool(np.all(np.isin(a, (0.0, 1.0))) and np.all(np.isin(b, (0.0, 1.0))))


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the discordant pairs."""
    from scipy.stats import binomtest  # scipy is slow to import; only comparisons need it

    only_b = int(np.sum((b == 1) & (a == 0)))
    only_a = int(np.sum((a == 1) & (b == 0)))
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_b, only_a + only_b, 0.5).pvalue)


def random_signs(rng: np.random.Generator, flips: int, n: int) -> np.ndarray:
    """(flips, n) random +-1 patterns for the sign-flip test (float32: exact, and half the memory)."""
    return np.where(rng.random((flips, n)) < 0.5, -1.0, 1.0).astype(np.float32)


def sign_flip_p_value(
    diffs: np.ndarray,
    rng: np.random.Generator,
    flips: int = PERMUTATIONS,
    signs: np.ndarray | None = None,
) -> float:
    """Two-sided p-value of mean(diffs) = 0 by flipping the sign of each prompt's difference.

    Every sign pattern is enumerated when there are at most `flips` of them (an exact test);
    otherwise `flips` random patterns are drawn (or `signs` from random_signs used) and the
    observed one counts as one of them.
    """
    n = len(diffs)
    if n == 0 or not np.any(diffs):
        return 1.0
    observed = abs(float(diffs.mean()))
    tolerance = 1e-12 * max(1.0, observed)
    if 2**n <= flips:
        patterns = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        statistics = np.abs((1 - 2 * patterns) @ diffs) / n
        return float(np.mean(statistics >= observed - tolerance))
    if signs is None:
        signs = random_signs(rng, flips, n)
    statistics = np.abs(signs @ diffs.astype(np.float32)).astype(np.float64) / n
    tolerance = max(tolerance, 1e-6 * float(np.abs(diffs).sum()) / n)  # float32 rounding
    return float((1 + np.sum(statistics >= observed - tolerance)) / (len(signs) + 1))


def paired_test(
    a: np.ndarray,
    b: np.ndarray,
    a_n: np.ndarray,
    b_n: np.ndarray,
    rng: np.random.Generator,
    reps: int = BOOTSTRAP_REPS,
    flips: int = PERMUTATIONS,
    counts: np.ndarray | None = None,
    signs: np.ndarray | None = None,
) -> PairedTest:
    """B - A on aligned per-prompt values (NaN-free), with a paired-bootstrap interval.

    a_n and b_n are the samples per prompt on each side, which choose the test; `counts` and
    `signs` (for these prompts) may be shared with other comparisons on the same prompts.
    """
    if len(a) == 0:
        return PairedTest(0, np.nan, np.nan, np.nan, np.nan, "none")
    diffs = b - a
    low, high = percentile_interval(bootstrap_means(diffs, rng, reps, counts))
    if is_single_binary(a, b, a_n, b_n):
        p_value, test = mcnemar_exact(a, b), "mcnemar"
    else:
        p_value, test = sign_flip_p_value(diffs, rng, flips, signs), "sign-flip"
    return PairedTest(len(a), float(diffs.mean()), float(low[0]), float(high[0]), p_value, test)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted as a test)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    scaled = p[order] * (m - np.arange(m))
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted
