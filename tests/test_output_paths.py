"""Bad output paths, tried as a new user would: one line naming the path and why, exit code 2,
before any work starts (no run folder, no partial output)."""

import os

import pytest
from conftest import TINY_RUN_FLAGS, run_script

# (script, flag, extra flags); every script that writes results is here
OUTPUTS = [
    ("benchmark_torchaudio.py", "--out-dir", TINY_RUN_FLAGS),
    ("benchmark_all.py", "--out-dir", [*TINY_RUN_FLAGS, "--only", "torchaudio"]),
    ("profile_model.py", "--out-dir", ["--device", "cpu"]),
    ("benchmark_grid.py", "--out-dir", ["--impl", "torchaudio", "--device", "cpu", "--tokens-per-frame", "0.2"]),
    ("generate_shape_info.py", "--output", ["--synthetic", "librispeech-100"]),
    ("verify_losses.py", "--output-json", ["--device", "cpu", "--only", "reference"]),
    ("benchmark_loss_only.py", "--output-json", ["--only", "reference", "--num-utterances", "1"]),
    ("report.py", "--pic-dir", ["{results}"]),
]
FILE_FLAGS = {"--output", "--output-json"}


@pytest.fixture()
def regular_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


def _bad_paths(flag, regular_file):
    under_file = str(regular_file / ("x.pt" if flag in FILE_FLAGS else "out"))
    paths = {"/proc/forbidden" + ("/x.json" if flag in FILE_FLAGS else ""): "cannot be created or written",
             under_file: "is a file, not a folder" if flag not in FILE_FLAGS else "is not a folder"}
    if flag in FILE_FLAGS:
        paths[str(regular_file.parent)] = "is a folder"
    else:
        paths[str(regular_file)] = "is not a folder"
    return paths


@pytest.mark.parametrize("script, flag, extra", OUTPUTS, ids=[o[0] for o in OUTPUTS])
def test_an_unwritable_output_is_one_line_and_exit_2(script, flag, extra, regular_file, tiny_shape_info, tmp_path):
    results = tmp_path / "results"
    (results / "torchaudio-1").mkdir(parents=True)
    (results / "torchaudio-1" / "summary.json").write_text('{"status": "ok", "implementation": "torchaudio"}\n')
    extra = [e.format(results=results) for e in extra]
    if script not in ("generate_shape_info.py", "report.py", "verify_losses.py", "benchmark_loss_only.py"):
        extra = [*extra, "--shape-info", tiny_shape_info]
    for path, why in _bad_paths(flag, regular_file).items():
        process = run_script(script, [*extra, flag, path], timeout=120)
        lines = process.stderr.strip().splitlines()
        assert process.returncode == 2, (script, path, process.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in process.stderr, lines
        assert repr(path) in lines[0] or repr(os.path.dirname(path)) in lines[0], lines[0]
        assert why in lines[0], (why, lines[0])
    assert regular_file.read_text() == "not a folder\n"


SHAPE_INFO_USERS = {
    "benchmark_torchaudio.py": ["--device", "cpu"],
    "benchmark_all.py": ["--device", "cpu", "--only", "torchaudio"],
    "profile_model.py": ["--device", "cpu"],
    "benchmark_grid.py": ["--device", "cpu", "--impl", "torchaudio"],
    "benchmark_loss_only.py": ["--only", "reference"],
}


@pytest.mark.parametrize("script", list(SHAPE_INFO_USERS))
def test_a_folder_as_shape_table_says_it_is_a_folder(script, tmp_path):
    out = [] if script == "benchmark_loss_only.py" else ["--out-dir", str(tmp_path / "log")]
    process = run_script(script, [*SHAPE_INFO_USERS[script], "--shape-info", str(tmp_path), *out], timeout=120)
    lines = process.stderr.strip().splitlines()
    assert process.returncode == 2 and len(lines) == 1, process.stderr[-2000:]
    assert lines[0].startswith(f"error: --shape-info {str(tmp_path)!r} is a folder"), lines[0]
    assert not (tmp_path / "log" / "torchaudio-1").exists()
