"""Reward functions by name, and dispatch from a row's `data_source` to one of them.

`auto` picks by data source from one table (scoring.rewards.sources): verl's dataset names
(`openai/gsm8k`, `lighteval/MATH`, ...) and the `domain__dataset` prefixes of multi-domain sets
(`math__aime`, `codegen__mbpp`, `stem__gpqa`).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable
from typing import Any

from rollouts.errors import UserInputError
from scoring.rewards.base import RewardFn, RewardOptions
from scoring.rewards.custom import SPEC_FORMS, looks_custom
from scoring.rewards.custom import canonical_spec as custom_canonical_spec
from scoring.rewards.sources import find_source

AUTO = "auto"


def _load(module: str, name: str) -> Any:
    """A reward class, imported when a run first uses it: each brings its own libraries (sympy
    and Math-Verify for math, NLTK for ifeval, ...), which a run of another reward never pays for."""
    return getattr(importlib.import_module(module), name)


BUILTINS: dict[str, Callable[[RewardOptions], RewardFn]] = {
    "math": lambda options: _load("scoring.rewards.math", "MathReward")(),
    "gsm8k": lambda options: _load("scoring.rewards.gsm8k", "Gsm8kReward")(),
    "qa": lambda options: _load("scoring.rewards.qa", "QaReward")(),
    "mcq": lambda options: _load("scoring.rewards.mcq", "McqReward")(),
    "code": lambda options: _load("scoring.rewards.code", "CodeReward")(options),
    "ifeval": lambda options: _load("scoring.rewards.ifeval", "IfevalReward")(),
    "arcagi": lambda options: _load("scoring.rewards.arcagi", "ArcagiReward")(),
    "zebra_puzzle": lambda options: _load("scoring.rewards.zebra_puzzle", "ZebraPuzzleReward")(),
    "ordering_puzzle": lambda options: _load("scoring.rewards.ordering_puzzle", "OrderingPuzzleReward")(),
    "graph_puzzle": lambda options: _load("scoring.rewards.graph_puzzle", "GraphPuzzleReward")(),
    "livebench": lambda options: _load("scoring.rewards.livebench", "LivebenchReward")(),
    "guru_ifeval": lambda options: _load("scoring.rewards.guru_ifeval", "GuruIfevalReward")(),
    "guru_ifbench": lambda options: _load("scoring.rewards.guru_ifeval", "GuruIfbenchReward")(),
    "judge": lambda options: _load("scoring.rewards.judge", "StemJudgeReward")(options.judge),
    "math_judge": lambda options: _load("scoring.rewards.judge", "MathJudgeReward")(options.judge),
    # GURU / Reasoning360's rewards (scoring.rewards.guru), chosen by `auto` for its data sources
    "guru_math": lambda options: _load("scoring.rewards.guru.math", "GuruMathReward")(),
    "guru_prime_math": lambda options: _load("scoring.rewards.guru.prime_math", "GuruPrimeMathReward")(),
    "guru_code": lambda options: _load("scoring.rewards.guru.code", "GuruCodeReward")(options),
    "guru_codeio": lambda options: _load("scoring.rewards.guru.codeio", "GuruCodeioReward")(),
    "guru_cruxeval": lambda options: _load("scoring.rewards.guru.cruxeval", "GuruCruxevalReward")(options),
    "guru_table": lambda options: _load("scoring.rewards.guru.table", "GuruTableReward")(),
    "guru_gpqa": lambda options: _load("scoring.rewards.guru.gpqa", "GuruGpqaReward")(),
    "guru_supergpqa": lambda options: _load("scoring.rewards.guru.supergpqa", "GuruSuperGpqaReward")(),
}

def dispatch(data_source: str, reward_metric: Any = None) -> str | None:
    """The built-in reward for a data source (and extra_info's `reward_metric`), or None when
    none is known (see scoring.rewards.sources)."""
    source = find_source(data_source)
    return source.reward_for(reward_metric) if source is not None else None


def has_metric_variants(data_source: str) -> bool:
    """Whether extra_info's `reward_metric` can change this data source's reward."""
    source = find_source(data_source)
    return source is not None and bool(source.metrics)


def dispatch_all(
    data_sources: Iterable[str], reward_metrics: Iterable[Any] | None = None
) -> dict[tuple[str, Any], str]:
    """Reward name per distinct (data source, reward_metric); one error listing every source
    that has none."""
    sources = [str(source) for source in data_sources]
    metrics = list(reward_metrics) if reward_metrics is not None else [None] * len(sources)
    pairs = set(zip(sources, metrics, strict=True))
    mapping = {pair: dispatch(*pair) for pair in pairs}
    unknown = sorted({source for (source, _), fn in mapping.items() if fn is None})
    if unknown:
        raise UserInputError(
            f"no reward function for data_source {', '.join(map(repr, unknown))}; "
            f"pass --reward-fn ({'|'.join(BUILTINS)}|{SPEC_FORMS})"
        )
    return {pair: fn for pair, fn in mapping.items() if fn is not None}


def canonical_spec(spec: str) -> str:
    """Custom files by absolute path: workers may run in another directory."""
    if spec == AUTO or spec in BUILTINS or not looks_custom(spec):
        return spec
    return custom_canonical_spec(spec)


def validate_spec(spec: str, options: RewardOptions | None = None) -> None:
    """Fail early on an unknown name, a custom file that does not define the function, or a
    judge reward without a judge."""
    if spec != AUTO:
        get_reward_fn(spec, options or RewardOptions())


@functools.lru_cache(maxsize=64)
def get_reward_fn(spec: str, options: RewardOptions) -> RewardFn:
    """A built-in by name, or a custom function (see scoring.rewards.custom), loaded once per
    process."""
    if spec in BUILTINS:
        return BUILTINS[spec](options)
    if looks_custom(spec):
        return _load("scoring.rewards.custom", "CustomReward")(spec, options.pass_threshold)
    raise UserInputError(
        f"unknown reward function {spec!r}; use {AUTO}, {', '.join(BUILTINS)}, {SPEC_FORMS}"
    )
