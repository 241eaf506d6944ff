"""Rewrite docs/scoring.md's list of data sources from the table (scoring/rewards/sources.py).

    python scripts/docs_sources.py        # after adding or changing a row
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scoring.rewards.sources import markdown_table  # noqa: E402

BEGIN = "<!-- sources table:"
END = "<!-- end of sources table -->"


def main() -> None:
    doc = ROOT / "docs" / "scoring.md"
    text = doc.read_text()
    start = text.index("\n", text.index(BEGIN)) + 1
    end = text.index(END)
    doc.write_text(text[:start] + markdown_table() + "\n" + text[end:])


if __name__ == "__main__":
    main()
