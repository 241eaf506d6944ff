"""A `rollouts sweep` over K checkpoints of one architecture, with hot swap and with restarts.

    source benchmarks/gpu/env.sh
    python3 benchmarks/gpu/hotswap_sweep.py [--model $W/m04] [--checkpoints 4] [--prompts 256] \
        [--max-tokens 256] [--modes swap,restart] [--workdir $W/hotswap]

Made here, once (kept under --workdir): K DCP checkpoints of the base model (its weights plus
seeded noise, so each checkpoint answers differently), saved as trainers save them
(torch.distributed.checkpoint, {"model": state_dict}), and P random-token prompts. Then the same
sweep file (every checkpoint x temperature 0 and 1, one dataset) runs twice through
`rollouts sweep`: with hot swap (one managed vLLM server, weights swapped per checkpoint, the
next checkpoint converted while the current one generates) and with --no-hot-swap (a server
start per checkpoint). Both share one conversion cache, so the restart sweep converts nothing.

Printed per mode: wall seconds of the sweep command, seconds generating (the sum of the groups'
run times, from groups/*.summary.json), the generating share of the wall time (whole, and from the
first server ready on), each swap's seconds and any restart, and then whether each checkpoint's
outputs are equal between the modes (greedy, temperature 0; sampled, temperature 1 with the same
seeds). A JSON line per mode goes to --results.

On one H100 the first server start costs 80-90 s (vLLM's measured figure); K=4 and the defaults
run both modes in about 8-9 minutes; with less time, run `--modes swap` and `--modes restart` in
two calls (same --workdir): the comparison is printed by the call that finds both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NOISE = 0.02  # relative to each tensor's spread: enough to change greedy answers


def run(command: list[str], **kwargs: object) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, **kwargs)  # type: ignore[call-overload]


def base_model(path: Path) -> Path:
    if not (path / "config.json").is_file():
        run([sys.executable, str(HERE / "mkmodel.py"), str(path)])
    return path


def make_checkpoints(base: Path, folder: Path, count: int) -> list[Path]:
    """DCP checkpoints of the base weights plus seeded noise, written on the CPU."""
    import torch
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file

    paths = [folder / f"global_step_{100 * (i + 1)}" for i in range(count)]
    todo = [p for p in paths if not (p / ".metadata").is_file()]
    if not todo:
        return paths
    weights: dict[str, torch.Tensor] = {}
    for file in sorted(base.glob("*.safetensors")):
        weights.update(load_file(str(file)))
    for index, path in enumerate(paths):
        if path not in todo:
            continue
        generator = torch.Generator().manual_seed(index + 1)
        state = {}
        for name, tensor in weights.items():
            noise = torch.randn(tensor.shape, generator=generator) * NOISE
            state[name] = (tensor.float() + noise * tensor.float().std()).to(tensor.dtype)
        dcp.save({"model": state}, checkpoint_id=str(path))
        print(f"checkpoint {path}", flush=True)
    return paths


def write_sweep(workdir: Path, mode: str, base: Path, prompts: Path, args: argparse.Namespace) -> Path:
    import yaml

    data = {
        "checkpoints": str(workdir / "ckpts" / "global_step_*"),
        "base_model": str(base),
        "output_dir": str(workdir / f"sweep-{mode}"),
        "server": {"gpu_memory_utilization": 0.85, "max_model_len": 4096},
        "datasets": [{"path": str(prompts), "name": "random"}],
        "defaults": {"n": args.n, "max_tokens": args.max_tokens},
        "grid": {"temperature": [0.0, 1.0]},
    }
    path = workdir / f"sweep-{mode}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_sweep(path: Path, mode: str, workdir: Path) -> dict[str, object]:
    out = workdir / f"sweep-{mode}"
    if (out / "sweep.parquet").exists():
        raise SystemExit(f"{out} exists from an earlier call: remove it to measure again")
    log = workdir / f"sweep-{mode}.log"
    command = [sys.executable, "-m", "rollouts.cli", "sweep", str(path), "--no-progress"]
    if mode == "restart":
        command.append("--no-hot-swap")
    print("+", " ".join(command), f"2> {log}", flush=True)
    started = time.monotonic()
    with log.open("w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        print(log.read_text()[-4000:])
        raise SystemExit(f"the {mode} sweep failed (status {done.returncode})")
    return summarize(out, mode, wall)


def summarize(out: Path, mode: str, wall: float) -> dict[str, object]:
    groups = out / "groups"
    generating = 0.0
    loads = []
    for summary in sorted(groups.glob("*.summary.json")):
        generating += float(json.loads(summary.read_text())["elapsed_s"])
    for load_file in sorted(groups.glob("*.load.json")):
        loads.append(json.loads(load_file.read_text()))
    first_start = next((float(x["seconds"]) for x in loads if x["how"] == "start"), 0.0)
    swaps = [round(float(x["seconds"]), 3) for x in loads if x["how"] == "swap"]
    restarts = [x for x in loads if x["how"] in ("start", "restart")]
    manifest = pd.read_parquet(out / "sweep.parquet")
    result = {
        "mode": mode, "wall_s": round(wall, 1), "generating_s": round(generating, 1),
        "share": round(generating / wall, 3),
        "share_after_first_start": round(generating / max(wall - first_start, 1e-9), 3),
        "first_start_s": round(first_start, 1), "swaps_s": swaps,
        "server_starts": len(restarts),
        "restart_notes": [x.get("note") for x in restarts if x.get("note")],
        "rows": int(manifest["rows"].sum()), "statuses": sorted(set(manifest["status"])),
    }
    print(json.dumps(result), flush=True)
    return result


def responses(out: Path) -> dict[tuple[str, float], list[str]]:
    manifest = pd.read_parquet(out / "sweep.parquet")
    found = {}
    for row in manifest.itertuples():
        rows = pd.read_parquet(row.outputs[0]).sort_values(["prompt_id", "sample_idx"])
        found[(Path(row.model).name, float(row.temperature))] = list(rows["response"])
    return found


def compare(workdir: Path) -> None:
    swapped = responses(workdir / "sweep-swap")
    restarted = responses(workdir / "sweep-restart")
    for key in sorted(swapped):
        a, b = swapped[key], restarted.get(key, [])
        same = sum(x == y for x, y in zip(a, b, strict=False))
        kind = "greedy" if key[1] == 0.0 else "sampled"
        print(f"{key[0]} {kind}: {same}/{len(a)} responses equal between hot swap and restarts"
              f"{' (all)' if same == len(a) == len(b) else ''}", flush=True)
    steps = {k[0] for k in swapped}
    distinct = len({tuple(swapped[(s, 0.0)]) for s in steps})
    print(f"distinct greedy outputs across {len(steps)} checkpoints: {distinct}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(os.environ.get("W", "/tmp/gb"), "hotswap"))
    parser.add_argument("--model", default=os.path.join(os.environ.get("W", "/tmp/gb"), "m04"))
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--modes", default="swap,restart")
    parser.add_argument("--results", default=None, help="append a JSON line per mode here")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ROLLOUTS_CACHE", str(workdir / "cache"))
    base = base_model(Path(args.model))
    make_checkpoints(base, workdir / "ckpts", args.checkpoints)
    prompts = workdir / f"prompts-{args.prompts}.jsonl"
    if not prompts.exists():
        run([sys.executable, str(HERE / "make_prompts.py"), str(base), str(prompts),
             "--prompts", str(args.prompts)])
    for mode in args.modes.split(","):
        result = run_sweep(write_sweep(workdir, mode, base, prompts, args), mode, workdir)
        if args.results:
            with open(args.results, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(result) + "\n")
    if all((workdir / f"sweep-{m}" / "sweep.parquet").exists() for m in ("swap", "restart")):
        compare(workdir)


if __name__ == "__main__":
    main()
