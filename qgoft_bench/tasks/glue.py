"""GLUE: the nine tasks from a classic ``glue_data`` TSV folder or the hub (``nyu-mll/glue``), as sequence
classification (STS-B: one regression output).

The TSV files are read with quoting off: several hold unbalanced ``"`` characters that a CSV reader would use to
merge rows. Every line is checked when the file is read: its number of fields against the header, its label
against the task's label set (STS-B: a finite score in [0, 5]); a fault is one ``DataError`` naming the file and
line. Columns are found by header name where the file has a header (CoLA has none: by position). Column names,
label strings and splits per task come from ``conf/task/glue/*.yaml``.
"""

import math
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset
from omegaconf import DictConfig
from transformers import DataCollatorWithPadding

from qgoft_bench.errors import ConfigError, DataError
from qgoft_bench.tasks.base import Batching, register_task_family
from qgoft_bench.tasks.classification import ClassificationTask, TargetSplitter, label_ids
from qgoft_bench.tasks.jsonl import read_jsonl
from qgoft_bench.tasks.protocol import fu2023_files, held_out_split, is_fu2023, kept_after_drop, protocol_of

HUB_ID = "nyu-mll/glue"
SUBSET_SEED = 0  # fixed, so every run of a task with train_samples sees the same examples
STSB_RANGE = (0.0, 5.0)


class Split:
    """One split's examples: ``text_a``, ``text_b`` (None for single-sentence tasks), ``labels`` (class ids, or
    float32 scores for regression) and ``lines`` (each example's line in its file, for messages)."""

    def __init__(self, text_a: list[str], text_b: list[str] | None, labels: np.ndarray, lines: list[int]) -> None:
        self.text_a, self.text_b, self.labels, self.lines = text_a, text_b, labels, lines

    def __len__(self) -> int:
        return len(self.text_a)

    def subset(self, n: int, seed: int) -> "Split":
        """A fixed random subset of ``n`` examples, in the drawn order (pandas' ``sample(n, random_state=seed)``, as
        the committed SST-2 records were drawn)."""
        return self.take(np.random.RandomState(seed).choice(len(self), size=n, replace=False))

    def take(self, keep: np.ndarray) -> "Split":
        """The examples at positions ``keep``, in that order."""
        return Split([self.text_a[i] for i in keep], [self.text_b[i] for i in keep] if self.text_b else None,
                     self.labels[keep], [self.lines[i] for i in keep])


def read_rows(path: Path, header: bool) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """(header fields or None, [(line number, fields)]) of a TSV file, quoting off, every row checked for its
    number of fields; blank lines are skipped."""
    if not path.is_file():
        raise DataError(f"GLUE file {path} is missing: data.glue_dir must hold the classic glue_data layout "
                        f"(<TASK>/train.tsv, <TASK>/dev.tsv)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: byte 0x{raw[err.start]:02x} is not UTF-8; re-save the file as UTF-8") from None
    rows = [(n, line.rstrip("\r").split("\t")) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if not rows:
        raise DataError(f"{path} is empty; expected {'a header and ' if header else ''}one example per line")
    names = None
    if header:
        (_, names), rows = rows[0], rows[1:]
        if any(not name.strip() for name in names):
            raise DataError(f"{path}:1: the header has an empty column name (a stray tab?); fix the header")
        if not rows:
            raise DataError(f"{path} has a header but no examples")
    width = len(names) if names else len(rows[0][1])
    for n, fields in rows:
        if len(fields) != width:
            reference = "header has" if names else "line 1 has"
            raise DataError(f"{path}:{n}: {len(fields)} fields, {reference} {width}; fix the line (a tab inside "
                            "a sentence, or a missing field)")
    return names, rows


def read_tsv(path: Path, task: DictConfig) -> Split:
    """One GLUE split from its TSV file, every line and label checked."""
    names, rows = read_rows(path, bool(task.tsv_header))

    def column(key: str | int) -> int:
        if isinstance(key, int):
            return key
        if names is None or key not in names:
            found = ", ".join(names) if names else "none (no header)"
            raise DataError(f"{path} has no column {key!r} (columns: {found}); is it the GLUE {task.folder} file?")
        return names.index(key)

    text_columns = [column(key) for key in task.tsv_text]
    label_column = column(task.tsv_label)
    lines = [n for n, _ in rows]
    raw_labels = [fields[label_column] for _, fields in rows]
    where = lambda i: f"{path}:{lines[i]}"
    if task.num_labels == 1:
        labels = _scores(raw_labels, where)
    else:
        names_ = list(task.label_names) if task.label_names else None
        labels = label_ids(raw_labels, names_, where, int(task.num_labels))
    texts = [[fields[c] for _, fields in rows] for c in text_columns]
    return Split(texts[0], texts[1] if len(texts) > 1 else None, labels, lines)


def _scores(values: list[str], where) -> np.ndarray:
    low, high = STSB_RANGE
    out = np.empty(len(values), dtype=np.float32)
    for i, value in enumerate(values):
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not (math.isfinite(score) and low <= score <= high):
            raise DataError(f"{where(i)}: score {value!r} is not a number in [{low:g}, {high:g}]; fix the score")
        out[i] = score
    return out


def read_jsonl_split(path: Path, task: DictConfig) -> Split:
    """One split of Fu et al.'s files (jiant's JSON lines: ``task.fu2023_text`` fields and ``label``), checked as the
    TSV files are."""
    rows = read_jsonl(path, "data.fu2023_dir must hold Fu et al.'s split files (<task>/{train,val,test}.jsonl)")
    for place, record in rows:
        missing = [key for key in [*task.fu2023_text, "label"] if key not in record]
        if missing:
            raise DataError(f"{place}: no field {missing[0]!r}; is it Fu et al.'s {task.fu2023_name} file?")
    raw = [record["label"] for _, record in rows]
    where = lambda i: rows[i][0]
    if task.num_labels == 1:
        labels = _scores([str(v) for v in raw], where)
    else:
        labels = label_ids(raw, list(task.label_names) if task.label_names else None, where, int(task.num_labels))
    texts = [[str(record[key]) for _, record in rows] for key in task.fu2023_text]
    lines = [int(place.rsplit(":", 1)[1]) for place, _ in rows]
    return Split(texts[0], texts[1] if len(texts) > 1 else None, labels, lines)


def _from_hub(task: DictConfig, split: str) -> Split:
    from datasets import load_dataset

    try:
        data = load_dataset(HUB_ID, task.dataset, split=split)
    except Exception as err:  # noqa: BLE001 - any failure here means "no hub": say what to provide instead
        raise DataError(f"GLUE {task.dataset}: no data.glue_dir is set and the hub ({HUB_ID}) is unreachable "
                        f"({type(err).__name__}): set data.glue_dir=DIR (classic glue_data TSV folder) or GLUE_DIR"
                        ) from None
    texts = [list(data[key]) for key in task.hub_text]
    dtype = np.float32 if task.num_labels == 1 else np.int64
    return Split(texts[0], texts[1] if len(texts) > 1 else None, np.asarray(data["label"], dtype=dtype),
                 list(range(len(data))))


def split_source(task: DictConfig, glue_dir: str | None, stem: str, hub_split: str) -> Path | str:
    """Where split ``stem`` comes from: its TSV file under ``glue_dir``, or the hub split when ``glue_dir`` is None."""
    if glue_dir is None:
        return f"hub:{HUB_ID}/{task.dataset}/{hub_split}"
    root = Path(glue_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"data.glue_dir={glue_dir} does not exist: point data.glue_dir (or GLUE_DIR) at a "
                        "classic glue_data TSV folder, or unset it to use the hub")
    return root / task.folder / f"{stem}.tsv"


def load_split(task: DictConfig, glue_dir: str | None, stem: str, hub_split: str) -> Split:
    """Split ``stem`` (e.g. ``dev_matched``) from ``glue_dir``, or ``hub_split`` from the hub when it is None."""
    source = split_source(task, glue_dir, stem, hub_split)
    return read_tsv(source, task) if isinstance(source, Path) else _from_hub(task, hub_split)


def encode_pairs(split: Split, tokenizer: Any, max_len: int) -> Dataset:
    """Tokenised single sentences or pairs with their labels (padding is per batch, in the collator)."""
    texts = [split.text_a] + ([split.text_b] if split.text_b is not None else [])
    encoded = tokenizer(*texts, truncation=True, max_length=max_len)
    return Dataset.from_dict({**encoded, "labels": split.labels.tolist()})


@register_task_family("glue")
class GlueTask(ClassificationTask):
    """A GLUE task: train on the train split (or its fixed subset), evaluate on every dev split."""

    head = "seq_cls"
    data_dir_key = "glue_dir"

    def __init__(self, cfg: DictConfig, data: DictConfig) -> None:
        self.protocol = protocol_of(cfg, data)
        if is_fu2023(self.protocol):
            self.eval_split_names, self.selection_split = ("val", "test"), "val"
            self.headline_key = "fu2023_headline"
        else:
            self.eval_split_names = tuple(cfg.splits)
        samples = cfg.get("train_samples")
        if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
            raise ConfigError(f"task.train_samples={samples!r} must be an integer >= 1, or null for the whole "
                              "training split")
        super().__init__(cfg, data)
        self.splits: dict[str, Split] = {}

    def read(self) -> None:
        task, glue_dir = self.cfg, self.data.get("glue_dir")
        files = fu2023_files(task, self.data) if is_fu2023(self.protocol) else None
        if files is not None:  # the authors' split files
            for name, file in files.items():
                self.sources.append(file)
                self.splits[name] = read_jsonl_split(file, task)
        else:
            wanted = {"train": ("train", "train")} | {name: (stem, task.hub_splits[name])
                                                      for name, stem in task.splits.items()}
            for name, (stem, hub_split) in wanted.items():
                self.sources.append(split_source(task, glue_dir, stem, hub_split))
                self.splits[name] = load_split(task, glue_dir, stem, hub_split)
            if is_fu2023(self.protocol):  # 90/10 of train from a fixed draw; the official dev set is the test set
                train_idx, val_idx = held_out_split(len(self.splits["train"]), int(task.split_seed))
                train, dev = self.splits.pop("train"), self.splits.pop("dev")
                self.splits = {"train": train.take(train_idx), "val": train.take(val_idx), "test": dev}
        train = self.splits["train"]
        if task.train_samples is not None and task.train_samples < len(train):
            train = self.splits["train"] = train.subset(int(task.train_samples), SUBSET_SEED)
        if task.get("drop_fraction"):
            self.splits["train"] = train.take(kept_after_drop(len(train), task.drop_fraction, int(task.drop_seed)))

    def encode(self, processor: Any, batching: Batching) -> None:
        tokenizer = processor
        encoded = {name: encode_pairs(split, tokenizer, batching.max_seq_len) for name, split in self.splits.items()}
        collate = TargetSplitter(DataCollatorWithPadding(tokenizer))  # pad each batch to its own longest
        train = encoded.pop("train")
        self.set_batches(batching, collate, train, encoded)
