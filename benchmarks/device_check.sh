#!/usr/bin/env bash
# The GPU check, in one command, for the day a CUDA machine is lent (under 8 minutes, no network):
#   bash benchmarks/device_check.sh [--official PATH] [--out DIR]     # on the GPU machine
#   bash benchmarks/device_check.sh --dry-run [--out DIR]              # anywhere: CPU, tiny inputs (CI runs this)
# It checks the Triton Soft-NMS against the CPU backend on the recorded official cases (exact), times it against
# the batched CPU backends and the official op on both evaluation workloads (inputs on the GPU, median of >= 20 runs
# after 3 warm-up runs), times one training iteration and inference per video on CUDA (ours, and the official code
# when --official gives a checkout), and writes device_check.json to $OUT (or --out, default ./device_check_out).
# Needs only torch, Triton and numpy (preinstalled on the GPU machines) and this working tree: no package is
# installed. Without numba the `compiled` CPU backend is left out of the timings.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
for arg in "$@"; do
  if [ "$arg" = "--dry-run" ]; then export TRITON_INTERPRET=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"; fi
done
PY="${PYTHON:-python}"
exec timeout "${DEVICE_CHECK_TIMEOUT:-470}" "$PY" benchmarks/device_check.py "$@"
