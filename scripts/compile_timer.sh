#!/usr/bin/env bash
# CMake compiler launcher of scripts/setup.sh when TLB_BUILD_TIMING=1: runs the compiler command
# given and appends "<seconds> <source file>" to $TLB_COMPILE_TIMES (one line per call).
start="$(date +%s.%N)"
"$@"
rc=$?
src=""
for arg in "$@"; do
  case "$arg" in *.cu|*.cc|*.cpp|*.cxx|*.c) src="$arg" ;; esac
done
[ -z "${TLB_COMPILE_TIMES:-}" ] || echo "$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') ${src:-$1}" >>"$TLB_COMPILE_TIMES"
exit "$rc"
