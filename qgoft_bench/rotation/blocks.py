"""2x2 blocks and the conventions for how they act.

Convention (docs/DESIGN.md): a block M at pair (i, j) acts on a column vector v as
    v_i <- M00 v_i + M01 v_j,    v_j <- M10 v_i + M11 v_j,
P_l is the product of level l's blocks (they touch disjoint coordinates) and R = P_(L-1) ... P_1 P_0, so R v applies
level 0 first. For a row vector x, x @ P_l is
    x_i <- M00 x_i + M10 x_j,    x_j <- M01 x_i + M11 x_j,
and x @ R = x @ P_(L-1) @ ... @ P_0 applies level L-1 first.
"""

import torch


def angles_to_blocks(theta: torch.Tensor) -> torch.Tensor:
    """Givens blocks [[cos t, -sin t], [sin t, cos t]] from angles: (..., n) -> (..., n, 2, 2)."""
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([c, -s, s, c], dim=-1).unflatten(-1, (2, 2))  # one stack: fewer tiny ops per adapter and step


def inverse_transpose_blocks(blocks: torch.Tensor) -> torch.Tensor:
    """M^-T for each 2x2 block: (n, 2, 2) -> (n, 2, 2).

    Used to undo a merge: if R is the tree of blocks M, then R^-T is the same tree (same level order) of blocks M^-T,
    because R^-T = (P_0^-1 ... P_(L-1)^-1)^T = P_(L-1)^-T ... P_0^-T. For a rotation M^-T = M.
    """
    a, b = blocks[..., 0, 0], blocks[..., 0, 1]
    c, d = blocks[..., 1, 0], blocks[..., 1, 1]
    det = a * d - b * c
    adj_t = torch.stack([torch.stack([d, -c], dim=-1), torch.stack([-b, a], dim=-1)], dim=-2)
    return adj_t / det[..., None, None]
