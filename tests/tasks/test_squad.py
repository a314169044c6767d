"""SQuAD v1.1: EM and F1 by hand and against torchmetrics' SQuAD metric (the official script's definitions), the
windows' start/end targets, post-processing across windows, the seeded split by article, one-line data errors,
and a tiny model training to a record with its predictions file."""

import importlib
import json
import random
import string
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from qgoft_bench.config import compose_config
from qgoft_bench.errors import ConfigError, DataError
from qgoft_bench.models.hf import load_tokenizer
from qgoft_bench.records import record_path
from qgoft_bench.tasks import Batching, build_task, fingerprint
from qgoft_bench.tasks.metrics import normalize_answer, squad_scores, token_f1
from qgoft_bench.tasks.squad import SquadTask, answer_tokens
from qgoft_bench.train import run_experiment
from qgoft_bench.train.preflight import validate
from tests.conftest import REPO

# torchmetrics' SQuAD metric, the official evaluate-v1.1.py's definitions (the package re-exports the function under
# the module's name, hence the import by path)
TORCHMETRICS_SQUAD = importlib.import_module("torchmetrics.functional.text.squad")
SHARED = REPO.parent / "shared" / "data" / "squad"
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
           "thirteen", "fourteen", "fifteen"]
COLOURS = ["red", "blue", "green", "yellow", "black", "white"]


def make_squad_fixture(root: Path, n_articles: int = 8, paragraphs: int = 2, questions: int = 3) -> Path:
    """``train-v1.1.json`` and ``dev-v1.1.json`` in the official format. Each paragraph names a colour for a few
    objects ("The colour of the box is red."), and each question asks for one: learnable from the context."""
    rng = random.Random(0)
    objects = ["box", "car", "door", "hat", "cup", "book", "lamp", "ship"]

    def article(split: str, a: int) -> dict:
        items = []
        for p in range(paragraphs):
            named = rng.sample(objects, questions)
            colours = [rng.choice(COLOURS) for _ in named]
            context = " ".join(f"The colour of the {o} is {c}." for o, c in zip(named, colours, strict=True))
            qas = [{"id": f"{split}-{a}-{p}-{q}", "question": f"  What is the colour of the {o}?",
                    "answers": [{"text": c, "answer_start": context.index(f"{o} is {c}") + len(f"{o} is ")}] * 2}
                   for q, (o, c) in enumerate(zip(named, colours, strict=True))]
            items.append({"context": context, "qas": qas})
        return {"title": f"Article_{a}", "paragraphs": items}

    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        data = [article(split, a) for a in range(n_articles)]
        (root / f"{split}-v1.1.json").write_text(json.dumps({"data": data, "version": "1.1"}))
    return root


def squad_cfg(root: Path | None, *extra: str):
    return compose_config(["task=squad/v1", "model=tiny_bert", *extra] + ([f"data.squad_dir={root}"] if root else []))


def read_task(root: Path | None, *extra: str) -> SquadTask:
    cfg = squad_cfg(root, *extra)
    task = build_task(cfg.task, cfg.data)
    task.read()
    return task


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(compose_config(["model=tiny_bert"]).model)


@pytest.fixture
def squad_dir(tmp_path) -> Path:
    return make_squad_fixture(tmp_path / "squad")


# --- metrics -------------------------------------------------------------------------------------------------------

def test_normalisation_by_hand():
    assert normalize_answer("The  Cat's hat!") == "cats hat"
    assert normalize_answer("An apple a day, the end.") == "apple day end"
    assert normalize_answer("theatre and another anthem") == "theatre and another anthem"  # whole words only
    assert normalize_answer("U.S.\tArmy\n") == "us army"
    assert normalize_answer("café – Zürich") == "café – zürich"  # only ASCII punctuation goes


@pytest.mark.parametrize("prediction,golds,exact,f1", [
    ("the cat sat", ["a cat sat"], 1.0, 1.0),                     # articles
    ("Cat, sat!", ["cat sat"], 1.0, 1.0),                         # punctuation and case
    ("cat sat on mat", ["the cat sat"], 0.0, 2 * 0.5 * 1.0 / 1.5),  # P 2/4, R 2/2
    ("x x y", ["x y y"], 0.0, 2 / 3),                             # repeated tokens count as often as shared
    ("Broncos", ["Denver Broncos", "Carolina"], 0.0, 2 / 3),      # several golds: the best one
    ("Denver Broncos", ["Broncos", "the Denver Broncos"], 1.0, 1.0),
    ("", ["Paris"], 0.0, 0.0),                                    # empty prediction
    ("the", ["a"], 1.0, 0.0),                                     # both normalise to nothing: v1.1's EM 1, F1 0
])
def test_exact_match_and_f1_by_hand(prediction, golds, exact, f1):
    assert squad_scores([prediction], [golds]) == {"exact_match": exact, "f1": pytest.approx(f1)}


def test_scores_are_means_over_questions():
    scores = squad_scores(["cat", "dog", "cat sat on mat"], [["cat"], ["cat"], ["the cat sat"]])
    assert scores == {"exact_match": pytest.approx(1 / 3), "f1": pytest.approx((1 + 0 + 2 / 3) / 3)}
    assert token_f1("cat", "dog") == 0.0


def crafted_answers(rng: random.Random, n: int) -> list[str]:
    """Answers with case, punctuation, articles, odd whitespace and non-ASCII letters, each with one real word."""
    words = ["cat", "Denver", "broncos", "1976", "the", "a", "an", "U.S.", "café", "x", "theatre", "Mr.", "o'neil"]
    out = []
    for _ in range(n):
        tokens = [rng.choice(words) for _ in range(rng.randint(0, 4))] + [rng.choice(["cat", "1976", "café"])]
        rng.shuffle(tokens)
        glue = [rng.choice([" ", "  ", "\t", " - ", ", ", rng.choice(string.punctuation)]) for _ in tokens]
        out.append("".join(t + g for t, g in zip(tokens, glue, strict=True)))
    return out


def test_against_torchmetrics_squad():
    """torchmetrics' SQuAD metric follows the official evaluate-v1.1.py (its F1 differs only when both sides
    normalise to nothing, which the crafted answers avoid)."""
    rng = random.Random(0)
    golds = [crafted_answers(rng, rng.randint(1, 4)) for _ in range(300)]
    predictions = [rng.choice([*g, *crafted_answers(rng, 1), ""]) for g in golds]
    for text in [a for g in golds for a in g] + predictions:
        assert normalize_answer(text) == TORCHMETRICS_SQUAD._normalize_text(text)
    reference = TORCHMETRICS_SQUAD.squad(
        [{"prediction_text": p, "id": str(i)} for i, p in enumerate(predictions)],
        [{"answers": {"text": g, "answer_start": [0] * len(g)}, "id": str(i)} for i, g in enumerate(golds)])
    ours = squad_scores(predictions, golds)
    assert 0 < ours["exact_match"] < ours["f1"] < 1  # the cases are mixed
    assert 100 * ours["exact_match"] == pytest.approx(reference["exact_match"].item(), rel=1e-5)
    assert 100 * ours["f1"] == pytest.approx(reference["f1"].item(), rel=1e-5)


# --- windows and their targets -------------------------------------------------------------------------------------

def test_answer_tokens_by_hand():
    #           CLS     what    is      SEP     hello    world     again     SEP
    offsets = [(0, 0), (0, 4), (5, 7), (0, 0), (0, 5), (6, 11), (12, 17), (0, 0)]
    sequence_ids = [None, 0, 0, None, 1, 1, 1, None]
    assert answer_tokens(offsets, sequence_ids, 6, 17) == (5, 6)
    assert answer_tokens(offsets, sequence_ids, 7, 9) == (5, 5)  # inside one token
    assert answer_tokens(offsets, sequence_ids, 12, 23) == (0, 0)  # runs past the window's context
    later = [(0, 0), (0, 4), (5, 7), (0, 0), (40, 45), (46, 50), (0, 0), (0, 0)]
    assert answer_tokens(later, sequence_ids, 30, 45) == (0, 0)  # begins before the window's context


def long_question_dir(root: Path, n_words: int = 60, answer_at: int = 40) -> tuple[Path, str]:
    """One question about a context of counted words; the answer (three words) lies far from the start."""
    words = [f"{NUMBERS[i % len(NUMBERS)]}" for i in range(n_words)]
    context = " ".join(words)
    answer = " ".join(words[answer_at:answer_at + 3])
    start = len(" ".join(words[:answer_at])) + 1
    assert context[start:start + len(answer)] == answer
    qa = {"id": "q0", "question": "which words?", "answers": [{"text": answer, "answer_start": start}]}
    document = {"data": [{"title": "T", "paragraphs": [{"context": context, "qas": [qa]}]}], "version": "1.1"}
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        (root / f"{split}-v1.1.json").write_text(json.dumps(document))
    return root, answer


def test_a_window_that_cuts_the_answer_points_at_cls(tmp_path, tokenizer):
    root, answer = long_question_dir(tmp_path / "sq")
    task = read_task(root, "task.doc_stride=6")
    task.encode(tokenizer, Batching(4, 4, 24))
    question = task.questions["train"][0]
    start, end = question.starts[0], question.starts[0] + len(answer)
    holding, cut = 0, 0
    for row, window in zip(task.train_set, task.windows, strict=True):  # one question: the same windows
        context = window.offsets[window.in_context]
        first, last = row["start_positions"], row["end_positions"]
        if context[0, 0] <= start and context[-1, 1] >= end:
            holding += 1
            assert tokenizer.decode(row["input_ids"][first:last + 1]) == answer
        else:
            cut += bool(((context[:, 0] < end) & (context[:, 1] > start)).any())  # part of the answer, not all
            assert (first, last) == (0, 0)
    assert len(task.train_set) > 3 and holding >= 1 and cut >= 1


def stand_in(logits: list[tuple[np.ndarray, np.ndarray]], batch_size: int):
    """A model that returns the given per-window (start, end) logits, batch by batch, padded with -100."""
    batches = [logits[i:i + batch_size] for i in range(0, len(logits), batch_size)]
    outputs = iter(batches)

    def predict(inputs):
        batch = next(outputs)
        width = inputs["input_ids"].shape[1]
        pad = [np.pad(x, (0, width - len(x)), constant_values=-100.0) for pair in batch for x in pair]
        return SimpleNamespace(start_logits=torch.tensor(np.stack(pad[0::2])),
                               end_logits=torch.tensor(np.stack(pad[1::2])))

    return predict


def test_post_processing_finds_the_answer_in_the_second_window(tmp_path, tokenizer):
    root, answer = long_question_dir(tmp_path / "sq", n_words=40, answer_at=30)
    task = read_task(root, "task.doc_stride=4")
    task.encode(tokenizer, Batching(4, 2, 32))
    question = task.questions["dev"][0]
    start, end = question.starts[0], question.starts[0] + len(answer)
    assert len(task.windows) >= 2
    second = task.windows[1]
    holds = second.in_context & (second.offsets[:, 0] >= start) & (second.offsets[:, 1] <= end)
    assert not (task.windows[0].offsets[task.windows[0].in_context, 1] >= end).any()  # window 1 lacks it
    first_token, last_token = np.flatnonzero(holds)[[0, -1]]

    def logits(decoy: float) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for k, window in enumerate(task.windows):
            s, e = np.full(len(window.offsets), -100.0), np.full(len(window.offsets), -100.0)
            context = np.flatnonzero(window.in_context)
            s[1], e[1] = 50.0, 50.0  # a question token scores highest everywhere: never a candidate
            s[context[-1]], e[context[0]] = 40.0, 40.0  # end before start: never a candidate
            s[context[2]], e[context[2]] = decoy, decoy  # a valid one-token span in every window
            if k == 1:
                s[first_token], e[last_token] = 10.0, 10.0
            out.append((s, e))
        return out

    assert task.evaluate(stand_in(logits(decoy=4.0), 2)) == {"exact_match": 1.0, "f1": 1.0}
    assert task.artifacts() == {"predictions": {"q0": answer}}
    task.evaluate(stand_in(logits(decoy=11.0), 2))  # now the decoy (22) outscores the answer (20): window 1's wins
    assert task.artifacts()["predictions"]["q0"] == "three"


def test_spans_longer_than_max_answer_len_are_not_candidates(tmp_path, tokenizer):
    root, _ = long_question_dir(tmp_path / "sq", n_words=10, answer_at=2)
    task = read_task(root, "task.max_answer_len=2", "task.doc_stride=16")
    task.encode(tokenizer, Batching(4, 2, 64))
    (window,) = task.windows
    context = np.flatnonzero(window.in_context)
    s, e = np.full(len(window.offsets), -100.0), np.full(len(window.offsets), -100.0)
    s[context[0]], e[context[4]] = 20.0, 20.0  # five tokens: too long
    e[context[1]] = 1.0
    task.evaluate(stand_in([(s, e)], 2))
    assert task.predictions["q0"] == "one two"  # the best span of at most two tokens


def test_a_slow_tokenizer_is_refused_in_one_line(squad_dir):
    task = read_task(squad_dir)
    with pytest.raises(ConfigError, match="need a fast tokenizer"):
        task.encode(SimpleNamespace(is_fast=False), Batching(4, 4, 64))


@pytest.mark.parametrize(("overrides", "max_len", "refused"), [
    (("task.doc_stride=256",), 256, True), (("task.doc_stride=300",), 256, True), (("task.doc_stride=128",), 384, False),
    ((), 128, False),  # null: a third of the window, so the defaults work together
])
def test_a_stride_that_leaves_no_room_is_refused_before_any_job(overrides, max_len, refused):
    cfg = squad_cfg(None, *overrides, f"trainer.max_seq_len={max_len}")
    if refused:
        with pytest.raises(ConfigError, match=r"task.doc_stride=\d+ leaves no room in a window"):
            validate(cfg)
    else:
        validate(cfg)
        assert build_task(cfg.task, cfg.data).stride(max_len) == (128 if overrides else max_len // 3)


def test_a_question_longer_than_a_window_allows_is_one_line(tmp_path, tokenizer):
    root, _ = long_question_dir(tmp_path / "sq")
    task = read_task(root, "task.doc_stride=20")
    with pytest.raises(ConfigError, match=r"question q0 has 3 tokens.*task.doc_stride=20"):
        task.encode(tokenizer, Batching(4, 4, 24))


# --- splits --------------------------------------------------------------------------------------------------------

def articles(task: SquadTask, split: str) -> set[int]:
    return {q.article for q in task.questions[split]}


def test_dev_articles_split_is_disjoint_and_seeded(squad_dir):
    task = read_task(squad_dir, "task.split=dev_articles")
    train, dev = articles(task, "train"), articles(task, "dev")
    assert train.isdisjoint(dev) and train | dev == set(range(8)) and len(train) == 4
    assert all(q.id.startswith("dev-") for q in task.questions["train"])  # the dev file alone is read
    again = read_task(squad_dir, "task.split=dev_articles")
    assert articles(again, "train") == train and [q.id for q in again.questions["dev"]] == [
        q.id for q in task.questions["dev"]]
    other = read_task(squad_dir, "task.split=dev_articles", "task.split_seed=1")
    assert articles(other, "train") != train
    assert fingerprint(other.sources) != fingerprint(task.sources)  # the record's data tells the splits apart
    quarter = read_task(squad_dir, "task.split=dev_articles", "task.train_fraction=0.25")
    assert len(articles(quarter, "train")) == 2


def test_max_eval_questions_keeps_the_first_ones(squad_dir):
    task = read_task(squad_dir, "task.max_eval_questions=5")
    full = read_task(squad_dir)
    assert [q.id for q in task.questions["dev"]] == [q.id for q in full.questions["dev"]][:5]
    assert len(task.questions["train"]) == len(full.questions["train"])
    assert fingerprint(task.sources) != fingerprint(full.sources)


def test_real_dev_file_counts_and_split():
    if not SHARED.is_dir():
        pytest.skip("the real SQuAD dev file (../shared/data/squad) is not beside this checkout")
    task = read_task(SHARED, "task.split=dev_articles")
    assert len(task.questions["train"]) + len(task.questions["dev"]) == 10_570
    assert len(articles(task, "train")) == len(articles(task, "dev")) == 24
    assert articles(task, "train").isdisjoint(articles(task, "dev"))
    with pytest.raises(DataError, match=r"train-v1.1.json is missing.*task.split=dev_articles") as err:
        read_task(SHARED)  # official split: the shared copy has no train file
    assert "\n" not in str(err.value)


# --- data errors ---------------------------------------------------------------------------------------------------

def good_document() -> dict:
    context = "Paris is the capital of France."
    qa = {"id": "a1", "question": "What is the capital?", "answers": [{"text": "Paris", "answer_start": 0}]}
    return {"data": [{"title": "T", "paragraphs": [{"context": context, "qas": [qa]}]}], "version": "1.1"}


def with_change(change) -> bytes:
    document = good_document()
    change(document)
    return json.dumps(document).encode()


def _qa(d: dict) -> dict:
    return d["data"][0]["paragraphs"][0]["qas"][0]


@pytest.mark.parametrize("content,needle", [
    (b'{"data": [', r"dev-v1.1.json: not JSON \(Expecting value at line 1 column 11\)"),
    ('{"data": "caf\xe9"}'.encode("latin-1"), r"dev-v1.1.json: byte 13 is not UTF-8"),
    (b'[1, 2]', r"dev-v1.1.json: no field 'data'; is it the official SQuAD v1.1 format"),
    (with_change(lambda d: d["data"][0].pop("paragraphs")), r"dev-v1.1.json: data\[0\]: no field 'paragraphs'"),
    (with_change(lambda d: _qa(d)["answers"][0].update(answer_start=3)),
     (r"dev-v1.1.json: data\[0\].paragraphs\[0\].qas\[0\] \(id a1\): answer 'Paris' is not at answer_start 3 of "
      r"the context \(there: 'is is'\); fix answer_start")),
    (with_change(lambda d: _qa(d)["answers"][0].update(answer_start="0")), r"field 'answer_start' is str, not int"),
    (with_change(lambda d: _qa(d).update(answers=[])), r"\(id a1\): no gold answer"),
    (with_change(lambda d: _qa(d).update(question=None)), r"\(id a1\): field 'question' is NoneType, not str"),
    (with_change(lambda d: _qa(d).update(question="  ")), r"\(id a1\): the question is empty"),
    (with_change(lambda d: _qa(d)["answers"][0].update(text="", answer_start=0)),
     r"\(id a1\): answer 0 is empty \(it would match anywhere\)"),
    (with_change(lambda d: d["data"][0]["paragraphs"][0]["qas"].append(_qa(d))),
     r"dev-v1.1.json: question id a1 appears twice"),
])
def test_bad_files_are_one_line_naming_the_file(squad_dir, content, needle):
    (squad_dir / "dev-v1.1.json").write_bytes(content)
    with pytest.raises(DataError, match=needle) as err:
        read_task(squad_dir)
    assert "\n" not in str(err.value) and str(squad_dir / "dev-v1.1.json") in str(err.value)


def test_missing_folder_file_and_unreachable_hub(tmp_path, squad_dir, monkeypatch):
    with pytest.raises(DataError, match=r"data.squad_dir=.* does not exist.*SQUAD_DIR"):
        read_task(tmp_path / "nope")
    (squad_dir / "train-v1.1.json").unlink()
    with pytest.raises(DataError, match=r"train-v1.1.json is missing: .*use task.split=dev_articles"):
        read_task(squad_dir)
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down")))
    with pytest.raises(DataError, match=r"hub \(rajpurkar/squad\) is unreachable.*data.squad_dir=DIR"):
        read_task(None)


def test_the_hub_rows_are_read_and_checked(monkeypatch):
    import datasets

    rows = [{"id": f"h{i}", "title": f"T{i // 2}", "context": "Paris is big.", "question": "Where?",
             "answers": {"text": ["Paris"], "answer_start": [0]}} for i in range(6)]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: rows)
    task = read_task(None, "task.split=dev_articles", "task.train_fraction=0.34")
    assert len(articles(task, "train")) == 1 and len(articles(task, "dev")) == 2
    assert task.sources[0] == "hub:rajpurkar/squad/validation"
    rows[3]["answers"]["answer_start"] = [2]
    with pytest.raises(DataError, match=r"rajpurkar/squad train row 3 \(id h3\): answer 'Paris' is not at"):
        read_task(None)


@pytest.mark.parametrize("override,needle", [
    ("task.split=random", r"task.split='random' is not one of official, dev_articles"),
    ("task.train_fraction=1.0", r"task.train_fraction=1.0 must be in \(0, 1\)"),
    ("task.doc_stride=0", r"task.doc_stride=0 must be an integer of at least 1, or null"),
    ("task.max_eval_questions=0", r"task.max_eval_questions=0 must be an integer of at least 1"),
    ("task.max_eval_questions=abc", r"task.max_eval_questions='abc' must be an integer"),
    ("task.split_seed=-1", r"task.split_seed=-1 must be an integer of at least 0"),
    ("task.n_best=2.5", r"task.n_best=2.5 must be an integer"),
])
def test_bad_task_settings_are_refused_before_reading(override, needle):
    cfg = squad_cfg(None, override)
    with pytest.raises(ConfigError, match=needle):
        build_task(cfg.task, cfg.data)


@pytest.mark.parametrize(("overrides", "protocol"), [
    ((), "official"),
    (("task.split=dev_articles",), "dev_articles"),
    (("task.max_eval_questions=100",), "official, first 100 questions"),
])
def test_the_record_says_what_the_scores_are_measured_on(overrides, protocol):
    cfg = squad_cfg(None, *overrides)
    assert build_task(cfg.task, cfg.data).protocol == protocol


# --- end to end ----------------------------------------------------------------------------------------------------

def predictions_file(results: Path, record: dict) -> Path:
    """Where the run of ``record`` wrote its predictions: beside the record, ``<record stem>.predictions.json``."""
    path = record_path(results, "squad/v1", "tiny_bert", "full", record["seed"], record["run_id"])
    assert path.is_file()
    return path.parent / f"{path.stem}.predictions.json"


def run_cfg(squad_dir: Path, results: Path, *extra: str):
    return squad_cfg(squad_dir, f"results_dir={results}", "method=full", "trainer.batch_size=8",
                     "trainer.progress=false", "trainer.max_seq_len=64", "task.doc_stride=16", *extra)


def test_a_tiny_model_learns_and_writes_its_predictions(squad_dir, tmp_path):
    cfg = run_cfg(squad_dir, tmp_path / "results", "trainer.lr=2e-3", "trainer.max_steps=36",
                  "trainer.eval_every_steps=12", "trainer.warmup_ratio=0")
    record = run_experiment(cfg)
    assert record["status"] == "completed" and record["task"]["metric"] == "f1"
    assert record["task"]["protocol"] == "official"  # the paper's squad table reads only these
    losses = [epoch["train_loss"] for epoch in record["metrics"]["epochs"]]
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.5, losses
    assert record["params"]["head_params"] == 32 * 2 + 2  # qa_outputs: hidden -> start, end
    predictions = json.loads(predictions_file(tmp_path / "results", record).read_text())
    task = read_task(squad_dir)
    questions = task.questions["dev"]
    assert list(predictions) == [q.id for q in questions] and all(isinstance(v, str) for v in predictions.values())
    scores = squad_scores([predictions[q.id] for q in questions], [q.answers for q in questions])
    best = record["metrics"]["best"]
    assert scores == {"exact_match": pytest.approx(best["exact_match"]), "f1": pytest.approx(best["f1"])}


def test_the_best_evaluation_s_predictions_are_written(squad_dir, tmp_path, monkeypatch):
    """The headline is best at the first of three evaluations: its answers are the ones written."""
    f1s = iter([0.9, 0.1, 0.5])
    calls = []

    def evaluate(self, predict):
        calls.append(len(calls))
        self.predictions = {"evaluation": str(len(calls))}
        return {"exact_match": 0.0, "f1": next(f1s)}

    monkeypatch.setattr(SquadTask, "evaluate", evaluate)
    record = run_experiment(run_cfg(squad_dir, tmp_path, "trainer.max_steps=3", "trainer.eval_every_steps=1"))
    assert len(calls) == 3 and record["metrics"]["best"]["step"] == 1
    assert json.loads(predictions_file(tmp_path, record).read_text()) == {"evaluation": "1"}
