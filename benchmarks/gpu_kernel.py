"""GPU benchmark of the fused Givens kernel: one command, results under results/perf/ named after the GPU.

    python benchmarks/gpu_kernel.py            # on a machine with a CUDA GPU

Section 1 (kernel): for tokens x d in bf16 and fp32, the adapter y = x @ R forward, forward+backward, a LoRA r=8
adapter forward+backward and a device-to-device copy of the same tensor, side by side in one run; bandwidth is bytes
moved / time and "copy fraction" is that over the copy's bandwidth (1.0 = as fast as a copy per byte).
Section 2 (model): one training step of deberta-v3-base (random weights, bf16, batch 32, seq 128) per method; runs
only when ``qgoft_bench.models.build_model`` exists, and ``build_adapted_model`` is where the lead wires the methods.
"""

from __future__ import annotations

import json
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch

TOKENS = 32 * 128
WIDTHS = (768, 3072)
DTYPES = (torch.bfloat16, torch.float32)
LORA_RANK = 8
MODEL_METHODS = ("goft", "qgoft", "lora", "oft")
OUT_DIR = Path(__file__).resolve().parents[1] / "results" / "perf"


def bench_ms(fn: Callable[[], object], grad_to_none: list[torch.Tensor] | None = None) -> float:
    """Median milliseconds of fn on the GPU (triton's do_bench: warm-up, L2 flushed between runs)."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=200, grad_to_none=grad_to_none, return_mode="median")


def kernel_row(tokens: int, d: int, dtype: torch.dtype, gen: torch.Generator) -> dict:
    """Section 1, one (d, dtype): times (ms), bandwidths (GB/s) and the kernel's max error vs float64."""
    from qgoft_bench.rotation import givens_matrix
    from qgoft_bench.rotation.triton_kernel import givens_rotate_triton

    # Random data and free (qGOFT-like) blocks: never time on zeros.
    x = torch.randn(tokens, d, device="cuda", generator=gen).to(dtype).requires_grad_()
    g = torch.randn(tokens, d, device="cuda", generator=gen).to(dtype)
    blocks = (torch.eye(2, device="cuda") + 0.1 * torch.randn(d - 1, 2, 2, device="cuda", generator=gen))
    blocks.requires_grad_()
    lora_a = (0.02 * torch.randn(LORA_RANK, d, device="cuda", generator=gen)).to(dtype).requires_grad_()
    lora_b = (0.02 * torch.randn(d, LORA_RANK, device="cuda", generator=gen)).to(dtype).requires_grad_()
    copy_dst = torch.empty_like(x)

    with torch.no_grad():
        ref = x.double() @ givens_matrix(blocks.double(), d)
        max_err = (givens_rotate_triton(x, blocks).double() - ref).abs().max().item()

    def fwd():
        with torch.no_grad():
            return givens_rotate_triton(x, blocks)

    def fwd_bwd():
        givens_rotate_triton(x, blocks).backward(g)

    def lora_fwd_bwd():
        (x + (x @ lora_a.t()) @ lora_b.t()).backward(g)

    t_copy = bench_ms(lambda: copy_dst.copy_(x.detach()))
    t_fwd = bench_ms(fwd)
    t_fb = bench_ms(fwd_bwd, grad_to_none=[x, blocks])
    t_lora = bench_ms(lora_fwd_bwd, grad_to_none=[x, lora_a, lora_b])

    tensor_bytes = x.numel() * x.element_size()
    # copy and forward: read + write; forward+backward: forward 2 + backward 3 (read x, read g, write gx).
    gbps = {name: nbytes / (t * 1e-3) / 1e9 for name, nbytes, t in
            [("copy", 2 * tensor_bytes, t_copy), ("fwd", 2 * tensor_bytes, t_fwd),
             ("fwd_bwd", 5 * tensor_bytes, t_fb)]}
    return {
        "tokens": tokens, "d": d, "dtype": str(dtype).removeprefix("torch."), "max_abs_err": max_err,
        "copy_ms": t_copy, "fwd_ms": t_fwd, "fwd_bwd_ms": t_fb, "lora_fwd_bwd_ms": t_lora,
        "copy_GBps": gbps["copy"], "fwd_GBps": gbps["fwd"], "fwd_bwd_GBps": gbps["fwd_bwd"],
        "fwd_copy_fraction": gbps["fwd"] / gbps["copy"],
        "fwd_bwd_copy_fraction": gbps["fwd_bwd"] / gbps["copy"],
        "fwd_bwd_vs_lora": t_fb / t_lora,
    }


def kernel_rows(tokens: int = TOKENS, widths=WIDTHS, dtypes=DTYPES) -> list[dict]:
    """Section 1: one row per (d, dtype)."""
    rows = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    for d in widths:
        for dtype in dtypes:
            rows.append(kernel_row(tokens, d, dtype, gen))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def build_adapted_model(method: str, batch: int, seq: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """deberta-v3-base (random weights, bf16, on CUDA) with ``method`` applied, and one random batch.

    For the lead to complete with the model factory and the method registry (goft, qgoft: ours; lora, oft: PEFT).
    """
    raise NotImplementedError("wire qgoft_bench.models.build_model and the method registry here")


def train_step_ms(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(median ms of forward + backward + AdamW step, peak GiB allocated) on the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # optimizer state and kernels outside the timed and measured region
    torch.cuda.reset_peak_memory_stats()
    ms = bench_ms(step)
    return ms, torch.cuda.max_memory_allocated() / 2**30


def model_rows(batch: int = 32, seq: int = 128) -> list[dict]:
    """Section 2: one row per method, or one row saying why the section did not run."""
    try:
        from qgoft_bench.models import build_model  # noqa: F401  (the section needs the factory)
    except ImportError as err:
        return [{"skipped": f"no model factory: {err}"}]
    rows = []
    for method in MODEL_METHODS:
        try:
            model, inputs = build_adapted_model(method, batch, seq)
        except NotImplementedError as err:
            return [{"skipped": str(err)}]
        ms, peak = train_step_ms(model, inputs)
        rows.append({"model": "deberta-v3-base", "method": method, "batch": batch, "seq": seq,
                     "step_ms": ms, "peak_GiB": peak})
        print(json.dumps(rows[-1]), flush=True)
        del model
        torch.cuda.empty_cache()
    lora = next((r["step_ms"] for r in rows if r["method"] == "lora"), None)
    for r in rows:
        r["vs_lora"] = r["step_ms"] / lora if lora else None
    return rows


def markdown(gpu: str, kernel: list[dict], model: list[dict]) -> str:
    """The two sections as Markdown tables."""
    tokens = kernel[0]["tokens"] if kernel else TOKENS
    lines = [
        f"# Givens kernel on {gpu}",
        "",
        (f"Tokens {tokens}; times in ms (median, L2 flushed); GB/s = bytes moved / time; "
        "copy fraction = GB/s over a d2d copy's."),
        "",
        ("| d | dtype | copy | fwd | fwd+bwd | LoRA r=8 fwd+bwd | fwd copy frac. | fwd+bwd copy frac. "
        "| fwd+bwd / LoRA | max abs err |"),
        "|" + "---|" * 10,
    ]
    for r in kernel:
        lines.append(f"| {r['d']} | {r['dtype']} | {r['copy_ms']:.4f} | {r['fwd_ms']:.4f} | {r['fwd_bwd_ms']:.4f} "
                     f"| {r['lora_fwd_bwd_ms']:.4f} | {r['fwd_copy_fraction']:.2f} | {r['fwd_bwd_copy_fraction']:.2f} "
                     f"| {r['fwd_bwd_vs_lora']:.2f} | {r['max_abs_err']:.2e} |")
    lines += ["", "## Training step, deberta-v3-base (random weights, bf16)", ""]
    if model and "skipped" in model[0]:
        lines.append(f"Not run: {model[0]['skipped']}")
    else:
        lines += ["| method | batch | seq | step ms | vs LoRA | peak GiB |", "|---|---|---|---|---|---|"]
        for r in model:
            vs = "" if r["vs_lora"] is None else f"{r['vs_lora']:.2f}"
            lines.append(f"| {r['method']} | {r['batch']} | {r['seq']} | {r['step_ms']:.2f} | {vs} "
                         f"| {r['peak_GiB']:.2f} |")
    return "\n".join(lines) + "\n"


def write_results(gpu: str, kernel: list[dict], model: list[dict], out_dir: Path = OUT_DIR) -> Path:
    """results/perf/gpu_kernel_<gpu>.json and .md; returns the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "gpu_kernel_" + re.sub(r"[^A-Za-z0-9]+", "_", gpu).strip("_").lower()
    record = {"gpu": gpu, "torch": torch.__version__, "python": platform.python_version(),
              "kernel": kernel, "model": model}
    try:
        import triton

        record["triton"] = triton.__version__
    except ImportError:
        pass
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown(gpu, kernel, model))
    return path


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("gpu_kernel: no CUDA device here; run this benchmark on a machine with an NVIDIA GPU")
    gpu = torch.cuda.get_device_name()
    kernel = kernel_rows()
    model = model_rows()
    print(f"wrote {write_results(gpu, kernel, model)}")


if __name__ == "__main__":
    main()
