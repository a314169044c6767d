"""An independent float64 reference: R = P_(L-1) ... P_0 as a product of explicit d x d Givens matrices.

The pairs come from the definition in docs/DESIGN.md, written out here (``spec_levels``), not from the package's
``givens_schedule``: a wrong schedule shows as a mismatch rather than being reproduced by its own reference.
"""

import torch


def spec_levels(d: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(i, j) index tensors of each level: level l pairs (k 2^(l+1), k 2^(l+1) + 2^l) for every k with j < d."""
    levels, span = [], 1
    while span < d:
        i = torch.arange(0, d - span, 2 * span)
        levels.append((i, i + span))
        span *= 2
    return levels


def dense_rotation(blocks: torch.Tensor, d: int) -> torch.Tensor:
    """Column convention: P_l is the identity with each block M placed at rows/cols (i, j), v_i <- M00 v_i + M01 v_j;
    ``blocks`` (d-1, 2, 2) level-major, in increasing i within a level.

    Differentiable in ``blocks`` (index_put), so the same product gives reference gradients.
    """
    rotation = torch.eye(d, dtype=blocks.dtype)
    k = 0
    for i, j in spec_levels(d):
        m = blocks[k : k + len(i)]
        k += len(i)
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
    for i, j in reversed(spec_levels(x.shape[-1])):
        m, k = blocks[k - len(i) : k], k - len(i)
        zi, zj = z[..., i].clone(), z[..., j].clone()
        z[..., i] = m[:, 0, 0] * zi + m[:, 1, 0] * zj
        z[..., j] = m[:, 0, 1] * zi + m[:, 1, 1] * zj
    assert k == 0
    return z
