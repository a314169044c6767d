"""The Givens tree schedule of paper Eq. 3: which coordinate pairs each level rotates.

For width d there are L = ceil(log2 d) levels. At level l the active coordinates are the multiples of 2^l below d
(``ceil(d / 2^l)`` of them); consecutive active coordinates are paired, (k 2^(l+1), k 2^(l+1) + 2^l) for k = 0, 1, ...
while the partner is below d, and an odd leftover is carried up unpaired. Level l has ``floor(ceil(d / 2^l) / 2)``
pairs; all levels together have exactly d - 1. Block parameters are stored level-major: level 0's pairs first, in
increasing k, then level 1's, and so on. This is a binary tree (each coordinate is paired at most once per level and
drops out once it was a partner j), not a butterfly.
"""

from functools import lru_cache

import torch


def num_levels(d: int) -> int:
    """L = ceil(log2 d); 0 for d = 1."""
    if d < 1:
        raise ValueError(f"width must be positive, got {d}")
    return (d - 1).bit_length()


def level_sizes(d: int) -> list[int]:
    """Number of pairs at each level l = 0 .. L-1: floor(ceil(d / 2^l) / 2); they sum to d - 1."""
    return [-(-d // (1 << level)) // 2 for level in range(num_levels(d))]


@lru_cache(maxsize=256)
def _schedule_cpu(d: int) -> tuple[torch.Tensor, ...]:
    out = []
    for level, size in enumerate(level_sizes(d)):
        i = torch.arange(size, dtype=torch.long) * (1 << (level + 1))
        out.append(torch.stack([i, i + (1 << level)], dim=1))
    return tuple(out)


def givens_schedule(d: int) -> list[torch.Tensor]:
    """The pairs of width ``d``, one LongTensor of shape (pairs_l, 2) per level; row k is (i, j) with i < j.

    Example: d = 5 gives [[(0, 1), (2, 3)], [(0, 2)], [(0, 4)]].
    """
    return [pairs.clone() for pairs in _schedule_cpu(d)]
