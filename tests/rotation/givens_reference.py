"""An independent float64 reference: R = P_(L-1) ... P_0 as a product of explicit d x d Givens matrices."""

import torch

from qgoft_bench.rotation import givens_schedule


def dense_rotation(blocks: torch.Tensor, d: int) -> torch.Tensor:
    """Column convention: P_l is the identity with each block M placed at rows/cols (i, j), v_i <- M00 v_i + M01 v_j.

    Differentiable in ``blocks`` (index_put), so the same product gives reference gradients.
    """
    rotation = torch.eye(d, dtype=blocks.dtype)
    k = 0
    for pairs in givens_schedule(d):
        i, j = pairs[:, 0], pairs[:, 1]
        m = blocks[k : k + len(pairs)]
        k += len(pairs)
        level = torch.eye(d, dtype=blocks.dtype)
        level = level.index_put((i, i), m[:, 0, 0]).index_put((i, j), m[:, 0, 1])
        level = level.index_put((j, i), m[:, 1, 0]).index_put((j, j), m[:, 1, 1])
        rotation = level @ rotation
    assert k == d - 1
    return rotation


def rotate_level_by_level(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """x @ R for rows without a d x d matrix (for widths too big for ``dense_rotation``): level L-1 first, each level
    x_i <- M00 x_i + M10 x_j, x_j <- M01 x_i + M11 x_j (the row form of the column convention)."""
    z, k = x.clone(), blocks.shape[0]
    for pairs in reversed(givens_schedule(x.shape[-1])):
        m, k = blocks[k - len(pairs) : k], k - len(pairs)
        i, j = pairs[:, 0], pairs[:, 1]
        zi, zj = z[..., i].clone(), z[..., j].clone()
        z[..., i] = m[:, 0, 0] * zi + m[:, 1, 0] * zj
        z[..., j] = m[:, 0, 1] * zi + m[:, 1, 1] * zj
    assert k == 0
    return z
