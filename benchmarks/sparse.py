"""Sparse fine-tuning against full fine-tuning and LoRA: step time, step memory, optimizer state, SAM's scoring cost.

    python benchmarks/sparse.py                  # MiniLM, batch 32, seq 64 (random token ids), 5 interleaved repeats
    python benchmarks/sparse.py --repeats 10 --scoring-batches 16

Every method is built as the harness builds it (``qgoft_bench.train.run.build``, all encoder tensors at p = 0.5%
for the sparse ones, which are prepared on the benchmark batch first). One training step is the harness's own
``training_step`` and AdamW; the methods are timed round-robin in one run and reported against full fine-tuning and
LoRA r=8 from the same run. ``optimizer_state_mb`` is what AdamW holds after a step (its two moments);
``step_memory_mb`` = frozen weights + what autograd saves in a step + trainable state, counted exactly as in
``training_step.py``. SAM's scoring pass (``method.scoring_batches`` = N forward+backward passes at the
pre-trained weights, then the top-k) is timed against N plain forward+backward passes of full fine-tuning on the
same batch, interleaved after the warm-up (a fresh SAM model each repeat: the first passes of the process are slower).
"""

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from training_step import SST2, Step, make_batch

from qgoft_bench.config import compose_config
from qgoft_bench.train import provenance
from qgoft_bench.train.loop import task_loss
from qgoft_bench.train.run import build

METHODS = {
    "full": ["method=full"],
    "lora_r8": ["method=lora"],
    "sam": ["method=sam"],
    "random": ["method=random_mask"],
}
CASE = {"overrides": ["model=minilm_l6"], "batch": 32, "seq": 64, "name": "minilm"}


def built(method: str, scoring_batches: int, batch: dict) -> tuple[torch.nn.Module, object, float, object]:
    """The adapted model, its method, the seconds ``prepare`` took (sparse methods score on ``batch``), the bundle."""
    extra = [f"method.scoring_batches={scoring_batches}"] if method == "sam" else []
    cfg = compose_config(["task=glue/sst2", *CASE["overrides"], *METHODS[method], *extra])
    torch.manual_seed(0)
    model, method_, bundle = build(cfg)
    model.train()
    started = time.perf_counter()
    method_.prepare(model, [batch] * scoring_batches, lambda b: task_loss(model, SST2, b, torch.device("cpu"), "fp32"))
    return model, method_, time.perf_counter() - started, bundle


def forward_backward_seconds(model: torch.nn.Module, batch: dict, n: int) -> float:
    """n forward+backward passes of ``model`` (full fine-tuning: every parameter takes a gradient)."""
    started = time.perf_counter()
    for _ in range(n):
        SST2.loss(model(**batch["inputs"]), batch["targets"]).backward()
        model.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scoring-batches", type=int, default=8)
    parser.add_argument("--out", default="results/perf/sparse")
    args = parser.parse_args()

    batch = None
    steps, prepare_s, bundles = {}, {}, {}
    for method in METHODS:
        if batch is None:
            probe, _, _, _ = built("full", 1, make_batch("minilm", 30522))
            batch = make_batch("minilm", probe.config.vocab_size)
        model, method_, prepare_s[method], bundles[method] = built(method, args.scoring_batches, batch)
        steps[method] = Step(model, method_, batch)
    for step in steps.values():  # warm-up
        step()
    times: dict[str, list[float]] = {m: [] for m in steps}
    for _ in range(args.repeats):
        for method, step in steps.items():
            started = time.perf_counter()
            step()
            times[method].append(time.perf_counter() - started)

    # SAM's scoring pass against N plain forward+backward passes, interleaved, both on a warm process: each repeat
    # builds a fresh SAM model (its prepare runs once per model) and times full fine-tuning's passes beside it
    sam_s, full_s = [], []
    for _ in range(args.repeats):
        sam_s.append(built("sam", args.scoring_batches, batch)[2])
        full_s.append(forward_backward_seconds(steps["full"].model, batch, args.scoring_batches))
    rows = []
    for method, step in steps.items():
        model = step.model
        state = sum(t.numel() * t.element_size() for s in step.optimizer.state.values() for t in s.values()
                    if torch.is_tensor(t) and t.dim() > 0)
        frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        adapter = step.method.counts(model, bundles[method].spec)["adapter_params"]  # head excluded
        saved = step.saved_bytes()
        rows.append({"method": method, "case": f"{CASE['name']}, batch {CASE['batch']}, seq {CASE['seq']}",
                     "time_ms": 1000 * statistics.median(times[method]),
                     "time_ms_all": [round(1000 * t, 1) for t in times[method]],
                     "trainable_params": trainable, "adapter_params": adapter, "optimizer_state_mb": state / 2**20,
                     "step_memory_mb": (frozen + saved + 16 * trainable) / 2**20, "prepare_s": prepare_s[method],
                     "repeats": args.repeats})
    reference = {r["method"]: r for r in rows}
    for row in rows:
        row["ratio_vs_full"] = row["time_ms"] / reference["full"]["time_ms"]
        row["ratio_vs_lora"] = row["time_ms"] / reference["lora_r8"]["time_ms"]
        row["state_vs_full"] = row["optimizer_state_mb"] / reference["full"]["optimizer_state_mb"]
        # the adapter's own AdamW state (two float32 moments per entry), head left out, against full fine-tuning's
        row["adapter_state_vs_full"] = row["adapter_params"] / reference["full"]["adapter_params"]
    scoring = {"scoring_batches": args.scoring_batches, "repeats": args.repeats,
               "sam_prepare_s": statistics.median(sam_s), "sam_prepare_s_all": [round(t, 2) for t in sam_s],
               "full_forward_backward_s": statistics.median(full_s), "full_s_all": [round(t, 2) for t in full_s]}
    scoring["ratio"] = scoring["sam_prepare_s"] / scoring["full_forward_backward_s"]

    info = provenance.hardware(torch.device("cpu"))
    machine = f"{info['cpu']} ({info['cpu_threads']} threads)"
    date = datetime.now(UTC).date().isoformat()
    title = (f"Sparse methods, {machine}, torch {torch.__version__}, {date}. Median of {args.repeats} interleaved "
             "steps; ratios from the same run.")
    header = ("| method | adapter params (head) | step ms | vs full | vs LoRA r=8 | AdamW state MB | state vs full | "
              "adapter state vs full | step memory MB |")
    lines = [title, "", header, "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['adapter_params']:,} ({r['trainable_params'] - r['adapter_params']:,}) | "
                     f"{r['time_ms']:.0f} | {r['ratio_vs_full']:.2f} | {r['ratio_vs_lora']:.2f} | "
                     f"{r['optimizer_state_mb']:.2f} | {r['state_vs_full']:.4f} | {r['adapter_state_vs_full']:.4f} | "
                     f"{r['step_memory_mb']:.0f} |")
    lines += ["", (f"SAM's scoring pass over {args.scoring_batches} batches (scoring, top-k and install: its whole "
                   f"prepare): {scoring['sam_prepare_s']:.2f} s, against {scoring['full_forward_backward_s']:.2f} s "
                   f"for {args.scoring_batches} forward+backward passes of full fine-tuning on the same batch (ratio "
                   f"{scoring['ratio']:.2f}; medians of {args.repeats} interleaved repeats, each on a fresh model).")]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "date": date, "rows": rows,
                                                    "sam_scoring": scoring}, indent=1) + "\n")
    out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
