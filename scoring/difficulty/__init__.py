"""Bucket prompts by pass rate: the library behind `filter-difficulty`.

Scored rollouts are long (one row per sample). They are grouped by prompt (`dataset` when present,
then `prompt_id`, else a hash of the prompt's content); each prompt gets a pass rate with a Wilson
95% interval, and a strategy puts it in a named bucket. Each bucket is written as the prompts'
original rows (one per prompt, per-sample columns dropped) plus the pass-rate columns, so a bucket
can go straight back into training or generation.

Pass rule: `acc` when every input has it; otherwise `score > 0` (covers 0/1 and -1/+1 rewards);
`pass_threshold=T` replaces both with `score >= T`.

Set aside, never bucketed: prompts with an unscoreable sample (score_status timeout, error or
sandbox_error; a generation error; no verdict at all) and, unless `keep_mixed`, prompts whose sample
count differs from the majority count of their dataset. `no_answer` is a genuine fail.

Only the columns needed for the statistics are read for every row; the prompt columns are read
once more, keeping only each prompt's first sample, so 10M rows fit in seconds and modest memory.

    columns.py      names shared by the modules: columns, buckets, files
    stats.py        pass rates and Wilson intervals
    strategies.py   percentile, band, bins, nonzero-variance, k-of-n
    reading.py      scored files read by column; per-prompt counts
    prompt_rows.py  each prompt's own columns, from its first sample
    run.py          run_filter: check, read, bucket, write
    summary.py      summary.json and the pass-rate plot
"""

from scoring.difficulty.columns import (
    OUTPUT_FORMATS,
    PER_SAMPLE_COLUMNS,
    PLOT_NAME,
    PROMPT_COLUMNS,
    SET_ASIDE_BUCKET,
    SET_ASIDE_COLUMNS,
    STAT_COLUMNS,
    SUMMARY_NAME,
    UNSCOREABLE_STATUSES,
)
from scoring.difficulty.reading import PassRule, PromptStats, prompt_stats
from scoring.difficulty.run import (
    FilterConfig,
    FilterResult,
    assign_buckets,
    check_output_dir,
    run_filter,
)
from scoring.difficulty.stats import pass_rates, wilson_interval
from scoring.difficulty.strategies import (
    BIN_EDGES,
    BIN_NAMES,
    STRATEGIES,
    BandStrategy,
    BinsStrategy,
    KOfNStrategy,
    NonzeroVarianceStrategy,
    PercentileStrategy,
    Strategy,
    make_strategy,
    parse_percentiles,
)
from scoring.difficulty.summary import build_summary, plot_pass_rates

__all__ = [
    "BIN_EDGES", "BIN_NAMES", "OUTPUT_FORMATS", "PER_SAMPLE_COLUMNS", "PLOT_NAME", "PROMPT_COLUMNS",
    "SET_ASIDE_BUCKET", "SET_ASIDE_COLUMNS", "STAT_COLUMNS", "STRATEGIES", "SUMMARY_NAME",
    "UNSCOREABLE_STATUSES", "BandStrategy", "BinsStrategy", "FilterConfig", "FilterResult",
    "KOfNStrategy", "NonzeroVarianceStrategy", "PassRule", "PercentileStrategy", "PromptStats",
    "Strategy", "assign_buckets", "build_summary", "check_output_dir", "make_strategy",
    "parse_percentiles", "pass_rates", "plot_pass_rates", "prompt_stats", "run_filter",
    "wilson_interval",
]
