"""`rollouts convert-checkpoint`: a trainer's checkpoint → a HuggingFace directory (rollouts.checkpoint)."""

from __future__ import annotations

from pathlib import Path

import click

from rollouts.clitools import handle_errors

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command("convert-checkpoint", context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--base-model", default=None, envvar="ROLLOUTS_BASE_MODEL",
              help="The HuggingFace model (directory or hub id) the checkpoint was trained from: "
                   "its config (dtype kept) and tokenizer are used. Default: the one the "
                   "checkpoint names (verl's huggingface/, NeMo-RL's policy.model_name).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output directory [default: the cache, $ROLLOUTS_CACHE or "
                   "~/.cache/rollouts/checkpoints].")
@click.option("--force", is_flag=True, help="Convert again, replacing an existing conversion.")
@click.option("--lock-timeout", type=float, default=6 * 3600.0, show_default=True,
              help="Seconds to wait for another process converting the same checkpoint.")
@handle_errors
def convert_checkpoint_command(
    checkpoint: Path, base_model: str | None, output: Path | None, force: bool, lock_timeout: float
) -> None:
    """Convert a trainer's CHECKPOINT folder into a HuggingFace model directory (safetensors) and
    print its path. A finished conversion is reused; a checkpoint still being written is refused.

    \b
    Layouts (docs/checkpoints.md):
      torch.distributed.checkpoint  .metadata + shards (at the top or under model/)
      verl FSDP                     global_step_N/actor/model_world_size_W_rank_R.pt
      NeMo-RL                       step_N/policy/weights/ (DCP) + step_N/config.yaml

    \b
    Examples:
      rollouts convert-checkpoint ckpts/global_step_500 --base-model Qwen/Qwen2.5-7B-Instruct
      rollouts convert-checkpoint verl_ckpts/global_step_500   # base from actor/huggingface/
      rollouts convert-checkpoint results/grpo/step_50 -o hf/step_50
    """
    from rollouts.checkpoint import convert_checkpoint

    path = convert_checkpoint(
        checkpoint, base_model, output=output, force=force, lock_timeout_s=lock_timeout
    )
    click.echo(str(path))
