"""How long the demo's model takes to build and train on CPU, against building it untrained, and
training on one thread (what the demo does) against training on `--threads`.

    python3 benchmarks/bench_tiny_model.py                  # default training steps, 2 threads
    python3 benchmarks/bench_tiny_model.py --steps 400 --threads 4

Prints the wall time of `build_tiny_model` with random weights (the reference: tokenizer training
and saving) and with training, and their ratio; then the training on `--threads` threads against
one thread. What the trained model solves is the demo's to show.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def timed_build(out: Path, steps: int) -> float:
    from rollouts.tiny_model import build_tiny_model

    started = time.monotonic()
    build_tiny_model(out, train_steps=steps)
    return time.monotonic() - started


def main() -> None:
    from rollouts.tiny_model import DEFAULT_TRAIN_STEPS

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=DEFAULT_TRAIN_STEPS)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2: the demo's target)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from rollouts import tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        reference = timed_build(Path(tmp) / "random", 0)
        trained = timed_build(Path(tmp) / "trained", args.steps)  # on TRAIN_THREADS (1)
        tiny_model.TRAIN_THREADS = args.threads
        threaded = timed_build(Path(tmp) / "threaded", args.steps)
    print(f"threads={args.threads} steps={args.steps}")
    print(f"build, random weights: {reference:7.1f} s (reference)")
    print(f"build and train:       {trained:7.1f} s ({trained / reference:.1f}x the reference; training on 1 thread)")
    print(f"  training on {args.threads} threads: {threaded:7.1f} s ({threaded / trained:.2f}x the 1-thread build)")


if __name__ == "__main__":
    main()
