"""`rollouts run CONFIG.yaml`: one model load for many datasets.

The YAML names the model and server options once, then datasets, each with its own sampling
options and output path (templated). Every check (unknown keys, missing files, duplicate outputs,
outputs of another run) happens before the model loads. Relative paths are taken from the
config file's folder.

    model: Qwen/Qwen2.5-7B-Instruct
    server: {tensor_parallel_size: 2, gpu_memory_utilization: 0.9, extra_args: [--max-num-seqs, "512"]}
    max_concurrent: 256
    output_dir: runs/{model_name}
    defaults: {n: 8, max_tokens: 2048, temperature: 1.0}
    datasets:
      - {path: data/gsm8k.parquet, temperature: 0.6}
      - {path: data/math500.parquet, name: math, n: 16, output: "{output_dir}/{name}_n{n}.parquet"}
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rollouts.concurrency import AUTO, MaxConcurrent, parse_max_concurrent
from rollouts.engine import GenerateConfig, unseeded_notice
from rollouts.errors import UserInputError
from rollouts.types import SamplingParams
from server.replicas import parse_replicas

TOP_LEVEL_KEYS = {
    "model", "backend", "base_urls", "api_key", "server", "max_concurrent", "max_rps", "seed",
    "samples_per_request", "request_timeout", "max_attempts", "retry_errors", "server_wait",
    "output_dir", "summary", "defaults", "datasets",
    "stall_timeout",  # the progress watchdog (rollouts.watchdog); 0 turns it off
    "slurm",  # read by `rollouts slurm submit` (slurm/config.py); `rollouts run` ignores it
    "base_model",  # the HuggingFace model a DCP checkpoint `model` converts with (checkpoint.py)
    "score",  # read by `rollouts slurm submit`: score the merged outputs in a job (slurm/score.py)
}
SERVER_KEYS = {
    "tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization", "max_model_len",
    "served_model_name", "extra_args", "log_file", "ready_timeout", "port", "host", "max_restarts",
    "replicas",  # vLLM servers of the model on one GPU (server.replicas): a number or auto
}
DATASET_KEYS = {
    "path", "name", "output", "n", "max_tokens", "temperature", "top_p", "stop", "system_prompt",
    "prompt_key", "format", "extra_body",
}
DEFAULT_OUTPUT = "{output_dir}/{name}.parquet"


@dataclass(frozen=True)
class RunPlan:
    """A validated config: one GenerateConfig per dataset plus how to reach the model."""

    model: str
    backend: str
    base_urls: tuple[str, ...]
    api_key: str | None
    server: dict[str, Any]
    max_restarts: int
    max_concurrent: MaxConcurrent
    jobs: tuple[GenerateConfig, ...]
    summary_path: Path
    output_dir: Path = Path(".")
    base_model: str | None = None
    seed_given: bool = False  # `seed:` set in the config, not left to its default


def read_yaml_mapping(path: Path, kind: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (run and sweep configs); one-line errors."""
    if not path.is_file():
        raise UserInputError(f"{path}: no such {kind} file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserInputError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: expected a mapping of options at the top level")
    return data


def load_plan(
    config_path: Path, *, overwrite: bool = False, progress: bool = True,
    base_dir: Path | None = None,
) -> RunPlan:
    """Read and check a run config; raises UserInputError naming the key and the fix. Relative
    paths are taken from base_dir (default: the config's folder; a copy of a config, such as a
    SLURM run's snapshot, passes the original's)."""
    data = read_yaml_mapping(config_path, "config")
    where = str(config_path)
    _check_keys(data, TOP_LEVEL_KEYS, where)
    base = base_dir or config_path.resolve().parent
    server = dict(data.get("server") or {})
    _check_keys(server, SERVER_KEYS, f"{where}: server")
    if "replicas" in server:
        server["replicas"] = parse_replicas(server["replicas"], f"{where}: server: replicas")
    defaults = dict(data.get("defaults") or {})
    _check_keys(defaults, DATASET_KEYS - {"path", "name", "output"}, f"{where}: defaults")
    model = str(data.get("model") or "")
    backend = str(data.get("backend", "openai"))
    base_urls = tuple(str(u) for u in data.get("base_urls") or ())
    if backend not in ("openai", "hf"):
        raise UserInputError(f"{where}: backend must be 'openai' or 'hf', not {backend!r}")
    if not model and not base_urls:
        raise UserInputError(f"{where}: set `model` (to start a server) or `base_urls`")
    datasets = data.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise UserInputError(f"{where}: `datasets` must be a non-empty list")
    output_dir = _resolve(base, str(data.get("output_dir", "."))
                          .format(model_name=_model_name(model)))
    jobs = tuple(
        _job(entry, index, data, defaults, base, output_dir, model, overwrite, progress, where)
        for index, entry in enumerate(datasets)
    )
    _check_unique_outputs(jobs, where)
    summary = data.get("summary")
    summary_path = _resolve(base, summary) if summary else output_dir / "run_summary.json"
    return RunPlan(
        model=model,
        backend=backend,
        base_urls=base_urls,
        api_key=data.get("api_key"),
        server={k: v for k, v in server.items() if k != "max_restarts"},
        max_restarts=int(server.get("max_restarts", 3)),
        max_concurrent=parse_max_concurrent(data.get("max_concurrent", AUTO), f"{where}: max_concurrent"),
        jobs=jobs,
        summary_path=summary_path,
        output_dir=output_dir,
        base_model=data.get("base_model"),
        seed_given="seed" in data,
    )


def _check_keys(mapping: Any, known: set[str], where: str) -> None:
    if not isinstance(mapping, dict):
        raise UserInputError(f"{where}: expected a mapping")
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise UserInputError(
            f"{where}: unknown key(s) {unknown}; known keys: {', '.join(sorted(known))}"
        )


def _resolve(base: Path, path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def _model_name(model: str) -> str:
    return Path(model.rstrip("/")).name or "model"


def _job(
    entry: Any,
    index: int,
    top: dict[str, Any],
    defaults: dict[str, Any],
    base: Path,
    output_dir: Path,
    model: str,
    overwrite: bool,
    progress: bool,
    where: str,
) -> GenerateConfig:
    label = f"{where}: datasets[{index}]"
    _check_keys(entry, DATASET_KEYS, label)
    options = {**defaults, **entry}
    if "path" not in options:
        raise UserInputError(f"{label}: missing `path` (a file or glob of prompts)")
    input_path = str(_resolve(base, str(options["path"])))
    name = str(options.get("name") or _stem(input_path))
    params = _sampling(options, label)
    n = int(options.get("n", 1))
    seed = int(top.get("seed", 0))
    fields = {
        "output_dir": output_dir, "name": name, "model_name": _model_name(model), "n": n,
        "temperature": params.temperature, "top_p": params.top_p,
        "max_tokens": params.max_tokens, "seed": seed,
    }
    try:
        output = _resolve(base, str(options.get("output", DEFAULT_OUTPUT)).format(**fields))
    except KeyError as exc:
        raise UserInputError(
            f"{label}: unknown field {exc} in output template; use {sorted(fields)}"
        ) from exc
    return GenerateConfig(
        inputs=(input_path,),
        output=output,
        model=str(top.get("server", {}).get("served_model_name") or model),
        n=n,
        params=params,
        seed=seed,
        samples_per_request=str(top.get("samples_per_request", "n")),  # type: ignore[arg-type]
        max_concurrent=parse_max_concurrent(top.get("max_concurrent", AUTO), f"{where}: max_concurrent"),
        max_rps=top.get("max_rps"),
        prompt_key=str(options.get("prompt_key", "prompt")),
        system_prompt=options.get("system_prompt"),
        output_format=str(options.get("format", "long")),  # type: ignore[arg-type]
        overwrite=overwrite,
        retry_errors=bool(top.get("retry_errors", False)),
        max_attempts=int(top.get("max_attempts", 6)),
        server_wait_s=float(top.get("server_wait", 600.0)),
        request_timeout_s=top.get("request_timeout"),
        stall_timeout_s=float(top.get("stall_timeout", 120.0)),
        progress=progress,
        dataset_name=str(options["name"]) if options.get("name") else None,
    )


def _stem(path: str) -> str:
    from rollouts.dataset import dataset_name

    return dataset_name(Path(path))


def _sampling(options: dict[str, Any], label: str) -> SamplingParams:
    stop = options.get("stop") or ()
    try:
        return SamplingParams(
            temperature=float(options.get("temperature", 1.0)),
            top_p=float(options.get("top_p", 1.0)),
            max_tokens=int(options.get("max_tokens", 1024)),
            stop=(stop,) if isinstance(stop, str) else tuple(stop),
            extra_body=dict(options.get("extra_body") or {}),
        )
    except (ValueError, TypeError) as exc:
        raise UserInputError(f"{label}: bad sampling option: {exc}") from exc


def _check_unique_outputs(jobs: tuple[GenerateConfig, ...], where: str) -> None:
    seen: dict[Path, int] = {}
    for index, job in enumerate(jobs):
        key = job.output.resolve()
        if key in seen:
            raise UserInputError(
                f"{where}: datasets[{seen[key]}] and datasets[{index}] both write {job.output}; "
                "give each its own `output` (templates can use {name}, {n}, {temperature})"
            )
        seen[key] = index


def plan_unseeded_notice(plan: RunPlan) -> str | None:
    """The engine's notice for the first sampled (not greedy) dataset, in the config's terms."""
    for job in plan.jobs:
        notice = unseeded_notice(job, "`samples_per_request: 1`")
        if notice:
            return notice
    return None


def server_extra_args(server: dict[str, Any]) -> tuple[str, ...]:
    extra = server.get("extra_args") or ()
    return tuple(shlex.split(extra)) if isinstance(extra, str) else tuple(str(a) for a in extra)
