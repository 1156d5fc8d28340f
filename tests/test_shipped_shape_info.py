"""The committed shape_info.pt: a synthetic table calibrated to the statistics of the real
speed-perturbed LibriSpeech train-clean-100 table, and not a copy of that table."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_DIR not in sys.path:
    sys.path.insert(0, REPO_DIR)

import tlbench.data.manifests as generate_shape_info  # noqa: E402
from tlbench.data.shape_table import load_shape_info  # noqa: E402
from tlbench.render.tables import calibration_table  # noqa: E402

SHIPPED = os.path.join(REPO_DIR, "shape_info.pt")
REFERENCE_DIR = os.path.join(REPO_DIR, "..", "shared", "reference")
REFERENCE_STATS = os.path.join(REFERENCE_DIR, "librispeech_train_clean_100_sp_shape_stats.json")
REFERENCE_TABLE = os.path.join(REFERENCE_DIR, "librispeech_train_clean_100_sp_shape_info.pt")


@pytest.fixture(scope="module")
def shipped() -> torch.Tensor:
    return torch.load(SHIPPED, map_location="cpu", weights_only=True)


def test_shipped_table_format(shipped):
    assert isinstance(shipped, torch.Tensor)
    assert shipped.dtype == torch.int32
    assert tuple(shipped.shape) == (85617, 2)
    loaded = load_shape_info(SHIPPED)
    assert loaded.shape == (85617, 2)
    assert torch.equal(loaded, shipped.to(torch.int64))


def test_shipped_table_is_the_seed_0_synthetic_table(shipped):
    # Regenerating with the documented command gives the same bits.
    assert torch.equal(generate_shape_info.synthesize_librispeech_100(0), shipped)


@pytest.mark.skipif(not os.path.isfile(REFERENCE_STATS), reason=f"no reference statistics at {REFERENCE_STATS}")
def test_shipped_table_meets_every_calibration_check(shipped):
    with open(REFERENCE_STATS, encoding="utf-8") as f:
        stats = json.load(f)
    checks = generate_shape_info.calibration_report(shipped, stats)
    names = [check.name for check in checks]
    # Every statistic the task calibrates against is among the checks.
    levels = stats["quantile_levels"]
    assert len(checks) == 1 + 3 * len(levels) + 4 + 2
    assert "padding efficiency, batch 30" in names and "sorted batches, max 10000 frames" in names
    failed = [check for check in checks if not check.ok]
    assert not failed, "\n" + calibration_table(checks)

    by_name = {check.name: check for check in checks}
    assert by_name["rows"].value == stats["rows"] == 85617
    assert abs(by_name["padding efficiency, batch 30"].value - 0.505) <= 0.02
    assert abs(by_name["sorted batches, max 10000 frames"].value - 2773) <= 0.03 * 2773


@pytest.mark.skipif(not os.path.isfile(REFERENCE_TABLE), reason=f"no reference table at {REFERENCE_TABLE}")
def test_shipped_table_is_not_the_real_table(shipped):
    real = torch.load(REFERENCE_TABLE, map_location="cpu", weights_only=True)
    assert real.shape == shipped.shape
    assert not torch.equal(real.to(torch.int64), shipped.to(torch.int64))
    # Not the real rows reordered either: the multisets of (T, U) rows differ.
    def sorted_rows(table: torch.Tensor) -> torch.Tensor:
        keys = table[:, 0].to(torch.int64) * 1000 + table[:, 1].to(torch.int64)
        return torch.sort(keys).values

    assert not torch.equal(sorted_rows(real), sorted_rows(shipped))
    # And not a copy of a large part of it in place: equal rows at the same index happen only
    # by chance (small integer pairs), far below the 1% a copied block would give.
    same_row = (real.to(torch.int64) == shipped.to(torch.int64)).all(dim=1).float().mean().item()
    assert same_row < 0.01
