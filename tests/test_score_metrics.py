"""pass@k (unbiased estimator), maj@k over answer classes, mean@n, status counts."""

from __future__ import annotations

import itertools
import random
from math import comb

import pandas as pd
import pytest

from scoring.metrics import ks_for, majority_correct, majority_curve, metrics_by_source, pass_at_k


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """The fraction of k-subsets of the n samples that contain a pass."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 0, 1), (5, 1, 1), (5, 2, 3), (8, 3, 4), (8, 8, 8), (6, 1, 6)])
def test_pass_at_k_matches_subset_enumeration(n: int, c: int, k: int) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k))


def test_pass_at_k_large_n_is_stable() -> None:
    expected = 1 - comb(1000 - 3, 100) / comb(1000, 100)
    assert pass_at_k(1000, 3, 100) == pytest.approx(expected)


def test_pass_at_k_refuses_k_above_n() -> None:
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_ks_every_k_then_powers_of_two_and_own_n() -> None:
    assert ks_for([4, 3]) == [1, 2, 3, 4]
    assert ks_for([100]) == list(range(1, 33)) + [64, 100]


def test_majority_votes_over_classes_not_strings() -> None:
    # Two samples say 1/2 in different forms (one class); three different wrong answers.
    classes = ["num:0.5", "num:0.5", "num:1", "num:2", None]
    assert majority_correct(classes, [False, False, False, False, False]) is False
    # Correct answers share the gold class and outvote a scattered wrong majority.
    classes = ["=gold", "=gold", "num:1", "num:2", "num:3"]
    assert majority_correct(classes, [True, True, False, False, False]) is True


def test_majority_tie_goes_to_the_class_seen_first() -> None:
    assert majority_correct(["num:1", "=gold", "=gold", "num:1"], [False, True, True, False]) is False
    assert majority_correct(["=gold", "num:1"], [True, False]) is True
    assert majority_correct([None, None], [False, False]) is False


def _rows(prompt: str, accs: list[bool], classes: list[str | None], source: str = "s") -> list[dict]:
    return [
        {
            "prompt_id": prompt,
            "sample_idx": i,
            "data_source": source,
            "score": float(acc),
            "acc": acc,
            "answer_class": cls,
            "score_status": "ok" if cls else "no_answer",
        }
        for i, (acc, cls) in enumerate(zip(accs, classes, strict=True))
    ]


def test_metrics_by_source_with_prompts_of_different_n() -> None:
    frame = pd.DataFrame(
        _rows("p1", [True, False, False, False], ["=gold", "num:2", "num:2", None])
        + _rows("p2", [True, True], ["=gold", "=gold"])
        + _rows("q1", [False], [None], source="t")
    )
    metrics = metrics_by_source(frame)
    s = metrics["s"]
    assert s["n_prompts"] == 2 and s["n_samples"] == 6
    assert s["mean@n"] == pytest.approx((0.25 + 1.0) / 2)
    assert s["pass@k"]["1"] == pytest.approx((0.25 + 1.0) / 2)
    assert s["pass@k"]["2"] == pytest.approx((brute_force_pass_at_k(4, 1, 2) + 1.0) / 2)
    # k=3 and 4: only p1 has that many samples.
    assert s["pass@k"]["4"] == 1.0 and s["prompts_at_k"] == {"1": 2, "2": 2, "3": 1, "4": 1}
    # p1: first 3 samples vote num:2 (wrong); p2 right at every k.
    assert s["maj@k"] == {"1": 1.0, "2": 1.0, "3": 0.0, "4": 0.0}
    assert s["status_counts"]["no_answer"] == 1 and s["status_counts"]["ok"] == 5
    assert metrics["t"]["pass@k"] == {"1": 0.0}


def test_metrics_use_sample_order_not_row_order() -> None:
    rows = _rows("p", [False, True, True], ["num:1", "=gold", "=gold"])
    frame = pd.DataFrame(list(reversed(rows)))
    assert metrics_by_source(frame)["s"]["maj@k"]["1"] == 0.0


def test_majority_curve_equals_vote_on_every_prefix() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 12)
        classes = [rng.choice(["=gold", "num:1", "num:2", None]) for _ in range(n)]
        accs = [c == "=gold" for c in classes]
        expected = [majority_correct(classes[:k], accs[:k]) for k in range(1, n + 1)]
        assert majority_curve(classes, accs) == expected
