"""GPU benchmark of the fused Givens kernel: one command, results under results/perf/ named after the GPU.

    python benchmarks/gpu_kernel.py            # on a machine with a CUDA GPU

Section 1 (kernel): for tokens x d in bf16 and fp32, the adapter y = x @ R forward, forward+backward, a LoRA r=8
adapter forward+backward and a device-to-device copy of the same tensor, side by side in one run; bandwidth is bytes
moved / time and "copy fraction" is that over the copy's bandwidth (1.0 = as fast as a copy per byte).
Section 2 (model): one full training step (forward under bf16 autocast, loss + regulariser, backward, gradient hook,
AdamW) of deberta-v3-base (random weights, batch 32, seq 128) per method: goft, qgoft (ours), PEFT LoRA r=8 and PEFT
OFT b=8, each built exactly as the harness builds it, through benchmarks/training_step.py's ``build_method`` and
``Step``. Methods interleaved round-robin, median step time, ratio to LoRA from the same run; peak CUDA memory per
method in its own pass. Its rows ({"method", "case", "time_ms", "ratio_vs_lora", "peak_memory_mb"}) go under
"rows" of the JSON, which ``qgoft_bench.report.tables.read_perf`` reads.
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import json
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

TOKENS = 32 * 128
WIDTHS = (768, 3072)
DTYPES = (torch.bfloat16, torch.float32)
LORA_RANK = 8
# Section 2: keys of benchmarks/training_step.py's METHODS (= the harness's method labels), on its model overrides.
MODEL_METHODS = ("goft", "qgoft", "lora_r8", "oft_b8")
MODEL_OVERRIDES = ("model=deberta_v3_base", "model.init=random")
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


@functools.cache
def training_step_module() -> ModuleType:
    """``benchmarks/training_step.py`` (its ``build_method``, ``make_batch``, ``Step``), loaded from its file path."""
    if "training_step" in sys.modules:  # run as a script from benchmarks/, it may be importable already
        return sys.modules["training_step"]
    spec = importlib.util.spec_from_file_location("training_step", Path(__file__).with_name("training_step.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["training_step"] = module
    spec.loader.exec_module(module)
    return module


class Autocast(torch.nn.Module):
    """The model's forward under bf16 autocast, as the harness's loop runs it (loss, regulariser, backward and the
    optimizer step outside autocast)."""

    def __init__(self, model: torch.nn.Module, device_type: str) -> None:
        super().__init__()
        self.model, self.device_type = model, device_type

    def forward(self, **inputs):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.model(**inputs)


def model_case(batch: int, seq: int, model_overrides: tuple[str, ...] = MODEL_OVERRIDES) -> str:
    """Register (model, batch, seq) as a case of training_step.py and return its key."""
    ts = training_step_module()
    key = f"gpu_kernel:{'_'.join(model_overrides)}:{batch}x{seq}"
    ts.CASES[key] = {"overrides": list(model_overrides), "batch": batch, "seq": seq}
    return key


def build_adapted_model(method: str, case: str, device: str = "cuda"):
    """``method`` (a key of training_step.METHODS) on ``case`` built exactly as the harness builds it
    (``training_step.build_method`` -> ``qgoft_bench.train.run.build``), moved to ``device``, wrapped in bf16 autocast,
    with one random batch (token ids in [1000, vocab), never zeros): returns training_step's ``Step`` for it."""
    ts = training_step_module()
    model, method_ = ts.build_method(case, method)
    batch = ts.make_batch(case, model.config.vocab_size)
    batch = {part: {k: v.to(device) for k, v in tensors.items()} for part, tensors in batch.items()}
    model.to(device)  # before Step builds the optimizer over its parameters
    return ts.Step(Autocast(model, torch.device(device).type), method_, batch)


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def free(device: str) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def peak_memory_mb(method: str, case: str, device: str = "cuda") -> float | None:
    """Peak CUDA memory allocated (MiB) while ``method`` alone is built on the GPU and runs two steps (the first
    creates AdamW's state); the memory already allocated before it is subtracted. Off CUDA the two steps still run
    (they prove the method trains) and the peak is None."""
    cuda = torch.device(device).type == "cuda"
    free(device)
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    step = build_adapted_model(method, case, device)
    step()
    step()
    sync(device)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else None
    del step
    free(device)
    return peak


def model_rows(batch: int = 32, seq: int = 128, repeats: int = 20, warmup: int = 3, device: str = "cuda",
               model_overrides: tuple[str, ...] = MODEL_OVERRIDES, methods=MODEL_METHODS) -> list[dict]:
    """Section 2: one row per method (``{"method_failed", "error"}`` for one that raised), or one row saying why the
    section did not run.

    Memory: each method in its own pass (alone on the GPU). Time: every method built and resident, ``warmup``
    warm-up rounds, then ``repeats`` rounds of one step per method in turn (round-robin), each step timed with the device
    synchronised before and after; median per method and its ratio to LoRA r=8 from the same run.
    """
    ts = training_step_module()
    case = model_case(batch, seq, model_overrides)
    peaks, failed = {}, []
    for method in methods:  # its own pass per method; one that cannot train is reported, not timed
        try:
            peaks[method] = peak_memory_mb(method, case, device)
        except Exception as err:  # noqa: BLE001  (a failing method must not take the others' numbers with it)
            failed.append({"method_failed": method, "error": f"{type(err).__name__}: {err}".splitlines()[0]})
            print(json.dumps(failed[-1]), flush=True)
            del err
            free(device)
    methods = [method for method in methods if method in peaks]

    steps = {method: build_adapted_model(method, case, device) for method in methods}
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {method: [] for method in methods}
    for _ in range(repeats):
        for method, step in steps.items():
            sync(device)
            started = time.perf_counter()
            step()
            sync(device)
            times[method].append(time.perf_counter() - started)
    del steps
    free(device)

    label = f"{ts.describe(case)}, bf16 autocast"
    rows = [{"method": method, "case": label, "time_ms": 1000 * statistics.median(times[method]),
             "peak_memory_mb": peaks[method], "repeats": repeats,
             "time_ms_all": [round(1000 * t, 2) for t in times[method]]} for method in methods]
    lora = next((r["time_ms"] for r in rows if r["method"] == "lora_r8"), None)
    for row in rows:
        row["ratio_vs_lora"] = row["time_ms"] / lora if lora else None
        print(json.dumps({k: v for k, v in row.items() if k != "time_ms_all"}), flush=True)
    return rows + failed


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
    lines += ["", "## Training step, deberta-v3-base (random weights, bf16 autocast)", ""]
    if model and "skipped" in model[0]:
        lines.append(f"Not run: {model[0]['skipped']}")
    elif rows := [r for r in model if "method" in r]:
        lines += [(f"Case: {rows[0]['case']}. Median of {rows[0]['repeats']} steps, methods interleaved "
                   "round-robin; ratio = time / LoRA r=8 time in the same run; peak = CUDA memory allocated by the "
                   "method alone (model, optimizer state, two steps)."), "",
                  "| method | step ms | ratio vs LoRA | peak MB |", "|---|--:|--:|--:|"]
        for r in rows:
            ratio = "" if r["ratio_vs_lora"] is None else f"{r['ratio_vs_lora']:.2f}"
            peak = "" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
            lines.append(f"| {r['method']} | {r['time_ms']:.2f} | {ratio} | {peak} |")
    for r in model:
        if "method_failed" in r:
            lines.append(f"\nNot timed: {r['method_failed']} raised {r['error']}")
    return "\n".join(lines) + "\n"


def write_results(gpu: str, kernel: list[dict], model: list[dict], out_dir: Path = OUT_DIR) -> Path:
    """results/perf/gpu_kernel_<gpu>.json and .md; returns the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "gpu_kernel_" + re.sub(r"[^A-Za-z0-9]+", "_", gpu).strip("_").lower()
    rows = [r for r in model if "method" in r]  # read_perf's rows; a skipped section leaves its reason instead
    record = {"machine": gpu, "gpu": gpu, "torch": torch.__version__, "python": platform.python_version(),
              "kernel": kernel, "rows": rows}
    if any("skipped" in r for r in model):
        record["model_skipped"] = "; ".join(r["skipped"] for r in model if "skipped" in r)
    if failed := [r for r in model if "method_failed" in r]:
        record["model_failed"] = failed
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
