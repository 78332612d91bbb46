#!/usr/bin/env bash
# README command 1: the main job.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec unimd demo "$@"
