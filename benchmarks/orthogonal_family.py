"""Every orthogonal method and LoRA side by side: trainable parameters, step time, step memory, merged inference.

    python benchmarks/orthogonal_family.py                     # MiniLM (batch 32, seq 64) and DeBERTa-v3-base (random)
    python benchmarks/orthogonal_family.py --cases minilm --repeats 3

Each method is built as the harness builds it (``benchmarks/training_step.py``: the model's default targets, the
method's default preset, weights moved off the identity init, random token ids) and timed round-robin in one run, so
the ratios to PEFT LoRA r=8 are measured side by side. Columns:

- ``adapter_params``: what the method trains, head excluded (``method.counts``, the number the records carry);
- ``step ms`` / ``ratio``: one training step (forward, loss + regulariser, backward, AdamW), median;
- ``step memory MB``: frozen weights + what autograd saves for backward + trainable state (``training_step.py``);
- ``merged``: whether ``method.merge`` folds the adapter into plain weights (no adapter module left);
- ``inference ratio``: a forward pass of the merged model (or the adapted one where the method cannot merge) over
  the plain pretrained model's forward on the same batch, median of interleaved repeats: 1.00 is a free adapter.
"""

import argparse
import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn
from training_step import CASES, Step, build_adapted, make_batch

from qgoft_bench.config import compose_config
from qgoft_bench.methods.givens.layer import GOFTLayer
from qgoft_bench.train import provenance
from qgoft_bench.train.run import build

# label -> method overrides; each method's own default preset (conf/method/<name>.yaml)
FAMILY = {
    "lora_r8": ["method=lora"],
    "oft_b8": ["method=oft", "method.block_size=8"],
    "boft": ["method=boft"],
    "hra": ["method=hra"],
    "road": ["method=road"],
    "psoft": ["method=psoft"],
    "frod": ["method=frod"],
    "delora": ["method=delora"],
    "osf": ["method=osf"],
    "fact_tt": ["method=fact_tt"],
    "fact_tk": ["method=fact_tk"],
    "goft": ["method=goft"],
    "qgoft": ["method=qgoft"],
}


def plain_model(case: str) -> nn.Module:
    """The pretrained model with the task head and no method: the inference baseline."""
    cfg = compose_config(["task=glue/sst2", *CASES[case]["overrides"], "method=full", "seed=0"])
    torch.manual_seed(0)
    model, _, _ = build(cfg)
    return model.eval()


def is_merged(model: nn.Module) -> bool:
    """True when no adapter module is left: PEFT tuner layers, our Givens layers, FacT layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from qgoft_bench.methods.fact import FacTLayer

    return not any(isinstance(m, BaseTunerLayer | GOFTLayer | FacTLayer) for m in model.modules())


def forward_times(models: dict[str, nn.Module], batch: dict, repeats: int) -> dict[str, float]:
    """Median forward time (ms) of each model on the same batch, interleaved round-robin."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():  # warm-up
            model(**batch["inputs"])
        for _ in range(repeats):
            for name, model in models.items():
                started = time.perf_counter()
                model(**batch["inputs"])
                times[name].append(time.perf_counter() - started)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def run_case(case: str, methods: list[str], repeats: int) -> list[dict]:
    steps, counts = {}, {}
    for label in methods:
        model, method, bundle = build_adapted(case, FAMILY[label])
        steps[label] = Step(model, method, make_batch(case, model.config.vocab_size))
        counts[label] = method.counts(model, bundle.spec)
    for step in steps.values():  # warm-up: allocator, caches, lazy initialisation
        step()
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(repeats):
        for label, step in steps.items():
            started = time.perf_counter()
            step()
            times[label].append(time.perf_counter() - started)

    # memory before merging: a merge may fold the very model it was handed
    memory = {}
    for label, step in steps.items():
        frozen = sum(p.numel() * p.element_size() for p in step.model.parameters() if not p.requires_grad)
        trainable = sum(p.numel() * p.element_size() for p in step.model.parameters() if p.requires_grad)
        memory[label] = (frozen + step.saved_bytes() + 4 * trainable) / 2**20

    batch = next(iter(steps.values())).batch
    inference: dict[str, nn.Module] = {"plain": plain_model(case)}
    merged = {}
    for label, step in steps.items():
        inference[label] = step.method.merge(step.model.eval())
        merged[label] = is_merged(inference[label])
    forward_ms = forward_times(inference, batch, repeats)

    rows = []
    for label in methods:
        rows.append({"method": label, "case": describe(case), "adapter_params": counts[label]["adapter_params"],
                     "time_ms": 1000 * statistics.median(times[label]),
                     "time_ms_all": [round(1000 * t, 1) for t in times[label]],
                     "peak_memory_mb": memory[label], "merged": merged[label],
                     "forward_ms": forward_ms[label], "plain_forward_ms": forward_ms["plain"],
                     "inference_ratio": forward_ms[label] / forward_ms["plain"], "repeats": repeats})
    lora = next(r for r in rows if r["method"] == "lora_r8")
    for row in rows:
        row["ratio_vs_lora"] = row["time_ms"] / lora["time_ms"]
        row["memory_vs_lora"] = row["peak_memory_mb"] / lora["peak_memory_mb"]
    return rows


def describe(case: str) -> str:
    spec = CASES[case]
    return f"{' '.join(spec['overrides'])}, batch {spec['batch']}, seq {spec['seq']}"


def markdown(machine: dict, rows: list[dict]) -> str:
    title = (f"The orthogonal family, {machine['cpu']} ({machine['cpu_threads']} threads), torch {machine['torch']}, "
             f"peft {machine['peft']}, {machine['date']}. Median of {rows[0]['repeats']} interleaved steps; ratios to "
             "LoRA r=8 in the same run; inference = forward of the merged model / the plain model's forward.")
    lines = [title, "",
             ("| case | method | adapter params | step ms | step vs LoRA | step memory MB | memory vs LoRA | merges | "
              "inference vs plain |"),
             "|---|---|--:|--:|--:|--:|--:|---|--:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['method']} | {r['adapter_params']:,} | {r['time_ms']:.0f} | "
                     f"{r['ratio_vs_lora']:.2f} | {r['peak_memory_mb']:.0f} | {r['memory_vs_lora']:.3f} | "
                     f"{'yes' if r['merged'] else 'no'} | {r['inference_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import peft

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--methods", nargs="+", default=list(FAMILY), choices=list(FAMILY))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="results/perf/orthogonal_family")
    args = parser.parse_args()
    if "lora_r8" not in args.methods:
        parser.error("the ratios need lora_r8 in --methods")

    info = provenance.hardware(torch.device("cpu"))
    machine = {**info, "torch": torch.__version__, "peft": peft.__version__,
               "date": datetime.now(UTC).date().isoformat()}
    rows = []
    for case in args.cases:
        case_rows = run_case(case, args.methods, args.repeats)
        rows += case_rows
        print(markdown(machine, case_rows), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"machine": f"{info['cpu']} ({info['cpu_threads']} threads)",
                                                    "details": machine, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(machine, rows))


if __name__ == "__main__":
    main()
