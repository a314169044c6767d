"""MMLU (Hendrycks et al., ICLR 2021) as an evaluation of a causal LM, from the official CSV folder.

Data (``data.mmlu_dir``, env ``MMLU_DIR``): ``dev/<subject>_dev.csv`` (the few-shot exemplars) and
``test/<subject>_test.csv`` as in the official ``data.tar``: no header, six RFC-4180 fields per row (``question, A, B,
C, D, answer``, the answer a letter), fields may hold newlines, row endings mixed; read with ``csv`` and kept as
strings (options such as ``None`` or ``0.50`` stay text). A malformed row is one ``DataError`` naming file and line.

Subjects and categories: the 57 subjects and lm-evaluation-harness's mapping of each to ``stem``, ``social``
(its ``social_sciences``), ``humanities`` or ``other`` (``lm_eval/tasks/mmlu/_generate_configs.py``).
``task.subjects`` (``eval.mmlu_subjects``) picks some; ``task.subset`` (``eval.mmlu_subset``) = N scores a fixed
subset of N test questions, stratified by subject (each subject's share by largest remainder, drawn with
``random.Random(task.subset_seed)``, kept in file order). The record's ``task.protocol`` is ``official`` for all
57 subjects, every test question and the harness scoring (the original evaluation's protocol, which the paper tables
set beside the papers' rows), else the scoring and what was left out (``letter_logits, 4 of 57 subjects``).

Prompts, ``k`` shots = the first ``k`` dev rows of the subject in file order (as the original evaluation and the
harness, whose ``first_n`` sampler reads the dev split in order):

- ``harness``: lm-evaluation-harness's MMLU task (``mmlu/default/_default_template_yaml``; the earlier
  ``hendrycks_test.py`` builds the same text): ``"The following are multiple choice questions (with answers) about
  {subject, _ -> space}.\\n\\n"``, then each exemplar as ``"{question stripped}\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\n
  Answer: {letter}\\n\\n"``, then the test question ending in ``"Answer:"``. Encoded without special tokens (the
  harness adds no BOS for causal LMs by default); the choice is the highest log-likelihood of the continuations
  ``" A"`` .. ``" D"`` (the harness's ``acc``). A continuation must be one token after ``"Answer:"`` (true of
  SmolLM2's vocabulary and of MiniLM's WordPiece; checked when prompts are encoded, else ``ConfigError``).
- ``letter_logits``: LLaMA-Factory's evaluator (``src/llamafactory/eval/{evaluator,template}.py``, template ``en``):
  the exemplars as user/assistant turns (user: ``"{question}\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\nAnswer:"``,
  assistant: the letter), the same header prepended to the first user turn, rendered with the tokenizer's chat
  template and its generation prompt; the choice is the largest next-token logit among the tokens of ``"A"`` ..
  ``"D"`` (the last token of each, encoded without special tokens). LLaMA-Factory draws its exemplars at random
  from dev; here they are the first ``k``, so every run scores the same prompts.

Prompts longer than ``task.max_len`` (``eval.mmlu_max_len``; null: ``trainer.max_seq_len``, clamped to the model)
lose their first tokens, as the harness truncates on the left; the fraction of prompts cut is the metric
``mmlu_<k>shot_truncated``. 5-shot prompts run to about 2,000 tokens: the harness's window is 2048 (the recipe's);
``eval.mmlu_max_len`` is not clamped to the model, so that training can keep a shorter ``trainer.max_seq_len``.

Scoring is batched and, where the model returns a KV cache, the token prefix that every prompt of a subject shares
(header and exemplars; found as the longest common prefix of the encoded prompts, so the tokens are exactly those of
the whole prompts) runs once per subject and shot count, and the questions continue from a copy of its cache.
``cached=False`` scores every prompt whole; both give the same log-likelihoods (``tests/tasks/test_mmlu.py``).

Metrics per shot count ``k`` (``task.shots``): ``mmlu_<k>shot_{stem,social,humanities,other,avg}``, each the
fraction of correct questions in the category (question-weighted; NaN for a category with no question), ``avg``
over all scored questions. ``artifacts()`` gives ``{"mmlu": {"<k>": {subject: {"correct", "total", "accuracy"}}}}``,
written beside the record. MMLU has no training split: run it with ``eval_only=true``.
"""

import copy
import csv
import logging
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from qgoft_bench.errors import ConfigError, DataError
from qgoft_bench.tasks.base import Batching, Metric, Predict, Task, register_task_family

# lm-evaluation-harness's subject -> category (lm_eval/tasks/mmlu/_generate_configs.py), social_sciences -> social
SUBJECT_CATEGORIES: dict[str, str] = {
    "abstract_algebra": "stem", "anatomy": "stem", "astronomy": "stem", "business_ethics": "other",
    "clinical_knowledge": "other", "college_biology": "stem", "college_chemistry": "stem",
    "college_computer_science": "stem", "college_mathematics": "stem", "college_medicine": "other",
    "college_physics": "stem", "computer_security": "stem", "conceptual_physics": "stem", "econometrics": "social",
    "electrical_engineering": "stem", "elementary_mathematics": "stem", "formal_logic": "humanities",
    "global_facts": "other", "high_school_biology": "stem", "high_school_chemistry": "stem",
    "high_school_computer_science": "stem", "high_school_european_history": "humanities",
    "high_school_geography": "social", "high_school_government_and_politics": "social",
    "high_school_macroeconomics": "social", "high_school_mathematics": "stem", "high_school_microeconomics": "social",
    "high_school_physics": "stem", "high_school_psychology": "social", "high_school_statistics": "stem",
    "high_school_us_history": "humanities", "high_school_world_history": "humanities", "human_aging": "other",
    "human_sexuality": "social", "international_law": "humanities", "jurisprudence": "humanities",
    "logical_fallacies": "humanities", "machine_learning": "stem", "management": "other", "marketing": "other",
    "medical_genetics": "other", "miscellaneous": "other", "moral_disputes": "humanities",
    "moral_scenarios": "humanities", "nutrition": "other", "philosophy": "humanities", "prehistory": "humanities",
    "professional_accounting": "other", "professional_law": "humanities", "professional_medicine": "other",
    "professional_psychology": "social", "public_relations": "social", "security_studies": "social",
    "sociology": "social", "us_foreign_policy": "social", "virology": "other", "world_religions": "humanities",
}  # fmt: skip
CATEGORIES = ("stem", "social", "humanities", "other")
LETTERS = ("A", "B", "C", "D")
SCORINGS = ("harness", "letter_logits")
HUB_ID = "cais/mmlu"  # read (config "all", splits dev and test) when data.mmlu_dir is not set

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Question:
    """One MMLU row: ``answer`` is the index (0-3) of the correct choice; ``where`` is ``FILE:LINE``."""

    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int
    where: str


def read_subject_csv(path: Path, subject: str) -> list[Question]:
    """Every row of one official MMLU CSV file; ``DataError`` naming file and line for a missing file, a row
    without six fields, an empty question or an answer that is not A-D."""
    if not path.is_file():
        raise DataError(f"data file {path} is missing: point data.mmlu_dir (or MMLU_DIR) at the MMLU folder "
                        "(dev/, test/)")
    questions = []
    with open(path, encoding="utf-8-sig", newline="") as f:  # a byte-order mark is allowed
        reader = csv.reader(f)
        try:
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if len(row) != 6:
                    raise DataError(f"{where}: {len(row)} fields, MMLU rows have 6 (question, A, B, C, D, answer)")
                if not row[0].strip():
                    raise DataError(f"{where}: the question is empty")
                if row[5] not in LETTERS:
                    raise DataError(f"{where}: answer {row[5]!r} is not one of A, B, C, D")
                questions.append(Question(subject, row[0], tuple(row[1:5]), LETTERS.index(row[5]), where))
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: byte 0x{err.object[err.start]:02x} is not UTF-8") from None
        except csv.Error as err:
            raise DataError(f"{path}:{reader.line_num}: {err}") from None
    if not questions:
        raise DataError(f"{path} has no rows")
    return questions


def mmlu_from_hub(split: str, subjects: list[str]) -> dict[str, list[Question]]:
    """The ``split`` (dev or test) rows of ``HUB_ID`` for ``subjects``, by subject in the hub's order (the files'
    order); ``DataError`` when the hub cannot be reached or a row is malformed (naming its index)."""
    from datasets import load_dataset

    try:
        rows = load_dataset(HUB_ID, "all", split=split)
    except Exception as err:  # noqa: BLE001 - any failure here means "no hub": say what to provide instead
        raise DataError(f"no data.mmlu_dir is set and the hub ({HUB_ID}) is unreachable ({type(err).__name__}): set "
                        "data.mmlu_dir=DIR (the official CSV folder: dev/, test/) or MMLU_DIR") from None
    questions: dict[str, list[Question]] = {subject: [] for subject in subjects}
    for i, row in enumerate(rows):
        if row["subject"] not in questions:
            continue
        where = f"{HUB_ID} {split} row {i}"
        if len(row["choices"]) != 4 or row["answer"] not in range(4) or not str(row["question"]).strip():
            raise DataError(f"{where}: needs a question, 4 choices and an answer 0-3")
        questions[row["subject"]].append(Question(row["subject"], row["question"], tuple(row["choices"]),
                                                  int(row["answer"]), where))
    if missing := [subject for subject, rows in questions.items() if not rows]:
        raise DataError(f"{HUB_ID} {split} has no rows for {missing[:3]}")
    return questions


def subject_header(subject: str) -> str:
    """The description both formats start with."""
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def harness_example(question: Question, with_answer: bool) -> str:
    """One question in the harness's format, ending in ``"Answer:"`` (plus ``" X"`` for an exemplar)."""
    options = "".join(f"{letter}. {choice}\n" for letter, choice in zip(LETTERS, question.choices, strict=True))
    text = f"{question.question.strip()}\n{options}Answer:"
    return f"{text} {LETTERS[question.answer]}" if with_answer else text


def harness_prompt(question: Question, shots: list[Question]) -> str:
    """The whole harness context for ``question`` after the exemplars ``shots``."""
    examples = "".join(harness_example(shot, True) + "\n\n" for shot in shots)
    return subject_header(question.subject) + examples + harness_example(question, False)


def chat_messages(question: Question, shots: list[Question]) -> list[dict[str, str]]:
    """LLaMA-Factory's ``en`` evaluation turns for ``question`` (without its answer turn)."""

    def user(q: Question) -> str:
        return q.question + "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices,
                                                                                       strict=True)) + "\nAnswer:"

    messages = []
    for shot in shots:
        messages += [{"role": "user", "content": user(shot)}, {"role": "assistant", "content": LETTERS[shot.answer]}]
    messages.append({"role": "user", "content": user(question)})
    messages[0]["content"] = subject_header(question.subject) + messages[0]["content"]
    return messages


def stratified_subset(sizes: dict[str, int], n: int, seed: int) -> dict[str, list[int]]:
    """Indices (sorted) of ``n`` of the questions, ``sizes[subject]`` per subject: each subject's quota is its share
    of ``n`` by largest remainder (ties to the subject first in sorted order), drawn with ``random.Random(seed)``
    over the subjects in sorted order."""
    total = sum(sizes.values())
    shares = {subject: n * size / total for subject, size in sizes.items()}
    quota = {subject: math.floor(share) for subject, share in shares.items()}
    by_remainder = sorted(sizes, key=lambda s: (-(shares[s] - quota[s]), s))
    for subject in by_remainder[: n - sum(quota.values())]:
        quota[subject] += 1
    rng = random.Random(seed)
    return {subject: sorted(rng.sample(range(sizes[subject]), quota[subject])) for subject in sorted(sizes)}


def _common_prefix(sequences: list[list[int]]) -> int:
    """Length of the longest common prefix of ``sequences``, less one token when it is a whole sequence (every
    sequence keeps a token to score)."""
    shortest = min(len(s) for s in sequences)
    length = 0
    while length < shortest and all(s[length] == sequences[0][length] for s in sequences):
        length += 1
    return min(length, shortest - 1)


def _cache_of(outputs: Any) -> tuple[str, Any] | None:
    """(keyword, cache) of a causal LM's outputs, the keyword the model takes it back under: ``cache`` in recent
    transformers (5.24 here), ``past_key_values`` before; None when the model returned none (no KV cache)."""
    for key in ("cache", "past_key_values"):
        value = outputs.get(key) if hasattr(outputs, "get") else None
        if value is not None:
            return key, value
    return None


def _last_logprobs(predict: Predict, ids: list[list[int]], choice_ids: list[int], prefix: tuple[str, Any] | None,
                   prefix_len: int) -> torch.Tensor:
    """log-softmax at each sequence's last token, at ``choice_ids``: (len(ids), len(choice_ids)), float32 on CPU.

    ``ids`` are padded on the right (the causal mask keeps pads out of earlier positions); with ``prefix`` (its
    cache's keyword and the cache of ``prefix_len`` tokens, batch 1) they continue from a copy of that cache
    repeated over the batch. Only the logits of the positions read are computed (``logits_to_keep``)."""
    lengths = torch.tensor([len(s) for s in ids])
    width = int(lengths.max())
    input_ids = torch.zeros(len(ids), width, dtype=torch.long)
    mask = torch.zeros(len(ids), prefix_len + width, dtype=torch.long)
    mask[:, :prefix_len] = 1
    for row, sequence in enumerate(ids):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, prefix_len : prefix_len + len(sequence)] = 1
    positions = torch.unique(lengths - 1)  # the positions read, sorted
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask, "logits_to_keep": positions}
    if prefix is not None:
        key, cache = prefix
        cache = copy.deepcopy(cache)
        cache.batch_repeat_interleave(len(ids))
        inputs |= {key: cache, "use_cache": True}
    logits = predict(inputs).logits.float().cpu()  # (B, len(positions), V)
    column = torch.searchsorted(positions, lengths - 1)
    last = logits[torch.arange(len(ids)), column]
    return torch.log_softmax(last, dim=-1)[:, choice_ids]


def score(predict: Predict, prompts: list[list[int]], choice_ids: list[int], batch_size: int,
          cached: bool = True) -> torch.Tensor:
    """log p(choice token | prompt) for every prompt of one group (one subject, one shot count): (N, 4) float32.

    ``cached``: the group's common token prefix runs once and, when the model returns a KV cache, every batch
    continues from it; otherwise (or without a cache) each prompt runs whole. Batches hold prompts of similar
    length (sorted by length), so padding and the positions read stay few."""
    prefix, prefix_len = None, 0
    if cached and len(prompts) > 1 and (common := _common_prefix(prompts)) > 0:
        prefix = _cache_of(predict({"input_ids": torch.tensor([prompts[0][:common]]), "use_cache": True,
                                    "logits_to_keep": 1}))
        prefix_len = common if prefix is not None else 0
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    result = torch.empty(len(prompts), len(choice_ids))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        result[rows] = _last_logprobs(predict, [prompts[i][prefix_len:] for i in rows], choice_ids, prefix,
                                      prefix_len)
    return result


@register_task_family("mmlu")
class MmluTask(Task):
    """MMLU scored zero- and few-shot (see the module docstring); an evaluation only (``eval_only=true``)."""

    head = "causal_lm"
    num_labels = 0
    data_dir_key = "mmlu_dir"
    has_train_split = False

    def __init__(self, cfg: DictConfig, data: DictConfig) -> None:
        super().__init__(cfg, data)
        self.shots = [int(k) for k in cfg.shots]
        if not self.shots or any(k < 0 or k > 5 for k in self.shots) or len(set(self.shots)) != len(self.shots):
            raise ConfigError(f"eval.mmlu_shots={list(cfg.shots)} must be distinct shot counts in 0..5 (the dev "
                              "split has 5 rows per subject)")
        if cfg.scoring not in SCORINGS:
            raise ConfigError(f"eval.mmlu_scoring={cfg.scoring!r} is not one of {', '.join(SCORINGS)}")
        self.scoring = cfg.scoring
        self.subjects = sorted(SUBJECT_CATEGORIES) if cfg.subjects is None else list(cfg.subjects)
        unknown = [s for s in self.subjects if s not in SUBJECT_CATEGORIES]
        if unknown or not self.subjects:
            raise ConfigError(f"eval.mmlu_subjects: unknown {unknown or 'empty list'}; the subjects are the file "
                              "names' stems, e.g. abstract_algebra (null: all 57)")
        self.subset = cfg.subset
        if self.subset is not None and (isinstance(self.subset, bool) or not isinstance(self.subset, int)
                                        or self.subset < 1):
            raise ConfigError(f"eval.mmlu_subset={self.subset!r} must be a positive number of questions or null")
        self.subset_seed = int(cfg.subset_seed)
        self.max_len = cfg.get("max_len")
        if self.max_len is not None and (isinstance(self.max_len, bool) or not isinstance(self.max_len, int)
                                         or self.max_len < 2):
            raise ConfigError(f"eval.mmlu_max_len={self.max_len!r} must be a number of tokens (>= 2) or null")
        self.metrics = tuple(Metric(f"mmlu_{k}shot_{part}") for k in self.shots for part in (*CATEGORIES, "avg")) + \
            tuple(Metric(f"mmlu_{k}shot_truncated", higher_is_better=False) for k in self.shots)
        self.headline = f"mmlu_{max(self.shots)}shot_avg"
        qualifiers = []
        if len(self.subjects) < len(SUBJECT_CATEGORIES):
            qualifiers.append(f"{len(self.subjects)} of {len(SUBJECT_CATEGORIES)} subjects")
        if self.subset is not None:
            qualifiers.append(f"stratified subset of {self.subset} test questions (seed {self.subset_seed})")
        # the whole test set scored as the original evaluation and the harness score it is the official protocol
        # (the paper tables set such records beside the papers' rows); anything else says what it is
        official = self.scoring == "harness" and not qualifiers
        self.protocol = "official" if official else ", ".join([self.scoring, *qualifiers])
        self.dev: dict[str, list[Question]] = {}
        self.test: dict[str, list[Question]] = {}
        self.prompts: dict[int, dict[str, list[list[int]]]] = {}
        self.truncated: dict[int, int] = {}
        self.choice_ids: list[int] = []
        self.batch_size = 1
        self._artifacts: dict[str, Any] = {}

    def read(self) -> None:
        """Read the dev and test file of every subject (the hub's ``HUB_ID`` without ``data.mmlu_dir``) and draw the
        subset; ``DataError`` naming file and line."""
        if self.data.get("mmlu_dir") is None:
            self.dev, self.test = mmlu_from_hub("dev", self.subjects), mmlu_from_hub("test", self.subjects)
            self.sources += [f"hub:{HUB_ID}/all/dev", f"hub:{HUB_ID}/all/test"]
        else:
            root = Path(str(self.data.mmlu_dir)).expanduser()
            for subject in self.subjects:
                paths = {split: root / split / f"{subject}_{split}.csv" for split in ("dev", "test")}
                self.dev[subject] = read_subject_csv(paths["dev"], subject)
                self.test[subject] = read_subject_csv(paths["test"], subject)
                self.sources += [paths["dev"], paths["test"]]
        for subject, exemplars in self.dev.items():
            if len(exemplars) < max(self.shots):
                raise DataError(f"{exemplars[0].where.rpartition(':')[0] or subject} has {len(exemplars)} dev rows, "
                                f"fewer than {max(self.shots)} shots")
        if self.subset is not None:
            total = sum(len(questions) for questions in self.test.values())
            if self.subset > total:
                raise ConfigError(f"eval.mmlu_subset={self.subset} is more than the {total} test questions")
            keep = stratified_subset({s: len(q) for s, q in self.test.items()}, self.subset, self.subset_seed)
            self.test = {s: [self.test[s][i] for i in keep[s]] for s in self.subjects if keep[s]}

    def encode(self, processor: Any, batching: Batching) -> None:
        """Every prompt of every shot count as token ids (left-truncated to ``task.max_len``, else
        ``batching.max_seq_len``); the choice tokens. ``ConfigError`` for a tokenizer without a chat template (``letter_logits``) or whose continuation
        ``" A"`` is not one token after ``"Answer:"`` (``harness``)."""
        tokenizer = processor
        self.batch_size = batching.eval_batch_size
        limit = self.max_len or batching.max_seq_len

        def encode(text: str) -> list[int]:
            return tokenizer(text, add_special_tokens=False)["input_ids"]

        if self.scoring == "harness":
            context = encode("Answer:")
            self.choice_ids = []
            for letter in LETTERS:
                whole = encode(f"Answer: {letter}")
                if whole[: len(context)] != context or len(whole) != len(context) + 1:
                    raise ConfigError(f"the tokenizer encodes ' {letter}' after 'Answer:' as {len(whole) - len(context)} "
                                      "tokens; eval.mmlu_scoring=harness scores one-token continuations")
                self.choice_ids.append(whole[-1])
        else:
            if not getattr(tokenizer, "chat_template", None):
                raise ConfigError("eval.mmlu_scoring=letter_logits renders prompts with the model's chat template, "
                                  "and this tokenizer has none; use eval.mmlu_scoring=harness")
            self.choice_ids = [encode(letter)[-1] for letter in LETTERS]

        for k in self.shots:
            self.prompts[k], self.truncated[k] = {}, 0
            for subject, questions in self.test.items():
                shots = self.dev[subject][:k]
                if self.scoring == "harness":
                    texts = [harness_prompt(q, shots) for q in questions]
                else:
                    texts = [tokenizer.apply_chat_template(chat_messages(q, shots), tokenize=False,
                                                           add_generation_prompt=True) for q in questions]
                ids = [encode(text) for text in texts]
                self.truncated[k] += sum(len(s) > limit for s in ids)
                self.prompts[k][subject] = [s[-limit:] for s in ids]

    def evaluate(self, predict: Predict) -> dict[str, float]:
        """Accuracy per category and overall for every shot count; per subject in ``artifacts()``."""
        metrics: dict[str, float] = {}
        per_subject: dict[str, dict[str, dict[str, float]]] = {}
        for k in self.shots:
            started = time.perf_counter()
            correct: dict[str, int] = defaultdict(int)
            total: dict[str, int] = defaultdict(int)
            per_subject[str(k)] = {}
            for subject, questions in self.test.items():
                logprobs = score(predict, self.prompts[k][subject], self.choice_ids, self.batch_size)
                right = int(sum(int(choice) == q.answer for choice, q in zip(logprobs.argmax(-1), questions,
                                                                                   strict=True)))
                per_subject[str(k)][subject] = {"correct": right, "total": len(questions),
                                                "accuracy": right / len(questions)}
                for part in (SUBJECT_CATEGORIES[subject], "avg"):
                    correct[part] += right
                    total[part] += len(questions)
            for part in (*CATEGORIES, "avg"):
                metrics[f"mmlu_{k}shot_{part}"] = correct[part] / total[part] if total[part] else math.nan
            metrics[f"mmlu_{k}shot_truncated"] = self.truncated[k] / total["avg"]
            log.info("MMLU %d-shot (%s): %d questions, accuracy %.4f, %.0f s", k, self.scoring, total["avg"],
                     metrics[f"mmlu_{k}shot_avg"], time.perf_counter() - started)
        self._artifacts = {"mmlu": per_subject}
        return metrics

    def artifacts(self) -> dict[str, Any]:
        """``{"mmlu": {"<k>": {subject: {"correct", "total", "accuracy"}}}}`` of the last evaluation."""
        return self._artifacts

    def train_batches(self, shuffle_seed: int) -> DataLoader:
        raise ConfigError(f"task {self.name} has no training split: run it with eval_only=true")

    def loss(self, outputs: Any, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        raise ConfigError(f"task {self.name} has no training split: run it with eval_only=true")
