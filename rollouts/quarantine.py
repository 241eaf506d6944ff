"""Poison prompts: a prompt that brings a managed server down every time it is sent.

Without this, such a prompt is retried after every restart, kills the server again, and the run
gives up with everything else unfinished. `PromptGuard` sits in front of one managed server:

1. It knows which prompts are in flight, and which failed without an answer in the last few
   seconds (a dying server fails its requests before its process is seen gone).
2. At each incident (the server died, or hung and was restarted) the supervisor calls
   `record_incident`. A prompt present at this incident and the one before becomes a suspect.
3. A suspect is re-run alone: it waits until nothing else is in flight, and nothing else starts
   while it runs. If it answers, it is cleared. If the server goes down while it runs alone, it is
   confirmed: quarantined (`record_incident` returns it, and such a death costs no restart).
4. A quarantined prompt is never sent again: its requests fail at once with `error_kind`
   `poison` (not retryable), so they become error rows and everything else completes.

Prompts are keyed by content (`prompt_key`), so every sample request of a prompt is covered.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable

import orjson

from rollouts.client import RequestError
from rollouts.types import PromptInput

POISON_KIND = "poison"
# A request that failed this recently counts as in flight at an incident: the server's death is
# seen up to a poll later than its requests fail.
INCIDENT_WINDOW_S = 10.0
# After a suspect running alone fails, nothing is sent until the supervisor has looked at the
# server (a death then is the suspect's), or this long has passed with the server running.
HOLD_AFTER_SOLO_FAILURE_S = 3.0


def prompt_key(prompt: PromptInput) -> str:
    return hashlib.sha256(orjson.dumps(prompt)).hexdigest()[:16]


def prompt_label(prompt: PromptInput, width: int = 80) -> str:
    """A short readable form of a prompt for warnings."""
    text = prompt if isinstance(prompt, str) else " | ".join(
        str(m.get("content", "")) for m in prompt
    )
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


class PromptGuard:
    """Tracks prompts sent to one managed server and keeps poison prompts away from it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._in_flight: Counter[str] = Counter()
        self._recent_failures: dict[str, float] = {}
        self._labels: dict[str, str] = {}
        self._last_incident: set[str] = set()
        self.suspects: set[str] = set()
        self.quarantined: dict[str, str] = {}  # key -> label
        self._solo: str | None = None  # a suspect running alone, or whose solo run just failed
        self._solo_running = False
        self._solo_failed_at: float | None = None
        self._waiting_suspects = 0
        self._changed = asyncio.Event()
        self._waiters = 0  # coroutines in _wait_until

    # -- the request side ---------------------------------------------------------------------

    async def admit(self, prompt: PromptInput) -> str:
        """Wait for this prompt's turn and count it in flight; returns its key for `finished`.
        Raises RequestError(kind=poison) for a quarantined prompt."""
        key = prompt_key(prompt)
        self._refuse_if_quarantined(key)
        if self.suspects or self._solo is not None:  # the common case skips all of this
            await self._wait_for_turn(key, prompt)
            self._refuse_if_quarantined(key)
        self._in_flight[key] += 1
        return key

    def finished(self, key: str, *, answered: bool, reached: bool) -> None:
        """The request ended: with an answer from the server, or failing after reaching it
        (`reached`; a refused connection never reached it and says nothing about the prompt)."""
        self._in_flight[key] -= 1
        if not self._in_flight[key]:
            del self._in_flight[key]
        if not answered and reached:
            self._recent_failures[key] = self._clock()
        if key == self._solo and self._solo_running:
            self._solo_running = False
            if answered:
                self.suspects.discard(key)
                self._solo = None
            else:
                self._solo_failed_at = self._clock()
        self._notify()

    # -- the supervisor side ------------------------------------------------------------------

    def record_incident(self) -> str | None:
        """The server died or hung. Returns the key of the prompt this confirms as poison (it was
        running alone), else None after noting the prompts involved; the new server starts clean."""
        confirmed = self._solo
        if confirmed is not None:
            self.quarantined[confirmed] = self._labels.get(confirmed, confirmed)
            self.suspects.discard(confirmed)
            self._last_incident = set()
        else:
            involved = self.involved()
            self.suspects |= involved & self._last_incident
            self._last_incident = involved
        self._solo, self._solo_running, self._solo_failed_at = None, False, None
        self._recent_failures.clear()
        self._notify()
        return confirmed

    def involved(self) -> set[str]:
        """Prompts in flight now or that failed within INCIDENT_WINDOW_S."""
        horizon = self._clock() - INCIDENT_WINDOW_S
        recent = {k for k, at in self._recent_failures.items() if at >= horizon}
        return set(self._in_flight) | recent

    def release_hold_if_stale(self) -> None:
        """The server still runs a while after a suspect's solo run failed: that failure was not
        a death, so let traffic go on (the suspect stays a suspect and runs alone again)."""
        failed_at = self._solo_failed_at
        if failed_at is not None and self._clock() - failed_at >= HOLD_AFTER_SOLO_FAILURE_S:
            self._solo, self._solo_failed_at = None, None
            self._notify()

    def label(self, key: str) -> str:
        return self._labels.get(key, key)

    # -- internals ----------------------------------------------------------------------------

    def _refuse_if_quarantined(self, key: str) -> None:
        if key in self.quarantined:
            raise RequestError(
                POISON_KIND,
                "quarantined: the managed server went down each time this prompt was in flight, "
                "also when it ran alone",
                retryable=False,
            )

    async def _wait_for_turn(self, key: str, prompt: PromptInput) -> None:
        if key not in self.suspects:
            await self._wait_until(lambda: not self._blocked_for_others())
            return
        self._labels.setdefault(key, prompt_label(prompt))
        self._waiting_suspects += 1
        try:
            await self._wait_until(lambda: self._may_run_alone(key))
        finally:
            self._waiting_suspects -= 1
        if key in self.suspects:
            self._solo, self._solo_running, self._solo_failed_at = key, True, None

    def _blocked_for_others(self) -> bool:
        return self._waiting_suspects > 0 or self._solo is not None

    def _may_run_alone(self, key: str) -> bool:
        if key not in self.suspects:  # cleared or quarantined meanwhile
            return True
        return not self._in_flight and self._solo is None

    async def _wait_until(self, condition: Callable[[], bool]) -> None:
        self._waiters += 1
        try:
            while True:
                changed = self._changed
                if condition():
                    return
                await changed.wait()
        finally:
            self._waiters -= 1

    def _notify(self) -> None:
        if self._waiters:  # the hot path (nobody waiting) allocates nothing
            self._changed.set()
            self._changed = asyncio.Event()
