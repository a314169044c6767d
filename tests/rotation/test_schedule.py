"""The Givens tree schedule: level and pair counts, pair positions."""

import pytest
import torch

from qgoft_bench.rotation import givens_schedule, level_sizes, num_levels


@pytest.mark.parametrize(("d", "levels"), [(768, 10), (3072, 12), (4096, 12), (11008, 14)])
def test_model_widths(d: int, levels: int) -> None:
    schedule = givens_schedule(d)
    assert len(schedule) == num_levels(d) == levels
    assert sum(len(p) for p in schedule) == d - 1


def test_every_small_width_has_d_minus_1_pairs() -> None:
    for d in range(2, 71):
        schedule = givens_schedule(d)
        assert sum(len(p) for p in schedule) == d - 1
        assert [len(p) for p in schedule] == level_sizes(d)


@pytest.mark.parametrize("d", [2, 3, 5, 7, 8, 13, 64, 100])
def test_pair_positions(d: int) -> None:
    schedule = givens_schedule(d)
    for level, pairs in enumerate(schedule):
        expected = [(k * 2 ** (level + 1), k * 2 ** (level + 1) + 2**level) for k in range(len(pairs))]
        assert pairs.dtype == torch.long and pairs.shape == (len(expected), 2)
        assert [tuple(p) for p in pairs.tolist()] == expected
        assert all(j < d for _, j in expected)
        # No further pair fits at this level: the next i's partner would reach past d.
        assert len(expected) * 2 ** (level + 1) + 2**level >= d
    # Tree, not butterfly: once a coordinate was a partner j it never appears again.
    seen_j: set[int] = set()
    for pairs in schedule:
        coords = set(pairs.flatten().tolist())
        assert not coords & seen_j
        seen_j |= set(pairs[:, 1].tolist())
    assert seen_j == set(range(1, d))


def test_small_example() -> None:
    assert [p.tolist() for p in givens_schedule(5)] == [[[0, 1], [2, 3]], [[0, 2]], [[0, 4]]]
    assert givens_schedule(1) == []
