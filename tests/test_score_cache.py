"""The sqlite verdict cache: round trip, what is not cached, keys that change with the version."""

from __future__ import annotations

from pathlib import Path

from scoring.cache import VerdictCache
from scoring.rewards import RewardOptions, get_reward_fn
from scoring.rewards.custom import CustomReward
from scoring.scorer import item_key
from scoring.types import RewardResult


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    result = RewardResult(score=0.5, acc=True, pred="x", status="ok", extra={"f1": 0.5, "why": [1, 2]},
                          answer_class="num:1")
    with VerdictCache(tmp_path) as cache:
        assert cache.put_many({"k": ("qa", "1", result)}) == 1
    with VerdictCache(tmp_path) as reopened:
        assert reopened.get_many(["k", "missing"]) == {"k": result}


def test_timeouts_and_errors_are_not_cached(tmp_path: Path) -> None:
    verdicts = {
        "t": ("math", "1", RewardResult(0.0, False, None, "timeout")),
        "e": ("math", "1", RewardResult(0.0, False, None, "error")),
        "n": ("math", "1", RewardResult(0.0, False, None, "no_answer")),
    }
    with VerdictCache(tmp_path) as cache:
        assert cache.put_many(verdicts) == 1
        assert set(cache.get_many(["t", "e", "n"])) == {"n"}


def test_many_keys_in_one_lookup(tmp_path: Path) -> None:
    verdicts = {f"k{i}": ("math", "1", RewardResult(float(i), True, str(i))) for i in range(2500)}
    with VerdictCache(tmp_path) as cache:
        cache.put_many(verdicts)
        found = cache.get_many(verdicts)
        assert cache.count() == 2500
    assert len(found) == 2500 and found["k2499"].score == 2499.0


def test_key_changes_with_version_answer_and_gold_but_not_context_for_math(tmp_path: Path) -> None:
    math_fn = get_reward_fn("math", RewardOptions())
    base = item_key(math_fn, "1/2", "0.5", "ds", {"index": 1})
    assert base == item_key(math_fn, "1/2", "0.5", "other", {"index": 2})
    assert base != item_key(math_fn, "1/3", "0.5", "ds", None)
    assert base != item_key(math_fn, "1/2", "0.25", "ds", None)
    path = tmp_path / "r.py"
    path.write_text("def compute_score(*a, **k):\n    return 1.0\n")
    old = CustomReward(f"{path}:compute_score")
    path.write_text("def compute_score(*a, **k):\n    return 0.0\n")
    new = CustomReward(f"{path}:compute_score")
    assert item_key(old, "a", "g", "ds", None) != item_key(new, "a", "g", "ds", None)
    # Custom functions see data_source and extra_info, so those are part of their key.
    assert item_key(new, "a", "g", "ds", None) != item_key(new, "a", "g", "ds", {"index": 1})
