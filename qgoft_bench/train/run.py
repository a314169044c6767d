"""One run: build model and method, train, evaluate, and write one result record (or print the dry-run counts)."""

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import set_seed

from qgoft_bench.data import load_task
from qgoft_bench.errors import QgoftError
from qgoft_bench.methods import build_method
from qgoft_bench.methods.params import count_parameters, in_head
from qgoft_bench.models import build_model
from qgoft_bench.report.records import SCHEMA_VERSION, is_done, read_record, record_path, run_id, write_record
from qgoft_bench.train import provenance
from qgoft_bench.train.loop import best_and_last, train
from qgoft_bench.train.tracking import make_tracker

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build(cfg: DictConfig):
    """Model, method and the adapted model with its head trainable; returns (adapted model, method, spec)."""
    bundle = build_model(cfg.model, cfg.task)
    method = build_method(cfg.method)
    model = method.apply(bundle.model, bundle.spec)
    if cfg.model.get("train_head", True):  # the task head always trains (a causal LM's lm_head does not)
        for name, param in model.named_parameters():
            if in_head(name, bundle.spec.head_modules):
                param.requires_grad_(True)
    return model, method, bundle


def run_experiment(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg`` end to end and return its record; skip (and return the existing record) when already done."""
    config = OmegaConf.to_container(cfg, resolve=True)
    rid = run_id(config)
    path = record_path(cfg.results_dir, cfg.task.name, cfg.model.name, cfg.method.label, cfg.seed, rid)
    if not cfg.dry_run and not cfg.overwrite and is_done(path):
        log.info("skip: %s is done (overwrite=true runs it again)", path)
        return read_record(path)

    set_seed(cfg.seed)
    started = time.perf_counter()
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "run_id": rid, "status": "failed", "error": None,
        "task": {"name": cfg.task.name, "family": cfg.task.family, "metric": cfg.task.metric},
        "model": cfg.model.name, "method": {"name": cfg.method.name, "label": cfg.method.label}, "seed": cfg.seed,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        model, method, bundle = build(cfg)
        record["params"] = {**count_parameters(model, bundle.spec.head_modules), **method.extra_counts()}
        if cfg.dry_run:
            print(json.dumps({"model": cfg.model.name, "method": cfg.method.label, **record["params"]}), flush=True)
            return record

        device = pick_device(cfg.trainer.device)
        provenance.reset_peak_memory(device)
        model.to(device)
        data = load_task(cfg, bundle)
        head_names = {n for n, _ in model.named_parameters() if in_head(n, bundle.spec.head_modules)}
        tracker = make_tracker(cfg, f"{cfg.task.name}-{cfg.method.label}-s{cfg.seed}")
        result = train(model, method, data, head_names, cfg, device, tracker)
        if tracker:
            tracker.finish()
        best, last = best_and_last(result.epochs, cfg.task.metric)
        record.update(status="completed", metrics={"epochs": result.epochs, "best": best, "last": last},
                      train_time_s=result.train_time_s, peak_memory_mb=provenance.peak_memory_mb(device),
                      hardware=provenance.hardware(device))
    except BaseException as err:  # recorded, then raised again
        if isinstance(err, KeyboardInterrupt):
            record["error"] = "interrupted"
        elif isinstance(err, QgoftError):
            record["error"] = str(err)
        else:
            record["error"] = f"{type(err).__name__}: {err}".splitlines()[0]
        raise
    finally:
        # a failed or interrupted run leaves a record too, so a sweep shows what broke; re-runs retry it
        if not cfg.dry_run:
            record.update(wall_time_s=time.perf_counter() - started, config=config, versions=provenance.versions(),
                          git=provenance.git_revision())
            write_record(path, record)
            log.info("%s: %s", record["status"], path)
    return record
