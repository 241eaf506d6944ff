"""Verdicts kept as they are made, so that an interrupted `score` resumes instead of restarting.

Beside each output OUT lives `OUT.scoring/` while OUT is being made:

    lock            flock'ed by the one `score` writing OUT; a second one is refused
    verdicts.jsonl  one line per verdict (item key + verdict), appended and flushed as each batch
                    comes back from the workers, so a kill -9 loses only the batches in flight

Keys are content hashes of (reward fn, version, answer, ground truth, ...), so a rerun after a change
of reward code finds none of the old keys and judges again. Only results are kept (statuses `ok`
and `no_answer`, as in the verdict cache): errors, timeouts and sandbox failures are judged again
by every rerun (a missing package installed since, a busy machine), and `--overwrite` discards
the journal of an earlier run altogether. Answer extraction is cheap and deterministic, so the rerun rebuilds
every row from these verdicts and judges only the items that have none. The folder is removed once
OUT and its results JSON are written.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from rollouts.errors import OutputConflictError, StorageError, UserInputError
from rollouts.io import json_line
from scoring.cache import CACHEABLE_STATUSES, from_record, to_record
from scoring.types import RewardResult

STATE_SUFFIX = ".scoring"
JOURNAL_FILE = "verdicts.jsonl"
KEPT_STATUSES = CACHEABLE_STATUSES


def state_dir_for(output: Path) -> Path:
    return output.with_name(output.name + STATE_SUFFIX)


class VerdictJournal:
    """The write-ahead verdicts of one output; opening it checks the output's folder is writable."""

    def __init__(
        self, output: Path, *, fresh: bool = False, kept: frozenset[str] = KEPT_STATUSES
    ) -> None:
        """fresh: start from nothing (`--overwrite`), dropping an earlier run's verdicts; kept:
        the statuses worth keeping (a reference check's timeout is one: its key holds the limit)."""
        self.kept = kept
        self.directory = state_dir_for(output)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock: IO[str] = open(self.directory / "lock", "w")  # noqa: SIM115 (held open)
        except OSError as exc:
            raise UserInputError(
                f"{self.directory}: cannot write beside the output ({exc.strerror}); "
                f"pass -o to a writable place"
            ) from exc
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock.close()
            raise OutputConflictError(
                f"{output}: another `score` is writing it (lock {self.directory / 'lock'})"
            ) from exc
        self.path = self.directory / JOURNAL_FILE
        self._handle: IO[bytes] | None = None
        if fresh:
            self.path.unlink(missing_ok=True)

    def load(self) -> dict[str, RewardResult]:
        """Verdicts of earlier runs; a line cut off by a kill is ignored."""
        found: dict[str, RewardResult] = {}
        if not self.path.exists():
            return found
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    verdict = from_record(record["verdict"])
                except (ValueError, KeyError, TypeError):
                    continue
                if verdict.status in self.kept:  # an older journal may hold errors
                    found[record["key"]] = verdict
        return found

    def append(self, verdicts: Mapping[str, RewardResult]) -> None:
        lines = b"".join(
            _line(key, result) for key, result in verdicts.items()
            if result.status in self.kept
        )
        if not lines:
            return
        try:
            if self._handle is None:
                self._handle = open(self.path, "ab")  # noqa: SIM115 (appended to all run long)
            self._handle.write(lines)
            self._handle.flush()
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot keep verdicts ({exc.strerror})") from exc

    def close(self) -> None:
        """Stop writing; a journal that kept nothing leaves no folder behind."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if not self._lock.closed:
            if not self.path.exists():
                shutil.rmtree(self.directory, ignore_errors=True)
            self._lock.close()

    def finish(self) -> None:
        """The output is written: the journal is no longer needed."""
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _line(key: str, result: RewardResult) -> bytes:
    record = {"key": key, "verdict": to_record(result)}
    try:
        return json_line(record)
    except TypeError:  # an extra that JSON cannot hold (a set, an object): kept as its text
        return (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()
