"""One run: build task, model and method, train, evaluate, and write one result record (or print the dry-run counts).

The order, each step before the ones that need it so that bad input fails before any training:

    validate(cfg); check_results_dir(...)        # the config and the results folder, before anything is built
    task = build_task(...); task.read()          # every split read and checked; the data fingerprinted
    (skip when a final record for the same config and data exists)
    model, method = build(...)                   # the task's head on the model, method.apply, head trainable
    task.encode(processor, batching)             # max_seq_len clamped to what the model takes
    method.prepare(model, batches, loss_fn)      # data-aware set-up (SAM's scores, burn-ins)
    params = method.counts(model, spec)
    train(...) -> per-epoch metrics; best epoch by the headline metric in its direction, whose weights the
        model ends with (resumed from the run's checkpoint, <record stem>.checkpoint.pt, when an earlier attempt
        left one; deleted once the record is final)
    (eval_only=true: no prepare, no training; one evaluation of the model as built, epoch 0, no train metrics;
    with adapter=FILE, prepare as its run did, then the file's trained values loaded, then that evaluation)
    that evaluation's task.artifacts() beside the record (<record stem>.<suffix>.json)
    eval.vicuna_answers: the model's answers to the Vicuna questions (read with the task's data), <record
    stem>.vicuna.jsonl (train/vicuna.py); then the record

Under torchrun (train/distributed.py) every rank runs these steps; rank 0 alone checks the folder, claims, decides
skip/done for all, and writes the record and the files beside it; the other ranks return after training.
"""

import json
import logging
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import set_seed

from qgoft_bench.errors import ConfigError, DivergedError, QgoftError, RecordWriteError, Terminated
from qgoft_bench.files import sha256_file
from qgoft_bench.methods import Method, build_method
from qgoft_bench.methods.params import in_head
from qgoft_bench.methods.state import adapter_origin, load_adapter, save_adapter
from qgoft_bench.models import ModelBundle, build_model
from qgoft_bench.records import (
    FINAL,
    SCHEMA_VERSION,
    claim,
    is_done,
    read_record,
    record_path_for,
    remove_stale_temps,
    run_id,
    store_record,
    to_json,
    write_record,
)
from qgoft_bench.tasks import Batching, Task, best_epoch, build_task, fingerprint
from qgoft_bench.tasks.protocol import DRAWN
from qgoft_bench.tasks.vicuna import read_questions
from qgoft_bench.train import distributed, provenance
from qgoft_bench.train.checkpoint import Checkpointer
from qgoft_bench.train.loop import evaluate_once, task_loss, train
from qgoft_bench.train.preflight import check_results_dir, validate
from qgoft_bench.train.signals import deferred_signals
from qgoft_bench.train.tracking import make_tracker
from qgoft_bench.train.vicuna import export_answers

log = logging.getLogger(__name__)

TOKENIZER_NO_LIMIT = 10**6  # transformers' model_max_length for tokenizers that declare none is ~1e30


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build(cfg: DictConfig, task: Task | None = None) -> tuple[torch.nn.Module, Method, ModelBundle]:
    """The model with ``task``'s head (built from ``cfg.task`` when None), adapted by the method, with its head
    trainable; returns (adapted model, method, bundle)."""
    task = task or build_task(cfg.task, cfg.data)
    bundle = build_model(cfg.model, task.head, task.num_labels)
    method = build_method(cfg.method)
    model = method.apply(bundle.model, bundle.spec)
    if bundle.spec.train_head:  # the task head always trains (a causal LM's pretrained lm_head does not)
        for name, param in model.named_parameters():
            if in_head(name, bundle.spec.head_modules):
                param.requires_grad_(True)
    return model, method, bundle


def batching(cfg: DictConfig, bundle: ModelBundle) -> Batching:
    """Batch sizes from ``cfg.trainer``; ``max_seq_len`` clamped to the longest input the model and its tokenizer
    take (as the reference GLUE scripts do), with a warning."""
    trainer = cfg.trainer
    limits = [bundle.max_positions, getattr(bundle.processor, "model_max_length", None)]
    limits = [int(n) for n in limits if n and n < TOKENIZER_NO_LIMIT]
    max_len = min([trainer.max_seq_len, *limits])
    if max_len < trainer.max_seq_len:
        log.warning("trainer.max_seq_len=%d is more than %s takes: clamped to %d", trainer.max_seq_len,
                    cfg.model.name, max_len)
    return Batching(trainer.batch_size, trainer.eval_batch_size, max_len, trainer.num_workers)


def run_experiment(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg`` end to end and return its record. Skips when a record with a final status (completed, diverged)
    exists for the same config and data (returning it), and when another worker holds the run's claim
    (``records.claim``; returning ``{"status": "running", "claim": the holder}``). Raises ``ConfigError`` before
    anything is built for a bad config or an unwritable results folder; every run that gets further leaves a record
    (``store_record``: never over a better one), also when it fails, diverges or is interrupted."""
    validate(cfg)
    if cfg.dry_run:
        return dry_run(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    rid, path = run_id(config), record_path_for(config)
    if distributed.is_main():  # under torchrun rank 0 writes, the other ranks nothing
        check_results_dir(cfg.results_dir, path.parent)  # the record's own folder, before anything is trained
    device = distributed.init(pick_device(cfg.trainer.device))  # torchrun: join the other ranks, cuda:LOCAL_RANK

    set_seed(cfg.seed)
    started = time.perf_counter()
    record: dict[str, Any] | None = {
        "schema_version": SCHEMA_VERSION, "run_id": rid, "status": "failed", "error": None,
        "task": {"name": cfg.task.name, "family": cfg.task.family, "metric": cfg.task.headline_metric},
        "model": cfg.model.name, "method": {"name": cfg.method.name, "label": cfg.method.label}, "seed": cfg.seed,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    tracker, checkpointer = None, None
    progress: list[dict] = []  # the evaluations train() made: kept in the record of a run that stops early
    with ExitStack() as claimed:  # the claim is released after the record is written: no moment looks free
        try:
            task = build_task(cfg.task, cfg.data)
            record["task"].update(metric=task.headline, higher_is_better=task.higher_is_better, protocol=task.protocol)
            if task.protocol.startswith(DRAWN):  # easy to get by forgetting the folder: say so at the start
                log.warning("task.protocol=fu2023 without data.fu2023_dir: the 90/10 split is drawn here (%s), not "
                            "read from Fu et al.'s split files; set data.fu2023_dir=DIR (or FU2023_DIR) for theirs",
                            task.protocol)
            task.read()  # bad data fails here, before a model is built
            record["data"] = fingerprint(task.sources)
            adapter = [Path(cfg.adapter).expanduser()] if cfg.adapter else []  # its contents are in the run id
            questions = read_questions(cfg.data.vicuna_dir) if cfg.eval.vicuna_answers else []
            holder = claimed.enter_context(claim(path)) if distributed.is_main() else None  # rank 0 claims for all
            # first the claim: a run another worker just finished is done below; every rank skips as rank 0 does
            done = holder is None and not cfg.overwrite and is_done(path, record["data"]["fingerprint"])
            holder, done = distributed.broadcast((holder, done))
            if holder is None and distributed.is_main() and (stale := remove_stale_temps(path)):
                log.info("removed %d temp file(s) a killed write left: %s", len(stale), ", ".join(map(str, stale)))
            if holder is not None:  # another worker trains it now
                log.info("skip: %s is being run by %s (pid %s, since %s)", path, holder.get("host"),
                         holder.get("pid"), holder.get("since"))
                record = None
                return {"status": "running", "claim": holder}
            if done:
                log.info("skip: %s is done (overwrite=true runs it again)", path)
                leftover = path.with_suffix(".checkpoint.pt")  # of an interrupted overwrite=true attempt, which a
                if distributed.is_main() and leftover.exists():  # done run never resumes (overwrite starts over)
                    leftover.unlink()
                    log.info("removed %s: its run is done, so nothing resumes from it", leftover)
                if cfg.save_adapter and not cfg.eval_only and not path.with_suffix(".adapter.safetensors").exists():
                    log.warning("%s has no saved adapter: overwrite=true runs it again (training too) to write one",
                                path)
                if questions and not path.with_suffix(".vicuna.jsonl").exists():
                    log.warning("%s has no Vicuna answers: overwrite=true runs it again (training too) to write "
                                "them", path)
                record = None  # nothing new to store
                return read_record(path)

            model, method, bundle = build(cfg, task)
            provenance.reset_peak_memory(device)
            model.to(device)
            rotation = provenance.cpu_rotation(model, device)  # builds the CPU kernel now if it must: not timed
            record["batching"] = asdict(batches := batching(cfg, bundle))
            task.encode(bundle.processor, batches)
            if encoding := task.encoding_report():  # truncated or dropped examples
                record["data"]["encoding"] = encoding
            if world := distributed.describe():  # how many processes trained it: not part of the run's identity
                record["distributed"] = world
            if not cfg.eval_only or adapter:  # eval_only evaluates the model as built: no data-aware set-up either
                loss_fn = partial(task_loss, model, task, device=device, precision=cfg.trainer.precision)
                model.train()  # prepare sees the model as training will (dropout on; from_pretrained: eval mode)
                # under torchrun: on every rank, on all the data; wrapping the model then copies rank 0's state.
                # With a saved adapter the set-up is redone as its run did it (deterministic from the seed: a
                # sparse method's mask, which the file's values fill), and the trained values are loaded over it
                if type(method).prepare is not Method.prepare:  # it does something: say so, it can take minutes
                    log.info("method %s: data-aware set-up before the first update (method.prepare)", cfg.method.label)
                started_prepare = time.perf_counter()
                method.prepare(model, task.train_batches(cfg.seed), loss_fn)
                record["prepare_time_s"] = time.perf_counter() - started_prepare
            if not cfg.eval_only:
                train_in_float32(model, cfg.method.label)
            if adapter:  # validate() refused a file of another run; ConfigError for one damaged since, or not fitting
                origin = load_adapter(model, adapter[0])
                if origin is None:
                    log.warning("adapter file %s names no run (written before files carried their provenance): "
                                "scored as this config builds the model, unchecked", adapter[0])
                record["adapter"] = {"path": str(adapter[0].resolve()), "sha256": sha256_file(adapter[0]),
                                     "run_id": origin and origin["run_id"]}
            record["params"] = method.counts(model, bundle.spec)
            record["weight_dtypes"] = provenance.weight_dtypes(model)  # model.dtype null: the checkpoint's own
            head_names = {n for n, _ in model.named_parameters() if in_head(n, bundle.spec.head_modules)}
            if distributed.is_main():
                tracker = make_tracker(cfg, f"{cfg.task.name}-{cfg.method.label}-s{cfg.seed}", path)
            timer = time.perf_counter()
            if cfg.eval_only:
                result = evaluate_once(model, task, device, cfg.trainer.precision, tracker)
                timing = {"eval_time_s": time.perf_counter() - timer}
            else:
                # overwrite=true runs it again from scratch, resuming only what an overwrite=true attempt of it left
                # (an earlier attempt's checkpoint is of the run it replaces; the same command resumes its own)
                identity = {"run_id": rid, "data": record["data"]["fingerprint"]} | (
                    {"overwrite": True} if cfg.overwrite else {})
                checkpointer = Checkpointer(path.with_suffix(".checkpoint.pt"), identity, provenance.git_revision())
                result = train(model, method, task, head_names, cfg.trainer, cfg.seed, device, tracker, checkpointer,
                               progress)
                timing = {"train_time_s": result.train_time_s}
                if result.resumed_from:
                    record.update(resumed_from=result.resumed_from, earlier_git=result.earlier_git)
            if not distributed.is_main():  # rank 0 holds the same weights and metrics, and writes them
                return {"status": "completed", "rank": distributed.rank()}
            best = best_epoch(result.epochs, task.headline, task.higher_is_better)
            for suffix, content in result.artifacts[result.epochs.index(best)].items():
                write_record(path.with_suffix(f".{suffix}.json"), content)  # atomic, strict JSON, like a record
            if questions:
                record["vicuna"] = export_answers(model, task, bundle.processor, questions,
                                                  path.with_suffix(".vicuna.jsonl"),
                                                  f"{cfg.model.name}-{cfg.method.label}", rid,
                                                  cfg.eval.vicuna_max_new_tokens, batches, device,
                                                  cfg.trainer.precision)
            record.update(method.report(model))
            record.update(status="completed", metrics={"epochs": result.epochs, "best": _flat(best),
                                                        "last": _flat(result.epochs[-1])},
                          **timing, peak_memory_mb=provenance.peak_memory_mb(device),
                          hardware=provenance.hardware(device, rotation))
            if cfg.save_adapter and not cfg.eval_only:  # an evaluation trains nothing to save
                file = path.with_suffix(".adapter.safetensors")
                record["saved_adapter"] = {"file": file.name, "step": best["step"],  # train() left the best's weights
                                           "sha256": save_adapter(model, file, adapter_origin(config, rid))}
        except BaseException as err:  # recorded, then raised again
            if record is not None:
                record.update(status=status_of(err), error=describe(err))
                if progress:  # how far it got (a diverged run's checkpoint is deleted; an interrupted one has them)
                    record["metrics"] = {"epochs": progress}
            raise
        finally:
            if tracker:
                tracker.finish()
            if record is not None and distributed.is_main():
                with deferred_signals():  # a second Ctrl-C or SIGTERM waits until the record is stored
                    record.update(wall_time_s=time.perf_counter() - started, config=config,
                                  versions=provenance.versions(), git=provenance.git_revision())
                    save(path, record)
                    if checkpointer and record["status"] in FINAL:  # nothing left to resume
                        checkpointer.delete()
    return record


def train_in_float32(model: torch.nn.Module, method: str) -> None:
    """Mixed precision's master weights: every trainable parameter becomes float32, whatever ``model.dtype`` loaded
    (a half-precision head or bias under AdamW: NaN at the second update in float16, updates below bfloat16's step
    lost). Raises ``ConfigError`` when a layer would then hold float32 and half-precision weights together (BitFit's
    biases and LayerNorm gains in frozen layers), which layer norm cannot run."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    for name, module in model.named_modules():
        if len({p.dtype for p in module.parameters(recurse=False)}) > 1:
            raise ConfigError(f"method {method} trains part of the frozen layer {name} (model.dtype keeps its other "
                              "weights in half precision, what trains is float32): use model.dtype=float32 (or null)")


def dry_run(cfg: DictConfig) -> dict[str, Any]:
    """Build task head, model and method (no data, no training), print the counts as one JSON line, return them."""
    model, method, bundle = build(cfg)
    counts = method.counts(model, bundle.spec)
    print(json.dumps({"model": cfg.model.name, "method": cfg.method.label, **counts}), flush=True)
    return {"params": counts}


def status_of(err: BaseException) -> str:
    """The record status an exception ends a run with. ``SystemExit`` in the middle of a run is a signal handler's:
    submitit's, when SLURM preempts the job or its time runs out (it requeues the job, then exits)."""
    if isinstance(err, KeyboardInterrupt | SystemExit):
        return "interrupted"
    return "diverged" if isinstance(err, DivergedError) else "failed"


def describe(err: BaseException) -> str:
    """The record's one-line error."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted (SIGTERM)" if isinstance(err, Terminated) else "interrupted (Ctrl-C)"
    if isinstance(err, SystemExit):
        return f"interrupted (exit {err.code}: preempted or out of time)"
    if isinstance(err, QgoftError):
        return str(err)
    return f"{type(err).__name__}: {err}".splitlines()[0]


def save(path: Path, record: dict[str, Any]) -> Path:
    """``store_record``; when even that fails (disk full, folder gone), the record's JSON goes to stderr, so that
    nothing is lost, and ``RecordWriteError`` says so."""
    try:
        written = store_record(path, record)
    except OSError as err:
        print(f"the record of this run follows, as it could not be written to {path}:", file=sys.stderr)
        sys.stderr.write(to_json(record))
        raise RecordWriteError(f"the record of this run could not be written to {path} ({err.strerror or err}); "
                               "its JSON is on stderr") from None
    if written == path:
        log.info("%s: %s", record["status"], path)
    else:
        log.warning("%s: kept as an attempt (%s), beside the better record %s", record["status"], written, path)
    return written


def _flat(epoch: dict) -> dict:
    """An epoch entry flattened for ``metrics.best``/``last``: {"epoch", "step", metric: value, ...}."""
    return {"epoch": epoch["epoch"], "step": epoch["step"], **epoch["eval"]}
