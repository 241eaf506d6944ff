"""Swapping a running managed vLLM server onto another checkpoint's weights, and checking it took.

vLLM (0.24) started with VLLM_SERVER_DEV_MODE=1 serves development endpoints; a swap is

    POST /pause?mode=wait          finish the requests in flight, admit no new ones
    POST /collective_rpc           {"method": "reload_weights", "kwargs": {"weights_path": DIR}}
    POST /reset_prefix_cache       cached prefixes were computed with the old weights
    POST /resume

Those endpoints let whoever reaches the port call methods on the engine's workers, and vLLM's
`--api-key` guards only the /v1 routes, so rollouts turns dev mode on only for managed servers
that listen on a loopback address (`dev_mode_allowed`).

A swap is trusted only once the server's answers come from the new weights: a few greedy tokens of
fixed probe prompts are compared with a reference computed with transformers at conversion time
(`probe_reference`), on the tokens where the reference is decisive (its best token leads the
next by DECISIVE_MARGIN logits, so numeric noise cannot flip it). When no token is decisive (a
random-weight model), the answers must at least differ from those of the weights before the swap.
A swap that fails or does not pass falls back to a restart.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from rollouts.errors import RolloutsError

DEV_MODE_ENV = {"VLLM_SERVER_DEV_MODE": "1"}
PROBE_PROMPTS = ("The capital of France is", "def fibonacci(n):\n   ", "1, 2, 3, 4,")
PROBE_TOKENS = 8
DECISIVE_MARGIN = 0.5  # logits; bf16 kernels move a logit by far less on models we serve
SWAP_TIMEOUT_S = 600.0
REFERENCES_DIR = "probes"
# What may differ between two checkpoints one server can swap between (names, not shapes).
CONFIG_KEYS_IGNORED = {"_name_or_path", "name_or_path", "transformers_version"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                   "special_tokens_map.json", "chat_template.jinja")


class SwapFailed(RolloutsError):
    """A swap did not happen or its answers do not come from the new weights."""


def dev_mode_allowed(host: str) -> bool:
    """Dev endpoints only where nothing but this machine reaches them."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def swap_identity(model_dir: str | Path) -> str:
    """What two checkpoints must share to swap between them on one server: the config (every
    shape, the dtype) and the tokenizer. A hub id or a folder without config.json: its name."""
    folder = Path(model_dir)
    config_file = folder / "config.json"
    if not config_file.is_file():
        return f"name:{model_dir}"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    shared = {k: v for k, v in config.items() if k not in CONFIG_KEYS_IGNORED}
    digest = hashlib.sha256(json.dumps(shared, sort_keys=True).encode())
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            digest.update(name.encode() + (folder / name).read_bytes())
    return digest.hexdigest()[:16]


# -- the reference taken at conversion ----------------------------------------------------------


@dataclass(frozen=True)
class ProbeReference:
    """Greedy continuations of PROBE_PROMPTS by transformers, and how many leading tokens of
    each are decisive."""

    texts: tuple[str, ...]  # each decisive prefix, decoded
    decisive: tuple[int, ...]

    @property
    def checkable(self) -> bool:
        return any(self.decisive)

    def matches(self, answers: list[str]) -> bool:
        return all(answer.startswith(text) for text, answer in zip(self.texts, answers, strict=True))


def _reference_path(model_dir: Path) -> Path:
    from rollouts.checkpoint import cache_dir

    digest = hashlib.sha256(str(model_dir.resolve()).encode())
    for file in sorted(model_dir.iterdir()):
        if file.is_file():
            stat = file.stat()
            digest.update(f"\0{file.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return cache_dir() / REFERENCES_DIR / f"{digest.hexdigest()[:16]}.json"


def probe_reference(model_dir: str | Path) -> ProbeReference | None:
    """The reference for a HuggingFace folder (computed once, kept in the cache); None when the
    folder cannot be loaded by transformers (then only the changed-answers rule applies)."""
    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        return None
    path = _reference_path(folder)
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        return ProbeReference(tuple(data["texts"]), tuple(data["decisive"]))
    try:
        reference = _compute_reference(folder)
    except (OSError, ValueError, RuntimeError, KeyError):
        return None
    from rollouts.io import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"texts": list(reference.texts), "decisive": list(reference.decisive)}, path)
    return reference


def _compute_reference(folder: Path) -> ProbeReference:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    texts: list[str] = []
    decisive: list[int] = []
    with torch.no_grad():
        for prompt in PROBE_PROMPTS:
            inputs = tokenizer(prompt, return_tensors="pt")
            out = model.generate(**inputs, max_new_tokens=PROBE_TOKENS, do_sample=False,
                                 output_scores=True, return_dict_in_generate=True)
            tokens = out.sequences[0, inputs["input_ids"].shape[1]:]
            count = 0
            for score in out.scores:
                top = torch.topk(score[0].float(), 2).values
                if float(top[0] - top[1]) < DECISIVE_MARGIN:
                    break
                count += 1
            decisive.append(count)
            texts.append(str(tokenizer.decode(tokens[:count])) if count else "")
    return ProbeReference(tuple(texts), tuple(decisive))


# -- talking to the server ----------------------------------------------------------------------


async def probe_answers(
    session: aiohttp.ClientSession, root_url: str, served_name: str
) -> list[str]:
    """The server's greedy continuations of PROBE_PROMPTS."""
    answers = []
    for prompt in PROBE_PROMPTS:
        body = {"model": served_name, "prompt": prompt, "max_tokens": PROBE_TOKENS,
                "temperature": 0.0, "ignore_eos": True}
        async with session.post(f"{root_url}/v1/completions", json=body,
                                timeout=aiohttp.ClientTimeout(total=120)) as response:
            if response.status != 200:
                raise SwapFailed(f"probe answered {response.status}: {(await response.text())[:200]}")
            answers.append(str((await response.json())["choices"][0]["text"]))
    return answers


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any] | None = None) -> None:
    try:
        async with session.post(url, json=body,
                                timeout=aiohttp.ClientTimeout(total=SWAP_TIMEOUT_S)) as response:
            if response.status != 200:
                text = (await response.text())[:200].replace("\n", " ")
                raise SwapFailed(f"{url.rsplit('/', 1)[-1]} answered {response.status}: {text}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SwapFailed(f"{url}: {type(exc).__name__}: {exc}") from exc


async def swap_weights(session: aiohttp.ClientSession, root_url: str, weights: str | Path) -> float:
    """Pause, reload the weights from `weights` (a HuggingFace folder), reset the prefix cache,
    resume; the seconds it took. The server is resumed even when the reload fails."""
    started = time.monotonic()
    await _post(session, f"{root_url}/pause?mode=wait")
    try:
        await _post(session, f"{root_url}/collective_rpc",
                    {"method": "reload_weights", "kwargs": {"weights_path": str(weights)}})
        await _post(session, f"{root_url}/reset_prefix_cache")
    finally:
        await _post(session, f"{root_url}/resume")
    return time.monotonic() - started


def verify_answers(
    answers: list[str], reference: ProbeReference | None, before: list[str] | None
) -> str | None:
    """None when the answers come from the new weights, else why not."""
    if reference is not None and reference.checkable:
        if reference.matches(answers):
            return None
        return "its greedy answers differ from the reference taken at conversion"
    if before is not None and answers == before:
        return "its greedy answers did not change (the old weights still answer)"
    return None
