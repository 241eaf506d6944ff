#!/usr/bin/env bash
# The test command: the whole suite in the project's .venv, warnings as errors (see pyproject.toml).
# Set up first with scripts/setup.sh; extra arguments go to pytest (e.g. tests/test_show.py).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "no virtual environment in $VENV: run bash scripts/setup.sh first" >&2
  exit 1
fi
# Activated, so that the console scripts the tests start (rollouts, score, ...) are the venv's.
source "$VENV/bin/activate"
exec python -m pytest -q "$@"
