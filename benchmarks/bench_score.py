"""Benchmark: `score`'s scorer against the naive way, on a synthetic math rollout set.

Three ratios, each against a reference measured in the same run:
  1. cheap custom function: a verl-style string-compare math reward (last \\boxed, strip, compare)
     through the scorer (workers, per-item timeouts) against a plain in-process loop calling it,
     on 20,000 rows, medians of 3 alternating runs of each (target: within 2x);
  2. Math-Verify: the scorer (median of 3 runs, each with an empty cache) against the naive loop
     below (one run of several seconds) on repeated answers (target: >= 20x);
  3. end to end, the cheap custom function as a whole command: `score FILE.parquet --reward-fn
     cheap_reward.py --no-cache` (process start, imports, reading, judging, writing the scored
     file and its results JSON) against a plain script run the same way (`python plain.py
     FILE.parquet`: imports pandas, reads the same parquet, loops the function over the rows),
     on 20,000 rows, medians of 3 alternating runs (target: <= 2x).

The naive way (as the seed scripts do it): `for _, row in df.iterrows()` calling a compute_score
that runs Math-Verify on the whole response, row by row, in one process. The scorer's workers read
row ranges, extract answers, dedupe (reward fn, answer, ground truth) and judge the distinct items.
Verdicts must be identical; the script exits 1 if any differ.

    python3 benchmarks/bench_score.py            # 300 prompts x 16 samples (+ 20,000 cheap rows)
    python3 benchmarks/bench_score.py --full     # 2,000 prompts x 16 samples
    python3 benchmarks/bench_score.py --end-to-end-only   # ratio 3 alone (a few seconds)
    python3 benchmarks/bench_score.py --reasoning360 /path/to/Reasoning360 [--guru-only]
    python3 benchmarks/bench_score.py --memory 1000000 --row-kb 8   # peak memory of `score`

With `--memory ROWS`, peak memory: a parquet of ROWS rows whose responses are --row-kb KB each
(row groups of 65,536 rows) is scored by the `score` command (cheap custom reward, no cache) while
the resident memory of its whole process tree (the command, its workers and the reaper) is
sampled every 50 ms (PSS summed: pages the forked workers share with the command count once); the reference, measured the same way in the same run, is a plain script
reading the same parquet with pandas and looping the reward over it. Printed: both peaks, the
response text they hold, and the ratio (target for `score`: <= 1 GB on 1M rows x 8 KB, a batch
rather than the file).

With `--reasoning360` (a checkout of LLM360/Reasoning360), the GURU domains too: per domain, the
rows of tests/guru_reference/ repeated to --guru-rows rows in one jsonl file, scored by `score
--reward-fn auto` (reading the file and writing the scored one) against a plain in-process loop
that reads the same file and calls Reasoning360's `default_compute_score` on each row. Cheap
domains target <= 1.5x the loop's time; the expensive ones (math, table: sympy; cruxeval, code:
programs run in our sandbox against the reference's plain subprocesses) must be faster than the
loop (workers, and each distinct answer judged once). Code and cruxeval use at most 200 rows.
Verdicts must be equal (the script exits 1 if not). Nothing of Reasoning360 is in this project:
the checkout is the argument.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from math_verify import parse, verify

from scoring.scorer import ScoreConfig, Scorer, score_files
from scoring.workers import default_workers

FILLER = [
    "Let us set up the problem carefully and name the unknown quantity $n$.",
    "Expanding the product gives a quadratic in $t$, which we can factor.",
    "By symmetry the two cases contribute equally, so we only count one of them.",
    "Substituting back into the original condition confirms the constraint holds.",
    "We now simplify the expression term by term, collecting like powers of $x$.",
    "Note that the denominator never vanishes on the interval we care about.",
]


def gold_and_forms(rng: random.Random) -> tuple[str, list[str], list[str]]:
    """A gold answer, equivalent ways to write it, and wrong answers a model might give."""
    # Roughly MATH's mix: mostly integers, then fractions, radicals, and some needing a CAS.
    kind = rng.choices(range(5), weights=[55, 15, 12, 8, 10])[0]
    if kind == 0:
        n = rng.randint(2, 999)
        return str(n), [str(n), f"{n}.0"], [str(n + d) for d in (1, -1, 2 * n, 10)]
    if kind == 1:
        a, b = rng.randint(1, 20), rng.randint(21, 40)
        return (
            f"\\frac{{{a}}}{{{b}}}",
            [f"\\frac{{{a}}}{{{b}}}", f"\\dfrac{{{a}}}{{{b}}}", f"{a}/{b}"],
            [f"\\frac{{{b}}}{{{a}}}", f"\\frac{{{a + 1}}}{{{b}}}", f"\\frac{{{a}}}{{{b + 2}}}"],
        )
    if kind == 2:
        a, b = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7])
        return (
            f"{a}\\sqrt{{{b}}}",
            [f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}"],
            [f"{a}\\sqrt{{{b + 1}}}", f"{a + 1}\\sqrt{{{b}}}", str(a * b)],
        )
    if kind == 3:
        n = rng.randint(1, 99)
        return f"-{n}", [f"-{n}"], [str(n), f"-{n + 1}", f"-{2 * n}"]
    a, b = rng.randint(1, 24), rng.choice([2, 3, 4, 5, 6, 8])
    return (
        f"\\frac{{{a}\\pi}}{{{b}}}",
        [f"\\frac{{{a}\\pi}}{{{b}}}", f"\\frac{{{a}}}{{{b}}}\\pi"],
        [f"\\frac{{{a + 1}\\pi}}{{{b}}}", f"{a}\\pi", f"\\frac{{\\pi}}{{{b}}}"],
    )


def synthetic_rollouts(prompts: int, samples: int, seed: int = 0) -> pd.DataFrame:
    """Long rollout rows with realistic repetition: a few answers recur across a prompt's samples."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for p in range(prompts):
        gold, right, wrong = gold_and_forms(rng)
        skill = rng.random()
        weights = [4, 2, 1, 1][: len(wrong)]
        for s in range(samples):
            body = " ".join(rng.choice(FILLER) for _ in range(rng.randint(20, 40)))
            roll = rng.random()
            if roll < 0.05:
                response = body + " So the answer is"  # cut off before the answer
            else:
                answer = rng.choice(right) if roll < 0.05 + skill * 0.95 else rng.choices(wrong, weights)[0]
                response = f"{body}\nTherefore the final answer is $\\boxed{{{answer}}}$."
            rows.append(
                {
                    "prompt": f"Problem {p}: compute the value.",
                    "response": response,
                    "sample_idx": s,
                    "data_idx": p,
                    "prompt_id": f"p{p:05d}",
                    "data_source": "math__synthetic",
                    "reward_model": {"style": "rule", "ground_truth": gold},
                    "error": None,
                }
            )
    return pd.DataFrame(rows)


def naive_compute_score(solution_str: str, ground_truth: str) -> float:
    """The seed scripts' reward: Math-Verify over the whole response, gold first."""
    gold = parse("\\boxed{" + ground_truth + "}")
    pred = parse(solution_str)
    return 1.0 if verify(gold, pred) else 0.0


def run_naive(frame: pd.DataFrame) -> list[float]:
    scores = []
    for _, row in frame.iterrows():
        scores.append(naive_compute_score(row["response"], row["reward_model"]["ground_truth"]))
    return scores


def run_scorer(frame: pd.DataFrame, workers: int, cache_dir: Path | None) -> tuple[list[float], Any]:
    with Scorer(ScoreConfig(reward_fn="math", workers=workers, cache_dir=cache_dir)) as scorer:
        scored, stats = scorer.score(frame)
    return scored["score"].tolist(), stats


CHEAP_REWARD = r'''
def last_boxed_only_string(string):
    idx = string.rfind("\\boxed")
    if idx < 0:
        return None
    depth = 0
    for i in range(idx, len(string)):
        if string[i] == "{":
            depth += 1
        elif string[i] == "}":
            depth -= 1
            if depth == 0:
                return string[idx:i + 1]
    return None


def strip_string(text):
    return text.replace(" ", "").replace("\\!", "").replace("$", "").replace("\\dfrac", "\\frac")


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    boxed = last_boxed_only_string(solution_str)
    if boxed is None:
        return 0.0
    return float(strip_string(boxed[len("\\boxed{"):-1]) == strip_string(ground_truth))
'''
CHEAP_ROWS = 20_000


# Runs of the scorer with an empty cache (a fraction of a second each): the median is compared.
COLD_REPEATS = 3
# The cheap comparison takes a fraction of a second: each side runs this many times, alternating,
# and the medians are compared (one noisy run on a shared machine does not decide the ratio).
CHEAP_REPEATS = 3


def cheap_function_ratio(workers: int) -> tuple[list[float], list[float], bool, float, float]:
    """(plain loop seconds, scorer seconds: one per repeat; same verdicts; loop CPU seconds, the
    scorer's main-process CPU seconds: medians) for the cheap custom reward. The first scorer run
    also loads the reward module, as `score` does."""
    frame = synthetic_rollouts(CHEAP_ROWS // 16, 16, seed=1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cheap_reward.py"
        path.write_text(CHEAP_REWARD)
        namespace: dict[str, Any] = {}
        exec(compile(CHEAP_REWARD, str(path), "exec"), namespace)
        function = namespace["compute_score"]
        golds = [r["ground_truth"] for r in frame["reward_model"]]

        def plain_loop() -> list[float]:
            return [
                function(data_source=d, solution_str=s, ground_truth=g, extra_info={})
                for d, s, g in zip(frame["data_source"], frame["response"], golds, strict=True)
            ]

        def through_scorer() -> list[float]:
            config = ScoreConfig(reward_fn=f"{path}:compute_score", workers=workers, cache_dir=None)
            with Scorer(config) as scorer:
                scored, _ = scorer.score(frame)
            return [float(x) for x in scored["score"]]

        loop_s, scorer_s, loop_cpu, scorer_cpu, same = [], [], [], [], True
        for _ in range(CHEAP_REPEATS):
            cpu = time.process_time()
            loop, seconds = timed(plain_loop)
            loop_s.append(seconds)
            loop_cpu.append(time.process_time() - cpu)
            cpu = time.process_time()
            scored, seconds = timed(through_scorer)
            scorer_s.append(seconds)
            scorer_cpu.append(time.process_time() - cpu)
            same = same and loop == scored
    return loop_s, scorer_s, same, statistics.median(loop_cpu), statistics.median(scorer_cpu)


PLAIN_SCRIPT = r'''
import importlib.util, sys
import pandas as pd

spec = importlib.util.spec_from_file_location("cheap_reward", sys.argv[2])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
frame = pd.read_parquet(sys.argv[1])
scores = [
    module.compute_score(data_source=d, solution_str=s, ground_truth=r["ground_truth"], extra_info={})
    for d, s, r in zip(frame["data_source"], frame["response"], frame["reward_model"])
]
print(sum(scores))
'''


def children_cpu() -> float:
    """CPU seconds of every waited-for child process so far (with their own children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def end_to_end_ratio(workers: int) -> tuple[list[float], list[float], bool, float, float]:
    """(plain script seconds, `score` seconds: one per repeat; same verdicts; CPU seconds of the
    plain script, of the score command with its workers: medians) for the cheap custom reward on
    CHEAP_ROWS rows, each a fresh process from start to exit."""
    frame = synthetic_rollouts(CHEAP_ROWS // 16, 16, seed=2)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        reward, plain, data = root / "cheap_reward.py", root / "plain.py", root / "rows.parquet"
        reward.write_text(CHEAP_REWARD)
        plain.write_text(PLAIN_SCRIPT)
        frame.to_parquet(data)
        out = root / "rows.scored.parquet"
        score_command = [sys.executable, "-c", "from scoring.score_cli import main; main()",
                         str(data), "--reward-fn", str(reward), "--no-cache", "--overwrite",
                         "--workers", str(workers), "-o", str(out)]
        plain_command = [sys.executable, str(plain), str(data), str(reward)]
        plain_s, score_s, plain_cpu, score_cpu = [], [], [], []
        total = ""
        for _ in range(CHEAP_REPEATS):
            cpu = children_cpu()
            done, seconds = timed(subprocess.run, plain_command, capture_output=True, text=True, check=True)
            plain_s.append(seconds)
            plain_cpu.append(children_cpu() - cpu)
            total = done.stdout.strip()
            cpu = children_cpu()
            _, seconds = timed(subprocess.run, score_command, capture_output=True, text=True, check=True)
            score_s.append(seconds)
            score_cpu.append(children_cpu() - cpu)
        same = float(total) == float(pd.read_parquet(out)["score"].sum())
    return plain_s, score_s, same, statistics.median(plain_cpu), statistics.median(score_cpu)


def report_end_to_end(workers: int) -> bool:
    plain_runs, score_runs, same, plain_cpu, score_cpu = end_to_end_ratio(workers)
    plain_s, score_s = statistics.median(plain_runs), statistics.median(score_runs)
    print(f"\nend to end, cheap custom function, {CHEAP_ROWS} rows, median of {CHEAP_REPEATS} "
          f"alternating runs: plain script {plain_s:.3f} s, score command {score_s:.3f} s, "
          f"same verdicts: {same}")
    print("  runs (plain / score): " + ", ".join(
        f"{a:.3f} / {b:.3f}" for a, b in zip(plain_runs, score_runs, strict=True)))
    # On a loaded machine the wall ratio mostly measures the scheduler; CPU time counts the work.
    print(f"cpu: plain script {plain_cpu:.2f} s, score command with its workers {score_cpu:.2f} s "
          f"({score_cpu / plain_cpu:.2f}x)")
    print(f"RATIO end to end, score command / plain script: {score_s / plain_s:.2f}x (target <= 2x)")
    return same


def timed(func: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = func(*args, **kwargs)
    return value, time.perf_counter() - started


# ---------------------------------------------------------------- peak memory


def memory_rows(rows: int, row_kb: int, path: Path) -> int:
    """Write ROWS rows with responses of row_kb KB (distinct text, a boxed answer at the end)
    in row groups of 65,536 rows, one group at a time; returns the response bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(4)
    filler = " ".join(FILLER)
    total = 0
    writer = None
    for start in range(0, rows, 65536):
        count = min(65536, rows - start)
        responses = []
        for i in range(start, start + count):
            body = (f"{i} " + filler * (row_kb * 1024 // len(filler) + 1))[: row_kb * 1024 - 30]
            responses.append(f"{body} $\\boxed{{{rng.randint(1, 9)}}}$")
        total += sum(map(len, responses))
        table = pa.table({
            "prompt": [f"Problem {i // 16}" for i in range(start, start + count)],
            "response": responses,
            "prompt_id": [f"p{i // 16:07d}" for i in range(start, start + count)],
            "sample_idx": [i % 16 for i in range(start, start + count)],
            "data_source": ["math__synthetic"] * count,
            "reward_model": [{"style": "rule", "ground_truth": "5"}] * count,
        })
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()
    return total


def peak_tree_rss(command: list[str]) -> tuple[int, float]:
    """Run `command`; the peak summed PSS (bytes: resident memory, a page shared by n processes
    counted 1/n in each) of it and every descendant, and its seconds."""
    import psutil

    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        total = 0
        with contextlib.suppress(psutil.Error):
            for each in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += each.memory_full_info().pss  # forked pages shared: counted once
        peak = max(peak, total)
        time.sleep(0.05)
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {stderr.decode()[-2000:]}")
    return peak, time.perf_counter() - started


def report_memory(rows: int, row_kb: int, workers: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        reward, plain, data = root / "cheap_reward.py", root / "plain.py", root / "rows.parquet"
        reward.write_text(CHEAP_REWARD)
        plain.write_text(PLAIN_SCRIPT)
        text = memory_rows(rows, row_kb, data)
        out = root / "rows.scored.parquet"
        score_peak, score_s = peak_tree_rss(
            [sys.executable, "-c", "from scoring.score_cli import main; main()", str(data),
             "--reward-fn", str(reward), "--no-cache", "--workers", str(workers), "-o", str(out)])
        out.unlink()
        plain_peak, plain_s = peak_tree_rss([sys.executable, str(plain), str(data), str(reward)])
    gib = 1 << 30
    print(f"peak memory, {rows} rows x {row_kb} KB ({text / gib:.2f} GiB of responses), "
          f"workers {workers}:")
    print(f"  plain script (pandas reads the file, loops): {plain_peak / gib:6.2f} GiB, "
          f"{plain_s:.1f} s")
    print(f"  score command, whole process tree:           {score_peak / gib:6.2f} GiB, "
          f"{score_s:.1f} s")
    print(f"RATIO peak memory, score / plain script: {score_peak / plain_peak:.2f}x; "
          f"score / response text: {score_peak / text:.2f}x (target: <= 1 GiB at 1M x 8 KB)")


# ---------------------------------------------------------------- GURU domains

GURU_SETS = Path(__file__).resolve().parents[1] / "tests" / "guru_reference"
# Domain -> its file of rows in GURU_SETS (the cheap ones: string and grid comparisons).
GURU_DOMAINS = {
    "arcagi": "arcagi", "zebra_puzzle": "zebra_puzzle", "ordering_puzzle": "ordering_puzzle",
    "graph": "graph", "livebench": "livebench", "ifeval": "ifeval", "ifbench": "ifbench",
    "gpqa": "gpqa", "codeio": "codeio",
    # The expensive ones (sympy, model code in a sandbox): `score` must beat the loop.
    "math": "math", "table": "table", "cruxeval": "cruxeval", "code": "code",
}
EXPENSIVE = {"math", "table", "cruxeval", "code"}
# Domains whose rows run programs: fewer rows (each reference call starts a process).
ROWS_CAP = {"cruxeval": 200, "code": 200}


def load_reasoning360(root: Path) -> Any:
    """Reasoning360's `default_compute_score`, imported from a checkout without verl's package
    __init__ (it needs torch and more); only `verl.utils.import_utils` is stubbed."""
    import types

    import nltk

    from scoring.rewards.ifeval_data import instruction_registries

    instruction_registries()  # our NLTK data on nltk's path and langdetect seeded, for both sides
    nltk.download = lambda *args, **kwargs: True  # type: ignore[assignment]  # no network here
    for name, folder in (("verl", "verl"), ("verl.utils", "verl/utils")):
        package = types.ModuleType(name)
        package.__path__ = [str(root / folder)]
        sys.modules[name] = package
    stub = types.ModuleType("verl.utils.import_utils")
    stub.deprecated = lambda *args, **kwargs: (lambda function: function)  # type: ignore[attr-defined]
    sys.modules["verl.utils.import_utils"] = stub
    from verl.utils.reward_score import default_compute_score  # type: ignore[import-not-found]

    return default_compute_score


def guru_file(domain: str, rows: int, folder: Path) -> Path:
    """The domain's reference rows (those the reference scores) repeated to `rows` rollouts."""
    lines = (GURU_SETS / f"{GURU_DOMAINS[domain]}.jsonl").read_text().splitlines()
    cases = [json.loads(line) for line in lines]
    cases = [c for c in cases if "score" in c["reference"]]
    # A program that never ends costs both sides their whole timeout (30 s for coder1): timed
    # once in the tests, left out here.
    cases = [c for c in cases if "while True" not in c["response"]]
    path = folder / f"{domain}.jsonl"
    with path.open("w") as out:
        for i in range(rows):
            case = cases[i % len(cases)]
            out.write(json.dumps({
                "prompt": f"p{i // 8}", "prompt_id": f"id{i // 8}", "data_idx": i // 8,
                "sample_idx": i % 8,
                "response": case["response"], "data_source": case["data_source"],
                "reward_model": {"style": "rule", "ground_truth": case["ground_truth"]},
                "extra_info": case["extra_info"],
            }) + "\n")
    return path


def reference_loop(compute_score: Any, path: Path) -> list[float]:
    """The plain way: read the file, call the reference on each row, in this process."""
    import contextlib
    import io

    frame = pd.read_json(path, lines=True, dtype=False)
    scores = []
    with contextlib.redirect_stdout(io.StringIO()):  # some reference rewards print per row
        for source, response, model, extra in zip(
            frame["data_source"], frame["response"], frame["reward_model"], frame["extra_info"],
            strict=True,
        ):
            result = compute_score(source, response, model["ground_truth"], extra)
            scores.append(float(result["score"] if isinstance(result, dict) else result))
    return scores


def through_score(path: Path, workers: int) -> list[float]:
    for old in path.parent.glob(f"{path.stem}.scored*"):
        old.unlink()
    score_files([path], ScoreConfig(workers=workers, cache_dir=None))
    (scored,) = path.parent.glob(f"{path.stem}.scored.*[!n]")
    frame = pd.read_parquet(scored) if scored.suffix == ".parquet" else pd.read_json(scored, lines=True)
    return [float(x) for x in frame["score"]]


def _imports(*names: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in names)


def guru_ratios(root: Path, rows: int, workers: int, only: list[str] | None = None) -> bool:
    """Per GURU domain: seconds of the reference loop and of `score`, medians of 3 alternating
    runs; True when every verdict agrees."""
    compute_score = load_reasoning360(root)
    all_same = True
    print(f"\nGURU domains, {rows} rows each, workers: {workers} (median of {CHEAP_REPEATS} runs)")
    with tempfile.TemporaryDirectory() as folder:
        for domain in only or list(GURU_DOMAINS):
            if domain == "code" and not _imports("requests", "pydantic"):
                print("SKIP code: Reasoning360's coder1 imports requests and pydantic "
                      "(pip install requests pydantic to time it)")
                continue
            path = guru_file(domain, min(rows, ROWS_CAP.get(domain, rows)), Path(folder))
            loop_runs, score_runs, same = [], [], True
            for _ in range(CHEAP_REPEATS):
                theirs, seconds = timed(reference_loop, compute_score, path)
                loop_runs.append(seconds)
                ours, seconds = timed(through_score, path, workers)
                score_runs.append(seconds)
                same = same and theirs == ours
            loop_s, score_s = statistics.median(loop_runs), statistics.median(score_runs)
            all_same = all_same and same
            target = "< 1x" if domain in EXPENSIVE else "<= 1.5x"
            print(f"RATIO {domain:16s} score / reference loop: {score_s / loop_s:5.2f}x "
                  f"(loop {loop_s:.3f} s, score {score_s:.3f} s; target {target}), "
                  f"same verdicts: {same}")
    return all_same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reasoning360", type=Path, help="a checkout of LLM360/Reasoning360")
    parser.add_argument("--guru-rows", type=int, default=16000,
                        help="rows per GURU domain (1,000 prompts x 16 samples)")
    parser.add_argument("--guru-only", action="store_true", help="only the GURU domains")
    parser.add_argument("--guru-domains", type=lambda text: text.split(","),
                        help=f"comma-separated subset of {','.join(GURU_DOMAINS)}")
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--full", action="store_true", help="2,000 prompts x 16 samples")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--end-to-end-only", action="store_true", help="only ratio 3")
    parser.add_argument("--memory", type=int, metavar="ROWS", help="peak memory on ROWS rows")
    parser.add_argument("--row-kb", type=int, default=8, help="response size for --memory")
    args = parser.parse_args()
    if args.memory:
        report_memory(args.memory, args.row_kb, args.workers)
        return 0
    if args.end_to_end_only:
        return 0 if report_end_to_end(args.workers) else 1
    guru_same = True
    if args.reasoning360 is not None:
        guru_same = guru_ratios(args.reasoning360, args.guru_rows, args.workers, args.guru_domains)
        if args.guru_only:
            return 0 if guru_same else 1
    prompts = 2000 if args.full else args.prompts
    frame = synthetic_rollouts(prompts, args.samples)
    print(f"rows: {len(frame)} ({prompts} prompts x {args.samples} samples), workers: {args.workers}")

    naive, naive_s = timed(run_naive, frame)
    print(f"naive iterrows + math-verify: {naive_s:8.2f} s  ({len(frame) / naive_s:8.0f} rows/s)")
    cold_runs = []
    for _ in range(COLD_REPEATS):  # the warm run reads the last cold run's cache
        with tempfile.TemporaryDirectory() as cache:
            (cold, stats), seconds = timed(run_scorer, frame, args.workers, Path(cache))
            cold_runs.append(seconds)
            (warm, _), warm_s = timed(run_scorer, frame, args.workers, Path(cache))
    cold_s = statistics.median(cold_runs)
    (plain, _), plain_s = timed(run_scorer, frame, args.workers, None)
    print(f"score, empty cache:           {cold_s:8.2f} s  ({len(frame) / cold_s:8.0f} rows/s)"
          f"  {stats.distinct_items} distinct answers; median of "
          + ", ".join(f"{r:.2f}" for r in cold_runs))
    print(f"score, no cache:              {plain_s:8.2f} s  ({len(frame) / plain_s:8.0f} rows/s)")
    print(f"score, warm cache:            {warm_s:8.2f} s  ({len(frame) / warm_s:8.0f} rows/s)")
    print(f"speed-up vs naive: {naive_s / cold_s:.1f}x (empty cache), "
          f"{naive_s / warm_s:.1f}x (warm cache)")
    print(f"mean pass rate: {sum(naive) / len(naive):.3f}; distinct (answer, gold) items per "
          f"prompt: {stats.distinct_items / prompts:.2f} (every response text is distinct)")
    mismatches = [i for i, (a, b, c, d) in enumerate(zip(naive, cold, warm, plain, strict=True))
                  if not a == b == c == d]
    print(f"verdict mismatches: {len(mismatches)}")
    for i in mismatches[:5]:
        row = frame.iloc[i]
        print(f"  row {i}: naive={naive[i]} score={cold[i]} gold={row['reward_model']['ground_truth']!r} "
              f"tail={row['response'][-60:]!r}")

    loop_runs, scorer_runs, same, loop_cpu, scorer_cpu = cheap_function_ratio(args.workers)
    loop_s, scorer_s = statistics.median(loop_runs), statistics.median(scorer_runs)
    print(f"\ncheap custom function, {CHEAP_ROWS} rows, median of {CHEAP_REPEATS} alternating runs: "
          f"plain loop {loop_s:.3f} s, score {scorer_s:.3f} s, same verdicts: {same}")
    print("  runs (loop / score): " + ", ".join(
        f"{a:.3f} / {b:.3f}" for a, b in zip(loop_runs, scorer_runs, strict=True)))
    # On a loaded machine the wall ratio mostly measures the scheduler; the main process's CPU
    # time is what the scorer's own bookkeeping costs.
    print(f"cpu: plain loop {loop_cpu:.2f} s, score's main process {scorer_cpu:.2f} s "
          f"({scorer_cpu / loop_cpu:.2f}x)")
    print(f"RATIO cheap custom fn, score / plain loop: {scorer_s / loop_s:.2f}x (target <= 2x)")
    print(f"RATIO Math-Verify, naive loop / score (empty cache): {naive_s / cold_s:.1f}x "
          f"(target >= 20x)")
    end_to_end_same = report_end_to_end(args.workers)
    return 1 if mismatches or not same or not guru_same or not end_to_end_same else 0


if __name__ == "__main__":
    sys.exit(main())
