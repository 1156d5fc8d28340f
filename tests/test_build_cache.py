"""The build cache of scripts/setup.sh (scripts/build_support.py), run as setup.sh runs it.

A real wheel (a one-module package built by ``pip wheel`` in the test) is stored, found, and
then damaged in the ways an interrupted or a crashed writer, a full disk or another setup
leave an entry: a lookup must then say so, remove the entry and give nothing to install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO_DIR

SUPPORT = os.path.join(REPO_DIR, "scripts", "build_support.py")
KEY = "tlbench build cache key, format 1\npackage: tiny 0.1\nbuild: cpu\n"


def support(*args):
    result = subprocess.run([sys.executable, SUPPORT, *map(str, args)], capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    source = tmp_path_factory.mktemp("tiny")
    (source / "tiny_cached.py").write_text("VALUE = 42\n")
    (source / "setup.py").write_text("from setuptools import setup\nsetup(name='tiny-cached', version='0.1', "
                                     "py_modules=['tiny_cached'])\n")
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(out), str(source)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("*.whl")
    return str(built)


@pytest.fixture
def stored(tmp_path, wheel):
    """(cache root, key file, entry folder) of a cache holding the wheel under KEY."""
    root, key = tmp_path / "cache", tmp_path / "key.txt"
    key.write_text(KEY)
    rc, entry = support("store", root, "tiny", key, wheel, 12)
    assert rc == 0 and os.path.isdir(entry), entry
    return root, key, entry


def test_store_then_lookup_gives_a_checked_copy(stored, tmp_path, wheel):
    root, key, entry = stored
    assert sorted(os.listdir(entry)) == sorted(["key.txt", "entry.json", os.path.basename(wheel)])
    meta = json.load(open(os.path.join(entry, "entry.json")))
    assert meta["wheel"] == os.path.basename(wheel) and meta["size"] == os.path.getsize(wheel)
    assert meta["build_seconds"] == 12
    rc, copy = support("lookup", root, "tiny", key, tmp_path / "dest")
    assert rc == 0 and copy.startswith(str(tmp_path / "dest")) and open(copy, "rb").read() == open(wheel, "rb").read()
    # no temporary folder of the writer is left beside the entry
    assert [e for e in os.listdir(os.path.dirname(entry)) if e.startswith(".tmp-")] == []


def test_another_key_finds_nothing(stored, tmp_path):
    root, _, entry = stored
    other = tmp_path / "other.txt"
    other.write_text(KEY.replace("build: cpu", "build: cuda 9.0 (nvcc 13.0)"))
    rc, line = support("lookup", root, "tiny", other, tmp_path / "dest")
    assert rc == 1 and line.startswith("no entry")
    assert os.path.isdir(entry)  # the other key's entry is untouched


def _corrupt_wheel(entry):
    (wheel,) = [f for f in os.listdir(entry) if f.endswith(".whl")]
    with open(os.path.join(entry, wheel), "r+b") as f:
        f.seek(os.path.getsize(os.path.join(entry, wheel)) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def _truncate_wheel(entry):
    (wheel,) = [f for f in os.listdir(entry) if f.endswith(".whl")]
    path = os.path.join(entry, wheel)
    os.truncate(path, os.path.getsize(path) // 2)


def _half_written(entry):
    os.unlink(os.path.join(entry, "entry.json"))  # the writer died before its last file


def _wrong_key_text(entry):
    with open(os.path.join(entry, "key.txt"), "a") as f:
        f.write("recipe: something else\n")


def _missing_wheel(entry):
    (wheel,) = [f for f in os.listdir(entry) if f.endswith(".whl")]
    os.unlink(os.path.join(entry, wheel))


@pytest.mark.parametrize("damage,reason", [(_corrupt_wheel, "does not match its SHA-256"),
                                           (_truncate_wheel, "bytes, "),
                                           (_half_written, "half-written"),
                                           (_wrong_key_text, "key.txt differs"),
                                           (_missing_wheel, "is missing")])
def test_a_damaged_entry_is_removed_and_nothing_is_handed_out(stored, tmp_path, damage, reason):
    root, key, entry = stored
    damage(entry)
    dest = tmp_path / "dest"
    rc, line = support("lookup", root, "tiny", key, dest)
    assert rc == 3, line
    assert "corrupt or half written" in line and reason in line, line
    assert not os.path.exists(entry)
    assert not dest.exists() or not list(dest.iterdir())  # no wheel to install
    rc, _ = support("lookup", root, "tiny", key, dest)
    assert rc == 1  # gone: the next setup builds it again


def test_an_entry_is_replaced_whole_and_stale_temporaries_go(stored, tmp_path, wheel):
    root, key, entry = stored
    parent = os.path.dirname(entry)
    stale = os.path.join(parent, ".tmp-abandoned-xyz")
    os.makedirs(stale)
    old = time.time() - 3 * 24 * 3600
    os.utime(stale, (old, old))
    fresh = os.path.join(parent, ".tmp-in-progress-abc")  # another setup writing now: left alone
    os.makedirs(fresh)
    rc, again = support("store", root, "tiny", key, wheel, 3)
    assert rc == 0 and again == entry
    assert json.load(open(os.path.join(entry, "entry.json")))["build_seconds"] == 3
    rc, _ = support("lookup", root, "tiny", key, tmp_path / "dest")
    assert rc == 0
    assert not os.path.exists(stale) and os.path.exists(fresh)


def test_a_file_that_is_no_wheel_is_not_stored(tmp_path):
    key = tmp_path / "key.txt"
    key.write_text(KEY)
    bogus = tmp_path / "tiny_cached-0.1-py3-none-any.whl"
    bogus.write_bytes(b"not a zip")
    rc, line = support("store", tmp_path / "cache", "tiny", key, bogus)
    assert rc == 1 and "not stored" in line and "not a readable zip" in line
    assert not (tmp_path / "cache" / "tiny").exists() or not [
        e for e in os.listdir(tmp_path / "cache" / "tiny") if not e.startswith(".")]


def test_unpack_refuses_a_source_of_another_commit(tmp_path):
    """K2_SOURCE / PYBIND11_SOURCE: an archive that names another commit is refused in one line."""
    import tarfile

    folder = tmp_path / "src" / "k2-x" / "k2" / "python" / "k2"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    archive = tmp_path / "k2.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT, pax_headers={"comment": "0123456789abcdef" * 2}) as tar:
        tar.add(tmp_path / "src" / "k2-x", arcname="k2-x")
    rc, line = support("unpack", archive, tmp_path / "out", "k2/python/k2/__init__.py", "a741ae88abc6995345aa1664")
    assert rc == 1 and "is commit 0123456789ab, not a741ae88abc6" in line
    rc, line = support("unpack", archive, tmp_path / "out", "k2/python/k2/__init__.py", "0123456789abcdef")
    assert rc == 0 and line == str(tmp_path / "out") and (tmp_path / "out" / "k2" / "python" / "k2").is_dir()
