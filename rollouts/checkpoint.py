"""torch.distributed.checkpoint (DCP) directories → HuggingFace directories, through a safe cache.

A DCP checkpoint is the folder `torch.distributed.checkpoint.save` writes: a `.metadata` file plus
shards, at the top or under `model/`; its state dict is flat (`model.embed_tokens.weight`, ...) or
wrapped as `{"model": state_dict, ...}` (optimizer state beside it is ignored). The conversion writes
safetensors weights with the base model's config (its dtype kept: floating tensors are cast to it)
and tokenizer, or the checkpoint's own tokenizer folder when it has one.

Without an output directory the result goes to a cache ($ROLLOUTS_CACHE, else
~/.cache/rollouts/checkpoints) keyed by the checkpoint's content (the `.metadata` bytes and the
shards' names, sizes and mtimes), the base model and CONVERTER_VERSION, so a checkpoint overwritten
at the same path is converted again. Crash safety: the conversion is written into a temp directory,
a completion marker last, then renamed into place; an entry without its marker is never used. A
file lock (released by the kernel when its holder dies) makes concurrent jobs convert once.

    path = convert_checkpoint("ckpts/global_step_500", base_model="Qwen/Qwen2.5-7B-Instruct")
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollouts.errors import OutputConflictError, StorageError, UserInputError
from rollouts.io import fsync_dir, write_json_atomic

if TYPE_CHECKING:
    from rollouts.runconfig import RunPlan

CONVERTER_VERSION = "1"
CACHE_ENV = "ROLLOUTS_CACHE"
METADATA_FILE = ".metadata"
MARKER_FILE = ".rollouts-converted.json"
LOCK_TIMEOUT_S = 6 * 3600.0  # a large model converts in minutes; a lock held this long is stuck
MAX_SHARD_SIZE = "5GB"  # as transformers' save_pretrained
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model")
# Folders beside the weights where trainers put the tokenizer (verl: huggingface/).
TOKENIZER_FOLDERS = (".", "tokenizer", "huggingface")

Shapes = dict[str, tuple[int, ...]]


def echo(message: str) -> None:
    print(f"rollouts: {message}", file=sys.stderr, flush=True)


# -- finding and describing a DCP checkpoint ----------------------------------------------------


def dcp_root(path: str | Path) -> Path | None:
    """The folder holding `.metadata`: `path` itself or its `model/` subfolder; None if neither."""
    path = Path(path)
    for candidate in (path, path / "model"):
        if (candidate / METADATA_FILE).is_file():
            return candidate
    return None


def is_dcp_checkpoint(path: str | Path) -> bool:
    return dcp_root(path) is not None


def require_dcp_root(path: str | Path) -> Path:
    """Like dcp_root, but a one-line UserInputError when `path` is not a DCP checkpoint."""
    path = Path(path)
    if not path.is_dir():
        raise UserInputError(f"{path}: no such checkpoint directory")
    root = dcp_root(path)
    if root is None:
        raise UserInputError(
            f"{path}: no {METADATA_FILE} in it or in {path / 'model'}; pass the folder that "
            "torch.distributed.checkpoint.save wrote"
        )
    return root


def _metadata(root: Path) -> Any:
    from torch.distributed.checkpoint import FileSystemReader

    return FileSystemReader(str(root)).read_metadata()


@dataclass(frozen=True)
class ModelEntries:
    """Where a checkpoint keeps the model's tensors: their metadata by parameter name, and
    whether the state dict was saved as {"model": state_dict, ...} (nested) or flat."""

    tensors: dict[str, Any]  # name -> TensorStorageMetadata (size, dtype)
    nested: bool


def model_entries(root: Path) -> ModelEntries:
    """Read `.metadata` (no weights). A nested state dict is recognised by DCP's flattening map
    (planner_data); only the entries under "model" count then (optimizer state is left out)."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = _metadata(root)
    paths: dict[str, tuple[Any, ...]] = dict(metadata.planner_data or {})
    tensors = {
        key: meta for key, meta in metadata.state_dict_metadata.items()
        if isinstance(meta, TensorStorageMetadata)
    }
    nested = any(len(p) >= 2 and p[0] == "model" for p in paths.values())
    if not nested:
        return ModelEntries(tensors, nested=False)
    under_model = {
        ".".join(str(part) for part in paths[key][1:]): meta
        for key, meta in tensors.items()
        if key in paths and len(paths[key]) >= 2 and paths[key][0] == "model"
    }
    return ModelEntries(under_model, nested=True)


def checkpoint_shapes(root: Path) -> Shapes:
    """Model tensor names and shapes, from `.metadata` alone."""
    return {name: tuple(int(s) for s in meta.size)
            for name, meta in model_entries(root).tensors.items()}


def content_key(root: Path, base_model: str) -> str:
    """What a conversion depends on: checkpoint content, base model, converter version."""
    digest = hashlib.sha256()
    digest.update((root / METADATA_FILE).read_bytes())
    for shard in sorted(p for p in root.iterdir() if p.is_file() and p.name != METADATA_FILE):
        stat = shard.stat()
        digest.update(f"\0{shard.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    digest.update(f"\0base={_base_identity(base_model)}\0v={CONVERTER_VERSION}".encode())
    return digest.hexdigest()[:16]


def _base_identity(base_model: str) -> str:
    local = Path(base_model).expanduser()
    return str(local.resolve()) if local.is_dir() else base_model


# -- the base model -----------------------------------------------------------------------------


def _base_config(base_model: str) -> Any:
    try:
        from transformers import AutoConfig
    except ImportError as exc:
        raise UserInputError(
            "checkpoint conversion needs the [hf] extra: pip install 'rollouts[hf]'"
        ) from exc
    try:
        return AutoConfig.from_pretrained(base_model)
    except (OSError, ValueError) as exc:
        raise UserInputError(
            f"--base-model {base_model}: cannot read its config ({str(exc).splitlines()[0]}); "
            "pass a HuggingFace model directory or hub id"
        ) from exc


@dataclass(frozen=True)
class BaseShapes:
    """The base model's tensors: those a checkpoint must hold, and tied copies it may hold."""

    required: Shapes
    tied: Shapes


def base_model_shapes(config: Any) -> BaseShapes:
    """Build the architecture on the meta device (no memory, no weights) and list its tensors."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    everything = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    unique = {name for name, _ in model.named_parameters()}
    unique |= {name for name, _ in model.named_buffers() if name in everything}
    return BaseShapes(
        required={k: v for k, v in everything.items() if k in unique},
        tied={k: v for k, v in everything.items() if k not in unique},
    )


def first_mismatch(checkpoint: Shapes, base: BaseShapes) -> str | None:
    """A sentence naming the first tensor (in name order) that differs, or None."""
    allowed = {**base.required, **base.tied}
    for name in sorted(set(checkpoint) | set(base.required)):
        if name not in allowed:
            return f"`{name}` is in the checkpoint but not in the base model"
        if name not in checkpoint:
            return f"`{name}` of the base model is missing from the checkpoint"
        if checkpoint[name] != allowed[name]:
            return (f"`{name}` has shape {list(checkpoint[name])} in the checkpoint but "
                    f"{list(allowed[name])} in the base model")
    return None


def check_against_base(path: str | Path, base_model: str) -> None:
    """Refuse (one line, naming the first mismatch) a base model that does not fit the checkpoint."""
    root = require_dcp_root(path)
    base = base_model_shapes(_base_config(base_model))
    _refuse_mismatch(path, base_model, checkpoint_shapes(root), base)


def _refuse_mismatch(path: str | Path, base_model: str, shapes: Shapes, base: BaseShapes) -> None:
    mismatch = first_mismatch(shapes, base)
    if mismatch:
        raise UserInputError(
            f"{path} does not match base model {base_model}: {mismatch}; pass the --base-model "
            "the checkpoint was trained from"
        )


# -- conversion ---------------------------------------------------------------------------------


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "rollouts" / "checkpoints"


def is_converted(entry: Path, key: str | None = None) -> bool:
    """A finished conversion: its marker is there (and names `key` when given)."""
    marker = entry / MARKER_FILE
    if not marker.is_file():
        return False
    return key is None or json.loads(marker.read_text(encoding="utf-8")).get("key") == key


def convert_checkpoint(
    path: str | Path,
    base_model: str,
    *,
    output: str | Path | None = None,
    force: bool = False,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> Path:
    """Convert the DCP checkpoint at `path` (once) and return the HuggingFace directory.

    Into `output` when given (an existing different conversion there needs force=True), else into
    the cache. Concurrent calls for the same checkpoint convert once; the others wait and reuse."""
    root = require_dcp_root(path)
    key = content_key(root, base_model)
    if output is None:
        entry = cache_dir() / f"{Path(path).resolve().name}-{key}"
    else:
        entry = Path(output).expanduser().resolve()
    if not force and is_converted(entry, key):
        return entry
    config = _base_config(base_model)
    base = base_model_shapes(config)
    _refuse_mismatch(path, base_model, checkpoint_shapes(root), base)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with _entry_lock(entry, path, lock_timeout_s):
        if is_converted(entry, key) and not force:
            return entry  # another job finished it while this one waited
        if entry.exists() and any(entry.iterdir()) and not force and output is not None:
            raise OutputConflictError(
                f"{entry} already exists and is not this checkpoint's conversion; pass --force to "
                "replace it or choose another -o"
            )
        _remove_stale_temps(entry)
        echo(f"converting {path} (base model {base_model}) -> {entry}")
        temp = entry.with_name(f".{entry.name}.tmp-{os.getpid()}")
        temp.mkdir()
        try:
            _write_conversion(root, Path(path), base_model, config, base, temp)
            write_json_atomic(
                {"key": key, "source": str(Path(path).resolve()), "base_model": base_model,
                 "converter_version": CONVERTER_VERSION},
                temp / MARKER_FILE,
            )
            _replace(entry, temp)
        except OSError as exc:
            raise StorageError(
                f"converting {path} into {entry.parent} failed ({exc}); free space there or "
                f"point ${CACHE_ENV} (or -o) elsewhere, then rerun"
            ) from exc
        finally:
            shutil.rmtree(temp, ignore_errors=True)  # gone already after a successful rename
    return entry


@contextlib.contextmanager
def _entry_lock(entry: Path, source: str | Path, timeout_s: float) -> Iterator[None]:
    """An exclusive lock on one entry's conversion; says so while it waits for another holder."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(entry.with_name(f".{entry.name}.lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        echo(f"waiting for another process converting {source} "
             f"(lock {lock.lock_file}, up to {timeout_s:g}s)")
        try:
            lock.acquire(timeout=timeout_s)
        except Timeout as exc:
            raise OutputConflictError(
                f"gave up after {timeout_s:g}s waiting for the conversion of {source} by another "
                f"process (lock {lock.lock_file}); rerun once it has finished"
            ) from exc
    try:
        yield
    finally:
        lock.release()


def _remove_stale_temps(entry: Path) -> None:
    """Temp dirs of conversions that were killed (their lock is gone, so nobody writes them)."""
    for stale in entry.parent.glob(f".{entry.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _replace(entry: Path, temp: Path) -> None:
    """Rename the finished temp dir into place; an old entry is moved aside first, then removed."""
    old = entry.with_name(f".{entry.name}.old-{os.getpid()}")
    if entry.exists():
        os.replace(entry, old)
    os.replace(temp, entry)
    fsync_dir(entry.parent)
    shutil.rmtree(old, ignore_errors=True)


def _write_conversion(
    root: Path, source: Path, base_model: str, config: Any, base: BaseShapes, out: Path
) -> None:
    """Config and tokenizer first, then the weights (the long part); the caller adds the marker."""
    config.save_pretrained(out)
    _save_generation_config(base_model, out)
    _save_tokenizer(_tokenizer_source(source, root) or base_model, out)
    state = _load_model_state(root)
    for tied in base.tied:
        state.pop(tied, None)  # as save_pretrained: one copy of tied weights
    write_safetensors(_cast_to(state, _config_dtype(config)), out)


def _save_generation_config(base_model: str, out: Path) -> None:
    from transformers import GenerationConfig

    # A base model without generation_config.json gives a conversion without one.
    with contextlib.suppress(OSError):
        GenerationConfig.from_pretrained(base_model).save_pretrained(out)


def _tokenizer_source(source: Path, root: Path) -> Path | None:
    """The checkpoint's own tokenizer folder, when it ships one."""
    for base in (source, root):
        for folder in TOKENIZER_FOLDERS:
            candidate = (base / folder).resolve()
            if any((candidate / name).is_file() for name in TOKENIZER_FILES):
                return candidate
    return None


def _save_tokenizer(source: str | Path, out: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(source)).save_pretrained(out)


def _load_model_state(root: Path) -> dict[str, Any]:
    """The model's tensors only, read by DCP itself without a process group. Unlike
    format_utils.dcp_to_torch_save, this leaves optimizer state unread (for Adam, twice the
    model's size in memory) and writes no intermediate torch.save file."""
    import torch
    import torch.distributed.checkpoint as dcp

    entries = model_entries(root)
    state = {
        name: torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
        for name, meta in entries.tensors.items()
    }
    with warnings.catch_warnings():
        # DCP warns that it runs without a process group: that is the point here.
        warnings.simplefilter("ignore", UserWarning)
        dcp.load({"model": state} if entries.nested else state, checkpoint_id=str(root))
    return state


def _config_dtype(config: Any) -> Any:
    import torch

    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def _cast_to(state: dict[str, Any], dtype: Any) -> dict[str, Any]:
    if dtype is None:
        return state
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def write_safetensors(state: dict[str, Any], out: Path) -> None:
    """Weights as transformers writes them: one file, or shards plus an index."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    split = split_torch_state_dict_into_shards(state, max_shard_size=MAX_SHARD_SIZE)
    for filename, names in split.filename_to_tensors.items():
        shard = {name: state[name].contiguous() for name in names}
        save_file(shard, str(out / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


# -- models given to runs -----------------------------------------------------------------------


def resolve_model(model: str, base_model: str | None) -> str:
    """The path to serve for `model`: a DCP checkpoint is converted (through the cache) first."""
    if not model or not is_dcp_checkpoint(model):
        return model
    if not base_model:
        raise UserInputError(
            f"{model} is a DCP checkpoint; set `base_model` (the HuggingFace model it was "
            "trained from) so it can be converted"
        )
    return str(convert_checkpoint(model, base_model))



def resolve_plan_model(plan: RunPlan) -> RunPlan:
    """A run plan whose `model` is a DCP checkpoint, made servable: the model becomes the
    converted directory, served under the checkpoint's own name so rows and resume keys keep it."""
    served = resolve_model(plan.model, plan.base_model)
    if served == plan.model:
        return plan
    server = {"served_model_name": plan.model, **plan.server}
    return dataclasses.replace(plan, model=served, server=server)
