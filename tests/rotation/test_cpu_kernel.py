"""The C++ CPU kernel beyond the shared reference tests of test_operator.py (which run on both CPU paths)."""

from pathlib import Path

import pytest
import torch
from givens_reference import dense_rotation
from torch import nn

from qgoft_bench.config import compose_config
from qgoft_bench.errors import ConfigError
from qgoft_bench.methods.givens.layer import GOFTLayer
from qgoft_bench.rotation import cpu_kernel, givens_rotate
from qgoft_bench.train import provenance
from qgoft_bench.train.preflight import validate

pytestmark = pytest.mark.usefixtures("built_kernel")  # tests/rotation/conftest.py: skip without a compiler


def blocks_and_input(d: int, n: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(d + n)
    blocks = torch.eye(2, dtype=dtype) + 0.5 * torch.randn(d - 1, 2, 2, generator=gen, dtype=dtype)
    return blocks, torch.randn(n, d, generator=gen, dtype=dtype)


def test_a_run_names_its_cpu_path_only_when_it_rotates(monkeypatch: pytest.MonkeyPatch) -> None:
    """provenance.cpu_rotation (asked before a run's timer starts, written to its record's hardware)."""
    adapted = nn.Sequential(GOFTLayer(nn.Linear(8, 8)))
    cpu = torch.device("cpu")
    assert provenance.cpu_rotation(adapted, cpu) == "kernel"
    assert provenance.cpu_rotation(nn.Sequential(nn.Linear(8, 8)), cpu) is None  # LoRA, full, ...: nothing to say
    assert provenance.hardware(cpu, "kernel")["cpu_rotation"] == "kernel"
    assert "cpu_rotation" not in provenance.hardware(cpu)
    monkeypatch.setenv(cpu_kernel.ENV, "pytorch")
    assert provenance.cpu_rotation(adapted, cpu) == "pytorch"


def test_bfloat16_input_is_saved_as_it_is() -> None:
    """The float32 copy the kernel computes on is not what backward keeps: a bf16 activation stays bf16 in memory."""
    d, n = 384, 64
    x = torch.randn(n, d).bfloat16().requires_grad_()
    blocks, _ = blocks_and_input(d, 1)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        givens_rotate(x, blocks.requires_grad_())
    big = [t for t in saved if t.numel() >= n * d]
    assert len(big) == 1 and big[0].dtype == torch.bfloat16


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000])  # tiles are 8 rows: empty, partial, exact and many tiles
def test_any_number_of_rows(n: int) -> None:
    d = 300
    blocks, x = blocks_and_input(d, n, torch.float64)
    blocks.requires_grad_()
    x.requires_grad_()
    grad_y = torch.randn(n, d, dtype=torch.float64)
    givens_rotate(x, blocks).backward(grad_y)
    b64, x64 = blocks.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    (x64 @ dense_rotation(b64, d)).backward(grad_y)
    torch.testing.assert_close(x.grad, x64.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(blocks.grad, b64.grad, rtol=1e-10, atol=1e-10)


def test_same_gradients_at_any_thread_count() -> None:
    """Chunks of rows are handed out to whichever thread is free; their block-gradient sums are added in chunk order,
    so the result is bit-identical at 1 and 2 threads (a run's numbers do not depend on the machine's load)."""
    d, n = 768, 4099
    blocks, x = blocks_and_input(d, n)
    grad_y = torch.randn(n, d)
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            b, xx = blocks.clone().requires_grad_(), x.clone().requires_grad_()
            y = givens_rotate(xx, b)
            y.backward(grad_y)
            results.append((y.detach(), xx.grad, b.grad))
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*results, strict=True):
        assert torch.equal(one, two)


def test_agrees_with_the_pytorch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    d, n = 768, 257
    blocks, x = blocks_and_input(d, n)
    grad_y = torch.randn(n, d)
    out = {}
    for path in ("kernel", "pytorch"):
        monkeypatch.setenv(cpu_kernel.ENV, path)
        b, xx = blocks.clone().requires_grad_(), x.clone().requires_grad_()
        y = givens_rotate(xx, b)
        y.backward(grad_y)
        out[path] = (y, xx.grad, b.grad)
    for k, p in zip(out["kernel"], out["pytorch"], strict=True):
        torch.testing.assert_close(k, p, rtol=1e-4, atol=1e-3)


def test_non_contiguous_input() -> None:
    d = 64
    blocks, x = blocks_and_input(d, 48)
    x_t = x.t().contiguous().t().requires_grad_()  # column-major (48, d)
    givens_rotate(x_t, blocks).backward(torch.ones(48, d))
    expected = torch.ones(48, d, dtype=torch.float64) @ dense_rotation(blocks.double(), d).t()
    torch.testing.assert_close(x_t.grad.double(), expected, rtol=1e-5, atol=1e-5)


def test_compiles_without_a_graph_break() -> None:
    """``trainer.compile=true``: the kernel is a custom op with a fake and an autograd formula, so dynamo traces a
    rotation into the graph (fullgraph makes a break an error; aot_eager traces the backward through the fakes)."""
    blocks, x = blocks_and_input(40, 24)

    def loss(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        return givens_rotate(x, blocks).sin().sum()

    grads = {}
    for name, fn in (("eager", loss), ("compiled", torch.compile(loss, fullgraph=True, backend="aot_eager"))):
        xx, b = x.view(2, 12, 40).clone().requires_grad_(), blocks.clone().requires_grad_()
        fn(xx, b).backward()
        grads[name] = (xx.grad, b.grad)
    for c, e in zip(grads["compiled"], grads["eager"], strict=True):
        torch.testing.assert_close(c, e)


def test_build_name_follows_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two checkouts sharing torch's extension cache keep a build each, whether their kernels differ or not (one name
    => cpp_extension rebuilds over the other's on every alternation, its ninja file naming the source's path)."""
    tag = cpu_kernel._build_tag()
    assert cpu_kernel._build_tag() == tag  # one checkout: one build, found again
    for name, text in [("same", b""), ("edited", b"// edited\n")]:
        (tmp_path / name).mkdir()
        copy = tmp_path / name / "givens_cpu.cpp"
        copy.write_bytes(cpu_kernel.SOURCE.read_bytes() + text)
        monkeypatch.setattr(cpu_kernel, "SOURCE", copy)
        assert cpu_kernel._build_tag() != tag, name


def test_one_openmp_runtime() -> None:
    """The kernel's OpenMP must be the libgomp torch loaded (torch.set_num_threads then governs its threads): no
    second ``libgomp.so.1`` in the process (wheels such as scikit-learn's bring renamed copies of their own)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("Linux only")
    runtimes = {line.split()[-1] for line in maps.read_text().splitlines() if line.endswith("/libgomp.so.1")}
    assert runtimes == {str(Path(torch.__file__).parent / "lib" / "libgomp.so.1")}, runtimes


def test_unknown_path_is_one_line_before_any_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cpu_kernel.ENV, "fast")
    with pytest.raises(ConfigError, match="QGOFT_BENCH_CPU_ROTATION='fast': expected kernel"):
        validate(compose_config(["task=glue/rte", "model=tiny_bert", "method=goft"]))
