"""scoring.report.stats: bootstrap over prompts, exact McNemar, sign-flip test, Holm, by hand."""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import pytest

from scoring.report.stats import (
    bootstrap_means,
    holm,
    is_single_binary,
    mcnemar_exact,
    paired_test,
    percentile_interval,
    resample_counts,
    sign_flip_p_value,
)


def test_resample_counts_draw_every_prompt_count_once_per_replicate() -> None:
    counts = resample_counts(np.random.default_rng(0), 7, 50)
    assert counts.shape == (50, 7)
    assert np.all(counts.sum(axis=1) == 7)
    assert counts.min() >= 0


def test_bootstrap_keeps_undefined_prompts_out_of_each_mean() -> None:
    # Prompt 2 has no value for the second metric (fewer than k samples): replicate means of that
    # column only ever average prompts 0 and 1.
    values = np.array([[0.0, 1.0], [1.0, 3.0], [0.5, np.nan]])
    draws = bootstrap_means(values, np.random.default_rng(1), 400)
    assert draws.shape == (400, 2)
    finite = draws[:, 1][~np.isnan(draws[:, 1])]
    assert finite.min() >= 1.0 and finite.max() <= 3.0
    assert np.all(draws[:, 0] >= 0.0) and np.all(draws[:, 0] <= 1.0)


def test_two_prompt_interval_is_their_two_values() -> None:
    # The mean of two resampled prompts is a, (a+b)/2 or b with chances 1/4, 1/2, 1/4, so the 2.5%
    # and 97.5% points are a and b.
    low, high = percentile_interval(bootstrap_means(np.array([0.25, 0.75]), np.random.default_rng(2)))
    assert (low[0], high[0]) == (0.25, 0.75)


def test_bootstrap_is_fixed_by_the_seed() -> None:
    values = np.random.default_rng(3).random((40, 3))
    first = bootstrap_means(values, np.random.default_rng(9))
    assert np.array_equal(first, bootstrap_means(values, np.random.default_rng(9)))
    assert not np.array_equal(first, bootstrap_means(values, np.random.default_rng(10)))


def test_mcnemar_exact_by_hand() -> None:
    # 1 prompt only A passes, 7 only B passes, 2 both: p = 2 * P(X <= 1), X ~ Bin(8, 1/2) = 18/256.
    a = np.array([1, 0, 0, 0, 0, 0, 0, 0, 1, 1], dtype=float)
    b = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1], dtype=float)
    assert mcnemar_exact(a, b) == pytest.approx(2 * (comb(8, 0) + comb(8, 1)) / 2**8)
    assert mcnemar_exact(a, a) == 1.0


def test_sign_flip_enumerates_every_pattern_when_few() -> None:
    # |mean| over the 4 sign patterns of (0.25, 0.5): 0.375, 0.125, 0.125, 0.375; observed 0.375.
    assert sign_flip_p_value(np.array([0.25, 0.5]), np.random.default_rng(0)) == 0.5
    diffs = np.array([0.3, 0.1, 0.2, -0.05, 0.4])
    patterns = [np.array(s) for s in itertools.product((-1, 1), repeat=5)]
    expected = np.mean([abs((s * diffs).mean()) >= abs(diffs.mean()) - 1e-12 for s in patterns])
    assert sign_flip_p_value(diffs, np.random.default_rng(0)) == pytest.approx(expected)
    assert sign_flip_p_value(np.zeros(4), np.random.default_rng(0)) == 1.0


def test_sign_flip_samples_patterns_when_many() -> None:
    rng = np.random.default_rng(4)
    shifted = rng.normal(0.5, 1.0, 60)
    centred = rng.normal(0.0, 1.0, 60)
    assert sign_flip_p_value(shifted, np.random.default_rng(0), 2000) < 0.01
    assert sign_flip_p_value(centred, np.random.default_rng(0), 2000) > 0.05
    # The observed pattern counts as one draw: never exactly zero.
    assert sign_flip_p_value(np.full(60, 1.0), np.random.default_rng(0), 999) == pytest.approx(1 / 1000)


def test_paired_test_picks_mcnemar_for_one_binary_sample_per_prompt() -> None:
    a = np.array([1.0, 0, 0, 1])
    b = np.array([1.0, 1, 1, 1])
    ones = np.ones(4, dtype=int)
    assert is_single_binary(a, b, ones, ones)
    result = paired_test(a, b, ones, ones, np.random.default_rng(0))
    assert (result.test, result.n_pairs, result.delta) == ("mcnemar", 4, 0.5)
    assert result.p_value == pytest.approx(0.5)  # 2 discordant pairs, both for B: 2 * 1/4
    several = paired_test(a, b, ones * 4, ones * 4, np.random.default_rng(0))
    assert several.test == "sign-flip"
    assert paired_test(a[:0], b[:0], ones[:0], ones[:0], np.random.default_rng(0)).test == "none"


def test_holm_by_hand() -> None:
    # Sorted 0.01, 0.02, 0.04 times 3, 2, 1 = 0.03, 0.04, 0.04 (running maximum); NaN is no test.
    adjusted = holm(np.array([0.04, 0.01, np.nan, 0.02]))
    assert adjusted[[1, 3, 0]] == pytest.approx([0.03, 0.04, 0.04])
    assert np.isnan(adjusted[2])
    assert holm(np.array([0.5, 0.9])) == pytest.approx([1.0, 1.0])
    assert holm(np.array([])).shape == (0,)
