#!/usr/bin/env bash
# Main command: set up (or reuse) .venv, then run the whole suite on the best device and
# print the summary table. Extra arguments go to benchmark_all.py (e.g. --only k2,k2_pruned).
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo_dir/scripts/setup.sh" --with nemo
exec "${TLB_VENV:-$repo_dir/.venv}/bin/python" "$repo_dir/benchmark_all.py" "$@"
