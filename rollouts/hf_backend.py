"""Generation in this process with transformers: no server needed (`--backend hf`).

Slow next to vLLM, but it needs no GPU and no server, so it suits CPU machines, small models and
tests. It follows the Backend protocol like an HTTP endpoint: n samples per call, sample i drawn
with seed + i on its own (the same prompt and seed give the same text whatever n is), stop strings
cut the text and finish with "stop", EOS is "stop", reaching max_tokens is "length".

A generation runs in a worker thread, which asyncio cannot interrupt; a cancelled call (Ctrl-C, a
failed run) sets the call's stop event, which ends its generation at the next token, so the
process exits at once instead of finishing up to max_tokens for every queued request. The model
loads in a thread too (`load_hf_backend`), so Ctrl-C during a load is prompt as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollouts.errors import UserInputError
from rollouts.types import Completion, CompletionBatch, PromptInput, SamplingParams

INSTALL_HINT = (
    "the hf backend needs torch and transformers: "
    "pip install torch==2.13.0 && pip install 'rollouts[hf]'"
)
# Stop strings are looked for in the decoded tail of this many tokens beyond the longest stop
# string's length (a byte-level token can be part of a character).
STOP_WINDOW_SLACK = 8


def _import_hf() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise UserInputError(INSTALL_HINT) from exc
    return torch, transformers


def _is_local_path(model: str) -> bool:
    """A path when it exists or is written as one; hub ids look like `org/name` or `name`."""
    return (
        Path(model).expanduser().exists()
        or model.startswith(("/", ".", "~"))
        or model.count("/") > 1
    )


async def load_hf_backend(model: str, *, device: str | None = None) -> HFBackend:
    """Load a model without holding the event loop, so Ctrl-C during a long load is prompt.

    The load runs in a daemon thread of its own, not the loop's default executor, whose threads
    asyncio waits for at exit: a cancelled load is left to die with the process."""
    loop = asyncio.get_running_loop()
    loaded: asyncio.Future[HFBackend] = loop.create_future()

    def deliver(result: HFBackend | None, error: BaseException | None) -> None:
        if loaded.done():
            return  # cancelled meanwhile
        if error is not None:
            loaded.set_exception(error)
        else:
            loaded.set_result(result)  # type: ignore[arg-type]

    def load() -> None:
        try:
            backend, error = HFBackend(model, device=device), None
        except BaseException as exc:  # delivered to the awaiting coroutine
            backend, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            loop.call_soon_threadsafe(deliver, backend, error)

    threading.Thread(target=load, name="hf-model-load", daemon=True).start()
    return await loaded


class _Cancelled(Exception):
    """The call was cancelled while its generation ran (its result goes nowhere)."""


@dataclass(frozen=True)
class _Sample:
    token_ids: list[int]
    hit_eos: bool


SMALL_MODEL_PARAMETERS = 10_000_000  # below this, CPU generation runs on one thread


class HFBackend:
    """A transformers causal LM and its tokenizer, loaded once, generating in a worker thread.

    model: a local directory or a hub id (from_pretrained). device: "cpu" or "cuda"; default cuda
    when available. Calls run one at a time under a lock (the model is not thread-safe and one CPU
    generate already uses every core), off the event loop.
    """

    name = "hf"

    def __init__(self, model: str, *, device: str | None = None) -> None:
        torch, transformers = _import_hf()
        self._torch = torch
        self.model_name = model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        source = str(Path(model).expanduser()) if _is_local_path(model) else model
        if _is_local_path(model) and not Path(source).is_dir():
            raise UserInputError(f"{model}: no such model directory; give a local path or hub id")
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(source)
        except OSError as exc:
            raise UserInputError(f"{model}: cannot load the model ({exc})") from exc
        self.model.to(self.device)
        self.model.eval()
        if self.device == "cpu" and self.model.num_parameters() < SMALL_MODEL_PARAMETERS:
            # As in its training (rollouts.tiny_model): a second thread gains a tiny model nothing
            # and, on a busy machine, makes it many times slower.
            torch.set_num_threads(1)
        self.eos_ids = self._eos_token_ids()
        self.pad_id = self._pad_token_id()
        self._lock = threading.Lock()

    def _eos_token_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.model.generation_config, self.model.config, self.tokenizer):
            value = getattr(source, "eos_token_id", None)
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list):
                ids.update(v for v in value if isinstance(v, int))
        return ids

    def _pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if isinstance(pad, int):
            return pad
        return min(self.eos_ids) if self.eos_ids else 0

    # -- prompt -----------------------------------------------------------------------------

    def prompt_ids(self, prompt: PromptInput) -> list[int]:
        """Token ids of a plain prompt, or of chat messages through the chat template."""
        if isinstance(prompt, str):
            text = prompt
        else:
            if not getattr(self.tokenizer, "chat_template", None):
                raise UserInputError(
                    f"{self.model_name}: its tokenizer has no chat template; use text prompts"
                )
            text = self.tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, tokenize=False
            )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- generation -------------------------------------------------------------------------

    async def complete(
        self, prompt: PromptInput, *, n: int, params: SamplingParams, seed: int | None
    ) -> CompletionBatch:
        if n < 1:
            raise ValueError("n must be >= 1")
        base_seed = seed if seed is not None else secrets.randbits(31)
        stop = threading.Event()
        try:
            return await asyncio.to_thread(
                self._complete_locked, prompt, n, params, base_seed, stop
            )
        except asyncio.CancelledError:
            stop.set()
            raise

    def _complete_locked(
        self,
        prompt: PromptInput,
        n: int,
        params: SamplingParams,
        base_seed: int,
        stop: threading.Event,
    ) -> CompletionBatch:
        ids = self.prompt_ids(prompt)
        with self._lock, self._torch.inference_mode():
            if params.temperature == 0:
                # Greedy decoding is the same for every seed: compute it once.
                samples = [self._generate(ids, params, None, stop)] * n
            else:
                samples = [self._generate(ids, params, base_seed + i, stop) for i in range(n)]
        completions = [self._to_completion(s, params) for s in samples]
        return CompletionBatch(
            completions=completions,
            prompt_tokens=len(ids),
            completion_tokens_total=sum(c.completion_tokens or 0 for c in completions),
        )

    def _generate(
        self,
        ids: list[int],
        params: SamplingParams,
        seed: int | None,
        stop: threading.Event | None = None,
    ) -> _Sample:
        stop = stop or threading.Event()
        if stop.is_set():
            raise _Cancelled
        torch = self._torch
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "eos_token_id": sorted(self.eos_ids) or None,
            "pad_token_id": self.pad_id,
            "attention_mask": torch.ones_like(input_ids),
        }
        if params.temperature == 0:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            # top_k=0 turns off the model's default top-k, as vLLM's requests do.
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                          top_k=0)
            torch.manual_seed(seed)
        kwargs["stopping_criteria"] = self._stop_criteria(len(ids), params.stop, stop)
        output = self.model.generate(input_ids, **kwargs)
        if stop.is_set():
            raise _Cancelled  # cut short: the caller is gone, and a cut sample is no result
        new_ids = output[0, len(ids):].tolist()
        hit_eos = bool(new_ids) and new_ids[-1] in self.eos_ids
        return _Sample(token_ids=new_ids, hit_eos=hit_eos)

    def _stop_criteria(
        self, prompt_len: int, stops: tuple[str, ...], cancelled: threading.Event
    ) -> Any:
        from transformers import StoppingCriteria, StoppingCriteriaList

        tokenizer = self.tokenizer
        window = max((len(s) for s in stops), default=0) + STOP_WINDOW_SLACK
        torch = self._torch

        class StopOnStrings(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                tail = input_ids[0, prompt_len:][-window:].tolist()
                text = tokenizer.decode(tail, skip_special_tokens=True)
                done = any(s in text for s in stops)
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool)

        class StopOnCancel(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool)

        criteria = [StopOnCancel(), StopOnStrings()] if stops else [StopOnCancel()]
        return StoppingCriteriaList(criteria)

    def _to_completion(self, sample: _Sample, params: SamplingParams) -> Completion:
        # The EOS token ends the sample but is not part of its text (as in vLLM's output).
        ids = sample.token_ids[:-1] if sample.hit_eos else sample.token_ids
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in params.stop) if i >= 0), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        elif sample.hit_eos:
            finish = "stop"
        else:
            finish = "length"
        return Completion(
            text=text, finish_reason=finish, completion_tokens=len(sample.token_ids)
        )

    def __repr__(self) -> str:
        return f"HFBackend(model={self.model_name!r}, device={self.device!r})"
