"""Reward functions by name, and dispatch from a row's `data_source` to one of them.

`auto` picks by data source: verl's dataset names (`openai/gsm8k`, `lighteval/MATH`, ...) and the
`domain__dataset` prefixes of multi-domain sets (`math__aime`, `codegen__mbpp`, `stem__gpqa`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from rollouts.errors import UserInputError
from scoring.rewards.base import RewardFn, RewardOptions
from scoring.rewards.code import CodeReward
from scoring.rewards.custom import SPEC_FORMS, CustomReward, looks_custom
from scoring.rewards.custom import canonical_spec as custom_canonical_spec
from scoring.rewards.gsm8k import Gsm8kReward
from scoring.rewards.ifeval import IfevalReward
from scoring.rewards.math import MathReward
from scoring.rewards.mcq import McqReward
from scoring.rewards.qa import QaReward

AUTO = "auto"

BUILTINS: dict[str, Callable[[RewardOptions], RewardFn]] = {
    "math": lambda options: MathReward(),
    "gsm8k": lambda options: Gsm8kReward(),
    "qa": lambda options: QaReward(),
    "mcq": lambda options: McqReward(),
    "code": CodeReward,
    "ifeval": lambda options: IfevalReward(),
}

# Dataset names (the part after the last `/`, lower case) and the reward that scores them.
DATASETS: dict[str, str] = {
    **dict.fromkeys(["gsm8k"], "gsm8k"),
    **dict.fromkeys(
        [
            "math", "math-lighteval", "math-500", "math_dapo", "math_dapo_reasoning",
            "dapo-math-17k", "aime", "aime24", "aime25", "aime2024", "aime2025", "aime_2024",
            "aimo-validation-aime", "amc", "amc23", "olympiadbench", "minerva", "minerva_math",
            "geometry3k", "deepscaler", "omni_math", "omni-math", "numinamath-cot", "polaris",
        ],
        "math",
    ),
    **dict.fromkeys(
        [
            "code", "livecodebench", "humaneval", "mbpp", "apps", "codecontests", "code_contests",
            "taco", "primeintellect", "codeforces",
        ],
        "code",
    ),
    **dict.fromkeys(
        [
            "gpqa", "gpqa_diamond", "supergpqa", "mmlu", "mmlu_pro", "mmlu-pro", "ai2_arc", "arc",
            "commonsense_qa", "mcq",
        ],
        "mcq",
    ),
    **dict.fromkeys(
        [
            "squad", "nq", "natural_questions", "triviaqa", "trivia_qa", "popqa", "hotpotqa",
            "2wikimultihopqa", "musique", "bamboogle", "qa",
        ],
        "qa",
    ),
    **dict.fromkeys(["ifeval", "ifbench", "ifbench_test", "ifeval-like-data"], "ifeval"),
}

# `domain__dataset` prefixes; a domain left out here is dispatched by its dataset name.
DOMAINS: dict[str, str] = {
    "math": "math", "codegen": "code", "qa": "qa", "mcq": "mcq", "instruction_following": "ifeval"
}
# Dataset-name prefixes of families with many members (numina_olympiads, numina_amc_aime, ...).
PREFIXES: dict[str, str] = {
    "numina_": "math", "gsm8k": "gsm8k", "aime": "math", "ifeval": "ifeval", "ifbench": "ifeval"
}


def dispatch(data_source: str) -> str | None:
    """The built-in reward for a data source, or None when none is known."""
    name = str(data_source).strip().lower()
    domain, sep, dataset = name.partition("__")
    if sep:
        if domain in DOMAINS:
            return DOMAINS[domain]
        name = dataset
    name = name.rsplit("/", 1)[-1]
    if name in DATASETS:
        return DATASETS[name]
    return next((fn for prefix, fn in PREFIXES.items() if name.startswith(prefix)), None)


def dispatch_all(data_sources: Iterable[str]) -> dict[str, str]:
    """Reward name per distinct data source; one error listing every source that has none."""
    mapping = {source: dispatch(source) for source in sorted(set(map(str, data_sources)))}
    unknown = [source for source, fn in mapping.items() if fn is None]
    if unknown:
        raise UserInputError(
            f"no reward function for data_source {', '.join(map(repr, unknown))}; "
            f"pass --reward-fn ({'|'.join(BUILTINS)}|{SPEC_FORMS})"
        )
    return {source: fn for source, fn in mapping.items() if fn is not None}


def canonical_spec(spec: str) -> str:
    """Custom files by absolute path: workers may run in another directory."""
    if spec == AUTO or spec in BUILTINS or not looks_custom(spec):
        return spec
    return custom_canonical_spec(spec)


def validate_spec(spec: str) -> None:
    """Fail early on an unknown name or a custom file that does not define the function."""
    if spec != AUTO:
        get_reward_fn(spec, RewardOptions())


@functools.lru_cache(maxsize=64)
def get_reward_fn(spec: str, options: RewardOptions) -> RewardFn:
    """A built-in by name, or a custom function (see scoring.rewards.custom), loaded once per
    process."""
    if spec in BUILTINS:
        return BUILTINS[spec](options)
    if looks_custom(spec):
        return CustomReward(spec)
    raise UserInputError(
        f"unknown reward function {spec!r}; use {AUTO}, {', '.join(BUILTINS)}, {SPEC_FORMS}"
    )
