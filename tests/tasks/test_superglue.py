"""SuperGLUE: the official jsonl files (real ones when ../shared is beside the checkout, else generated), label
types per task, the three heads' batches, WSC spans to tokens, one-line errors, and every metric against sklearn."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from qgoft_bench.config import compose_config
from qgoft_bench.errors import DataError
from qgoft_bench.models.hf import load_tokenizer
from qgoft_bench.tasks import Batching, build_task
from qgoft_bench.tasks.superglue import token_span
from tests.conftest import REPO, make_superglue_fixture

SHARED = REPO.parent / "shared" / "data" / "superglue"
# (task, train rows, val rows, val label counts in class-id order) as the shared README lists them
REAL = [("cb", 250, 56, [23, 28, 5]), ("copa", 400, 100, [55, 45]), ("wsc", 554, 104, [66, 38]),
        ("rte", 2490, 277, [146, 131])]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(compose_config(["model=tiny_bert"]).model)


def task_for(name: str, root: Path | None, tokenizer=None, *extra: str):
    cfg = compose_config([f"task=superglue/{name}", "model=tiny_bert", *extra]
                         + ([f"data.superglue_dir={root}"] if root else []))
    task = build_task(cfg.task, cfg.data)
    task.read()
    if tokenizer is not None:
        task.encode(tokenizer, Batching(4, 4, 128))
    return task


@pytest.fixture
def fixture_dir(tmp_path) -> Path:
    return make_superglue_fixture(tmp_path / "superglue")


@pytest.mark.parametrize("name,n_train,n_val,val_counts", REAL)
def test_real_files_parse_with_official_counts(name, n_train, n_val, val_counts):
    if not SHARED.is_dir():
        pytest.skip("the real SuperGLUE files (../shared/data/superglue) are not beside this checkout")
    task = task_for(name, SHARED)
    assert (len(task.examples["train"]), len(task.examples["dev"])) == (n_train, n_val)
    assert np.bincount(task.labels["dev"]).tolist() == val_counts


def test_real_boolq_without_train_is_one_line():
    if not SHARED.is_dir():
        pytest.skip("the real SuperGLUE files are not beside this checkout")
    with pytest.raises(DataError, match=r"BoolQ/train.jsonl is missing") as err:
        task_for("boolq", SHARED)
    assert "\n" not in str(err.value)


def test_label_types_per_task(fixture_dir):
    assert task_for("cb", fixture_dir).labels["train"][:3] == [0, 1, 2]  # entailment, contradiction, neutral
    assert task_for("boolq", fixture_dir).labels["train"][:2] == [0, 1]  # false, true
    assert task_for("wsc", fixture_dir).labels["train"][:2] == [0, 1]
    assert task_for("copa", fixture_dir).labels["train"][:2] == [1, 0]
    assert task_for("rte", fixture_dir).labels["train"][:2] == [0, 1]


@pytest.mark.parametrize("name,head", [("cb", "seq_cls"), ("boolq", "seq_cls"), ("rte", "seq_cls"),
                                       ("copa", "multiple_choice"), ("wsc", "span_cls")])
def test_each_task_batches_for_its_head(name, head, fixture_dir, tokenizer):
    task = task_for(name, fixture_dir, tokenizer)
    assert task.head == head
    batch = next(iter(task.train_batches(1)))
    ids = batch["inputs"]["input_ids"]
    assert batch["targets"]["labels"].shape == (4,) and "labels" not in batch["inputs"]
    if head == "multiple_choice":
        assert ids.shape[:2] == (4, 2)  # one row of tokens per choice
    elif head == "span_cls":
        assert batch["inputs"]["spans"].shape == (4, 2, 2)
    else:
        assert ids.ndim == 2


def test_copa_pairs_the_prompt_with_each_choice(fixture_dir, tokenizer):
    task = task_for("copa", fixture_dir, tokenizer)
    first = task.train_set[0]  # premise "the glass fell 0.", question "cause", choice1 "sun", choice2 "it broke."
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in first["input_ids"]]
    assert texts == ["the glass fell 0. what was the cause of this? sun",
                     "the glass fell 0. what was the cause of this? it broke."]
    assert first["labels"] == 1


def test_wsc_spans_map_words_to_tokens(tokenizer):
    text = "Mark told Pete many lies about himself, which Pete included in his book. He should have been skeptical."
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]

    def words(word: int, length: int) -> str:
        first, last = token_span(text, word, length, offsets)
        return tokenizer.decode(ids[first:last + 1])

    assert words(0, 1) == "mark"
    assert words(13, 1) == "he"
    assert words(6, 1) == "himself,"  # attached punctuation travels with its word, as in the files
    assert words(11, 2) == "his book."
    truncated = tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=6)
    first, last = token_span(text, 13, 1, truncated["offset_mapping"])
    assert first == last == 4  # cut off: the last real token ([SEP] is index 5) stands in


def predictor(scores):
    """A stand-in model: the logits of each eval batch in turn."""
    batches = iter(scores)
    return lambda inputs: SimpleNamespace(logits=next(batches))


def test_cb_metrics_against_sklearn(fixture_dir, tokenizer):
    task = task_for("cb", fixture_dir, tokenizer)
    labels = np.array(task.labels["dev"])
    rng = np.random.default_rng(0)
    preds = np.where(rng.random(len(labels)) < 0.6, labels, rng.integers(0, 3, len(labels)))
    logits = torch.nn.functional.one_hot(torch.tensor(preds), 3).float()
    metrics = task.evaluate(predictor(logits.split(4)))
    accuracy, macro = accuracy_score(labels, preds), f1_score(labels, preds, average="macro")
    assert metrics["accuracy"] == pytest.approx(accuracy)
    assert metrics["macro_f1"] == pytest.approx(macro)
    assert metrics["accuracy_macro_f1_mean"] == pytest.approx((accuracy + macro) / 2)
    assert task.headline == "accuracy_macro_f1_mean"


@pytest.mark.parametrize("name", ["copa", "wsc", "boolq", "rte"])
def test_accuracy_tasks_against_sklearn(name, fixture_dir, tokenizer):
    task = task_for(name, fixture_dir, tokenizer)
    labels = np.array(task.labels["dev"])
    preds = np.array([0, 1, 1, 0] * (len(labels) // 4))
    metrics = task.evaluate(predictor(torch.nn.functional.one_hot(torch.tensor(preds), 2).float().split(4)))
    assert metrics == {"accuracy": pytest.approx(accuracy_score(labels, preds))}


@pytest.mark.parametrize("content,needle", [
    ('{"premise": "p", "hypothesis": "h", "label": "maybe", "idx": 0}', r"val.jsonl:1: label 'maybe' is not one of"),
    ('{"premise": "p", "label": "neutral", "idx": 0}', r"val.jsonl:1: no field 'hypothesis'"),
    ('{"premise": "p", "hypothesis": ', r"val.jsonl:1: not a JSON object \(Expecting value, column 32\); fix the line"),
    ('{"premise": "caf\xe9", "hypothesis": "h", "label": "neutral"}', r"val.jsonl:1: byte 0xe9 is not UTF-8"),
    ('{"premise": null, "hypothesis": "h", "label": "neutral"}', r"val.jsonl:1: field 'premise' is None, not text"),
])
def test_bad_lines_name_file_and_line(fixture_dir, content, needle):
    (fixture_dir / "CB" / "val.jsonl").write_bytes(content.encode("latin-1") + b"\n")
    with pytest.raises(DataError, match=needle) as err:
        task_for("cb", fixture_dir)
    assert "\n" not in str(err.value)


def test_missing_folder_and_unreachable_hub(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"data.superglue_dir=.* does not exist.*SUPERGLUE_DIR"):
        task_for("cb", tmp_path / "nope")
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down")))
    with pytest.raises(DataError, match=r"hub \(aps/super_glue\) is unreachable.*data.superglue_dir=DIR"):
        task_for("cb", None)


def test_the_hub_path_reads_flat_wsc_rows(monkeypatch, tokenizer):
    """aps/super_glue's rows: labels are ids already, WSC's span fields are flat (no "target")."""
    import datasets

    rows = [{"text": "Mark told Pete . He lied .", "span1_index": 0, "span1_text": "Mark", "span2_index": 4,
             "span2_text": "He", "label": i % 2, "idx": i} for i in range(4)]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: rows)
    task = task_for("wsc", None, tokenizer)
    assert task.labels["train"] == [0, 1, 0, 1]
    spans = next(iter(task.train_batches(1)))["inputs"]["spans"]
    assert spans.shape == (4, 2, 2)


def test_records_of_the_fixture_are_json_lines(fixture_dir):
    """The generated fixture mirrors the official format: one object per line, typed labels."""
    first = json.loads((fixture_dir / "WSC" / "train.jsonl").read_text().splitlines()[0])
    assert first["label"] is False and first["target"]["span2_text"] == "He"


@pytest.mark.parametrize("task,line,needle", [
    ("COPA", {"premise": "p", "choice1": "a", "choice2": "b", "question": "why", "label": 0, "idx": 0},
     r"COPA/val.jsonl:1: question 'why' is not one of cause, effect"),
    ("WSC", {"text": "He ran .", "target": {"span1_index": 9, "span1_text": "x", "span2_index": 0,
                                            "span2_text": "He"}, "label": True, "idx": 0},
     r"WSC/val.jsonl:1: a span index is not a word position in the text \(0..2\)"),
    ("WSC", {"text": "He ran .", "label": True, "idx": 0}, r"WSC/val.jsonl:1: no span1/span2 index and text"),
])
def test_task_specific_fields_are_checked_when_read(fixture_dir, task, line, needle):
    (fixture_dir / task / "val.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(DataError, match=needle):
        task_for(task.lower(), fixture_dir)
