"""Training and MMLU-evaluation throughput of a real causal LM (SmolLM2-135M), GOFT/qGOFT against LoRA in one run.

    python benchmarks/causal_lm.py                               # SmolLM2-135M-Instruct (GGUF), one thread
    python benchmarks/causal_lm.py --model tiny_llama --repeats 2 # the tiny random LLaMA: a smoke run in seconds
    python benchmarks/causal_lm.py --full                        # also full fine-tuning (about 2 GB more state)

What is measured, per method of the qGOFT paper's Table 2 (LLaMA, q/k/v/o adapted; ``experiment=paper/llama``'s
settings, ``conf/recipe/llama2_7b_alpaca.csv``'s per-method lr and qGOFT's lambda): LoRA r=16, OFT b=16, GOFT,
qGOFT, and full fine-tuning behind ``--full``:

- **Training**: one update on a fixed batch of the instruction task (``task=instruct/alpaca_mmlu``'s training side,
  the same code as ``task=instruct/alpaca``: the Alpaca template, response-only loss) from ``data.instruct_path``,
  encoded by the task itself (``--batch`` sequences, ``trainer.max_seq_len=--seq``); the batch is the first the
  task's own seeded length-grouped loader gives. An update is what ``qgoft_bench.train.loop.train`` does per
  update with ``grad_accum=1``: ``training_step`` (forward, loss + the method's regulariser, backward), gradient
  clipping (``trainer.clip_grad``), the harness's AdamW (``build_optimizer``: the method's decay groups and anchors)
  and ``zero_grad`` (the lr schedule's step, a scalar, is left out). Methods are timed round-robin (every method once
  per repeat), after ``--warmup`` untimed updates each, so drift of the shared machine hits all alike; the median
  is reported, with training tokens/s (the batch's non-padding tokens / the median) and the ratio to LoRA r=16 in
  the same run. Memory as ``benchmarks/training_step.py`` counts it (its ``Step.saved_bytes`` and
  ``step_memory``, imported): ``saved_mb`` what autograd keeps for backward (saved-tensor hooks, each storage
  once), ``state_mb`` the trainable parameters, gradients and two AdamW moments, ``peak_mb`` = frozen weights +
  both. Every trainable parameter is moved off its init (0.01 N(0, 1), as ``training_step.py``) so that no method
  takes an identity shortcut; full fine-tuning has none and is left as loaded.
- **MMLU evaluation**: the harness's own scoring (``task.mmlu``, ``eval.mmlu_scoring=harness``: log-likelihood of
  " A".." D", length-sorted batches, the shared-prefix KV cache) of a fixed stratified subset
  (``eval.mmlu_subset=--mmlu-subset`` questions from ``data.mmlu_dir``), 0-shot and 5-shot, timed around
  ``qgoft_bench.train.loop.evaluate`` (``task.evaluate`` through the harness's ``predictor``, eval mode, no grad)
  for the base model and for each adapted model as it is after training (adapters unmerged, as a run evaluates),
  round-robin over models, median of ``--eval-repeats``. Reported: questions/s and tokens/s, counting the prompts'
  tokens (``prompt tok/s``: what the evaluation reads) and the tokens actually run through the model (``run
  tok/s``: each subject's shared prefix once, no padding); time relative to the base model and to LoRA.

Why: issue 22 asks for GOFT/qGOFT's cost on a real LLaMA-architecture model on this CPU, not a small encoder with
random inputs (``training_step.py``): a 576-wide model whose attention projections are small, with long sequences,
where the rotation's per-layer passes weigh differently; the target is the rotation methods within 1.15x LoRA's step.

The model is loaded once (SmolLM2's GGUF file takes about 70 s to dequantise): ``qgoft_bench.train.run.build`` builds
each method exactly as a run does, with its ``build_model`` swapped for one that loads the first time and hands every
later call a deep copy of the pristine model (``LoadOnce``); the pristine copy is the base model of the evaluation.
One torch thread by default (``--threads``), so that the second core's other users disturb less.
"""

import argparse
import copy
import json
import os
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from training_step import Step, move_off_init, step_memory

from qgoft_bench.config import compose_config
from qgoft_bench.errors import DivergedError
from qgoft_bench.methods.params import in_head
from qgoft_bench.models import ModelBundle, build_model
from qgoft_bench.tasks import Task, build_task
from qgoft_bench.tasks.mmlu import MmluTask, _common_prefix
from qgoft_bench.train import provenance, run
from qgoft_bench.train.loop import evaluate, training_step
from qgoft_bench.train.optim import build_optimizer

# label -> the method group option (conf/method/<name>.yaml): experiment=paper/llama's sweep, full behind --full
METHODS = ["lora_r16", "oft_b16", "goft", "qgoft"]
BASELINE = "lora_r16"


class LoadOnce:
    """``build_model`` for ``run.build``: the first call builds (loads) the model; every call returns a bundle holding
    a deep copy of that pristine model, which stays untouched in ``self.bundle`` (the base model)."""

    def __init__(self) -> None:
        self.bundle: ModelBundle | None = None
        self.key: tuple | None = None
        self.load_s = 0.0

    def __call__(self, model_cfg: DictConfig, head: str, num_labels: int) -> ModelBundle:
        key = (model_cfg.name, model_cfg.init, head, num_labels)
        if self.bundle is None:
            started = time.perf_counter()
            self.bundle, self.key = build_model(model_cfg, head, num_labels), key
            self.load_s = time.perf_counter() - started
        elif key != self.key:
            raise ValueError(f"LoadOnce holds {self.key}, asked for {key}")
        pristine = self.bundle
        return ModelBundle(copy.deepcopy(pristine.model), copy.deepcopy(pristine.spec),
                           load_processor=lambda: pristine.processor, max_positions=pristine.max_positions)


class HarnessStep(Step):
    """``training_step.Step`` with the harness's optimizer and update: ``training_step``, the finite-loss check,
    ``clip_grad_norm_`` (``trainer.clip_grad``), ``build_optimizer``'s AdamW, ``method.after_step``, ``zero_grad``."""

    def __init__(self, model: nn.Module, method, batch: dict, task: Task, trainer: DictConfig,
                 head_names: set[str]) -> None:
        super().__init__(model, method, batch, task)
        self.optimizer = build_optimizer(model, method, head_names, trainer)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.clip, self.precision, self.updates = trainer.clip_grad, trainer.precision, 0

    def __call__(self) -> None:
        loss = training_step(self.model, self.method, self.task, [self.batch], self.device, self.precision)
        if not torch.isfinite(loss):
            raise DivergedError(f"the training loss is {loss.item()}")
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        self.method.after_step(self.updates, 1 << 30)
        self.optimizer.zero_grad(set_to_none=True)
        self.updates += 1


def anchor_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the anchors the harness's AdamW keeps for groups that decay toward their init (``decay_to: init``):
    memory beyond ``step_memory``'s 4 x trainable."""
    return sum(a.numel() * a.element_size() for group in optimizer.param_groups for a in group.get("anchors", ()))


def compose(args: argparse.Namespace, method: str) -> DictConfig:
    """The job's config: ``experiment=paper/llama`` (Table 2's methods, per-method lr and lambda, clip 1.0, no weight
    decay) on ``args.model`` with this benchmark's batch, data and MMLU subset."""
    return compose_config(["experiment=paper/llama", f"model={args.model}", f"method={method}", "seed=0",
                           f"data.instruct_path={Path(args.instruct_path).resolve()}",
                           f"data.mmlu_dir={Path(args.mmlu_dir).resolve()}", "trainer.device=cpu",
                           f"trainer.batch_size={args.batch}", "trainer.grad_accum=1",
                           f"trainer.max_seq_len={args.seq}", f"trainer.eval_batch_size={args.eval_batch}",
                           "eval.mmlu_scoring=harness", f"eval.mmlu_subset={args.mmlu_subset}",
                           f"eval.mmlu_max_len={args.mmlu_max_len}",
                           f"eval.mmlu_subjects={'[' + ','.join(args.mmlu_subjects) + ']' if args.mmlu_subjects else 'null'}"])


def mmlu_tasks(cfg: DictConfig, bundle: ModelBundle, shots: list[int]) -> dict[int, MmluTask]:
    """One ``MmluTask`` per shot count (the run's ``task.mmlu`` with ``shots=[k]``), read and encoded by the
    harness; prompts kept up to ``eval.mmlu_max_len`` tokens, clamped to the model's positions (the tiny LLaMA)."""
    base = OmegaConf.to_container(cfg.task.mmlu, resolve=True)
    if bundle.max_positions and base["max_len"] and base["max_len"] > bundle.max_positions:
        base["max_len"] = bundle.max_positions
    tasks = {}
    for k in shots:
        task = MmluTask(OmegaConf.create({**base, "shots": [k]}), cfg.data)
        task.read()
        task.encode(bundle.processor, run.batching(cfg, bundle))
        tasks[k] = task
    return tasks


def mmlu_tokens(task: MmluTask, k: int) -> dict[str, int]:
    """Questions, prompt tokens (what the evaluation reads) and tokens run through the model (each subject's shared
    prefix once, as ``mmlu.score`` runs it; padding not counted) of ``task``'s ``k``-shot prompts."""
    questions = prompt = forwarded = 0
    for prompts in task.prompts[k].values():
        n = sum(len(p) for p in prompts)
        common = _common_prefix(prompts) if len(prompts) > 1 else 0
        questions, prompt = questions + len(prompts), prompt + n
        forwarded += n - (len(prompts) - 1) * common if common > 0 else n
    return {"questions": questions, "prompt_tokens": prompt, "forwarded_tokens": forwarded,
            "max_prompt_tokens": max(len(p) for ps in task.prompts[k].values() for p in ps),
            "truncated": task.truncated[k]}


def pick_batch(task: Task, seed: int, how: str) -> dict:
    """A batch of the task's own seeded length-grouped loader: the first (``first``), or the first as wide as the
    widest (``full``: a batch of sequences cut at ``trainer.max_seq_len`` when the data has such)."""
    batches = list(task.train_batches(seed))
    if how == "first":
        return batches[0]
    widest = max(b["inputs"]["input_ids"].shape[1] for b in batches)
    return next(b for b in batches if b["inputs"]["input_ids"].shape[1] == widest
                and b["inputs"]["input_ids"].shape[0] == task.batching.batch_size)


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result) of ``fn()``. At one torch thread the CPU time is the work itself,
    what a descheduled process loses to the machine's other users left out (memory-bandwidth and cache contention
    stay in both)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def time_training(steps: dict[str, HarnessStep], repeats: int, warmup: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds per update of every step (``{"wall": {label: [...]}, "cpu": ...}``), round-robin, after
    ``warmup`` untimed updates each."""
    for _ in range(warmup):
        for label, step in steps.items():
            wall, cpu, _ = timed(step)
            print(f"  warm-up {label}: {wall:.1f} s (CPU {cpu:.1f} s)", flush=True)
    times: dict[str, dict[str, list[float]]] = {"wall": {label: [] for label in steps},
                                                "cpu": {label: [] for label in steps}}
    for r in range(repeats):
        for label, step in steps.items():
            wall, cpu, _ = timed(step)
            times["wall"][label].append(wall)
            times["cpu"][label].append(cpu)
        print(f"  repeat {r + 1}/{repeats}: " + ", ".join(f"{m} {t[-1]:.2f} s (CPU {times['cpu'][m][-1]:.2f})"
                                                          for m, t in times["wall"].items()), flush=True)
    return times


def time_eval(models: dict[str, nn.Module], tasks: dict[int, MmluTask], repeats: int) -> tuple[dict, dict]:
    """Wall and CPU seconds of each (model, shots) evaluation, round-robin over models, and the metrics of the last one; one
    untimed forward per model first (a short prompt) for lazy initialisation."""
    device = torch.device("cpu")
    first = next(iter(tasks.values()))
    prompt = next(iter(first.prompts[next(iter(first.prompts))].values()))[0][:32]
    with torch.no_grad():
        for model in models.values():
            model.eval()
            model(input_ids=torch.tensor([prompt]))
    times = {(name, k): {"wall": [], "cpu": []} for name in models for k in tasks}
    metrics = {}
    for r in range(repeats):
        for name, model in models.items():
            for k, task in tasks.items():
                wall, cpu, metrics[name, k] = timed(lambda model=model, task=task: evaluate(model, task, device,
                                                                                           "fp32"))
                times[name, k]["wall"].append(wall)
                times[name, k]["cpu"].append(cpu)
                print(f"  eval {r + 1}/{repeats} {name} {k}-shot: {wall:.1f} s (CPU {cpu:.1f} s)", flush=True)
    return times, metrics


def markdown(header: dict, train_rows: list[dict], eval_rows: list[dict]) -> str:
    m = header["machine"]
    lines = [(f"Causal LM throughput, {header['model']}, {m['cpu']} ({m['cpu_threads']} torch threads), torch "
             f"{m['torch']}, {m['date']}."), "", f"`{header['command']}`", "",
             (f"Training: one update (forward, response loss + regulariser, backward, clip, the harness's AdamW) on a "
             f"fixed Alpaca batch of {header['batch']['sequences']} sequences x {header['batch']['width']} tokens "
             f"({header['batch']['tokens']} non-padding tokens, {header['batch']['response_tokens']} response "
             f"tokens), median of {header['repeats']} interleaved updates after {header['warmup']} warm-up; "
             f"ratio = time / LoRA r=16's in the same run; ms/step and tokens/s are wall clock, CPU ms the process's "
             "CPU time (one torch thread: the work itself, without the time lost to the machine's other users). "
             "Memory as `training_step.py`: step MB = frozen weights + saved for backward + trainable state (4 x the "
             "trainable parameters)."), "",
             ("| method | trainable params | ms/step | train tokens/s | ratio vs LoRA | CPU ms/step | CPU ratio vs LoRA | "
              "saved for backward MB | trainable state MB | step memory MB |"),
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in train_rows:
        lines.append(f"| {r['method']} | {r['trainable_params']:,} | {r['time_ms']:.0f} | {r['tokens_per_s']:.0f} | "
                     f"{r['ratio_vs_lora']:.2f} | {r['cpu_ms']:.0f} | {r['cpu_ratio_vs_lora']:.2f} | "
                     f"{r['saved_mb']:.1f} | {r['state_mb']:.1f} | {r['peak_memory_mb']:.0f} |")
    if not eval_rows:
        return "\n".join(lines) + "\n"
    e = header["eval"]
    lines += ["", (f"MMLU evaluation (the harness scoring, a stratified subset of {e['subset']} test questions, seed "
              f"{e['subset_seed']}; prompts up to {e['max_len']} tokens; eval batch {e['batch']}; adapters "
              f"unmerged), median of {header['eval_repeats']} interleaved evaluation(s). prompt tok/s counts the "
              "prompts' tokens, run tok/s the tokens run through the model (each subject's shared prefix once)."), "",
              ("| model | shots | questions | prompt tokens | run tokens | s | questions/s | prompt tok/s | run tok/s | "
               "vs base | vs LoRA | CPU s | CPU vs base | CPU vs LoRA |"),
              "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in eval_rows:
        lines.append(f"| {r['model']} | {r['shots']} | {r['questions']} | {r['prompt_tokens']:,} | "
                     f"{r['forwarded_tokens']:,} | {r['time_s']:.1f} | {r['questions_per_s']:.2f} | "
                     f"{r['prompt_tokens_per_s']:.0f} | {r['forwarded_tokens_per_s']:.0f} | {r['ratio_vs_base']:.2f} | "
                     f"{r['ratio_vs_lora']:.2f} | {r['cpu_s']:.1f} | {r['cpu_ratio_vs_base']:.2f} | "
                     f"{r['cpu_ratio_vs_lora']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2_135m", help="a model config (tiny_llama for a smoke run)")
    parser.add_argument("--methods", nargs="+", default=METHODS, help="method configs; lora_r16 is the baseline")
    parser.add_argument("--full", action="store_true", help="also time full fine-tuning (not evaluated: = base)")
    parser.add_argument("--batch", type=int, default=4, help="sequences per training batch")
    parser.add_argument("--batch-pick", choices=["full", "first"], default="full",
                        help="full: the loader's first batch of full width (sequences cut at --seq); first: its first")
    parser.add_argument("--seq", type=int, default=256, help="trainer.max_seq_len of the training batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed training updates per method")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training updates per method first")
    parser.add_argument("--mmlu-subset", type=int, default=24, help="eval.mmlu_subset: questions scored")
    parser.add_argument("--mmlu-subjects", nargs="+", default=None,
                        help="eval.mmlu_subjects (default: all 57, about one question each: no shared prefix)")
    parser.add_argument("--mmlu-max-len", type=int, default=2048, help="eval.mmlu_max_len (the paper recipe's)")
    parser.add_argument("--shots", nargs="+", type=int, default=[0, 5])
    parser.add_argument("--eval-batch", type=int, default=16, help="trainer.eval_batch_size (the recipe's)")
    parser.add_argument("--eval-repeats", type=int, default=1, help="timed MMLU evaluations per model and shots")
    parser.add_argument("--no-eval", action="store_true", help="training only")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--instruct-path", default="../shared/data/alpaca/alpaca_en_demo.json")
    parser.add_argument("--mmlu-dir", default="../shared/data/mmlu")
    parser.add_argument("--out", default="results/perf/causal_lm")
    args = parser.parse_args()
    if BASELINE not in args.methods:
        parser.error(f"--methods must include the baseline {BASELINE}")
    torch.set_num_threads(args.threads)
    started_all = time.perf_counter()
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/causal_lm.py", *sys.argv[1:]])
    machine = {**provenance.hardware(torch.device("cpu")), "torch": torch.__version__,
               "date": datetime.now(UTC).date().isoformat(), "loadavg_start": os.getloadavg()}
    labels = [*args.methods, *(["full"] if args.full else [])]

    # build every method as a run does, the model loaded once; the task encoded once (one tokenizer)
    load_once, steps, counts, task, batch, cfg0, base = LoadOnce(), {}, {}, None, None, None, None
    with mock.patch.object(run, "build_model", load_once):
        for label in labels:
            cfg = compose(args, label)
            if task is None:
                cfg0, task = cfg, build_task(cfg.task, cfg.data)
                task.read()
            torch.manual_seed(0)
            model, method, bundle = run.build(cfg, task)
            print(f"built {label} ({'loaded' if base is None else 'copied'}, model load {load_once.load_s:.0f} s)",
                  flush=True)
            if batch is None:
                base = load_once.bundle
                task.encode(bundle.processor, run.batching(cfg, bundle))
                batch = pick_batch(task, cfg.seed, args.batch_pick)
            if label != "full":
                move_off_init(model)
            model.train()
            head_names = {n for n, _ in model.named_parameters() if in_head(n, bundle.spec.head_modules)}
            steps[label] = HarnessStep(model, method, batch, task, cfg.trainer, head_names)
            counts[label] = method.counts(model, bundle.spec)
    tokens = int(batch["inputs"]["attention_mask"].sum())
    batch_info = {"sequences": int(batch["inputs"]["input_ids"].shape[0]),
                  "width": int(batch["inputs"]["input_ids"].shape[1]), "tokens": tokens,
                  "response_tokens": task.count(batch["targets"]), "max_seq_len": args.seq,
                  "encoding": task.encoding_report()}
    print(f"batch: {batch_info}", flush=True)

    times = time_training(steps, args.repeats, args.warmup)
    load_after_training = os.getloadavg()
    train_rows = []
    for label in labels:
        median = statistics.median(times["wall"][label])
        train_rows.append({"method": label, "trainable_params": counts[label]["trainable_params"],
                           "counts": counts[label], "lr": steps[label].optimizer.defaults["lr"],
                           "time_ms": 1000 * median, "time_ms_all": [round(1000 * t, 1) for t in times["wall"][label]],
                           "cpu_ms": 1000 * statistics.median(times["cpu"][label]),
                           "cpu_ms_all": [round(1000 * t, 1) for t in times["cpu"][label]],
                           "tokens_per_s": tokens / median, "response_tokens_per_s": batch_info["response_tokens"] / median,
                           **step_memory(steps[label]), "anchor_mb": anchor_bytes(steps[label].optimizer) / 2**20,
                           "repeats": args.repeats})
    lora = next(r for r in train_rows if r["method"] == BASELINE)
    for row in train_rows:
        row["ratio_vs_lora"] = row["time_ms"] / lora["time_ms"]
        row["cpu_ratio_vs_lora"] = row["cpu_ms"] / lora["cpu_ms"]
        row["memory_vs_lora"] = row["peak_memory_mb"] / lora["peak_memory_mb"]

    eval_rows, eval_info = [], {}
    if not args.no_eval:
        tasks = mmlu_tasks(cfg0, base, args.shots)
        first = tasks[args.shots[0]]
        eval_info = {"subset": first.subset, "subset_seed": first.subset_seed, "max_len": first.max_len,
                     "batch": first.batch_size, "scoring": first.scoring, "subjects": len(first.test)}
        models = {"base": base.model, **{label: steps[label].model for label in args.methods}}
        eval_times, metrics = time_eval(models, tasks, args.eval_repeats)
        for (name, k), seconds in eval_times.items():
            t = statistics.median(seconds["wall"])
            n = mmlu_tokens(tasks[k], k)
            eval_rows.append({"model": name, "shots": k, **n, "time_s": t,
                              "time_s_all": [round(s, 2) for s in seconds["wall"]],
                              "cpu_s": statistics.median(seconds["cpu"]),
                              "cpu_s_all": [round(s, 2) for s in seconds["cpu"]],
                              "questions_per_s": n["questions"] / t, "prompt_tokens_per_s": n["prompt_tokens"] / t,
                              "forwarded_tokens_per_s": n["forwarded_tokens"] / t,
                              "accuracy": metrics[name, k][f"mmlu_{k}shot_avg"], "repeats": args.eval_repeats})
        for row in eval_rows:
            ref = {m: next(r for r in eval_rows if r["model"] == m and r["shots"] == row["shots"])
                   for m in ("base", BASELINE)}
            row["ratio_vs_base"] = row["time_s"] / ref["base"]["time_s"]
            row["ratio_vs_lora"] = row["time_s"] / ref[BASELINE]["time_s"]
            row["cpu_ratio_vs_base"] = row["cpu_s"] / ref["base"]["cpu_s"]
            row["cpu_ratio_vs_lora"] = row["cpu_s"] / ref[BASELINE]["cpu_s"]

    header = {"command": command, "model": args.model, "machine": machine, "threads": args.threads,
              "batch": batch_info, "repeats": args.repeats, "warmup": args.warmup, "eval_repeats": args.eval_repeats,
              "eval": eval_info, "model_load_s": load_once.load_s, "wall_s": time.perf_counter() - started_all,
              "loadavg": {"start": machine.pop("loadavg_start"), "after_training": load_after_training,
                          "end": os.getloadavg()},
              "notes": [("adapters moved off their init by 0.01 N(0, 1) and trained a few updates: MMLU accuracies "
                        "are a sanity check, not results"),
                        ("state_mb counts 4 x the trainable parameters (training_step.py's definition); methods "
                        "whose decay pulls toward the init also keep anchor_mb of anchors in the optimizer")]}
    md = markdown(header, train_rows, eval_rows)
    loads = header["loadavg"]
    md += (f"\nModel loaded once in {load_once.load_s:.0f} s; the whole benchmark took {header['wall_s'] / 60:.1f} min. "
           "Load average (1, 5, 15 min) of the machine, shared with other jobs: "
           + "; ".join(f"{when.replace('_', ' ')} {', '.join(f'{x:.1f}' for x in v)}" for when, v in loads.items())
           + ".\n")
    print(md, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**header, "train": train_rows, "eval_rows": eval_rows},
                                                   indent=1) + "\n")
    out.with_suffix(".md").write_text(md)


if __name__ == "__main__":
    main()
