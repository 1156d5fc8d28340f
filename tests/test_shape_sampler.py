import pytest
import torch

from shape_sampler import (
    ShapeInfoError,
    ShapeSampler,
    SortedShapeSampler,
    load_shape_info,
    padding_efficiency,
    validate_shape_info,
)


def random_table(num_rows: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    t = torch.randint(1, 700, (num_rows,), generator=generator)
    u = torch.randint(1, 150, (num_rows,), generator=generator)
    return torch.stack([t, u], dim=1).to(torch.int32)


def test_fixed_batches_are_consecutive_rows_and_drop_the_tail():
    table = random_table(103, seed=1)
    batches = list(ShapeSampler(table, 10))
    assert len(batches) == 10 and len(ShapeSampler(table, 10)) == 10
    rows = [tuple(r) for r in table.tolist()]
    for k, batch in enumerate(batches):
        assert batch == rows[10 * k : 10 * k + 10]
    assert sum(len(b) for b in batches) == 100  # the 3 tail rows are dropped


def test_sorted_batches_keep_pairs_use_each_row_once_respect_max_frames_and_descend():
    table = random_table(500, seed=2)
    max_frames = 2000
    batches = list(SortedShapeSampler(table, max_frames))
    flat = [pair for batch in batches for pair in batch]
    assert sorted(flat) == sorted(tuple(r) for r in table.tolist())  # every (T, U) pair kept, each row once
    assert all(sum(t for t, _ in b) <= max_frames for b in batches)
    assert [t for t, _ in flat] == sorted((t for t, _ in flat), reverse=True)
    for (t1, u1), (t2, u2) in zip(flat, flat[1:]):
        assert t1 > t2 or (t1 == t2 and u1 >= u2)
    # greedy packing: adding the next batch's first utterance would overflow
    for current, following in zip(batches, batches[1:]):
        assert sum(t for t, _ in current) + following[0][0] > max_frames


def test_sorted_keeps_pairs_where_sorting_columns_independently_would_not():
    table = torch.tensor([[10, 1], [5, 9], [8, 4]], dtype=torch.int32)
    flat = [p for b in SortedShapeSampler(table, 100) for p in b]
    assert flat == [(10, 1), (8, 4), (5, 9)]


def test_an_utterance_longer_than_max_frames_is_a_batch_alone():
    table = torch.tensor([[50, 3], [30, 2], [20, 1], [5, 1]], dtype=torch.int32)
    assert list(SortedShapeSampler(table, 40)) == [[(50, 3)], [(30, 2)], [(20, 1), (5, 1)]]


def test_same_table_gives_same_batches():
    table = random_table(300, seed=3)
    assert list(SortedShapeSampler(table, 1500)) == list(SortedShapeSampler(table.clone(), 1500))
    assert list(ShapeSampler(table, 7)) == list(ShapeSampler(table.clone(), 7))


@pytest.mark.parametrize("bad", [0, -3])
def test_non_positive_sizes_are_refused(bad):
    table = random_table(10, seed=4)
    with pytest.raises(ValueError, match=str(bad)):
        ShapeSampler(table, bad)
    with pytest.raises(ValueError, match=str(bad)):
        SortedShapeSampler(table, bad)


@pytest.mark.parametrize("table, message", [
    (torch.zeros(3, 3, dtype=torch.int32), r"\(3, 3\)"),
    (torch.ones(4, 2, dtype=torch.float32), "float32"),
    (torch.tensor([[5, 2], [0, 3]], dtype=torch.int32), "row 1 has T=0"),
    (torch.tensor([[5, -2]], dtype=torch.int32), "U=-2"),
    (torch.zeros(0, 2, dtype=torch.int32), "empty"),
])
def test_bad_tables_are_named(table, message):
    with pytest.raises(ShapeInfoError, match=message):
        validate_shape_info(table)


def test_load_shape_info_errors(tmp_path):
    with pytest.raises(ShapeInfoError, match="does not exist"):
        load_shape_info(str(tmp_path / "missing.pt"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(ShapeInfoError, match="cannot be read"):
        load_shape_info(str(corrupt))


def test_padding_efficiency_by_hand():
    # grid cells used: 4*3 + 2*2 = 16; padded: 2 * 4 * 3 = 24
    assert padding_efficiency([[(4, 2), (2, 1)]]) == pytest.approx(16 / 24)
