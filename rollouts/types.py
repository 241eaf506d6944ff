"""Value objects shared by the generation engine and its backends (HTTP servers, in-process hf)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from rollouts.errors import UserInputError

# Tries per request to a server (rollouts.client's retry policy), here so that command-line
# options can show it without importing the HTTP client.
DEFAULT_MAX_ATTEMPTS = 6

AUTO: Literal["auto"] = "auto"
AutoOrCount = int | Literal["auto"]


def parse_auto_or_count(value: object, where: str) -> AutoOrCount:
    """'auto' or a whole number >= 1 (a count of requests, replicas...); a clear error otherwise."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        number = int(str(value))
    except ValueError:
        number = 0
    if number < 1 or isinstance(value, bool | float):
        raise UserInputError(f"{where} must be 'auto' or a whole number >= 1, not {value!r}")
    return number


Messages = list[dict[str, Any]]
PromptInput = str | Messages


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """What is sampled: part of the run's config hash, so a resume with other values is refused."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 1024
    stop: tuple[str, ...] = ()
    extra_body: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")


@dataclass(frozen=True)
class Completion:
    """One sampled response."""

    text: str
    finish_reason: str | None
    completion_tokens: int | None


@dataclass(frozen=True)
class CompletionBatch:
    """The responses of one request (n of them for n-per-request), with the prompt's token count."""

    completions: list[Completion]
    prompt_tokens: int | None
    # Generated tokens of all completions together (the server's usage), even when the split per
    # completion is unknown (OpenAI's API reports usage per request, not per choice).
    completion_tokens_total: int | None = None


class Backend(Protocol):
    """Anything that can sample completions for one prompt: an HTTP endpoint or an in-process model.

    `seed` is the seed of the first sample; a backend asked for n > 1 samples in one call derives
    the others itself (vLLM does when given one seed and n). Failures raise
    rollouts.client.RequestError (kind, message, retryable).
    """

    name: str

    async def complete(
        self, prompt: PromptInput, *, n: int, params: SamplingParams, seed: int | None
    ) -> CompletionBatch: ...
