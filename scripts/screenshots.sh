#!/usr/bin/env bash
# The screenshots of docs/viewing.md, made by the browser tests themselves: they run against a
# tiny suite run of their own (benchmark_all.py on CPU), and with TLB_SCREENSHOT_DIR set each
# saves the page it has just checked. So every picture in docs/img/ is one a passing test saw.
#   bash scripts/screenshots.sh [FOLDER]     (default docs/img; needs .venv and /usr/bin/chromium)
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TLB_VENV:-$repo_dir/.venv}"
folder="${1:-docs/img}"
shots=(report perfetto-suite-trace perfetto-gpu-trace tensorboard-offline)
if [ ! -x "$venv/bin/python" ]; then
  echo "screenshots: no virtual environment at $venv; run bash scripts/setup.sh first" >&2
  exit 2
fi
mkdir -p "$folder"
folder="$(cd "$folder" && pwd)"
for shot in "${shots[@]}"; do rm -f "$folder/$shot.png"; done  # a stale picture must not pass for a new one
cd "$repo_dir"
TLB_SCREENSHOT_DIR="$folder" TLB_REQUIRE_BROWSER=1 "$venv/bin/python" -m pytest -q \
  tests/test_browser_report.py tests/test_browser_trace_viewer.py tests/test_browser_tensorboard.py
for shot in "${shots[@]}"; do
  if [ ! -f "$folder/$shot.png" ]; then
    echo "screenshots: $folder/$shot.png was not written (its test did not reach its screenshot)" >&2
    exit 1
  fi
done
echo "screenshots: wrote ${shots[*]/%/.png} under $folder"
