"""generate_shape_info.py on real lhotse manifests and a real sentencepiece model.

The script runs as a subprocess (the way users run it); the expected [T, U] rows are
computed here by hand: T from the frame count and the subsampling formula, U by encoding
the same texts with the same sentencepiece model.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import pytest
import torch

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO_DIR, "generate_shape_info.py")
if REPO_DIR not in sys.path:
    sys.path.insert(0, REPO_DIR)

import tlbench.data.manifests as generate_shape_info  # noqa: E402
from tlbench.core.errors import UsageError  # noqa: E402

TRAINING_TEXT = """\
the quick brown fox jumps over the lazy dog
she sells sea shells by the sea shore
a stitch in time saves nine and a penny saved is a penny earned
peter piper picked a peck of pickled peppers
how much wood would a woodchuck chuck if a woodchuck could chuck wood
the rain in spain stays mainly in the plain
all that glitters is not gold and all who wander are not lost
to be or not to be that is the question
it was the best of times it was the worst of times
call me ishmael some years ago never mind how long precisely
"""


def t_after_4x(num_frames: int) -> int:
    return ((num_frames - 1) // 2 - 1) // 2


# Cuts of the test manifest: (id, duration_s, feature frame shift or None, texts or None,
# expected input frames). With features, the frames are duration / frame shift (20 ms
# here, so that the feature path cannot be confused with the 10 ms duration path);
# without, round(duration * 100).
CUT_SPECS = [
    ("feats-a", 3.0, 0.02, ["the quick brown fox"], 150),
    ("feats-b", 5.36, 0.02, ["peter piper picked a peck", "of pickled peppers"], 268),
    ("feats-c", 1.0, 0.02, ["to be or not to be"], 50),
    ("nofeats-a", 4.567, None, ["how much wood would a woodchuck chuck"], 457),
    ("nofeats-b", 1.234, None, ["she sells sea shells"], 123),
    ("nofeats-c", 12.0, None, ["it was the best of times", "it was the worst of times", "call me"], 1200),
    ("no-supervision", 2.0, None, None, 200),
    ("empty-text", 2.0, None, [""], 200),
    ("too-short", 0.06, None, ["a"], 6),  # 6 frames -> T = ((5 // 2) - 1) // 2 = 0
]
KEPT = [spec for spec in CUT_SPECS if spec[0] not in ("no-supervision", "empty-text", "too-short")]


def make_cut(cut_id: str, duration: float, frame_shift, texts):
    from lhotse import AudioSource, Features, MonoCut, Recording, SupervisionSegment

    sampling_rate = 16000
    recording = Recording(
        id=f"rec-{cut_id}",
        sources=[AudioSource(type="file", channels=[0], source=f"/nonexistent/{cut_id}.flac")],
        sampling_rate=sampling_rate,
        num_samples=round(duration * sampling_rate),
        duration=duration,
    )
    features = None
    if frame_shift is not None:
        features = Features(
            type="fbank",
            num_frames=round(duration / frame_shift),
            num_features=80,
            frame_shift=frame_shift,
            sampling_rate=sampling_rate,
            start=0.0,
            duration=duration,
            storage_type="lilcom_chunky",
            storage_path=f"/nonexistent/{cut_id}.lca",
            storage_key="0,1",
            recording_id=recording.id,
            channels=0,
        )
    supervisions = []
    for index, text in enumerate(texts or []):
        supervisions.append(
            SupervisionSegment(
                id=f"{cut_id}-sup{index}",
                recording_id=recording.id,
                start=0.0,
                duration=duration,
                text=text,
            )
        )
    return MonoCut(
        id=cut_id,
        start=0.0,
        duration=duration,
        channel=0,
        supervisions=supervisions,
        features=features,
        recording=recording,
    )


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory) -> str:
    import sentencepiece

    directory = tmp_path_factory.mktemp("bpe")
    text_path = directory / "text.txt"
    text_path.write_text(TRAINING_TEXT)
    sentencepiece.SentencePieceTrainer.train(
        input=str(text_path),
        model_prefix=str(directory / "bpe"),
        vocab_size=80,
        model_type="bpe",
        character_coverage=1.0,
        minloglevel=2,
    )
    return str(directory / "bpe.model")


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    from lhotse import CutSet

    directory = tmp_path_factory.mktemp("manifests")
    cuts = CutSet.from_cuts(make_cut(cut_id, duration, shift, texts) for cut_id, duration, shift, texts, _ in CUT_SPECS)
    paths = {}
    for suffix in (".jsonl.gz", ".json", ".json.gz"):
        path = str(directory / f"cuts{suffix}")
        cuts.to_file(path)
        paths[suffix] = path
    return paths


def run_script(*args: str, cwd: str = REPO_DIR) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def expected_rows(bpe_model: str, factor_formula=t_after_4x):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=bpe_model)
    return [[factor_formula(frames), len(sp.encode(" ".join(texts)))] for _, _, _, texts, frames in KEPT]


def assert_usage_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_cut_frames_match_hand_computation(manifests):
    from lhotse import CutSet

    cuts = CutSet.from_file(manifests[".json"])
    for cut, (cut_id, _, shift, _, frames) in zip(cuts, CUT_SPECS):
        assert cut.id == cut_id
        assert cut.has_features == (shift is not None)
        assert generate_shape_info.cut_num_frames(cut) == frames


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".json"])
def test_manifest_to_shape_table(manifests, bpe_model, tmp_path, suffix):
    output = tmp_path / "shape_info.pt"
    result = run_script("--manifest", manifests[suffix], "--bpe-model", bpe_model, "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert "kept 6 cuts; skipped 1 without supervision, 1 with empty text, 1 with T < 1" in result.stdout

    table = torch.load(output, weights_only=True)
    assert table.dtype == torch.int32
    assert table.tolist() == expected_rows(bpe_model)

    from tlbench.data.shape_table import load_shape_info

    assert load_shape_info(str(output)).shape == (len(KEPT), 2)


def test_json_gz_manifest_in_process(manifests, bpe_model):
    table, summary = generate_shape_info.shape_info_from_manifest(manifests[".json.gz"], bpe_model)
    assert table.dtype == torch.int32
    assert table.tolist() == expected_rows(bpe_model)
    assert summary == (6, 1, 1, 1)


def test_supervision_texts_joined_by_a_space():
    cut = make_cut("two", 3.0, None, ["peter piper picked a peck", "", "of pickled peppers"])
    assert generate_shape_info.cut_text(cut) == "peter piper picked a peck of pickled peppers"
    assert generate_shape_info.cut_text(make_cut("none", 3.0, None, None)) is None
    assert generate_shape_info.cut_text(make_cut("blank", 3.0, None, ["  "])) == ""


@pytest.mark.parametrize(
    "factor, formula", [(6, lambda n: ((n - 1) // 2 - 1) // 3), (8, lambda n: (((n - 1) // 2 - 1) // 2 - 1) // 2)]
)
def test_other_subsampling_factors_on_a_manifest(manifests, bpe_model, factor, formula):
    table, summary = generate_shape_info.shape_info_from_manifest(manifests[".jsonl.gz"], bpe_model, factor)
    # Subsampling by 8 leaves T < 1 for 50 input frames too ("feats-c").
    kept = [row for row in expected_rows(bpe_model, formula) if row[0] >= 1]
    assert table.tolist() == kept
    assert summary.kept == len(kept) and summary.too_short == 1 + (len(KEPT) - len(kept))


@pytest.mark.parametrize(
    "factor, formula",
    [
        (1, lambda n: n),
        (2, lambda n: (n - 1) // 2),
        (4, lambda n: ((n - 1) // 2 - 1) // 2),
        (6, lambda n: ((n - 1) // 2 - 1) // 3),
        (8, lambda n: (((n - 1) // 2 - 1) // 2 - 1) // 2),
    ],
)
def test_subsampled_length_formulas(factor, formula):
    for num_frames in list(range(0, 40)) + [100, 457, 1200, 1699, 2450]:
        assert generate_shape_info.subsampled_length(num_frames, factor) == formula(num_frames)


def test_default_output_is_next_to_the_script():
    assert generate_shape_info.DEFAULT_OUTPUT == os.path.join(REPO_DIR, "shape_info.pt")


def test_missing_manifest(bpe_model, tmp_path):
    missing = str(tmp_path / "no_such_cuts.jsonl.gz")
    result = run_script("--manifest", missing, "--bpe-model", bpe_model, "--output", str(tmp_path / "out.pt"))
    assert_usage_error(result, missing)
    assert not (tmp_path / "out.pt").exists()


def test_missing_bpe_model(manifests, tmp_path):
    missing = str(tmp_path / "no_such_bpe.model")
    result = run_script("--manifest", manifests[".json"], "--bpe-model", missing, "--output", str(tmp_path / "out.pt"))
    assert_usage_error(result, missing)


def test_invalid_bpe_model(manifests, tmp_path):
    bogus = tmp_path / "bpe.model"
    bogus.write_text("this is not a sentencepiece model\n")
    result = run_script("--manifest", manifests[".json"], "--bpe-model", str(bogus), "--output", str(tmp_path / "out.pt"))
    assert_usage_error(result, str(bogus), "not a valid sentencepiece model")


def test_empty_manifest(bpe_model, tmp_path):
    path = tmp_path / "empty.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("")
    output = tmp_path / "out.pt"
    result = run_script("--manifest", str(path), "--bpe-model", bpe_model, "--output", str(output))
    assert_usage_error(result, str(path), "empty")
    assert not output.exists()


def test_empty_json_manifest(bpe_model, tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("[]\n")
    with pytest.raises(UsageError, match="is empty"):
        generate_shape_info.shape_info_from_manifest(str(path), bpe_model)


@pytest.mark.parametrize(
    "name, content",
    [
        ("notes.jsonl", "this is plain text, not JSON lines\n"),
        ("notes.json", '{"not": "a list"}\n'),
        ("supervisions.json", '[{"no": "cut fields"}]\n'),
    ],
)
def test_file_that_is_not_a_manifest(bpe_model, tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UsageError, match="not a valid lhotse cut manifest"):
        generate_shape_info.shape_info_from_manifest(str(path), bpe_model)


def test_malformed_line_in_a_lazy_manifest(manifests, bpe_model, tmp_path):
    from lhotse import CutSet

    path = tmp_path / "cuts.jsonl"
    CutSet.from_file(manifests[".json"]).to_file(str(path))
    with open(path, "a") as f:
        f.write("{this line is cut off\n")
    with pytest.raises(UsageError, match=r"cut #9 cannot be read"):
        generate_shape_info.shape_info_from_manifest(str(path), bpe_model)


def test_unsupported_manifest_extension(bpe_model, tmp_path):
    path = tmp_path / "cuts.txt"
    path.write_text("[]\n")
    with pytest.raises(UsageError, match="unsupported extension"):
        generate_shape_info.shape_info_from_manifest(str(path), bpe_model)


def test_manifest_of_recordings_is_refused(bpe_model, tmp_path):
    from lhotse import RecordingSet

    recordings = RecordingSet.from_recordings([make_cut("r", 1.0, None, ["a"]).recording])
    path = str(tmp_path / "recordings.jsonl.gz")
    recordings.to_file(path)
    with pytest.raises(UsageError, match="RecordingSet, not a CutSet"):
        generate_shape_info.shape_info_from_manifest(path, bpe_model)


def test_no_cut_kept(bpe_model, tmp_path):
    from lhotse import CutSet

    path = str(tmp_path / "unusable.jsonl.gz")
    CutSet.from_cuts([make_cut("bare", 2.0, None, None), make_cut("short", 0.05, None, ["a b"])]).to_file(path)
    with pytest.raises(UsageError, match="no cut kept") as error:
        generate_shape_info.shape_info_from_manifest(path, bpe_model)
    assert "1 without supervision" in str(error.value) and "1 with T < 1" in str(error.value)


@pytest.mark.parametrize("factor", ["5", "0", "-4", "four"])
def test_bad_subsampling_factor(manifests, bpe_model, tmp_path, factor):
    # Checked before anything is read, so these runs are quick.
    result = run_script(
        "--manifest", manifests[".json"], "--bpe-model", bpe_model, "--subsampling-factor", factor,
        "--output", str(tmp_path / "out.pt"),
    )
    assert_usage_error(result, factor)


def test_no_source_given(tmp_path):
    result = run_script("--output", str(tmp_path / "out.pt"))
    assert_usage_error(result, "--manifest", "--synthetic")


def test_synthetic_is_deterministic_per_seed(tmp_path):
    output = str(tmp_path / "synthetic.pt")
    result = run_script("--synthetic", "librispeech-100", "--seed", "3", "--output", output)
    assert result.returncode == 0, result.stderr
    assert "(85617, 2) int32" in result.stdout
    from_cli = torch.load(output, weights_only=True)
    assert from_cli.dtype == torch.int32 and from_cli.shape == (85617, 2)

    again = generate_shape_info.synthesize_librispeech_100(3)
    other = generate_shape_info.synthesize_librispeech_100(4)
    assert torch.equal(from_cli, again)
    assert not torch.equal(from_cli, other)
    assert (from_cli != other).any(dim=1).float().mean() > 0.9  # not just a few rows apart


def test_synthetic_refuses_manifest_flags(bpe_model, manifests, tmp_path):
    result = run_script(
        "--synthetic", "librispeech-100", "--manifest", manifests[".json"], "--bpe-model", bpe_model,
        "--output", str(tmp_path / "out.pt"),
    )
    assert_usage_error(result, "--synthetic")


def test_synthetic_with_missing_reference_stats(tmp_path):
    missing = str(tmp_path / "no_stats.json")
    output = tmp_path / "out.pt"
    result = run_script("--synthetic", "librispeech-100", "--reference-stats", missing, "--output", str(output))
    assert_usage_error(result, missing)
    assert not output.exists()
