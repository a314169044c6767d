"""The one validation pass every job goes through before anything is built or trained.

``validate(cfg)`` checks, on the resolved config of one job, what Hydra's typed composition cannot: the trainer's
ranges and choices (``config.TrainerConfig``), the plain top-level settings, the model source, the hardware, the
task's and the method's own configs (their constructors, which read no data and load no weights) and whether the
model can carry the task's head. ``check_results_dir`` makes sure a record can be written at all. The CLI runs both
on every job of a sweep before the first one starts; ``run_experiment`` runs them too, for callers in Python. A
failure is one ``ConfigError`` naming the key, the value and what is valid.
"""

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from qgoft_bench.config import TrainerConfig, check_seed, check_sparse_budget
from qgoft_bench.errors import ConfigError, ModelSourceError
from qgoft_bench.methods import build_method
from qgoft_bench.methods.state import check_origin, read_provenance
from qgoft_bench.models import DTYPES, build_model, check_head, check_source
from qgoft_bench.records import check_writable
from qgoft_bench.rotation import cpu_kernel
from qgoft_bench.tasks import Batching, Task, build_task
from qgoft_bench.tasks.instruct import InstructTask
from qgoft_bench.tasks.protocol import fu2023_files
from qgoft_bench.tasks.vicuna import question_file
from qgoft_bench.train import distributed

INITS = ("pretrained", "random", "meta")


def validate(cfg: DictConfig) -> None:
    """Check one job's config; raise ``ConfigError`` (one line) at the first problem."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot resolve the config ({one_line(err)}): a recipe value refers to something this "
                          "combination lacks; set that value on the command line") from None
    try:
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainerConfig), resolved["trainer"]))
    except OmegaConfBaseException as err:
        raise ConfigError(f"bad trainer setting: {one_line(err)}") from None
    for key in ("dry_run", "overwrite", "save_adapter", "eval_only"):
        if not isinstance(resolved[key], bool):
            raise ConfigError(f"{key}={resolved[key]!r} must be true or false")
    _validate_adapter(resolved)
    cpu_kernel.requested()  # QGOFT_BENCH_CPU_ROTATION, checked before any job
    check_seed(resolved["seed"])
    check_sparse_budget(resolved.get("sparse_budget"))
    if not isinstance(resolved["results_dir"], str) or not resolved["results_dir"].strip():
        raise ConfigError(f"results_dir={resolved['results_dir']!r} must name a folder")
    _validate_model(resolved["model"], resolved["trainer"]["device"], resolved["trainer"]["precision"],
                    half=_half_weights(resolved))
    meta = resolved["model"].get("init") == "meta"
    if meta and not resolved["dry_run"]:
        raise ConfigError("model.init=meta builds the architecture without weights, which only a dry run can use: add "
                          "dry_run=true (parameter counts), or use model.init=random (random weights) or pretrained")
    tracker = resolved["tracker"]["name"]
    if tracker in ("wandb", "tensorboard") and importlib.util.find_spec(tracker) is None:
        raise ConfigError(f"tracker={tracker} needs {tracker}: pip install 'qgoft-bench[{tracker}]'")

    task = build_task(cfg.task, cfg.data)
    if not task.has_train_split and not resolved["eval_only"]:
        raise ConfigError(f"task {task.name} is an evaluation only (no training split): add eval_only=true")
    try:
        check_head(cfg.model, task.head)
    except ConfigError as err:
        raise ConfigError(f"task {task.name}: {err}") from None
    try:
        # the weights and tokenizer are there: a sweep stops here, not with a failed record per job
        check_source(cfg.model, tokenizer=not resolved["dry_run"])
    except ModelSourceError as err:
        raise ConfigError(str(err)) from None
    trainer = cfg.trainer
    if trainer.batch_size < distributed.world_size():
        raise ConfigError(f"trainer.batch_size={trainer.batch_size} is the global batch, split across torchrun's "
                          f"{distributed.world_size()} processes: set it to at least {distributed.world_size()}")
    task.check_batching(Batching(trainer.batch_size, trainer.eval_batch_size, trainer.max_seq_len))
    if not resolved["dry_run"]:  # a dry run counts parameters and reads no data
        _validate_data(task, resolved["data"])
    _validate_vicuna(task, resolved)
    method = build_method(cfg.method)
    if method.needs_weights and meta:
        raise ConfigError(f"method {cfg.method.label} {method.needs_weights}, which model.init=meta does not have: use "
                          "model.init=random (architecture with random weights) or pretrained")
    if method.needs_float32 and _half_weights(resolved) and not resolved["eval_only"]:  # an evaluation trains none
        raise ConfigError(f"method {cfg.method.label} needs model.dtype=float32 (now {resolved['model']['dtype']}): "
                          f"{method.needs_float32}")


def _validate_adapter(resolved: dict[str, Any]) -> None:
    """``adapter``: a readable file save_adapter wrote, scored with eval_only, by the settings of the run that wrote
    it (``methods.state.check_origin``), so that a file of another run is refused before any job starts."""
    adapter = resolved["adapter"]
    if adapter is None:
        return
    if not isinstance(adapter, str) or not adapter.strip():
        raise ConfigError(f"adapter={adapter!r} must be the path of a file save_adapter=true wrote, or null")
    if not resolved["eval_only"]:
        raise ConfigError(f"adapter={adapter} scores a trained adapter: add eval_only=true (training does not start "
                          "from a saved adapter)")
    file = Path(adapter).expanduser()
    if file.is_dir():
        raise ConfigError(f"adapter={adapter} is a folder: name the file, <record stem>.adapter.safetensors")
    if not file.is_file():
        raise ConfigError(f"adapter={adapter}: no such file; a run with save_adapter=true writes "
                          "<record stem>.adapter.safetensors beside its record")
    if origin := read_provenance(file):
        check_origin(origin, resolved, adapter)


def _validate_data(task: Task, data: dict[str, Any]) -> None:
    """The data a job reads is there: Fu et al.'s split files of the task when ``data.fu2023_dir`` is set (then the
    family's folder is not read), else the family's folder or file (``task.data_dir_key``), unless the hub serves
    it. Raises ``ConfigError`` naming the setting and the fix."""
    if task.protocol == "fu2023":  # on their files (protocol_of: a drawn split is another protocol)
        files = fu2023_files(task.cfg, task.data)
        if missing := [str(path) for path in files.values() if not path.is_file()]:
            raise ConfigError(f"data.fu2023_dir={data['fu2023_dir']} lacks {', '.join(missing)}: point it (or "
                              "FU2023_DIR) at Fu et al.'s split files (<task>/{train,val,test}.jsonl)")
        return
    folder = data.get(task.data_dir_key)
    if folder is None:
        if not task.from_hub:
            what = "file: set data.{}=FILE" if task.data_is_file else "folder: set data.{}=DIR"
            raise ConfigError(f"task {task.name} reads a local {what.format(task.data_dir_key)} (or "
                              f"{task.data_dir_key.upper()})")
        return
    if task.data_is_file:
        if not Path(str(folder)).expanduser().is_file():
            raise ConfigError(f"data.{task.data_dir_key}={folder} is not a file: point it (or "
                              f"{task.data_dir_key.upper()}) at the data file")
        return
    if not Path(str(folder)).expanduser().is_dir():
        raise ConfigError(f"data.{task.data_dir_key}={folder} is not a folder: point it (or "
                          f"{task.data_dir_key.upper()}) at the data"
                          + (", or unset it to use the hub" if task.from_hub else ""))


def _validate_vicuna(task: Task, resolved: dict[str, Any]) -> None:
    """``eval.vicuna_answers``: true or false; when true, an instruction task (its prompt template answers), a
    positive ``eval.vicuna_max_new_tokens`` and a question file in ``data.vicuna_dir`` (its lines are checked when
    the run reads its data, before the model is built)."""
    settings = resolved["eval"]
    if not isinstance(settings["vicuna_answers"], bool):
        raise ConfigError(f"eval.vicuna_answers={settings['vicuna_answers']!r} must be true or false")
    if not settings["vicuna_answers"]:
        return
    if not isinstance(task, InstructTask):
        raise ConfigError(f"eval.vicuna_answers=true answers with an instruction task's prompt template, and task "
                          f"{task.name} has none: use task=instruct/alpaca or task=instruct/alpaca_mmlu")
    tokens = settings["vicuna_max_new_tokens"]
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ConfigError(f"eval.vicuna_max_new_tokens={tokens!r} must be a positive number of tokens")
    folder = resolved["data"]["vicuna_dir"]
    if folder is None or question_file(folder) is None:
        raise ConfigError(f"eval.vicuna_answers=true reads the Vicuna questions: set data.vicuna_dir=DIR (or "
                          f"VICUNA_DIR) to the folder holding vicuna_bench/question.jsonl (now {folder})")


def _half_weights(resolved: dict[str, Any]) -> bool:
    """Whether the run computes with weights loaded in half precision (a dry run, or a meta model, only counts)."""
    return (resolved["model"].get("dtype") in ("bfloat16", "float16") and not resolved["dry_run"]
            and resolved["model"].get("init") != "meta")


def _validate_model(model: dict[str, Any], device: str, precision: str, half: bool) -> None:
    init = model.get("init", "pretrained")
    if init not in INITS:
        raise ConfigError(f"model.init={init!r} is not one of {', '.join(INITS)}")
    if init != "pretrained" and model.get("path"):
        # a Hugging Face folder's config.json is the architecture of random and meta init; nothing else reads it
        if model.get("kind") != "hf" or model.get("config") is not None:
            raise ConfigError(f"model.path={model['path']} is ignored with model.init={init} (weights are not "
                              "loaded): drop model.path or set model.init=pretrained")
        if not (Path(str(model["path"])).expanduser() / "config.json").is_file():
            raise ConfigError(f"model.path={model['path']} has no config.json, which model.init={init} takes the "
                              "architecture from: point it at a Hugging Face model folder")
    dtype = model.get("dtype")
    if dtype is not None and (not isinstance(dtype, str) or dtype not in DTYPES):
        raise ConfigError(f"model.dtype={dtype!r} is not one of {', '.join(DTYPES)}, or null for the checkpoint's "
                          "own")
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if half and dtype == "float16" and not cuda:  # CPU autocast is bf16 only: float16 layer norms meet float32 inputs
        raise ConfigError("model.dtype=float16 runs on CUDA only: use model.dtype=bfloat16 (with trainer.precision=bf16)"
                          " or float32 on the CPU")
    if half and not (precision == "bf16" or (precision == "auto" and cuda)):
        raise ConfigError(f"model.dtype={dtype} runs under bf16 autocast, and trainer.precision={precision} has none "
                          "here: set trainer.precision=bf16 (auto is bf16 on CUDA only), or model.dtype=float32")
    dropout = model.get("classifier_dropout")
    if dropout is not None and (isinstance(dropout, bool) or not isinstance(dropout, int | float)
                                or not 0 <= dropout < 1):
        raise ConfigError(f"model.classifier_dropout={dropout!r} must be in [0, 1), or null for the model's own")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={device} but no CUDA device is available here: use trainer.device=cpu "
                          "(or auto)")


def build_key(cfg: DictConfig) -> str:
    """What ``check_build`` builds from: the model, method and task settings. The jobs of a learning-rate or seed
    sweep share one key, so that callers build each once."""
    return "".join(OmegaConf.to_yaml(cfg[key]) for key in ("model", "method", "task"))


def check_build(cfg: DictConfig) -> None:
    """Build the job's model with its task head and method on the meta device (no weights are read, no data; about a
    second), so that what only the architecture shows (a block size that does not divide a width, RoAd's group size,
    lora_qv on separate q, k, v) stops a sweep before its first job, not as one failed record per job. Raises the
    method's ``ConfigError``. Skipped for a method whose build reads the weights (``Method.needs_weights``); anything
    else the meta build meets (no architecture here but the weights, a config.json transformers cannot read, an
    error of the meta device itself) is left to the job's own build, which says what it is in its record."""
    method = build_method(cfg.method)
    if method.needs_weights:
        return
    task = build_task(cfg.task, cfg.data)
    with warnings.catch_warnings():  # the job's own build warns where it matters
        warnings.simplefilter("ignore")
        try:
            bundle = build_model(OmegaConf.merge(cfg.model, {"init": "meta"}), task.head, task.num_labels)
            method.apply(bundle.model, bundle.spec)
        except ConfigError:
            raise
        except Exception:  # noqa: BLE001  (not a refusal: the job's own build reports it)
            return


def check_results_dir(results_dir: str, folder: str | Path | None = None) -> None:
    """Raise ``ConfigError`` unless records can be written under ``results_dir`` (read-only, full, not a folder),
    or in its sub-folder ``folder`` (a run's record folder) when given."""
    try:
        check_writable(folder or results_dir)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        where = f"the record folder {folder} under results_dir={results_dir}" if folder else f"results_dir={results_dir}"
        raise ConfigError(f"{where} is not writable ({reason}): point results_dir at a folder you can write") from None


def one_line(err: Exception) -> str:
    """An error message on one line (Hydra's and OmegaConf's span several, with indented context)."""
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip() and not line.startswith("    "))
