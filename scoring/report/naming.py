"""Names in a report: the metric asked for, a checkpoint's step, a task's domain."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from rollouts.errors import UserInputError
from rollouts.sweep import STEP_PATTERN  # global_step_N, step_N, checkpoint-N, epoch_N, iter_N

DOMAIN_SEPARATOR = "__"
NO_DOMAIN = "other"


def step_of(name: str) -> int | None:
    """The training step in a label (a checkpoint path, perhaps with settings): its last step token."""
    matches = STEP_PATTERN.findall(name)
    return int(matches[-1]) if matches else None


def series_of(name: str) -> str:
    """The name without its step, so checkpoints of one run share a series."""
    stripped = STEP_PATTERN.sub("", name).strip(" /_-")
    return stripped or "run"


def domain_of(task: str, mapping: dict[str, str] | None = None) -> str:
    """`math__aime` -> `math`; a --domains mapping (task -> domain) wins over the prefix."""
    if mapping and task in mapping:
        return mapping[task]
    if DOMAIN_SEPARATOR in task:
        return task.split(DOMAIN_SEPARATOR, 1)[0]
    return NO_DOMAIN


def read_domain_map(path: Path) -> dict[str, str]:
    """A YAML mapping, either task -> domain or domain -> [tasks]."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UserInputError(f"--domains {path}: cannot read it as YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise UserInputError(f"--domains {path}: expected a mapping task: domain or domain: [tasks]")
    mapping: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, list):
            mapping.update({str(task): str(key) for task in value})
        elif isinstance(value, str):
            mapping[str(key)] = value
        else:
            raise UserInputError(
                f"--domains {path}: {key!r} maps to {value!r}; use a domain name or a list of tasks"
            )
    return mapping


@dataclass(frozen=True)
class Metric:
    """The metric a report ranks and compares by: mean@n (accuracy), mean_score@n (the raw
    reward), pass@K or maj@K."""

    kind: str  # "mean", "score", "pass" or "maj"
    k: int | None = None

    @property
    def name(self) -> str:
        return {"mean": "mean@n", "score": "mean_score@n"}.get(self.kind, f"{self.kind}@{self.k}")


METRIC_PATTERN = re.compile(r"^(pass|maj)@(\d+)$")


def parse_metric(text: str) -> Metric:
    if text.strip() == "mean@n":
        return Metric("mean")
    if text.strip() == "mean_score@n":
        return Metric("score")
    match = METRIC_PATTERN.match(text.strip())
    if not match or int(match.group(2)) < 1:
        raise UserInputError(f"--metric {text!r}: use mean@n, mean_score@n, pass@K or maj@K with K >= 1 (pass@1, maj@8)")
    return Metric(match.group(1), int(match.group(2)))
