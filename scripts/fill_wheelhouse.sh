#!/usr/bin/env bash
# Fills DIR, on a machine that reaches the package index, with everything that
# `TLB_WHEELHOUSE=DIR bash scripts/setup.sh` then installs without one (pip --no-index):
#   - the wheels of requirements.txt and of all they need (pip download), for this machine's
#     Python or, with --python-version, binary wheels for that Python on manylinux x86_64;
#   - the source distributions that setup.sh builds: fast_rnnt 1.3, optimized_transducer 1.4
#     (pip download) and warp_rnnt 0.7.0 (fetched from the same index: pip download cannot save
#     it, because its setup.py refuses to run, even for its metadata, without a visible GPU).
#
# Usage: bash scripts/fill_wheelhouse.sh DIR [options]
#   --python-version X.Y   target Python, e.g. 3.12 (default: the Python that runs pip here)
#   --glibc 2.N            with --python-version: the newest manylinux_2_N accepted (default 2.28)
#   --system-torch         the target has its own torch (TLB_SYSTEM_TORCH=1): leave out torch and
#                          what only torch needs (nvidia-*, cuda-*, triton, sympy, ...); torchaudio
#                          is still fetched unless excluded
#   --exclude NAME[,NAME]  leave out these packages too (e.g. torchaudio)
#   --requirements FILE    instead of requirements.txt (repeatable)
#   --with NAME            also requirements-NAME.txt
#   --add SPEC             one more requirement, e.g. cmake or ninja==1.13.0 (repeatable)
#   --no-sdists            leave out the three source distributions
#   --sdists-only          only the three source distributions
# Environment: PYTHON = the interpreter whose pip is used (default python3).
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pyexe="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
say() { echo "[fill_wheelhouse] $*"; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

dir="" python_version="" glibc="2.28" system_torch=0 excludes="" sdists=1 wheels=1
requirement_files=() adds=()
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) python_version="$2"; shift 2 ;;
    --glibc) glibc="$2"; shift 2 ;;
    --system-torch) system_torch=1; shift ;;
    --exclude) excludes="$excludes,$2"; shift 2 ;;
    --requirements) requirement_files+=("$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"); shift 2 ;;
    --with) requirement_files+=("$repo_dir/requirements-$2.txt"); shift 2 ;;
    --add) adds+=("$2"); shift 2 ;;
    --no-sdists) sdists=0; shift ;;
    --sdists-only) wheels=0; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) say "unknown option $1" >&2; usage >&2; exit 2 ;;
    *) [ -z "$dir" ] || { say "one DIR only (got $dir and $1)" >&2; exit 2; }; dir="$1"; shift ;;
  esac
done
[ -n "$dir" ] || { usage >&2; exit 2; }
[ ${#requirement_files[@]} -gt 0 ] || requirement_files=("$repo_dir/requirements.txt")
for f in "${requirement_files[@]}"; do
  [ -f "$f" ] || { say "requirements file $f does not exist" >&2; exit 2; }
done
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Binary wheels for another Python: cp tags of that version, manylinux x86_64 up to the glibc given.
target_args=()
if [ -n "$python_version" ]; then
  target_args=(--only-binary :all: --python-version "$python_version" --implementation cp)
  for minor in $(seq "${glibc#2.}" -1 17) 12 5; do
    target_args+=(--platform "manylinux_2_${minor}_x86_64")
  done
  target_args+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
fi

if [ "$wheels" = 1 ]; then
  pins="$tmp/pins.txt"
  sed -n -E 's/^(torch|torchaudio)==([^ ;#]+).*/\1==\2/p' "$repo_dir/requirements.txt" >"$pins"
  req_args=()
  for f in "${requirement_files[@]}"; do req_args+=(-r "$f"); done
  [ ${#adds[@]} -eq 0 ] || printf '%s\n' "${adds[@]}" >"$tmp/adds.txt"
  [ ${#adds[@]} -eq 0 ] || req_args+=(-r "$tmp/adds.txt")
  say "resolving $(printf '%s ' "${requirement_files[@]##*/}")${adds[*]:++ ${adds[*]} }for Python ${python_version:-$("$pyexe" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}${python_version:+ (manylinux x86_64, glibc <= $glibc)}"
  # The whole set is resolved first without downloading anything (PEP 658 metadata), so that torch
  # and its CUDA packages (GBs) can be left out; then each package is fetched alone (--no-deps).
  report_args=(--dry-run --ignore-installed --quiet --report "$tmp/report.json")
  [ -z "$python_version" ] || report_args+=(--target "$tmp/target")
  if ! "$pyexe" -m pip install "${report_args[@]}" "${target_args[@]}" "${req_args[@]}" -c "$pins" >"$tmp/resolve.log" 2>&1; then
    grep -v 'is ignored: it is neither' "$tmp/resolve.log" | tail -n 20 >&2
    say "resolving failed" >&2
    exit 1
  fi
  "$pyexe" - "$tmp/report.json" "$system_torch" "$excludes" "${python_version:-}" >"$tmp/download.txt" <<'EOF'
import json, re, sys
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

report, system_torch, excludes, python_version = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
skip = {norm(n) for n in excludes.split(",") if n}
if system_torch:
    skip.add("torch")
items = {norm(i["metadata"]["name"]): i for i in json.load(open(report))["install"]}

def skipped(name):
    return name in skip or (system_torch and (name.startswith(("nvidia-", "cuda-")) or name == "triton"))

env = {}
if python_version:
    env = {"python_version": python_version, "python_full_version": python_version + ".0",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
           "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython"}
# Walk from what was asked for, never through a skipped package: what only torch needs drops out.
todo = [(n, set(i.get("requested_extras") or [])) for n, i in items.items() if i.get("requested") and not skipped(n)]
keep = {}
while todo:
    name, extras = todo.pop()
    if name in keep and extras <= keep[name]:
        continue
    keep[name] = keep.get(name, set()) | extras
    for text in items[name]["metadata"].get("requires_dist") or []:
        req = Requirement(text)
        child = norm(req.name)
        if child not in items or skipped(child):
            continue
        if req.marker and not any(req.marker.evaluate(dict(env, extra=e)) for e in (keep[name] | {""})):
            continue
        todo.append((child, set(req.extras)))
for name in sorted(keep):
    print(f'{items[name]["metadata"]["name"]}=={items[name]["metadata"]["version"]}')
EOF
  say "downloading $(wc -l <"$tmp/download.txt") packages into $dir"
  if ! "$pyexe" -m pip download --no-deps --quiet -d "$dir" "${target_args[@]}" -r "$tmp/download.txt" >"$tmp/download.log" 2>&1; then
    grep -v 'is ignored: it is neither' "$tmp/download.log" | tail -n 20 >&2
    say "pip download failed" >&2
    exit 1
  fi
fi

if [ "$sdists" = 1 ]; then
  # fast_rnnt and optimized_transducer: pip download (their metadata builds anywhere).
  if ! "$pyexe" -m pip download --no-deps --no-binary :all: --quiet -d "$dir" fast_rnnt==1.3 optimized_transducer==1.4 \
      >"$tmp/sdists.log" 2>&1; then
    grep -v 'is ignored: it is neither' "$tmp/sdists.log" | tail -n 20 >&2
    say "pip download of the source distributions failed" >&2
    exit 1
  fi
  # warp_rnnt: the file itself, from the index pip uses (PIP_INDEX_URL, pip config, or PyPI),
  # checked against the index's sha256.
  if [ ! -f "$dir/warp_rnnt-0.7.0.tar.gz" ]; then
    read -r -a index_urls <<<"$( { "$pyexe" -m pip config list 2>/dev/null || true; } | sed -n -E "s/^[a-z:.]*(index-url|extra-index-url)='(.*)'$/\2/p" | tr '\n' ' ')"
    if ! "$pyexe" - "$dir" warp_rnnt 0.7.0 "${PIP_INDEX_URL:-}" "${index_urls[@]}" <<'EOF'
import hashlib, os, re, ssl, sys, urllib.parse, urllib.request
dest, name, version, *indexes = sys.argv[1:]
indexes = [i for i in indexes if i] + ["https://pypi.org/simple"]
filename = f"{name}-{version}.tar.gz"
cafile = os.environ.get("PIP_CERT") or None
context = ssl.create_default_context(cafile=cafile)
errors = []
for index in dict.fromkeys(indexes):
    page = index.rstrip("/") + "/" + re.sub(r"[-_.]+", "-", name).lower() + "/"
    try:
        html = urllib.request.urlopen(page, timeout=60, context=context).read().decode()
    except Exception as error:
        errors.append(f"{page}: {error}")
        continue
    for href in re.findall(r'href="([^"]+)"', html):
        url = urllib.parse.urljoin(page, href.replace("&amp;", "&"))
        path, _, fragment = url.partition("#")
        if urllib.parse.unquote(path.rsplit("/", 1)[-1]).lower() != filename.lower():
            continue
        data = urllib.request.urlopen(path, timeout=120, context=context).read()
        want = dict(p.split("=", 1) for p in fragment.split("&") if "=" in p).get("sha256")
        if want and hashlib.sha256(data).hexdigest() != want:
            sys.exit(f"{path}: SHA-256 mismatch")
        with open(os.path.join(dest, filename), "wb") as f:
            f.write(data)
        sys.exit(0)
    errors.append(f"{page}: no {filename}")
sys.exit("; ".join(errors))
EOF
    then
      say "fetching warp_rnnt-0.7.0.tar.gz failed" >&2
      exit 1
    fi
  fi
fi
say "$dir: $(find "$dir" -maxdepth 1 -type f | wc -l) files, $(du -sh "$dir" | cut -f1)"
