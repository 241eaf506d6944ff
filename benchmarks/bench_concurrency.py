"""Benchmark: `--max-concurrent auto` against every fixed setting, on a modelled vLLM engine.

GPU time is scarce, so the rule (rollouts.concurrency.LimitRule) is first judged here: a
step-by-step model of one vLLM engine whose decode step takes

    step(R) = a + b * R            for R running sequences up to the CUDA-graph edge (512),
    step(R) = a + b * R + eager    past it (no CUDA graph for that batch),

with a, b and eager fitted per workload to what the search measured on one H200 with the 0.39B
model, streaming every 16 tokens (benchmarks/gpu/RESULTS.md: tokens/s at 256, 512 and 1,024
sequences). Every running sequence gains a token per step; a request of n samples is admitted
when its n sequences fit under the client's limit and finishes max_tokens steps later; vLLM's
/metrics are read once a (modelled) second. Prefill is folded into the step time. It prints, per
workload, the tokens/s of `auto` and of fixed limits, and the ratio auto / best fixed (the GPU
target is >= 0.95). A model, not a measurement of a GPU: it shows what the rule costs in
transitions (the climb, a step past the edge, drains), which is what the rule decides.

    python3 benchmarks/bench_concurrency.py [--long 16]
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
from collections import deque
from dataclasses import dataclass

from rollouts.concurrency import START_SEQUENCES, LimitRule
from rollouts.vllm_metrics import VllmMetrics

EDGE = 512
MAX_NUM_SEQS = 1024  # vLLM's default on an H100/H200


@dataclass(frozen=True)
class Workload:
    name: str
    prompts: int
    n: int
    max_tokens: int
    # step time (seconds) = a + b * running (+ eager past the edge), fitted to the H200 run
    a: float
    b: float
    eager: float

    def step_s(self, running: int) -> float:
        return self.a + self.b * running + (self.eager if running > EDGE else 0.0)


# Fitted: step(256) and step(512) from the tokens/s measured there give a and b; step(1024) the
# eager cost. n8: 44.8k, 53.4k, 20.5k tok/s; n16: 40.1k, 48.4k, 34.1k; n1: 24.3k, 31.1k, 24.3k.
WORKLOADS = [
    Workload("n1", 2048, 1, 256, a=4.50e-3, b=2.34e-5, eager=13.6e-3),
    Workload("n8", 512, 8, 512, a=1.83e-3, b=1.516e-5, eager=32.7e-3),
    Workload("n16", 256, 16, 512, a=2.18e-3, b=1.64e-5, eager=11.1e-3),
]


def simulate(work: Workload, fixed: int | None) -> tuple[float, list[tuple[int, int]]]:
    """Tokens/s of one run (fixed: a limit in sequences; None: auto) and, for auto, the levels
    the rule measured."""
    rule = LimitRule(max(START_SEQUENCES, work.n), work.n)
    limit = fixed if fixed is not None else rule.limit
    pending = deque(range(work.prompts))
    finishing: list[tuple[int, int]] = []  # (step it ends, sequences)
    waiting: deque[int] = deque()  # admitted by the client, not yet running (server full)
    running = in_flight = generated = step = 0
    now = next_reading = 0.0
    while pending or in_flight:
        while pending and (in_flight == 0 or in_flight + work.n <= limit):
            pending.popleft()
            in_flight += work.n
            waiting.append(work.n)
        while waiting and running + waiting[0] <= MAX_NUM_SEQS:
            running += waiting[0]
            heapq.heappush(finishing, (step + work.max_tokens, waiting.popleft()))
        now += work.step_s(running)
        generated += running
        step += 1
        while finishing and finishing[0][0] <= step:
            _, sequences = heapq.heappop(finishing)
            running -= sequences
            in_flight -= sequences
        if fixed is None and now >= next_reading:
            metrics = VllmMetrics(num_requests_running=running,
                                  num_requests_waiting=sum(waiting), kv_cache_usage_perc=0.5,
                                  num_preemptions_total=0, generation_tokens_total=generated)
            limit = rule.update(metrics, in_flight, now)
            next_reading = now + 1.0
    return generated / now, rule.measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", type=int, default=1, metavar="K",
                        help="K times the prompts: a run long enough for the held level's "
                             "tries past the edge (every 120 readings) to show their cost")
    args = parser.parse_args()
    levels = [256, 384, 448, 512, 576, 768, 1024]
    print("modelled vLLM engine (fitted to one H200, 0.39B model); tokens/s")
    for work in WORKLOADS:
        work = dataclasses.replace(work, prompts=work.prompts * args.long)
        fixed = {level: simulate(work, level)[0] for level in levels}
        auto, measured = simulate(work, None)
        best = max(fixed, key=lambda level: fixed[level])
        print(f"{work.name}: " + ", ".join(f"{lv}: {fixed[lv]:,.0f}" for lv in levels))
        print(f"  auto {auto:,.0f} (measured {measured}); best fixed {best} sequences "
              f"{fixed[best]:,.0f}; RATIO auto / best fixed {auto / fixed[best]:.3f} "
              f"(GPU target >= 0.95)")


if __name__ == "__main__":
    main()
