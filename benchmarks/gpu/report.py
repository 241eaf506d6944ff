"""Markdown table of results.jsonl lines: rollouts tokens/s against the offline engine's.

    python3 benchmarks/gpu/report.py R.jsonl [R2.jsonl ...]

A rollouts run is compared with the offline runs of the same model and engine args: with no seed,
and with a seed per request (what rollouts sends unless the request body sets "seed": null).
"""

from __future__ import annotations

import json
import sys
from typing import Any


def key(result: dict[str, Any]) -> str:
    return json.dumps([result["model"], result["engine_args"]], sort_keys=True)


def main() -> None:
    results = []
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as handle:
            results += [json.loads(line) for line in handle if line.strip()]
    offline = {(key(r), r["seeds"]): r for r in results if r["kind"] == "offline"}
    print("| model | max_num_seqs | how | seeds | tok/s | vs offline, no seed | "
          "vs offline, same seeds | rows ok | mean running | CPU: client / API server / engine |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if r["kind"] not in ("offline", "rollouts"):
            continue
        model = r["model"].rstrip("/").rsplit("/", 1)[-1]
        mns = r["engine_args"]["max_num_seqs"]
        rate = r["tokens_per_s"] or 0.0
        if r["kind"] == "offline":
            how, ok, running, cpu = "offline LLM.generate", "-", "-", "-"
        else:
            flags = " ".join(r.get("vllm_flags") or [])
            how = f"rollouts, {r['max_concurrent']} in flight, n={r['n']}/request {flags}".strip()
            ok = "yes" if r["check"].get("ok") else f"NO {r['check']}"
            running = r["engine"].get("mean_running", "-")
            util = r["cpu_utilization"]
            cpu = (f"{util.get('client', 0):.2f} / {util.get('api_server', 0):.2f} / "
                   f"{util.get('engine_core', 0):.2f}")
        ratios = []
        for seeds in ("none", r["seeds"]):
            ref = offline.get((key(r), seeds))
            ratios.append(f"{rate / ref['tokens_per_s']:.3f}" if ref else "-")
        print(f"| {model} | {mns} | {how} | {r['seeds']} | {rate:,.0f} | {ratios[0]} | "
              f"{ratios[1]} | {ok} | {running} | {cpu} |")
    print_against_offline(results)
    print_targets(results)
    for r in results:
        if r["kind"] == "kill_restart":
            print(f"\nkill/restart: ok={r['ok']} killed={r['killed']} restarts={r['restarts_logged']} "
                  f"check={r['check']} retries={r['retries']} wall={r['wall_s']}s")


def print_against_offline(results: list[dict[str, Any]]) -> None:
    """Per workload label: every run's tokens/s against the offline engine at max_num_seqs 512
    (its best) and at its default, as measured in these results."""
    labels = sorted({r.get("label") for r in results if r.get("label")})
    print("\n| workload | how | tok/s | vs offline @512 | vs offline default | mean running |")
    print("|---|---|---|---|---|---|")
    for label in labels:
        mine = [r for r in results if r.get("label") == label and r.get("tokens_per_s")]
        offline = {r["engine_args"]["max_num_seqs"]: r["tokens_per_s"]
                   for r in mine if r["kind"] == "offline"}
        for r in mine:
            if r["kind"] == "offline":
                seqs = r["engine_args"]["max_num_seqs"] or "default"
                how = f"offline LLM.generate, max_num_seqs {seqs}"
                running = "-"
            elif r["kind"] == "rollouts" and r["check"].get("ok"):
                how = (f"rollouts, {r.get('replicas', 1)} server(s), "
                       f"{r['max_concurrent']} in flight {' '.join(r.get('vllm_flags') or [])}")
                running = r["engine"].get("mean_running", "-")
            else:
                continue
            rate = r["tokens_per_s"]
            ratios = [f"{rate / offline[k]:.3f}" if k in offline else "-" for k in (512, None)]
            print(f"| {label} | {how.strip()} | {rate:,.0f} | {ratios[0]} | {ratios[1]} | "
                  f"{running} |")


def print_targets(results: list[dict[str, Any]]) -> None:
    """Per workload label (benchmarks/gpu/workload.py): rollouts with its defaults against the
    best fixed setting (target >= 0.95) and the offline engine (target >= 1.0)."""
    labels = sorted({r.get("label") for r in results if r.get("label")})
    for label in labels:
        mine = [r for r in results if r.get("label") == label and r["tokens_per_s"]]
        offline = [r for r in mine if r["kind"] == "offline"]
        served = [r for r in mine if r["kind"] == "rollouts" and r["check"].get("ok")]
        auto = [r for r in served if r["max_concurrent"] in ("default", "auto")]
        fixed = [r for r in served if isinstance(r["max_concurrent"], int)]
        if not auto:
            continue
        rate = auto[-1]["tokens_per_s"]
        line = f"{label}: defaults {rate:,.0f} tok/s"
        if fixed:
            best = max(fixed, key=lambda r: r["tokens_per_s"])
            line += (f"; best fixed ({best['max_concurrent']}) {best['tokens_per_s']:,.0f}, "
                     f"ratio {rate / best['tokens_per_s']:.3f}")
        if offline:
            line += (f"; offline {offline[-1]['tokens_per_s']:,.0f}, "
                     f"ratio {rate / offline[-1]['tokens_per_s']:.3f}")
        history = (auto[-1].get("concurrency") or {}).get("servers") or []
        if history:
            line += f"; limit over time (s, sequences) {history[0]['history']}"
        print(line)


if __name__ == "__main__":
    main()
