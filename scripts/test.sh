#!/usr/bin/env bash
# The test command: the whole suite in the project's .venv, warnings as errors (see pyproject.toml).
# Set up first with scripts/setup.sh; extra arguments go to pytest (e.g. tests/test_show.py).
# The suite needs two system tools, checked first: bubblewrap (the code sandbox's attacks run
# under it) and Chromium (headless, for the HTML pages).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "the tests need ${missing[*]}: install with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "no virtual environment in $VENV: run bash scripts/setup.sh first" >&2
  exit 1
fi
# Activated, so that the console scripts the tests start (rollouts, score, ...) are the venv's.
source "$VENV/bin/activate"
exec python -m pytest -q "$@"
