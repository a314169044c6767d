"""SQuAD v1.1 extractive question answering (Rajpurkar et al. 2016; the qGOFT paper's Table 4) from the official JSON
files or the hub (``rajpurkar/squad``).

Local files (``data.squad_dir``, env ``SQUAD_DIR``): ``train-v1.1.json`` and ``dev-v1.1.json`` as published,
``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text",
"answer_start"}]}]}]}]}``. Every question is checked when the file is read (its fields, a unique id, every answer at
its ``answer_start``, a character offset into the context); a fault is one ``DataError`` naming the file and the
question's place in it.

Splits (``task.split``):

- ``official``: train on the train file, evaluate on the dev file.
- ``dev_articles``: the dev file alone (the train file is not always at hand), split by article: a seeded draw
  (``task.split_seed``) of ``round(task.train_fraction * articles)`` articles trains, the other articles evaluate,
  so no article is on both sides. The draw depends on the seed alone, the same for every run and method.

``task.max_eval_questions`` (null: all) evaluates only the first N questions of the evaluation split, in file order.
The split and the cap are in the record's config and in its data fingerprint (``sources``).

Windows, as Hugging Face's ``run_qa.py``: the question (leading whitespace stripped) first, the context second,
``truncation="only_second"`` to ``trainer.max_seq_len`` tokens, long contexts in overlapping windows
(``return_overflowing_tokens``, ``task.doc_stride`` tokens of overlap), character offsets from a fast tokenizer. A
training window's targets are the first and last token of the first gold answer when the window holds the whole
answer, else both point at the CLS token (index 0). Batches are padded on the right, per batch.

Loss: the mean of the start and the end cross-entropy over the window's tokens (transformers' own definition).

Evaluation, as ``utils_qa.py``'s ``postprocess_qa_predictions`` for SQuAD v1: in every window of a question, the
``task.n_best`` highest start and end logits are paired; a pair is a candidate when both tokens lie in the context
part of that window, end >= start and the span has at most ``task.max_answer_len`` tokens; its score is start logit
+ end logit. The best candidate over all the question's windows is the answer, cut from the context by the tokens'
character offsets (the empty string when no window has a candidate). Metrics: ``exact_match`` and ``f1``
(``metrics.squad_scores``: the official v1.1 definitions, max over the gold answers, mean over questions), recorded
as fractions like every metric here; the tables print them times 100, the scale of the official script and the paper.

``artifacts()`` returns the last evaluation's answers, ``{"predictions": {question id: answer text}}``: the run writes
the best evaluation's beside the record as ``<record stem>.predictions.json``, the official script's input format.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from qgoft_bench.errors import ConfigError, DataError
from qgoft_bench.tasks.base import Batching, Metric, Predict, Task, make_loader, register_task_family
from qgoft_bench.tasks.classification import TargetSplitter
from qgoft_bench.tasks.metrics import squad_scores

HUB_ID = "rajpurkar/squad"
SPLITS = ("official", "dev_articles")
HUB_SPLITS = {"train": "train", "dev": "validation"}
TARGETS = ("start_positions", "end_positions")


@dataclass(frozen=True)
class Question:
    """One question with its context and gold answers (``starts``: character offsets of ``answers`` into
    ``context``); ``article`` is the position of its article in the file."""

    id: str
    article: int
    context: str
    question: str
    answers: tuple[str, ...]
    starts: tuple[int, ...]


@dataclass(frozen=True)
class Window:
    """One evaluation window: the question it belongs to (position in the evaluation split) and each token's
    character span in the context, ``offsets`` (T, 2), with ``in_context`` (T,) false for the question, special
    and padding tokens."""

    question: int
    offsets: np.ndarray
    in_context: np.ndarray


def _field(node: Any, key: str, kind: type, where: str) -> Any:
    """``node[key]`` when ``node`` is an object whose ``key`` is a ``kind``; ``DataError`` at ``where`` otherwise."""
    if not isinstance(node, dict) or key not in node:
        raise DataError(f"{where}: no field {key!r}; is it the official SQuAD v1.1 format?")
    value = node[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{where}: field {key!r} is {type(value).__name__}, not {kind.__name__}; fix the file")
    return value


def checked_question(where: str, article: int, context: str, qa: Any) -> Question:
    """The question ``qa`` of one paragraph, its fields and every answer's offset checked; ``DataError`` at
    ``where`` (file and place) otherwise."""
    qid = _field(qa, "id", str, where)
    where = f"{where} (id {qid})"
    question = _field(qa, "question", str, where)
    if not question.strip():
        raise DataError(f"{where}: the question is empty; remove it or write its text")
    answers = _field(qa, "answers", list, where)
    if not answers:
        raise DataError(f"{where}: no gold answer; every SQuAD v1.1 question has at least one")
    texts, starts = [], []
    for n, answer in enumerate(answers):
        text = _field(answer, "text", str, f"{where} answer {n}")
        start = _field(answer, "answer_start", int, f"{where} answer {n}")
        if not text.strip():
            raise DataError(f"{where}: answer {n} is empty (it would match anywhere); SQuAD v1.1 answers are spans "
                            "of the context: write the span or remove the answer")
        if start < 0 or context[start:start + len(text)] != text:
            raise DataError(f"{where}: answer {text!r} is not at answer_start {start} of the context (there: "
                            f"{context[max(start, 0):max(start, 0) + len(text)]!r}); fix answer_start (a character "
                            "offset into the context)")
        texts.append(text)
        starts.append(start)
    return Question(qid, article, context, question, tuple(texts), tuple(starts))


def read_squad_file(path: Path, missing_hint: str) -> list[Question]:
    """Every question of an official SQuAD v1.1 JSON file, checked (see the module docstring)."""
    if not path.is_file():
        raise DataError(f"data file {path} is missing: {missing_hint}")
    try:
        document = json.loads(path.read_bytes().decode("utf-8-sig"))  # a byte-order mark is allowed
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: byte {err.start} is not UTF-8; is it the official SQuAD v1.1 file?") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not JSON ({err.msg} at line {err.lineno} column {err.colno}); is it the official "
                        "SQuAD v1.1 file?") from None
    questions = []
    for a, article in enumerate(_field(document, "data", list, str(path))):
        for p, paragraph in enumerate(_field(article, "paragraphs", list, f"{path}: data[{a}]")):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", str, where)
            questions += [checked_question(f"{where}.qas[{q}]", a, context, qa)
                          for q, qa in enumerate(_field(paragraph, "qas", list, where))]
    return unique_ids(questions, str(path))


def unique_ids(questions: list[Question], where: str) -> list[Question]:
    """``questions``, unless an id appears twice (predictions are keyed by id): then ``DataError`` at ``where``."""
    seen: set[str] = set()
    for question in questions:
        if question.id in seen:
            raise DataError(f"{where}: question id {question.id} appears twice; ids must be unique")
        seen.add(question.id)
    if not questions:
        raise DataError(f"{where} has no questions")
    return questions


def _from_hub(split: str) -> list[Question]:
    from datasets import load_dataset

    try:
        rows = load_dataset(HUB_ID, split=split)
    except Exception as err:  # noqa: BLE001 - any failure here means "no hub": say what to provide instead
        raise DataError(f"SQuAD: no data.squad_dir is set and the hub ({HUB_ID}) is unreachable "
                        f"({type(err).__name__}): set data.squad_dir=DIR (the official JSON files) or SQUAD_DIR") from None
    articles: dict[str, int] = {}  # title -> position: the hub's rows keep the file's article order
    questions = []
    for i, row in enumerate(rows):
        answers = [{"text": t, "answer_start": s} for t, s in zip(row["answers"]["text"],
                                                                   row["answers"]["answer_start"], strict=True)]
        article = articles.setdefault(row["title"], len(articles))
        questions.append(checked_question(f"{HUB_ID} {split} row {i}", article, row["context"],
                                          {"id": row["id"], "question": row["question"], "answers": answers}))
    return unique_ids(questions, f"{HUB_ID} {split}")


def article_split(n_articles: int, seed: int, train_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(training articles, evaluation articles), each ascending: a seeded draw of ``round(train_fraction * n)``
    articles trains, the rest evaluate; ``DataError`` when either side would be empty."""
    k = round(train_fraction * n_articles)
    if not 0 < k < n_articles:
        raise DataError(f"{n_articles} article(s) cannot be split with task.train_fraction={train_fraction}: both "
                        "sides need at least one article")
    order = np.random.default_rng(seed).permutation(n_articles)
    return np.sort(order[:k]), np.sort(order[k:])


def answer_tokens(offsets: list[tuple[int, int]], sequence_ids: list[int | None], start_char: int,
                  end_char: int) -> tuple[int, int]:
    """The first and last token (inclusive) of the answer at characters [start_char, end_char) of the context in
    one window, or (0, 0), the CLS token, when the window's context part does not hold the whole answer.
    ``offsets`` and ``sequence_ids`` are the window's, as a fast tokenizer returns them (context: sequence 1)."""
    context = [i for i, s in enumerate(sequence_ids) if s == 1]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return 0, 0
    start = max(i for i in context if offsets[i][0] <= start_char)
    end = min(i for i in context if offsets[i][1] >= end_char)
    return start, end


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, in_context: np.ndarray, n_best: int,
              max_answer_len: int) -> tuple[float, int, int] | None:
    """(score, first token, last token) of the best candidate span of one window, or None: the ``n_best`` highest
    start and end logits (each (T,)) are paired; a pair counts when both tokens are in the context (``in_context``
    (T,)), end >= start and the span has at most ``max_answer_len`` tokens; its score is the sum of the two logits."""
    starts = np.argsort(start_logits)[::-1][:n_best]
    ends = np.argsort(end_logits)[::-1][:n_best]
    first, last = starts[:, None], ends[None, :]
    valid = in_context[first] & in_context[last] & (last >= first) & (last - first + 1 <= max_answer_len)
    if not valid.any():
        return None
    scores = np.where(valid, start_logits[first] + end_logits[last], -np.inf)
    i, j = np.unravel_index(np.argmax(scores), scores.shape)
    return float(scores[i, j]), int(starts[i]), int(ends[j])


def best_answers(contexts: list[str], windows: list[Window], start_logits: list[np.ndarray],
                 end_logits: list[np.ndarray], n_best: int, max_answer_len: int) -> list[str]:
    """One answer per context (question): the text of the best-scoring candidate span over all of its windows
    (``best_span``), cut from the context by the tokens' character offsets; "" when no window has a candidate.
    ``start_logits[k]``, ``end_logits[k]``: window k's logits, at least as long as its offsets (padding is cut)."""
    best: list[tuple[float, str] | None] = [None] * len(contexts)
    for window, start, end in zip(windows, start_logits, end_logits, strict=True):
        n = len(window.offsets)
        span = best_span(start[:n], end[:n], window.in_context, n_best, max_answer_len)
        if span is None:
            continue
        score, first, last = span
        current = best[window.question]
        if current is None or score > current[0]:
            text = contexts[window.question][window.offsets[first][0]:window.offsets[last][1]]
            best[window.question] = (score, text)
    return [b[1] if b is not None else "" for b in best]


@register_task_family("squad")
class SquadTask(Task):
    """SQuAD v1.1 with a question-answering head (a start and an end logit per token)."""

    head = "qa"
    num_labels = 2  # start and end
    metrics = (Metric("exact_match"), Metric("f1"))
    data_dir_key = "squad_dir"

    def __init__(self, cfg: DictConfig, data: DictConfig) -> None:
        super().__init__(cfg, data)
        self.headline = cfg.headline_metric
        if self.headline not in [m.name for m in self.metrics]:
            raise ConfigError(f"task.headline_metric={self.headline!r} is not one of exact_match, f1")
        if cfg.split not in SPLITS:
            raise ConfigError(f"task.split={cfg.split!r} is not one of {', '.join(SPLITS)}")
        if isinstance(cfg.train_fraction, bool) or not isinstance(cfg.train_fraction, int | float) \
                or not 0 < cfg.train_fraction < 1:
            raise ConfigError(f"task.train_fraction={cfg.train_fraction} must be in (0, 1)")
        for key, least, optional in (("doc_stride", 1, True), ("n_best", 1, False), ("max_answer_len", 1, False),
                                     ("max_eval_questions", 1, True), ("split_seed", 0, False)):
            value = cfg[key]
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"task.{key}={value!r} must be an integer of at least {least}"
                                  + (", or null" if optional else ""))
        # "official" only for the whole official dev set after training on the train file: no table sets the
        # dev_articles split or a capped evaluation beside the paper's row
        cap = cfg.max_eval_questions
        self.protocol = ", ".join([cfg.split, *([f"first {cap} questions"] if cap is not None else [])])
        self.questions: dict[str, list[Question]] = {}  # "train", "dev" (the evaluation split)
        self.train_set: Dataset | None = None
        self.eval_loader: DataLoader | None = None
        self.windows: list[Window] = []  # the evaluation windows, in loader order
        self.predictions: dict[str, str] = {}  # the last evaluation's answers by question id
        self._batching: Batching | None = None
        self._collate: TargetSplitter | None = None

    def read(self) -> None:
        cfg = self.cfg
        if cfg.split == "official":
            self.questions = {"train": self._read("train"), "dev": self._read("dev")}
        else:
            dev = self._read("dev")
            articles = sorted({q.article for q in dev})  # the articles that hold questions, by file position
            train, _ = article_split(len(articles), int(cfg.split_seed), cfg.train_fraction)
            train_articles = {articles[i] for i in train}
            self.questions = {"train": [q for q in dev if q.article in train_articles],
                              "dev": [q for q in dev if q.article not in train_articles]}
        if cfg.max_eval_questions is not None:
            self.questions["dev"] = self.questions["dev"][:cfg.max_eval_questions]
        # what selected the examples, so that the data fingerprint tells the splits apart
        self.sources.append(f"split={cfg.split} split_seed={cfg.split_seed} train_fraction={cfg.train_fraction} "
                            f"max_eval_questions={cfg.max_eval_questions}")

    def _read(self, split: str) -> list[Question]:
        root = self.data.get("squad_dir")
        if root is None:
            self.sources.append(f"hub:{HUB_ID}/{HUB_SPLITS[split]}")
            return _from_hub(HUB_SPLITS[split])
        folder = Path(root).expanduser()
        if not folder.is_dir():
            raise DataError(f"data.squad_dir={root} does not exist: point data.squad_dir (or SQUAD_DIR) at the "
                            "official SQuAD v1.1 JSON files, or unset it to use the hub")
        file = folder / self.cfg.files[split]
        hint = (f"data.squad_dir must hold the official {', '.join(self.cfg.files.values())}; with the dev file "
                "alone, use task.split=dev_articles")
        questions = read_squad_file(file, hint)
        self.sources.append(file)
        return questions

    def encode(self, processor: Any, batching: Batching) -> None:
        tokenizer = processor
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError("SQuAD maps answers to tokens through offset mappings, which need a fast tokenizer; "
                              "use a model whose tokenizer has one (model.tokenizer=...)")
        if tokenizer.padding_side != "right":
            raise ConfigError(f"SQuAD needs the tokenizer to pad on the right (the context follows the question); "
                              f"{type(tokenizer).__name__} pads on the {tokenizer.padding_side}")
        self._batching = batching
        collate = DataCollatorWithPadding(tokenizer)
        self._collate = TargetSplitter(collate, TARGETS)
        self.train_set = self._train_windows(tokenizer, self.questions["train"], batching.max_seq_len)
        evals, self.windows = self._eval_windows(tokenizer, self.questions["dev"], batching.max_seq_len)
        self.eval_loader = make_loader(evals, batching.eval_batch_size, TargetSplitter(collate, ()),
                                       batching.num_workers)

    def stride(self, max_len: int) -> int:
        """The tokens two consecutive windows share: ``task.doc_stride``, or (null) a third of the window, the
        ratio of the usual 128 of 384."""
        return self.cfg.doc_stride if self.cfg.doc_stride is not None else max_len // 3

    def check_batching(self, batching: Batching) -> None:
        if self.stride(batching.max_seq_len) >= batching.max_seq_len - 4:  # [CLS] q [SEP] c [SEP]: one token each
            raise ConfigError(f"task.doc_stride={self.cfg.doc_stride} leaves no room in a window of trainer.max_seq_len"
                              f"={batching.max_seq_len} for a question and new context; keep it well below, e.g. "
                              "trainer.max_seq_len=384 task.doc_stride=128 (or task.doc_stride=null: a third)")

    def _tokenize(self, tokenizer: Any, questions: list[Question], max_len: int) -> Any:
        """Question-context pairs in overlapping windows of ``max_len`` tokens; ``ConfigError`` first when a
        question leaves no more than ``task.doc_stride`` tokens of a window for its context (the tokenizer would
        abort the process)."""
        stride = self.stride(max_len)
        texts = [q.question.lstrip() for q in questions]
        room = max_len - tokenizer.num_special_tokens_to_add(pair=True)
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        for question, length in zip(questions, lengths, strict=True):
            if room - length <= stride:
                raise ConfigError(f"question {question.id} has {length} tokens, so a window of trainer.max_seq_len="
                                  f"{max_len} has {room - length} for its context, which must exceed the overlap "
                                  f"task.doc_stride={stride}; raise trainer.max_seq_len or lower task.doc_stride")
        return tokenizer(texts, [q.context for q in questions], truncation="only_second", max_length=max_len,
                         stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True)

    def _train_windows(self, tokenizer: Any, questions: list[Question], max_len: int) -> Dataset:
        """Every window with the first gold answer's token span (CLS, 0, where the window lacks the answer)."""
        encoded = self._tokenize(tokenizer, questions, max_len)
        positions = []
        for k, (q, offsets) in enumerate(zip(encoded.pop("overflow_to_sample_mapping"),
                                             encoded.pop("offset_mapping"), strict=True)):
            start, text = questions[q].starts[0], questions[q].answers[0]
            positions.append(answer_tokens(offsets, encoded.sequence_ids(k), start, start + len(text)))
        starts, ends = zip(*positions, strict=True)
        return Dataset.from_dict({**encoded, "start_positions": list(starts), "end_positions": list(ends)})

    def _eval_windows(self, tokenizer: Any, questions: list[Question], max_len: int) -> tuple[Dataset, list[Window]]:
        """The model inputs of every window, and each window's question and context offsets."""
        encoded = self._tokenize(tokenizer, questions, max_len)
        windows = []
        for k, (q, offsets) in enumerate(zip(encoded.pop("overflow_to_sample_mapping"),
                                             encoded.pop("offset_mapping"), strict=True)):
            in_context = np.array([s == 1 for s in encoded.sequence_ids(k)])
            windows.append(Window(q, np.array(offsets, dtype=np.int64).reshape(-1, 2), in_context))
        return Dataset.from_dict(dict(encoded)), windows

    def train_batches(self, shuffle_seed: int) -> DataLoader:
        return make_loader(self.train_set, self._batching.batch_size, self._collate, self._batching.num_workers,
                           shuffle_seed)

    def loss(self, outputs: Any, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        start = F.cross_entropy(outputs.start_logits.float(), targets["start_positions"])
        end = F.cross_entropy(outputs.end_logits.float(), targets["end_positions"])
        return (start + end) / 2

    def evaluate(self, predict: Predict) -> dict[str, float]:
        start_logits, end_logits = [], []
        for batch in self.eval_loader:
            outputs = predict(batch["inputs"])
            start_logits += list(outputs.start_logits.float().cpu().numpy())
            end_logits += list(outputs.end_logits.float().cpu().numpy())
        questions = self.questions["dev"]
        answers = best_answers([q.context for q in questions], self.windows, start_logits, end_logits,
                               self.cfg.n_best, self.cfg.max_answer_len)
        self.predictions = {q.id: answer for q, answer in zip(questions, answers, strict=True)}
        return squad_scores(answers, [q.answers for q in questions])

    def artifacts(self) -> dict[str, Any]:
        return {"predictions": dict(self.predictions)}
