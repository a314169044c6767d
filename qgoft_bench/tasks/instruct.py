"""Instruction tuning of a causal LM on Alpaca-format data: the loss on the response tokens only.

Data (``data.instruct_path``, env ``INSTRUCT_PATH``): one JSON array of records with the string fields
``instruction``, ``input`` (may be empty) and ``output``, as Stanford Alpaca's ``alpaca_data.json``, alpaca-cleaned
and LLaMA-Factory's ``alpaca_en_demo.json``. A record that is not an object, lacks a field, holds a non-string or has
an empty instruction or output is one ``DataError`` naming the file and the record's index.

Split: a seeded draw (``task.split_seed``, the same for every run) holds out ``task.eval_fraction`` of the records
(at least one) for evaluation; the rest train.

Prompt (``task.template``):

- ``alpaca``: Stanford Alpaca's ``PROMPT_DICT`` (``train.py``): ``"Below is an instruction that describes a task[,
  paired with an input that provides further context]. Write a response that appropriately completes the
  request.\\n\\n### Instruction:\\n{instruction}\\n\\n[### Input:\\n{input}\\n\\n]### Response:"``; the response is
  ``output`` followed by the EOS token. The prompt is encoded without special tokens, after the tokenizer's BOS
  token when it adds one; the response is encoded on its own and appended, so the prompt's tokens are exactly those
  of the prompt alone (Stanford's code tokenizes prompt + response together and masks as many tokens as the prompt
  alone has, which can be off by one at the seam).
- ``chat``: the tokenizer's chat template, a user turn ``instruction`` (``+ "\\n" + input``: LLaMA-Factory's alpaca
  converter) and an assistant turn ``output``; the prompt is the user turn rendered with the generation prompt, the
  response the rest of the rendered conversation (its end-of-turn tokens included).

Labels are the input ids with every prompt token (and padding) set to -100: the loss is the mean next-token
cross-entropy over response tokens, and ``count`` is the number of those tokens, so gradient accumulation weights
micro-batches by tokens. A sequence longer than ``trainer.max_seq_len`` keeps its first ``max_seq_len`` tokens (the
response is cut); an example whose prompt alone fills the window has no response token left and is dropped. Both are
counted in the record (``encoding_report``, kept as ``data.encoding``: per split ``examples``, ``truncated``,
``dropped``).

``task=instruct/alpaca_mmlu`` (``InstructMmluTask``) is the qGOFT paper's Table 2 protocol: the same training,
evaluated by the held-out loss and by MMLU (``tasks.mmlu``: ``data.mmlu_dir`` and the ``eval.mmlu_*`` settings,
read through ``task.mmlu``); MMLU's largest-shot average is the headline.

With ``eval.vicuna_answers=true`` the run answers the Vicuna questions (``tasks.vicuna``) after its final evaluation,
each question's turn as an instruction without input under the same template (``encode_prompt``): ``train.vicuna``.

Batches: length-grouped (a seeded shuffle, cut into groups of 50 batches, each group sorted by length and cut into
batches, the batches shuffled), so padding stays small and the order depends on the seed alone. Metrics on the
held-out records: ``loss`` (the mean response-token cross-entropy, the headline, lower is better) and
``perplexity`` (its exponential).
"""

import json
import logging
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Sampler

from qgoft_bench.errors import ConfigError, DataError
from qgoft_bench.tasks.base import Batching, Metric, Predict, Task, make_loader, register_task_family
from qgoft_bench.tasks.mmlu import MmluTask

IGNORE = -100
TEMPLATES = ("alpaca", "chat")
FIELDS = ("instruction", "input", "output")
log = logging.getLogger(__name__)
HUB_ID = "yahma/alpaca-cleaned"  # the qGOFT paper's training set, read when data.instruct_path is not set
PROMPT_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:")
PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
                   "request.\n\n### Instruction:\n{instruction}\n\n### Response:")
GROUP_BATCHES = 50  # batches per length-sorted group


def read_alpaca(path: Path) -> list[dict[str, str]]:
    """The records of an Alpaca JSON array; ``DataError`` naming the file (and the record's index) otherwise."""
    if not path.is_file():
        raise DataError(f"data file {path} is missing: point data.instruct_path (or INSTRUCT_PATH) at an Alpaca "
                        "JSON file")
    try:
        records = json.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark is allowed
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte offset {err.start}): save it as UTF-8") from None
    except json.JSONDecodeError as err:  # its line and column
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno}): an Alpaca file is one "
                        "JSON array of records") from None
    if not isinstance(records, list) or not records:
        raise DataError(f"{path}: not a non-empty JSON array of instruction records")
    for n, record in enumerate(records):
        if not isinstance(record, dict) or any(not isinstance(record.get(key), str) for key in FIELDS):
            raise DataError(f"{path}: record [{n}] needs the string fields instruction, input and output")
        if not record["instruction"].strip() or not record["output"].strip():
            raise DataError(f"{path}: record [{n}] has an empty instruction or output")
    return records


def alpaca_from_hub() -> list[dict[str, str]]:
    """The train split of ``HUB_ID`` (the ``datasets`` library) as records; rows with an empty instruction or output
    are left out with a warning (a local file with one is an error: it can be fixed). ``DataError`` when the hub
    cannot be reached."""
    from datasets import load_dataset

    try:
        rows = load_dataset(HUB_ID, split="train")
    except Exception as err:  # noqa: BLE001 - any failure here means "no hub": say what to provide instead
        raise DataError(f"no data.instruct_path is set and the hub ({HUB_ID}) is unreachable ({type(err).__name__}): "
                        "set data.instruct_path=FILE (an Alpaca JSON array) or INSTRUCT_PATH") from None
    records = [{key: str(row[key] or "") for key in FIELDS} for row in rows]
    kept = [r for r in records if r["instruction"].strip() and r["output"].strip()]
    if len(kept) < len(records):
        log.warning("%s: %d of %d rows have an empty instruction or output and are left out", HUB_ID,
                    len(records) - len(kept), len(records))
    if not kept:
        raise DataError(f"{HUB_ID}: no usable rows")
    return kept


def alpaca_prompt(record: dict[str, str]) -> str:
    """Stanford Alpaca's prompt for ``record`` (with or without its input), ending in ``"### Response:"``."""
    return (PROMPT_INPUT if record["input"] else PROMPT_NO_INPUT).format_map(record)


def user_turn(record: dict[str, str]) -> list[dict[str, str]]:
    """The chat template's user turn for ``record``: ``instruction`` (``+ "\\n" + input``)."""
    return [{"role": "user", "content": record["instruction"] + ("\n" + record["input"] if record["input"] else "")}]


def end_token_id(tokenizer: Any) -> int | None:
    """The token an alpaca-template response ends with: the tokenizer's EOS, else its SEP (BERT-style vocabularies)."""
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id


def _encode(tokenizer: Any, text: str) -> list[int]:
    """The ids of ``text`` without special tokens."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class LengthGroupedBatches(Sampler[list[int]]):
    """Batches of indices of similar ``lengths``: each pass shuffles with its own generator (seeded once, so the
    order depends on the seed alone and differs between epochs), sorts groups of ``GROUP_BATCHES`` batches by length
    (longest first) and shuffles the batches."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        super().__init__()
        self.lengths, self.batch_size = lengths, batch_size
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        group = self.batch_size * GROUP_BATCHES
        batches = []
        for start in range(0, len(order), group):
            chunk = sorted(order[start : start + group], key=lambda i: -self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        for i in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[i]


class Collate:
    """Pads ``(input_ids, labels)`` pairs on the right: ``{"inputs": {input_ids, attention_mask}, "targets":
    {labels}}`` (labels padded with -100)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, examples: list[tuple[list[int], list[int]]]) -> dict[str, dict[str, torch.Tensor]]:
        width = max(len(ids) for ids, _ in examples)
        input_ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, (ids, label) in enumerate(examples):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(label)] = torch.tensor(label)
            mask[row, : len(ids)] = 1
        return {"inputs": {"input_ids": input_ids, "attention_mask": mask}, "targets": {"labels": labels}}


def response_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy in float32 of ``logits`` (B, T, V) against ``labels`` (B, T), -100 ignored."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE,
                           reduction=reduction)


@register_task_family("instruct")
class InstructTask(Task):
    """Supervised instruction tuning on Alpaca-format records (see the module docstring)."""

    head = "causal_lm"
    num_labels = 0
    data_dir_key = "instruct_path"
    data_is_file = True
    metrics = (Metric("loss", higher_is_better=False), Metric("perplexity", higher_is_better=False))
    headline = "loss"

    def __init__(self, cfg: DictConfig, data: DictConfig) -> None:
        super().__init__(cfg, data)
        if cfg.template not in TEMPLATES:
            raise ConfigError(f"task.template={cfg.template!r} is not one of {', '.join(TEMPLATES)}")
        if not 0 < cfg.eval_fraction < 1:
            raise ConfigError(f"task.eval_fraction={cfg.eval_fraction!r} must be in (0, 1)")
        self.template = cfg.template
        self.splits: dict[str, list[dict[str, str]]] = {}
        self.encoded: dict[str, list[tuple[list[int], list[int]]]] = {}
        self.report: dict[str, dict[str, int]] = {}
        self.batching: Batching | None = None
        self.pad_id = 0

    def read(self) -> None:
        """Read and check the file (the hub's ``HUB_ID`` without one); draw the held-out records."""
        if self.data.get("instruct_path") is None:
            source: Path | str = f"hub:{HUB_ID}/train"
            records = alpaca_from_hub()
        else:
            source = Path(str(self.data.instruct_path)).expanduser()
            records = read_alpaca(source)
        self.sources.append(source)
        held = max(1, round(self.cfg.eval_fraction * len(records)))
        if held >= len(records):
            raise DataError(f"{source}: {len(records)} records leave none to train on after holding out {held}")
        order = list(range(len(records)))
        random.Random(int(self.cfg.split_seed)).shuffle(order)
        self.splits = {"train": [records[i] for i in sorted(order[held:])],
                       "eval": [records[i] for i in sorted(order[:held])]}

    def encode_prompt(self, tokenizer: Any, record: dict[str, str]) -> list[int]:
        """The prompt ids of ``record`` (its ``instruction`` and ``input``) under ``task.template``: what the model
        continues with a response, in training and when it answers (``train.vicuna``)."""
        if self.template == "alpaca":
            bos = tokenizer.bos_token_id
            adds_bos = bos is not None and tokenizer("x")["input_ids"][:1] == [bos]
            return ([bos] if adds_bos else []) + _encode(tokenizer, alpaca_prompt(record))
        return _encode(tokenizer, tokenizer.apply_chat_template(user_turn(record), tokenize=False,
                                                                 add_generation_prompt=True))

    def encode_pair(self, tokenizer: Any, record: dict[str, str]) -> tuple[list[int], list[int]]:
        """(prompt ids, response ids) of one record under ``task.template``."""
        prompt = self.encode_prompt(tokenizer, record)
        if self.template == "alpaca":
            eos = end_token_id(tokenizer)
            return prompt, _encode(tokenizer, record["output"]) + ([eos] if eos is not None else [])
        whole = _encode(tokenizer, tokenizer.apply_chat_template(
            [*user_turn(record), {"role": "assistant", "content": record["output"]}], tokenize=False))
        if whole[: len(prompt)] != prompt:
            raise ConfigError("the chat template renders the conversation differently from its prompt (the user "
                              "turn with the generation prompt); use task.template=alpaca")
        return prompt, whole[len(prompt):]

    def encode(self, processor: Any, batching: Batching) -> None:
        """Tokenise both splits; labels mask the prompt; truncation and drops counted in ``encoding_report``."""
        tokenizer = processor
        if self.template == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ConfigError("task.template=chat needs a tokenizer with a chat template; use task.template=alpaca")
        self.batching = batching
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)
        limit = batching.max_seq_len
        for split, records in self.splits.items():
            examples, truncated, dropped = [], 0, 0
            for record in records:
                prompt, response = self.encode_pair(tokenizer, record)
                if len(prompt) >= limit:
                    dropped += 1
                    continue
                truncated += len(prompt) + len(response) > limit
                ids = (prompt + response)[:limit]
                examples.append((ids, [IGNORE] * len(prompt) + ids[len(prompt):]))
            if not examples:
                raise ConfigError(f"every {split} prompt of {self.name} fills trainer.max_seq_len={limit}: raise it")
            self.encoded[split] = examples
            self.report[split] = {"examples": len(examples), "truncated": truncated, "dropped": dropped}

    def encoding_report(self) -> dict[str, Any]:
        """``{"max_seq_len", "<split>": {"examples", "truncated", "dropped"}}`` of the last ``encode``."""
        return {"max_seq_len": self.batching.max_seq_len if self.batching else None, **self.report}

    def train_batches(self, shuffle_seed: int) -> DataLoader:
        lengths = [len(ids) for ids, _ in self.encoded["train"]]
        sampler = LengthGroupedBatches(lengths, self.batching.batch_size, shuffle_seed)
        return make_loader(self.encoded["train"], self.batching.batch_size, Collate(self.pad_id),
                           self.batching.num_workers, batch_sampler=sampler)

    def loss(self, outputs: Any, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        return response_loss(outputs.logits, targets["labels"])

    def count(self, targets: dict[str, torch.Tensor]) -> int:
        """Response tokens the loss averages over (those with a next-token label)."""
        return int((targets["labels"][:, 1:] != IGNORE).sum())

    def evaluate(self, predict: Predict) -> dict[str, float]:
        """Token-weighted response loss on the held-out records, and its perplexity."""
        examples = self.encoded["eval"]
        order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))  # little padding
        collate = Collate(self.pad_id)
        total, tokens = 0.0, 0
        for start in range(0, len(order), self.batching.eval_batch_size):
            batch = collate([examples[i] for i in order[start : start + self.batching.eval_batch_size]])
            logits = predict(batch["inputs"]).logits.cpu()
            total += float(response_loss(logits, batch["targets"]["labels"], reduction="sum"))
            tokens += self.count(batch["targets"])
        loss = total / tokens
        return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf}


@register_task_family("instruct_mmlu")
class InstructMmluTask(InstructTask):
    """Instruction tuning evaluated by its held-out response loss and by MMLU (``task.mmlu``: an ``MmluTask``
    config); the headline is MMLU's largest-shot average, the protocol MMLU's."""

    def __init__(self, cfg: DictConfig, data: DictConfig) -> None:
        super().__init__(cfg, data)
        if data.get("mmlu_dir") is not None and not Path(str(data.mmlu_dir)).expanduser().is_dir():
            raise ConfigError(f"task {self.name} also scores MMLU: data.mmlu_dir={data.mmlu_dir} is not a folder; "
                              "point it (or MMLU_DIR) at the MMLU folder (dev/, test/), or unset it to use the hub")
        self.mmlu = MmluTask(cfg.mmlu, data)
        self.metrics = (*InstructTask.metrics, *self.mmlu.metrics)
        self.headline = self.mmlu.headline
        self.protocol = self.mmlu.protocol

    def read(self) -> None:
        super().read()
        self.mmlu.read()
        self.sources += self.mmlu.sources

    def encode(self, processor: Any, batching: Batching) -> None:
        super().encode(processor, batching)
        self.mmlu.encode(processor, batching)

    def evaluate(self, predict: Predict) -> dict[str, float]:
        return {**super().evaluate(predict), **self.mmlu.evaluate(predict)}

    def artifacts(self) -> dict[str, Any]:
        return self.mmlu.artifacts()
