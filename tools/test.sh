#!/usr/bin/env bash
# README command 2: the test suite (this is what .ci/run calls).
#  1. unimd/ is exactly what nbs/ exports, notebooks are clean, README.md is current
#  2. nbdev-test runs every notebook (Triton kernels under the interpreter: no GPU here)
#  3. pytest over tests/ (includes the offline docs build and its headless-Chromium check); its summary line ends the output
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
start=$SECONDS
python tools/check_nbdev.py
# nbdev-test does not read conftest.py: export here what the notebooks' kernels need
export TRITON_INTERPRET=1 MPLBACKEND=Agg
nbdev-test nbs
echo "[unimd] notebooks ok ($((SECONDS-start))s so far)"
exec python -m pytest tests "$@"
