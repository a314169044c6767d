"""Fused Triton kernel for the Givens tree: ``x @ R`` with one read and one write of ``x``, forward and backward.

Conventions (docs/DESIGN.md, "The rotation core"): ``x`` is (..., d) row vectors; ``blocks`` is (d-1, 2, 2), level-major;
R = P_(L-1) ... P_0, so ``x @ R`` applies level L-1 first, and one level acts on a row vector as
``x_i <- M00 x_i + M10 x_j,  x_j <- M01 x_i + M11 x_j``. The same kernel serves GOFT (rotation blocks, whose angle
gradients flow through ``angles_to_blocks`` by autograd outside) and qGOFT (free blocks).

Design
- Tiling: one program owns a [BLOCK_ROWS, D_PAD] tile of token rows, D_PAD = 2^L. The tile is loaded once, upcast to
  float32, every level runs in registers, and it is stored once in x's dtype.
- Levels by de-interleaving: the active coordinates of level l are the multiples of 2^l. Reshaping the active vector
  [R, S] to [R, S/2, 2] and splitting the last axis gives its even members (the pair heads i, which stay active above
  level l) and its odd members (the partners j, final after level l). ``_tree`` recurses on the evens for levels
  l+1 .. L-1, mixes (i, j) with level l's blocks, and interleaves back with join + reshape. The recursion is over
  constexpr sizes, so it unrolls at compile time; the work is S/2 + S/4 + ... < D_PAD pair updates per row.
- Non powers of two: columns d .. D_PAD-1 are masked zeros, never stored. A level-l pair whose index is not below the
  level's real pair count (its partner j >= d) gets the identity block: that is "the odd leftover is carried up".
- Backward recomputes from the saved input (the only activation-sized tensor saved): ``_tree_bwd`` recomputes the
  level inputs of the subtree in registers and runs the transposed 2x2 mixing from level 0 up. Recomputation is exact
  for GOFT and qGOFT alike (inverting from the output would divide by qGOFT's determinant) and costs only FLOPs.
- Block gradients: each program loops over several row tiles and keeps four float32 [D_PAD] accumulators (M00, M01,
  M10, M11) indexed by the pair's partner coordinate j, a bijection between [1, d) and the d-1 pairs that lets the
  partials be joined like the tile itself. Programs write a (num_programs, 4, d) buffer with coalesced stores; torch
  sums it over programs and gathers it into level-major (d-1, 2, 2): deterministic, no atomics.
"""

from __future__ import annotations

from functools import cache

import torch
from torch.autograd.function import once_differentiable

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the module still imports and triton_available() says False
    triton = None

# Kernels are built when the module is imported: triton decides compiled vs interpreted from TRITON_INTERPRET then.
_jit = triton.jit if triton is not None else (lambda fn: fn)

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Float32 elements per row tile. The backward holds about four tile-sized tensors live (input, grad, recomputed
# level inputs), so it gets the smaller tile. Tuning knobs for the GPU (see benchmarks/gpu_kernel.py).
_FWD_TILE_ELEMS = 8192
_BWD_TILE_ELEMS = 4096
# Backward programs per SM: enough to overlap one program's loads with another's math, few enough that the
# (programs, 4, d) partial block-gradient buffer stays small next to the activations.
_BWD_PROGRAMS_PER_SM = 2
_INTERPRETER_PROGRAMS = 3  # CPU interpreter: a few programs, so tests cover the multi-tile loop


@_jit
def _pair_blocks(blk_ptr, OFF: tl.constexpr, COUNT: tl.constexpr, HALF: tl.constexpr):
    """Level blocks as four [1, HALF] float32 rows; pair k >= COUNT (partner j >= d or padding) is the identity.

    blk_ptr: (d-1, 2, 2) float32, contiguous; OFF: the level's first pair; COUNT: its number of real pairs.
    """
    k = tl.arange(0, HALF)[None, :]
    real = k < COUNT
    p = blk_ptr + (OFF + k) * 4
    m00 = tl.load(p, mask=real, other=1.0)
    m01 = tl.load(p + 1, mask=real, other=0.0)
    m10 = tl.load(p + 2, mask=real, other=0.0)
    m11 = tl.load(p + 3, mask=real, other=1.0)
    return m00, m01, m10, m11


@_jit
def _tree(x, blk_ptr, OFF: tl.constexpr, ACTIVE: tl.constexpr, SIZE: tl.constexpr):
    """x @ P_(L-1) ... P_l on the active coordinates of level l.

    x: [ROWS, SIZE] float32, column c holding coordinate c * 2^l; OFF: level l's first block; ACTIVE: ceil(d / 2^l),
    the real active coordinates (the rest is padding).
    """
    # A static branch (SIZE is constexpr) with one return: code after a static early return is still generated.
    if SIZE == 1:
        y = x
    else:
        ROWS: tl.constexpr = x.shape[0]
        HALF: tl.constexpr = SIZE // 2
        xi, xj = tl.split(tl.reshape(x, [ROWS, HALF, 2]))
        # Levels above l only touch the pair heads i, and they come first in x @ R.
        xi = _tree(xi, blk_ptr, OFF + ACTIVE // 2, (ACTIVE + 1) // 2, HALF)
        m00, m01, m10, m11 = _pair_blocks(blk_ptr, OFF, ACTIVE // 2, HALF)
        yi = m00 * xi + m10 * xj
        yj = m01 * xi + m11 * xj
        y = tl.reshape(tl.join(yi, yj), [ROWS, SIZE])
    return y


@_jit
def _tree_bwd(x, g, blk_ptr, OFF: tl.constexpr, ACTIVE: tl.constexpr, SIZE: tl.constexpr):
    """Backward of ``_tree(x, ...)`` given its output grad g ([ROWS, SIZE] float32 both).

    Returns the grad wrt x and four [SIZE] block-grad partials (M00, M01, M10, M11), summed over the rows; entry c
    belongs to the pair whose partner j is c (entry 0 is no pair and stays zero).
    """
    if SIZE == 1:
        gx = g
        p00 = tl.zeros([1], tl.float32)
        p01 = p00
        p10 = p00
        p11 = p00
    else:
        ROWS: tl.constexpr = x.shape[0]
        HALF: tl.constexpr = SIZE // 2
        xi, xj = tl.split(tl.reshape(x, [ROWS, HALF, 2]))
        gi, gj = tl.split(tl.reshape(g, [ROWS, HALF, 2]))
        # Level l's input at the heads is the output of the levels above it: recompute instead of saving it.
        hi = _tree(xi, blk_ptr, OFF + ACTIVE // 2, (ACTIVE + 1) // 2, HALF)
        m00, m01, m10, m11 = _pair_blocks(blk_ptr, OFF, ACTIVE // 2, HALF)
        # Forward was yi = M00 hi + M10 xj, yj = M01 hi + M11 xj.
        d00 = tl.sum(gi * hi, axis=0)
        d10 = tl.sum(gi * xj, axis=0)
        d01 = tl.sum(gj * hi, axis=0)
        d11 = tl.sum(gj * xj, axis=0)
        g_hi = m00 * gi + m01 * gj
        g_xj = m10 * gi + m11 * gj
        g_xi, p00, p01, p10, p11 = _tree_bwd(xi, g_hi, blk_ptr, OFF + ACTIVE // 2, (ACTIVE + 1) // 2, HALF)
        gx = tl.reshape(tl.join(g_xi, g_xj), [ROWS, SIZE])
        # Odd entries are this level's partners j, even ones the levels above: the same interleave as the tile.
        p00 = tl.reshape(tl.join(p00, d00), [SIZE])
        p01 = tl.reshape(tl.join(p01, d01), [SIZE])
        p10 = tl.reshape(tl.join(p10, d10), [SIZE])
        p11 = tl.reshape(tl.join(p11, d11), [SIZE])
    return gx, p00, p01, p10, p11


@_jit
def _fwd_kernel(
    x_ptr,
    y_ptr,
    blk_ptr,
    n_rows,
    x_stride,
    y_stride,
    D: tl.constexpr,
    D_PAD: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
):
    """y = x @ R for one [BLOCK_ROWS, D_PAD] tile; x, y: (n_rows, D) with unit column stride."""
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, D_PAD)
    mask = (rows < n_rows)[:, None] & (cols < D)[None, :]
    rows = rows.to(tl.int64)
    x = tl.load(x_ptr + rows[:, None] * x_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    y = _tree(x, blk_ptr, 0, D, D_PAD)
    tl.store(y_ptr + rows[:, None] * y_stride + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@_jit
def _bwd_kernel(
    x_ptr,
    g_ptr,
    gx_ptr,
    blk_ptr,
    part_ptr,
    n_rows,
    tiles_per_program,
    x_stride,
    g_stride,
    gx_stride,
    D: tl.constexpr,
    D_PAD: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    NEED_GX: tl.constexpr,
):
    """grad x (if NEED_GX) and this program's block-grad partials (4, D) at part_ptr + pid * 4 * D.

    Program p handles tiles p, p + P, p + 2P, ... (P programs); tiles past the end are fully masked.
    """
    pid = tl.program_id(0)
    cols = tl.arange(0, D_PAD)
    col_ok = cols < D
    a00 = tl.zeros([D_PAD], tl.float32)
    a01 = tl.zeros([D_PAD], tl.float32)
    a10 = tl.zeros([D_PAD], tl.float32)
    a11 = tl.zeros([D_PAD], tl.float32)
    for t in range(tiles_per_program):
        rows = (pid + t * tl.num_programs(0)) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        mask = (rows < n_rows)[:, None] & col_ok[None, :]
        rows = rows.to(tl.int64)
        x = tl.load(x_ptr + rows[:, None] * x_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + rows[:, None] * g_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        gx, p00, p01, p10, p11 = _tree_bwd(x, g, blk_ptr, 0, D, D_PAD)
        a00 += p00
        a01 += p01
        a10 += p10
        a11 += p11
        if NEED_GX:
            tl.store(
                gx_ptr + rows[:, None] * gx_stride + cols[None, :], gx.to(gx_ptr.dtype.element_ty), mask=mask
            )
    part = part_ptr + pid * 4 * D + cols
    tl.store(part, a00, mask=col_ok)
    tl.store(part + D, a01, mask=col_ok)
    tl.store(part + 2 * D, a10, mask=col_ok)
    tl.store(part + 3 * D, a11, mask=col_ok)


def _interpreted() -> bool:
    """Whether the kernels were built by the CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return not isinstance(_fwd_kernel, triton.runtime.JITFunction)


def triton_available(x: torch.Tensor | None = None) -> bool:
    """Whether the fused kernel can run (on ``x`` when given).

    True when triton imports and either the kernels are compiled and x is a CUDA tensor, or they were built by the
    interpreter (TRITON_INTERPRET=1 set before this module was imported; any device). False for dtypes other than
    float32 / bfloat16 / float16: the kernel computes in float32, which would silently truncate float64.
    """
    if triton is None:
        return False
    if x is None:
        return _interpreted() or torch.cuda.is_available()
    return x.dtype in SUPPORTED_DTYPES and (_interpreted() or x.is_cuda)


def _launch_config(d_pad: int, n_rows: int, tile_elems: int) -> tuple[int, int]:
    """(BLOCK_ROWS, num_warps) for a tile of about ``tile_elems`` float32, never taller than the input."""
    block_rows = max(1, min(tile_elems // d_pad, triton.next_power_of_2(max(n_rows, 1))))
    # About 16 float32 per thread per tile-sized tensor (sm_90 builds of the backward spilled at 32); 4 .. 16 warps.
    num_warps = min(16, max(4, block_rows * d_pad // 512))
    return block_rows, num_warps


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """(..., d) -> (n, d) with unit column stride (a view when possible)."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


@cache
def _partner_order(d: int, device: torch.device) -> torch.Tensor:
    """Partner coordinate j of each pair, level-major: sorting j in [1, d) by (2^level, j), level = trailing zeros."""
    order = sorted(range(1, d), key=lambda j: (j & -j, j))
    return torch.tensor(order, dtype=torch.long, device=device)


def _backward_programs(device: torch.device, tiles: int) -> int:
    if _interpreted():
        return min(tiles, _INTERPRETER_PROGRAMS)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return min(tiles, _BWD_PROGRAMS_PER_SM * sms)


def _forward(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """x: (n, d) with unit column stride; blocks: (d-1, 2, 2) float32 contiguous. Returns a new (n, d)."""
    n, d = x.shape
    y = torch.empty((n, d), dtype=x.dtype, device=x.device)
    if n == 0:
        return y
    d_pad = triton.next_power_of_2(d)
    block_rows, num_warps = _launch_config(d_pad, n, _FWD_TILE_ELEMS)
    grid = (triton.cdiv(n, block_rows),)
    _fwd_kernel[grid](
        x,
        y,
        blocks,
        n,
        x.stride(0),
        y.stride(0),
        D=d,
        D_PAD=d_pad,
        BLOCK_ROWS=block_rows,
        num_warps=num_warps,
    )
    return y


def _backward(
    x: torch.Tensor, grad_y: torch.Tensor, blocks: torch.Tensor, need_gx: bool
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Grad wrt x ((n, d), None unless need_gx) and wrt blocks ((d-1, 2, 2) float32) for y = x @ R."""
    n, d = x.shape
    gx = torch.empty((n, d), dtype=x.dtype, device=x.device) if need_gx else None
    d_pad = triton.next_power_of_2(d)
    block_rows, num_warps = _launch_config(d_pad, n, _BWD_TILE_ELEMS)
    tiles = triton.cdiv(n, block_rows)
    programs = _backward_programs(x.device, tiles)
    partials = torch.empty((programs, 4, d), dtype=torch.float32, device=x.device)
    if programs > 0:
        _bwd_kernel[(programs,)](
            x,
            grad_y,
            x if gx is None else gx,
            blocks,
            partials,
            n,
            triton.cdiv(tiles, programs),
            x.stride(0),
            grad_y.stride(0),
            0 if gx is None else gx.stride(0),
            D=d,
            D_PAD=d_pad,
            BLOCK_ROWS=block_rows,
            NEED_GX=need_gx,
            num_warps=num_warps,
        )
    # (programs, 4, d) -> (4, d) -> the d-1 pairs in level-major order -> (d-1, 2, 2) as M00, M01, M10, M11.
    grad_blocks = partials.sum(0).index_select(1, _partner_order(d, x.device)).t().reshape(d - 1, 2, 2)
    return gx, grad_blocks


class GivensRotateTriton(torch.autograd.Function):
    """y = x @ R with the fused kernels; saves only x (and the small blocks) for backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, blocks)
        return _forward(_as_rows(x), blocks.detach().float().contiguous()).view(x.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, blocks = ctx.saved_tensors
        gx, grad_blocks = _backward(
            _as_rows(x), _as_rows(grad_y), blocks.float().contiguous(), need_gx=ctx.needs_input_grad[0]
        )
        return (
            None if gx is None else gx.view(x.shape),
            grad_blocks.to(blocks.dtype) if ctx.needs_input_grad[1] else None,
        )


def givens_rotate_triton(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """x @ R over the last dim with the fused Triton kernels, autograd-aware.

    x: (..., d) float32 / bfloat16 / float16 (math in float32, result in x's dtype); blocks: (d-1, 2, 2) on x's
    device, level-major (any float dtype; used as float32). Check ``triton_available(x)`` first.
    """
    d = x.shape[-1]
    if blocks.shape != (d - 1, 2, 2):
        raise ValueError(f"blocks must have shape ({d - 1}, 2, 2) for width {d}, got {tuple(blocks.shape)}")
    if not triton_available(x):
        raise RuntimeError(
            f"the Triton Givens kernel cannot run on a {x.dtype} tensor on {x.device} "
            "(needs triton, a CUDA tensor or TRITON_INTERPRET=1, and float32/bfloat16/float16)"
        )
    return GivensRotateTriton.apply(x, blocks)
