"""`rollouts sweep SWEEP.yaml --watch`: evaluate checkpoints as training writes them.

The sweep file is read again every poll: each checkpoint its `checkpoints:` glob matches is
evaluated once its trainer has finished writing it (rollouts.checkpoint_layouts.check_complete;
one still being written is reported once and waited for), on the managed server kept up between
checkpoints (hot swap). After each checkpoint the manifest is refreshed; with a `score:` section
its outputs are scored (reward and options as in `rollouts slurm submit`'s section) and the report
(OUTPUT_DIR/report) is built again. The watch ends at Ctrl-C, or with `until` once a checkpoint of
that step or later is evaluated. Restart-safe: finished combinations are skipped, as in any sweep.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollouts.errors import RolloutsError, UserInputError

REPORT_DIR = "report"
DEFAULT_POLL_S = 30.0


def echo(message: str) -> None:
    import sys

    print(f"rollouts sweep --watch: {message}", file=sys.stderr, flush=True)


@dataclass
class WatchState:
    sweep_file: Path
    until: int | None
    poll_s: float
    progress: bool
    failures: dict[str, str] = field(default_factory=dict)  # combination slug -> error
    waiting: set[str] = field(default_factory=set)  # checkpoints reported as being written
    evaluated_steps: set[int] = field(default_factory=set)
    failed_groups: set[str] = field(default_factory=set)


def watch_sweep(
    sweep_file: Path, *, until: int | None, poll_s: float = DEFAULT_POLL_S, hot_swap: bool = True,
    progress: bool = True, on_checkpoint: Any = None,
) -> dict[str, str]:
    """Run until `until` is reached (or Ctrl-C); the failures, by combination."""
    from rollouts.sweep import GROUPS_DIR, load_sweep
    from rollouts.sweep_runner import run_groups

    state = WatchState(sweep_file, until, poll_s, progress)
    root = load_sweep(sweep_file, allow_no_checkpoints=True).root
    echo(f"watching {sweep_file} (every {poll_s:g}s"
         f"{f', until step {until}' if until is not None else ', until Ctrl-C'})")

    def group_done(name: str, error: str | None) -> None:
        _after_group(state, name, error, on_checkpoint)

    asyncio.run(run_groups(lambda: _next_batch(state), root / GROUPS_DIR, progress=progress,
                           hot_swap=hot_swap, on_done=group_done))
    return state.failures


async def _next_batch(state: WatchState) -> list[Any]:
    """The groups of checkpoints now ready and not done, waiting until there are some; none once
    `until` is reached."""
    while True:
        if state.until is not None and any(s >= state.until for s in state.evaluated_steps):
            return []
        runs = _ready_runs(state)
        if runs:
            return runs
        await asyncio.sleep(state.poll_s)


def _ready_runs(state: WatchState) -> list[Any]:
    from rollouts.checkpoint_layouts import find_layout, is_complete
    from rollouts.sweep import (
        GROUPS_DIR,
        check_before_loading,
        combination_status,
        load_sweep,
        write_combination_configs,
        write_group_config,
        write_manifest,
    )
    from rollouts.sweep_runner import GroupRun

    sweep = load_sweep(state.sweep_file, allow_no_checkpoints=True)
    ready = []
    for group in sweep.groups:
        if group.name in state.failed_groups:
            continue
        model = str(group.combinations[0].config.get("model") or "")
        layout = find_layout(model) if model else None
        if layout is not None and not is_complete(layout):
            if model not in state.waiting:
                state.waiting.add(model)
                echo(f"{model} is still being written; waiting for it")
            continue
        pending = [c for c in group.combinations if combination_status(c) != "done"]
        if pending:
            ready.append((group, pending))
    if not ready:
        return []
    chosen = _only(sweep, [c for _, pending in ready for c in pending])
    check_before_loading(chosen)
    write_combination_configs(chosen)
    write_manifest(sweep, _rows(sweep, state))
    runs = []
    for group, pending in ready:
        config = write_group_config(sweep, group, pending, sweep.root / GROUPS_DIR)
        echo(f"{group.name}: {len(pending)} combination(s) ready")
        runs.append(GroupRun(group.name, config))
    return runs


def _only(sweep: Any, combinations: list[Any]) -> Any:
    import dataclasses

    from rollouts.sweep import group_combinations

    return dataclasses.replace(sweep, combinations=tuple(combinations),
                               groups=group_combinations(combinations))


def _rows(sweep: Any, state: WatchState) -> list[dict[str, Any]]:
    from rollouts.sweep import manifest_rows

    return manifest_rows(sweep, state.failures)


def _after_group(state: WatchState, name: str, error: str | None, on_checkpoint: Any) -> None:
    from rollouts.sweep import load_sweep, step_number, write_manifest

    sweep = load_sweep(state.sweep_file, allow_no_checkpoints=True)
    group = next((g for g in sweep.groups if g.name == name), None)
    if group is None:
        return
    model = str(group.combinations[0].config.get("model") or "")
    step = step_number(model)
    if error is not None:
        state.failed_groups.add(name)
        state.failures.update({c.slug: error for c in group.combinations})
    write_manifest(sweep, _rows(sweep, state))
    if error is None:
        try:
            _score_and_report(state, group)
        except RolloutsError as exc:
            echo(f"scoring or the report failed for {name}: {str(exc).splitlines()[0]}")
        if on_checkpoint is not None:
            on_checkpoint(sweep, group)
    if step is not None:
        state.evaluated_steps.add(step)


def _score_and_report(state: WatchState, group: Any) -> None:
    from rollouts.runconfig import read_yaml_mapping

    data = read_yaml_mapping(state.sweep_file, "sweep")
    if data.get("score") is None:
        return
    from scoring.report import ReportOptions, build_report
    from scoring.scorer import ScoreConfig, score_files
    from slurm.score import load_score_section

    section = load_score_section(state.sweep_file)
    if section is None:
        return
    options: dict[str, Any] = {"reward_fn": section.reward,
                               "allow_unsandboxed": section.allow_unsandboxed}
    if section.workers is not None:
        options["workers"] = section.workers
    if section.timeout_s is not None:
        options["timeout_s"] = section.timeout_s
    outputs = [str(o) for c in group.combinations for o in c.outputs()]
    score_files(outputs, ScoreConfig(**options), output=section.output, overwrite=True)
    root = Path(group.combinations[0].directory).parent
    try:
        build_report([str(root)], root / REPORT_DIR, ReportOptions(), overwrite=True)
    except UserInputError as exc:
        echo(f"report not built yet: {str(exc).splitlines()[0]}")
    echo(f"{group.name}: scored; report {root / REPORT_DIR}")
