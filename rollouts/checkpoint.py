"""Checkpoints as trainers write them → HuggingFace directories, through a safe cache.

The layouts (rollouts.checkpoint_layouts): torch.distributed.checkpoint (DCP) folders, verl FSDP
folders (rank shards of DTensors, merged by their placements), NeMo-RL `step_N/` folders (DCP
weights, the base model named in `config.yaml`), and HuggingFace folders (served as they are).
A DCP state dict is flat (`model.embed_tokens.weight`, ...) or wrapped as `{"model": state_dict,
...}` (optimizer state beside it is ignored). The conversion writes safetensors weights with the
base model's config (its dtype kept: floating tensors are cast to it) and the checkpoint's own
tokenizer when it has one, else the base model's. The base model is the one given, else the one
the checkpoint names (verl's `huggingface/`, NeMo-RL's `policy.model_name`).

Without an output directory the result goes to a cache ($ROLLOUTS_CACHE, else
~/.cache/rollouts/checkpoints) keyed by the checkpoint's content (DCP's `.metadata` bytes, the
weight files' names, sizes and mtimes), the base model and CONVERTER_VERSION, so a checkpoint
overwritten at the same path is converted again. Crash safety: the conversion is written into a
temp directory, a completion marker last, then renamed into place; an entry without its marker is
never used. A file lock (released by the kernel when its holder dies) makes concurrent jobs convert
once. A checkpoint its trainer is still writing, or one cut short, is refused in one line
(IncompleteCheckpoint), as is a disk that fills up (StorageError).

    path = convert_checkpoint("ckpts/global_step_500", base_model="Qwen/Qwen2.5-7B-Instruct")
    path = convert_checkpoint("verl_ckpts/global_step_500")  # base model from actor/huggingface/
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollouts.checkpoint_layouts import (
    METADATA_FILE,
    IncompleteCheckpoint,
    Layout,
    Shapes,
    check_complete,
    dcp_metadata,
    dcp_root,
    detect_layout,
    find_layout,
    load_verl_state,
    quiet_torch_distributed,
    step_folder_name,
    verl_shapes,
)
from rollouts.errors import OutputConflictError, RolloutsError, StorageError, UserInputError
from rollouts.io import fsync_dir, write_json_atomic

if TYPE_CHECKING:
    from rollouts.runconfig import RunPlan

__all__ = [
    "CACHE_ENV", "MARKER_FILE", "IncompleteCheckpoint", "check_against_base", "convert_checkpoint",
    "dcp_root", "is_converted", "is_dcp_checkpoint", "needs_conversion", "resolve_plan_model",
]

CONVERTER_VERSION = "2"
CACHE_ENV = "ROLLOUTS_CACHE"
MARKER_FILE = ".rollouts-converted.json"
LOCK_TIMEOUT_S = 6 * 3600.0  # a large model converts in minutes; a lock held this long is stuck
MAX_SHARD_SIZE = "5GB"  # as transformers' save_pretrained


def echo(message: str) -> None:
    print(f"rollouts: {message}", file=sys.stderr, flush=True)


# -- finding and describing a checkpoint --------------------------------------------------------


def is_dcp_checkpoint(path: str | Path) -> bool:
    return Path(path).is_dir() and dcp_root(Path(path)) is not None


def needs_conversion(path: str | Path) -> bool:
    """A local checkpoint folder in a layout that must be converted before vLLM can load it."""
    layout = find_layout(path) if path else None
    return layout is not None and layout.needs_conversion


def convertible_layout(path: str | Path) -> Layout:
    """The layout of a checkpoint to convert; one line when it is none, or a HuggingFace folder."""
    layout = detect_layout(path)
    if not layout.needs_conversion:
        raise UserInputError(
            f"{path} is already a HuggingFace model directory (config.json): serve it as it is"
        )
    return layout


@dataclass(frozen=True)
class ModelEntries:
    """Where a DCP checkpoint keeps the model's tensors: their metadata by parameter name, and
    whether the state dict was saved as {"model": state_dict, ...} (nested) or flat."""

    tensors: dict[str, Any]  # name -> TensorStorageMetadata (size, dtype)
    nested: bool


def model_entries(root: Path) -> ModelEntries:
    """Read `.metadata` (no weights). A nested state dict is recognised by DCP's flattening map
    (planner_data); only the entries under "model" count then (optimizer state is left out)."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = dcp_metadata(root)
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


def checkpoint_shapes(layout: Layout) -> Shapes:
    """Model tensor names and shapes, without reading the weights."""
    if layout.kind == "verl-fsdp":
        return verl_shapes(layout)
    return {name: tuple(int(s) for s in meta.size)
            for name, meta in model_entries(layout.weights).tensors.items()}


def content_key(layout: Layout, base_model: str) -> str:
    """What a conversion depends on: checkpoint content, base model, converter version."""
    digest = hashlib.sha256()
    metadata = layout.weights / METADATA_FILE
    if metadata.is_file():
        digest.update(metadata.read_bytes())
    for shard in layout.weight_files():
        if shard.name == METADATA_FILE:
            continue
        stat = shard.stat()
        digest.update(f"\0{shard.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    digest.update(f"\0base={_base_identity(base_model)}\0v={CONVERTER_VERSION}".encode())
    return digest.hexdigest()[:16]


def _base_identity(base_model: str) -> str:
    local = Path(base_model).expanduser()
    if local.is_dir():
        config = local / "config.json"
        extra = hashlib.sha256(config.read_bytes()).hexdigest()[:12] if config.is_file() else ""
        return f"{local.resolve()}:{extra}"
    return base_model


def base_model_for(layout: Layout, base_model: str | None) -> str:
    """The base model given, else the one the checkpoint names; one line when there is none."""
    if base_model:
        return base_model
    if layout.own_base:
        return layout.own_base
    where = {"verl-fsdp": f"no {layout.weights / 'huggingface' / 'config.json'}",
             "nemo-rl": f"no policy.model_name in {layout.path / 'config.yaml'}"}
    found = where.get(layout.kind, "a DCP checkpoint names none")
    raise UserInputError(
        f"{layout.path}: no base model ({found}); set `base_model` / --base-model to the "
        "HuggingFace model it was trained from"
    )


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


def check_against_base(path: str | Path, base_model: str | None = None) -> None:
    """Refuse (one line) a checkpoint still being written, or a base model that does not fit it
    (the first mismatching tensor named). Reads no weights."""
    layout = convertible_layout(path)
    check_complete(layout)
    base_model = base_model_for(layout, base_model)
    base = base_model_shapes(_base_config(base_model))
    _refuse_mismatch(path, base_model, checkpoint_shapes(layout), base)


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


def cache_entry(path: str | Path, base_model: str | None = None) -> Path:
    """Where the cache keeps (or will keep) the conversion of `path`."""
    layout = convertible_layout(path)
    key = content_key(layout, base_model_for(layout, base_model))
    return cache_dir() / f"{step_folder_name(Path(path).resolve())}-{key}"


def convert_checkpoint(
    path: str | Path,
    base_model: str | None = None,
    *,
    output: str | Path | None = None,
    force: bool = False,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> Path:
    """Convert the checkpoint at `path` (once) and return the HuggingFace directory.

    Into `output` when given (an existing different conversion there needs force=True), else into
    the cache. Concurrent calls for the same checkpoint convert once; the others wait and reuse.
    The base model is `base_model`, else the one the checkpoint names."""
    layout = convertible_layout(path)
    check_complete(layout)
    base_model = base_model_for(layout, base_model)
    key = content_key(layout, base_model)
    if output is None:
        entry = cache_dir() / f"{step_folder_name(Path(path).resolve())}-{key}"
    else:
        entry = Path(output).expanduser().resolve()
    if not force and is_converted(entry, key):
        return entry
    config = _base_config(base_model)
    base = base_model_shapes(config)
    _refuse_mismatch(path, base_model, checkpoint_shapes(layout), base)
    with _storage_errors(path, entry):
        entry.parent.mkdir(parents=True, exist_ok=True)
        with _entry_lock(entry, path, lock_timeout_s):
            if is_converted(entry, key) and not force:
                return entry  # another job finished it while this one waited
            if entry.exists() and any(entry.iterdir()) and not force and output is not None:
                raise OutputConflictError(
                    f"{entry} already exists and is not this checkpoint's conversion; pass "
                    "--force to replace it or choose another -o"
                )
            _remove_stale_temps(entry)
            echo(f"converting {path} ({layout.kind}, base model {base_model}) -> {entry}")
            temp = entry.with_name(f".{entry.name}.tmp-{os.getpid()}")
            try:
                temp.mkdir()
                _write_conversion(layout, base_model, config, base, temp)
                write_json_atomic(
                    {"key": key, "source": str(Path(path).resolve()), "kind": layout.kind,
                     "base_model": base_model, "converter_version": CONVERTER_VERSION},
                    temp / MARKER_FILE,
                )
                _replace(entry, temp)
            finally:
                shutil.rmtree(temp, ignore_errors=True)  # gone already after a successful rename
    return entry


@contextlib.contextmanager
def _storage_errors(path: str | Path, entry: Path) -> Iterator[None]:
    """A write that fails (a full disk, no permission) becomes one line naming the fix."""
    try:
        yield
    except RolloutsError:
        raise
    except Exception as exc:
        if not _is_write_error(exc):
            raise
        raise StorageError(
            f"converting {path} into {entry.parent} failed ({_one_line(exc)}); free space there "
            f"or point ${CACHE_ENV} (or -o) elsewhere, then rerun"
        ) from exc


def _is_write_error(exc: BaseException) -> bool:
    """OSError, or safetensors' own error wrapping one (`I/O error: ... (os error 28)`)."""
    if isinstance(exc, OSError):
        return True
    text = str(exc)
    return type(exc).__name__ == "SafetensorError" and ("os error" in text or "IoError" in text)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


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
    layout: Layout, base_model: str, config: Any, base: BaseShapes, out: Path
) -> None:
    """Config and tokenizer first, then the weights (the long part); the caller adds the marker."""
    config.save_pretrained(out)
    _save_generation_config(base_model, out)
    _save_tokenizer(layout.tokenizer or base_model, out)
    state = load_model_state(layout)
    for tied in base.tied:
        state.pop(tied, None)  # as save_pretrained: one copy of tied weights
    write_safetensors(_cast_to(state, _config_dtype(config)), out)


def _save_generation_config(base_model: str, out: Path) -> None:
    from transformers import GenerationConfig

    # A base model without generation_config.json gives a conversion without one.
    with contextlib.suppress(OSError):
        GenerationConfig.from_pretrained(base_model).save_pretrained(out)


def _save_tokenizer(source: str | Path, out: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(source)).save_pretrained(out)


def load_model_state(layout: Layout) -> dict[str, Any]:
    """The model's full tensors, by parameter name, from any convertible layout."""
    if layout.kind == "verl-fsdp":
        return load_verl_state(layout)
    return _load_dcp_state(layout.weights)


def _load_dcp_state(root: Path) -> dict[str, Any]:
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
    try:
        with quiet_torch_distributed():
            dcp.load({"model": state} if entries.nested else state, checkpoint_id=str(root))
    except Exception as exc:  # DCP wraps a bad shard in a multi-page CheckpointException
        raise IncompleteCheckpoint(
            f"{root}: reading the shards failed ({_one_line(exc)}); the checkpoint is damaged "
            "(copy it again, or point at another one)"
        ) from exc
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
    """The path to serve for `model`: a checkpoint that needs it is converted (cached) first."""
    if not model or not needs_conversion(model):
        return model
    return str(convert_checkpoint(model, base_model))


def resolve_plan_model(plan: RunPlan) -> RunPlan:
    """A run plan whose `model` is a checkpoint to convert, made servable: the model becomes the
    converted directory, served under the checkpoint's own name so rows and resume keys keep it."""
    served = resolve_model(plan.model, plan.base_model)
    if served == plan.model:
        return plan
    server = {"served_model_name": plan.model, **plan.server}
    return dataclasses.replace(plan, model=served, server=server)
