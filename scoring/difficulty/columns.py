"""Names shared by the filter's modules: columns, buckets, files."""

from __future__ import annotations

from typing import TypeAlias

import pandas as pd
import pyarrow as pa

WILSON_Z = 1.959963984540054  # two-sided 95%
UNSCOREABLE_STATUSES = ("timeout", "error", "sandbox_error")
SUMMARY_NAME = "summary.json"
SET_ASIDE_BUCKET = "set_aside"
PLOT_NAME = "pass_rates.png"
OUTPUT_FORMATS = ("parquet", "jsonl")
UNKNOWN_SOURCE = "unknown"

# Columns that describe one sample or the run that produced it, never the prompt.
PER_SAMPLE_COLUMNS = frozenset(
    {
        "response", "sample_idx", "seed", "finish_reason", "prompt_tokens", "completion_tokens",
        "latency_s", "endpoint", "attempts", "error",
        "temperature", "top_p", "max_tokens", "model", "config_hash",
        "score", "acc", "pred", "score_status", "reward_fn", "reward_fn_version",
        "pred_source", "answer_class", "score_error",
    }
)
# Columns known to be per prompt; any other column is kept only if it is constant within a prompt.
PROMPT_COLUMNS = frozenset(
    {"prompt", "data_source", "ability", "reward_model", "extra_info", "data_idx", "prompt_id",
     "dataset"}
)
STAT_COLUMNS = ("pass_rate", "n_samples", "n_pass", "pass_rate_ci_low", "pass_rate_ci_high",
                "bucket")
SET_ASIDE_COLUMNS = ("n_unscoreable", "set_aside_reason")

Rows: TypeAlias = pa.Table | pd.DataFrame


# What tells one run's samples from another's: pooled only when the user says so (--pool), or
# bucketed apart (--group-by).
RUN_COLUMNS = ("model", "checkpoint", "temperature")
