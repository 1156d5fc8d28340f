#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in .venv:
#   1. pip install -r requirements.txt (skipped when nothing it depends on has changed);
#   2. builds optimized_transducer 1.4 and fast_rnnt 1.3 from the registry's source
#      distributions: a CUDA build for the GPU at hand (or for TLB_CUDA_ARCH) when nvcc matches
#      torch's CUDA, a CPU build otherwise;
#   3. builds warp_rnnt 0.7.0 (CUDA-only) for a CUDA setup;
#   4. k2: the real k2 1.24.4 (commit a741ae8), which has no wheel for today's torch: tries
#      `k2utils install k2` (bounded), then builds it from source (CPU, or CUDA as above); when
#      that is impossible the k2 benchmarks use fast_rnnt instead and say so.
# Every source build leaves a wheel in a build cache keyed by what decides the binary; a later
# setup (another venv or clone) with the same key installs that wheel in seconds.
# Safe to run again: a second run only checks and prints what it reuses.
#
# Usage: bash scripts/setup.sh [--with NAME]...   (--with NAME also installs requirements-NAME.txt,
#        with --no-deps: it lists what it needs beyond requirements.txt)
# Environment:
#   TLB_VENV=DIR          the virtual environment (default .venv in the repository)
#   PYTHON=EXE            the interpreter that creates it (default python3)
#   TLB_CUDA_ARCH=9.0     CUDA build for this architecture (list: "8.0;9.0"), even without a GPU
#                         (a compile check); default: the GPU's, or the user's TORCH_CUDA_ARCH_LIST
#   CUDA_HOME=DIR         the CUDA toolkit with nvcc (default /usr/local/cuda)
#   TLB_SYSTEM_TORCH=1    venv with the system's site packages; use the torch (and torchaudio)
#                         that PYTHON has, never download them
#   TLB_WHEELHOUSE=DIR    install everything from that folder (pip --no-index --find-links DIR);
#                         fill it with scripts/fill_wheelhouse.sh on a connected machine
#   TLB_REQUIREMENTS=F    a requirements file instead of requirements.txt (a reduced set)
#   TLB_BUILDS="fast_rnnt optimized_transducer warp_rnnt k2"   the source builds to do
#   TLB_K2=auto|build|skip  auto (default): cache, k2utils, source build; build: no k2utils;
#                         skip: no k2 at all (the k2 benchmarks use fast_rnnt)
#   K2_SOURCE=P           tarball, zip or folder of k2 commit a741ae8 (default: the file
#                         k2-a741ae8.tar.gz of TLB_THIRD_PARTY when there, else GitHub's archive)
#   PYBIND11_SOURCE=P     pybind11 commit 5bc0943 for k2 (default: TLB_THIRD_PARTY's
#                         pybind11-5bc0943.tar.gz when there, else k2's CMake downloads it)
#   MODERNGPU_SOURCE=P    moderngpu 2b39855 for optimized_transducer's CUDA build, and
#   MODERNGPU_K2_SOURCE=P moderngpu 8ec9ac0 for k2's (default: TLB_THIRD_PARTY's
#                         moderngpu-<commit>.tar.gz when there, else downloaded from GitHub)
#   TLB_THIRD_PARTY=DIR   where those defaults are looked for (default ../shared/third_party
#                         beside the repository)
#   TLB_CACHE=DIR         the build cache (default ${XDG_CACHE_HOME:-~/.cache}/tlbench)
#   TLB_REBUILD=1         build again, ignoring the cache (or a list: TLB_REBUILD="fast_rnnt k2")
#   TLB_BUILD_TIMING=1    time every compiler call of the CMake builds (setup-logs/compile-times-*)
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TLB_VENV:-$repo_dir/.venv}"
python_bin="${PYTHON:-python3}"
log_dir="$venv/setup-logs"
build_dir="$venv/build"
requirements="${TLB_REQUIREMENTS:-$repo_dir/requirements.txt}"
system_torch="${TLB_SYSTEM_TORCH:-0}"
builds="${TLB_BUILDS-fast_rnnt optimized_transducer warp_rnnt k2}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { echo "[setup] $*"; }

extras=()
while [ $# -gt 0 ]; do
  case "$1" in
    --with) [ $# -ge 2 ] || { say "--with needs a NAME (installs requirements-NAME.txt)" >&2; exit 2; }
            extras+=("$2"); shift 2 ;;
    --with=*) extras+=("${1#--with=}"); shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) say "unknown argument '$1' (allowed: --with NAME)" >&2; exit 2 ;;
  esac
done
[ -f "$requirements" ] || { say "requirements file $requirements does not exist" >&2; exit 2; }

# --- where packages come from ----------------------------------------------------------------
pip_index_args=()
offline=0
if [ -n "${TLB_WHEELHOUSE:-}" ]; then
  if [ ! -d "$TLB_WHEELHOUSE" ]; then
    say "TLB_WHEELHOUSE=$TLB_WHEELHOUSE is not a folder (fill one with scripts/fill_wheelhouse.sh)" >&2
    exit 2
  fi
  wheelhouse="$(cd "$TLB_WHEELHOUSE" && pwd)"
  pip_index_args=(--no-index --find-links "$wheelhouse")
  offline=1
fi

# --- the virtual environment -----------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  if [ "$system_torch" = 1 ]; then
    say "creating virtual environment $venv with the system's site packages (TLB_SYSTEM_TORCH=1, $python_bin)"
    # Without ensurepip (Debian's python3 without python3-venv), the pip that PYTHON sees is used.
    "$python_bin" -m venv --system-site-packages "$venv" 2>/dev/null \
      || "$python_bin" -m venv --system-site-packages --without-pip "$venv"
    # `venv --system-site-packages` sees the BASE interpreter's site packages only: when PYTHON
    # is itself a virtual environment's (e.g. an image's /opt/torch/.venv), its site packages are
    # added after ours through a .pth file, so that its torch is found there too.
    "$python_bin" - "$venv" <<'EOF'
import os, site, sys, sysconfig
if sys.prefix != sys.base_prefix:
    dirs = [d for d in site.getsitepackages() if os.path.realpath(d).startswith(os.path.realpath(sys.prefix))]
    target = os.path.join(sys.argv[1], "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")
    with open(os.path.join(target, "_tlb_system_site.pth"), "w") as f:
        for d in dirs:
            f.write(f"import site; site.addsitedir({d!r})\n")
EOF
  else
    say "creating virtual environment $venv"
    "$python_bin" -m venv "$venv"
  fi
fi
py="$venv/bin/python"
mkdir -p "$log_dir" "$build_dir"
if [ "$system_torch" = 1 ] && ! grep -qi '^include-system-site-packages *= *true' "$venv/pyvenv.cfg"; then
  say "TLB_SYSTEM_TORCH=1 but $venv was made without the system's site packages: remove it or unset TLB_SYSTEM_TORCH" >&2
  exit 1
fi
if ! "$py" -m pip --version >/dev/null 2>&1; then
  say "$venv has no pip (and $python_bin offers none through its site packages): install python3-venv or pip" >&2
  exit 1
fi

pin_of() { sed -n "s/^$1==\([^ ;#]*\).*/\1/p" "$repo_dir/requirements.txt" | head -n 1; }
major_minor() { echo "$1" | sed 's/+.*//' | cut -d. -f1,2; }

# torch/torchaudio: pinned by requirements.txt; with TLB_SYSTEM_TORCH=1 the system's are used
# and excluded from what pip installs, and the constraint below keeps pip from replacing them.
constraints="$build_dir/constraints.txt"
req_to_install="$requirements"
torch_pin="$(pin_of torch)"
torchaudio_pin="$(pin_of torchaudio)"
if [ "$system_torch" = 1 ]; then
  # "<distribution version> <module.__version__>" of a module from outside the venv: pip sees the
  # first (2.11.0), torch may report a local label too (2.11.0+cu130). Exit code 3: the module
  # is the venv's own (e.g. torchaudio, installed by an earlier run), not the system's.
  system_version() {
    "$py" -c 'import importlib, importlib.metadata as md, os, sys
module = importlib.import_module(sys.argv[1])
if os.path.realpath(module.__file__).startswith(os.path.realpath(sys.prefix) + os.sep):
    sys.exit(3)
try:
    dist = md.version(sys.argv[1])
except md.PackageNotFoundError:
    dist = module.__version__
print(dist, module.__version__)' "$1"
  }
  if ! found="$(system_version torch 2>"$log_dir/system-torch.log")"; then
    say "TLB_SYSTEM_TORCH=1 but $py cannot import torch ($(tail -n 1 "$log_dir/system-torch.log" | cut -c1-160)); torch is never downloaded in this mode" >&2
    exit 1
  fi
  read -r torch_found torch_runtime <<<"$found"
  label="$torch_found"
  [ "$torch_runtime" = "$torch_found" ] || label="$torch_found ($torch_runtime)"
  if [ "$(major_minor "$torch_found")" != "$(major_minor "$torch_pin")" ]; then
    say "the system's torch is $label but requirements.txt pins $torch_pin (major.minor differ): use a torch $(major_minor "$torch_pin").x or unset TLB_SYSTEM_TORCH" >&2
    exit 1
  fi
  if [ "$torch_found" = "$torch_pin" ]; then
    say "using the system's torch $label"
  else
    say "using the system's torch $label (requirements.txt pins $torch_pin; another patch release or CUDA build is accepted)"
  fi
  echo "torch==$torch_found" >"$constraints"
  exclude="torch"
  if found="$(system_version torchaudio 2>/dev/null)"; then
    read -r torchaudio_found torchaudio_runtime <<<"$found"
    if [ "$(major_minor "$torchaudio_found")" != "$(major_minor "$torchaudio_pin")" ]; then
      say "the system's torchaudio is $torchaudio_found but requirements.txt pins $torchaudio_pin (major.minor differ)" >&2
      exit 1
    fi
    label="$torchaudio_found"
    [ "$torchaudio_runtime" = "$torchaudio_found" ] || label="$torchaudio_found ($torchaudio_runtime)"
    say "using the system's torchaudio $label"
    echo "torchaudio==$torchaudio_found" >>"$constraints"
    exclude="torch|torchaudio"
  fi
  req_to_install="$build_dir/requirements-system-torch.txt"
  grep -v -i -E "^[[:space:]]*($exclude)[[:space:]]*([=<>!~;#]|$)" "$requirements" >"$req_to_install" || true
else
  { [ -n "$torch_pin" ] && echo "torch==$torch_pin"; [ -n "$torchaudio_pin" ] && echo "torchaudio==$torchaudio_pin"; } >"$constraints" || true
fi

req_stamp="$venv/.requirements.sha256"
req_hash="$(cat "$requirements" "$req_to_install" "$constraints" | sha256sum | cut -d' ' -f1)"
if [ -f "$req_stamp" ] && [ "$(cat "$req_stamp")" = "$req_hash" ]; then
  say "requirements already installed ($(basename "$requirements") unchanged)"
else
  if [ "$offline" = 1 ]; then
    say "installing $(basename "$requirements") from the wheelhouse $wheelhouse (no index)"
  elif [ "$system_torch" = 1 ]; then
    say "installing $(basename "$requirements") without torch (the system's is used)"
  else
    say "installing $(basename "$requirements") (torch 2.11 is ~4.7 GB; about a minute on a fast mirror)"
  fi
  if ! "$py" -m pip install -q "${pip_index_args[@]}" -r "$req_to_install" -c "$constraints" >"$log_dir/pip.log" 2>&1; then
    tail -n 30 "$log_dir/pip.log" >&2
    say "pip install failed; full log: $log_dir/pip.log" >&2
    exit 1
  fi
  echo "$req_hash" >"$req_stamp"
fi

# --- --with NAME: requirements-NAME.txt after the rest ---------------------------------------
# With --no-deps: such a file lists all it needs beyond requirements.txt, so that it can never
# replace a pinned package (requirements-nemo.txt relies on that).
for name in "${extras[@]}"; do
  extra_req="$repo_dir/requirements-$name.txt"
  if [ ! -f "$extra_req" ]; then
    say "--with $name: $(basename "$extra_req") does not exist (yet); skipped"
    continue
  fi
  extra_stamp="$venv/.requirements-$name.sha256"
  extra_hash="$(cat "$extra_req" "$constraints" | sha256sum | cut -d' ' -f1)"
  if [ -f "$extra_stamp" ] && [ "$(cat "$extra_stamp")" = "$extra_hash" ]; then
    say "$(basename "$extra_req") already installed"
  elif "$py" -m pip install -q --no-deps "${pip_index_args[@]}" -r "$extra_req" -c "$constraints" >"$log_dir/pip-$name.log" 2>&1; then
    say "$(basename "$extra_req") installed"
    echo "$extra_hash" >"$extra_stamp"
  else
    tail -n 30 "$log_dir/pip-$name.log" >&2
    say "installing $(basename "$extra_req") failed (log: $log_dir/pip-$name.log)" >&2
    exit 1
  fi
done

# --- CPU or CUDA build, and for which architecture --------------------------------------------
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
nvcc="$cuda_home/bin/nvcc"
if [ ! -x "$nvcc" ] && command -v nvcc >/dev/null 2>&1; then
  nvcc="$(command -v nvcc)"
  cuda_home="$(cd "$(dirname "$nvcc")/.." && pwd)"
fi
cuda_build=OFF
arch_request=""
if [ -n "${TLB_CUDA_ARCH:-}" ]; then
  arch_request="$TLB_CUDA_ARCH"
  arch_origin="TLB_CUDA_ARCH"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  gpu_arch="$("$py" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability() if torch.cuda.is_available() else "")' 2>/dev/null || true)"
  if [ -n "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    arch_request="$TORCH_CUDA_ARCH_LIST"
    arch_origin="TORCH_CUDA_ARCH_LIST; the GPU is ${gpu_arch:-unknown}"
  elif [ -n "$gpu_arch" ]; then
    arch_request="$gpu_arch"
    arch_origin="the GPU"
  else
    say "nvidia-smi sees a GPU but torch.cuda.is_available() is False: CPU build"
  fi
fi
if [ -n "$arch_request" ]; then
  # "9.0", "8.0;9.0", "8.0 9.0+PTX", "90", "sm_90" -> TORCH_CUDA_ARCH_LIST "8.0;9.0" and CMake's "80 90"
  if ! arch_norm="$(echo "$arch_request" | tr -s ',; ' '\n' | sed '/^$/d' | sed -E 's/^(sm_|compute_)//' | awk '
      /^[0-9]+\.[0-9]+[a-z]?(\+PTX)?$/ { print; next }
      /^[0-9]+[0-9][a-z]?$/ { s = $0; sub(/[a-z]$/, "", s); print substr(s, 1, length(s) - 1) "." substr(s, length(s)) substr($0, length(s) + 1); next }
      { bad = 1 } END { exit bad }' | paste -sd';')" || [ -z "$arch_norm" ]; then
    say "$arch_origin=$arch_request is not a CUDA architecture list like 9.0 or 8.0;9.0" >&2
    exit 2
  fi
  cmake_archs="$(echo "$arch_norm" | tr ';' '\n' | sed 's/+PTX//; s/\.//' | paste -sd' ')"
  torch_cuda="$("$py" -c 'import torch; print(torch.version.cuda or "")' 2>/dev/null || true)"
  if [ ! -x "$nvcc" ]; then
    say "CUDA build for $arch_norm ($arch_origin) needs nvcc, which is neither at $cuda_home/bin/nvcc nor on PATH: CPU build"
  else
    nvcc_cuda="$("$nvcc" --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')"
    if [ -z "$torch_cuda" ]; then
      say "torch $("$py" -c 'import torch; print(torch.__version__)') is a CPU-only build: CPU build"
    elif [ "${torch_cuda%%.*}" != "${nvcc_cuda%%.*}" ]; then
      say "nvcc $nvcc_cuda does not match torch's CUDA $torch_cuda: CPU build"
    else
      cuda_build=ON
      say "CUDA build for architecture $arch_norm (from $arch_origin) with nvcc $nvcc_cuda ($nvcc)"
    fi
  fi
fi
if [ "$cuda_build" = ON ]; then flavor="cuda-$arch_norm"; else flavor="cpu"; fi

# The builds find the venv's tools first (cmake from its wheel, ninja).
export PATH="$venv/bin:$PATH"

# --- the build cache --------------------------------------------------------------------------
# Every source build leaves its wheel in the cache, keyed by what decides the binary (see
# make_key); a later setup whose key matches installs that wheel instead of building (seconds).
# scripts/build_support.py writes entries under a temporary name and renames them into place,
# and checks an entry (its key, the wheel's size, SHA-256 and zip) before anything is installed.
cache_root="${TLB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tlbench}"
rebuild="${TLB_REBUILD:-0}"
support="$repo_dir/scripts/build_support.py"
patches="$repo_dir/scripts/patches"
# Offline copies of the sources that k2 and the CUDA builds download otherwise (CI has them).
third_party="${TLB_THIRD_PARTY:-$repo_dir/../shared/third_party}"
[ ! -d "$third_party" ] || third_party="$(cd "$third_party" && pwd)"

wants_rebuild() {  # $1 = module; TLB_REBUILD=1 (all) or a list of names
  case "$rebuild" in
    ""|0|no|false) return 1 ;;
    1|all|yes|true) return 0 ;;
  esac
  case " $(echo "$rebuild" | tr ',' ' ') " in *" $1 "*) return 0 ;; *) return 1 ;; esac
}

build_facts() {  # what every key holds: the Python ABI, torch and its CUDA, the C++ compiler
  [ -z "${py_abi:-}" ] || return 0
  read -r py_abi torch_label <<<"$("$py" -c 'import sysconfig, torch
print(sysconfig.get_config_var("SOABI"), torch.__version__, "(CUDA " + (torch.version.cuda or "none") + ")")')"
  cxx_label="$("${CXX:-c++}" --version 2>/dev/null | head -n 1 || echo unknown)"
}

# make_key NAME SOURCE "PATCH.py ..." RECIPE [LINE...]: the key's text in $key_file, its id in
# $key_id. RECIPE is the build's flags without the paths of its inputs (those inputs are keyed
# by what they are: Python, torch, CUDA, a pinned commit), so that another venv or clone on the
# same machine finds the same key.
make_key() {
  local name="$1" source="$2" patch_list="$3" recipe="$4" p line
  shift 4
  build_facts
  key_file="$build_dir/$name.key.txt"
  {
    echo "tlbench build cache key, format 1"
    echo "package: $name $source"
    printf 'patches:'
    [ -n "$patch_list" ] || printf ' none'
    for p in $patch_list; do printf ' %s=%s' "$p" "$(sha256sum "$patches/$p" | cut -c1-16)"; done
    echo
    echo "python: $py_abi"
    echo "torch: $torch_label"
    if [ "$cuda_build" = ON ]; then echo "build: cuda $arch_norm (nvcc $nvcc_cuda)"; else echo "build: cpu"; fi
    echo "compiler: $cxx_label"
    echo "recipe: $recipe"
    for line in "$@"; do echo "$line"; done
  } >"$key_file"
  key_id="$(sha256sum "$key_file" | cut -c1-24)"
}

dist_version() { "$py" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || echo "?"; }

already_built() {  # $1 = module: the venv holds the build of this key and it imports
  [ "$(cat "$build_dir/$1.key" 2>/dev/null)" = "$key_id" ] && "$py" -c "import $1" >/dev/null 2>&1
}

install_wheel() {  # $1 = module, $2 = wheel, $3 = log: installs it (no deps, no index), checks the import
  "$py" -m pip install --no-deps --no-index --force-reinstall --no-cache-dir "$2" >>"$3" 2>&1 \
    && "$py" -c "import $1" >>"$3" 2>&1
}

from_cache() {  # $1 = module, $2 = dist, $3 = log: true when the cache's wheel of this key is installed
  local tmp out rc start=$SECONDS
  if wants_rebuild "$1"; then
    say "$1: TLB_REBUILD=$rebuild, the build cache is not read"
    return 1
  fi
  mkdir -p "$build_dir/tmp"
  tmp="$(mktemp -d "$build_dir/tmp/cache-XXXXXX")"
  if out="$("$py" "$support" lookup "$cache_root" "$1" "$key_file" "$tmp" 2>&1)"; then rc=0; else rc=$?; fi
  out="$(echo "$out" | tail -n 1)"
  if [ "$rc" -eq 0 ]; then
    if install_wheel "$1" "$out" "$3"; then
      echo "$key_id" >"$build_dir/$1.key"
      say "$1 installed from the build cache ($(basename "$out"), key $key_id, $((SECONDS - start)) s)"
      rm -rf "$tmp"
      return 0
    fi
    say "$1: the cached $(basename "$out") does not install or import (log: $3): entry removed, building it"
    "$py" -m pip uninstall -y "$2" >>"$3" 2>&1 || true
    "$py" "$support" drop "$cache_root" "$1" "$key_file" || true
  elif [ "$rc" -eq 3 ]; then
    say "$1: build cache $out; building it"
  elif [ "$rc" -ne 1 ]; then
    say "$1: the build cache could not be read ($out); building it"
  fi
  rm -rf "$tmp"
  return 1
}

to_cache() {  # $1 = module, $2 = wheel, $3 = build seconds
  local out
  if out="$("$py" "$support" store "$cache_root" "$1" "$key_file" "$2" "$3" 2>&1)"; then
    say "$1 stored in the build cache ($(echo "$out" | tail -n 1))"
  else
    say "$1 not stored in the build cache $cache_root ($(echo "$out" | tail -n 1))"
  fi
}

# build_wheel MODULE DIST LOG START TARGET [ENV=VALUE...]: pip wheel TARGET (no build isolation,
# no dependencies) with the environment given, install the wheel, check the import, cache it.
build_wheel() {
  local module="$1" dist="$2" log="$3" start="$4" target="$5" wheels wheel
  shift 5
  wheels="$build_dir/wheels/$module"
  rm -rf "$wheels" && mkdir -p "$wheels"
  if ! env TLB_COMPILE_TIMES="$log_dir/compile-times-$module.txt" "$@" "$py" -m pip wheel --no-deps --no-build-isolation --no-cache-dir "${pip_index_args[@]}" \
      -w "$wheels" "$target" >>"$log" 2>&1; then
    finish_build "$module" "$dist" "$log" "$start" "the wheel build failed"
    return 1
  fi
  wheel="$(find "$wheels" -maxdepth 1 -name '*.whl' | head -n 1)"
  if [ -z "$wheel" ] || ! install_wheel "$module" "$wheel" "$log"; then
    finish_build "$module" "$dist" "$log" "$start" "${wheel:+$(basename "$wheel") does not install or import}${wheel:-no wheel}"
    return 1
  fi
  finish_build "$module" "$dist" "$log" "$start" || return 1
  to_cache "$module" "$wheel" "$((SECONDS - start))"
  rm -rf "$wheels"
}

# What the CMake builds of fast_rnnt and optimized_transducer need, made once: pybind11 for
# FetchContent, C++17, nvrtc; and cmake itself (its wheel, from the index or the wheelhouse,
# when there is none on PATH) when a build is due.
cmake_support() {
  [ -z "${common_recipe:-}" ] || return 0
  local build_support="$venv/build-support" pybind11_cmake_dir
  mkdir -p "$build_support/pybind11"
  read -r pybind11_cmake_dir pybind11_version <<<"$("$py" -c 'import pybind11; print(pybind11.get_cmake_dir(), pybind11.__version__)')" \
    || return 1
  [ -n "$pybind11_version" ] || return 1
  # Both projects fetch pybind11 2.6 from GitHub with FetchContent; we hand them the registry's
  # pybind11 instead (no network here) through FETCHCONTENT_SOURCE_DIR_PYBIND11.
  cat >"$build_support/pybind11/CMakeLists.txt" <<EOC
cmake_minimum_required(VERSION 3.5)
find_package(pybind11 CONFIG REQUIRED GLOBAL PATHS "$pybind11_cmake_dir")
EOC
  # torch 2.11's headers need C++17; the projects ask for C++14.
  cat >"$build_support/cxx17.cmake" <<'EOC'
set(CMAKE_CXX_STANDARD 17 CACHE STRING "C++ standard" FORCE)
set(CMAKE_CXX_STANDARD 17)
EOC
  nvrtc="$("$py" - <<'EOC'
import glob, os, sys
hits = [h for d in sys.path if os.path.isdir(d)
        for h in glob.glob(os.path.join(d, "nvidia", "cu13", "lib", "libnvrtc.so.13"))]
print(hits[0] if hits else "")
EOC
)"
  common_recipe="-DCMAKE_BUILD_TYPE=Release -DCMAKE_POLICY_VERSION_MINIMUM=3.5"
  common_locations="-DCMAKE_PROJECT_INCLUDE=$build_support/cxx17.cmake \
-DFETCHCONTENT_SOURCE_DIR_PYBIND11=$build_support/pybind11 \
-DCUDA_TOOLKIT_ROOT_DIR=$cuda_home -DPYTHON_EXECUTABLE=$py"
  [ -z "$nvrtc" ] || common_locations="$common_locations -DCUDA_nvrtc_LIBRARY=$nvrtc"
  [ "$cuda_build" != ON ] || common_locations="$common_locations -DCMAKE_CUDA_COMPILER=$nvcc"
}
need_cmake() {
  if ! command -v cmake >/dev/null 2>&1; then
    say "no cmake on PATH: installing the cmake wheel into the venv"
    "$py" -m pip install -q "${pip_index_args[@]}" cmake >"$log_dir/pip-cmake.log" 2>&1 \
      || say "installing cmake failed (log: $log_dir/pip-cmake.log); the CMake builds will fail" >&2
  fi
}

# TLB_BUILD_TIMING=1: every compiler call of the CMake builds is timed into
# $log_dir/compile-times-<module>.txt (seconds, file), e.g. to find a build's longest file.
launcher_locations() {  # $1 = module; prints the CMake arguments (none without TLB_BUILD_TIMING)
  [ "${TLB_BUILD_TIMING:-0}" = 1 ] || return 0
  : >"$log_dir/compile-times-$1.txt"
  local l="$repo_dir/scripts/compile_timer.sh"
  echo "-DCMAKE_CXX_COMPILER_LAUNCHER=$l -DCMAKE_CUDA_COMPILER_LAUNCHER=$l"
}

wants_build() { case " $builds " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# The CUDA builds need patched copies: the registry's sdist is unpacked into $build_dir/src
# (the downloaded file stays untouched). Sources: the wheelhouse, else the index.
sdist_dir="$build_dir/sdists"
fetch_sdist() {  # $1 = dist name, $2 = version; prints the tarball's path
  local tarball="$sdist_dir/$1-$2.tar.gz"
  mkdir -p "$sdist_dir"
  if [ ! -f "$tarball" ]; then
    if [ "$offline" = 1 ]; then
      local found
      found="$(find "$wheelhouse" -maxdepth 1 \( -iname "$1-$2.tar.gz" -o -iname "$(echo "$1" | tr _ -)-$2.tar.gz" \) | head -n 1)"
      [ -n "$found" ] || { echo "$1-$2.tar.gz is not in the wheelhouse $wheelhouse" >&2; return 1; }
      cp "$found" "$tarball.part" && mv "$tarball.part" "$tarball"
    else
      PYTHON="$py" bash "$repo_dir/scripts/fill_wheelhouse.sh" "$sdist_dir" --sdists-only >&2 || return 1
      [ -f "$tarball" ] || { echo "fill_wheelhouse.sh did not fetch $1-$2.tar.gz" >&2; return 1; }
    fi
  fi
  echo "$tarball"
}
unpack_sdist() {  # $1 = dist name, $2 = version; prints the fresh source folder
  local tarball src="$build_dir/src/$1-$2"
  tarball="$(fetch_sdist "$1" "$2")" || return 1
  "$py" "$support" unpack "$tarball" "$src" setup.py | tail -n 1
  [ -f "$src/setup.py" ] || return 1
}

apply_patch() {  # $1 = patch file in scripts/patches, then its arguments
  local patch="$1"
  shift
  "$py" "$patches/$patch" "$@"
}

# moderngpu, patched for CUDA 13 (scripts/patches/moderngpu_cuda13.py): commit 2b39855 for
# optimized_transducer, 8ec9ac0 for k2; both download it from GitHub with FetchContent.
# prepare_moderngpu COMMIT SHA256-OF-THE-GITHUB-ZIP VARIABLE: prints the patched folder.
prepare_moderngpu() {
  local commit="$1" sha="$2" var="$3" short="${1:0:7}" dest source stamp out
  dest="$build_dir/moderngpu-$short"
  source="${!var:-}"
  stamp="$(sha256sum "$patches/moderngpu_cuda13.py" | cut -c1-16) ${source:-download}"
  if [ -f "$dest/.tlb-patched" ] && [ "$(cat "$dest/.tlb-patched")" = "$stamp" ]; then echo "$dest"; return 0; fi
  if [ -z "$source" ] && [ -f "$third_party/moderngpu-$short.tar.gz" ]; then
    source="$third_party/moderngpu-$short.tar.gz"
    stamp="${stamp% *} $source"
  fi
  if [ -z "$source" ]; then
    source="$build_dir/moderngpu-$short.zip"
    if ! out="$("$py" "$support" download "https://github.com/moderngpu/moderngpu/archive/$commit.zip" "$source" "$sha" 2>&1)"; then
      say "moderngpu $short could not be downloaded from GitHub ($(echo "$out" | tail -n 1 | cut -c1-120)): set $var to a tarball, zip or folder of moderngpu commit $short" >&2
      return 1
    fi
  fi
  if ! out="$("$py" "$support" unpack "$source" "$dest" src/moderngpu/context.hxx "$commit" 2>&1)"; then
    say "$var=$source: $(echo "$out" | tail -n 1)" >&2
    return 1
  fi
  if ! out="$(apply_patch moderngpu_cuda13.py "$dest" 2>&1)"; then
    say "moderngpu $short could not be patched: $out" >&2
    return 1
  fi
  echo "$stamp" >"$dest/.tlb-patched"
  echo "$dest"
}

cuda_code_report() {  # $1 = dist name; one line: which of its libraries hold GPU code, for which sm
  "$py" - "$1" "$cuda_home/bin/cuobjdump" <<'EOC' 2>/dev/null || true
import importlib.metadata as md, os, shutil, subprocess, sys
so = [str(f.locate()) for f in md.distribution(sys.argv[1]).files or [] if ".so" in f.name]
cuobjdump = sys.argv[2] if os.access(sys.argv[2], os.X_OK) else shutil.which("cuobjdump")
parts = []
for path in so:
    data = open(path, "rb").read()
    if b".nv_fatbin" not in data:
        continue
    sms = ""
    if cuobjdump:
        out = subprocess.run([cuobjdump, "--list-elf", path], capture_output=True, text=True).stdout
        sms = ",".join(sorted({w.rsplit(".", 2)[-2] for w in out.split() if w.endswith(".cubin")}))
    parts.append(os.path.basename(path) + (f" ({sms})" if sms else " (.nv_fatbin)"))
print("GPU code in " + ", ".join(parts) if parts else "NO GPU code in " + ", ".join(map(os.path.basename, so)))
EOC
}

finish_build() {  # $1 = module, $2 = dist name, $3 = log, $4 = start time (SECONDS)[, $5 = what failed]
  local seconds=$((SECONDS - $4))
  if [ -z "${5:-}" ] && "$py" -c "import $1" >"$3.import" 2>&1; then
    echo "$key_id" >"$build_dir/$1.key"
    if [ "$cuda_build" = ON ]; then
      say "$1 built (CUDA $arch_norm, ${seconds} s; $(cuda_code_report "$2"))"
    else
      say "$1 built (CPU, ${seconds} s)"
    fi
    return 0
  fi
  rm -f "$build_dir/$1.key"
  [ ! -f "$3.import" ] || cat "$3.import" >>"$3"
  tail -n 30 "$3" >&2
  local note="its benchmark will report 'unavailable'"
  [ -z "${fallback_note:-}" ] || note="$fallback_note"
  say "building $1 failed after ${seconds} s (${5:-it does not import}; log: $3); $note" >&2
  return 1
}

# --- build optimized_transducer and fast_rnnt from source ------------------------------------
build_sdist() {  # $1 = import name, $2 = version, $3 = env var prefix (OT/FT)
  local module="$1" version="$2" prefix="$3" log="$log_dir/build-$1.log" start=$SECONDS src recipe args
  local patch_list="" extra=() mgpu=""
  wants_build "$module" || { say "$module skipped (not in TLB_BUILDS)"; return 0; }
  if ! cmake_support; then
    say "building $module needs pybind11 in the venv (requirements.txt has it); its benchmark will report 'unavailable'" >&2
    return 0
  fi
  recipe="$common_recipe -D${prefix}_WITH_CUDA=$cuda_build -D${prefix}_BUILD_TESTS=OFF, C++17 (CMAKE_PROJECT_INCLUDE)"
  [ "$cuda_build" != ON ] || patch_list="arch_candidates.py"
  if [ "$cuda_build" = ON ] && [ "$module" = optimized_transducer ]; then
    patch_list="$patch_list moderngpu_cuda13.py"
    extra+=("moderngpu: $moderngpu_commit")
  fi
  make_key "$module" "$version (the registry's sdist)" "$patch_list" "$recipe" \
    "pybind11: $pybind11_version (the venv's, through FETCHCONTENT_SOURCE_DIR_PYBIND11)" "${extra[@]}"
  if already_built "$module"; then
    say "$module already built ($flavor, $(dist_version "$module"))"
    return 0
  fi
  : >"$log"
  from_cache "$module" "$module" "$log" && return 0
  if ! command -v make >/dev/null 2>&1; then
    say "building $module needs make, which is not on PATH; its benchmark will report 'unavailable'" >&2
    return 0
  fi
  need_cmake
  args="$common_recipe -D${prefix}_WITH_CUDA=$cuda_build -D${prefix}_BUILD_TESTS=OFF $common_locations $(launcher_locations "$module")"
  if [ "$cuda_build" = OFF ]; then
    say "building $module==$version from source (CPU; about a minute)"
    if ! src="$(fetch_sdist "$module" "$version" 2>>"$log")"; then
      say "building $module failed: no source distribution (log: $log); its benchmark will report 'unavailable'" >&2
      return 0
    fi
    build_wheel "$module" "$module" "$log" "$start" "$src" "${prefix}_CMAKE_ARGS=$args" "${prefix}_MAKE_ARGS=-j$(nproc)" || true
  else
    say "building $module==$version from source (CUDA $arch_norm; a minute or two)"
    if ! src="$(unpack_sdist "$module" "$version" 2>>"$log")" || ! apply_patch arch_candidates.py "$src" "$prefix" "$cmake_archs" 2>>"$log"; then
      say "building $module failed: no patched source (log: $log); its benchmark will report 'unavailable'" >&2
      return 0
    fi
    if [ "$module" = optimized_transducer ]; then
      if ! mgpu="$(prepare_moderngpu "$moderngpu_commit" "$moderngpu_sha256" MODERNGPU_SOURCE)"; then
        say "building $module skipped: no moderngpu (see above); its benchmark will report 'unavailable'" >&2
        return 0
      fi
      args="$args -DFETCHCONTENT_SOURCE_DIR_MODERNGPU=$mgpu"
    fi
    build_wheel "$module" "$module" "$log" "$start" "$src" "${prefix}_CMAKE_ARGS=$args" "${prefix}_MAKE_ARGS=-j$(nproc)" \
      TORCH_CUDA_ARCH_LIST="$arch_norm" CUDA_HOME="$cuda_home" CUDACXX="$nvcc" PATH="$cuda_home/bin:$PATH" || true
  fi
}
moderngpu_commit=2b3985541c8e88a133769598c406c33ddde9d0a5
moderngpu_sha256=191546af18cd5fb858ecb561316f3af67537ab16f610fc8f1a5febbffc27755a
build_sdist optimized_transducer 1.4 OT
build_sdist fast_rnnt 1.3 FT

# --- warp_rnnt: CUDA-only, so built only for a CUDA setup ------------------------------------
# Its setup.py refuses to run unless torch.cuda.is_available(); the unpacked copy drops that
# check (scripts/patches/warp_rnnt_no_gpu_check.py), so that TORCH_CUDA_ARCH_LIST alone decides
# what it is built for (also without a GPU).
if ! wants_build warp_rnnt; then
  say "warp_rnnt skipped (not in TLB_BUILDS)"
elif [ "$cuda_build" != ON ]; then
  say "warp_rnnt skipped: it is CUDA-only and this setup is a CPU build"
else
  make_key warp_rnnt "0.7.0 (the registry's sdist)" warp_rnnt_no_gpu_check.py \
    "torch.utils.cpp_extension, TORCH_CUDA_ARCH_LIST=$arch_norm"
  log="$log_dir/build-warp_rnnt.log" start=$SECONDS
  if already_built warp_rnnt; then
    say "warp_rnnt already built ($flavor)"
  elif : >"$log" && from_cache warp_rnnt warp_rnnt "$log"; then
    :
  else
    say "building warp_rnnt==0.7.0 from source (CUDA $arch_norm)"
    if src="$(unpack_sdist warp_rnnt 0.7.0 2>>"$log")" && apply_patch warp_rnnt_no_gpu_check.py "$src" 2>>"$log"; then
      build_wheel warp_rnnt warp_rnnt "$log" "$start" "$src" TORCH_CUDA_ARCH_LIST="$arch_norm" CUDA_HOME="$cuda_home" \
        PATH="$cuda_home/bin:$PATH" MAX_JOBS="$(nproc)" || true
    else
      say "building warp_rnnt failed: no patched source (log: $log); its benchmark will report 'unavailable'" >&2
    fi
  fi
fi

# --- k2 ---------------------------------------------------------------------------------------
# k2's wheels stop at torch 2.7.1, so for today's torch k2 is built from source: commit a741ae8
# (1.24.4) through its own setup.py, as a CPU build or a CUDA build for the GPU at hand. Before
# that: the build cache, then `k2utils install k2` (k2's wheel pages, bounded). Without k2, the
# k2 benchmarks use fast_rnnt and say so.
k2_commit=a741ae88abc6995345aa166464a239b7d270dd4c
k2_version=1.24.4
pybind11_k2_commit=5bc0943ed96836f46489f53961f6c438d2935357
moderngpu_k2_commit=8ec9ac0de8672de7217d014917eedec5317f75f3
moderngpu_k2_sha256=1c20ffbb81d6f7bbe6107aaa5ee6d37392677c8a5fc7894935149c3ef0a3c2fb
k2_mode="${TLB_K2:-auto}"
fallback_note="the k2 benchmarks use fast_rnnt"

k2_imports() { "$py" -c "import k2" >/dev/null 2>&1; }

# A source: the variable, else the file of that name in ../shared/third_party when it is there.
default_source() {  # $1 = variable name, $2 = file name in $third_party; prints "path (origin)" or nothing
  if [ -n "${!1:-}" ]; then
    echo "${!1}"
  elif [ -f "$third_party/$2" ]; then
    echo "$third_party/$2"
  fi
}

k2_key() {
  local patch_list="k2_no_kaldifeat.py" recipe extra=("pybind11: $pybind11_k2_commit")
  recipe="K2_IS_STABLE=1 setup.py; -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_STANDARD=17 -DK2_WITH_CUDA=$cuda_build -DK2_ENABLE_TESTS=OFF -DK2_ENABLE_BENCHMARK=OFF"
  if [ "$cuda_build" = ON ]; then
    patch_list="$patch_list k2_cuda13.py arch_candidates.py moderngpu_cuda13.py"
    recipe="$recipe -DK2_ENABLE_NVTX=OFF -DK2_BUILD_FOR_ALL_ARCHS=ON"
    extra+=("moderngpu: $moderngpu_k2_commit")
  fi
  make_key k2 "$k2_version (commit $k2_commit)" "$patch_list" "$recipe" "${extra[@]}"
}

build_k2() {
  local log="$log_dir/build-k2.log" start=$SECONDS source src pybind11_dir="" mgpu="" out args inc nvrtc_k2
  : >"$log"
  if ! command -v make >/dev/null 2>&1 || ! command -v git >/dev/null 2>&1; then
    say "building k2 needs make and git (its CMake asks for git), not both on PATH; $fallback_note" >&2
    return 0
  fi
  need_cmake
  # The source: K2_SOURCE, ../shared/third_party/k2-a741ae8.tar.gz, or GitHub's archive.
  source="$(default_source K2_SOURCE "k2-${k2_commit:0:7}.tar.gz")"
  if [ -z "$source" ]; then
    source="$build_dir/k2-$k2_commit.tar.gz"
    if [ ! -f "$source" ] && ! out="$("$py" "$support" download "https://github.com/k2-fsa/k2/archive/$k2_commit.tar.gz" "$source" 2>&1)"; then
      say "k2's source could not be downloaded from GitHub ($(echo "$out" | tail -n 1 | cut -c1-120)): set K2_SOURCE to a tarball or folder of k2 commit ${k2_commit:0:7}; $fallback_note" >&2
      return 0
    fi
  fi
  src="$build_dir/src/k2-${k2_commit:0:7}"
  if ! out="$("$py" "$support" unpack "$source" "$src" k2/python/k2/__init__.py "$k2_commit" 2>&1)"; then
    say "K2_SOURCE=$source: $(echo "$out" | tail -n 1); $fallback_note" >&2
    return 0
  fi
  if ! grep -q "^set(K2_VERSION \"$k2_version\")" "$src/CMakeLists.txt"; then
    say "K2_SOURCE=$source is not k2 $k2_version ($(grep -m1 '^set(K2_VERSION' "$src/CMakeLists.txt" || echo 'no K2_VERSION')); $fallback_note" >&2
    return 0
  fi
  if ! apply_patch k2_no_kaldifeat.py "$src" >>"$log" 2>&1; then
    say "k2's source could not be patched (log: $log); $fallback_note" >&2
    return 0
  fi
  # pybind11 5bc0943 (what k2 pins): PYBIND11_SOURCE, ../shared/third_party, or k2's own download.
  out="$(default_source PYBIND11_SOURCE "pybind11-${pybind11_k2_commit:0:7}.tar.gz")"
  if [ -n "$out" ]; then
    pybind11_dir="$build_dir/src/pybind11-${pybind11_k2_commit:0:7}"
    if ! out="$("$py" "$support" unpack "$out" "$pybind11_dir" tools/pybind11Common.cmake "$pybind11_k2_commit" 2>&1)"; then
      say "PYBIND11_SOURCE: $(echo "$out" | tail -n 1); $fallback_note" >&2
      return 0
    fi
  fi
  nvrtc_k2="$("$py" -c 'import glob, os, sys
print(next((h for d in sys.path if os.path.isdir(d) for h in glob.glob(os.path.join(d, "nvidia", "cu13", "lib", "libnvrtc.so.13"))), ""))')"
  args="-DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_STANDARD=17 -DK2_WITH_CUDA=$cuda_build -DK2_ENABLE_TESTS=OFF -DK2_ENABLE_BENCHMARK=OFF"
  args="$args -DPYTHON_EXECUTABLE=$py -DCUDA_TOOLKIT_ROOT_DIR=$cuda_home $(launcher_locations k2)"
  [ -z "$nvrtc_k2" ] || args="$args -DCUDA_nvrtc_LIBRARY=$nvrtc_k2"
  [ -z "$pybind11_dir" ] || args="$args -DFETCHCONTENT_SOURCE_DIR_PYBIND11=$pybind11_dir"
  if [ "$cuda_build" = ON ]; then
    if ! apply_patch k2_cuda13.py "$src" >>"$log" 2>&1 || ! apply_patch arch_candidates.py "$src" K2 "$cmake_archs" >>"$log" 2>&1; then
      say "k2's source could not be patched for CUDA 13 (log: $log); $fallback_note" >&2
      return 0
    fi
    if ! mgpu="$(prepare_moderngpu "$moderngpu_k2_commit" "$moderngpu_k2_sha256" MODERNGPU_K2_SOURCE)"; then
      say "building k2 skipped: no moderngpu ${moderngpu_k2_commit:0:7} (see above); $fallback_note" >&2
      return 0
    fi
    args="$args -DK2_ENABLE_NVTX=OFF -DK2_BUILD_FOR_ALL_ARCHS=ON -DFETCHCONTENT_SOURCE_DIR_MODERNGPU=$mgpu -DCMAKE_CUDA_COMPILER=$nvcc"
    # curand.h: in the toolkit, or (CUDA 13 toolkits without it) in the torch wheel's nvidia/cu13/include.
    if [ ! -f "$cuda_home/include/curand.h" ]; then
      inc="$("$py" -c 'import glob, os, sys
print(next((os.path.dirname(h) for d in sys.path if os.path.isdir(d) for h in glob.glob(os.path.join(d, "nvidia", "cu13", "include", "curand.h"))), ""))')"
      [ -z "$inc" ] || args="$args -DCMAKE_CUDA_FLAGS=-I$inc -DCMAKE_CXX_FLAGS=-I$inc"
    fi
    say "building k2 $k2_version (${k2_commit:0:7}) from source (CUDA $arch_norm; long: ~36 min on 2 cores, ~5 min on 16, for one architecture)"
  else
    say "building k2 $k2_version (${k2_commit:0:7}) from source (CPU; ~12 min on 2 cores)"
  fi
  local pybind11_origin="the download in k2's CMake"
  [ -z "$pybind11_dir" ] || pybind11_origin="$pybind11_dir"
  say "k2 sources: $source; pybind11: $pybind11_origin${mgpu:+; moderngpu: $mgpu}"
  # GIT_CEILING_DIRECTORIES: k2's CMake asks git for its commit; the unpacked copy is no git
  # checkout, and the repository around the venv must not answer instead.
  if ! build_wheel k2 k2 "$log" "$start" "$src" K2_CMAKE_ARGS="$args" K2_MAKE_ARGS="-j$(nproc)" K2_IS_STABLE=1 \
      GIT_CEILING_DIRECTORIES="$build_dir/src" TORCH_CUDA_ARCH_LIST="${arch_norm:-}" CUDA_HOME="$cuda_home" \
      PATH="$cuda_home/bin:$PATH"; then
    if [ -z "$pybind11_dir" ] && grep -qiE "pybind11.*(download|fail)|(download|fail).*pybind11" "$log"; then
      say "k2's CMake could not download pybind11 ${pybind11_k2_commit:0:7}: set PYBIND11_SOURCE to a tarball or folder of pybind11 commit ${pybind11_k2_commit:0:7}" >&2
    fi
    return 0
  fi
  say "k2: $("$py" -c 'import k2, importlib.metadata as m; print("k2", m.version("k2"), "from", k2.__file__)')"
}

case "$k2_mode" in
  auto|build|skip) ;;
  *) say "TLB_K2=$k2_mode: allowed are auto (default), build (no k2utils attempt) and skip" >&2; exit 2 ;;
esac
if [ "$k2_mode" = skip ]; then
  if k2_imports; then
    say "k2: TLB_K2=skip, nothing tried; the k2 installed earlier stays ($(dist_version k2); pip uninstall k2 to use fast_rnnt)"
  else
    say "k2 skipped (TLB_K2=skip); the k2 benchmarks use fast_rnnt"
  fi
else
  k2_key
  if already_built k2; then
    say "k2 already built ($flavor, $(dist_version k2))"
  elif k2_imports && [ ! -f "$build_dir/k2.key" ]; then
    say "k2 already installed ($(dist_version k2), not built by this setup)"
  elif wants_build k2 && : >"$log_dir/build-k2.log" && from_cache k2 k2 "$log_dir/build-k2.log"; then
    :
  else
    tried=""
    if [ "$k2_mode" = auto ] && [ "$offline" != 1 ] && [ -x "$venv/bin/k2utils" ]; then
      say "trying 'k2utils install k2' (k2's own wheel pages; 20 s limit)"
      if timeout 20 "$venv/bin/k2utils" install k2 >"$log_dir/k2.log" 2>&1 && k2_imports; then
        rm -f "$build_dir/k2.key"
        tried="installed"
        say "k2 installed by k2utils ($(dist_version k2))"
      else
        tried="$(tail -n 1 "$log_dir/k2.log" | cut -c1-160)"
        say "k2utils gave no k2 for this torch ($tried)"
      fi
    fi
    if [ "$tried" != installed ]; then
      if wants_build k2; then
        build_k2
      elif [ "$offline" = 1 ] && [ -z "$tried" ]; then
        say "k2 not tried (offline install from a wheelhouse, k2 not in TLB_BUILDS); the k2 benchmarks use fast_rnnt"
      else
        say "k2 not built (not in TLB_BUILDS); the k2 benchmarks use fast_rnnt"
      fi
    fi
  fi
fi
say "environment ready: $venv"
