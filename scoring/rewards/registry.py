"""Reward functions by name, and dispatch from a row's `data_source` to one of them.

`auto` picks by data source from one table (scoring.rewards.sources): verl's dataset names
(`openai/gsm8k`, `lighteval/MATH`, ...) and the `domain__dataset` prefixes of multi-domain sets
(`math__aime`, `codegen__mbpp`, `stem__gpqa`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from rollouts.errors import UserInputError
from scoring.rewards.arcagi import ArcagiReward
from scoring.rewards.base import RewardFn, RewardOptions
from scoring.rewards.code import CodeReward
from scoring.rewards.custom import SPEC_FORMS, CustomReward, looks_custom
from scoring.rewards.custom import canonical_spec as custom_canonical_spec
from scoring.rewards.graph_puzzle import GraphPuzzleReward
from scoring.rewards.gsm8k import Gsm8kReward
from scoring.rewards.guru.code import GuruCodeReward
from scoring.rewards.guru.codeio import GuruCodeioReward
from scoring.rewards.guru.cruxeval import GuruCruxevalReward
from scoring.rewards.guru.gpqa import GuruGpqaReward
from scoring.rewards.guru.math import GuruMathReward
from scoring.rewards.guru.prime_math import GuruPrimeMathReward
from scoring.rewards.guru.supergpqa import GuruSuperGpqaReward
from scoring.rewards.guru.table import GuruTableReward
from scoring.rewards.guru_ifeval import GuruIfbenchReward, GuruIfevalReward
from scoring.rewards.ifeval import IfevalReward
from scoring.rewards.judge import MathJudgeReward, StemJudgeReward
from scoring.rewards.livebench import LivebenchReward
from scoring.rewards.math import MathReward
from scoring.rewards.mcq import McqReward
from scoring.rewards.ordering_puzzle import OrderingPuzzleReward
from scoring.rewards.qa import QaReward
from scoring.rewards.sources import find_source
from scoring.rewards.zebra_puzzle import ZebraPuzzleReward

AUTO = "auto"

BUILTINS: dict[str, Callable[[RewardOptions], RewardFn]] = {
    "math": lambda options: MathReward(),
    "gsm8k": lambda options: Gsm8kReward(),
    "qa": lambda options: QaReward(),
    "mcq": lambda options: McqReward(),
    "code": CodeReward,
    "ifeval": lambda options: IfevalReward(),
    "arcagi": lambda options: ArcagiReward(),
    "zebra_puzzle": lambda options: ZebraPuzzleReward(),
    "ordering_puzzle": lambda options: OrderingPuzzleReward(),
    "graph_puzzle": lambda options: GraphPuzzleReward(),
    "livebench": lambda options: LivebenchReward(),
    "guru_ifeval": lambda options: GuruIfevalReward(),
    "guru_ifbench": lambda options: GuruIfbenchReward(),
    "judge": lambda options: StemJudgeReward(options.judge),
    "math_judge": lambda options: MathJudgeReward(options.judge),
    # GURU / Reasoning360's rewards (scoring.rewards.guru), chosen by `auto` for its data sources
    "guru_math": lambda options: GuruMathReward(),
    "guru_prime_math": lambda options: GuruPrimeMathReward(),
    "guru_code": GuruCodeReward,
    "guru_codeio": lambda options: GuruCodeioReward(),
    "guru_cruxeval": GuruCruxevalReward,
    "guru_table": lambda options: GuruTableReward(),
    "guru_gpqa": lambda options: GuruGpqaReward(),
    "guru_supergpqa": lambda options: GuruSuperGpqaReward(),
}

def dispatch(data_source: str, reward_metric: Any = None) -> str | None:
    """The built-in reward for a data source (and extra_info's `reward_metric`), or None when
    none is known (see scoring.rewards.sources)."""
    source = find_source(data_source)
    return source.reward_for(reward_metric) if source is not None else None


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
        return CustomReward(spec, options.pass_threshold)
    raise UserInputError(
        f"unknown reward function {spec!r}; use {AUTO}, {', '.join(BUILTINS)}, {SPEC_FORMS}"
    )
