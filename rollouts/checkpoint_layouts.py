"""The checkpoint folders trainers write: which one a path is, whether it is finished, its tensors.

| kind        | what the path holds                                                               |
|-------------|-----------------------------------------------------------------------------------|
| huggingface | `config.json` and weights: served as is                                           |
| dcp         | torch.distributed.checkpoint: `.metadata` + shards, at the top or under `model/`  |
| verl-fsdp   | verl: `[actor/]model_world_size_W_rank_R.pt` (each rank's state dict of DTensors), |
|             | `huggingface/` (config, tokenizer), `fsdp_config.json`                            |
| nemo-rl     | NeMo-RL: `policy/weights/` (DCP), `config.yaml` naming `policy.model_name`,        |
|             | `policy/tokenizer/`                                                               |

A checkpoint still being written (or cut short) is `IncompleteCheckpoint`, found from the files
alone: a DCP folder without `.metadata` (DCP writes it last) or with a shard shorter than
`.metadata` says; a verl folder missing a rank's shard, or one its trainer has not yet marked done
(`latest_checkpointed_iteration.txt` in the folder above `global_step_N` names an earlier step);
NeMo-RL's `tmp_step_N` (renamed to `step_N` when finished).

verl shards are merged by their DTensor placements: along each mesh dimension, `Shard(d)` pieces
are concatenated on tensor dimension d (in mesh order) and `Replicate` keeps one copy, innermost
mesh dimension first, as DTensor lays them out.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rollouts.errors import UserInputError

METADATA_FILE = ".metadata"
VERL_SHARD = re.compile(r"^model_world_size_(\d+)_rank_(\d+)\.pt$")
VERL_TRACKER = "latest_checkpointed_iteration.txt"
VERL_FSDP_CONFIG = "fsdp_config.json"
NEMO_CONFIG = "config.yaml"
STEP_IN_NAME = re.compile(r"(\d+)$")

Kind = Literal["huggingface", "dcp", "verl-fsdp", "nemo-rl"]
Shapes = dict[str, tuple[int, ...]]


class IncompleteCheckpoint(UserInputError):
    """The checkpoint is still being written, or was cut short: nothing is converted from it."""


@dataclass(frozen=True)
class Layout:
    """One checkpoint: its kind, the folder holding its weights, and what it says about itself."""

    kind: Kind
    path: Path  # as the user named it
    weights: Path  # the DCP root, the verl folder with the rank shards, or the HF folder
    own_base: str | None = None  # the base model the checkpoint names (config or hub id)
    tokenizer: Path | None = None  # the checkpoint's own tokenizer folder

    @property
    def needs_conversion(self) -> bool:
        return self.kind != "huggingface"

    def weight_files(self) -> list[Path]:
        """The files a conversion reads: what its cache key is made of."""
        if self.kind == "verl-fsdp":
            return sorted(p for p in self.weights.iterdir() if VERL_SHARD.match(p.name))
        return sorted(p for p in self.weights.iterdir() if p.is_file())


# -- finding the layout -------------------------------------------------------------------------


def find_layout(path: str | Path) -> Layout | None:
    """The layout of `path` (a checkpoint folder as trainers name it), or None if it is none."""
    path = Path(path)
    if not path.is_dir():
        return None
    for finder in (_nemo_rl, _verl, _dcp, _huggingface):
        layout = finder(path)
        if layout is not None:
            return layout
    return None


def detect_layout(path: str | Path) -> Layout:
    """Like find_layout, but a one-line UserInputError naming the layouts looked for."""
    path = Path(path)
    if not path.is_dir():
        raise UserInputError(f"{path}: no such checkpoint directory")
    layout = find_layout(path)
    if layout is None:
        raise UserInputError(
            f"{path} is not a checkpoint rollouts reads: no config.json (HuggingFace), no "
            f"{METADATA_FILE} in it or in model/ (DCP), no model_world_size_W_rank_R.pt in it or "
            "in actor/ (verl), no policy/weights/ (NeMo-RL); pass the checkpoint folder"
        )
    return layout


def dcp_root(path: Path) -> Path | None:
    """The folder holding `.metadata`: `path` itself or its `model/` subfolder."""
    for candidate in (path, path / "model"):
        if (candidate / METADATA_FILE).is_file():
            return candidate
    return None


def _dcp_root_or_partial(path: Path) -> Path | None:
    """A DCP root, or a folder with DCP shards and no `.metadata` yet (being written)."""
    root = dcp_root(path)
    if root is not None:
        return root
    for candidate in (path, path / "model"):
        if candidate.is_dir() and any(candidate.glob("*.distcp")):
            return candidate
    return None


def _huggingface(path: Path) -> Layout | None:
    if (path / "config.json").is_file():
        return Layout("huggingface", path, path, own_base=str(path), tokenizer=path)
    return None


def _dcp(path: Path) -> Layout | None:
    root = _dcp_root_or_partial(path)
    if root is None:
        return None
    return Layout("dcp", path, root, tokenizer=_tokenizer_in(path, root))


def _verl(path: Path) -> Layout | None:
    for folder in (path, path / "actor"):
        if folder.is_dir() and any(VERL_SHARD.match(p.name) for p in folder.iterdir()):
            config = folder / "huggingface" / "config.json"
            own = str(folder / "huggingface") if config.is_file() else None
            return Layout("verl-fsdp", path, folder, own_base=own,
                          tokenizer=_tokenizer_in(folder / "huggingface"))
    return None


def _nemo_rl(path: Path) -> Layout | None:
    weights = path / "policy" / "weights"
    root = _dcp_root_or_partial(weights) if weights.is_dir() else None
    if root is None:
        return None
    return Layout("nemo-rl", path, root, own_base=_nemo_model_name(path / NEMO_CONFIG),
                  tokenizer=_tokenizer_in(path / "policy" / "tokenizer"))


def _nemo_model_name(config: Path) -> str | None:
    import yaml

    if not config.is_file():
        return None
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    policy = data.get("policy") if isinstance(data, dict) else None
    name = policy.get("model_name") if isinstance(policy, dict) else None
    return str(name) if name else None


TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model")


def _tokenizer_in(*folders: Path) -> Path | None:
    """The first of `folders` (or its tokenizer/ or huggingface/ subfolder) holding a tokenizer."""
    for folder in folders:
        for candidate in (folder, folder / "tokenizer", folder / "huggingface"):
            if any((candidate / name).is_file() for name in TOKENIZER_FILES):
                return candidate.resolve()
    return None


# -- is it finished? ----------------------------------------------------------------------------


def check_complete(layout: Layout) -> None:
    """Raise IncompleteCheckpoint (one line) when the trainer has not finished writing it."""
    if layout.kind in ("dcp", "nemo-rl"):
        if layout.kind == "nemo-rl" and layout.path.name.startswith("tmp_"):
            raise IncompleteCheckpoint(
                f"{layout.path} is still being written (NeMo-RL renames tmp_step_N to step_N "
                "when it is finished)"
            )
        _check_dcp_complete(layout.path, layout.weights)
    elif layout.kind == "verl-fsdp":
        _check_verl_complete(layout)


def is_complete(layout: Layout) -> bool:
    try:
        check_complete(layout)
    except IncompleteCheckpoint:
        return False
    return True


def _check_dcp_complete(path: Path, root: Path) -> None:
    if not (root / METADATA_FILE).is_file():
        raise IncompleteCheckpoint(
            f"{path} is still being written or was cut short: shards but no {METADATA_FILE} in "
            f"{root} (torch.distributed.checkpoint writes it last)"
        )
    needed: dict[str, int] = {}
    for info in dcp_metadata(root).storage_data.values():
        end = int(info.offset) + int(info.length)
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), end)
    for name, end in sorted(needed.items()):
        shard = root / name
        if not shard.is_file():
            raise IncompleteCheckpoint(
                f"{path}: shard {name} named by {METADATA_FILE} is missing; the checkpoint is "
                "incomplete (copy it again, or point at another one)"
            )
        size = shard.stat().st_size
        if size < end:
            raise IncompleteCheckpoint(
                f"{path}: shard {name} is truncated ({size} bytes, {METADATA_FILE} expects at "
                f"least {end}); the checkpoint is incomplete (copy it again, or point at another "
                "one)"
            )


def dcp_metadata(root: Path) -> Any:
    from torch.distributed.checkpoint import FileSystemReader

    try:
        return FileSystemReader(str(root)).read_metadata()
    except Exception as exc:  # a cut .metadata fails inside pickle with many possible types
        raise IncompleteCheckpoint(
            f"{root / METADATA_FILE} cannot be read ({_first_line(exc)}); the checkpoint is "
            "damaged or still being written"
        ) from exc


def verl_ranks(folder: Path) -> tuple[int, set[int]]:
    """(world size, ranks whose model shard is present) of a verl actor folder."""
    sizes: set[int] = set()
    ranks: set[int] = set()
    for file in folder.iterdir():
        match = VERL_SHARD.match(file.name)
        if match:
            sizes.add(int(match.group(1)))
            ranks.add(int(match.group(2)))
    if len(sizes) != 1:
        raise IncompleteCheckpoint(
            f"{folder}: model shards of several world sizes {sorted(sizes)}; keep one save's files"
        )
    return sizes.pop(), ranks


def _check_verl_complete(layout: Layout) -> None:
    folder = layout.weights
    world_size, ranks = verl_ranks(folder)
    missing = sorted(set(range(world_size)) - ranks)
    if missing:
        raise IncompleteCheckpoint(
            f"{layout.path} is still being written or incomplete: model shards of rank(s) "
            f"{missing} of {world_size} are missing"
        )
    for rank in range(world_size):
        _check_zip_whole(_verl_file(layout, world_size, rank))
    step_folder = folder.parent if folder.name == "actor" else folder
    step = _step_of(step_folder.name)
    tracker = step_folder.parent / VERL_TRACKER
    if step is not None and tracker.is_file():
        text = tracker.read_text(encoding="utf-8", errors="replace").strip()
        if text.isdigit() and int(text) < step:
            raise IncompleteCheckpoint(
                f"{layout.path} is still being written: its trainer's {tracker.name} names step "
                f"{text}, not yet {step}"
            )
    elif not (folder / VERL_FSDP_CONFIG).is_file():
        raise IncompleteCheckpoint(
            f"{layout.path} is still being written or incomplete: no {VERL_FSDP_CONFIG} (verl "
            "writes it after every rank's shard)"
        )


def _check_zip_whole(file: Path) -> None:
    """torch.save writes a zip archive whose directory comes last: a cut file has none."""
    import zipfile

    try:
        with zipfile.ZipFile(file):
            pass
    except (zipfile.BadZipFile, OSError) as exc:
        raise IncompleteCheckpoint(
            f"{file} cannot be read ({_first_line(exc)}); the shard is truncated, damaged or "
            "still being written (copy it again, or point at another checkpoint)"
        ) from exc


def _step_of(name: str) -> int | None:
    match = STEP_IN_NAME.search(name)
    return int(match.group(1)) if match else None


# -- reading the tensors ------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_torch_distributed() -> Iterator[None]:
    """DCP and DeviceMesh warn that no process group exists: that is the point here."""
    logger = logging.getLogger("torch.distributed.device_mesh")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)


def _load_verl_shard(file: Path, *, mmap: bool) -> dict[str, Any]:
    """One rank's state dict: DTensors unpickled with weights_only (no code from the file runs)."""
    import torch
    import torch.distributed.tensor  # noqa: F401  registers DTensor for weights_only loading

    try:
        with quiet_torch_distributed():
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # a truncated zip or pickle fails in many ways
        raise IncompleteCheckpoint(
            f"{file} cannot be read ({_first_line(exc)}); the shard is truncated or damaged "
            "(copy it again, or point at another checkpoint)"
        ) from exc
    if not isinstance(state, dict):
        raise UserInputError(f"{file} holds a {type(state).__name__}, not a model state dict")
    return state


def verl_shapes(layout: Layout) -> Shapes:
    """Tensor names and full shapes, from rank 0's shard (memory-mapped, nothing copied)."""
    world_size, _ = verl_ranks(layout.weights)
    state = _load_verl_shard(_verl_file(layout, world_size, 0), mmap=True)
    return {name: tuple(int(s) for s in tensor.shape) for name, tensor in state.items()}


def _verl_file(layout: Layout, world_size: int, rank: int) -> Path:
    return layout.weights / f"model_world_size_{world_size}_rank_{rank}.pt"


def load_verl_state(layout: Layout) -> dict[str, Any]:
    """Every rank's shard, merged into full tensors by their DTensor placements."""
    world_size, _ = verl_ranks(layout.weights)
    shards = [_load_verl_shard(_verl_file(layout, world_size, r), mmap=True)
              for r in range(world_size)]
    return {name: merge_shards(name, [s[name] for s in shards]) for name in shards[0]}


def merge_shards(name: str, pieces: list[Any]) -> Any:
    """One tensor from every rank's piece (index = global rank)."""
    from torch.distributed.tensor import DTensor

    first = pieces[0]
    if not isinstance(first, DTensor):
        # A plain tensor in a sharded state dict is replicated (a buffer): every rank has it.
        return first.detach().clone()
    mesh = first.device_mesh.mesh
    local = {rank: piece.to_local() for rank, piece in enumerate(pieces)}
    merged = _merge_mesh(mesh, tuple(first.placements), local, name)
    if tuple(merged.shape) != tuple(first.shape):
        raise UserInputError(
            f"`{name}`: merging the rank shards gave shape {list(merged.shape)}, not the "
            f"{list(first.shape)} the shards declare; the checkpoint's shards do not belong together"
        )
    return merged.contiguous()


def _merge_mesh(mesh: Any, placements: tuple[Any, ...], local: dict[int, Any], name: str) -> Any:
    """Merge along the first mesh dimension the results of merging each of its sub-meshes."""
    import torch

    if mesh.dim() == 0:
        return local[int(mesh)]
    placement, rest = placements[0], placements[1:]
    parts = [_merge_mesh(mesh[i], rest, local, name) for i in range(mesh.shape[0])]
    if placement.is_shard():
        return torch.cat(parts, dim=placement.dim)
    if placement.is_replicate():
        return parts[0]
    raise UserInputError(f"`{name}` has placement {placement} (partial sums): not a saved weight")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def step_folder_name(path: Path) -> str:
    """The name that identifies a checkpoint: `global_step_50` for `.../global_step_50/actor`."""
    return path.parent.name if path.name == "actor" else path.name
