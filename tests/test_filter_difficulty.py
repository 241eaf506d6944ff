"""Library tests for scoring.difficulty: Wilson interval, strategies and their validation."""

from __future__ import annotations

import numpy as np
import pytest

from rollouts.errors import UserInputError
from scoring.difficulty import (
    BIN_NAMES,
    BandStrategy,
    BinsStrategy,
    KOfNStrategy,
    NonzeroVarianceStrategy,
    PercentileStrategy,
    make_strategy,
    parse_percentiles,
    wilson_interval,
)


def names_of(strategy, n_pass, n) -> list[str]:
    index, _ = strategy.assign(np.asarray(n_pass), np.asarray(n))
    return [strategy.bucket_names()[i] for i in index]


@pytest.mark.parametrize(
    ("n_pass", "n", "low", "high"),
    [
        (0, 10, 0.0, 0.27753),
        (5, 10, 0.23659, 0.76341),
        (10, 10, 0.72247, 1.0),
        (1, 16, 0.01112, 0.28330),
    ],
)
def test_wilson_interval_matches_reference_values(n_pass, n, low, high):
    lo, hi = wilson_interval(np.array([n_pass]), np.array([n]))
    assert lo[0] == pytest.approx(low, abs=1e-4)
    assert hi[0] == pytest.approx(high, abs=1e-4)


def test_wilson_interval_is_nan_without_samples_and_narrows_with_more():
    lo, hi = wilson_interval(np.array([0, 8, 80]), np.array([0, 16, 160]))
    assert np.isnan(lo[0]) and np.isnan(hi[0])
    assert hi[2] - lo[2] < hi[1] - lo[1]


def test_percentile_cuts_by_rank_and_keeps_ties_together():
    strategy = PercentileStrategy((50.0,))
    assert strategy.bucket_names() == ["p0-50", "p50-100"]
    # Rates 0, .25, .25, .25, 1: the median is .25, so all three .25s stay in the lower bucket.
    got = names_of(strategy, [0, 1, 1, 1, 4], [4, 4, 4, 4, 4])
    assert got == ["p0-50", "p0-50", "p0-50", "p0-50", "p50-100"]
    _, details = strategy.assign(np.array([0, 1, 1, 1, 4]), np.array([4] * 5))
    assert details["cutoffs"] == [0.25]


def test_percentile_three_buckets_split_evenly_on_distinct_rates():
    strategy = PercentileStrategy((33.0, 66.0))
    n_pass = np.arange(9)
    got = names_of(strategy, n_pass, np.full(9, 8))
    assert [got.count(b) for b in strategy.bucket_names()] == [3, 3, 3]
    assert got[0] == "p0-33" and got[-1] == "p66-100"


def test_band_is_strict_on_both_sides():
    strategy = BandStrategy(0.25, 0.75)
    got = names_of(strategy, [0, 1, 2, 3, 4], [4] * 5)
    assert got == ["dropped", "dropped", "kept", "dropped", "dropped"]


def test_bins_edges():
    n = [10, 10, 10, 10, 10, 10, 10, 16]
    n_pass = [0, 2, 3, 6, 8, 9, 10, 15]
    got = names_of(BinsStrategy(), n_pass, n)
    assert got == [
        "impossible",  # 0
        "very_hard",  # 0.2 (right-closed)
        "hard",  # 0.3
        "medium",  # 0.6
        "easy",  # 0.8
        "very_easy",  # 0.9
        "perfect",  # 1
        "very_easy",  # 15/16
    ]
    assert BinsStrategy().bucket_names() == list(BIN_NAMES)


def test_nonzero_variance_drops_all_pass_and_all_fail():
    got = names_of(NonzeroVarianceStrategy(), [0, 1, 7, 8], [8] * 4)
    assert got == ["dropped", "kept", "kept", "dropped"]


def test_k_of_n_bounds_are_inclusive_and_k_means_exactly():
    n_pass, n = [0, 1, 2, 3, 4], [4] * 5
    assert names_of(KOfNStrategy(min_k=1, max_k=3), n_pass, n) == [
        "dropped", "kept", "kept", "kept", "dropped"
    ]
    assert names_of(KOfNStrategy(min_k=3), n_pass, n) == [
        "dropped", "dropped", "dropped", "kept", "kept"
    ]
    assert names_of(KOfNStrategy(max_k=0), n_pass, n) == [
        "kept", "dropped", "dropped", "dropped", "dropped"
    ]
    assert names_of(KOfNStrategy(k=2), n_pass, n) == [
        "dropped", "dropped", "kept", "dropped", "dropped"
    ]
    assert KOfNStrategy(min_k=2).parameters() == {"min_k": 2, "max_k": None}


def test_k_of_n_refuses_more_passes_than_samples():
    with pytest.raises(UserInputError, match="no prompt has more than 4 samples"):
        KOfNStrategy(min_k=5).assign(np.array([1]), np.array([4]))


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("hardest", {}, "unknown strategy 'hardest'"),
        ("band", {"min_rate": 0.9, "max_rate": 0.1}, "--min 0.9 must be below --max 0.1"),
        ("band", {"min_rate": 0.5, "max_rate": 0.5}, "must be below"),
        ("band", {"max_rate": 1.5}, r"must be in \[0, 1\]"),
        ("percentile", {"percentiles": (0.0, 50.0)}, "strictly between 0 and 100"),
        ("percentile", {"percentiles": (50.0, 120.0)}, "strictly between 0 and 100"),
        ("percentile", {"percentiles": (66.0, 33.0)}, "increasing order"),
        ("percentile", {"percentiles": ()}, "at least one value"),
        ("k-of-n", {}, "needs --min-k"),
        ("k-of-n", {"k": 2, "min_k": 1}, "use it alone"),
        ("k-of-n", {"min_k": 3, "max_k": 1}, "must not exceed"),
        ("k-of-n", {"min_k": -1}, "cannot be negative"),
        ("bins", {"min_rate": 0.1}, "--min does not apply to --strategy bins"),
        ("band", {"percentiles": (50.0,)}, "--percentiles does not apply to --strategy band"),
        ("nonzero-variance", {"k": 1}, "--k does not apply"),
    ],
)
def test_bad_strategy_options_are_one_line_errors(name, options, message):
    with pytest.raises(UserInputError, match=message) as caught:
        make_strategy(name, **options)
    assert "\n" not in str(caught.value)


def test_make_strategy_ignores_unset_options_and_builds_each_kind():
    assert isinstance(make_strategy("bins", min_rate=None, k=None), BinsStrategy)
    assert make_strategy("band", min_rate=0.1, max_rate=0.9) == BandStrategy(0.1, 0.9)
    assert make_strategy("percentile", percentiles=(10, 90)).bucket_names() == [
        "p0-10", "p10-90", "p90-100"
    ]


@pytest.mark.parametrize(
    ("given", "expected"),
    [(("33,66",), (33.0, 66.0)), (("33 66",), (33.0, 66.0)), (("25", "50", "75"), (25.0, 50.0, 75.0))],
)
def test_parse_percentiles_accepts_commas_spaces_and_repeats(given, expected):
    assert parse_percentiles(given) == expected


def test_parse_percentiles_rejects_words():
    with pytest.raises(UserInputError, match="expected numbers"):
        parse_percentiles(("low,high",))
