#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in .venv:
#   1. pip install -r requirements.txt (skipped when requirements.txt has not changed);
#   2. builds optimized_transducer 1.4 and fast_rnnt 1.3 from the registry's source
#      distributions (CUDA build when a GPU and an nvcc matching torch's CUDA are present,
#      CPU build otherwise), skipped when both already import;
#   3. tries the real k2 through `k2utils install k2` with a bounded timeout; when k2's wheel
#      pages cannot be reached, the k2 benchmarks use fast_rnnt instead and say so.
# Safe to run again: a second run only checks and prints what it reuses.
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TLB_VENV:-$repo_dir/.venv}"
python_bin="${PYTHON:-python3}"
log_dir="$venv/setup-logs"
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { echo "[setup] $*"; }

if [ ! -x "$venv/bin/python" ]; then
  say "creating virtual environment $venv"
  "$python_bin" -m venv "$venv"
fi
py="$venv/bin/python"
mkdir -p "$log_dir"

req_stamp="$venv/.requirements.sha256"
req_hash="$(sha256sum "$repo_dir/requirements.txt" | cut -d' ' -f1)"
if [ -f "$req_stamp" ] && [ "$(cat "$req_stamp")" = "$req_hash" ]; then
  say "requirements already installed (requirements.txt unchanged)"
else
  say "installing requirements.txt (torch 2.11 is ~4.7 GB; about a minute on a fast mirror)"
  if ! "$py" -m pip install -q -r "$repo_dir/requirements.txt" >"$log_dir/pip.log" 2>&1; then
    tail -n 30 "$log_dir/pip.log" >&2
    say "pip install failed; full log: $log_dir/pip.log" >&2
    exit 1
  fi
  echo "$req_hash" >"$req_stamp"
fi

# --- build optimized_transducer and fast_rnnt from source ---------------------------------
cuda_build=OFF
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  torch_cuda="$("$py" -c 'import torch; print(torch.version.cuda or "")')"
  nvcc_cuda="$(/usr/local/cuda/bin/nvcc --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')"
  if [ -n "$torch_cuda" ] && [ "${torch_cuda%%.*}" = "${nvcc_cuda%%.*}" ]; then
    cuda_build=ON
  else
    say "GPU present but nvcc $nvcc_cuda does not match torch's CUDA $torch_cuda: CPU build"
  fi
fi

build_support="$venv/build-support"
mkdir -p "$build_support/pybind11"
pybind11_cmake_dir="$("$py" -c 'import pybind11; print(pybind11.get_cmake_dir())')"
# Both projects fetch pybind11 2.6 from GitHub with FetchContent; we hand them the registry's
# pybind11 instead (no network here) through FETCHCONTENT_SOURCE_DIR_PYBIND11.
cat >"$build_support/pybind11/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.5)
find_package(pybind11 CONFIG REQUIRED GLOBAL PATHS "$pybind11_cmake_dir")
EOF
# torch 2.11's headers need C++17; the projects ask for C++14.
cat >"$build_support/cxx17.cmake" <<'EOF'
set(CMAKE_CXX_STANDARD 17 CACHE STRING "C++ standard" FORCE)
set(CMAKE_CXX_STANDARD 17)
EOF
nvrtc="$("$py" - <<'EOF'
import glob, os, sysconfig
hits = glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "cu13", "lib", "libnvrtc.so.13"))
print(hits[0] if hits else "")
EOF
)"

common_cmake_args="-DCMAKE_BUILD_TYPE=Release -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
-DCMAKE_PROJECT_INCLUDE=$build_support/cxx17.cmake \
-DFETCHCONTENT_SOURCE_DIR_PYBIND11=$build_support/pybind11 \
-DCUDA_TOOLKIT_ROOT_DIR=/usr/local/cuda -DPYTHON_EXECUTABLE=$py"
[ -n "$nvrtc" ] && common_cmake_args="$common_cmake_args -DCUDA_nvrtc_LIBRARY=$nvrtc"

build_sdist() {  # $1 = import name, $2 = pip requirement, $3 = env var prefix (OT/FT)
  local module="$1" requirement="$2" prefix="$3"
  if "$py" -c "import $module" >/dev/null 2>&1; then
    say "$module already built ($("$py" -c "import importlib.metadata as m; print(m.version('$module'))"))"
    return 0
  fi
  say "building $requirement from source (CUDA $cuda_build; about a minute)"
  local args="$common_cmake_args -D${prefix}_WITH_CUDA=$cuda_build -D${prefix}_BUILD_TESTS=OFF"
  if env "${prefix}_CMAKE_ARGS=$args" "${prefix}_MAKE_ARGS=-j$(nproc)" \
      "$py" -m pip install --no-build-isolation --no-binary "$module" --no-cache-dir "$requirement" \
      >"$log_dir/build-$module.log" 2>&1 && "$py" -c "import $module" >/dev/null 2>&1; then
    say "$module built"
  else
    tail -n 30 "$log_dir/build-$module.log" >&2
    say "building $module failed (log: $log_dir/build-$module.log); its benchmark will report 'unavailable'" >&2
  fi
}
build_sdist optimized_transducer "optimized_transducer==1.4" OT
build_sdist fast_rnnt "fast_rnnt==1.3" FT

# --- warp_rnnt: CUDA-only, so built only for a CUDA setup ---------------------------------
if [ "$cuda_build" = ON ]; then
  if "$py" -c "import warp_rnnt" >/dev/null 2>&1; then
    say "warp_rnnt already built"
  else
    say "building warp_rnnt from source (CUDA)"
    if "$py" -m pip install --no-build-isolation --no-cache-dir warp_rnnt >"$log_dir/build-warp_rnnt.log" 2>&1; then
      say "warp_rnnt built"
    else
      say "building warp_rnnt failed (log: $log_dir/build-warp_rnnt.log); its benchmark will report 'unavailable'" >&2
    fi
  fi
else
  say "warp_rnnt skipped: it is CUDA-only and this setup is a CPU build"
fi

# --- the real k2, when k2's wheel pages can be reached ------------------------------------
if "$py" -c "import k2" >/dev/null 2>&1; then
  say "k2 already installed"
else
  say "trying 'k2utils install k2' (k2's own wheel pages; 20 s limit)"
  if timeout 20 "$venv/bin/k2utils" install k2 >"$log_dir/k2.log" 2>&1 && "$py" -c "import k2" >/dev/null 2>&1; then
    say "k2 installed"
  else
    say "k2 not installed ($(tail -n 1 "$log_dir/k2.log" | cut -c1-160)); the k2 benchmarks use fast_rnnt"
  fi
fi
say "environment ready: $venv"
