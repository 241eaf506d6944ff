"""Reading a raw dataset: local files (parquet, jsonl, json, csv), a `datasets` save_to_disk folder,
or a hub id through the `datasets` library (machines with internet only)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from rollouts.errors import UserInputError
from rollouts.io import iter_records, to_python, utf8_error_of_text_file

FILE_SUFFIXES = (".parquet", ".pq", ".jsonl", ".ndjson", ".json", ".csv")


def load_rows(source: str, split: str | None) -> list[dict[str, Any]]:
    """Every row of the source as plain Python dicts (lists, dicts, str, numbers, None)."""
    path = Path(source)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            import pandas as pd

            try:
                frame = pd.read_csv(path, keep_default_na=False)
            except UnicodeDecodeError as exc:
                raise utf8_error_of_text_file(path) from exc
            return [to_python(row) for row in frame.to_dict(orient="records")]
        return list(iter_records(path))
    if path.is_dir():
        return _from_saved_dataset(path, split).to_list()
    if source.lower().endswith(FILE_SUFFIXES):
        raise UserInputError(f"{source}: no such file; check the path")
    return _from_hub(source, split).to_list()


def source_name(source: str) -> str:
    """A short lower-case name for data_source: the file stem or the hub id's last part."""
    path = Path(source.rstrip("/"))
    name = path.stem if path.suffix.lower() in FILE_SUFFIXES else path.name
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.lower()) or "data"


def _datasets() -> Any:
    try:
        return importlib.import_module("datasets")
    except ImportError as exc:
        raise UserInputError(
            "reading dataset folders and hub ids needs the `datasets` library: "
            "pip install 'rollouts[prepare]'"
        ) from exc


def _from_saved_dataset(path: Path, split: str | None) -> Any:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    if not (path / "dataset_info.json").exists() and not (path / "dataset_dict.json").exists():
        raise UserInputError(
            f"{path}: not a `datasets` save_to_disk folder (no dataset_info.json or "
            "dataset_dict.json); pass a parquet, jsonl, json or csv file"
        )
    loaded = _datasets().load_from_disk(str(path))
    return _pick_split(loaded, split, str(path))


def _from_hub(hub_id: str, split: str | None) -> Any:
    datasets = _datasets()
    try:
        loaded = datasets.load_dataset(hub_id)
    except Exception as exc:  # the library raises many kinds; all mean "cannot load this id"
        raise UserInputError(
            f"{hub_id}: not a local file or folder, and the hub could not load it "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "check the id or pass a local file"
        ) from exc
    return _pick_split(loaded, split, hub_id)


def _pick_split(loaded: Any, split: str | None, where: str) -> Any:
    """A DatasetDict needs a split (the only one is taken when there is one); a Dataset is itself."""
    if not hasattr(loaded, "keys"):
        return loaded
    names = list(loaded.keys())
    if split is None and len(names) == 1:
        return loaded[names[0]]
    if split is None or split not in names:
        asked = f"split {split!r} is not in" if split else "several splits in"
        raise UserInputError(f"{where}: {asked} it ({', '.join(names)}); pass --split NAME")
    return loaded[split]
