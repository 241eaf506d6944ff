"""Pass rates and their Wilson 95% intervals."""

from __future__ import annotations

import numpy as np

from scoring.difficulty.columns import (
    WILSON_Z,
)


def wilson_interval(
    n_pass: np.ndarray, n: np.ndarray, z: float = WILSON_Z
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for n_pass successes out of n (NaN where n == 0)."""
    n_pass = np.asarray(n_pass, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = n_pass / n
        z2 = z * z
        denom = 1.0 + z2 / n
        center = (p + z2 / (2.0 * n)) / denom
        half = z / denom * np.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    # Clip rounding noise so 0/n gives exactly 0 and n/n exactly 1.
    return np.clip(center - half, 0.0, 1.0), np.clip(center + half, 0.0, 1.0)


def pass_rates(n_pass: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(n_pass, dtype=np.float64) / np.asarray(n, dtype=np.float64)


