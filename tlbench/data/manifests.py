"""Shape tables (``shape_info.pt``): an int32 ``(num_cuts, 2)`` tensor of ``[T, U]`` rows, T the
encoder frames after subsampling, U the BPE tokens; from a real lhotse cut manifest, or a
synthetic LibriSpeech-like one. The command is ``generate_shape_info.py``.

- A real manifest: for every cut, U is the number of sentencepiece ids of its supervision
  texts joined by one space, and T is its number of feature frames after the encoder's
  subsampling (see :func:`subsampled_length`).
- ``synthesize_librispeech_100(seed)``: a generated table that looks like the speed-perturbed
  LibriSpeech train-clean-100 table (the real one may not be redistributed), from a small
  parametric model whose constants were fitted to the published statistics of the real table;
  :func:`calibration_report` compares a table with those statistics.
"""

from __future__ import annotations

import math
import os
import sys
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Tuple

from tlbench import REPO_DIR
from tlbench.core.errors import UsageError, first_line

if TYPE_CHECKING:  # numpy and torch are imported where used, to keep --help fast
    import numpy as np
    import torch

__all__ = ["DEFAULT_FRAME_SHIFT_S", "DEFAULT_OUTPUT", "DEFAULT_REFERENCE_STATS", "MANIFEST_SUFFIXES",
           "SYNTHESIZERS", "SYNTHETIC_CHOICES", "CalibrationCheck", "ManifestSummary", "calibration_report",
           "check_manifest_path", "cut_num_frames", "cut_text", "load_bpe_model", "load_cut_manifest",
           "load_reference_stats", "shape_info_from_manifest", "subsampled_length", "subsampling_stages",
           "synthesize_librispeech_100"]

DEFAULT_OUTPUT = os.path.join(REPO_DIR, "shape_info.pt")
DEFAULT_REFERENCE_STATS = os.path.join(
    os.path.dirname(REPO_DIR), "shared", "reference", "librispeech_train_clean_100_sp_shape_stats.json"
)

MANIFEST_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".json")
SYNTHETIC_CHOICES = ("librispeech-100",)

# Frame shift assumed for cuts that carry no features: 10 ms, the usual fbank shift.
DEFAULT_FRAME_SHIFT_S = 0.01

# Cuts are handed to the progress bar only when there are at least this many, so that
# small manifests (and the tests) print a clean summary.
PROGRESS_MIN_CUTS = 2000


# --------------------------------------------------------------------------------------
# Subsampling
# --------------------------------------------------------------------------------------


def subsampling_stages(factor: int) -> List[int]:
    """Strides of the encoder's subsampling stages for a total ``factor``.

    ``factor`` must be 1 (no subsampling) or a product of 2s and 3s. The stride-2 stages
    come first, then the stride-3 ones: 4 -> [2, 2], 6 -> [2, 3], 8 -> [2, 2, 2],
    12 -> [2, 2, 3].
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise UsageError(
            f"--subsampling-factor {factor!r} is not allowed; use 1 or a product of 2s and 3s "
            "(2, 3, 4, 6, 8, ...)"
        )
    stages: List[int] = []
    rest = factor
    for stride in (2, 3):
        while rest % stride == 0:
            stages.append(stride)
            rest //= stride
    if rest != 1:
        raise UsageError(
            f"--subsampling-factor {factor} is not allowed; use 1 or a product of 2s and 3s "
            "(2, 3, 4, 6, 8, ...)"
        )
    return stages


def subsampled_length(num_frames: int, factor: int = 4) -> int:
    """Encoder frames T left from ``num_frames`` input frames after subsampling by ``factor``.

    Each stage of stride k (a convolution of kernel k + 1, no padding) maps x frames to
    ``(x - 1) // k``; stages run stride-2 first (see :func:`subsampling_stages`):

    - 1: ``n``
    - 2: ``(n - 1) // 2``
    - 4: ``((n - 1) // 2 - 1) // 2``  (icefall's Conv2dSubsampling)
    - 6: ``((n - 1) // 2 - 1) // 3``
    - 8: ``(((n - 1) // 2 - 1) // 2 - 1) // 2``

    The result may be < 1 for very short inputs; callers skip those.
    """
    frames = num_frames
    for stride in subsampling_stages(factor):
        frames = (frames - 1) // stride
    return frames


# --------------------------------------------------------------------------------------
# Real manifests
# --------------------------------------------------------------------------------------


def check_manifest_path(path: str) -> None:
    """:class:`UsageError` unless ``path`` is an existing file with a manifest extension."""
    if not os.path.isfile(path):
        raise UsageError(f"manifest {path!r} does not exist; pass a lhotse cut manifest to --manifest")
    if not path.endswith(MANIFEST_SUFFIXES):
        raise UsageError(
            f"manifest {path!r} has an unsupported extension; expected one of {', '.join(MANIFEST_SUFFIXES)}"
        )


def load_cut_manifest(path: str):
    """Opens a lhotse cut manifest (.json, .json.gz, .jsonl, .jsonl.gz) as a ``CutSet``.

    A ``.jsonl[.gz]`` manifest is opened lazily (cuts are decoded while iterating), a
    ``.json[.gz]`` one is read whole. Raises :class:`UsageError` for a missing, empty or
    unreadable file and for a manifest of something other than cuts.
    """
    check_manifest_path(path)
    from lhotse import CutSet, load_manifest
    from lhotse.serialization import load_json, load_manifest_lazy

    try:
        if ".jsonl" in os.path.basename(path):
            manifest = load_manifest_lazy(path)  # None when the file has no lines
        else:
            raw = load_json(path)
            if isinstance(raw, list) and not raw:
                manifest = None
            elif not isinstance(raw, list):
                raise ValueError(f"top-level JSON is a {type(raw).__name__}, not a list of cuts")
            else:
                manifest = load_manifest(path, manifest_cls=CutSet)
    except Exception as error:  # gzip, JSON and lhotse decoding errors all land here
        raise UsageError(
            f"manifest {path!r} is not a valid lhotse cut manifest ({first_line(error)})"
        ) from None
    if manifest is None:
        raise UsageError(f"manifest {path!r} is empty; it must hold at least one cut")
    if not isinstance(manifest, CutSet):
        raise UsageError(
            f"manifest {path!r} holds a {type(manifest).__name__}, not a CutSet; "
            "pass a cut manifest (e.g. cuts_train.jsonl.gz)"
        )
    return manifest


def load_bpe_model(path: str):
    """Loads a sentencepiece model; :class:`UsageError` when missing or unreadable."""
    if not os.path.isfile(path):
        raise UsageError(f"BPE model {path!r} does not exist; pass a sentencepiece .model file to --bpe-model")
    try:
        import sentencepiece
    except ImportError:
        raise UsageError(
            "sentencepiece is not installed; install it with `pip install sentencepiece` "
            "(the project pins sentencepiece==0.2.3)"
        ) from None
    try:
        return sentencepiece.SentencePieceProcessor(model_file=path)
    except Exception as error:  # OSError / RuntimeError for a file that is not a model
        raise UsageError(
            f"BPE model {path!r} is not a valid sentencepiece model ({first_line(error)})"
        ) from None


def cut_num_frames(cut) -> int:
    """Input frames of a cut: its features' frame count when it has features, otherwise
    its duration at a 10 ms frame shift, ``floor(duration * 100 + 0.5)`` (half-up rounding,
    as lhotse rounds; the two can differ by one frame only when ``duration * 100`` lies
    within float error of an exact .5)."""
    if cut.has_features:
        return int(cut.num_frames)
    return int(math.floor(cut.duration / DEFAULT_FRAME_SHIFT_S + 0.5))


def cut_text(cut) -> Optional[str]:
    """The cut's supervision texts (those that are not None or blank) joined by one space;
    None when the cut has no supervision, "" when none of them has text."""
    if not cut.supervisions:
        return None
    return " ".join(s.text for s in cut.supervisions if s.text is not None and s.text.strip())


class ManifestSummary(NamedTuple):
    kept: int
    without_supervision: int
    empty_text: int
    too_short: int  # T < 1 after subsampling

    def describe(self) -> str:
        return (
            f"kept {self.kept} cuts; skipped {self.without_supervision} without supervision, "
            f"{self.empty_text} with empty text, {self.too_short} with T < 1"
        )


def shape_info_from_manifest(
    manifest_path: str, bpe_model_path: str, subsampling_factor: int = 4
) -> Tuple[torch.Tensor, ManifestSummary]:
    """Shape table of a cut manifest.

    Returns:
      ``(num_cuts_kept, 2)`` int32 tensor of ``[T, U]`` rows in manifest order, and the
      counts of kept and skipped cuts. Skipped: cuts without a supervision, cuts whose
      supervisions have no text (or text with no token), cuts with T < 1.
    """
    # Cheap checks first (no lhotse/torch import), so that a wrong flag or path fails fast.
    subsampling_stages(subsampling_factor)
    check_manifest_path(manifest_path)
    sp = load_bpe_model(bpe_model_path)
    cuts = load_cut_manifest(manifest_path)

    rows: List[Tuple[int, int]] = []
    without_supervision = empty_text = too_short = 0
    try:
        num_cuts: Optional[int] = len(cuts)
    except Exception:  # a lazy CutSet does not know its length
        num_cuts = None

    from tqdm import tqdm

    progress = tqdm(
        total=num_cuts,
        unit="cut",
        desc="tokenising",
        mininterval=1.0,
        disable=num_cuts is not None and num_cuts < PROGRESS_MIN_CUTS,
        file=sys.stderr,
    )
    iterator = iter(cuts)
    index = 0
    while True:
        try:
            cut = next(iterator)
        except StopIteration:
            break
        except Exception as error:  # a malformed line of a lazily read manifest
            progress.close()
            raise UsageError(
                f"manifest {manifest_path!r}: cut #{index} cannot be read ({first_line(error)})"
            ) from None
        index += 1
        progress.update(1)
        text = cut_text(cut)
        if text is None:
            without_supervision += 1
            continue
        num_tokens = len(sp.encode(text)) if text else 0
        if num_tokens == 0:
            empty_text += 1
            continue
        num_frames = subsampled_length(cut_num_frames(cut), subsampling_factor)
        if num_frames < 1:
            too_short += 1
            continue
        rows.append((num_frames, num_tokens))
    progress.close()

    if index == 0:
        raise UsageError(f"manifest {manifest_path!r} is empty; it must hold at least one cut")
    summary = ManifestSummary(len(rows), without_supervision, empty_text, too_short)
    if not rows:
        raise UsageError(
            f"manifest {manifest_path!r}: no cut kept out of {index} ({summary.describe()}); "
            "cuts need a supervision with text and T >= 1 frame after subsampling"
        )
    import torch

    return torch.tensor(rows, dtype=torch.int32), summary


# --------------------------------------------------------------------------------------
# Synthetic LibriSpeech train-clean-100 (speed-perturbed) table
# --------------------------------------------------------------------------------------
#
# Generative rule (chosen from how such a table comes about, with constants fitted to the
# statistics json, not to its rows):
#  1. 28,539 base utterances (the reference's 85,617 rows are 3 x 28,539: every utterance
#     at speeds 0.9, 1.0 and 1.1; every U value occurs a multiple of 3 times).
#  2. Base T0 (frames after 4x subsampling at speed 1.0) from a quantile function: linear
#     between knots at the statistics' quantile levels, with power-law end pieces so that
#     very short and very long utterances are rare.
#  3. Tokens per frame r0 normal around RATIO_MEAN, with a relative spread that grows
#     for short utterances (fewer tokens, so relatively noisier counts):
#     r0 = RATIO_MEAN * (1 + sigma * z), sigma^2 = SIGMA_LONG^2 + SIGMA_SHORT^2 * 100 / T0,
#     z ~ N(0, 1). (A log-normal r0 could not match both tails of the U/T quantiles: they
#     are nearly symmetric around the median in linear, not log, space.)
#     U = round(T0 * r0), the same for the three speeds.
#  4. Each speed s gives T = round(T0 / s); T and U are clipped to the reference's ranges.
#  5. The rows are shuffled: the reference's order is a random one (lag-1 correlation of T
#     is ~0 and a random permutation of it gives the same batch-30 padding efficiency).

NUM_BASE_UTTERANCES = 28539
SPEED_FACTORS = (0.9, 1.0, 1.1)

# Quantile levels of the base-T knots and the knots themselves (frames at speed 1.0).
# Fitted to the statistics json: the interior knots by least squares so that the quantiles
# of the speed-mixed table (T0 / 0.9, T0, T0 / 1.1 pooled) equal the json's T quantiles,
# with a small penalty on jumps of the log density between neighbouring pieces (without it
# the fit piles 5% of the mass onto one frame count). The end knots, 35 and 611, keep all
# three speeds inside the json's [min, max] (31 * 1.1 = 34.1, 680 * 0.9 = 612).
BASE_T_LEVELS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
BASE_T_KNOTS = (35.0, 62.2, 104.8, 161.1, 299.9, 348.0, 379.9, 392.7, 401.3, 410.6, 611.0)
# Shape of the end pieces: Q(p) = k0 + (k1 - k0) * x ** power over the first and last 1%
# of levels (x in [0, 1] across the piece). A power < 1 at the low end and > 1 at the top
# end makes the extremes rare, as in the json (T q1 = 62 against min 31, T q99 = 452
# against max 680). The top power was fitted to the json's batch-30 padding efficiency
# (long outliers set the padded T of their batch); the low one was set by hand.
LOW_TAIL_POWER = 0.35
HIGH_TAIL_POWER = 6.0

# Tokens-per-frame model (step 3), fitted by grid search to the U and U/T quantiles of
# the statistics json.
RATIO_MEAN = 0.2165
RATIO_SIGMA_LONG = 0.09
RATIO_SIGMA_SHORT = 0.22  # its square is scaled by 100 / T0

# Ranges of the reference table (statistics json "min" / "max").
T_RANGE = (31, 680)
U_RANGE = (2, 151)


def _base_quantile(levels: np.ndarray) -> np.ndarray:
    """Base T0 (float frames) at quantile ``levels`` in [0, 1)."""
    import numpy as np

    knots_p = np.asarray(BASE_T_LEVELS, dtype=np.float64)
    knots_t = np.asarray(BASE_T_KNOTS, dtype=np.float64)
    t0 = np.interp(levels, knots_p, knots_t)
    low = levels < knots_p[1]
    x_low = levels[low] / knots_p[1]
    t0[low] = knots_t[0] + (knots_t[1] - knots_t[0]) * x_low**LOW_TAIL_POWER
    high = levels > knots_p[-2]
    x_high = (levels[high] - knots_p[-2]) / (knots_p[-1] - knots_p[-2])
    t0[high] = knots_t[-2] + (knots_t[-1] - knots_t[-2]) * x_high**HIGH_TAIL_POWER
    return t0


def synthesize_librispeech_100(seed: int = 0) -> torch.Tensor:
    """A synthetic speed-perturbed LibriSpeech train-clean-100 shape table.

    Deterministic for a given ``seed`` (numpy's PCG64 generator; the same numpy version
    and platform give the same bits).

    Returns:
      ``(85617, 2)`` int32 tensor of ``[T, U]`` rows in random order; T in frames after
      4x subsampling, U in BPE-500 tokens.
    """
    import numpy as np
    import torch

    rng = np.random.Generator(np.random.PCG64(seed))
    n = NUM_BASE_UTTERANCES
    base_t = _base_quantile(rng.random(n))
    ratio_sigma = np.sqrt(RATIO_SIGMA_LONG**2 + RATIO_SIGMA_SHORT**2 * 100.0 / base_t)
    ratio = RATIO_MEAN * (1.0 + ratio_sigma * rng.standard_normal(n))
    # A (rare) ratio <= 0 becomes the smallest U of the reference through the clip.
    tokens = np.clip(np.rint(base_t * ratio), *U_RANGE)

    frames = np.concatenate([np.clip(np.rint(base_t / speed), *T_RANGE) for speed in SPEED_FACTORS])
    table = np.stack([frames, np.tile(tokens, len(SPEED_FACTORS))], axis=1).astype(np.int32)
    table = table[rng.permutation(len(table))]
    return torch.from_numpy(np.ascontiguousarray(table))


SYNTHESIZERS = {"librispeech-100": synthesize_librispeech_100}


# --------------------------------------------------------------------------------------
# Calibration against a statistics json
# --------------------------------------------------------------------------------------

QUANTILE_REL_TOL = 0.03
RATIO_QUANTILE_REL_TOL = 0.05
PADDING_EFFICIENCY_ABS_TOL = 0.02
SORTED_BATCHES_REL_TOL = 0.03


class CalibrationCheck(NamedTuple):
    name: str
    value: float
    target: object  # a number, or a (low, high) pair for range checks
    tolerance: str  # human-readable: "exact", "±3%", "±0.02", "within range"
    ok: bool


def load_reference_stats(path: str) -> Dict:
    import json

    if not os.path.isfile(path):
        raise UsageError(f"reference statistics {path!r} do not exist; pass an existing json to --reference-stats")
    try:
        with open(path, encoding="utf-8") as f:
            stats = json.load(f)
    except Exception as error:
        raise UsageError(f"reference statistics {path!r} cannot be read ({first_line(error)})") from None
    required = ("rows", "min", "max", "quantile_levels", "quantiles_T", "quantiles_U", "quantiles_U_over_T")
    missing = [key for key in required if not isinstance(stats, dict) or key not in stats]
    if missing:
        raise UsageError(f"reference statistics {path!r} lack {', '.join(missing)}; expected a shape-stats json")
    return stats


def _relative_check(name: str, value: float, target: float, rel_tol: float) -> CalibrationCheck:
    ok = abs(value - target) <= rel_tol * abs(target)
    return CalibrationCheck(name, float(value), float(target), f"±{rel_tol:.0%}", bool(ok))


def calibration_report(table: torch.Tensor, stats: Dict) -> List[CalibrationCheck]:
    """Compares a shape table with the statistics of a reference table.

    Args:
      table: ``(N, 2)`` integer tensor of ``[T, U]`` rows.
      stats: the statistics json as a dict (``rows``, ``min``, ``max``,
        ``quantile_levels``, ``quantiles_T``, ``quantiles_U``, ``quantiles_U_over_T``,
        ``batch_size_30``, ``sorted_max_frames_10000``).

    Returns:
      One :class:`CalibrationCheck` per statistic: the row count (exact); T and U
      quantiles (±3% each, linear interpolation as ``torch.quantile``); U/T quantiles
      (±5%); T and U within the reference's [min, max]; padding efficiency of
      ``ShapeSampler(table, 30)`` (±0.02 absolute); batch count of
      ``SortedShapeSampler(table, 10000)`` (±3%).
    """
    import torch

    from tlbench.data.sampler import ShapeSampler, SortedShapeSampler, padding_efficiency
    from tlbench.data.shape_table import validate_shape_info

    table = validate_shape_info(table)
    checks: List[CalibrationCheck] = []
    rows = int(table.shape[0])
    checks.append(CalibrationCheck("rows", rows, int(stats["rows"]), "exact", rows == int(stats["rows"])))

    frames = table[:, 0].to(torch.float64)
    tokens = table[:, 1].to(torch.float64)
    levels = torch.tensor(stats["quantile_levels"], dtype=torch.float64)
    for column, values, key, tol in (
        ("T", frames, "quantiles_T", QUANTILE_REL_TOL),
        ("U", tokens, "quantiles_U", QUANTILE_REL_TOL),
        ("U/T", tokens / frames, "quantiles_U_over_T", RATIO_QUANTILE_REL_TOL),
    ):
        quantiles = torch.quantile(values, levels).tolist()
        for level, value, target in zip(levels.tolist(), quantiles, stats[key]):
            checks.append(_relative_check(f"{column} q{level * 100:g}%", value, target, tol))

    for column, values in (("T", table[:, 0]), ("U", table[:, 1])):
        low, high = int(stats["min"][column]), int(stats["max"][column])
        value_min, value_max = int(values.min()), int(values.max())
        checks.append(CalibrationCheck(f"{column} min", value_min, (low, high), "within range", low <= value_min <= high))
        checks.append(CalibrationCheck(f"{column} max", value_max, (low, high), "within range", low <= value_max <= high))

    if "batch_size_30" in stats:
        efficiency = padding_efficiency(list(ShapeSampler(table, 30)))
        target = float(stats["batch_size_30"]["padding_efficiency"])
        ok = abs(efficiency - target) <= PADDING_EFFICIENCY_ABS_TOL
        checks.append(
            CalibrationCheck(
                "padding efficiency, batch 30", efficiency, target, f"±{PADDING_EFFICIENCY_ABS_TOL}", bool(ok)
            )
        )
    if "sorted_max_frames_10000" in stats:
        num_batches = len(SortedShapeSampler(table, 10000))
        target = int(stats["sorted_max_frames_10000"]["num_batches"])
        checks.append(_relative_check("sorted batches, max 10000 frames", num_batches, target, SORTED_BATCHES_REL_TOL))
    return checks


