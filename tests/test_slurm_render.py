"""sbatch rendering is a pure function: each option checked as text; the `slurm:` section's checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rollouts.errors import UserInputError
from slurm.config import (
    SLURM_KEYS,
    SlurmConfig,
    check_fits,
    load_slurm_config,
    servers_per_node,
    time_limit_seconds,
)
from slurm.render import NOTHING_LEFT_EXIT, render_array, render_merge, render_scripts

RUN_DIR = Path("/shared/runs/r1")


def config(**options: object) -> SlurmConfig:
    base: dict[str, object] = {"array_size": 4, "run_dir": RUN_DIR, "python": "/venv/bin/python"}
    return SlurmConfig(**{**base, **options})  # type: ignore[arg-type]


def test_minimal_array_script_asks_for_requeue_and_the_usr1_warning() -> None:
    text = render_array(config(), RUN_DIR, 4)
    assert text.startswith("#!/bin/bash\n")
    for line in ("#SBATCH --array=0-3", "#SBATCH --job-name=rollouts", "#SBATCH --requeue",
                 "#SBATCH --signal=B:USR1@120", "#SBATCH --nodes=1",
                 f"#SBATCH --output={RUN_DIR}/logs/%x-%A_%a.log", "#SBATCH --open-mode=append"):
        assert line in text.splitlines()
    assert "--gpus-per-node" not in text
    # The remaining-work check comes before the task (and so before any server).
    check = text.index('slurm task "$RUN_DIR" --check')
    assert check < text.index('slurm task "$RUN_DIR" &')
    assert "trap 'kill -USR1 \"$TASK_PID\" 2>/dev/null' USR1" in text
    assert "/venv/bin/python -m rollouts.cli" in text
    assert "ray start" not in text and "--container-image" not in text


@pytest.mark.parametrize(
    ("options", "line"),
    [
        ({"gpus_per_node": 8}, "#SBATCH --gpus-per-node=8"),
        ({"cpus_per_task": 32}, "#SBATCH --cpus-per-task=32"),
        ({"mem": "200G"}, "#SBATCH --mem=200G"),
        ({"time": "04:00:00"}, "#SBATCH --time=04:00:00"),
        ({"partition": "gpu"}, "#SBATCH --partition=gpu"),
        ({"account": "lab"}, "#SBATCH --account=lab"),
        ({"qos": "high"}, "#SBATCH --qos=high"),
        ({"constraint": "h100"}, "#SBATCH --constraint=h100"),
        ({"job_name": "eval-7b"}, "#SBATCH --job-name=eval-7b"),
        ({"log_dir": Path("/logs/x")}, "#SBATCH --output=/logs/x/%x-%A_%a.log"),
        ({"max_concurrent_tasks": 2}, "#SBATCH --array=0-3%2"),
        ({"signal_seconds": 300}, "#SBATCH --signal=B:USR1@300"),
        ({"sbatch_extra": ("--exclusive",)}, "#SBATCH --exclusive"),
        ({"sbatch_extra": ("#SBATCH --reservation=r",)}, "#SBATCH --reservation=r"),
        ({"setup": ("module load cuda/12.4",)}, "module load cuda/12.4"),
        ({"nodes_per_task": 2}, "#SBATCH --nodes=2"),
    ],
)
def test_each_option_renders_its_line(options: dict[str, object], line: str) -> None:
    assert line in render_array(config(**options), RUN_DIR, 4).splitlines()


def test_setup_lines_run_before_any_rollouts_command() -> None:
    text = render_array(config(setup=("source /venv/bin/activate",)), RUN_DIR, 4)
    assert text.index("source /venv/bin/activate") < text.index("-m rollouts.cli")


def test_container_runs_the_task_through_srun_with_pyxis_flags() -> None:
    slurm = config(container_image="nvcr.io#nvidia/vllm:25.01", python="python3",
                   container_mounts=("/shared:/shared", "/data:/data"))
    text = render_array(slurm, RUN_DIR, 2)
    task_line = next(line for line in text.splitlines() if line.endswith('slurm task "$RUN_DIR" &'))
    assert task_line.startswith("srun --nodes=1 --ntasks=1 --overlap ")
    assert "--container-image='nvcr.io#nvidia/vllm:25.01'" in task_line  # quoted for the shell
    assert "--container-mounts=/shared:/shared,/data:/data" in task_line
    assert "python3 -m rollouts.cli" in task_line


def test_multi_node_task_starts_a_ray_cluster_before_the_task() -> None:
    text = render_array(config(nodes_per_task=4, gpus_per_node=8), RUN_DIR, 2)
    lines = text.splitlines()
    assert 'mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")' in lines
    head = text.index("ray start --head")
    workers = text.index('ray start --address="$RAY_ADDRESS"')
    assert text.index("--check") < head < workers < text.index('slurm task "$RUN_DIR" &')
    assert 'for node in "${NODES[@]:1}"; do' in lines
    assert "export ROLLOUTS_RAY=1" in text  # the task adds --distributed-executor-backend ray
    assert '--nodelist="$HEAD_NODE"' in text


def test_merge_script_runs_merge_and_can_be_turned_off() -> None:
    text = render_merge(config(partition="cpu"), RUN_DIR)
    assert "#SBATCH --job-name=rollouts-merge" in text
    assert "#SBATCH --partition=cpu" in text
    assert '-m rollouts.cli slurm merge "$RUN_DIR"\nCODE=$?' in text
    assert 'steps/merge-$SLURM_JOB_ID.exit' in text and text.rstrip().endswith('exit "$CODE"')
    assert render_scripts(config(merge_job=False), RUN_DIR, 4).merge is None


def test_servers_per_node_follow_gpus_and_parallelism() -> None:
    assert servers_per_node(config(gpus_per_node=8), {"tensor_parallel_size": 2}) == 4
    assert servers_per_node(config(gpus_per_node=8), {"tensor_parallel_size": 8}) == 1
    assert servers_per_node(config(gpus_per_node=0), {}) == 1
    assert servers_per_node(config(gpus_per_node=8, nodes_per_task=2),
                            {"tensor_parallel_size": 16}) == 1


def test_a_server_larger_than_a_task_is_refused() -> None:
    with pytest.raises(UserInputError, match="needs 4 GPUs .* has 2"):
        check_fits(config(gpus_per_node=2), {"tensor_parallel_size": 4}, "cfg")
    check_fits(config(gpus_per_node=8, nodes_per_task=2), {"tensor_parallel_size": 16}, "cfg")


def test_slurm_section_is_read_with_defaults_and_unknown_keys_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("slurm:\n  array_size: 3\n  setup: |\n    module load a\n    module load b\n"
                    "  container_mounts: 'a:a,b:b'\n")
    loaded = load_slurm_config(path, tmp_path / "out")
    assert loaded.run_dir == tmp_path / "out" / "slurm-run"
    assert loaded.setup == ("module load a", "module load b")
    assert loaded.container_mounts == ("a:a", "b:b")
    assert dataclasses.asdict(loaded)["unit_prompts"] == 64
    path.write_text("slurm: {array_size: 3, gpu_per_node: 8}\n")
    with pytest.raises(UserInputError, match=r"unknown key\(s\) \['gpu_per_node'\]"):
        load_slurm_config(path, tmp_path)
    path.write_text("slurm: {gpus_per_node: 8}\n")
    with pytest.raises(UserInputError, match="array_size"):
        load_slurm_config(path, tmp_path)


def test_every_key_has_help_text() -> None:
    fields = {f.name for f in dataclasses.fields(SlurmConfig)}
    assert set(SLURM_KEYS) == fields
    assert all(text.strip() for text in SLURM_KEYS.values())


@pytest.mark.parametrize(("value", "seconds"), [
    ("90", 5400), ("1:30", 90), ("04:00:00", 14400), ("1-12", 129600), ("1-0:1", 86460),
    ("2-00:00:01", 172801), ("INFINITE", None),
])
def test_time_limits_are_read_in_every_slurm_format(value: str, seconds: int | None) -> None:
    assert time_limit_seconds(value) == seconds


def test_signal_seconds_must_leave_time_to_work_and_counts_must_be_integers(
    tmp_path: Path,
) -> None:
    with pytest.raises(UserInputError, match=r"signal_seconds \(120\) must be shorter than time "
                                             r"\(00:01:00 = 60 s\)"):
        config(time="00:01:00")
    assert config(time="00:05:00", signal_seconds=60).signal_seconds == 60
    with pytest.raises(UserInputError, match="not a SLURM time limit"):
        config(time="4h")
    path = tmp_path / "run.yaml"
    for key, value in (("array_size", "2.5"), ("unit_prompts", "'many'"), ("max_retries", "1.5")):
        path.write_text(f"slurm: {{array_size: 2, {key}: {value}}}\n")
        with pytest.raises(UserInputError, match=f"slurm: {key} must be an integer"):
            load_slurm_config(path, tmp_path)
    path.write_text("slurm: {array_size: '4', max_retries: 2}\n")
    assert load_slurm_config(path, tmp_path).max_retries == 2


def test_the_array_script_tells_nothing_left_from_a_check_that_failed_and_marks_its_exit() -> None:
    text = render_array(config(max_retries=2), RUN_DIR, 4)
    assert f'if [ "$CHECK" -eq {NOTHING_LEFT_EXIT} ]; then' in text
    assert 'exit "$CHECK"' in text  # any other failure of the check fails the task
    assert "trap finish EXIT" in text and 'MARKER="$RUN_DIR/tasks/$TASK_ID.exit"' in text
    assert 'if [ "$tries" -lt 2 ]; then' in text and 'scontrol requeue "$TASK_ID"' in text
    assert text.index("trap finish EXIT") < text.index("--check")
    assert "CANCELLED=true" in text  # scancel is never retried


def test_a_score_section_adds_a_score_script_after_the_merge() -> None:
    scripts = render_scripts(config(), RUN_DIR, 2, score=True)
    assert scripts.score is not None and 'slurm score "$RUN_DIR"\nCODE=$?' in scripts.score
    assert "#SBATCH --job-name=rollouts-score" in scripts.score
    assert render_scripts(config(), RUN_DIR, 2).score is None
