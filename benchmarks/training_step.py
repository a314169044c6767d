"""One full training step (forward, loss, backward, AdamW step) per method, side by side on the same model and batch.

    python benchmarks/training_step.py                       # MiniLM (batch 32, seq 64) and DeBERTa-v3-base (random)
    python benchmarks/training_step.py --cases minilm --repeats 10

Every method is built exactly as the harness builds it (``qgoft_bench.train.run.build``) with the model's default
target modules (all six linears per block). Timing interleaves the methods round-robin (repeat r times every method
once), so drift of a shared machine hits all of them alike; the table reports the median and the ratio to PEFT
LoRA r=8 measured in the same run. Memory, counted exactly rather than read off the process (a CPU process's peak
RSS is set by model loading and came out identical for every method): ``saved_mb`` is what autograd keeps for
backward in one step (saved-tensor hooks, each storage once), ``state_mb`` the trainable parameters with their
gradients and two AdamW moments; ``peak_memory_mb`` = the frozen weights + saved_mb + state_mb, the step's tensor
peak up to transient workspace.
``goft_dense`` is GOFT computed the way the paper's official code does it (a dense R rebuilt every forward, then
x @ R), for comparison; ``goft_pytorch`` and ``qgoft_pytorch`` run the CPU PyTorch formulation of the rotation
(``operator.GivensRotate``) instead of the C++ kernel that ``goft`` and ``qgoft`` use. Inputs are random token ids, never zeros.
"""

import argparse
import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from qgoft_bench.config import compose_config
from qgoft_bench.methods.givens.layer import GivensLayer, GOFTLayer
from qgoft_bench.models import ModelBundle
from qgoft_bench.rotation import givens_matrix
from qgoft_bench.rotation.operator import GivensRotate
from qgoft_bench.tasks import build_task
from qgoft_bench.train import provenance
from qgoft_bench.train.loop import training_step
from qgoft_bench.train.run import build

CASES = {
    "minilm": {"overrides": ["model=minilm_l6"], "batch": 32, "seq": 64},
    "deberta": {"overrides": ["model=deberta_v3_base", "model.init=random"], "batch": 8, "seq": 128},
}
METHODS = {
    "lora_r8": ["method=lora"],
    "oft_b8": ["method=oft", "method.block_size=8"],
    "boft": ["method=boft"],
    "goft": ["method=goft"],
    "qgoft": ["method=qgoft"],
    "goft_dense": ["method=goft"],
    "goft_pytorch": ["method=goft"],
    "qgoft_pytorch": ["method=qgoft"],
}


def dense_goft(layer: GOFTLayer, x: torch.Tensor) -> torch.Tensor:
    """The official v1 construction: a dense d x d R from the blocks at every forward, then one extra matmul."""
    return x @ givens_matrix(layer.blocks(), layer.in_features)


def build_adapted(case: str, method_overrides: list[str], seed: int = 0) -> tuple[nn.Module, object, ModelBundle]:
    """The adapted model, its method and the model bundle, as the harness builds them (SST-2's two-class head),
    with every trainable parameter moved off its init (0.01 N(0, 1)), so no method gets an identity shortcut."""
    cfg = compose_config(["task=glue/sst2", *CASES[case]["overrides"], *method_overrides, f"seed={seed}"])
    torch.manual_seed(seed)
    model, method_, bundle = build(cfg)
    move_off_init(model)
    model.train()
    return model, method_, bundle


def move_off_init(model: nn.Module, skip: str = "classifier") -> None:
    """Add 0.01 N(0, 1) (torch's global generator) to every trainable parameter whose name lacks ``skip``, so that
    no method starts at its identity (LoRA's B = 0, a rotation's zero angles) and takes a shortcut."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad and skip not in name:
                param.add_(0.01 * torch.randn_like(param))


def build_method(case: str, method: str, seed: int = 0) -> tuple[nn.Module, object]:
    """The adapted model and its method for a key of METHODS (``build_adapted``)."""
    model, method_, _ = build_adapted(case, METHODS[method], seed)
    if method == "goft_dense":
        for module in model.modules():
            if isinstance(module, GOFTLayer):
                module._adapt_input = lambda x, layer=module: dense_goft(layer, x)
    if method.endswith("_pytorch"):  # the CPU PyTorch formulation instead of the C++ kernel
        for module in model.modules():
            if isinstance(module, GivensLayer):
                module._adapt_input = lambda x, layer=module: GivensRotate.apply(x, layer.blocks())
    return model, method_


def make_batch(case: str, vocab: int, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """A batch as tasks make them: random token ids (never zeros) and two-class labels."""
    generator = torch.Generator().manual_seed(seed)
    batch, seq = CASES[case]["batch"], CASES[case]["seq"]
    return {"inputs": {"input_ids": torch.randint(1000, vocab, (batch, seq), generator=generator),
                       "attention_mask": torch.ones(batch, seq, dtype=torch.long)},
            "targets": {"labels": torch.randint(0, 2, (batch,), generator=generator)}}


TASK = compose_config(["task=glue/sst2"])
SST2 = build_task(TASK.task, TASK.data)  # its loss only: cross-entropy over two classes


class Step:
    """One method's training step: the harness's own ``training_step`` (forward, loss + regulariser, backward),
    then AdamW and zero_grad. ``task`` gives the loss (SST-2's by default; ``causal_lm.py`` passes the instruction
    task's response loss)."""

    def __init__(self, model: nn.Module, method, batch: dict[str, dict[str, torch.Tensor]], task=SST2) -> None:
        self.model, self.method, self.batch, self.task = model, method, batch, task
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-5)
        self.device = params[0].device

    def __call__(self) -> None:
        training_step(self.model, self.method, self.task, [self.batch], self.device, "fp32")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def saved_bytes(self) -> int:
        """Bytes of the tensors autograd saves for backward in one forward pass (each storage counted once)."""
        seen: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            # a sparse tensor (PEFT's FRoD saves one) has no storage of its own: count its indices and values
            parts = (tensor._indices(), tensor._values()) if tensor.is_sparse else (tensor,)
            for part in parts:
                storage = part.untyped_storage()
                seen[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = self.task.loss(self.model(**self.batch["inputs"]), self.batch["targets"])
        loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return sum(seen.values())


def step_memory(step: Step) -> dict[str, float]:
    """``saved_mb`` (what autograd keeps for backward, ``Step.saved_bytes``), ``state_mb`` (the trainable parameters,
    their gradients and AdamW's two moments: 4 x their bytes) and ``peak_memory_mb`` = frozen weights + both."""
    frozen = sum(p.numel() * p.element_size() for p in step.model.parameters() if not p.requires_grad)
    trainable = sum(p.numel() * p.element_size() for p in step.model.parameters() if p.requires_grad)
    saved = step.saved_bytes()
    return {"saved_mb": saved / 2**20, "state_mb": 4 * trainable / 2**20,
            "peak_memory_mb": (frozen + saved + 4 * trainable) / 2**20}


def time_case(case: str, methods: list[str], repeats: int) -> list[dict]:
    steps = {}
    for method in methods:
        model, method_ = build_method(case, method)
        steps[method] = Step(model, method_, make_batch(case, model.config.vocab_size))
    for step in steps.values():  # warm-up: allocator, caches, lazy initialisation
        step()
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(repeats):
        for method, step in steps.items():
            started = time.perf_counter()
            step()
            times[method].append(time.perf_counter() - started)
    rows = []
    for method in methods:
        rows.append({"method": method, "case": describe(case), "time_ms": 1000 * statistics.median(times[method]),
                     "time_ms_all": [round(1000 * t, 1) for t in times[method]], **step_memory(steps[method]),
                     "repeats": repeats})
    lora = next(r["time_ms"] for r in rows if r["method"] == "lora_r8")
    for row in rows:
        row["ratio_vs_lora"] = row["time_ms"] / lora
    return rows


def describe(case: str) -> str:
    spec = CASES[case]
    return f"{' '.join(spec['overrides'])}, batch {spec['batch']}, seq {spec['seq']}"


def markdown(machine: dict, rows: list[dict]) -> str:
    title = (f"Training step, {machine['cpu']} ({machine['cpu_threads']} threads), torch {machine['torch']}, "
             f"{machine['date']}. Median of {rows[0]['repeats']} interleaved steps; ratio = time / LoRA r=8 time "
             "in the same run.")
    lines = [title, "",
             "| case | method | step ms | ratio vs LoRA | saved for backward MB | trainable state MB | step memory MB |",
             "|---|---|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['method']} | {r['time_ms']:.0f} | {r['ratio_vs_lora']:.2f} | "
                     f"{r['saved_mb']:.1f} | {r['state_mb']:.1f} | {r['peak_memory_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="results/perf/training_step")
    args = parser.parse_args()

    info = provenance.hardware(torch.device("cpu"))
    machine = {**info, "torch": torch.__version__, "date": datetime.now(UTC).date().isoformat()}
    rows = []
    for case in args.cases:
        case_rows = time_case(case, args.methods, args.repeats)
        rows += case_rows
        print(markdown(machine, case_rows), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"machine": f"{info['cpu']} ({info['cpu_threads']} threads)",
                                                    "details": machine, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(machine, rows))


if __name__ == "__main__":
    main()
