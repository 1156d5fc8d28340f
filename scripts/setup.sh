#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in .venv:
#   1. pip install -r requirements.txt (skipped when nothing it depends on has changed);
#   2. builds optimized_transducer 1.4 and fast_rnnt 1.3 from the registry's source
#      distributions: a CUDA build for the GPU at hand (or for TLB_CUDA_ARCH) when nvcc matches
#      torch's CUDA, a CPU build otherwise; skipped when the build of that kind already imports;
#   3. builds warp_rnnt 0.7.0 (CUDA-only) for a CUDA setup;
#   4. tries the real k2 through `k2utils install k2` with a bounded timeout; when k2's wheel
#      pages cannot be reached, the k2 benchmarks use fast_rnnt instead and say so.
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
#   MODERNGPU_SOURCE=P    tarball, zip or folder of moderngpu 2b39855 for optimized_transducer's
#                         CUDA build (default: downloaded from GitHub as upstream does)
#   TLB_SYSTEM_TORCH=1    venv with the system's site packages; use the torch (and torchaudio)
#                         that PYTHON has, never download them
#   TLB_WHEELHOUSE=DIR    install everything from that folder (pip --no-index --find-links DIR);
#                         fill it with scripts/fill_wheelhouse.sh on a connected machine
#   TLB_REQUIREMENTS=F    a requirements file instead of requirements.txt (a reduced set)
#   TLB_BUILDS="fast_rnnt optimized_transducer warp_rnnt"   the source builds to do
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TLB_VENV:-$repo_dir/.venv}"
python_bin="${PYTHON:-python3}"
log_dir="$venv/setup-logs"
build_dir="$venv/build"
requirements="${TLB_REQUIREMENTS:-$repo_dir/requirements.txt}"
system_torch="${TLB_SYSTEM_TORCH:-0}"
builds="${TLB_BUILDS-fast_rnnt optimized_transducer warp_rnnt}"
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

# What the CMake builds need, made once when one is due: pybind11 for FetchContent, C++17, nvrtc,
# and cmake itself (its wheel, from the index or the wheelhouse, when there is none on PATH).
cmake_support() {
  [ -z "${common_cmake_args:-}" ] || return 0
  local build_support="$venv/build-support" pybind11_cmake_dir nvrtc
  mkdir -p "$build_support/pybind11"
  pybind11_cmake_dir="$("$py" -c 'import pybind11; print(pybind11.get_cmake_dir())')" || return 1
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
import glob, os, sys
hits = [h for d in sys.path if os.path.isdir(d)
        for h in glob.glob(os.path.join(d, "nvidia", "cu13", "lib", "libnvrtc.so.13"))]
print(hits[0] if hits else "")
EOF
)"
  common_cmake_args="-DCMAKE_BUILD_TYPE=Release -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
-DCMAKE_PROJECT_INCLUDE=$build_support/cxx17.cmake \
-DFETCHCONTENT_SOURCE_DIR_PYBIND11=$build_support/pybind11 \
-DCUDA_TOOLKIT_ROOT_DIR=$cuda_home -DPYTHON_EXECUTABLE=$py"
  [ -z "$nvrtc" ] || common_cmake_args="$common_cmake_args -DCUDA_nvrtc_LIBRARY=$nvrtc"
  [ "$cuda_build" != ON ] || common_cmake_args="$common_cmake_args -DCMAKE_CUDA_COMPILER=$nvcc"
  if ! command -v cmake >/dev/null 2>&1; then
    say "no cmake on PATH: installing the cmake wheel into the venv"
    "$py" -m pip install -q "${pip_index_args[@]}" cmake >"$log_dir/pip-cmake.log" 2>&1 \
      || say "installing cmake failed (log: $log_dir/pip-cmake.log); the CMake builds will fail" >&2
  fi
}

wants_build() { case " $builds " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# The build of each kind is remembered in $build_dir/<module>.flavor ("cpu" or "cuda-9.0"); a
# module that imports without that file is an earlier CPU build.
reuse_build() {  # $1 = module; true when the build of the wanted kind is there
  local have="cpu"
  [ -f "$build_dir/$1.flavor" ] && have="$(cat "$build_dir/$1.flavor")"
  [ "$have" = "$flavor" ] && "$py" -c "import $1" >/dev/null 2>&1
}

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
      cp "$found" "$tarball"
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
  rm -rf "$src" && mkdir -p "$build_dir/src"
  tar -xzf "$tarball" -C "$build_dir/src" || return 1
  [ -d "$src" ] || { echo "$tarball did not unpack into $src" >&2; return 1; }
  echo "$src"
}

# The CMake projects hard-code GPU architecture candidates (35 50 60 61 70 75, + 80 86) and fall
# back to all of them when the GPU's is not among them; nvcc 13 refuses compute_35, so the
# candidates become the target architectures.
set_arch_candidates() {  # $1 = source folder, $2 = prefix (FT/OT)
  local cmakelists="$1/CMakeLists.txt"
  sed -i -E "s/^( *set\($2_COMPUTE_ARCH_CANDIDATES) [0-9 ]+\)/\1 $cmake_archs)/; /^ *list\(APPEND $2_COMPUTE_ARCH_CANDIDATES /d" "$cmakelists"
  grep -q "set($2_COMPUTE_ARCH_CANDIDATES $cmake_archs)" "$cmakelists" \
    || { echo "could not set the architecture candidates in $cmakelists" >&2; return 1; }
}

# optimized_transducer's CUDA build needs moderngpu at commit 2b39855 (upstream downloads it from
# GitHub with FetchContent); its context.hxx reads cudaDeviceProp::clockRate and memoryClockRate,
# which CUDA 13 removed: they only feed a device-info string, so the copy here reads them through
# cudaDeviceGetAttribute instead.
moderngpu_commit=2b3985541c8e88a133769598c406c33ddde9d0a5
moderngpu_url="https://github.com/moderngpu/moderngpu/archive/$moderngpu_commit.zip"
moderngpu_sha256=191546af18cd5fb858ecb561316f3af67537ab16f610fc8f1a5febbffc27755a
prepare_moderngpu() {  # prints the patched moderngpu folder
  local dest="$build_dir/moderngpu-${moderngpu_commit:0:7}" source="${MODERNGPU_SOURCE:-}" tmp
  if [ -f "$dest/.tlb-patched" ]; then echo "$dest"; return 0; fi
  rm -rf "$dest" "$dest.tmp" && mkdir -p "$dest.tmp"
  tmp="$dest.tmp"
  if [ -z "$source" ]; then
    source="$tmp/moderngpu.zip"
    if ! "$py" - "$moderngpu_url" "$source" "$moderngpu_sha256" >"$log_dir/moderngpu.log" 2>&1 <<'EOF'
import hashlib, sys, urllib.request
url, path, sha = sys.argv[1:]
data = urllib.request.urlopen(url, timeout=30).read()
if hashlib.sha256(data).hexdigest() != sha:
    sys.exit(f"{url}: SHA-256 mismatch")
open(path, "wb").write(data)
EOF
    then
      say "moderngpu could not be downloaded from GitHub ($(tail -n 1 "$log_dir/moderngpu.log" | cut -c1-120)): set MODERNGPU_SOURCE to a tarball, zip or folder of moderngpu commit ${moderngpu_commit:0:7}" >&2
      rm -rf "$tmp"
      return 1
    fi
  fi
  if [ -d "$source" ]; then
    cp -a "$source/." "$tmp/"
  elif [ -f "$source" ]; then
    "$py" -c 'import shutil, sys; shutil.unpack_archive(sys.argv[1], sys.argv[2])' "$source" "$tmp" \
      || { say "MODERNGPU_SOURCE=$source could not be unpacked" >&2; rm -rf "$tmp"; return 1; }
    rm -f "$tmp/moderngpu.zip"
  else
    say "MODERNGPU_SOURCE=$source is neither a file nor a folder" >&2
    return 1
  fi
  local top
  top="$(find "$tmp" -path '*/src/moderngpu/context.hxx' | head -n 1)"
  [ -n "$top" ] || { say "no src/moderngpu/context.hxx in moderngpu from ${MODERNGPU_SOURCE:-$moderngpu_url}" >&2; rm -rf "$tmp"; return 1; }
  mv "$(dirname "$(dirname "$(dirname "$top")")")" "$dest"
  rm -rf "$tmp"
  "$py" - "$dest/src/moderngpu/context.hxx" <<'EOF'
import sys
path = sys.argv[1]
text = open(path).read()
old = "  double memBandwidth = (prop.memoryClockRate * 1000.0) *"
new = ("  int clockRate = 0, memoryClockRate = 0;  // cudaDeviceProp lost both fields in CUDA 13\n"
       "  cudaDeviceGetAttribute(&clockRate, cudaDevAttrClockRate, ordinal);\n"
       "  cudaDeviceGetAttribute(&memoryClockRate, cudaDevAttrMemoryClockRate, ordinal);\n"
       "  double memBandwidth = (memoryClockRate * 1000.0) *")
if "prop.clockRate" in text:
    assert old in text, "unexpected context.hxx"
    text = text.replace(old, new).replace("prop.clockRate / 1000.0", "clockRate / 1000.0")
    text = text.replace("prop.memoryClockRate / 1000.0", "memoryClockRate / 1000.0")
    assert "prop.clockRate" not in text and "prop.memoryClockRate" not in text
    open(path, "w").write(text)
EOF
  touch "$dest/.tlb-patched"
  echo "$dest"
}

cuda_code_report() {  # $1 = dist name; one line: which of its libraries hold GPU code, for which sm
  "$py" - "$1" <<'EOF' 2>/dev/null || true
import importlib.metadata as md, os, shutil, subprocess, sys
so = [str(f.locate()) for f in md.distribution(sys.argv[1]).files or [] if ".so" in f.name]
parts = []
for path in so:
    data = open(path, "rb").read()
    if b".nv_fatbin" not in data:
        continue
    sms = ""
    if shutil.which("cuobjdump"):
        out = subprocess.run(["cuobjdump", "--list-elf", path], capture_output=True, text=True).stdout
        sms = ",".join(sorted({w.rsplit(".", 2)[-2] for w in out.split() if w.endswith(".cubin")}))
    parts.append(os.path.basename(path) + (f" ({sms})" if sms else " (.nv_fatbin)"))
print("GPU code in " + ", ".join(parts) if parts else "NO GPU code in " + ", ".join(map(os.path.basename, so)))
EOF
}

finish_build() {  # $1 = module, $2 = dist name, $3 = log, $4 = start time (SECONDS)
  local seconds=$((SECONDS - $4))
  if "$py" -c "import $1" >"$3.import" 2>&1; then
    echo "$flavor" >"$build_dir/$1.flavor"
    if [ "$cuda_build" = ON ]; then
      say "$1 built (CUDA $arch_norm, ${seconds} s; $(cuda_code_report "$2"))"
    else
      say "$1 built (CPU, ${seconds} s)"
    fi
    return 0
  fi
  cat "$3.import" >>"$3"
  tail -n 30 "$3" >&2
  say "building $1 failed after ${seconds} s (log: $3); its benchmark will report 'unavailable'" >&2
  return 1
}

# --- build optimized_transducer and fast_rnnt from source ------------------------------------
build_sdist() {  # $1 = import name, $2 = version, $3 = env var prefix (OT/FT)
  local module="$1" version="$2" prefix="$3" log="$log_dir/build-$1.log" start=$SECONDS src args
  wants_build "$module" || { say "$module skipped (not in TLB_BUILDS)"; return 0; }
  if reuse_build "$module"; then
    say "$module already built ($flavor, $("$py" -c "import importlib.metadata as m; print(m.version('$module'))"))"
    return 0
  fi
  if ! command -v make >/dev/null 2>&1; then
    say "building $module needs make, which is not on PATH; its benchmark will report 'unavailable'" >&2
    return 0
  fi
  if ! cmake_support; then
    say "building $module needs pybind11 in the venv (requirements.txt has it); its benchmark will report 'unavailable'" >&2
    return 0
  fi
  args="$common_cmake_args -D${prefix}_WITH_CUDA=$cuda_build -D${prefix}_BUILD_TESTS=OFF"
  : >"$log"
  if [ "$cuda_build" = OFF ]; then
    say "building $module==$version from source (CPU; about a minute)"
    # With the system's torch, its own dependency metadata is none of pip's business here.
    local no_deps=()
    [ "$system_torch" != 1 ] || no_deps=(--no-deps)
    env "${prefix}_CMAKE_ARGS=$args" "${prefix}_MAKE_ARGS=-j$(nproc)" \
      "$py" -m pip install --no-build-isolation --no-binary "$module" --no-cache-dir "${pip_index_args[@]}" \
      "${no_deps[@]}" -c "$constraints" "$module==$version" >>"$log" 2>&1 || true
  else
    say "building $module==$version from source (CUDA $arch_norm; a minute or two)"
    if ! src="$(unpack_sdist "$module" "$version" 2>>"$log")" || ! set_arch_candidates "$src" "$prefix" 2>>"$log"; then
      say "building $module failed: no patched source (log: $log); its benchmark will report 'unavailable'" >&2
      return 0
    fi
    if [ "$module" = optimized_transducer ]; then
      local mgpu
      if ! mgpu="$(prepare_moderngpu)"; then
        say "building $module skipped: no moderngpu (see above); its benchmark will report 'unavailable'" >&2
        return 0
      fi
      args="$args -DFETCHCONTENT_SOURCE_DIR_MODERNGPU=$mgpu"
    fi
    env "${prefix}_CMAKE_ARGS=$args" "${prefix}_MAKE_ARGS=-j$(nproc)" TORCH_CUDA_ARCH_LIST="$arch_norm" \
      CUDA_HOME="$cuda_home" CUDACXX="$nvcc" PATH="$cuda_home/bin:$PATH" \
      "$py" -m pip install --no-build-isolation --no-deps --no-cache-dir "$src" >>"$log" 2>&1 || true
  fi
  finish_build "$module" "$module" "$log" "$start" || true
}
build_sdist optimized_transducer 1.4 OT
build_sdist fast_rnnt 1.3 FT

# --- warp_rnnt: CUDA-only, so built only for a CUDA setup ------------------------------------
# Its setup.py refuses to run unless torch.cuda.is_available(); the unpacked copy drops that
# check, so that TORCH_CUDA_ARCH_LIST alone decides what it is built for (also without a GPU),
# and reads its version with importlib.metadata instead of the deprecated pkg_resources.
if ! wants_build warp_rnnt; then
  say "warp_rnnt skipped (not in TLB_BUILDS)"
elif [ "$cuda_build" != ON ]; then
  say "warp_rnnt skipped: it is CUDA-only and this setup is a CPU build"
elif reuse_build warp_rnnt; then
  say "warp_rnnt already built ($flavor)"
else
  say "building warp_rnnt==0.7.0 from source (CUDA $arch_norm)"
  log="$log_dir/build-warp_rnnt.log" start=$SECONDS
  : >"$log"
  if src="$(unpack_sdist warp_rnnt 0.7.0 2>>"$log")" \
      && sed -i 's/^if not torch\.cuda\.is_available():/if False:  # setup.sh: TORCH_CUDA_ARCH_LIST decides/' "$src/setup.py" \
      && grep -q '^if False:  # setup.sh' "$src/setup.py" \
      && sed -i -e 's/^from pkg_resources import get_distribution$/from importlib.metadata import version as get_version/' \
                -e "s/^__version__ = get_distribution('warp_rnnt').version$/__version__ = get_version('warp_rnnt')/" \
                "$src/warp_rnnt/__init__.py"; then
    env TORCH_CUDA_ARCH_LIST="$arch_norm" CUDA_HOME="$cuda_home" PATH="$cuda_home/bin:$PATH" MAX_JOBS="$(nproc)" \
      "$py" -m pip install --no-build-isolation --no-deps --no-cache-dir "$src" >>"$log" 2>&1 || true
    finish_build warp_rnnt warp_rnnt "$log" "$start" || true
  else
    say "building warp_rnnt failed: no patched source (log: $log); its benchmark will report 'unavailable'" >&2
  fi
fi

# --- the real k2, when k2's wheel pages can be reached ---------------------------------------
if "$py" -c "import k2" >/dev/null 2>&1; then
  say "k2 already installed"
elif [ "$offline" = 1 ]; then
  say "k2 not tried (offline install from a wheelhouse); the k2 benchmarks use fast_rnnt"
elif [ ! -x "$venv/bin/k2utils" ]; then
  say "k2 not tried (k2utils is not installed); the k2 benchmarks use fast_rnnt"
else
  say "trying 'k2utils install k2' (k2's own wheel pages; 20 s limit)"
  if timeout 20 "$venv/bin/k2utils" install k2 >"$log_dir/k2.log" 2>&1 && "$py" -c "import k2" >/dev/null 2>&1; then
    say "k2 installed"
  else
    say "k2 not installed ($(tail -n 1 "$log_dir/k2.log" | cut -c1-160)); the k2 benchmarks use fast_rnnt"
  fi
fi
say "environment ready: $venv"
