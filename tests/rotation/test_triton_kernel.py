"""The fused Triton Givens kernel against a float64 product of Givens matrices, forward and gradients.

Triton picks compiled vs interpreted kernels when the kernel module is imported (TRITON_INTERPRET), and another test
may import it first, so the kernel runs in one subprocess of the venv python: with TRITON_INTERPRET=1 on CPU tensors
(no GPU needed), and, where a CUDA GPU is (``-m gpu``), compiled on it. That subprocess is this file run as a script
(``python test_triton_kernel.py [cpu|cuda]``), and it prints one JSON record per case.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed: the fused kernel cannot be built")

from givens_reference import dense_rotation  # after the skip: the script run imports it too

WIDTHS = [1, 2, 3, 5, 8, 12, 33, 64, 100]
ROWS = (2, 9)  # leading dims of x: 18 token rows


def _case_param(kind: str, d: int, gen: torch.Generator) -> torch.Tensor:
    """GOFT: d-1 angles; qGOFT: free (d-1, 2, 2) blocks near the identity."""
    if kind == "goft":
        return torch.randn(d - 1, generator=gen, dtype=torch.float64)
    return torch.eye(2, dtype=torch.float64) + 0.5 * torch.randn(d - 1, 2, 2, generator=gen, dtype=torch.float64)


def _to_blocks(kind: str, param: torch.Tensor) -> torch.Tensor:
    """GOFT angles -> rotation blocks [[cos, -sin], [sin, cos]] by autograd; qGOFT blocks as they are."""
    if kind == "qgoft":
        return param
    c, s = torch.cos(param), torch.sin(param)
    return torch.stack([c, -s, s, c], dim=-1).reshape(-1, 2, 2)


def _run_case(kind: str, d: int, dtype: torch.dtype, need_x_grad: bool = True, small_tiles: bool = False,
              device: str = "cpu") -> dict:
    """Max errors of the kernel on ``device`` vs the float64 reference on the CPU, scaled by the reference's max
    magnitude."""
    from qgoft_bench.rotation import triton_kernel as kernel

    gen = torch.Generator().manual_seed(1000 * d + len(kind))
    # Random data (never zeros); x and the output grad are rounded to dtype once, so both sides see the same numbers.
    x64 = torch.randn(*ROWS, d, generator=gen, dtype=torch.float64).to(dtype).double()
    w64 = torch.randn(*ROWS, d, generator=gen, dtype=torch.float64).to(dtype).double()
    param = _case_param(kind, d, gen)

    def grads(x: torch.Tensor, p: torch.Tensor, rotate) -> list[torch.Tensor]:
        x = x.detach().requires_grad_(need_x_grad)
        p = p.detach().requires_grad_()
        y = rotate(x, _to_blocks(kind, p))
        (y.double() * w64.to(y.device)).sum().backward()
        return [t if t is None else t.detach().double().cpu() for t in (y, x.grad, p.grad)]

    ref = grads(x64, param, lambda x, b: x @ dense_rotation(b, d))
    saved = kernel._FWD_TILE_ELEMS, kernel._BWD_TILE_ELEMS
    if small_tiles:  # several tiles per program and a ragged last tile
        kernel._FWD_TILE_ELEMS = kernel._BWD_TILE_ELEMS = 256
    try:
        out = grads(x64.to(device, dtype), param.float().to(device), kernel.givens_rotate_triton)
    finally:
        kernel._FWD_TILE_ELEMS, kernel._BWD_TILE_ELEMS = saved

    errors = {}
    for name, a, b in zip(["y", "grad_x", "grad_param"], out, ref):
        if b is None or b.numel() == 0:
            errors[name] = 0.0 if a is None or a.numel() == 0 else float("inf")
        else:
            errors[name] = ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
    return errors


CASES = (
    [(kind, d, "float32", True, False) for kind in ("goft", "qgoft") for d in WIDTHS]
    + [(kind, d, "float32", True, True) for kind in ("goft", "qgoft") for d in (5, 33, 100)]
    + [(kind, d, "bfloat16", True, False) for kind in ("goft", "qgoft") for d in (12, 64, 100)]
    + [("qgoft", 33, "float16", True, False), ("qgoft", 33, "float32", False, False)]
)


def _case_id(case: tuple) -> str:
    kind, d, dtype, need_x_grad, small_tiles = case
    return f"{kind}-d{d}-{dtype}" + ("" if need_x_grad else "-frozen_x") + ("-small_tiles" if small_tiles else "")


def _results(device: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run([sys.executable, __file__, device], env=env, capture_output=True, text=True, timeout=900,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def interpreter_results() -> dict:
    return _results("cpu")


@pytest.fixture(scope="module")
def compiled_results() -> dict:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: the compiled kernel runs only on one")
    return _results("cuda")


def _check(errors: dict, dtype: str) -> None:
    # float32 math; a low-precision dtype also rounds the output and grad_x once (8 / 11 mantissa bits), while the
    # block grads are float32 reductions of the same rounded numbers.
    tol = {"float32": 2e-5, "bfloat16": 1e-2, "float16": 2e-3}[dtype]
    assert errors["y"] <= tol, errors
    assert errors["grad_x"] <= tol, errors
    assert errors["grad_param"] <= 2e-5 * (1 if dtype == "float32" else 10), errors


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_kernel_matches_float64_reference(interpreter_results: dict, case: tuple) -> None:
    _check(interpreter_results[_case_id(case)], case[2])


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_compiled_kernel_on_the_gpu_matches_float64_reference(compiled_results: dict, case: tuple) -> None:
    _check(compiled_results[_case_id(case)], case[2])


def test_dense_reference_is_orthogonal_for_rotations() -> None:
    gen = torch.Generator().manual_seed(0)
    r = dense_rotation(_to_blocks("goft", _case_param("goft", 12, gen)), 12)
    torch.testing.assert_close(r @ r.T, torch.eye(12, dtype=torch.float64))


def test_rejects_bad_shapes_and_dtypes() -> None:
    from qgoft_bench.rotation.triton_kernel import givens_rotate_triton, triton_available

    assert not triton_available(torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="blocks must have shape"):
        givens_rotate_triton(torch.zeros(3, 4), torch.zeros(4, 2, 2))


if __name__ == "__main__":  # the subprocess: one JSON line, case id -> errors
    device = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    assert (os.environ.get("TRITON_INTERPRET") == "1") == (device == "cpu"), "interpreted on the CPU, compiled on CUDA"
    results = {}
    for case in CASES:
        kind, d, dtype, need_x_grad, small_tiles = case
        results[_case_id(case)] = _run_case(kind, d, getattr(torch, dtype), need_x_grad, small_tiles, device)
    print(json.dumps(results))
