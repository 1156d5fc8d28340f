#!/usr/bin/env bash
# Fills .whl/gpu-check/ (ignored by git; carry `.whl` to the device machine) with what
# scripts/gpu_check.sh needs on a GPU machine that has Python 3.12 and torch 2.11 (cu130) with
# its nvidia-* packages but nothing else of requirements.txt, and no internet:
#   - requirements-gpu-check.txt: the lines of requirements.txt that the check needs
#     (torchaudio, numpy, tqdm, pybind11, setuptools, wheel, warprnnt-numba);
#   - their Python 3.12 manylinux x86_64 wheels (scripts/fill_wheelhouse.sh --system-torch),
#     plus ninja (parallel warp_rnnt build);
#   - the sdists of fast_rnnt 1.3, optimized_transducer 1.4 and warp_rnnt 0.7.0;
#   - moderngpu-2b39855.tar.gz, copied from MODERNGPU_SOURCE or ../shared/third_party;
#   - with --with-k2: k2-a741ae8.tar.gz, pybind11-5bc0943.tar.gz and moderngpu-8ec9ac0.tar.gz
#     (K2_SOURCE, PYBIND11_SOURCE, MODERNGPU_K2_SOURCE or ../shared/third_party; 2.5 MiB), for
#     gpu_check.sh's k2 stage (TLB_GPU_CHECK_K2).
# Then it prints the size of what travels (the working tree must stay under 64 MiB).
#
# Usage: bash scripts/prepare_gpu_check.sh [--with-cmake] [--with-plots] [--with-numba] [--with-k2]
#                                          [--python-version X.Y]
#   --with-cmake   also the cmake wheel (+30 MB), for an image without cmake
#   --with-plots   also matplotlib and its wheels (+24 MB), for the report's pictures
#   --with-numba   also numba and llvmlite (+64 MB: over the limit with the rest), for warprnnt_numba
#   --with-k2      also the sources of k2's build (above)
#   --python-version X.Y  wheels for that Python (default 3.12, the device machine's)
# Environment: TLB_GPU_CHECK_WHEELHOUSE (default .whl/gpu-check), PYTHON (whose pip is used).
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${TLB_GPU_CHECK_WHEELHOUSE:-$repo_dir/.whl/gpu-check}"
say() { echo "[prepare_gpu_check] $*"; }

names="torchaudio numpy tqdm pybind11 setuptools wheel warprnnt-numba"
adds=(--add ninja)
with_k2=0
python_version=3.12
while [ $# -gt 0 ]; do
  case "$1" in
    --with-cmake) adds+=(--add cmake); shift ;;
    --with-plots) names="$names matplotlib"; shift ;;
    --with-numba) names="$names numba"; shift ;;
    --with-k2) with_k2=1; shift ;;
    --python-version) [ $# -ge 2 ] || { say "--python-version needs X.Y" >&2; exit 2; }; python_version="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) say "unknown option $1" >&2; exit 2 ;;
  esac
done

moderngpu="${MODERNGPU_SOURCE:-$repo_dir/../shared/third_party/moderngpu-2b39855.tar.gz}"
[ -f "$moderngpu" ] || { say "no moderngpu tarball at $moderngpu (set MODERNGPU_SOURCE)" >&2; exit 1; }

# A fresh folder each time, so that nothing left from an earlier, larger selection travels.
new="$dir.new"
rm -rf "$new"
mkdir -p "$new"
{
  echo "# The requirements.txt lines that scripts/gpu_check.sh needs (made by scripts/prepare_gpu_check.sh)."
  for name in $names; do
    line="$(grep -i -E "^${name}[[:space:]]*([=<>!~;#]|$)" "$repo_dir/requirements.txt" | head -n 1 || true)"
    [ -n "$line" ] || { say "requirements.txt has no line for $name" >&2; exit 1; }
    echo "$line"
  done
} >"$new/requirements-gpu-check.txt"
bash "$repo_dir/scripts/fill_wheelhouse.sh" "$new" --python-version "$python_version" --system-torch \
  --requirements "$new/requirements-gpu-check.txt" "${adds[@]}"
cp "$moderngpu" "$new/moderngpu-2b39855.tar.gz"
if [ "$with_k2" = 1 ]; then
  third_party="$repo_dir/../shared/third_party"
  for pair in "K2_SOURCE k2-a741ae8.tar.gz" "PYBIND11_SOURCE pybind11-5bc0943.tar.gz" \
              "MODERNGPU_K2_SOURCE moderngpu-8ec9ac0.tar.gz"; do
    read -r variable file <<<"$pair"
    source="${!variable:-$third_party/$file}"
    [ -f "$source" ] || { say "no $file at $source (set $variable to a tarball of that commit)" >&2; exit 1; }
    cp "$source" "$new/$file"
  done
fi
rm -rf "$dir"
mv "$new" "$dir"

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
folder_bytes="$(du -sb "$dir" | cut -f1)"
whl_root="$repo_dir/.whl"
whl_bytes=0
[ -d "$whl_root" ] && whl_bytes="$(du -sb "$whl_root" | cut -f1)"
cd "$repo_dir"
tree_bytes="$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -n 1 | cut -f1)"
total=$((tree_bytes + whl_bytes))
say "$dir: $(find "$dir" -type f | wc -l) files, $(mib "$folder_bytes")"
say "what travels with carry=['.whl']: working tree $(mib "$tree_bytes") + .whl $(mib "$whl_bytes") = $(mib "$total") (limit 64 MiB)"
if [ "$total" -ge $((64 * 1048576)) ]; then
  say "over the 64 MiB limit: leave out --with-* options or other files in .whl" >&2
  exit 1
fi
