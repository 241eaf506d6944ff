"""Where a generate run stands, read from its files alone (another shell, a login node).

Sources, all beside the output OUT:
  OUT.summary.json   rewritten every few seconds by the running engine: expected samples, the writer's
                     pid and host, and a short history of (time, samples done) for the rate
  OUT.rollouts/      the store (rollouts.store): committed parquet parts in manifest.json, and the
                     write-ahead shards holding the newest samples; what is done is counted there
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq

from rollouts.engine import summary_path_for
from rollouts.errors import UserInputError
from rollouts.store import DoneIndex, state_dir_for

RATE_WINDOW_S = 60.0


@dataclass
class RunStatus:
    output: Path
    done: int  # samples on disk (successes and error rows)
    expected: int | None  # None: no summary yet
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    rate_per_s: float | None = None  # over the last minute, while the writer runs
    last_write: float | None = None  # unix time of the newest write-ahead append
    state: str = "unknown"  # running, finished, stopped (writer gone before the end), unknown
    writer: str = ""  # who writes, and whether it is alive

    @property
    def eta_s(self) -> float | None:
        if self.expected is None or not self.rate_per_s:
            return None
        return max(self.expected - self.done, 0) / self.rate_per_s


def read_status(output: Path, *, now: float | None = None) -> RunStatus:
    """The status of the run writing `output` (raises UserInputError when there is none)."""
    now = time.time() if now is None else now
    state_dir = state_dir_for(output)
    if not state_dir.is_dir():
        raise UserInputError(
            f"{output} has no run state ({state_dir} is missing); pass the -o path of a generate run"
        )
    done, errors, last_write = _count_samples(state_dir)
    summary = _read_json(summary_path_for(output)) or {}
    status = RunStatus(output, done, summary.get("expected_rows"), errors, last_write=last_write)
    if summary.get("state", "finished" if "finished_at" in summary else None) == "finished":
        status.state, status.writer = "finished", "finished at " + str(summary.get("finished_at"))
        return status
    progress = summary.get("progress") or {}
    alive, status.writer = _writer(progress, state_dir / "lock")
    status.state = "running" if alive else ("stopped" if progress else "unknown")
    if alive:
        status.rate_per_s = _rate(progress.get("history") or [], now)
    return status


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _count_samples(state_dir: Path) -> tuple[int, dict[str, int], float | None]:
    """Distinct (prompt, sample) pairs on disk, error kinds of those not since redone, and the time
    of the newest write. A later success replaces an error row, as in the final output."""
    successes = DoneIndex()
    errors: dict[tuple[str, int], str] = {}
    for keys in _stored_keys(state_dir):
        for prompt_id, sample_idx, kind in keys:
            if kind is None:
                successes.add(prompt_id, sample_idx)
                errors.pop((prompt_id, sample_idx), None)
            elif successes.missing_one(prompt_id, sample_idx):
                errors[(prompt_id, sample_idx)] = kind
    return successes.count() + len(errors), dict(Counter(errors.values())), _last_write(state_dir)


def _last_write(state_dir: Path) -> float | None:
    times = []
    for path in state_dir.iterdir():
        if path.name.startswith(("wal-", "part-")):
            with contextlib.suppress(FileNotFoundError):  # compacted or replaced meanwhile
                times.append(path.stat().st_mtime)
    return max(times, default=None)


def _stored_keys(state_dir: Path) -> Any:
    """(prompt_id, sample_idx, error_kind) of every stored row, read while the writer may compact.

    Shards first, then the manifest and its parts: a shard is removed only after the part holding
    its rows is in the manifest, so a shard gone before it was read has its rows in a part read
    after it. A row read twice (in its shard, then in its part) counts once (callers count
    distinct keys), so the count never misses a row, never goes backwards."""
    for shard in sorted(state_dir.glob("wal-*.jsonl")):
        yield _shard_keys(shard)
    manifest = _read_json(state_dir / "manifest.json") or {"parts": []}
    for part in manifest["parts"]:
        with contextlib.suppress(FileNotFoundError):  # a finished run's parts, merged meanwhile
            table = pq.read_table(state_dir / part["file"],
                                  columns=["prompt_id", "sample_idx", "error_kind"])
            yield zip(*(table[c].to_pylist() for c in table.column_names), strict=True)


def _shard_keys(shard: Path) -> Any:
    try:
        lines = shard.read_bytes().splitlines()
    except FileNotFoundError:  # compacted meanwhile
        return
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written right now
        yield row["prompt_id"], row["sample_idx"], row.get("error_kind")


def _writer(progress: dict[str, Any], lock: Path) -> tuple[bool, str]:
    """Whether the process that holds the output's lock still runs, and a line saying so."""
    pid = progress.get("pid")
    if pid is None:
        try:
            text = lock.read_text(encoding="utf-8").split()
            pid = int(text[1]) if len(text) == 2 and text[0] == "pid" else None
        except (OSError, ValueError):
            pid = None
    if pid is None:
        return False, "no writer recorded"
    host = progress.get("host") or socket.gethostname()
    if host != socket.gethostname():
        return True, f"pid {pid} on {host} (another host: judge by the last write)"
    if psutil.pid_exists(int(pid)):
        return True, f"pid {pid} alive"
    return False, f"pid {pid} is gone: rerun the same command to resume"


def _rate(history: list[list[float]], now: float) -> float | None:
    """Samples per second between the newest count and the one nearest a minute before it."""
    if len(history) < 2:
        return None
    newest_t, newest_n = history[-1]
    older = [h for h in history[:-1] if h[0] >= newest_t - RATE_WINDOW_S] or history[-2:-1]
    first_t, first_n = older[0]
    return (newest_n - first_n) / (newest_t - first_t) if newest_t > first_t else None


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def format_status(status: RunStatus, *, now: float | None = None) -> str:
    """A few lines for a person."""
    now = time.time() if now is None else now
    total = f" / {status.expected}" if status.expected is not None else " (total not known yet)"
    share = f" ({100 * status.done / status.expected:.1f}%)" if status.expected else ""
    lines = [f"{status.output}: {status.state}", f"  samples   {status.done}{total}{share}"]
    if status.rate_per_s is not None:
        eta = status.eta_s
        eta_text = f", ETA {eta:.0f}s" if eta is not None else ""
        lines.append(f"  rate      {status.rate_per_s:.2f} samples/s over the last minute{eta_text}")
    errors = ", ".join(f"{k}={v}" for k, v in sorted(status.errors_by_kind.items())) or "none"
    lines.append(f"  errors    {errors}")
    if status.last_write is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(status.last_write))
        lines.append(f"  last write {stamp} ({_ago(now - status.last_write)})")
    lines.append(f"  writer    {status.writer}")
    return "\n".join(lines)


def status_dict(status: RunStatus) -> dict[str, Any]:
    return {
        "output": str(status.output), "state": status.state, "done": status.done,
        "expected": status.expected, "errors_by_kind": status.errors_by_kind,
        "rate_per_s": status.rate_per_s, "eta_s": status.eta_s, "last_write": status.last_write,
        "writer": status.writer,
    }
