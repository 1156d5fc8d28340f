#!/usr/bin/env bash
# Test command: set up (or reuse) .venv, lint the whole tree (ruff, rules in pyproject.toml), check
# the package layers (import-linter, the contract in pyproject.toml), then run the test suite in
# parallel (CPU; CUDA tests skip themselves without a GPU). Extra arguments go to pytest.
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TLB_VENV:-$repo_dir/.venv}"
bash "$repo_dir/scripts/setup.sh" --with nemo
cd "$repo_dir"
echo "[test] ruff check (pyproject.toml)"
"$venv/bin/ruff" check .
echo "[test] lint-imports (pyproject.toml: tlbench's packages import only downward)"
"$venv/bin/lint-imports" --no-cache
# The test files run in parallel (pytest-xdist), one file per worker at a time so that a file's
# shared fixtures are built once; a worker per core, at most 8 (here: 11 min on 2 workers, 18 min
# serially).
workers="$(nproc)"
[ "$workers" -le 8 ] || workers=8
echo "[test] pytest on $workers workers (pytest-xdist, --dist loadfile)"
exec "$venv/bin/python" -m pytest -q -n "$workers" --dist loadfile tests "$@"
