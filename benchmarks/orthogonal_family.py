"""Every orthogonal method and LoRA side by side: trainable parameters, step time, step memory, merged inference.

    python benchmarks/orthogonal_family.py                     # MiniLM (batch 32, seq 64) and DeBERTa-v3-base (random)
    python benchmarks/orthogonal_family.py --cases minilm --repeats 3

Each method is built as the harness builds it (``benchmarks/training_step.py``: the model's default targets, the
method's default preset, weights moved off the identity init, random token ids) and timed round-robin in one run, so
the ratios to PEFT LoRA r=8 are measured side by side; one adapted model is alive at a time (``run_case``). Columns:

- ``adapter_params``: what the method trains, head excluded (``method.counts``, the number the records carry);
- ``step ms`` / ``ratio``: one training step (forward, loss + regulariser, backward, AdamW), median;
- ``step memory MB``: frozen weights + what autograd saves for backward + trainable state (``training_step.py``);
- ``merged``: whether ``method.merge`` folds the adapter into plain weights (no adapter module left);
- ``inference ratio``: a forward pass of the merged model (or the adapted one where the method cannot merge) over
  the plain pretrained model's forward on the same batch just after it, median over the rounds: 1.00 is free.
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


def forward_ms(model: nn.Module, batch: dict) -> float:
    """One forward pass of ``model`` on ``batch``, in ms (after one untimed pass)."""
    with torch.inference_mode():
        model(**batch["inputs"])
        started = time.perf_counter()
        model(**batch["inputs"])
        return 1000 * (time.perf_counter() - started)


def run_case(case: str, methods: list[str], repeats: int) -> list[dict]:
    """Round-robin over ``methods``, ``repeats`` rounds, one adapted model alive at a time (DeBERTa-v3-base adapted
    by 13 methods at once, with their merged copies, took 23 GB and was killed by the kernel): each visit builds the
    method's model, takes one warm-up step and one timed step, merges, and times the merged forward beside the plain
    model's (the inference ratio is the median of those adjacent pairs). Counts and step memory from the first round."""
    plain = plain_model(case)
    times: dict[str, list[float]] = {m: [] for m in methods}
    inference: dict[str, list[float]] = {m: [] for m in methods}
    plain_ms: dict[str, list[float]] = {m: [] for m in methods}
    counts, memory, merged = {}, {}, {}
    for _ in range(repeats):
        for label in methods:
            model, method, bundle = build_adapted(case, FAMILY[label])
            step = Step(model, method, make_batch(case, model.config.vocab_size))
            step()  # warm-up: allocator, caches, lazy initialisation
            started = time.perf_counter()
            step()
            times[label].append(time.perf_counter() - started)
            if label not in counts:
                counts[label] = method.counts(model, bundle.spec)
                frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
                trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
                memory[label] = (frozen + step.saved_bytes() + 4 * trainable) / 2**20  # before a merge folds it
            folded = method.merge(model.eval())
            merged[label] = is_merged(folded)
            inference[label].append(forward_ms(folded, step.batch))
            plain_ms[label].append(forward_ms(plain, step.batch))
            del model, method, step, folded

    rows = []
    for label in methods:
        ratios = [a / b for a, b in zip(inference[label], plain_ms[label], strict=True)]
        rows.append({"method": label, "case": describe(case), "adapter_params": counts[label]["adapter_params"],
                     "time_ms": 1000 * statistics.median(times[label]),
                     "time_ms_all": [round(1000 * t, 1) for t in times[label]],
                     "peak_memory_mb": memory[label], "merged": merged[label],
                     "forward_ms": statistics.median(inference[label]),
                     "plain_forward_ms": statistics.median(plain_ms[label]),
                     "inference_ratio": statistics.median(ratios), "repeats": repeats})
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
             "LoRA r=8 in the same run; inference = forward of the merged model / the plain model's forward; one "
             "adapted model alive at a time.")
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
