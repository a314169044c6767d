"""Where a GOFT training step spends its time against qGOFT's: the whole step, split into its parts.

    python benchmarks/goft_vs_qgoft.py                  # MiniLM (batch 32, seq 64) and DeBERTa-v3-base (random)
    python benchmarks/goft_vs_qgoft.py --cases minilm --repeats 9
    python benchmarks/goft_vs_qgoft.py --pairs 12       # also GOFT against qGOFT in 12 alternating pairs, op by op

GOFT and qGOFT run the same rotation operator on the activations (``qgoft_bench.rotation.givens_rotate`` with a
(d - 1, 2, 2) tensor of blocks); they differ in what produces the blocks (GOFT: angles -> pi tanh -> cos/sin -> blocks;
qGOFT: the blocks are the parameter), in the size of the parameters AdamW updates (d - 1 against 4 (d - 1) per
layer) and in qGOFT's soft-orthogonality penalty. Each part is timed on its own with the model's real adapters, the
same number of times per step as training runs it (blocks built in the forward and again in the backward, where the
operator recomputes its stage matrices; the stage-matrix construction and its backward; AdamW; the penalty), and
the rest of the step (the activation passes and the frozen model) is the difference. Methods interleave round-robin;
medians of thread CPU time at the torch thread count given (1 by default: a shared machine's load then adds no
waiting). Writes results/perf/goft_vs_qgoft.{json,md}.
"""

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch
from scipy.stats import wilcoxon
from torch.profiler import ProfilerActivity, profile
from training_step import CASES, Step, build_adapted, make_batch

from qgoft_bench.methods.givens.layer import GivensLayer
from qgoft_bench.rotation import cpu_kernel
from qgoft_bench.rotation.operator import _plan, _stage_matrices, _top_operand
from qgoft_bench.train import provenance

METHODS = {"lora_r8": ["method=lora"], "goft": ["method=goft"], "qgoft": ["method=qgoft"]}


def blocks_side(layers: list[GivensLayer]) -> Callable[[], None]:
    """The parameter side of one step for every adapter: the blocks from the parameters and the gradient back to them;
    on the PyTorch path also the stage operands from the blocks (forward, and again in the operator's backward)."""
    pytorch_path = cpu_kernel.backend() == "pytorch"

    def run() -> None:
        for layer in layers:
            blocks = layer.blocks()
            if not pytorch_path:  # the kernel takes the blocks as they are
                blocks.backward(torch.ones_like(blocks))
                continue
            plan = _plan(layer.in_features, layer.base_layer.weight.device)
            with torch.no_grad():  # as GivensRotate does: build without a graph, rebuild with one in the backward
                _top_operand(_stage_matrices(blocks.float(), plan))
            b = blocks.detach().float().requires_grad_()
            ops = _top_operand(_stage_matrices(b, plan))
            grad_b = torch.autograd.grad(ops, b, [torch.ones_like(op) for op in ops])[0]
            blocks.backward(grad_b)
        for layer in layers:
            for param in layer.parameters(recurse=False):
                param.grad = None

    return run


def parts(step: Step) -> dict[str, Callable[[], None]]:
    """The step and its separately timed parts (the parts a method lacks are absent)."""
    layers = [m for m in step.model.modules() if isinstance(m, GivensLayer)]
    out = {"step": step}
    if layers:
        out["blocks (and, PyTorch path, stage operands): fwd + bwd"] = blocks_side(layers)
        regularizer = step.method.regularizer
        if regularizer() is not None:
            out["penalty (fwd + bwd)"] = lambda: regularizer().backward()
    params = [p for p in step.model.parameters() if p.requires_grad]

    def adamw() -> None:
        for p in params:
            p.grad = torch.ones_like(p) * 1e-3
        step.optimizer.step()

    out["AdamW step"] = adamw
    return out


def time_case(case: str, repeats: int) -> list[dict]:
    steps = {}
    for method, overrides in METHODS.items():
        model, method_, _ = build_adapted(case, overrides)
        steps[method] = Step(model, method_, make_batch(case, model.config.vocab_size))
    runs = {method: parts(step) for method, step in steps.items()}
    for method_parts in runs.values():  # warm-up
        for part in method_parts.values():
            part()
    times = {(m, name): [] for m, method_parts in runs.items() for name in method_parts}
    for _ in range(repeats):
        for method, method_parts in runs.items():
            for name, part in method_parts.items():
                started = time.thread_time()
                part()
                times[(method, name)].append(time.thread_time() - started)
            steps[method].optimizer.zero_grad(set_to_none=True)
    rows = []
    for method, method_parts in runs.items():
        medians = {name: 1000 * statistics.median(times[(method, name)]) for name in method_parts}
        rest = medians["step"] - sum(v for k, v in medians.items() if k != "step")
        for name, value in [*medians.items(), ("the rest: activations and the frozen model", rest)]:
            rows.append({"case": case, "method": method, "part": name, "cpu_ms": round(value, 1)})
    return rows


def paired(case: str, pairs: int) -> dict:
    """GOFT's step against qGOFT's on the same batch, in pairs whose order alternates (GOFT first, then qGOFT first),
    so that drift and whatever the previous step left behind (allocator, caches) hit both alike. Per pair the ratio of
    thread CPU times; the median ratio and the Wilcoxon signed-rank p-value of the paired differences."""
    steps = {}
    for method in ("goft", "qgoft"):
        model, method_, _ = build_adapted(case, METHODS[method])
        steps[method] = Step(model, method_, make_batch(case, model.config.vocab_size))
        steps[method]()  # warm-up
    times: dict[str, list[float]] = {"goft": [], "qgoft": []}
    for i in range(pairs):
        for method in ("goft", "qgoft") if i % 2 == 0 else ("qgoft", "goft"):
            started = time.thread_time()
            steps[method]()
            times[method].append(time.thread_time() - started)
    ratios = [g / q for g, q in zip(times["goft"], times["qgoft"], strict=True)]
    return {"case": case, "pairs": pairs, "goft_ms": round(1000 * statistics.median(times["goft"]), 1),
            "qgoft_ms": round(1000 * statistics.median(times["qgoft"]), 1),
            "median_ratio": round(statistics.median(ratios), 4),
            "wilcoxon_p": float(wilcoxon(times["goft"], times["qgoft"]).pvalue)}  # fmt: skip


def op_profile(case: str, steps_per_method: int = 3) -> list[dict]:
    """Self CPU time per step of every operator (torch.profiler), GOFT's step beside qGOFT's: the ops only one of them
    runs (GOFT: tanh, cos, sin, stack; qGOFT: its penalty) and the shared ones, side by side."""
    per_op: dict[str, dict[str, float]] = {}
    for method in ("goft", "qgoft"):
        model, method_, _ = build_adapted(case, METHODS[method])
        step = Step(model, method_, make_batch(case, model.config.vocab_size))
        step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps_per_method):
                step()
        for event in prof.key_averages():
            per_op.setdefault(event.key, {})[method] = event.self_cpu_time_total / 1000 / steps_per_method
    rows = [{"case": case, "op": op, "goft_ms": round(v.get("goft", 0.0), 2), "qgoft_ms": round(v.get("qgoft", 0.0), 2)}
            for op, v in per_op.items()]  # fmt: skip
    return sorted(rows, key=lambda r: -abs(r["goft_ms"] - r["qgoft_ms"]))


def markdown(info: dict, args: argparse.Namespace, rows: list[dict], paired_rows: list[dict],
             op_rows: list[dict]) -> str:
    lines = [(f"# GOFT against qGOFT: one training step and its parts ({info['cpu']}, {args.threads} torch "
             f"thread(s), torch {torch.__version__}, {datetime.now(UTC).date().isoformat()}, CPU rotation path: "
             f"{cpu_kernel.backend()})"), "",
             f"Thread CPU time, median of {args.repeats} interleaved repeats; 'the rest' is the step minus the parts.",
             ""]  # fmt: skip
    for case in dict.fromkeys(r["case"] for r in rows):
        lines += [(f"## {case}: {' '.join(CASES[case]['overrides'])}, batch {CASES[case]['batch']}, "
                  f"seq {CASES[case]['seq']}"), "", "| part | " + " | ".join(METHODS) + " |",
                  "|---|" + "--:|" * len(METHODS)]  # fmt: skip
        names = list(dict.fromkeys(r["part"] for r in rows if r["case"] == case))
        for name in names:
            cells = [next((f"{r['cpu_ms']:.1f}" for r in rows if (r["case"], r["method"], r["part"]) ==
                           (case, m, name)), "-") for m in METHODS]  # fmt: skip
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if args.pairs:
        lines += [f"## GOFT against qGOFT in {args.pairs} alternating pairs (thread CPU time)", "",
                  "| case | GOFT ms | qGOFT ms | median GOFT / qGOFT | Wilcoxon p |", "|---|--:|--:|--:|--:|"]
        lines += [f"| {p['case']} | {p['goft_ms']} | {p['qgoft_ms']} | {p['median_ratio']:.3f} | {p['wilcoxon_p']:.3f} |"
                  for p in paired_rows]  # fmt: skip
        lines += ["", "## Operators whose time differs most (self CPU ms per step, torch.profiler, 3 steps each)", "",
                  "| case | op | GOFT | qGOFT |", "|---|---|--:|--:|"]
        for case in dict.fromkeys(r["case"] for r in op_rows):
            lines += [f"| {r['case']} | {r['op']} | {r['goft_ms']} | {r['qgoft_ms']} |"
                      for r in [r for r in op_rows if r["case"] == case][:12]]
            total = {m: sum(r[f"{m}_ms"] for r in op_rows if r["case"] == case) for m in ("goft", "qgoft")}
            lines.append(f"| {case} | all ops | {total['goft']:.1f} | {total['qgoft']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=0, help="also time GOFT against qGOFT in N alternating pairs "
                        "and profile both steps op by op")
    parser.add_argument("--out", default="results/perf/goft_vs_qgoft")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    info = provenance.hardware(torch.device("cpu"))
    rows = [row for case in args.cases for row in time_case(case, args.repeats)]
    paired_rows = [paired(case, args.pairs) for case in args.cases] if args.pairs else []
    op_rows = [row for case in args.cases for row in op_profile(case)] if args.pairs else []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "threads": args.threads, "repeats": args.repeats,
                                                    "rows": rows, "paired": paired_rows,
                                                    "ops": op_rows}, indent=1) + "\n")  # fmt: skip
    text = markdown(info, args, rows, paired_rows, op_rows)
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
