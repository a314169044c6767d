"""GLUE: the nine tasks from a classic ``glue_data`` TSV folder or the hub (``nyu-mll/glue``).

The TSV files are read with quoting disabled: several of them hold unbalanced ``"`` characters that a CSV reader
would use to merge rows. Column layout, label strings and splits per task come from ``conf/task/glue/*.yaml``.
"""

import csv
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from qgoft_bench.data import TaskData, register_task_family
from qgoft_bench.data.metrics import compute
from qgoft_bench.errors import DataError
from qgoft_bench.models.hf import load_tokenizer

HUB_ID = "nyu-mll/glue"
SUBSET_SEED = 0  # fixed, so every run of a task with train_samples sees the same examples


def read_tsv(path: Path, task: DictConfig) -> pd.DataFrame:
    """One split as a frame with columns ``text_a``, ``text_b`` (or absent) and ``label``."""
    if not path.exists():
        raise DataError(f"GLUE file {path} is missing: data.glue_dir must hold the classic glue_data layout "
                        f"({task.folder}/train.tsv, {task.folder}/dev.tsv)")
    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, header=0 if task.tsv_header else None, dtype=str,
                        keep_default_na=False, encoding="utf-8-sig")

    def column(key: str | int) -> pd.Series:
        if isinstance(key, int):
            return frame.iloc[:, key]
        if key not in frame.columns:
            raise DataError(f"{path} has no column {key!r} (columns: {', '.join(frame.columns)}); is it the GLUE "
                            f"{task.folder} file?")
        return frame[key]

    texts = {name: column(key).tolist() for name, key in zip(("text_a", "text_b"), task.tsv_text)}
    return pd.DataFrame({**texts, "label": _labels(column(task.tsv_label), task, path)})


def _labels(raw: pd.Series, task: DictConfig, path: Path) -> np.ndarray:
    if task.num_labels == 1:
        return raw.astype(np.float32).to_numpy()
    if task.label_names:
        ids = {name: i for i, name in enumerate(task.label_names)}
        unknown = set(raw) - set(ids)
        if unknown:
            raise DataError(f"{path}: unknown labels {sorted(unknown)[:3]}; expected {list(task.label_names)}")
        return raw.map(ids).to_numpy(np.int64)
    return raw.astype(np.int64).to_numpy()


def _from_hub(task: DictConfig, split: str) -> pd.DataFrame:
    from datasets import load_dataset

    try:
        data = load_dataset(HUB_ID, task.dataset, split=split)
    except Exception as err:  # noqa: BLE001 - any failure here means "no hub": say what to provide instead
        raise DataError(f"GLUE {task.dataset}: no data.glue_dir is set and the hub ({HUB_ID}) is unreachable "
                        f"({type(err).__name__}): set data.glue_dir=DIR (classic glue_data TSV folder) or GLUE_DIR"
                        ) from None
    columns = {name: data[key] for name, key in zip(("text_a", "text_b"), task.hub_text)}
    return pd.DataFrame({**columns, "label": data["label"]})


def load_split(cfg: DictConfig, stem: str, hub_split: str) -> pd.DataFrame:
    """Split ``stem`` (e.g. ``dev_matched``) from ``data.glue_dir``, or ``hub_split`` from the hub."""
    task = cfg.task
    if cfg.data.glue_dir is None:
        return _from_hub(task, hub_split)
    root = Path(cfg.data.glue_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"data.glue_dir={cfg.data.glue_dir} does not exist: point data.glue_dir (or GLUE_DIR) at a "
                        "classic glue_data TSV folder, or unset it to use the hub")
    return read_tsv(root / task.folder / f"{stem}.tsv", task)


def _loader(frame: pd.DataFrame, tokenizer, cfg: DictConfig, batch_size: int, shuffle: bool) -> DataLoader:
    texts = [frame["text_a"].tolist()] + ([frame["text_b"].tolist()] if "text_b" in frame else [])
    encoded = tokenizer(*texts, truncation=True, max_length=cfg.trainer.max_seq_len)
    dataset = Dataset.from_dict({**encoded, "labels": frame["label"].tolist()})
    collate = DataCollatorWithPadding(tokenizer)  # pad each batch to its own longest sequence
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                      num_workers=cfg.trainer.num_workers)


@register_task_family("glue")
def load_glue(cfg: DictConfig, bundle) -> TaskData:
    """Train loader over the train split (or its fixed subset) and one eval loader per dev split."""
    task = cfg.task
    tokenizer = load_tokenizer(cfg.model)
    train = load_split(cfg, "train", "train")
    if task.train_samples and task.train_samples < len(train):
        train = train.sample(n=task.train_samples, random_state=SUBSET_SEED).reset_index(drop=True)
    evals = {name: _loader(load_split(cfg, stem, task.hub_splits[name]), tokenizer, cfg,
                           cfg.trainer.eval_batch_size, shuffle=False)
             for name, stem in task.splits.items()}
    several = len(evals) > 1  # MNLI: metric names get the split as suffix (accuracy_m, accuracy_mm)

    def metrics(split: str, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return compute(list(task.metrics), logits, labels, suffix=f"_{split}" if several else "")

    return TaskData(_loader(train, tokenizer, cfg, cfg.trainer.batch_size, shuffle=True), evals, metrics)
