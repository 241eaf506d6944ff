"""Metrics over scored rows, per data source.

- mean@n: the mean over prompts of each prompt's mean score.
- pass@k: the unbiased estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k) for a prompt with
  n samples of which c pass, averaged over the prompts that have at least k samples; reported for
  every k up to the largest n (above 32 only powers of two and each prompt's own n).
- maj@k: majority vote over the first k samples (by sample_idx) of each prompt, where votes go to
  answer-equivalence classes (`1/2` and `0.5` are one answer), not raw strings; ties go to the
  class seen first; samples without an answer do not vote. Absent when the reward function gives
  no classes (code, custom functions without `pred`).
- status_counts: rows per score_status.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from scoring.types import SCORE_STATUSES

EVERY_K_UP_TO = 32


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one prompt, computed as a stable product (no huge binomials)."""
    if k > n:
        raise ValueError(f"k={k} exceeds the prompt's n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def ks_for(ns: Sequence[int]) -> list[int]:
    """Every k up to EVERY_K_UP_TO, then powers of two and each prompt's own n."""
    top = max(ns, default=0)
    ks = set(range(1, min(top, EVERY_K_UP_TO) + 1))
    power = EVERY_K_UP_TO * 2
    while power <= top:
        ks.add(power)
        power *= 2
    ks.update(n for n in ns if n > 0)
    return sorted(ks)


def majority_correct(classes: Sequence[str | None], accs: Sequence[bool]) -> bool:
    """Whether the most common answer class (ties: seen first) is a passing one."""
    votes = Counter(c for c in classes if c is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(c for c in classes if c is not None and votes[c] == top)
    return any(acc for cls, acc in zip(classes, accs, strict=True) if cls == winner)


def _prompt_groups(frame: pd.DataFrame) -> list[pd.DataFrame]:
    ordered = frame.sort_values(["prompt_id", "sample_idx"], kind="stable")
    return [group for _, group in ordered.groupby("prompt_id", sort=True)]


def source_metrics(frame: pd.DataFrame) -> dict[str, Any]:
    """Metrics of one data source's rows (needs prompt_id, sample_idx, score, acc, score_status)."""
    groups = _prompt_groups(frame)
    ns = [len(g) for g in groups]
    ks = ks_for(ns)
    accs = [g["acc"].astype(bool).tolist() for g in groups]
    scores = [float(g["score"].astype(float).mean()) for g in groups]
    result: dict[str, Any] = {
        "n_prompts": len(groups),
        "n_samples": int(sum(ns)),
        "samples_per_prompt": {"min": min(ns, default=0), "max": max(ns, default=0)},
        "mean@n": float(np.mean(scores)) if scores else None,
        "pass@k": _per_k(ks, ns, lambda i, k: pass_at_k(ns[i], sum(accs[i]), k)),
    }
    if "answer_class" in frame.columns and frame["answer_class"].notna().any():
        classes = [_classes(g) for g in groups]
        result["maj@k"] = _per_k(
            ks, ns, lambda i, k: float(majority_correct(classes[i][:k], accs[i][:k]))
        )
    if min(ns, default=0) != max(ns, default=0):
        result["prompts_at_k"] = {str(k): sum(n >= k for n in ns) for k in ks}
    result["status_counts"] = status_counts(frame)
    return result


def _classes(group: pd.DataFrame) -> list[str | None]:
    return [c if isinstance(c, str) else None for c in group["answer_class"].tolist()]


def _per_k(ks: list[int], ns: list[int], value: Any) -> dict[str, float]:
    """Mean over the prompts that have at least k samples."""
    out: dict[str, float] = {}
    for k in ks:
        values = [value(i, k) for i, n in enumerate(ns) if n >= k]
        if values:
            out[str(k)] = float(np.mean(values))
    return out


def status_counts(frame: pd.DataFrame) -> dict[str, int]:
    counts = frame["score_status"].value_counts()
    return {status: int(counts.get(status, 0)) for status in SCORE_STATUSES}


def metrics_by_source(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """source_metrics for each data_source, in sorted order."""
    sources = frame["data_source"].astype(str)
    return {
        str(source): source_metrics(frame[sources == source])
        for source in sorted(sources.unique())
    }
