"""scripts/setup.sh offline: TLB_SYSTEM_TORCH=1 with TLB_WHEELHOUSE and no index.

The situation of a GPU node without internet (such as an image whose /opt/torch/.venv holds
torch): the interpreter that has torch is itself a virtual environment's, and it holds torch and
what torch needs, nothing else of requirements.txt. The test builds such an environment by
linking torch and its dependency closure from the project's venv (no copy, no download), fills a
wheelhouse with scripts/fill_wheelhouse.sh (the one step that uses the index), then runs the
setup with pip's index made unreachable and checks that it installs from the wheelhouse, builds
fast_rnnt from the wheelhouse's sdist, installs k2 from the build cache, uses the system's torch
and never installs one.

Reduced on purpose, to stay at a few minutes on a 2-core CI machine: the requirements are the
subset that scripts/gpu_check.sh installs (TLB_REQUIREMENTS), only fast_rnnt is built
(TLB_BUILDS; optimized_transducer's CPU build goes through the same code), and k2 comes from
the cache that the project's own setup filled (its source build is ~10 minutes on 2 cores).
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time

import pytest
from conftest import REPO_DIR

SETUP = os.path.join(REPO_DIR, "scripts", "setup.sh")
FILL = os.path.join(REPO_DIR, "scripts", "fill_wheelhouse.sh")
# The requirements.txt lines that scripts/prepare_gpu_check.sh selects (warprnnt-numba is left
# out here: importing it needs numba, which is not in this subset).
SUBSET = ["torchaudio", "numpy", "tqdm", "pybind11", "setuptools", "wheel"]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(root: str) -> list:
    """torch and every distribution it needs (extras included), as installed in this interpreter."""
    from packaging.requirements import Requirement

    seen, todo = {}, [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        name = _norm(name)
        if name in seen and extras <= seen[name]:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen[name] = seen.get(name, frozenset()) | extras
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or any(requirement.marker.evaluate({"extra": e})
                                                 for e in seen[name] | {""}):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return list(seen)


def _make_torch_env(path: str) -> str:
    """A virtual environment holding only torch and its dependencies, linked from this venv."""
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", path],
                   check=True)
    site = os.path.join(path, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")
    here = sysconfig.get_paths()["purelib"]
    tops = set()
    for name in _closure("torch"):
        for file in md.distribution(name).files or []:
            top = file.parts[0]
            if top not in ("..", "bin", "__pycache__") and os.path.exists(os.path.join(here, top)):
                tops.add(top)
    for top in sorted(tops):
        os.symlink(os.path.join(here, top), os.path.join(site, top))
    return os.path.join(path, "bin", "python")


def _offline_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "TLB_", "VIRTUAL_ENV"))}
    env.update(PIP_CONFIG_FILE=os.devnull,  # no extra indexes or find-links from pip.conf
               PIP_NO_INDEX="1", PIP_INDEX_URL="http://127.0.0.1:9/simple",  # and no index at all
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra)
    return env


def _run(cmd, env, timeout):
    started = time.monotonic()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_DIR)
    return result, time.monotonic() - started


@pytest.fixture(scope="module")
def torch_python(tmp_path_factory) -> str:
    return _make_torch_env(str(tmp_path_factory.mktemp("torchenv") / "env"))


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> tuple:
    """The subset of requirements.txt (exact lines) and its wheelhouse, filled from the index."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    lines = open(os.path.join(REPO_DIR, "requirements.txt"), encoding="utf-8").read().splitlines()
    chosen = [next(line for line in lines if re.match(rf"{re.escape(n)}\s*([=<>!~;#]|$)", line, re.I))
              for n in SUBSET]
    requirements = folder / "requirements-subset.txt"
    requirements.write_text("\n".join(chosen) + "\n")
    result, _ = _run(["bash", FILL, str(folder / "wh"), "--system-torch", "--requirements", str(requirements)],
                     dict(os.environ), 900)
    assert result.returncode == 0, result.stdout + result.stderr
    return str(requirements), str(folder / "wh")


def test_fill_wheelhouse_leaves_out_torch(wheelhouse):
    _, folder = wheelhouse
    files = os.listdir(folder)
    names = {_norm(re.split(r"-\d", f, maxsplit=1)[0]) for f in files}
    assert {"torchaudio", "numpy", "tqdm", "pybind11", "setuptools", "wheel"} <= names
    assert {"fast_rnnt-1.3.tar.gz", "optimized_transducer-1.4.tar.gz", "warp_rnnt-0.7.0.tar.gz"} <= set(files)
    assert not [f for f in files if re.match(r"(torch-|nvidia|triton|cuda[-_])", f, re.I)], files


def _user_cache() -> str:
    """The build cache that scripts/setup.sh used for this project's venv."""
    default = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tlbench")
    return os.environ.get("TLB_CACHE") or default


def _seed_k2_cache(cache: str) -> int:
    """Copies the CPU k2 entries of the user's build cache into ``cache`` (the setups of these
    tests are CPU builds; a CUDA entry, from a compile check, has another key); returns how many."""
    source = os.path.join(_user_cache(), "k2")
    entries = [e for e in (os.listdir(source) if os.path.isdir(source) else [])
               if os.path.isfile(os.path.join(source, e, "entry.json"))
               and "\nbuild: cpu\n" in open(os.path.join(source, e, "key.txt"), encoding="utf-8").read()]
    for entry in entries:
        shutil.copytree(os.path.join(source, entry), os.path.join(cache, "k2", entry))
    return len(entries)


def test_offline_setup_with_system_torch(tmp_path, torch_python, wheelhouse):
    """fast_rnnt is built from the wheelhouse's sdist (an empty cache of the test's own) and k2
    comes from the build cache, which holds the k2 wheel that the project's own setup built:
    the offline path of a node whose cache was filled once (a k2 build takes ~10 minutes)."""
    if importlib.util.find_spec("k2") is None:
        pytest.skip("k2 is not in this environment (TLB_K2=skip?): there is no cached k2 build to install offline")
    cache = tmp_path / "cache"
    assert _seed_k2_cache(str(cache)) >= 1, f"k2 imports here but {_user_cache()}/k2 holds no build of it"
    requirements, folder = wheelhouse
    venv = str(tmp_path / "venv")
    env = _offline_env(TLB_VENV=venv, PYTHON=torch_python, TLB_SYSTEM_TORCH="1", TLB_WHEELHOUSE=folder,
                       TLB_REQUIREMENTS=requirements, TLB_BUILDS="fast_rnnt k2", TLB_CACHE=str(cache),
                       TLB_THIRD_PARTY=str(tmp_path / "no-third-party"))
    result, seconds = _run(["bash", SETUP], env, 1200)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    print(f"offline setup: {seconds:.0f} s\n{result.stdout}")
    torch_version = md.version("torch")
    assert f"using the system's torch {torch_version}" in output
    assert "from the wheelhouse" in output and "fast_rnnt built (CPU" in output, output
    assert "k2 installed from the build cache" in output, output
    assert "fast_rnnt stored in the build cache" in output, output

    py = os.path.join(venv, "bin", "python")
    probe = subprocess.run([py, "-c", "import os, torch, torchaudio, numpy, tqdm, fast_rnnt, k2, importlib.metadata as m;"
                            "print(os.path.realpath(torch.__file__)); print(torchaudio.__file__); print(k2.__file__);"
                            "print(m.version('fast_rnnt')); print(m.version('k2'))"],
                           capture_output=True, text=True, env=_offline_env(), timeout=300)
    assert probe.returncode == 0, probe.stderr
    torch_file, torchaudio_file, k2_file, fast_rnnt_version, k2_version = probe.stdout.split()
    # torch is the system's (linked from this venv); torchaudio (wheelhouse) and k2 (cache) are the venv's.
    assert torch_file.startswith(os.path.realpath(sysconfig.get_paths()["purelib"]))
    site = os.path.join(venv, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")
    assert torchaudio_file.startswith(site) and k2_file.startswith(site)
    assert fast_rnnt_version == "1.3" and k2_version.startswith("1.24.4")
    assert not [d for d in os.listdir(site) if re.match(r"torch-\d", d)], "torch was installed into the venv"

    again, seconds = _run(["bash", SETUP], env, 300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "requirements already installed" in again.stdout and "fast_rnnt already built" in again.stdout
    assert "k2 already built" in again.stdout, again.stdout
    assert seconds < 60, f"the second run took {seconds:.0f} s"


def test_a_corrupt_cached_k2_is_never_installed(tmp_path, torch_python, wheelhouse):
    """A cache entry whose wheel was damaged is removed and a build is tried instead; here the
    build cannot get k2's source (K2_SOURCE names nothing), which is one line naming K2_SOURCE,
    and the k2 rows then use fast_rnnt."""
    if importlib.util.find_spec("k2") is None:
        pytest.skip("k2 is not in this environment (TLB_K2=skip?): there is no cached k2 build to damage")
    cache = tmp_path / "cache"
    assert _seed_k2_cache(str(cache)) >= 1, f"k2 imports here but {_user_cache()}/k2 holds no build of it"
    for wheel in (cache / "k2").glob("*/*.whl"):
        with open(wheel, "r+b") as f:
            f.seek(wheel.stat().st_size // 2)
            f.write(b"\0" * 64)
    requirements, folder = wheelhouse
    venv = tmp_path / "venv"
    missing = tmp_path / "no-such-k2.tar.gz"
    env = _offline_env(TLB_VENV=str(venv), PYTHON=torch_python, TLB_SYSTEM_TORCH="1", TLB_WHEELHOUSE=folder,
                       TLB_REQUIREMENTS=requirements, TLB_BUILDS="k2", TLB_CACHE=str(cache), K2_SOURCE=str(missing))
    result, _ = _run(["bash", SETUP], env, 900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"k2: build cache entry \S+ was corrupt or half written \(.*does not match its SHA-256\)", output), output
    assert f"K2_SOURCE={missing}: {missing} does not exist; the k2 benchmarks use fast_rnnt" in output, output
    assert "k2 installed from the build cache" not in output
    assert not list((cache / "k2").glob("*/entry.json")), "the damaged entry is still in the cache"
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import k2"], capture_output=True, text=True,
                           env=_offline_env(), timeout=120)
    assert probe.returncode != 0, "a k2 was installed from the damaged entry"


def test_system_torch_version_checks(tmp_path, wheelhouse):
    """Major.minor must match the pin (else one line and exit 1); another patch release is accepted."""
    _, folder = wheelhouse
    pin = re.search(r"^torch==(\S+)", open(os.path.join(REPO_DIR, "requirements.txt")).read(), re.M).group(1)
    major, minor = pin.split(".")[:2]
    only_tqdm = tmp_path / "requirements-tqdm.txt"
    only_tqdm.write_text("tqdm\n")
    for version, ok in ((f"{major}.{int(minor) + 1}.0", False), (f"{major}.{minor}.99+cu999", True)):
        fake = tmp_path / f"fake-{version}"
        subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(fake)],
                       check=True)
        site = fake / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
        (site / "torch").mkdir()
        (site / "torch" / "__init__.py").write_text(f"__version__ = {version!r}\n")
        env = _offline_env(TLB_VENV=str(tmp_path / f"venv-{version}"), PYTHON=str(fake / "bin" / "python"),
                           TLB_SYSTEM_TORCH="1", TLB_WHEELHOUSE=folder, TLB_REQUIREMENTS=str(only_tqdm), TLB_BUILDS="")
        result, _ = _run(["bash", SETUP], env, 300)
        output = result.stdout + result.stderr
        if ok:
            assert result.returncode == 0, output
            assert f"using the system's torch {version} (requirements.txt pins {pin}" in output
            # offline with k2 left out of TLB_BUILDS: nothing is tried and the k2 rows' fallback is named
            assert ("k2 not tried (offline install from a wheelhouse, k2 not in TLB_BUILDS); "
                    "the k2 benchmarks use fast_rnnt") in output
        else:
            assert result.returncode == 1, output
            assert f"the system's torch is {version} but requirements.txt pins {pin}" in output


def test_system_torch_missing(tmp_path):
    env = _offline_env(TLB_VENV=str(tmp_path / "venv"), PYTHON=getattr(sys, "_base_executable", sys.executable),
                       TLB_SYSTEM_TORCH="1")
    result, _ = _run(["bash", SETUP], env, 300)
    assert result.returncode == 1
    assert "cannot import torch" in result.stdout + result.stderr
