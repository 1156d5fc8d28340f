"""Helpers of scripts/setup.sh for its source builds: the build cache, downloads and sources.

Standard library only (it runs with the venv's interpreter before anything is installed).

The build cache holds one wheel per key under ROOT/NAME/<hash>/, where <hash> is the first 24
hex digits of the SHA-256 of the key's text (what decides the binary: package and version or
commit, patches, Python ABI, torch and its CUDA, CPU or CUDA and the architectures, flags). An
entry is written under a temporary name, verified and renamed into place, so that a reader sees
a complete entry or none. An entry holds:

    key.txt        the key's text, compared in full on every lookup
    <wheel>.whl    the wheel the build produced
    entry.json     written last: the wheel's name, size and SHA-256, the build's seconds, a date

Commands (exit code 0 = done; otherwise the reason is the last line printed):

    lookup ROOT NAME KEYFILE DEST   a verified copy of the entry's wheel in DEST (prints its path);
                                    exit 1: no entry; exit 3: the entry was corrupt or half
                                    written and has been removed
    store ROOT NAME KEYFILE WHEEL [SECONDS]   stores WHEEL (prints the entry's folder)
    drop ROOT NAME KEYFILE          removes the entry (its wheel did not import)
    check-wheel WHEEL               a readable zip with a .dist-info/RECORD
    download URL DEST [SHA256]      fetches URL into DEST (checked against SHA256 when given)
    unpack SOURCE DEST MARKER [COMMIT]   a fresh copy of SOURCE (tarball, zip or folder) under
                                    DEST; prints the folder that holds MARKER (a relative path);
                                    with COMMIT, an archive or git checkout that names another
                                    commit is refused
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile

STALE_TMP_SECONDS = 24 * 3600


def key_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheel_problem(path: str) -> str | None:
    """None for a readable wheel, else what is wrong with it."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                return f"{os.path.basename(path)}: member {bad} is corrupt"
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        return f"{os.path.basename(path)} is not a readable zip ({error})"
    if not any(n.endswith(".dist-info/RECORD") for n in names):
        return f"{os.path.basename(path)} has no .dist-info/RECORD"
    return None


def entry_dir(root: str, name: str, key_text: str) -> str:
    return os.path.join(root, name, key_hash(key_text))


def remove(path: str) -> None:
    """Moves PATH aside first (one rename), then deletes it: never a half-removed entry in place."""
    if not os.path.lexists(path):
        return
    aside = f"{path}.old-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.rename(path, aside)
    except OSError:
        aside = path
    shutil.rmtree(aside, ignore_errors=True)
    if os.path.lexists(aside) and not os.path.isdir(aside):
        os.unlink(aside)


def clean_stale(folder: str) -> None:
    """Temporary folders of interrupted writers (older than a day) and moved-aside entries."""
    if not os.path.isdir(folder):
        return
    now = time.time()
    for item in os.listdir(folder):
        path = os.path.join(folder, item)
        if (item.startswith(".tmp-") and now - os.path.getmtime(path) > STALE_TMP_SECONDS) or ".old-" in item:
            shutil.rmtree(path, ignore_errors=True)


def verify_entry(entry: str, key_text: str) -> tuple[str | None, str | None]:
    """(wheel path, None) for a complete entry of this key, else (None, what is wrong)."""
    try:
        with open(os.path.join(entry, "key.txt"), encoding="utf-8") as f:
            stored_key = f.read()
    except OSError:
        return None, "no key.txt"
    if stored_key != key_text:
        return None, "key.txt differs from the wanted key"
    try:
        with open(os.path.join(entry, "entry.json"), encoding="utf-8") as f:
            meta = json.load(f)
        wheel = os.path.join(entry, meta["wheel"])
        size, digest = int(meta["size"]), meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, "no complete entry.json (a half-written entry)"
    if os.path.basename(wheel) != meta["wheel"] or not wheel.endswith(".whl") or not os.path.isfile(wheel):
        return None, f"its wheel {meta['wheel']} is missing"
    if os.path.getsize(wheel) != size:
        return None, f"{meta['wheel']} has {os.path.getsize(wheel)} bytes, {size} were stored"
    if sha256_of(wheel) != digest:
        return None, f"{meta['wheel']} does not match its SHA-256"
    problem = wheel_problem(wheel)
    if problem:
        return None, problem
    return wheel, None


def lookup(root: str, name: str, key_file: str, dest: str) -> int:
    key_text = open(key_file, encoding="utf-8").read()
    entry = entry_dir(root, name, key_text)
    clean_stale(os.path.dirname(entry))
    if not os.path.isdir(entry):
        print(f"no entry {entry}")
        return 1
    wheel, problem = verify_entry(entry, key_text)
    if wheel is not None:
        # A private copy, checked again: the install never reads a file that another setup might
        # replace meanwhile.
        os.makedirs(dest, exist_ok=True)
        copy = os.path.join(dest, os.path.basename(wheel))
        shutil.copyfile(wheel, copy)
        meta = json.load(open(os.path.join(entry, "entry.json"), encoding="utf-8"))
        if sha256_of(copy) == meta["sha256"]:
            print(copy)
            return 0
        problem = "its wheel changed while it was copied"
        os.unlink(copy)
    remove(entry)
    print(f"entry {entry} was corrupt or half written ({problem}) and has been removed")
    return 3


def store(root: str, name: str, key_file: str, wheel: str, seconds: str = "") -> int:
    key_text = open(key_file, encoding="utf-8").read()
    problem = wheel_problem(wheel)
    if problem:
        print(f"not stored: {problem}")
        return 1
    entry = entry_dir(root, name, key_text)
    parent = os.path.dirname(entry)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(entry)}-", dir=parent)
    try:
        target = os.path.join(tmp, os.path.basename(wheel))
        shutil.copyfile(wheel, target)
        with open(os.path.join(tmp, "key.txt"), "w", encoding="utf-8") as f:
            f.write(key_text)
        problem = wheel_problem(target)
        if problem:
            raise RuntimeError(problem)
        meta = {"wheel": os.path.basename(target), "size": os.path.getsize(target), "sha256": sha256_of(target),
                "build_seconds": int(seconds) if seconds.isdigit() else None,
                "stored": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with open(os.path.join(tmp, "entry.json.part"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        for item in (target, os.path.join(tmp, "key.txt")):
            with open(item, "rb") as f:
                os.fsync(f.fileno())
        os.rename(os.path.join(tmp, "entry.json.part"), os.path.join(tmp, "entry.json"))
        os.chmod(tmp, 0o755)
        remove(entry)  # an older or corrupt entry of the same key
        try:
            os.rename(tmp, entry)
        except OSError:
            # Another setup stored the same key meanwhile: keep its entry if it is complete.
            if verify_entry(entry, key_text)[0] is None:
                remove(entry)
                os.rename(tmp, entry)
    except Exception as error:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"not stored: {error}")
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print(entry)
    return 0


def drop(root: str, name: str, key_file: str) -> int:
    key_text = open(key_file, encoding="utf-8").read()
    remove(entry_dir(root, name, key_text))
    return 0


def download(url: str, dest: str, sha256: str = "") -> int:
    try:
        data = urllib.request.urlopen(url, timeout=60).read()
    except Exception as error:
        print(f"{url}: {error}")
        return 1
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        print(f"{url}: SHA-256 mismatch")
        return 1
    tmp = f"{dest}.part-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, dest)
    return 0


def archive_commit(source: str) -> str | None:
    """The commit that a git-archive tarball or a GitHub zip names, or a git checkout's HEAD."""
    try:
        if os.path.isdir(source):
            if os.path.exists(os.path.join(source, ".git")):
                out = subprocess.run(["git", "-C", source, "rev-parse", "HEAD"], capture_output=True, text=True)
                return out.stdout.strip() or None
            return None
        if zipfile.is_zipfile(source):
            comment = zipfile.ZipFile(source).comment.decode(errors="replace").strip()
            return comment or None
        with tarfile.open(source) as archive:
            return archive.pax_headers.get("comment") or None
    except (OSError, tarfile.TarError, zipfile.BadZipFile):
        return None


def unpack(source: str, dest: str, marker: str, commit: str = "") -> int:
    if not os.path.exists(source):
        print(f"{source} does not exist")
        return 1
    named = archive_commit(source)
    if commit and named and len(named) >= 7 and not (named.startswith(commit) or commit.startswith(named)):
        print(f"{source} is commit {named[:12]}, not {commit[:12]}")
        return 1
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".unpack-", dir=os.path.dirname(dest) or ".")
    try:
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(tmp, "copy"), symlinks=True,
                            ignore=shutil.ignore_patterns(".git", "build"))
        else:
            try:
                if zipfile.is_zipfile(source):
                    zipfile.ZipFile(source).extractall(tmp)
                else:
                    with tarfile.open(source) as archive:
                        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
                            archive.extractall(tmp, filter="data")
                        else:
                            archive.extractall(tmp)
            except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as error:
                print(f"{source} could not be unpacked ({error})")
                return 1
        hits = []
        for folder, dirs, _ in os.walk(tmp):
            dirs.sort()
            if os.path.isfile(os.path.join(folder, marker)):
                hits.append(folder)
                dirs[:] = []
        if not hits:
            print(f"{source} holds no {marker}")
            return 1
        os.rename(min(hits, key=len), dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(dest)
    return 0


def main(argv: list) -> int:
    commands = {"lookup": (lookup, 4, 4), "store": (store, 4, 5), "drop": (drop, 3, 3),
                "download": (download, 2, 3), "unpack": (unpack, 3, 4)}
    if argv[:1] == ["check-wheel"] and len(argv) == 2:
        problem = wheel_problem(argv[1])
        print(problem or "ok")
        return 1 if problem else 0
    if not argv or argv[0] not in commands or not commands[argv[0]][1] <= len(argv) - 1 <= commands[argv[0]][2]:
        print(__doc__)
        return 2
    return commands[argv[0]][0](*argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
