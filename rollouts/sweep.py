"""`rollouts sweep SWEEP.yaml`: many `rollouts run`s over checkpoints and sampling settings.

A sweep file is a `rollouts run` config plus lists to sweep: under `grid:` (every combination) and
`zip:` (lists of one length, taken together), and a top-level `checkpoints:` (a list or a glob,
ordered by the step number in the names):

    checkpoints: ckpts/global_step_*          # one model load per checkpoint
    base_model: Qwen/Qwen2.5-1.5B-Instruct    # only for DCP checkpoints (converted in the job)
    output_dir: sweeps/math
    defaults: {n: 8, max_tokens: 2048}
    datasets: [{path: data/gsm8k.parquet}, {path: data/math500.parquet}]
    grid: {temperature: [0.6, 1.0]}

Expansion is pure: `expand_sweep` turns the file's data into `Combination`s, each a resolved
`rollouts run` config with its own directory `OUTPUT_DIR/<slug of varying values>-<hash>`, and
groups them by model and server settings (`Group`): a group is one `rollouts run` config, one
model load. Running writes each combination's config.yaml, runs the groups one after the other
(the engine resumes each output), and keeps `OUTPUT_DIR/sweep.parquet`: combination → parameters →
outputs → status. A combination whose outputs are all written is finished and skipped on a rerun.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import re
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rollouts.errors import UserInputError
from rollouts.runconfig import DEFAULT_OUTPUT, TOP_LEVEL_KEYS, read_yaml_mapping

SWEEP_ONLY_KEYS = {"grid", "zip", "checkpoints"}
DATASET_LEVEL = ("temperature", "top_p", "n", "max_tokens", "system_prompt")
SWEEPABLE = ("model", "checkpoints", "datasets", "seed", *DATASET_LEVEL)
# Short names in combination slugs: `t0.6-n8`.
SLUG_PREFIX = {"temperature": "t", "top_p": "p", "n": "n", "max_tokens": "mt", "seed": "s"}
STEP_PATTERN = re.compile(r"(?:global_step|step|checkpoint|epoch|iter)[_-]?(\d+)", re.IGNORECASE)
# Keys that change how a run goes, not what it produces: left out of the combination hash, so
# raising max_concurrent or turning on retry_errors resumes the same directories.
OPERATIONAL_KEYS = {
    "max_concurrent", "max_rps", "request_timeout", "max_attempts", "retry_errors", "server_wait",
    "summary", "api_key", "output_dir", "slurm",
}
OPERATIONAL_SERVER_KEYS = {"log_file", "ready_timeout", "port", "host", "max_restarts"}
MANIFEST = "sweep.parquet"
COMBINATION_CONFIG = "config.yaml"
GROUPS_DIR = "groups"
SLUG_MAX = 80
SLURM_FOLDERS = ("run_dir", "log_dir")  # per group: GROUP appended, so groups never share one
HASH_LEN = 6


@dataclass(frozen=True)
class Combination:
    """One point of the sweep: a complete `rollouts run` config writing into `directory`."""

    slug: str
    values: dict[str, Any]  # the swept values, by key (model and dataset shown by name)
    config: dict[str, Any]
    directory: Path
    config_hash: str
    group: str

    def outputs(self) -> list[Path]:
        return [Path(entry["output"]) for entry in self.config["datasets"]]


@dataclass(frozen=True)
class Group:
    """Combinations sharing model and server settings: one `rollouts run`, one model load."""

    name: str
    combinations: tuple[Combination, ...]

    def run_config(self, combinations: Iterable[Combination], root: Path) -> dict[str, Any]:
        """One `rollouts run` config holding the datasets of `combinations`."""
        chosen = list(combinations)
        config = {k: v for k, v in chosen[0].config.items() if k not in ("datasets", "summary")}
        config["datasets"] = [entry for c in chosen for entry in c.config["datasets"]]
        config["output_dir"] = str(root)
        config["summary"] = str(root / GROUPS_DIR / f"{self.name}.summary.json")
        return config


@dataclass(frozen=True)
class Sweep:
    root: Path
    varying: tuple[str, ...]
    combinations: tuple[Combination, ...]
    groups: tuple[Group, ...]
    slurm: dict[str, Any] | None
    base_model: str | None


# -- reading and expanding ----------------------------------------------------------------------


def load_sweep(path: Path, *, allow_no_checkpoints: bool = False) -> Sweep:
    """Read a sweep file and expand it; one-line UserInputError for anything wrong in it.
    With allow_no_checkpoints (--watch), a `checkpoints:` glob may match nothing yet."""
    data = read_yaml_mapping(path, "sweep")
    return expand_sweep(data, path.resolve().parent, where=str(path),
                        allow_no_checkpoints=allow_no_checkpoints)


def expand_sweep(
    data: dict[str, Any], base: Path, *, where: str = "sweep", allow_no_checkpoints: bool = False
) -> Sweep:
    """The combinations and groups of a sweep file's data (paths taken from `base`)."""
    _check_top_level(data, where)
    axes = sweep_axes(data, base, where, allow_no_checkpoints)
    template = _template(data, base, where)
    varying = tuple(key for keys, rows in axes for i, key in enumerate(keys)
                    if len({_canonical(row[i]) for row in rows}) > 1)
    root = Path(template["output_dir"])
    combinations = [
        resolve_combination(template, values, varying, root)
        for values in product(axes)
    ]
    _check_unique_dirs(combinations, where)
    return Sweep(
        root=root,
        varying=varying,
        combinations=tuple(combinations),
        groups=group_combinations(combinations),
        slurm=_slurm_section(data.get("slurm"), base),
        base_model=template.get("base_model"),
    )


def _slurm_section(section: Any, base: Path) -> dict[str, Any] | None:
    """The sweep's `slurm:` section with its folders made absolute: group configs live elsewhere."""
    if not isinstance(section, dict):
        return section
    slurm = dict(section)
    for key in SLURM_FOLDERS:
        value = slurm.get(key)
        if value and "{output_dir}" not in str(value):
            slurm[key] = str(_resolve(base, str(value)).resolve())
    return slurm


def _check_top_level(data: dict[str, Any], where: str) -> None:
    known = TOP_LEVEL_KEYS | SWEEP_ONLY_KEYS
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserInputError(f"{where}: unknown key(s) {unknown}; known keys: {', '.join(sorted(known))}")
    if "model" in data and "checkpoints" in data:
        raise UserInputError(f"{where}: set `model` or `checkpoints`, not both")


Axis = tuple[tuple[str, ...], list[tuple[Any, ...]]]  # keys swept together, and their rows


def sweep_axes(
    data: dict[str, Any], base: Path, where: str, allow_no_checkpoints: bool = False
) -> list[Axis]:
    """The swept lists as axes: each grid key alone, all zip keys together, checkpoints alone."""
    grid = _swept_mapping(data, "grid", where)
    zipped = _swept_mapping(data, "zip", where)
    for key in set(grid) & set(zipped):
        raise UserInputError(f"{where}: `{key}` is swept under both grid and zip; keep it in one")
    axes: list[Axis] = []
    if "checkpoints" in data:
        found = expand_checkpoints(data["checkpoints"], base, where, allow_no_checkpoints)
        axes.append((("model",), [(c,) for c in found]))
    for key, values in grid.items():
        axes.append(((_axis_key(key),), [(v,) for v in _axis_values(key, values, base, where)]))
    if zipped:
        columns = [_axis_values(key, values, base, where) for key, values in zipped.items()]
        lengths = {key: len(column) for key, column in zip(zipped, columns, strict=True)}
        if len(set(lengths.values())) > 1:
            described = ", ".join(f"{k}: {n}" for k, n in lengths.items())
            raise UserInputError(
                f"{where}: zip lists differ in length ({described}); give each the same number "
                "of values, or move one to grid"
            )
        axes.append((tuple(_axis_key(k) for k in zipped), list(zip(*columns, strict=True))))
    swept = [key for keys, _ in axes for key in keys]
    for key in swept:
        if swept.count(key) > 1:
            raise UserInputError(f"{where}: `{key}` is swept twice (model and checkpoints are one)")
    if "datasets" in swept and "datasets" in data:
        raise UserInputError(f"{where}: `datasets` is both set and swept; keep one")
    if "model" in swept and "model" in data:
        raise UserInputError(f"{where}: `model` is both set and swept; keep one")
    datasets = data.get("datasets")
    if "datasets" not in swept and (not isinstance(datasets, list) or not datasets):
        raise UserInputError(
            f"{where}: no datasets; set `datasets:` to a non-empty list or sweep them under grid"
        )
    return axes


def _swept_mapping(data: dict[str, Any], section: str, where: str) -> dict[str, Any]:
    mapping = data.get(section) or {}
    if not isinstance(mapping, dict):
        raise UserInputError(f"{where}: `{section}` must be a mapping of key: [values]")
    for key, values in mapping.items():
        if key not in SWEEPABLE:
            raise UserInputError(
                f"{where}: {section}: `{key}` cannot be swept; sweepable keys: "
                f"{', '.join(SWEEPABLE)} (set other options once, at the top level)"
            )
        if key == "checkpoints" and isinstance(values, str):
            continue  # a glob
        if not isinstance(values, list) or not values:
            raise UserInputError(f"{where}: {section}: `{key}` must be a non-empty list of values")
    return mapping


def _axis_key(key: str) -> str:
    return "model" if key == "checkpoints" else key


def _axis_values(key: str, values: Any, base: Path, where: str) -> list[Any]:
    if key == "checkpoints":
        return expand_checkpoints(values, base, where)
    if key == "model":
        return [_local_or_hub(str(v), base) for v in values]
    if key == "datasets":
        return [_dataset_entry(v, base, f"{where}: datasets") for v in values]
    return list(values)


def step_number(path: str | Path) -> int | None:
    """The training step in a checkpoint's name: global_step_N, step_N, checkpoint-N, epoch_N,
    iter_N (the last such number in the name), or None."""
    matches = STEP_PATTERN.findall(Path(path).name)
    return int(matches[-1]) if matches else None


def order_by_step(paths: Iterable[str]) -> list[str]:
    """Checkpoints by step number (numerically: step_50 before step_500); unnumbered ones last."""
    listed = list(paths)
    return sorted(listed, key=lambda p: (step_number(p) is None, step_number(p) or 0))


def expand_checkpoints(spec: Any, base: Path, where: str, allow_none: bool = False) -> list[str]:
    """A glob or a list of checkpoint directories → absolute paths ordered by step."""
    if isinstance(spec, str):
        pattern = str(_resolve(base, spec))
        matches = [m for m in glob.glob(pattern) if Path(m).is_dir()]
        if not matches and allow_none:
            return []
        if not matches:
            raise UserInputError(
                f"{where}: checkpoints: {spec!r} matches no directory (looked for {pattern}); "
                "check the glob"
            )
        paths = matches
    elif isinstance(spec, list) and spec:
        paths = [str(_resolve(base, str(p))) for p in spec]
    else:
        raise UserInputError(f"{where}: checkpoints must be a glob or a non-empty list of paths")
    for path in paths:
        _check_checkpoint_dir(Path(path), where)
    return order_by_step(str(Path(p).resolve()) for p in paths)


def _check_checkpoint_dir(path: Path, where: str) -> None:
    from rollouts.checkpoint_layouts import find_layout

    if not path.is_dir():
        raise UserInputError(f"{where}: checkpoint {path} is not a directory")
    if find_layout(path) is None:
        raise UserInputError(
            f"{where}: checkpoint {path} is not a model rollouts reads: no config.json "
            "(HuggingFace), no .metadata in it or in model/ (DCP), no model_world_size_W_rank_R.pt "
            "in it or in actor/ (verl), no policy/weights/ (NeMo-RL)"
        )


def _resolve(base: Path, path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def _local_or_hub(model: str, base: Path) -> str:
    """A model that names a local directory becomes its absolute path; a hub id stays as is."""
    local = _resolve(base, model)
    return str(local.resolve()) if local.is_dir() else model


def _dataset_entry(value: Any, base: Path, where: str) -> dict[str, Any]:
    entry = {"path": value} if isinstance(value, str) else dict(value or {})
    if "path" not in entry:
        raise UserInputError(f"{where}: each dataset needs a `path`")
    entry["path"] = str(_resolve(base, str(entry["path"])))
    return entry


def product(axes: list[Axis]) -> list[dict[str, Any]]:
    """Every combination of the axes' rows, as {key: value}, first axis slowest."""
    combos = []
    for rows in itertools.product(*(rows for _, rows in axes)):
        values: dict[str, Any] = {}
        for (keys, _), row in zip(axes, rows, strict=True):
            values.update(zip(keys, row, strict=True))
        combos.append(values)
    return combos


def _template(data: dict[str, Any], base: Path, where: str) -> dict[str, Any]:
    """The run config every combination starts from: sweep keys removed, paths absolute."""
    template = {k: v for k, v in data.items() if k not in SWEEP_ONLY_KEYS | {"slurm"}}
    template["output_dir"] = str(_resolve(base, str(data.get("output_dir", "sweep"))).resolve())
    if "model" in template:
        template["model"] = _local_or_hub(str(template["model"]), base)
    if isinstance(template.get("datasets"), list):
        template["datasets"] = [
            _dataset_entry(d, base, f"{where}: datasets") for d in template["datasets"]
        ]
    if template.get("base_model"):
        template["base_model"] = _local_or_hub(str(template["base_model"]), base)
    return template


def resolve_combination(
    template: dict[str, Any], values: dict[str, Any], varying: tuple[str, ...], root: Path
) -> Combination:
    """Apply one combination's values to the template: a complete run config."""
    config = json.loads(json.dumps(template))  # a deep copy of plain data
    for key in ("model", "seed"):
        if key in values:
            config[key] = values[key]
    if "datasets" in values:
        config["datasets"] = [dict(values["datasets"])]
    for entry in config.get("datasets") or []:
        entry.update({k: values[k] for k in DATASET_LEVEL if k in values})
    config_hash = _hash(identity_of(config))
    slug = combination_slug(values, varying, config_hash)
    directory = root / slug
    config["output_dir"] = str(directory)
    for entry in config.get("datasets") or []:
        entry["output"] = _output_path(entry, config, directory)
    shown = {k: _shown(k, v) for k, v in values.items()}
    return Combination(slug, shown, config, directory, config_hash, _group_key(config))


def identity_of(config: dict[str, Any]) -> dict[str, Any]:
    """What a combination's outputs depend on (its hash): operational options left out."""
    identity = {k: v for k, v in config.items() if k not in OPERATIONAL_KEYS}
    server = identity.get("server") or {}
    identity["server"] = {k: v for k, v in server.items() if k not in OPERATIONAL_SERVER_KEYS}
    return identity


def _group_key(config: dict[str, Any]) -> str:
    shared = {k: v for k, v in config.items() if k not in ("datasets", "output_dir", "summary")}
    return _canonical(shared)


def _output_path(entry: dict[str, Any], config: dict[str, Any], directory: Path) -> str:
    """The dataset's output inside the combination's directory (templates as in `rollouts run`)."""
    from rollouts.dataset import dataset_name

    options = {**(config.get("defaults") or {}), **entry}
    name = str(entry.get("name") or dataset_name(Path(entry["path"])))
    fields = {
        "output_dir": directory, "name": name, "model_name": Path(str(config.get("model", "")))
        .name or "model", "n": options.get("n", 1), "temperature": options.get("temperature", 1.0),
        "top_p": options.get("top_p", 1.0), "max_tokens": options.get("max_tokens", 1024),
        "seed": config.get("seed", 0),
    }
    try:
        output = str(entry.get("output", DEFAULT_OUTPUT)).format(**fields)
    except KeyError as exc:
        raise UserInputError(
            f"datasets: unknown field {exc} in output template; use {sorted(fields)}"
        ) from exc
    path = Path(output)
    return str(path if path.is_absolute() else directory / path)


def combination_slug(values: dict[str, Any], varying: tuple[str, ...], config_hash: str) -> str:
    """`global_step_50-t0.6-gsm8k-3f2a1c`: the varying values in sweep order, then the hash."""
    parts = [_slug_part(key, values[key]) for key in varying if key in values]
    text = re.sub(r"[^A-Za-z0-9._=+-]+", "_", "-".join(p for p in parts if p))[:SLUG_MAX]
    return f"{text}-{config_hash}" if text else config_hash


def _slug_part(key: str, value: Any) -> str:
    if key == "model":
        return Path(str(value).rstrip("/")).name
    if key == "datasets":
        return _dataset_label(value)
    if key == "system_prompt":
        return "sp" + _hash(value)[:4] if value else "sp-none"
    return f"{SLUG_PREFIX[key]}{value}"


def _dataset_label(entry: dict[str, Any]) -> str:
    from rollouts.dataset import dataset_name

    return str(entry.get("name") or dataset_name(Path(entry["path"])))


def _shown(key: str, value: Any) -> Any:
    if key == "datasets":
        return _dataset_label(value)
    return value


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _hash(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()[:HASH_LEN]


def group_combinations(combinations: list[Combination]) -> tuple[Group, ...]:
    """Combinations with the same model and server settings, in first-seen order."""
    by_key: dict[str, list[Combination]] = {}
    for combination in combinations:
        by_key.setdefault(combination.group, []).append(combination)
    groups = []
    for key, members in by_key.items():
        model = str(members[0].config.get("model") or "servers")
        label = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model.rstrip("/")).name) or "model"
        groups.append(Group(f"{label}-{_hash(key)}", tuple(members)))
    return tuple(groups)


def _check_unique_dirs(combinations: list[Combination], where: str) -> None:
    seen: dict[Path, Combination] = {}
    for combination in combinations:
        if combination.directory in seen:
            raise UserInputError(
                f"{where}: two combinations resolve to the same config ({combination.slug}); "
                "remove the repeated value"
            )
        seen[combination.directory] = combination
    outputs = Counter(o for c in combinations for o in c.outputs())
    for output, count in outputs.items():
        if count > 1:
            raise UserInputError(f"{where}: two datasets write {output}; give them distinct names")


# -- status and the manifest --------------------------------------------------------------------


def combination_status(combination: Combination) -> str:
    """done (every output written, no error rows), errors (written, with error rows), partial
    (generation started), or pending."""
    return outputs_status(combination.outputs())


def outputs_status(outputs: list[Path]) -> str:
    from rollouts.store import state_dir_for

    if all(o.exists() for o in outputs):
        return "errors" if _output_totals(outputs)[1] else "done"
    if any(o.exists() or state_dir_for(o).exists() for o in outputs):
        return "partial"
    return "pending"


def _summary_totals(combination: Combination) -> tuple[int, int]:
    return _output_totals(combination.outputs())


def _output_totals(outputs: list[Path]) -> tuple[int, int]:
    """Rows and error rows written so far, from the outputs' summaries."""
    from rollouts.engine import summary_path_for

    rows = errors = 0
    for output in outputs:
        summary = summary_path_for(output)
        if summary.is_file():
            written = json.loads(summary.read_text(encoding="utf-8"))["output"]
            rows += int(written["rows"])
            errors += int(written["error_rows"])
    return rows, errors


def manifest_rows(sweep: Sweep, failures: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per combination: its name, parameters, outputs, status and how its model was
    loaded (`load`: start, swap or restart, with seconds; None before it ran)."""
    from rollouts.sweep_runner import read_load

    group_of = {c.slug: g.name for g in sweep.groups for c in g.combinations}
    rows = []
    for combination in sweep.combinations:
        status = combination_status(combination)
        written, errors = _summary_totals(combination)
        if failures and combination.slug in failures and status != "done":
            status = "failed"
        row: dict[str, Any] = {
            "combination": combination.slug,
            "group": group_of[combination.slug],
            "model": combination.config.get("model"),
        }
        row.update({_column(k): combination.values[k] for k in sweep.varying})
        row.update({
            "params": _canonical(combination.values),
            "config_hash": combination.config_hash,
            "directory": str(combination.directory),
            "outputs": [str(o) for o in combination.outputs()],
            "status": status,
            "rows": written,
            "error_rows": errors,
            "error": (failures or {}).get(combination.slug),
            "load": read_load(sweep.root / GROUPS_DIR, group_of[combination.slug]),
        })
        rows.append(row)
    return rows


def refresh_manifest(path: Path) -> None:
    """Each row's status, rows and error rows again from its outputs: a `--slurm` group's merge
    job writes them long after the sweep was submitted."""
    import pandas as pd

    from rollouts.io import write_table_atomic

    frame = pd.read_parquet(path)
    for index, outputs in frame["outputs"].items():
        paths = [Path(str(o)) for o in outputs]
        frame.at[index, "status"] = outputs_status(paths)
        frame.at[index, "rows"], frame.at[index, "error_rows"] = _output_totals(paths)
    write_table_atomic(frame, path)


def _column(key: str) -> str:
    return "dataset" if key == "datasets" else key


def write_manifest(sweep: Sweep, rows: list[dict[str, Any]]) -> Path:
    import pandas as pd

    from rollouts.io import write_table_atomic

    path = sweep.root / MANIFEST
    write_table_atomic(pd.DataFrame(rows), path)
    return path


def format_table(sweep: Sweep, rows: list[dict[str, Any]]) -> str:
    """The combination table printed by --dry-run and at the end of a sweep."""
    import pandas as pd

    columns = ["combination", "group", *(_column(k) for k in sweep.varying), "status"]
    frame = pd.DataFrame(rows)[columns]
    if "model" in frame:  # the checkpoint's name; the manifest keeps the full path
        frame["model"] = [Path(str(m).rstrip("/")).name for m in frame["model"]]
    return str(frame.to_string(index=False))


# -- running ------------------------------------------------------------------------------------


def write_combination_configs(sweep: Sweep) -> None:
    """Each combination's resolved config, in its directory (`rollouts run` can run it alone)."""
    for combination in sweep.combinations:
        combination.directory.mkdir(parents=True, exist_ok=True)
        _write_yaml(combination.config, combination.directory / COMBINATION_CONFIG)


def write_group_config(
    sweep: Sweep, group: Group, combinations: Iterable[Combination], folder: Path,
    *, with_slurm: bool = False,
) -> Path:
    config = group.run_config(combinations, sweep.root)
    if with_slurm and sweep.slurm is not None:
        config["slurm"] = group_slurm_section(sweep.slurm, group)
        config["slurm"]["sweep_manifest"] = str(sweep.root / MANIFEST)  # the merge updates it
    path = folder / f"{group.name}.yaml"
    _write_yaml(config, path)
    return path


def group_slurm_section(slurm: dict[str, Any], group: Group) -> dict[str, Any]:
    """One group's `slurm:` section: its own job name and work folders."""
    section = dict(slurm)
    if section.get("job_name"):
        section["job_name"] = f"{section['job_name']}-{group.name}"
    for key in SLURM_FOLDERS:
        if section.get(key):
            section[key] = str(Path(str(section[key])) / group.name)
    return section


def _write_yaml(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    temp.replace(path)


def check_before_loading(sweep: Sweep) -> None:
    """What can be wrong with inputs, found before any model loads: every dataset file, every
    checkpoint's base model (names and shapes of its tensors). A checkpoint still being written
    or cut short is left to fail its own group."""
    from rollouts.checkpoint import IncompleteCheckpoint, check_against_base, needs_conversion
    from rollouts.io import expand_paths
    from rollouts.runconfig import load_plan

    with tempfile.TemporaryDirectory(prefix="rollouts-sweep-check-") as scratch:
        for combination in sweep.combinations:
            path = Path(scratch) / f"{combination.slug}.yaml"
            _write_yaml(combination.config, path)
            try:
                load_plan(path, progress=False)
            except UserInputError as exc:
                raise UserInputError(
                    f"combination {combination.slug}: {str(exc).replace(str(path) + ': ', '')}"
                ) from exc
    for path in sorted({e["path"] for c in sweep.combinations for e in c.config["datasets"]}):
        expand_paths([path])
    models = dict.fromkeys(str(c.config.get("model") or "") for c in sweep.combinations)
    for model in models:
        if model and needs_conversion(model):
            try:
                check_against_base(model, sweep.base_model)
            except IncompleteCheckpoint:
                continue  # reported as its group's failure; the other groups still run


def echo(message: str) -> None:
    import sys

    print(f"rollouts sweep: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SweepResult:
    manifest: Path
    rows: list[dict[str, Any]]
    failures: dict[str, str]


def run_sweep(sweep: Sweep, *, progress: bool = True, hot_swap: bool = True) -> SweepResult:
    """Run every group with unfinished combinations, in order; finished ones are skipped.
    Consecutive groups on managed servers with the same settings and architecture keep one
    server and swap its weights (rollouts.sweep_runner). A group that fails is recorded (status
    failed) and the others still run."""
    import asyncio

    from rollouts.sweep_runner import GroupRun, batches_of, run_groups

    check_before_loading(sweep)
    write_combination_configs(sweep)
    failures: dict[str, str] = {}
    manifest = write_manifest(sweep, manifest_rows(sweep))
    pending_of: dict[str, list[Combination]] = {}
    runs = []
    for group in sweep.groups:
        pending = [c for c in group.combinations if combination_status(c) != "done"]
        if not pending:
            echo(f"{group.name}: all {len(group.combinations)} combinations finished; skipped")
            continue
        config_path = write_group_config(sweep, group, pending, sweep.root / GROUPS_DIR)
        echo(f"{group.name}: {len(pending)} combination(s) on one model load ({config_path})")
        pending_of[group.name] = pending
        runs.append(GroupRun(group.name, config_path))

    def group_done(name: str, error: str | None) -> None:
        if error is not None:
            failures.update({c.slug: error for c in pending_of[name]})
        write_manifest(sweep, manifest_rows(sweep, failures))

    if runs:
        asyncio.run(run_groups(batches_of(runs), sweep.root / GROUPS_DIR, progress=progress,
                               hot_swap=hot_swap, on_done=group_done))
    manifest = write_manifest(sweep, manifest_rows(sweep, failures))
    return SweepResult(manifest, manifest_rows(sweep, failures), failures)


# -- on SLURM -----------------------------------------------------------------------------------


def submit_sweep(sweep: Sweep, *, dry_run: bool = False, force: bool = False) -> list[Any]:
    """One SLURM job (array) per group, through `rollouts slurm submit`; DCP checkpoints are
    converted inside the jobs. With dry_run, the configs go to a temp folder and nothing is
    submitted; the results carry the rendered scripts."""
    if not sweep.slurm:
        raise UserInputError("--slurm needs a `slurm:` section in the sweep file (see docs/slurm.md)")
    from slurm.submit import submit_run

    check_before_loading(sweep)
    results = []
    with tempfile.TemporaryDirectory(prefix="rollouts-sweep-") as scratch:
        folder = Path(scratch) if dry_run else sweep.root / GROUPS_DIR
        if not dry_run:
            write_combination_configs(sweep)
        for group in sweep.groups:
            pending = [c for c in group.combinations if combination_status(c) != "done"]
            if not pending:
                continue
            path = write_group_config(sweep, group, pending, folder, with_slurm=True)
            results.append((group, submit_run(path, dry_run=dry_run, force=force)))
        if not dry_run:
            write_manifest(sweep, manifest_rows(sweep))
    return results
