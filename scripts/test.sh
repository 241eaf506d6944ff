#!/usr/bin/env bash
# The test command: the whole suite, warnings as errors (see pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m pytest -q "$@"
