"""givens_rotate and givens_matrix against an independent float64 product of explicit Givens matrices."""

import math

import pytest
import torch
from givens_reference import dense_rotation, rotate_level_by_level

from qgoft_bench.rotation import (
    angles_to_blocks,
    cpu_kernel,
    givens_matrix,
    givens_rotate,
    inverse_transpose_blocks,
    operator,
)


@pytest.fixture(autouse=True, params=["kernel", "pytorch"])
def cpu_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs on both CPU paths: the C++ kernel and the PyTorch formulation."""
    if request.param == "kernel":
        request.getfixturevalue("built_kernel")
    else:
        monkeypatch.setenv(cpu_kernel.ENV, request.param)
    return request.param


def random_blocks(d: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.eye(2, dtype=dtype) + 0.5 * torch.randn(d - 1, 2, 2, generator=gen, dtype=dtype)


@pytest.mark.parametrize("d", [2, 3, 5, 8, 17, 40, 300, 384, 768])
def test_forward_matches_reference(d: int) -> None:
    blocks = random_blocks(d)
    x = torch.randn(2, 3, d, dtype=torch.float64)
    expected = x @ dense_rotation(blocks, d)
    torch.testing.assert_close(givens_rotate(x, blocks), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(givens_matrix(blocks, d), dense_rotation(blocks, d), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d", [1000, 3072, 4096, 11008])
def test_forward_large_widths(d: int) -> None:
    blocks = random_blocks(d)
    x = torch.randn(3, d, dtype=torch.float64)
    torch.testing.assert_close(
        givens_rotate(x, blocks), rotate_level_by_level(x, blocks), rtol=1e-10, atol=1e-10
    )


def test_float32_forward_and_shape() -> None:
    d = 384
    blocks = random_blocks(d, torch.float32)
    x = torch.randn(4, 5, 6, d)
    y = givens_rotate(x, blocks)
    assert y.shape == x.shape and y.dtype == torch.float32
    expected = x.double() @ dense_rotation(blocks.double(), d)
    torch.testing.assert_close(y.double(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("d", [2, 3, 5, 8, 20, 40])
def test_gradcheck(d: int) -> None:
    blocks = random_blocks(d).requires_grad_()
    x = torch.randn(3, d, dtype=torch.float64, requires_grad=True)
    fast = d > 8  # the multi-stage widths: fast mode keeps the test quick
    assert torch.autograd.gradcheck(givens_rotate, (x, blocks), fast_mode=fast)
    # Frozen input (the first adapted layer after frozen embeddings): only the blocks' gradient is computed.
    assert torch.autograd.gradcheck(lambda b: givens_rotate(x.detach(), b), (blocks,), fast_mode=fast)


@pytest.mark.parametrize("cpu_path", ["pytorch"], indirect=True)
@pytest.mark.parametrize("dense_top", [0, 2])
@pytest.mark.parametrize("d", [40, 300, 600])
def test_stages_above_without_the_dense_top(d: int, dense_top: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The PyTorch path's recursive path the widest layers take (more than DENSE_TOP groups), forced at small widths: 0 never folds
    the stages above into one matrix, 2 folds them at the third stage (d 600: 38 groups, then 3, then 1)."""
    monkeypatch.setattr(operator, "DENSE_TOP", dense_top)
    blocks = random_blocks(d).requires_grad_()
    x = torch.randn(3, d, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(givens_rotate(x, blocks), x @ dense_rotation(blocks, d), rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(givens_rotate, (x, blocks), fast_mode=True)
    assert torch.autograd.gradcheck(lambda b: givens_rotate(x.detach(), b), (blocks,), fast_mode=True)


@pytest.mark.parametrize("d", [384, 768])
def test_gradients_match_reference(d: int) -> None:
    blocks = random_blocks(d, torch.float32, seed=d).requires_grad_()
    x = torch.randn(64, d, requires_grad=True)
    grad_y = torch.randn(64, d)
    givens_rotate(x, blocks).backward(grad_y)

    blocks64 = blocks.detach().double().requires_grad_()
    x64 = x.detach().double().requires_grad_()
    (x64 @ dense_rotation(blocks64, d)).backward(grad_y.double())
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(blocks.grad.double(), blocks64.grad, rtol=1e-4, atol=1e-3)


def test_goft_rotation_is_orthogonal_float32() -> None:
    d = 768
    theta = (torch.rand(d - 1) * 2 - 1) * math.pi
    r = givens_matrix(angles_to_blocks(theta), d)
    torch.testing.assert_close(r @ r.t(), torch.eye(d), rtol=0, atol=1e-6)


def test_angles_to_blocks_layout() -> None:
    blocks = angles_to_blocks(torch.tensor([0.3]))
    c, s = math.cos(0.3), math.sin(0.3)
    torch.testing.assert_close(blocks[0], torch.tensor([[c, -s], [s, c]]))


def test_inverse_transpose_blocks_undo_the_tree() -> None:
    d = 40
    blocks = random_blocks(d)
    r = givens_matrix(blocks, d)
    torch.testing.assert_close(givens_matrix(inverse_transpose_blocks(blocks), d), torch.linalg.inv(r).t())


def test_bfloat16_computes_in_float32() -> None:
    d = 384
    blocks = random_blocks(d, torch.float32)
    x = torch.randn(16, d).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = givens_rotate(x, blocks)
    assert y.dtype == torch.bfloat16
    exact = (x.double() @ dense_rotation(blocks.double(), d)).bfloat16()
    # Float32 inside means one final rounding: equal to the rounded exact result up to an ulp at ties.
    torch.testing.assert_close(y, exact, rtol=2**-7, atol=1e-2)
    assert (y.float() == exact.float()).float().mean() > 0.98


def test_bfloat16_backward_dtypes() -> None:
    d = 40
    blocks = random_blocks(d, torch.float32).requires_grad_()
    x = torch.randn(8, d).bfloat16().requires_grad_()
    givens_rotate(x, blocks).float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and blocks.grad.dtype == torch.float32


def test_saves_only_the_input() -> None:
    d, n = 768, 256
    x = torch.randn(n, d, requires_grad=True)
    blocks = random_blocks(d, torch.float32).requires_grad_()
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = givens_rotate(x, blocks)
    activation_sized = [t for t in saved if t.numel() >= n * d]
    assert len(activation_sized) == 1 and activation_sized[0].data_ptr() == x.data_ptr()
    assert y.shape == x.shape


def test_width_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="blocks of shape"):
        givens_rotate(torch.randn(2, 8), torch.zeros(6, 2, 2))
