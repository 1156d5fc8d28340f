"""Bad input: one line on stderr naming the value, exit code 2, no traceback."""

import pytest
import torch
from conftest import TINY_RUN_FLAGS, run_script


def assert_usage_error(process, *fragments):
    assert process.returncode == 2, (process.returncode, process.stdout, process.stderr)
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, process.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in process.stderr + process.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def table_file(tmp_path):
    def write(tensor, name="table.pt"):
        path = tmp_path / name
        torch.save(tensor, path)
        return str(path)
    return write


def run_torchaudio(tmp_path, *args):
    return run_script("benchmark_torchaudio.py", [*TINY_RUN_FLAGS, "--out-dir", str(tmp_path / "log"), *args])


def test_missing_shape_file(tmp_path):
    assert_usage_error(run_torchaudio(tmp_path, "--shape-info", str(tmp_path / "nope.pt")), "nope.pt", "does not exist")


def test_corrupt_shape_file(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 10)
    assert_usage_error(run_torchaudio(tmp_path, "--shape-info", str(corrupt)), "corrupt.pt", "cannot be read")


@pytest.mark.parametrize("tensor, fragment", [
    (torch.ones(5, 3, dtype=torch.int32), "(5, 3)"),
    (torch.ones(5, dtype=torch.int32), "(5,)"),
    (torch.ones(5, 2, dtype=torch.float64), "torch.float64"),
    (torch.tensor([[10, 2], [0, 3]], dtype=torch.int32), "T=0"),
    (torch.tensor([[10, 2], [8, -1]], dtype=torch.int32), "U=-1"),
])
def test_bad_shape_tables(tmp_path, table_file, tensor, fragment):
    assert_usage_error(run_torchaudio(tmp_path, "--shape-info", table_file(tensor)), fragment)
    assert not (tmp_path / "log").exists()  # nothing written for a refused run


def test_not_a_tensor(tmp_path, table_file):
    assert_usage_error(run_torchaudio(tmp_path, "--shape-info", table_file({"T": [1]})), "torch.Tensor")


def test_max_frames_zero(tmp_path, tiny_shape_info):
    assert_usage_error(run_torchaudio(tmp_path, "--shape-info", tiny_shape_info, "--max-frames", "0"),
                       "--max-frames 0", ">= 1")


def test_unknown_device(tmp_path, tiny_shape_info):
    assert_usage_error(run_torchaudio(tmp_path, "--shape-info", tiny_shape_info, "--device", "tpu"),
                       "'tpu'", "auto, cpu or cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when no GPU is present")
def test_cuda_without_gpu(tmp_path, tiny_shape_info):
    assert_usage_error(run_torchaudio(tmp_path, "--shape-info", tiny_shape_info, "--device", "cuda"),
                       "--device cuda", "no CUDA GPU")


def test_unknown_preset_and_only(tmp_path, tiny_shape_info):
    assert_usage_error(run_torchaudio(tmp_path, "--shape-info", tiny_shape_info, "--preset", "fast"), "'fast'")
    assert_usage_error(run_script("benchmark_all.py", ["--shape-info", tiny_shape_info, "--device", "cpu",
                                                       "--only", "torchaudio,warp9"]), "warp9", "torchaudio")
