#!/usr/bin/env bash
# Create .venv (if missing) and install the studio with its dev extras, CPU torch pinned.
# Idempotent: a second run only checks that everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -c constraints.txt --config-settings editable_mode=compat -e ".[dev]"
