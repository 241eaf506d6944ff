"""On-disk verdict cache: sqlite, keyed by a hash of (reward fn, version, answer, ground truth, ...).

The N samples of a prompt repeat the same few answers, and scoring is re-run often while reward
code changes; a version bump in a reward function makes its old verdicts unreachable. Only final
verdicts are stored: timeouts and errors may be transient and are computed again next time.
WAL mode lets several `score` processes share one cache.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rollouts.io import dumps_json
from scoring.types import RewardResult

CACHE_FILE = "verdicts.sqlite"
CACHE_ENV = "ROLLOUTS_SCORE_CACHE"
CACHEABLE_STATUSES = frozenset({"ok", "no_answer"})
# sqlite's default limit on host parameters per statement is 999 on older builds.
_CHUNK = 900


def default_cache_dir() -> Path:
    """$ROLLOUTS_SCORE_CACHE, else $XDG_CACHE_HOME/rollouts/score, else ~/.cache/rollouts/score."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rollouts" / "score"


class VerdictCache:
    """get_many / put_many over one sqlite file; use as a context manager."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / CACHE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Verdicts are committed batch by batch as they arrive: no fsync per commit (WAL with
        # NORMAL survives a killed process; a power cut may lose the last verdicts, which are
        # then judged again).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, reward_fn TEXT, "
            "version TEXT, result TEXT NOT NULL)"
        )
        self._db.commit()

    def __enter__(self) -> VerdictCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def get_many(self, keys: Iterable[str]) -> dict[str, RewardResult]:
        found: dict[str, RewardResult] = {}
        key_list = list(keys)
        for start in range(0, len(key_list), _CHUNK):
            chunk = key_list[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, result FROM verdicts WHERE key IN ({marks})", chunk
            )
            found.update((key, decode(text)) for key, text in rows)
        return found

    def put_many(self, verdicts: Mapping[str, tuple[str, str, RewardResult]]) -> int:
        """Store (reward_fn, version, result) by key; returns how many were cacheable."""
        rows = [
            (key, fn, version, encode(result))
            for key, (fn, version, result) in verdicts.items()
            if result.status in CACHEABLE_STATUSES
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?)", rows)
        return len(rows)

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])


def to_record(result: RewardResult) -> dict[str, Any]:
    """A verdict as plain JSON-able data (the cache and the verdict journal store this)."""
    return {
        "score": result.score,
        "acc": result.acc,
        "pred": result.pred,
        "status": result.status,
        "extra": result.extra,
        "answer_class": result.answer_class,
    }


def from_record(data: dict[str, Any]) -> RewardResult:
    return RewardResult(
        score=float(data["score"]),
        acc=bool(data["acc"]),
        pred=data["pred"],
        status=data["status"],
        extra=data.get("extra") or {},
        answer_class=data.get("answer_class"),
    )


def encode(result: RewardResult) -> str:
    return dumps_json(to_record(result))


def decode(text: str) -> RewardResult:
    return from_record(json.loads(text))
