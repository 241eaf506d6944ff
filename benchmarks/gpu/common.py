"""Helpers shared by the GPU benchmark scripts: process trees, vLLM metrics, output checks."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

METRIC_LINE = re.compile(r"^(vllm:[a-z_]+)(?:\{[^}]*\})? ([0-9.eE+-]+)$")
WATCHED_METRICS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:generation_tokens_total",
    "vllm:prompt_tokens_total",
)


def scrape_metrics(root_url: str, timeout: float = 5.0) -> dict[str, float]:
    """The watched vLLM Prometheus metrics, summed over label sets."""
    with urllib.request.urlopen(f"{root_url}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = METRIC_LINE.match(line)
        if match and match.group(1) in WATCHED_METRICS:
            values[match.group(1)] = values.get(match.group(1), 0.0) + float(match.group(2))
    return values


def process_label(proc: psutil.Process) -> str:
    try:
        cmdline = " ".join(proc.cmdline())
        name = proc.name()
    except psutil.Error:
        return "gone"
    if "EngineCore" in cmdline or "EngineCor" in name:
        return "engine_core"
    if "ApiServer" in cmdline or "vllm" in cmdline or "vllm" in name:
        return "api_server"
    return name


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def engine_core_pids(pid: int) -> list[int]:
    return [p.pid for p in tree(pid) if process_label(p) == "engine_core"]


def cpu_seconds(pids: list[int]) -> dict[str, float]:
    """CPU seconds (user + system) so far of each process in the pids' trees, summed by label."""
    totals: dict[str, float] = {}
    for proc in [p for pid in pids for p in tree(pid)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        label = process_label(proc)
        totals[label] = totals.get(label, 0.0) + times.user + times.system
    return totals


class Monitor(threading.Thread):
    """Samples vLLM servers' metrics (summed over replicas) every `interval` seconds until
    stopped."""

    def __init__(self, root_urls: list[str], interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.root_urls = root_urls
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(OSError):
                total: dict[str, float] = {}
                for url in self.root_urls:
                    for name, value in scrape_metrics(url).items():
                        total[name] = total.get(name, 0.0) + value
                self.samples.append((time.monotonic(), total))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def summary(self, max_num_seqs: int | None) -> dict[str, Any]:
        """Batch occupancy over the samples taken while sequences were running or waiting."""
        busy = [
            (t, s) for t, s in self.samples
            if s.get("vllm:num_requests_running", 0) + s.get("vllm:num_requests_waiting", 0) > 0
        ]
        if len(busy) < 2:
            return {"samples": len(busy)}
        running = [s.get("vllm:num_requests_running", 0.0) for _, s in busy]
        waiting = [s.get("vllm:num_requests_waiting", 0.0) for _, s in busy]
        (t0, first), (t1, last) = busy[0], busy[-1]
        generated = last.get("vllm:generation_tokens_total", 0.0) - first.get(
            "vllm:generation_tokens_total", 0.0
        )
        return {
            "samples": len(busy),
            "mean_running": round(sum(running) / len(running), 1),
            "full_batch_fraction": round(
                sum(r >= max_num_seqs for r in running) / len(running), 3
            ) if max_num_seqs else None,
            "mean_waiting": round(sum(waiting) / len(waiting), 1),
            "busy_span_s": round(t1 - t0, 1),
            "engine_tokens_per_s_busy": round(generated / max(t1 - t0, 1e-9), 1),
        }


def check_output(path: Path, expected_rows: int, max_tokens: int) -> dict[str, Any]:
    """Rows, unique (prompt_id, sample_idx) keys, error rows and token counts of an output."""
    frame = pd.read_parquet(path)
    keys = frame[["prompt_id", "sample_idx"]].drop_duplicates()
    errors = int(frame["error"].notna().sum()) if "error" in frame else 0
    # vLLM reports token counts per request, not per choice: with n > 1 the rows carry none.
    column = frame.get("completion_tokens", None)
    tokens = column.astype(int) if column is not None and column.notna().all() else None
    result = {
        "rows": len(frame),
        # Requests sent with a seed (rollouts' n-per-request mode sends none since a855749).
        "seeded_rows": int(frame["seed"].notna().sum()) if "seed" in frame else 0,
        "unique_keys": len(keys),
        "error_rows": errors,
        "completion_tokens": int(tokens.sum()) if tokens is not None else None,
        "short_samples": int((tokens < max_tokens).sum()) if tokens is not None else None,
    }
    result["ok"] = (
        result["rows"] == expected_rows
        and result["unique_keys"] == expected_rows
        and errors == 0
        and result["short_samples"] in (0, None)
    )
    return result


def append_result(path: Path, result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(result) + "\n")


def count_prompts(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())
