"""Speed and activation memory of the Givens rotation against LoRA, OFT, BOFT and an official-style dense GOFT.

One adapted d x d layer, forward + backward on random tokens (float32, this machine's CPU or GPU); the whole
training step per method is benchmarks/training_step.py, the GPU kernel benchmarks/gpu_kernel.py.

    .venv/bin/python benchmarks/rotation.py --layer [--tokens 8192] [--widths 768 3072] [--repeats 7]
    .venv/bin/python benchmarks/rotation.py --contention [--threads 2]

--layer writes results/perf/rotation_layer.{json,md}. --contention measures the adapters and adapted layers twice in
one run, on the idle machine and under a known load the benchmark starts and stops itself (one process per core
running a single-threaded 512 x 512 matmul loop, as other jobs of a sweep would), and writes
results/perf/rotation_contention.{json,md} with both ratios against LoRA side by side. Times are medians over repeats after warm-up; all variants are timed
interleaved (one repeat of each in turn) so that load from other processes hits them alike. Memory is the bytes of
the tensors autograd saves for backward (activations, parameters excluded), recorded with
``torch.autograd.graph.saved_tensors_hooks``: deterministic, and what grows with batch x sequence in training.
"""

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import peft
import torch
from torch import nn

from qgoft_bench.methods.givens import GOFTLayer, QGOFTLayer
from qgoft_bench.rotation import angles_to_blocks, cpu_kernel, givens_rotate, givens_schedule
from qgoft_bench.rotation.operator import GivensRotate
from qgoft_bench.train.provenance import cpu_name

RESULTS = Path(__file__).resolve().parents[1] / "results" / "perf"


def machine() -> dict:
    """CPU model, cores, threads torch uses, versions and date: enough to tell runs apart."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cpu_rotation": cpu_kernel.backend(),  # which path "givens rotation alone (ours)" and our layers take
        "torch": torch.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


class OneLayer(nn.Module):
    """A module holding one frozen d x d linear named ``layer``, for PEFT to inject into."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.layer = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class DenseGOFT(nn.Module):
    """GOFT the way the official v1 code runs it: every forward rebuilds a dense R from the level matrices
    (R <- P_l R, level by level, each a row mixing of the d x d matrix under autograd), then y = base(x @ R)."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base
        d = base.in_features
        self.theta = nn.Parameter(0.1 * torch.randn(d - 1))
        self.levels = givens_schedule(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, blocks = self.base.in_features, angles_to_blocks(self.theta)
        rotation, start = torch.eye(d, device=x.device), 0
        for pairs in self.levels:
            m = blocks[start : start + len(pairs)]
            start += len(pairs)
            i, j = pairs[:, 0], pairs[:, 1]
            ri, rj = rotation.index_select(0, i), rotation.index_select(0, j)
            new_i = m[:, 0, 0, None] * ri + m[:, 0, 1, None] * rj  # column convention: (P_l R) rows i and j
            new_j = m[:, 1, 0, None] * ri + m[:, 1, 1, None] * rj
            rotation = rotation.index_copy(0, i, new_i).index_copy(0, j, new_j)
        return self.base(x @ rotation)


class RotationOnly(nn.Module):
    """GOFT's rotation alone (angles -> blocks -> x @ R), no linear: the adapter's own cost. ``pytorch=True`` runs
    the CPU PyTorch formulation (``operator.GivensRotate``) instead of ``givens_rotate``'s choice (the C++ kernel)."""

    def __init__(self, d: int, pytorch: bool = False) -> None:
        super().__init__()
        self.theta = nn.Parameter(0.1 * torch.randn(d - 1))
        self.rotate = GivensRotate.apply if pytorch else givens_rotate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rotate(x, angles_to_blocks(self.theta))


class LoRAOnly(nn.Module):
    """A LoRA r=8 adapter alone, x -> (x A^T) B^T * alpha / r, the same arithmetic as PEFT's lora branch."""

    def __init__(self, d: int, r: int = 8) -> None:
        super().__init__()
        self.lora_a = nn.Parameter(torch.randn(r, d) / d**0.5)
        self.lora_b = nn.Parameter(0.01 * torch.randn(d, r))
        self.scale = 16 / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.lora_a.t()) @ self.lora_b.t() * self.scale


def peft_layer(d: int, config: peft.PeftConfig) -> nn.Module:
    module = peft.inject_adapter_in_model(config, OneLayer(d))
    for name, param in module.named_parameters():
        param.requires_grad_(any(k in name for k in ("lora_", "oft_", "boft_")))
    return module


def frozen(module: nn.Module) -> nn.Module:
    """Freeze the base linears of our own variants (PEFT freezes its own)."""
    for name, param in module.named_parameters():
        param.requires_grad_(not name.startswith("base") and "base_layer" not in name)
    return module


def variants(d: int) -> dict[str, Callable[[], nn.Module]]:
    """Name -> builder of the module timed on (tokens, d) inputs."""
    return {
        "frozen linear (no adapter)": lambda: OneLayer(d).requires_grad_(False),
        "lora r=8 adapter alone": lambda: LoRAOnly(d),
        "givens rotation alone (ours)": lambda: RotationOnly(d),
        "givens rotation alone (ours, PyTorch path)": lambda: RotationOnly(d, pytorch=True),
        "peft lora r=8 layer": lambda: peft_layer(
            d, peft.LoraConfig(r=8, lora_alpha=16, target_modules=["layer"])
        ),
        "goft layer (ours)": lambda: frozen(randomized(GOFTLayer(nn.Linear(d, d), "tanh"))),
        "qgoft layer (ours)": lambda: frozen(randomized(QGOFTLayer(nn.Linear(d, d)))),
        "goft dense-R official-style layer": lambda: frozen(DenseGOFT(nn.Linear(d, d))),
        "peft oft b=32 layer": lambda: peft_layer(
            d, peft.OFTConfig(oft_block_size=32, target_modules=["layer"])
        ),
        "peft boft b=4 m=1 layer": lambda: peft_layer(
            d, peft.BOFTConfig(boft_block_size=4, boft_n_butterfly_factor=1, target_modules=["layer"])
        ),
    }


def randomized(layer: nn.Module) -> nn.Module:
    """Adapter parameters away from identity, so nothing is timed on trivial values."""
    with torch.no_grad():
        for param in layer.parameters(recurse=False):
            param.add_(0.1 * torch.randn_like(param))
    return layer


def saved_activation_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of distinct non-parameter tensors autograd keeps for backward during one forward."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(storages.values())


def fwd_bwd(module: nn.Module, x: torch.Tensor, grad_y: torch.Tensor) -> None:
    """One training step's worth of work for the layer: forward, backward to the input and the adapter."""
    x.grad = None
    module.zero_grad(set_to_none=True)
    module(x).backward(grad_y)
    if x.device.type == "cuda":
        torch.cuda.synchronize()


CONTENTION_VARIANTS = ("lora r=8 adapter alone", "givens rotation alone (ours)",
                       "givens rotation alone (ours, PyTorch path)", "peft lora r=8 layer",
                       "goft layer (ours)", "qgoft layer (ours)")


def _burn(stop: "multiprocessing.synchronize.Event") -> None:
    """One core's worth of background load: a single-threaded float32 matmul loop until ``stop`` is set."""
    torch.set_num_threads(1)
    a = torch.randn(512, 512)
    while not stop.is_set():
        a = torch.tanh(a @ a)  # tanh keeps the values bounded (and nonzero)


class BackgroundLoad:
    """``processes`` busy processes for the duration of a ``with`` block (spawned, so they share no threads)."""

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self.workers = [context.Process(target=_burn, args=(self.stop,), daemon=True) for _ in range(processes)]

    def __enter__(self) -> Self:
        for worker in self.workers:
            worker.start()
        time.sleep(3.0)  # let them import torch and reach the loop
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for worker in self.workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()


def layer_section(
    tokens: int, widths: list[int], repeats: int, device: torch.device, only: tuple[str, ...] | None = None
) -> list[dict]:
    rows = []
    for d in widths:
        torch.manual_seed(0)
        x = torch.randn(tokens, d, device=device, requires_grad=True)
        grad_y = torch.randn(tokens, d, device=device)
        modules = {name: build().to(device) for name, build in variants(d).items() if only is None or name in only}

        times: dict[str, list[float]] = {name: [] for name in modules}
        for module in modules.values():  # warm-up: allocator, caches, lazy init
            fwd_bwd(module, x, grad_y)
            fwd_bwd(module, x, grad_y)
        for _ in range(repeats):
            for name, module in modules.items():
                start = time.perf_counter()
                fwd_bwd(module, x, grad_y)
                times[name].append(time.perf_counter() - start)
        lora_layer = statistics.median(times["peft lora r=8 layer"])
        lora_alone = statistics.median(times["lora r=8 adapter alone"])
        for name, module in modules.items():
            median = statistics.median(times[name])
            rows.append(
                {
                    "d": d,
                    "tokens": tokens,
                    "variant": name,
                    "fwd_bwd_ms": round(1e3 * median, 2),
                    "vs_lora_layer": round(median / lora_layer, 2),
                    "vs_lora_adapter": round(median / lora_alone, 2),
                    "saved_activation_mib": round(saved_activation_bytes(module, x) / 2**20, 2),
                    "trainable_params": sum(p.numel() for p in module.parameters() if p.requires_grad),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(info: dict, args: argparse.Namespace, rows: list[dict]) -> str:
    lines = [
        "# One adapted layer: forward + backward, float32",
        "",
        (
            f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads), "
            f"peft {info['peft']}, GPU: {info['gpu']}; {info['date']}. Tokens {args.tokens}, median of "
            f"{args.repeats} interleaved repeats after 2 warm-up steps; CPU rotation path of 'ours': "
            f"{info['cpu_rotation']}. Saved activations: bytes autograd keeps for "
            "backward (saved_tensors_hooks), parameters excluded."
        ),
        "",
        *([f"Note: {args.note}", ""] if args.note else []),
        "| d | variant | fwd+bwd ms | vs PEFT LoRA layer | vs LoRA adapter alone | saved activations MiB | trainable |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['d']} | {r['variant']} | {r['fwd_bwd_ms']} | {r['vs_lora_layer']} | {r['vs_lora_adapter']} | "
            f"{r['saved_activation_mib']} | {r['trainable_params']:,} |"
        )
    return "\n".join(lines) + "\n"


def contention(info: dict, args: argparse.Namespace) -> None:
    """The adapters and adapted layers on the idle machine, then under ``BackgroundLoad``; ratios side by side."""
    device = torch.device(args.device)
    idle = layer_section(args.tokens, args.widths, args.repeats, device, CONTENTION_VARIANTS)
    with BackgroundLoad(args.load_processes):
        loaded = layer_section(args.tokens, args.widths, args.repeats, device, CONTENTION_VARIANTS)
    rows = []
    for quiet, busy in zip(idle, loaded, strict=True):
        rows.append({"d": quiet["d"], "variant": quiet["variant"],
                     "idle_ms": quiet["fwd_bwd_ms"], "idle_vs_lora_adapter": quiet["vs_lora_adapter"],
                     "idle_vs_lora_layer": quiet["vs_lora_layer"],
                     "loaded_ms": busy["fwd_bwd_ms"], "loaded_vs_lora_adapter": busy["vs_lora_adapter"],
                     "loaded_vs_lora_layer": busy["vs_lora_layer"]})  # fmt: skip
    record = {"machine": info, "tokens": args.tokens, "repeats": args.repeats, "load_processes": args.load_processes,
              "note": args.note, "rows": rows}  # fmt: skip
    (args.out / "rotation_contention.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# One adapter or adapted layer, forward + backward, idle and under load (float32)",
        "",
        (
            f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads), "
            f"{info['date']}. Tokens {args.tokens}, median of {args.repeats} interleaved repeats after 2 warm-up "
            f"steps. CPU rotation path of 'ours': {info['cpu_rotation']}. Load: {args.load_processes} processes, "
            "each a single-threaded 512 x 512 matmul loop, started and stopped by the benchmark; the idle and loaded "
            "halves ran back to back in one run."
        ),
        "",
        *([f"Note: {args.note}", ""] if args.note else []),
        (
            "| d | variant | idle ms | idle vs LoRA adapter | idle vs LoRA layer | loaded ms | loaded vs LoRA adapter "
            "| loaded vs LoRA layer |"
        ),
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(f"| {r['d']} | {r['variant']} | {r['idle_ms']} | {r['idle_vs_lora_adapter']} | "
                     f"{r['idle_vs_lora_layer']} | {r['loaded_ms']} | {r['loaded_vs_lora_adapter']} | "
                     f"{r['loaded_vs_lora_layer']} |")  # fmt: skip
    (args.out / "rotation_contention.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--layer", action="store_true", help="one adapted layer vs LoRA/OFT/BOFT/dense GOFT")
    mode.add_argument("--contention", action="store_true", help="idle and under a background load, one run")
    parser.add_argument("--load-processes", type=int, default=os.cpu_count(), help="busy processes of the load")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--widths", type=int, nargs="+", default=[768, 3072])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--note", default="", help="a line for the report, e.g. whether the machine was shared"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.contention:
        contention(info, args)
        return
    rows = layer_section(args.tokens, args.widths, args.repeats, torch.device(args.device))
    record = {
        "machine": info,
        "tokens": args.tokens,
        "repeats": args.repeats,
        "note": args.note,
        "rows": rows,
    }
    (args.out / "rotation_layer.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "rotation_layer.md").write_text(markdown(info, args, rows))


if __name__ == "__main__":
    main()
