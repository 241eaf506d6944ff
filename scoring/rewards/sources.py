"""The one table of data sources `auto` knows: pattern -> reward, with where the reward's rules
come from. `auto` dispatches from it, `prepare` reads its templates, and docs/scoring.md's list of
data sources is generated from it (`markdown_table()`; tests/test_sources.py checks that the doc
and the table agree). Adding a domain is one reward module plus one row here.

How a data source is matched (lower-cased, surrounding spaces stripped):
    prefix          the whole name starts with the pattern (`math__`, `stem__gpqa`, `table__`);
                    Reasoning360's (GURU's) `default_compute_score` dispatches this way
    dataset         the dataset name, the part after `domain__` and after the last `/`, equals
                    the pattern (`openai/gsm8k` -> `gsm8k`, `stem__mmlu` -> `mmlu`)
    dataset_prefix  the dataset name starts with the pattern (`numina_olympiads`)
The first kind that matches wins, and within a kind the longest pattern; a row with `contains`
matches only names holding that text and wins over the same pattern without it (GURU's
`stem__gpqa*_no_box` sets are scored by gpqa's rules, other `stem__gpqa*` by supergpqa's).

A row's `metrics` choose another reward by `extra_info["reward_metric"]` (GURU's math rows name
`prime_math` or `math_llm_judge` there); other values keep the row's reward, as GURU does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

MatchKind = Literal["prefix", "dataset", "dataset_prefix"]
MATCH_ORDER: tuple[MatchKind, ...] = ("prefix", "dataset", "dataset_prefix")

GURU = "Reasoning360 (GURU)"
VERL = "verl dataset name"


@dataclass(frozen=True, kw_only=True)
class Source:
    """One row of the table: data sources matching `pattern` are scored by `reward`."""

    pattern: str
    reward: str
    origin: str
    match: MatchKind = "prefix"
    contains: str | None = None
    metrics: Mapping[str, str] = field(default_factory=dict)
    template: str | None = None  # the `prepare` template for this domain, when it has its own
    note: str = ""

    def __post_init__(self) -> None:
        if self.pattern != self.pattern.strip().lower():
            raise ValueError(f"source pattern {self.pattern!r} must be lower case, unpadded")

    def reward_for(self, reward_metric: Any) -> str:
        return self.metrics.get(str(reward_metric), self.reward) if reward_metric else self.reward


def _datasets(names: Iterable[str], reward: str, origin: str = VERL) -> list[Source]:
    return [Source(pattern=name, reward=reward, origin=origin, match="dataset") for name in names]


SOURCES: tuple[Source, ...] = (
    # ---- GURU / Reasoning360 (`verl/utils/reward_score/__init__.py`, default_compute_score)
    Source(pattern="math__", reward="guru_math", origin=GURU + ": naive_dapo",
           metrics={"prime_math": "guru_prime_math", "math_llm_judge": "math_judge"},
           note="GURU's grader, not Math-Verify (see `guru_math`)"),
    Source(pattern="codegen__", reward="guru_code", origin=GURU + ": coder1",
           note="golds not in coder1's form go to `code`"),
    Source(pattern="simulation__codeio", reward="guru_codeio", origin=GURU + ": codeio"),
    Source(pattern="simulation__cruxeval", reward="guru_cruxeval", origin=GURU + ": cruxeval",
           note="`cruxeval-i` and `cruxeval-o`"),
    Source(pattern="table", reward="guru_table", origin=GURU + ": tablereason",
           note="hitab, multihier, finqa"),
    Source(pattern="stem__gpqa", reward="guru_gpqa", origin=GURU + ": gpqa", contains="no_box"),
    Source(pattern="stem__gpqa", reward="guru_supergpqa", origin=GURU + ": supergpqa",
           note="boxed letter, as GURU scores GPQA sets not named `no_box`"),
    Source(pattern="stem__supergpqa", reward="guru_supergpqa", origin=GURU + ": supergpqa"),
    Source(pattern="simulation__arcagi", reward="arcagi", origin=GURU),
    Source(pattern="simulation__barc", reward="arcagi", origin=GURU),
    Source(pattern="logic__zebra_puzzle", reward="zebra_puzzle", origin=GURU),
    Source(pattern="logic__ordering_puzzle", reward="ordering_puzzle", origin=GURU,
           note="Reasoning360's puzzles_dataset"),
    Source(pattern="logic__graph", reward="graph_puzzle", origin=GURU,
           note="Reasoning360's graph_dataset"),
    Source(pattern="stem_web", reward="judge", origin=GURU,
           note="stem_llm_judge: needs a judge model (--judge-base-url / --judge-model)"),
    Source(pattern="ood__livebench", reward="livebench", origin=GURU,
           note="LiveBench's scorers as Reasoning360 calls them"),
    Source(pattern="ood__ifeval", reward="guru_ifeval", origin=GURU,
           note="kwargs as the ground truth, ids in extra_info"),
    Source(pattern="ood__ifbench", reward="guru_ifbench", origin=GURU,
           note="open-instruct's IFEvalG ids"),
    # ---- the `domain__` prefixes of our own `prepare` and of other multi-domain sets
    Source(pattern="qa__", reward="qa", origin="rollouts"),
    Source(pattern="mcq__", reward="mcq", origin="rollouts"),
    Source(pattern="instruction_following__", reward="ifeval", origin="rollouts"),
    # ---- dataset names (verl's and common Hugging Face ones)
    *_datasets(["gsm8k"], "gsm8k"),
    *_datasets(
        [
            "math", "math-lighteval", "math-500", "math_dapo", "math_dapo_reasoning",
            "dapo-math-17k", "aime", "aime24", "aime25", "aime2024", "aime2025", "aime_2024",
            "aimo-validation-aime", "amc", "amc23", "olympiadbench", "minerva", "minerva_math",
            "geometry3k", "deepscaler", "omni_math", "omni-math", "numinamath-cot", "polaris",
        ],
        "math",
    ),
    *_datasets(
        [
            "code", "livecodebench", "humaneval", "mbpp", "apps", "codecontests", "code_contests",
            "taco", "primeintellect", "codeforces",
        ],
        "code",
    ),
    *_datasets(
        [
            "gpqa", "gpqa_diamond", "supergpqa", "mmlu", "mmlu_pro", "mmlu-pro", "ai2_arc", "arc",
            "commonsense_qa", "mcq",
        ],
        "mcq",
    ),
    *_datasets(
        [
            "squad", "nq", "natural_questions", "triviaqa", "trivia_qa", "popqa", "hotpotqa",
            "2wikimultihopqa", "musique", "bamboogle", "qa",
        ],
        "qa",
    ),
    *_datasets(["ifeval", "ifbench", "ifbench_test", "ifeval-like-data"], "ifeval"),
    # ---- dataset-name prefixes of families with many members (numina_olympiads, ...)
    Source(pattern="numina_", reward="math", origin=VERL, match="dataset_prefix"),
    Source(pattern="gsm8k", reward="gsm8k", origin=VERL, match="dataset_prefix"),
    Source(pattern="aime", reward="math", origin=VERL, match="dataset_prefix"),
    Source(pattern="ifeval", reward="ifeval", origin=VERL, match="dataset_prefix"),
    Source(pattern="ifbench", reward="ifeval", origin=VERL, match="dataset_prefix"),
)


def dataset_name(name: str) -> str:
    """`math__aime` -> `aime`, `openai/gsm8k` -> `gsm8k`."""
    domain, sep, dataset = name.partition("__")
    return (dataset if sep else name).rsplit("/", 1)[-1]


def _ranked(sources: Iterable[Source]) -> list[Source]:
    """Rows in the order they are tried: by match kind, longest pattern first, `contains` first."""
    return sorted(
        sources,
        key=lambda s: (MATCH_ORDER.index(s.match), -len(s.pattern), s.contains is None),
    )


_RANKED = _ranked(SOURCES)


def _matches(source: Source, name: str, dataset: str) -> bool:
    if source.contains is not None and source.contains not in name:
        return False
    if source.match == "prefix":
        return name.startswith(source.pattern)
    if source.match == "dataset":
        return dataset == source.pattern
    return dataset.startswith(source.pattern)


def find_source(data_source: str) -> Source | None:
    """The table row that scores a data source, or None when none does."""
    name = str(data_source).strip().lower()
    dataset = dataset_name(name)
    return next((s for s in _RANKED if _matches(s, name, dataset)), None)


def markdown_table(sources: Iterable[Source] = SOURCES) -> str:
    """docs/scoring.md's list of data sources, one line per reward and match kind."""
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for source in sources:
        shown = f"`{source.pattern}*`" if source.match != "dataset" else f"`{source.pattern}`"
        if source.contains:
            shown += f" containing `{source.contains}`"
        how = {"prefix": "name starts with", "dataset": "dataset is",
               "dataset_prefix": "dataset starts with"}[source.match]
        reward = f"`{source.reward}`" + "".join(
            f"; `{metric}` → `{fn}`" for metric, fn in source.metrics.items()
        )
        groups.setdefault((how, reward, source.origin, source.note), []).append(shown)
    lines = ["| data source | reward (`reward_metric` → reward) | origin | note |", "|---|---|---|---|"]
    for (how, reward, origin, note), names in groups.items():
        lines.append(f"| {how} {', '.join(names)} | {reward} | {origin} | {note} |")
    return "\n".join(lines)

