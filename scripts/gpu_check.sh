#!/usr/bin/env bash
# One command for a GPU machine that has torch preinstalled and no internet (made for the
# device machine: H200, Python 3.12, torch 2.11 cu130, nvcc 13). Needs .whl/gpu-check/ as
# scripts/prepare_gpu_check.sh fills it (wheels, sdists, moderngpu) carried along. Stages, each
# under `timeout`, all inside TLB_GPU_CHECK_SECONDS (default 470 s, i.e. under 8 minutes):
#   probe     GPU, driver, nvcc, python, torch, build tools
#   setup     scripts/setup.sh with TLB_SYSTEM_TORCH=1, TLB_WHEELHOUSE, MODERNGPU_SOURCE: the CUDA
#             builds of fast_rnnt, optimized_transducer and warp_rnnt for this GPU
#   verify    verify_losses.py --device cuda (every loss against the float64 reference, CPU vs CUDA)
#   benchmark benchmark_all.py --device cuda --preset original --repeat 1 (report.py after it)
#   k2        only when asked for (TLB_GPU_CHECK_K2): k2's CUDA build (scripts/setup.sh with
#             TLB_BUILDS=k2 and the sources that scripts/prepare_gpu_check.sh --with-k2 put in
#             the wheelhouse), then verify_losses.py and the benchmark of k2 and k2_pruned. Its
#             CUDA build is ~69 compiler-minutes (36 min on 2 cores here), ~5 min on 16 (estimated):
#             too long to share the default budget with the other builds, hence its own stage,
#             best run alone: TLB_GPU_CHECK_K2=only.
# OUT_DIR gets at most 8 files: gpu_check.md (stages, times, probe, imports), summary.md and
# summary.json (the benchmark's report), verify_losses.txt, logs.tar.gz (every log, summary.json
# and key_averages.txt), traces.tar.gz (Chrome traces, one per run first, under 16 MiB) and pictures.tar.gz.
#
# Usage: bash scripts/gpu_check.sh OUT_DIR
# Environment:
#   TLB_GPU_CHECK_DEVICE=cpu   dry run without a GPU: the same stages on the CPU (quick preset,
#                              a few implementations); the setup is then a CPU build unless
#                              TLB_CUDA_ARCH asks for a CUDA compile check
#   TLB_GPU_CHECK_SECONDS      the whole budget (default 470; 570 with TLB_GPU_CHECK_K2=only)
#   TLB_GPU_CHECK_SETUP_SECONDS  the setup stage's limit (default 260)
#   TLB_GPU_CHECK_WHEELHOUSE   default .whl/gpu-check in the repository
#   TLB_GPU_CHECK_VENV         default /tmp/tlb-gpu-check/venv (reused by a second run)
#   TLB_GPU_CHECK_PYTHON       the interpreter that has torch (default python3)
#   TLB_GPU_CHECK_BENCH_ARGS   replaces the benchmark's arguments
#   TLB_GPU_CHECK_VERIFY_ARGS  replaces verify_losses.py's arguments
#   TLB_GPU_CHECK_K2=0|1|only  0 (default): no k2 stage; 1: the k2 stage after the others;
#                              only: setup, imports and the k2 stage alone (a second command)
set -uo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { echo "[gpu_check] $*"; }
if [ $# -ne 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  [ $# -eq 1 ] && exit 0 || exit 2
fi
mkdir -p "$1" || exit 2
out="$(cd "$1" && pwd)"
device="${TLB_GPU_CHECK_DEVICE:-cuda}"
# The k2 stage alone gets most of a 10-minute command (its CUDA build: ~5 min on 16 cores, estimated).
if [ "${TLB_GPU_CHECK_K2:-0}" = only ]; then budget="${TLB_GPU_CHECK_SECONDS:-570}"; else budget="${TLB_GPU_CHECK_SECONDS:-470}"; fi
wh="${TLB_GPU_CHECK_WHEELHOUSE:-$repo_dir/.whl/gpu-check}"
work="/tmp/tlb-gpu-check"
venv="${TLB_GPU_CHECK_VENV:-$work/venv}"
python="${TLB_GPU_CHECK_PYTHON:-python3}"
results="$work/log"
logs="$work/stage-logs"
md="$out/gpu_check.md"
if [ "$device" = cuda ]; then
  bench_args="${TLB_GPU_CHECK_BENCH_ARGS:---device cuda --preset original --repeat 1}"
  verify_args="${TLB_GPU_CHECK_VERIFY_ARGS:---device cuda}"
else
  bench_args="${TLB_GPU_CHECK_BENCH_ARGS:---device cpu --preset quick --only torchaudio,optimized_transducer,k2_pruned}"
  verify_args="${TLB_GPU_CHECK_VERIFY_ARGS:---device cpu --only reference,torchaudio,optimized_transducer,k2}"
fi
k2_stage="${TLB_GPU_CHECK_K2:-0}"
case "$k2_stage" in
  0|1|only) ;;
  *) say "TLB_GPU_CHECK_K2=$k2_stage: allowed are 0 (default), 1 and only"; exit 2 ;;
esac
k2_verify_args="--device $device"
if [ "$device" = cuda ]; then k2_bench_args="--device cuda"; else k2_bench_args="--device cpu --preset quick"; fi
rm -rf "$results" "$logs" "$work/pack"
mkdir -p "$results" "$logs" "$work/pack"
SECONDS=0
stage_rows=()
timed_out=()

run_stage() {  # NAME CAP RESERVE COMMAND...: runs COMMAND under timeout, at most CAP seconds and
  local name="$1" cap="$2" reserve="$3" limit rc start  # never into the RESERVE kept for later
  shift 3
  limit=$((budget - SECONDS - reserve))
  [ "$limit" -gt "$cap" ] && limit="$cap"
  if [ "$limit" -lt 10 ]; then
    say "$name skipped: no time left ($SECONDS s of $budget s used)"
    stage_rows+=("| $name | skipped: no time left | 0 |")
    timed_out+=("$name (not started)")
    return 124
  fi
  say "$name (limit $limit s; log: $logs/$name.log)"
  start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$logs/$name.log" 2>&1
  rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    say "$name ran out of time after $limit s (last line: $(grep -v '^\s*$' "$logs/$name.log" | tail -n 1 | cut -c1-160))"
    stage_rows+=("| $name | ran out of time ($limit s limit) | $((SECONDS - start)) |")
    timed_out+=("$name")
  else
    say "$name finished with exit code $rc in $((SECONDS - start)) s"
    stage_rows+=("| $name | exit code $rc | $((SECONDS - start)) |")
  fi
  return "$rc"
}

# --- probe ------------------------------------------------------------------------------------
probe() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); host: $(uname -srm); cores: $(nproc); memory: $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB"}')"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  else
    echo "gpu: no nvidia-smi"
  fi
  local tool path line
  for tool in nvcc cuobjdump cmake make gcc g++ ninja; do
    path="$(command -v "$tool" 2>/dev/null || true)"
    [ -n "$path" ] || [ ! -x "/usr/local/cuda/bin/$tool" ] || path="/usr/local/cuda/bin/$tool"
    if [ -z "$path" ]; then
      echo "$tool: not found"
      continue
    fi
    case "$tool" in
      nvcc|cuobjdump) line="$("$path" --version 2>&1 | grep -v '^\s*$' | tail -n 1)" ;;  # "Build cuda_13.0..."
      *) line="$("$path" --version 2>&1 | head -n 1)" ;;
    esac
    echo "$tool: $path: ${line:0:100}"
  done
  "$python" - <<'EOF' 2>&1
import sys
print(f"python: {sys.executable} {sys.version.split()[0]} (prefix {sys.prefix}, base {sys.base_prefix})")
try:
    import torch
    cap = torch.cuda.get_device_capability() if torch.cuda.is_available() else None
    print(f"torch: {torch.__version__} (CUDA {torch.version.cuda}; available: {torch.cuda.is_available()}; capability: {cap})")
except Exception as error:
    print(f"torch: cannot be imported ({error})")
EOF
  echo "wheelhouse: $wh ($(find "$wh" -maxdepth 1 -type f 2>/dev/null | wc -l) files, $(du -sh "$wh" 2>/dev/null | cut -f1))"
}
export python wh
export -f probe
run_stage probe 20 0 bash -c probe

# --- setup ------------------------------------------------------------------------------------
if [ ! -f "$wh/requirements-gpu-check.txt" ]; then
  say "no $wh/requirements-gpu-check.txt: run scripts/prepare_gpu_check.sh where pip reaches the index, and carry .whl"
fi
# k2 is never built here (its own stage below builds it when asked for): TLB_BUILDS without it.
setup_builds="fast_rnnt optimized_transducer warp_rnnt"
[ "$k2_stage" != only ] || setup_builds=""
run_stage setup "${TLB_GPU_CHECK_SETUP_SECONDS:-260}" 140 env TLB_VENV="$venv" PYTHON="$python" TLB_SYSTEM_TORCH=1 TLB_WHEELHOUSE="$wh" \
  TLB_REQUIREMENTS="$wh/requirements-gpu-check.txt" MODERNGPU_SOURCE="$wh/moderngpu-2b39855.tar.gz" \
  TLB_BUILDS="$setup_builds" PIP_NO_INDEX=1 bash "$repo_dir/scripts/setup.sh"
py="$venv/bin/python"
imports() {
  "$py" - <<'EOF' 2>&1
import importlib, importlib.metadata as md
for module, dist in [("torch", "torch"), ("torchaudio", "torchaudio"), ("fast_rnnt", "fast_rnnt"),
                     ("optimized_transducer", "optimized_transducer"), ("warp_rnnt", "warp_rnnt"),
                     ("warprnnt_numba", "warprnnt-numba"), ("numba.cuda", "numba"), ("k2", "k2"),
                     ("speechbrain", "speechbrain"), ("matplotlib", "matplotlib")]:
    try:
        m = importlib.import_module(module)
        version = md.version(dist)
        print(f"{module}: {version} ({m.__file__})")
    except Exception as error:
        print(f"{module}: NOT importable: {type(error).__name__}: {str(error)[:200]}")
EOF
}
export py
export -f imports
[ -x "$py" ] && run_stage imports 60 120 bash -c imports

# --- verify, then the benchmark ---------------------------------------------------------------
cd "$repo_dir" || exit 1
export PYTHONUNBUFFERED=1
bench_rc=0
if [ "$k2_stage" != only ]; then
  # shellcheck disable=SC2086  # the argument strings are split on purpose
  [ -x "$py" ] && run_stage verify 120 110 "$py" verify_losses.py $verify_args --output-json "$results/verify_losses.json"
  # shellcheck disable=SC2086
  [ -x "$py" ] && run_stage benchmark 600 25 "$py" benchmark_all.py $bench_args --out-dir "$results"
  bench_rc=$?
fi

# --- k2, when asked for -----------------------------------------------------------------------
if [ "$k2_stage" != 0 ] && [ -x "$py" ]; then
  for file in k2-a741ae8.tar.gz pybind11-5bc0943.tar.gz moderngpu-8ec9ac0.tar.gz; do
    [ -f "$wh/$file" ] || say "no $wh/$file: run scripts/prepare_gpu_check.sh --with-k2 and carry .whl"
  done
  if run_stage k2-setup 540 90 env TLB_VENV="$venv" PYTHON="$python" TLB_SYSTEM_TORCH=1 TLB_WHEELHOUSE="$wh" \
      TLB_REQUIREMENTS="$wh/requirements-gpu-check.txt" TLB_BUILDS=k2 TLB_K2=build K2_SOURCE="$wh/k2-a741ae8.tar.gz" \
      PYBIND11_SOURCE="$wh/pybind11-5bc0943.tar.gz" MODERNGPU_K2_SOURCE="$wh/moderngpu-8ec9ac0.tar.gz" \
      PIP_NO_INDEX=1 bash "$repo_dir/scripts/setup.sh"; then
    # shellcheck disable=SC2086
    run_stage k2-verify 60 40 "$py" verify_losses.py $k2_verify_args --only k2,k2_pruned --output-json "$results/verify_losses_k2.json"
    # shellcheck disable=SC2086
    run_stage k2-benchmark 300 10 "$py" benchmark_all.py $k2_bench_args --repeat 1 --only k2,k2_pruned --out-dir "$results"
    [ $? -eq 0 ] || bench_rc=1
  fi
fi
if [ "$bench_rc" -ne 0 ] && ls "$results"/*/summary.json >/dev/null 2>&1; then
  run_stage report 30 5 "$py" report.py "$results"  # the report of what the benchmark finished
fi

# --- pack OUT_DIR -----------------------------------------------------------------------------
{
  echo "# gpu_check ($device), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "Total: $SECONDS s of a $budget s budget.${timed_out[*]:+ Out of time: ${timed_out[*]}.}"
  echo
  echo "| stage | result | seconds |"
  echo "|---|---|---:|"
  printf '%s\n' "${stage_rows[@]}"
  echo
  echo "## probe"
  echo
  echo '```'
  cat "$logs/probe.log" 2>/dev/null
  echo '```'
  echo
  echo "## setup (its [setup] lines)"
  echo
  echo '```'
  grep -h '^\[setup\]' "$logs/setup.log" "$logs/k2-setup.log" 2>/dev/null
  echo '```'
  echo
  echo "## imports in the venv"
  echo
  echo '```'
  cat "$logs/imports.log" 2>/dev/null
  echo '```'
  echo
  echo "## benchmark (last lines)"
  echo
  echo '```'
  tail -n 40 "$logs/benchmark.log" 2>/dev/null
  [ ! -f "$logs/k2-benchmark.log" ] || { echo "--- k2 stage:"; tail -n 20 "$logs/k2-benchmark.log"; }
  echo '```'
} >"$md"
[ -f "$results/summary.md" ] && cp "$results/summary.md" "$out/summary.md"
[ -f "$results/summary.json" ] && cp "$results/summary.json" "$out/summary.json"
[ -f "$logs/verify.log" ] && cp "$logs/verify.log" "$out/verify_losses.txt"
[ -f "$logs/k2-verify.log" ] && cat "$logs/k2-verify.log" >>"$out/verify_losses.txt"
pack_py="$py"
[ -x "$pack_py" ] || pack_py="$python"
"$pack_py" - "$out" "$work" "$results" "$logs" "$venv/setup-logs" <<'EOF' 2>&1
import os, sys, tarfile
out, work, results, logs, setup_logs = sys.argv[1:]

def walk(top):
    for root, _, files in os.walk(top):
        for name in sorted(files):
            yield os.path.join(root, name)

def pack(name, paths, cap=9 << 20, largest=60 << 20):
    """A .tar.gz under 16 MiB (what comes back from the device): files are added while the
    archive is under ``cap``, and none larger than ``largest`` (JSON traces compress ~10x)."""
    paths = [p for p in paths if os.path.isfile(p)]
    if not paths:
        return
    left = []
    with open(os.path.join(out, name), "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for path in paths:
            if raw.tell() > cap or os.path.getsize(path) > largest:
                left.append(os.path.relpath(path, work))
                continue
            tar.add(path, arcname=os.path.relpath(path, work if path.startswith(work) else os.path.dirname(path)))
    if left:
        print(f"{name}: {len(left)} file(s) left out to stay under 16 MiB: {', '.join(left[:20])}")

texts = [p for top in (logs, setup_logs) for p in walk(top)]
texts += [p for p in walk(results) if not p.endswith((".pt.trace.json", ".png"))]
pack("logs.tar.gz", texts)
traces = [p for p in walk(results) if p.endswith(".pt.trace.json")]
first = {}
for p in traces:  # one trace of every run first, the smallest, then the rest
    first.setdefault(os.path.dirname(p), []).append(p)
ordered = [min(v, key=os.path.getsize) for v in first.values()]
ordered += sorted((p for p in traces if p not in ordered), key=os.path.getsize)
pack("traces.tar.gz", ordered)
pack("pictures.tar.gz", [p for top in (results, os.path.join(work, "pic")) for p in walk(top) if p.endswith(".png")])
EOF
say "done in $SECONDS s (budget $budget s)${timed_out[*]:+; out of time: ${timed_out[*]}}; results in $out: $(find "$out" -maxdepth 1 -type f -printf '%f ')"
