"""The fast Givens rotation ``givens_rotate(x, blocks) = x @ R`` and its backward.

Layout: the tree is self-similar. Levels 0 .. k-1 (k = log2 GROUP) only pair coordinates inside aligned groups of
GROUP consecutive coordinates, so their product is block diagonal with GROUP x GROUP blocks; the levels above act
only on the multiples of GROUP, which form the same tree problem on ceil(d / GROUP) coordinates. So R splits into
stages R = R_(S-1) ... R_1 R_0, where stage s is block diagonal on the coordinates that are multiples of GROUP^s.

- Each step, the small stage matrices (GROUP x GROUP per group, d/GROUP + d/GROUP^2 + ... groups in all) are built
  from the 2x2 blocks on device: one index_put of all blocks into per-level identity factors (positions cached per
  (d, device)), then k - 1 tiny batched matmuls per stage; O(d * GROUP * k) work, differentiable by autograd.
- x @ R = (x @ R_top) @ R_0, computed feature-major (on x^T, a free view of the row-major activations): the group
  heads x[:, ::GROUP] go through the stages above, stage 0's input is a plain copy of x (in x's own memory layout,
  no transposition) with the rotated heads written back, and stage 0 is ONE batched matmul C_g^T @ u_g^T over all
  groups whose result is a fresh contiguous (d, N) tensor, returned as the column-major (N, d) output (the next
  linear reads it without a copy). Once the stages above are at most DENSE_TOP wide they are folded into one dense
  matrix M = R_top^T - I (d/GROUP x d/GROUP for d <= 1024), so the narrow problem up there is one matmul.
  Why: ATen's bmm into a strided ``out=`` falls back to one small matmul per group, each its own parallel region,
  and with other processes on the cores every region waits for a descheduled thread (2 threads, a busy machine:
  the operator took about 3x a LoRA adapter's time that way); here every full-width pass is one call.
- Backward recomputes stage 0's input u from the saved input x (the only activation-sized tensor kept):
  grad_x = grad_y @ R^T is stage 0 with the transposed group matrices, the heads' rows then carried through the
  stages above; each group matrix gets grad = u_g^T grad_g (one batched reduction over tokens), M gets the heads'
  gradient times the heads, and autograd maps those to the 4 numbers per 2x2 block through the tiny construction.
  grad_x is column-major like the output.
- Computes in float32 (float64 stays float64): bf16/fp16 inputs are cast in and the result is cast back; autocast is
  switched off inside so the batched matmuls do not drop to bf16.

GROUP = 16: of 8, 16 and 32, the stage-0 batched matmul and its reduction were fastest (or tied) at 16 for d = 768
and 3072, tokens 8192, on the project's 2-core CPU (measured with the earlier row-major passes; not re-measured
for the feature-major ones). Larger groups cost more flops per coordinate (GROUP per token),
smaller ones hit MKL's slow paths for tiny matrices and add stages.
"""

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from qgoft_bench.rotation import cpu_kernel
from qgoft_bench.rotation.schedule import givens_schedule, num_levels

GROUP = 16
DENSE_TOP = 64  # a stage this narrow or narrower takes the stages above it as one dense matrix
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


def _top_operand(mats: list[torch.Tensor]) -> list[torch.Tensor]:
    """The operands the passes use: the stage matrices, except that the stages above the first one whose width is
    at most ``DENSE_TOP`` are folded into one dense M = R_top^T - I (width x width; tiny, differentiable), so the
    narrow problem up there is one matmul instead of a chain of small ones."""
    for s in range(len(mats) - 1):
        width = mats[s].shape[0]  # stage s has one group per coordinate of the stages above it
        if width <= DENSE_TOP:
            eye = torch.eye(width, dtype=mats[s].dtype, device=mats[s].device)
            return [*mats[: s + 1], _apply(eye, mats[s + 1 :]) - eye]
    return mats


def _stage_input(u: torch.Tensor, ops: list[torch.Tensor]) -> torch.Tensor:
    """Stage 0's input: u with its group heads rotated by the stages above, shape (groups * GROUP, N).

    u: (width, N), any strides. A plain copy keeps u's memory layout (x^T of row-major activations stays a view of
    row-major memory: no transposition); zero rows pad the last group (padded coordinates see identity blocks).
    Row g * GROUP is group g's head; the stages above act on the heads alone (``ops[1]`` the dense M of
    ``_top_operand``, or the group matrices of the next stage) and their result overwrites those rows.
    """
    extra = ops[0].shape[0] * GROUP - u.shape[0]
    slab = F.pad(u, (0, 0, 0, extra)) if extra else u.clone()
    if len(ops) > 1:
        top = u[::GROUP]
        slab[::GROUP] = torch.addmm(top, ops[1], top) if ops[1].dim() == 2 else _apply(top.contiguous(), ops[1:])
    return slab


def _apply(u: torch.Tensor, ops: list[torch.Tensor]) -> torch.Tensor:
    """R^T u for u of shape (width, N): the rotation of N row vectors, feature-major (u = x^T, y^T = R^T x^T).

    ``ops``: the group matrices C_s of the stages from this width upwards, the last possibly the dense
    M = R_top^T - I of ``_top_operand``. Feature-major, group g is a (GROUP, N) block of rows, so stage 0 is ONE
    batched matmul C_g^T @ u_g whose operands are views and whose result is a fresh contiguous (width, N) tensor:
    the (N, d) output is column-major, which the next linear layer reads without a copy. (A strided ``out=`` would
    make ATen's bmm fall back to one small matmul, and one parallel region, per group.)
    """
    c, (width, n) = ops[0], u.shape
    y = torch.bmm(c.transpose(1, 2), _stage_input(u, ops).view(c.shape[0], GROUP, n))
    return y.view(-1, n)[:width]


def _backward(
    x: torch.Tensor, grad_y: torch.Tensor, ops: list[torch.Tensor], need_x: bool, need_ops: bool
) -> tuple[torch.Tensor | None, list[torch.Tensor | None]]:
    """Gradients of y = R^T x (feature-major, (width, N) each, any strides) for x and for every operand of
    ``_apply``; recomputes stage 0's input from x (nothing else was saved)."""
    c, (width, n) = ops[0], x.shape
    groups = c.shape[0]
    extra = groups * GROUP - width
    grad_v = (F.pad(grad_y, (0, 0, 0, extra)) if extra else grad_y).view(groups, GROUP, n)
    # dL/dC_g = u_g grad_g^T with u stage 0's input: a reduction over tokens per group
    grad_c = torch.bmm(_stage_input(x, ops).view(groups, GROUP, n), grad_v.transpose(1, 2)) if need_ops else None
    if len(ops) == 1:
        grad_x = torch.bmm(c, grad_v).view(-1, n)[:width] if need_x else None
        return grad_x, [grad_c]
    # The heads' gradient at stage 0's input is what the stages above receive.
    top = x[::GROUP]
    grad_u = torch.bmm(c, grad_v) if need_x else None
    grad_heads = grad_u[:, 0, :] if grad_u is not None else torch.bmm(c[:, :1, :], grad_v).squeeze(1)
    if ops[1].dim() == 2:  # heads + M heads: dL/dM = grad_heads top^T, dL/dtop = (I + M^T) grad_heads
        grads_up = [grad_heads @ top.t() if need_ops else None]
        grad_top = torch.addmm(grad_heads, ops[1].t(), grad_heads) if need_x else None
    else:
        grad_top, grads_up = _backward(top.contiguous(), grad_heads.contiguous(), ops[1:], need_x, need_ops)
    if grad_u is not None:
        grad_u[:, 0, :] = grad_top
        grad_u = grad_u.view(-1, n)[:width]
    return grad_u, [grad_c, *grads_up]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


class GivensRotate(torch.autograd.Function):
    """y = x @ R over the last dim; saves only x (and the tiny blocks) and recomputes in backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        d, dtype = x.shape[-1], _compute_dtype(x.dtype)
        with torch.autocast(x.device.type, enabled=False):
            ops = _top_operand(_stage_matrices(blocks.to(dtype), _plan(d, x.device)))
            y = _apply(x.reshape(-1, d).to(dtype).t(), ops).t()  # (N, d), column-major: no transposing copies
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
                ops = _top_operand(_stage_matrices(b, _plan(d, x.device)))
            grad_x, grad_ops = _backward(
                x.reshape(-1, d).to(dtype).t(),
                grad_y.reshape(-1, d).to(dtype).t(),
                [op.detach() for op in ops],
                need_x,
                need_blocks,
            )
            grad_b = torch.autograd.grad(ops, b, grad_ops)[0].to(blocks.dtype) if need_blocks else None
        if grad_x is not None:
            grad_x = grad_x.t().view(x.shape).to(x.dtype)
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
    elif x.device.type == "cpu" and cpu_kernel.backend() == "kernel":  # the C++ kernel, same contract
        return cpu_kernel.rotate(x.reshape(-1, x.shape[-1]), blocks, _compute_dtype(x.dtype)).view(x.shape)
    return GivensRotate.apply(x, blocks)


def givens_matrix(blocks: torch.Tensor, d: int) -> torch.Tensor:
    """Dense R (d x d) with givens_rotate(x, blocks) == x @ R; for merging and tests, never for training."""
    return givens_rotate(torch.eye(d, dtype=blocks.dtype, device=blocks.device), blocks)
