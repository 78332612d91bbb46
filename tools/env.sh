#!/usr/bin/env bash
# Shared set-up for the README commands: make .venv if missing and install the project
# (editable, with the dev and surrogate extras) under the CPU pins. Sourced, not executed.
# Re-installs only when pyproject.toml or the pins change (stamp file in .venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${UNIMD_PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[unimd] creating .venv with $($PY --version 2>&1)"
  "$PY" -m venv .venv
fi
stamp=".venv/.unimd-install-stamp"
want="$(cat pyproject.toml constraints-cpu.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[unimd] installing unimd[dev,surrogate] into .venv (CPU pins from constraints-cpu.txt; log: .venv/install.log)"
  pipi() { .venv/bin/python -m pip install --disable-pip-version-check "$@" >>.venv/install.log 2>&1 \
             || { tail -40 .venv/install.log >&2; echo "[unimd] pip install failed" >&2; exit 1; }; }
  : > .venv/install.log
  pipi --upgrade pip
  # torch first, pinned, so that no later resolution can pick a CUDA build
  pipi -c constraints-cpu.txt torch
  pipi -c constraints-cpu.txt -e ".[dev,surrogate]"
  # a Jupyter kernel that runs this venv, for JupyterLab and papermill
  .venv/bin/python -m ipykernel install --sys-prefix --name unimd --display-name "unimd (.venv)" >/dev/null
  if .venv/bin/python -m pip list 2>/dev/null | grep -qi '^nvidia-'; then
    echo "[unimd] ERROR: CUDA packages were installed into .venv; check constraints-cpu.txt" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
export PYTHONHASHSEED="${PYTHONHASHSEED:-0}"
