"""Write P deterministic prompts of random tokens (decoded to text) as rollouts input jsonl.

    python3 benchmarks/gpu/make_prompts.py MODEL_DIR OUT.jsonl [--prompts 512]

Each line is {"prompt": TEXT, "idx": I}: a string prompt, so rollouts sends it to /v1/completions and
the offline engine gets the same text. Lengths are 150..350 tokens before re-tokenization.
"""

import argparse
import json
import random

from transformers import AutoTokenizer


def prompts(model_dir: str, count: int, lo: int = 150, hi: int = 350, seed: int = 0) -> list[str]:
    tok = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(seed)
    ids = range(3, len(tok) - 3)
    return [
        tok.decode([rng.choice(ids) for _ in range(rng.randint(lo, hi))]) for _ in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("out")
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    texts = prompts(args.model_dir, args.prompts, seed=args.seed)
    if len(set(texts)) != len(texts):
        raise SystemExit("duplicate prompts: change --seed")
    with open(args.out, "w", encoding="utf-8") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"prompt": text, "idx": i}) + "\n")
    print(f"{len(texts)} prompts -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
