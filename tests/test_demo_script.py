"""scripts/demo.sh, the first thing a newcomer runs: its generate flags draw no warning."""

from __future__ import annotations

import re
import shlex
from importlib import resources
from pathlib import Path

from click.testing import CliRunner

from rollouts.cli import main

DEMO = Path(__file__).resolve().parent.parent / "scripts" / "demo.sh"


def test_the_demo_generate_flags_draw_no_note_or_warning(tmp_path: Path) -> None:
    text = DEMO.read_text()
    sampling = re.search(r"^SAMPLING=\((.*)\)$", text, re.MULTILINE)
    assert sampling is not None
    flags = [f.replace('"$N"', "8") for f in shlex.split(sampling.group(1).replace('"$N"', "8"))]
    data = str(resources.files("rollouts") / "data" / "math_demo.jsonl")
    result = CliRunner().invoke(main, ["generate", data, "-o", str(tmp_path / "o.parquet"),
                                       "--base-url", "http://127.0.0.1:9/v1", *flags, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would sample 8 per prompt" in result.output
    assert "note:" not in result.output and "warning" not in result.output.lower()
