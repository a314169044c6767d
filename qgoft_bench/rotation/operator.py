"""The fast Givens rotation ``givens_rotate(x, blocks) = x @ R`` and its backward.

Layout: the tree is self-similar. Levels 0 .. k-1 (k = log2 GROUP) only pair coordinates inside aligned groups of
GROUP consecutive coordinates, so their product is block diagonal with GROUP x GROUP blocks; the levels above act
only on the multiples of GROUP, which form the same tree problem on ceil(d / GROUP) coordinates. So R splits into
stages R = R_(S-1) ... R_1 R_0, where stage s is block diagonal on the coordinates that are multiples of GROUP^s.

- Each step, the small stage matrices (GROUP x GROUP per group, d/GROUP + d/GROUP^2 + ... groups in all) are built
  from the 2x2 blocks on device: one index_put of all blocks into per-level identity factors (positions cached per
  (d, device)), then k - 1 tiny batched matmuls per stage; O(d * GROUP * k) work, differentiable by autograd.
- x @ R = (x @ R_top) @ R_0: the top stages run recursively on the narrow strided slice x[:, ::GROUP], and stage 0 is
  one batched matmul over the full width (tokens x GROUP x GROUP per group) whose inputs at the group heads are then
  corrected with a rank-one update. The full-width passes are batched matmuls on strided views of the row-major
  activations (no permute copies, no per-level passes); only the narrow head slice x[:, ::GROUP] is gathered; no
  dense d x d matrix.
- Backward recomputes from the saved input x (the only activation-sized tensor kept): grad_x = grad_y @ R^T runs the
  stages in reverse with transposed group matrices, each group matrix gets grad = u_g^T grad_g (a reduction over
  tokens), and autograd maps those to the 4 numbers per 2x2 block through the tiny construction.
- Computes in float32 (float64 stays float64): bf16/fp16 inputs are cast in and the result is cast back; autocast is
  switched off inside so the batched matmuls do not drop to bf16.

GROUP = 16: of 8, 16 and 32, the stage-0 batched matmul and its reduction were fastest (or tied) at 16 for d = 768
and 3072, tokens 8192, on the project's 2-core CPU. Larger groups cost more flops per coordinate (GROUP per token),
smaller ones hit MKL's slow paths for tiny matrices and add stages.
"""

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from qgoft_bench.rotation.schedule import givens_schedule, num_levels

GROUP = 16
_LEVELS_PER_STAGE = GROUP.bit_length() - 1


@dataclass(frozen=True)
class _Plan:
    """How the (d - 1, 2, 2) blocks fill the stages' per-level group matrices, built once per (d, device).

    Every level of stage s is a (groups_s, GROUP, GROUP) block-diagonal factor: the identity with each 2x2 block
    written at its pair's rows and columns inside its group. All factors of all stages live in one flat buffer, so
    one ``index_put`` of the flattened blocks (level-major, M00 M01 M10 M11 per pair) fills every factor.
    """

    identity: torch.Tensor  # flat buffer of identity factors, float32
    index: torch.Tensor  # (4 (d - 1),) flat positions of the block entries
    stages: tuple[tuple[int, int], ...]  # per stage, in buffer order: (levels, groups)


@lru_cache(maxsize=64)
def _plan(d: int, device: torch.device) -> _Plan:
    """The stages of width d; cached so no index tensor is built on the host per step."""
    stages, index, start = [], [], 0
    width, first, total = d, 0, num_levels(d)
    while first < total:
        count, groups = min(_LEVELS_PER_STAGE, total - first), -(-width // GROUP)
        # The stage's levels are levels 0 .. count-1 of the same tree on its own ``width`` coordinates.
        for t, pairs in enumerate(givens_schedule(width)[:count]):
            i, j = pairs[:, 0], pairs[:, 1]
            base = start + t * groups * GROUP * GROUP + (i // GROUP) * GROUP * GROUP
            a, b = i % GROUP, j % GROUP
            entries = torch.stack([a * GROUP + a, a * GROUP + b, b * GROUP + a, b * GROUP + b], dim=1)
            index.append((base[:, None] + entries).reshape(-1))
        stages.append((count, groups))
        start += count * groups * GROUP * GROUP
        width, first = groups, first + count
    identity = torch.eye(GROUP).repeat(start // (GROUP * GROUP), 1, 1).reshape(-1)
    return _Plan(identity.to(device), torch.cat(index).to(device), tuple(stages))


def _stage_matrices(blocks: torch.Tensor, plan: _Plan) -> list[torch.Tensor]:
    """Group matrices C_s (groups_s, GROUP, GROUP) with x_g @ C_s[g] = stage s on group g (row vectors).

    Column convention per level: P restricted to a group is the identity with M at (i, j); for rows x @ P uses the
    same matrix, and stage s is C_s = P_(top) @ ... @ P_(first), a few tiny batched matmuls.
    """
    factors = plan.identity.to(blocks.dtype).index_put((plan.index,), blocks.reshape(-1))
    mats = []
    # split and unbind, not slicing and indexing: their backward concatenates the grads instead of zero-filling
    # the whole buffer once per stage and level
    chunks = factors.split([count * groups * GROUP * GROUP for count, groups in plan.stages])
    for chunk, (count, groups) in zip(chunks, plan.stages, strict=True):
        levels = chunk.view(count, groups, GROUP, GROUP).unbind(0)
        product = levels[-1]
        for factor in reversed(levels[:-1]):
            product = torch.bmm(product, factor)
        mats.append(product)
    return mats


def _pad(u: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, n) -> (N, groups * GROUP), zero columns appended (padded coordinates see identity blocks)."""
    extra = groups * GROUP - u.shape[1]
    return F.pad(u, (0, extra)) if extra else u


def _group_matmul(u: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """out[:, g] = u[:, g] @ mats[g] per group of GROUP columns; u: (N, groups * GROUP) contiguous."""
    n, groups = u.shape[0], mats.shape[0]
    out = torch.empty_like(u)
    # Both operands and the result are strided views of row-major (N, width) tensors: no permute copies.
    torch.bmm(u.view(n, groups, GROUP).transpose(0, 1), mats, out=out.view(n, groups, GROUP).transpose(0, 1))
    return out


def _forward(x: torch.Tensor, mats: list[torch.Tensor]) -> torch.Tensor:
    """x @ R for contiguous x of shape (N, width); ``mats`` from the stage at this width upwards."""
    width, groups = x.shape[1], mats[0].shape[0]
    y = _group_matmul(_pad(x, groups), mats[0])
    if len(mats) > 1:
        top = x[:, ::GROUP]
        delta = _forward(top.contiguous(), mats[1:]) - top
        # Stage 0 must see the rotated group heads: u_g = x_g + delta_g e_0, so add delta_g * C[g, 0, :].
        y.view(-1, groups, GROUP).addcmul_(delta.unsqueeze(-1), mats[0][:, 0, :])
    return y[:, :width] if y.shape[1] != width else y


def _backward(
    x: torch.Tensor, grad_y: torch.Tensor, mats: list[torch.Tensor], need_x: bool, need_mats: bool
) -> tuple[torch.Tensor | None, list[torch.Tensor | None]]:
    """Gradients of x @ R for x and each stage's group matrices; recomputes the top stages from x."""
    width, groups = x.shape[1], mats[0].shape[0]
    grad_p = _pad(grad_y, groups)
    grad_v = grad_p.view(-1, groups, GROUP)
    top = x[:, ::GROUP].contiguous() if len(mats) > 1 else None
    grad_c = None
    if need_mats:
        x_v = _pad(x, groups).view(-1, groups, GROUP)
        grad_c = torch.bmm(x_v.permute(1, 2, 0), grad_v.transpose(0, 1))
        if top is not None:  # the correction of the group heads, as in the forward
            delta = _forward(top, mats[1:]) - top
            grad_c[:, 0, :] += torch.einsum("ng,ngc->gc", delta, grad_v)
    grads: list[torch.Tensor | None] = [grad_c]
    if top is None:
        grad_u = _group_matmul(grad_p, mats[0].transpose(1, 2)) if need_x else None
        return (grad_u[:, :width] if grad_u is not None else None), grads
    if need_x:
        grad_u = _group_matmul(grad_p, mats[0].transpose(1, 2))
        grad_heads = grad_u[:, ::GROUP].contiguous()
    else:  # only the group heads' gradient feeds the stages above: one column per group
        grad_u = None
        grad_heads = torch.einsum("ngc,gc->ng", grad_v, mats[0][:, 0, :])
    grad_top, grads_up = _backward(top, grad_heads, mats[1:], need_x, need_mats)
    if grad_u is not None:
        grad_u[:, ::GROUP] = grad_top
        grad_u = grad_u[:, :width]
    return grad_u, grads + grads_up


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


class GivensRotate(torch.autograd.Function):
    """y = x @ R over the last dim; saves only x (and the tiny blocks) and recomputes in backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        d, dtype = x.shape[-1], _compute_dtype(x.dtype)
        with torch.autocast(x.device.type, enabled=False):
            mats = _stage_matrices(blocks.to(dtype), _plan(d, x.device))
            y = _forward(x.reshape(-1, d).to(dtype).contiguous(), mats)
        ctx.save_for_backward(x, blocks)
        return y.view(x.shape).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, blocks = ctx.saved_tensors
        need_x, need_blocks = ctx.needs_input_grad
        d, dtype = x.shape[-1], _compute_dtype(x.dtype)
        with torch.autocast(x.device.type, enabled=False):
            with torch.enable_grad():
                b = blocks.detach().to(dtype).requires_grad_(need_blocks)
                mats = _stage_matrices(b, _plan(d, x.device))
            grad_x, grad_mats = _backward(
                x.reshape(-1, d).to(dtype).contiguous(),
                grad_y.reshape(-1, d).to(dtype).contiguous(),
                [m.detach() for m in mats],
                need_x,
                need_blocks,
            )
            grad_b = torch.autograd.grad(mats, b, grad_mats)[0].to(blocks.dtype) if need_blocks else None
        if grad_x is not None:
            grad_x = grad_x.contiguous().view(x.shape).to(x.dtype)
        return grad_x, grad_b


def givens_rotate(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """x @ R over the last dim of x (any leading dims): rows are rotated, y[..., :] = x[..., :] @ R.

    x: (..., d); blocks: (d - 1, 2, 2), level-major (see ``givens_schedule``), with R = P_(L-1) ... P_0 as in
    ``qgoft_bench.rotation.blocks``. Equivalently, for column vectors y = R^T x. Autograd-aware for x and blocks.
    """
    d = x.shape[-1]
    if blocks.shape != (d - 1, 2, 2):
        raise ValueError(f"width {d} needs blocks of shape ({d - 1}, 2, 2), got {tuple(blocks.shape)}")
    if d == 1:
        return x
    if x.is_cuda:  # the fused Triton kernel: one read and one write of the activations per direction
        from qgoft_bench.rotation.triton_kernel import givens_rotate_triton, triton_available

        if triton_available(x):
            return givens_rotate_triton(x, blocks)
    return GivensRotate.apply(x, blocks)


def givens_matrix(blocks: torch.Tensor, d: int) -> torch.Tensor:
    """Dense R (d x d) with givens_rotate(x, blocks) == x @ R; for merging and tests, never for training."""
    return givens_rotate(torch.eye(d, dtype=blocks.dtype, device=blocks.device), blocks)
