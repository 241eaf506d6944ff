"""vLLM's offline engine (`LLM.generate`) on a prompts jsonl: the throughput reference.

    python3 benchmarks/gpu/offline.py --model DIR --prompts P.jsonl --results R.jsonl \
        [--max-num-seqs 256 --max-num-batched-tokens 16384 --seeds none,per-request]

Engine args match what `rollouts serve` passes to `vllm serve` (seed 0, generation config `vllm`)
plus the ones given here. One engine load, then one timed `generate` over all prompts per seed mode:
  none         one SamplingParams for every prompt, no seed;
  per-request  a seed per prompt, as rollouts sends one with every request (vLLM then samples each
               seeded sequence with its own torch.Generator, one by one).
Generated tokens/s = all output token ids / wall time of that `generate` call. One result line per
mode is appended to --results. `--job LABEL:PROMPTS:N:MAX_TOKENS` (repeatable) runs several
workloads on the one engine load instead (no seed), each its own result line.
"""

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--label", default="")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-num-seqs", type=int, default=256, help="0: the engine's default")
    parser.add_argument("--max-num-batched-tokens", type=int, default=16384,
                        help="0: the engine's default")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default="none,per-request")
    parser.add_argument("--job", action="append", default=[],
                        help="LABEL:PROMPTS:N:MAX_TOKENS, several workloads on one engine load")
    args = parser.parse_args()
    jobs = [job.split(":") for job in args.job] or [
        [args.label, args.prompts, str(args.n), str(args.max_tokens)]]

    from vllm import LLM, SamplingParams, __version__

    engine_args = {
        "max_num_seqs": args.max_num_seqs or None,
        "max_num_batched_tokens": args.max_num_batched_tokens or None,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "max_model_len": args.max_model_len,
        "seed": args.seed,
    }
    started = time.perf_counter()
    # A None (0 on the command line) leaves that argument to the engine's own default.
    given = {k: v for k, v in engine_args.items() if v is not None}
    llm = LLM(model=args.model, generation_config="vllm", **given)
    load_s = time.perf_counter() - started
    for label, prompts_file, n, max_tokens in jobs:
        args.label, args.n, args.max_tokens = label, int(n), int(max_tokens)
        with open(prompts_file, encoding="utf-8") as handle:
            prompts = [json.loads(line)["prompt"] for line in handle if line.strip()]
        # Warm-up, as the server's readiness probe is: the first step pays one-off costs.
        llm.generate(prompts[:8], SamplingParams(max_tokens=16, ignore_eos=True), use_tqdm=False)
        run_modes(llm, args, engine_args, prompts, load_s, __version__,
                  args.seeds if not args.job else "none")


def run_modes(llm, args, engine_args, prompts, load_s, version, seeds) -> None:
    from vllm import SamplingParams

    def params(seed: int | None) -> SamplingParams:
        return SamplingParams(
            n=args.n, temperature=args.temperature, top_p=1.0, max_tokens=args.max_tokens,
            ignore_eos=True, seed=seed,
        )

    for mode in seeds.split(","):
        if mode == "none":
            sampling: SamplingParams | list[SamplingParams] = params(None)
        elif mode == "per-request":
            sampling = [params(1000 + i) for i in range(len(prompts))]
        else:
            raise SystemExit(f"unknown seed mode {mode!r}")
        t0 = time.perf_counter()
        outputs = llm.generate(prompts, sampling, use_tqdm=False)
        elapsed = time.perf_counter() - t0
        samples = sum(len(o.outputs) for o in outputs)
        tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
        prompt_tokens = sum(len(o.prompt_token_ids or []) for o in outputs)
        result = {
            "kind": "offline",
            "label": args.label,
            "model": args.model,
            "vllm": version,
            "engine_args": engine_args,
            "seeds": mode,
            "n": args.n,
            "max_tokens": args.max_tokens,
            "prompts": len(prompts),
            "samples": samples,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": tokens,
            "elapsed_s": round(elapsed, 3),
            "tokens_per_s": round(tokens / elapsed, 1),
            "load_s": round(load_s, 1),
        }
        print(json.dumps(result), flush=True)
        with open(args.results, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
