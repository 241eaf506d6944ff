"""A `--model` that names a local directory is checked before anything starts.

A model is a local directory or a hub id (`Qwen/Qwen2.5-7B-Instruct`, `gpt2`). A reference that can
only be a path (absolute, `./`, `~`, several `/`, or whose first part is a local directory, as in
the typo `demo-out/tiny-modle`) and names nothing fails at once with the path named, instead of
being tried on the hub (retries that take most of a minute offline). A hub id that is not in the
local Hugging Face cache, loaded in process, fails at once too when the hub cannot be reached (HF_HUB_OFFLINE, or no
answer from its name server within a few seconds). An in-process (hf) model directory must also
hold a `config.json`.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from rollouts.errors import UserInputError

HUB_HOST = "huggingface.co"
HUB_LOOKUP_TIMEOUT_S = 3.0


def looks_local(model: str) -> bool:
    """Whether `model` can only mean a local path (a hub id is `name` or `org/name`)."""
    if model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1:
        return True
    first = model.split("/", 1)[0]
    return "/" in model and Path(first).expanduser().is_dir()


def check_model_reference(model: str, *, in_process: bool = False) -> None:
    """Raise a one-line UserInputError when `model` is a local path that cannot be a model; for an
    in-process (transformers) load, also a directory without config.json and a hub id that
    cannot be fetched (a vLLM server resolves hub ids its own way)."""
    needs_config = in_process
    if not model:
        return
    path = Path(model).expanduser()
    if path.exists():
        if needs_config and path.is_dir() and not (path / "config.json").is_file():
            raise UserInputError(
                f"--model {model}: the directory has no config.json, so it is not a transformers "
                "model; point --model at the model's own directory"
            )
        return
    if looks_local(model):
        parent = next((p for p in path.parents if p.is_dir()), None)
        hint = f" ({parent} exists)" if parent is not None and str(parent) != "." else ""
        raise UserInputError(
            f"--model {model}: no such directory{hint}; check the path "
            "(build the demo's model with `rollouts make-tiny-model DIR`)"
        )
    if in_process and not _in_hub_cache(model) and not _hub_reachable():
        raise UserInputError(
            f"--model {model}: not a local directory, not in the Hugging Face cache, and "
            f"{HUB_HOST} cannot be reached to download it; pass the model's local directory"
        )


def _in_hub_cache(model: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return True  # without huggingface_hub the loader reports for itself
    try:
        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except Exception:  # an id the hub library rejects: let the loader say why
        return True


def _hub_reachable() -> bool:
    """Whether the hub's name resolves (in a thread: a resolver may hang with no network)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    found: list[bool] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(HUB_HOST, 443)
            found.append(True)
        except OSError:
            found.append(False)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(HUB_LOOKUP_TIMEOUT_S)
    return bool(found and found[0])
