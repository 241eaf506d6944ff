"""`rollouts --help` is the map: the three tools and the pipeline, on one screen."""

from __future__ import annotations

from importlib.metadata import entry_points

from click.testing import CliRunner

from rollouts.cli import main


def test_help_lists_the_three_tools_and_the_pipeline() -> None:
    text = CliRunner().invoke(main, ["--help"], terminal_width=80).output
    lines = text.splitlines()
    assert len(lines) <= 40 and max(map(len, lines)) <= 80  # one screen
    pipeline = [line.split()[0] for line in lines if line.strip().startswith(
        ("rollouts generate", "score ", "filter-difficulty "))]
    assert pipeline == ["rollouts", "score", "filter-difficulty"]
    scripts = {e.name for e in entry_points(group="console_scripts") if e.value.split(".")[0] in
               ("rollouts", "scoring")}
    assert {"rollouts", "score", "filter-difficulty"} <= scripts  # the tools named are installed
    for command in ("generate", "show", "status"):
        assert f"rollouts {command}" in text or f"  {command} " in text
