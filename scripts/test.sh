#!/usr/bin/env bash
# Test command: set up (or reuse) .venv, then run the test suite (CPU; CUDA tests skip
# themselves without a GPU). Extra arguments go to pytest.
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo_dir/scripts/setup.sh"
cd "$repo_dir"
exec "${TLB_VENV:-$repo_dir/.venv}/bin/python" -m pytest -q tests "$@"
