"""Checkpoints written the way trainers write them, by a real 2-process gloo group on the CPU.

    python -m tests.checkpoint_writers verl BASE_MODEL OUT_ROOT STEP [STEP ...]
    python -m tests.checkpoint_writers nemo-rl BASE_MODEL OUT_ROOT STEP [STEP ...]

Each process builds the base model with weights changed by `trained_state(base, step)`, shards it
with FSDP2 (`fully_shard`, one shard per rank, as verl's `fsdp2` strategy and NeMo-RL's DTensor
policy do) and saves it:

- verl: `OUT_ROOT/global_step_N/actor/model_world_size_2_rank_R.pt` (each rank's
  `model.state_dict()` of DTensors, torch.save), `actor/huggingface/` (config and tokenizer, rank 0),
  `actor/fsdp_config.json`, and after a barrier `OUT_ROOT/latest_checkpointed_iteration.txt` (the
  trainer's completion marker).
- NeMo-RL: `OUT_ROOT/tmp_step_N/` with `config.yaml` (`policy.model_name`), `policy/weights/`
  (torch.distributed.checkpoint of `{"model": state}`), `policy/tokenizer/`, then renamed to
  `step_N` (the trainer's completion).

WRITER_HOLD=PATH makes the writer stop midway through the last step (rank 0's shard written, the
other rank's not, no completion marker) until PATH exists: a checkpoint seen half written.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch

WORLD_SIZE = 2


def trained_state(base_model: str | Path, step: int) -> Any:
    """The base model with every weight changed by a step-seeded amount: what step N saved."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=torch.float32)
    generator = torch.Generator().manual_seed(step)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return model


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _hold_if_asked(rank: int, last: bool) -> None:
    hold = os.environ.get("WRITER_HOLD")
    if hold and last and rank == 1:
        Path(f"{hold}.reached").touch()
        while not Path(hold).exists():
            time.sleep(0.05)


def _sharded(base_model: str, step: int) -> Any:
    from torch.distributed.fsdp import fully_shard

    model = trained_state(base_model, step)
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def write_verl(rank: int, base_model: str, root: Path, step: int, last: bool) -> None:
    import torch.distributed as dist
    from transformers import AutoTokenizer

    model = _sharded(base_model, step)
    actor = root / f"global_step_{step}" / "actor"
    actor.mkdir(parents=True, exist_ok=True)
    _hold_if_asked(rank, last)
    torch.save(model.state_dict(), actor / f"model_world_size_{WORLD_SIZE}_rank_{rank}.pt")
    torch.save({"step": step}, actor / f"extra_state_world_size_{WORLD_SIZE}_rank_{rank}.pt")
    if rank == 0:
        model.config.save_pretrained(actor / "huggingface")
        AutoTokenizer.from_pretrained(base_model).save_pretrained(actor / "huggingface")
        (actor / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2,
                                                            "world_size": WORLD_SIZE}))
    dist.barrier()
    if rank == 0:
        (root / "latest_checkpointed_iteration.txt").write_text(str(step))


def write_nemo_rl(rank: int, base_model: str, root: Path, step: int, last: bool) -> None:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    import yaml
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    from transformers import AutoTokenizer

    model = _sharded(base_model, step)
    temp = root / f"tmp_step_{step}"
    if rank == 0:
        (temp / "policy").mkdir(parents=True, exist_ok=True)
        config = {"policy": {"model_name": base_model, "tokenizer": {"name": base_model}}}
        (temp / "config.yaml").write_text(yaml.safe_dump(config))
        AutoTokenizer.from_pretrained(base_model).save_pretrained(temp / "policy" / "tokenizer")
    dist.barrier()
    _hold_if_asked(rank, last)
    dcp.save({"model": get_model_state_dict(model)}, checkpoint_id=str(temp / "policy" / "weights"))
    dist.barrier()
    if rank == 0:
        (temp / "training_info.json").write_text(json.dumps({"step": step}))
        os.rename(temp, root / f"step_{step}")


WRITERS = {"verl": write_verl, "nemo-rl": write_nemo_rl}


def _rank_main(rank: int, kind: str, base_model: str, root: str, steps: list[int],
               port: int) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        for index, step in enumerate(steps):
            WRITERS[kind](rank, base_model, Path(root), step, index == len(steps) - 1)
            dist.barrier()
    finally:
        dist.destroy_process_group()


def write(kind: str, base_model: str | Path, root: str | Path, steps: list[int]) -> None:
    """Write checkpoints for `steps` with a 2-process gloo group (blocks until done)."""
    import torch.multiprocessing as mp

    torch.set_num_threads(1)
    Path(root).mkdir(parents=True, exist_ok=True)
    mp.spawn(_rank_main, args=(kind, str(base_model), str(root), steps, _free_port()),
             nprocs=WORLD_SIZE, join=True)


if __name__ == "__main__":
    write(sys.argv[1], sys.argv[2], sys.argv[3], [int(s) for s in sys.argv[4:]])
