"""SuperGLUE: CB, COPA, WSC, BoolQ and RTE from a folder of the official jsonl files or the hub (``aps/super_glue``).

Local layout (``data.superglue_dir``, env ``SUPERGLUE_DIR``): ``<TASK>/train.jsonl`` and ``<TASK>/val.jsonl``, as
the official task zips unpack; the labelled ``val`` split is the evaluation set ("dev"). Every line is parsed and
every label checked against the task's label set when the file is read; a fault is one ``DataError`` naming the file
and line. Label values differ by task (CB and RTE strings, BoolQ and WSC JSON booleans, COPA integers): each task
config lists its file label values in class-id order (``label_names``), the hub's order.

Three heads, chosen by the task config's ``head``:

- ``seq_cls`` (CB, BoolQ, RTE): the two text fields ``text`` as a sentence pair.
- ``multiple_choice`` (COPA), as jiant: the prompt is the premise and the question ("What was the cause of this?" /
  "What happened as a result?"), paired with each choice; the model scores each pair and the loss is a softmax over
  the choices.
- ``span_cls`` (WSC), as jiant: the two spans (noun phrase, pronoun) are words ``span_index`` ..
  ``span_index + len(span_text.split()) - 1`` of ``text.split(" ")``, mapped to the tokens that overlap them; the
  head pools each span's tokens and classifies the pair (``models.heads.SpanClassifier``). The index, not the span
  text, locates a span: the texts differ from the words in case and punctuation in a few rows.
"""

from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from omegaconf import DictConfig
from transformers import DataCollatorForMultipleChoice, DataCollatorWithPadding

from qgoft_bench.errors import ConfigError, DataError
from qgoft_bench.tasks.base import Batching, Task, register_task_family
from qgoft_bench.tasks.classification import ClassificationTask, TargetSplitter, label_ids
from qgoft_bench.tasks.jsonl import read_jsonl
from qgoft_bench.tasks.protocol import fu2023_files, held_out_split, is_fu2023, kept_after_drop, protocol_of

HUB_ID = "aps/super_glue"
SPLITS = {"train": ("train", "train"), "dev": ("val", "validation")}  # our name -> (file stem, hub split)
COPA_QUESTIONS = {"cause": "What was the cause of this?", "effect": "What happened as a result?"}


def _from_hub(task: DictConfig, split: str) -> list[tuple[str, dict]]:
    from datasets import load_dataset

    try:
        data = load_dataset(HUB_ID, task.hub_config, split=split)
    except Exception as err:  # noqa: BLE001 - any failure here means "no hub": say what to provide instead
        raise DataError(f"SuperGLUE {task.dataset}: no data.superglue_dir is set and the hub ({HUB_ID}) is "
                        f"unreachable ({type(err).__name__}): set data.superglue_dir=DIR (the official jsonl "
                        "folders) or SUPERGLUE_DIR") from None
    return [(f"{HUB_ID}/{task.hub_config} {split} row {i}", dict(row)) for i, row in enumerate(data)]


class SuperGlueTask(ClassificationTask):
    """Reads the labelled splits and encodes sentence pairs (CB, BoolQ, RTE); subclasses encode for other heads."""

    head = "seq_cls"
    data_dir_key = "superglue_dir"

    def __init__(self, cfg: DictConfig, data: DictConfig) -> None:
        self.protocol = protocol_of(cfg, data)
        if is_fu2023(self.protocol):
            self.eval_split_names, self.selection_split = ("val", "test"), "val"
            self.headline_key = "fu2023_headline"
        super().__init__(cfg, data)
        self.examples: dict[str, list[dict]] = {}
        self.labels: dict[str, list[int]] = {}

    def read(self) -> None:
        files = fu2023_files(self.cfg, self.data) if is_fu2023(self.protocol) else None
        if files is not None:  # the authors' split files (CB's labels renamed consistently there: see the README)
            for split, file in files.items():
                self._keep(split, read_jsonl(file, "data.fu2023_dir must hold Fu et al.'s split files "
                                                   "(<task>/{train,val,test}.jsonl)"), list(self.cfg.label_names))
                self.sources.append(file)
        else:
            self._read_official()
            if is_fu2023(self.protocol):  # 90/10 of train from a fixed draw; the official val set is the test set
                train_idx, val_idx = held_out_split(len(self.examples["train"]), int(self.cfg.split_seed))
                self._select("val", "train", val_idx)
                self._select("test", "dev", None)
                self._select("train", "train", train_idx)
                del self.examples["dev"], self.labels["dev"]
        if self.cfg.get("drop_fraction"):
            self._select("train", "train", kept_after_drop(len(self.examples["train"]), self.cfg.drop_fraction,
                                                           int(self.cfg.drop_seed)))

    def _read_official(self) -> None:
        root = self.data.get("superglue_dir")
        if root is not None and not Path(root).expanduser().is_dir():
            raise DataError(f"data.superglue_dir={root} does not exist: point data.superglue_dir (or SUPERGLUE_DIR) "
                            "at the official SuperGLUE jsonl folders, or unset it to use the hub")
        for split, (stem, hub_split) in SPLITS.items():
            if root is None:
                self.sources.append(f"hub:{HUB_ID}/{self.cfg.hub_config}/{hub_split}")
                self._keep(split, _from_hub(self.cfg, hub_split), None)  # the hub's labels are class ids already
            else:
                file = Path(root).expanduser() / self.cfg.folder / f"{stem}.jsonl"
                self._keep(split, read_jsonl(file, "data.superglue_dir must hold the official layout "
                                                   "(<TASK>/train.jsonl, <TASK>/val.jsonl)"), list(self.cfg.label_names))
                self.sources.append(file)

    def _keep(self, split: str, rows: list[tuple[str, dict]], names: list | None) -> None:
        """Check every row and keep the split's examples and class ids."""
        for where, record in rows:
            self.check(where, record)
        values = [record["label"] for _, record in rows]
        self.labels[split] = label_ids(values, names, lambda i: rows[i][0], self.num_labels).tolist()
        self.examples[split] = [record for _, record in rows]

    def _select(self, split: str, source: str, keep) -> None:
        """``split`` becomes the examples of ``source`` at positions ``keep`` (all of them when None)."""
        keep = range(len(self.examples[source])) if keep is None else keep
        self.examples[split] = [self.examples[source][i] for i in keep]
        self.labels[split] = [self.labels[source][i] for i in keep]

    def check(self, where: str, record: dict) -> None:
        """Raise ``DataError`` at ``where`` (file and line) unless ``record`` has what this task reads."""
        self.require(where, record, list(self.cfg.text))

    def require(self, where: str, record: dict, texts: list[str]) -> None:
        """``texts`` must be strings of ``record``; the label is checked with the split's other labels."""
        missing = [key for key in [*texts, "label"] if key not in record]
        if missing:
            raise DataError(f"{where}: no field {missing[0]!r} (fields: {', '.join(record)}); is it the "
                            f"SuperGLUE {self.cfg.folder} file?")
        wrong = [key for key in texts if not isinstance(record[key], str)]
        if wrong:
            raise DataError(f"{where}: field {wrong[0]!r} is {record[wrong[0]]!r}, not text; fix the line")

    def encode(self, processor: Any, batching: Batching) -> None:
        datasets = {split: self.encode_split(processor, examples, self.labels[split], batching.max_seq_len)
                    for split, examples in self.examples.items()}
        train = datasets.pop("train")
        self.set_batches(batching, TargetSplitter(self.collator(processor)), train, datasets)

    def encode_split(self, tokenizer: Any, examples: list[dict], labels: list[int], max_len: int) -> Dataset:
        """Sentence pairs from the config's two ``text`` fields."""
        first, second = ([e[key] for e in examples] for key in self.cfg.text)
        encoded = tokenizer(first, second, truncation=True, max_length=max_len)
        return Dataset.from_dict({**encoded, "labels": labels})

    def collator(self, tokenizer: Any):
        return DataCollatorWithPadding(tokenizer)


class CopaTask(SuperGlueTask):
    """COPA as multiple choice: premise + question against each choice."""

    head = "multiple_choice"

    def check(self, where: str, record: dict) -> None:
        self.require(where, record, ["premise", "question", "choice1", "choice2"])
        if record["question"] not in COPA_QUESTIONS:
            raise DataError(f"{where}: question {record['question']!r} is not one of {', '.join(COPA_QUESTIONS)}; "
                            "fix the line")

    def encode_split(self, tokenizer: Any, examples: list[dict], labels: list[int], max_len: int) -> Dataset:
        prompts, choices = [], []
        for e in examples:
            prompt = f"{e['premise']} {COPA_QUESTIONS[e['question']]}"
            prompts += [prompt, prompt]
            choices += [e["choice1"], e["choice2"]]
        encoded = tokenizer(prompts, choices, truncation=True, max_length=max_len)
        # one feature per example: each key holds the two choices' token lists
        paired = {key: [values[i:i + 2] for i in range(0, len(values), 2)] for key, values in encoded.items()}
        return Dataset.from_dict({**paired, "labels": labels})

    def collator(self, tokenizer: Any):
        return DataCollatorForMultipleChoice(tokenizer)


class WscTask(SuperGlueTask):
    """WSC as span-pair classification (does the pronoun refer to the noun phrase?)."""

    head = "span_cls"

    def check(self, where: str, record: dict) -> None:
        """Also keeps each span as (first word, number of words) in ``record["spans"]``."""
        self.require(where, record, ["text"])
        target = record.get("target", record)  # the official files nest the spans; the hub's rows are flat
        keys = [f"span{k}_{f}" for k in (1, 2) for f in ("index", "text")]
        if not isinstance(target, dict) or not all(key in target for key in keys):
            raise DataError(f"{where}: no span1/span2 index and text; is it the SuperGLUE WSC file?")
        words = len(str(record["text"]).split(" "))
        if not all(isinstance(target[f"span{k}_index"], int) and 0 <= target[f"span{k}_index"] < words
                   for k in (1, 2)):
            raise DataError(f"{where}: a span index is not a word position in the text (0..{words - 1}); fix the line")
        record["spans"] = [(target[f"span{k}_index"], len(str(target[f"span{k}_text"]).split())) for k in (1, 2)]

    def encode_split(self, tokenizer: Any, examples: list[dict], labels: list[int], max_len: int) -> Dataset:
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError("WSC maps word spans to tokens through offset mappings, which need a fast tokenizer; "
                              "use a model whose tokenizer has one (model.tokenizer=...)")
        texts = [e["text"] for e in examples]
        encoded = tokenizer(texts, truncation=True, max_length=max_len, return_offsets_mapping=True)
        spans = [[token_span(text, start, length, offsets) for start, length in e["spans"]]
                 for text, e, offsets in zip(texts, examples, encoded.pop("offset_mapping"), strict=True)]
        return Dataset.from_dict({**encoded, "spans": spans, "labels": labels})

    def collator(self, tokenizer: Any):
        return SpanCollator(tokenizer)


def token_span(text: str, word: int, length: int, offsets: list[tuple[int, int]]) -> tuple[int, int]:
    """The first and last token (inclusive) overlapping words ``word`` .. ``word + length - 1`` of
    ``text.split(" ")``; a span cut off by truncation keeps the tokens that remain (at least the last one)."""
    words = text.split(" ")
    last_word = min(word + max(length, 1), len(words)) - 1
    start = sum(len(w) + 1 for w in words[:word])
    end = sum(len(w) + 1 for w in words[: last_word + 1]) - 1  # exclusive end of the last word
    tokens = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    if not tokens:  # truncated away: the last real token stands in
        tokens = [max(i for i, (a, b) in enumerate(offsets) if b > a)]
    return tokens[0], tokens[-1]


class SpanCollator:
    """Pads the token inputs per batch; ``spans`` (B, 2, 2) and ``labels`` go along unpadded."""

    def __init__(self, tokenizer: Any) -> None:
        self.pad = DataCollatorWithPadding(tokenizer)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        spans = torch.tensor([f.pop("spans") for f in features], dtype=torch.long)
        batch = self.pad(features)
        batch["spans"] = spans
        return batch


HEADS: dict[str, type[SuperGlueTask]] = {kind.head: kind for kind in (SuperGlueTask, CopaTask, WscTask)}


@register_task_family("superglue")
def superglue_task(cfg: DictConfig, data: DictConfig) -> Task:
    """The SuperGLUE task of ``cfg`` with the head its config names (``task.head``)."""
    if cfg.head not in HEADS:
        raise ConfigError(f"task.head={cfg.head!r} is not one of {', '.join(HEADS)} for SuperGLUE")
    return HEADS[cfg.head](cfg, data)
