#!/usr/bin/env bash
# Tools that check exported assets (tests/test_export_tools.py): the Khronos glTF validator (npm, pinned by
# tools/package-lock.json), headless Blender (Debian package, with python3-numpy for its glTF importer) and pip's bpy
# (Blender with USD, in tools/bpy-venv).
# Idempotent; apt runs only when something is missing (CI runs as root; elsewhere sudo is used if present).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v npm >/dev/null; then
  if [ ! -d tools/node_modules/gltf-validator ]; then
    (cd tools && npm ci --no-audit --no-fund --loglevel=error)
  fi
else
  echo "install_dcc_tools: npm not found; glTF validation tests will be skipped" >&2
fi
missing=()
command -v blender >/dev/null || missing+=(blender)
[ -f /usr/lib/python3/dist-packages/numpy/__init__.py ] || missing+=(python3-numpy)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=$(command -v sudo || true)
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    $SUDO apt-get install -y -q "${missing[@]}" >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${missing[@]}" >/dev/null; }
  else
    echo "install_dcc_tools: cannot install ${missing[*]} (not root, no sudo); Blender tests will be skipped" >&2
  fi
fi
# Blender as a Python module (pip's bpy, built with USD; Debian's blender has no USD importer) for the USDZ import
# check (tests/test_export_usdz.py). Its own venv (a 373 MB wheel, ~950 MB installed, ~15 s), so its numpy and
# its bundled USD never meet the studio's. bpy 4.5 needs Python 3.11; without it the test is skipped.
if ! tools/bpy-venv/bin/python -c "import bpy" >/dev/null 2>&1; then
  rm -rf tools/bpy-venv
  { python3 -m venv tools/bpy-venv && tools/bpy-venv/bin/python -m pip install -q "bpy==4.5.15"; } >/dev/null 2>&1 ||
    { rm -rf tools/bpy-venv; echo "install_dcc_tools: bpy not installed; the USDZ Blender test will be skipped" >&2; }
fi
