"""GLUE loading: the classic TSV layout (quoting off), label spaces, splits, and one-line errors."""

from pathlib import Path

import numpy as np
import pytest
import torch

from qgoft_bench.config import compose_config
from qgoft_bench.errors import DataError
from qgoft_bench.tasks import Batching, build_task
from qgoft_bench.tasks.glue import load_split, read_tsv

# (task, train rows, dev rows, number of labels) as the shared README and the official GLUE counts say
REAL_COUNTS = [("cola", 8551, 1043, 2), ("sst2", 67349, 872, 2), ("mrpc", 3668, 408, 2), ("stsb", 5749, 1500, 1),
               ("rte", 2490, 277, 2), ("wnli", 635, 71, 2)]


def cfg_for(task: str, glue_dir: Path | None, *extra: str):
    overrides = [f"task=glue/{task}", "model=tiny_bert"] + list(extra)
    if glue_dir is not None:
        overrides.append(f"data.glue_dir={glue_dir}")
    return compose_config(overrides)


def split(cfg, stem: str, hub_split: str):
    return load_split(cfg.task, cfg.data.glue_dir, stem, hub_split)


def loaded_task(cfg):
    """The task read and encoded with the MiniLM tokenizer (what tiny_bert borrows)."""
    from qgoft_bench.models.hf import load_tokenizer

    task = build_task(cfg.task, cfg.data)
    task.read()
    trainer = cfg.trainer
    task.encode(load_tokenizer(cfg.model), Batching(trainer.batch_size, trainer.eval_batch_size, 128))
    return task


@pytest.mark.parametrize("task,n_train,n_dev,num_labels", REAL_COUNTS)
def test_real_files_parse_with_official_counts(shared_glue, task, n_train, n_dev, num_labels):
    cfg = cfg_for(task, shared_glue)
    train, dev = split(cfg, "train", "train"), split(cfg, "dev", "validation")
    assert (len(train), len(dev)) == (n_train, n_dev)
    assert cfg.task.num_labels == num_labels
    if num_labels == 1:
        assert ((train.labels >= 0) & (train.labels <= 5)).all()
    else:
        assert set(train.labels) == set(range(num_labels))
    assert min(len(text) for text in train.text_a) > 0


def test_real_label_distributions(shared_glue):
    """The label maps give the distributions the shared README lists (RTE entailment=0, CoLA 1=acceptable)."""
    rte = split(cfg_for("rte", shared_glue), "train", "train")
    assert np.bincount(rte.labels).tolist() == [1249, 1241]
    cola = split(cfg_for("cola", shared_glue), "train", "train")
    assert np.bincount(cola.labels).tolist() == [2528, 6023]
    mrpc = split(cfg_for("mrpc", shared_glue), "dev", "validation")
    assert np.bincount(mrpc.labels).tolist() == [129, 279]
    qnli = split(cfg_for("qnli", shared_glue), "dev", "validation")
    assert len(qnli) == 5463 and np.bincount(qnli.labels).tolist() == [2702, 2761]


def test_quotes_do_not_merge_rows(glue_fixture):
    cfg = cfg_for("rte", glue_fixture)
    frame = read_tsv(glue_fixture / "RTE" / "train.tsv", cfg.task)
    assert len(frame) == 64
    assert frame.text_a[0].startswith('"') and frame.text_a[0].endswith('"quote')


def test_headerless_cola_and_bom_mrpc(glue_fixture):
    cola = read_tsv(glue_fixture / "CoLA" / "dev.tsv", cfg_for("cola", glue_fixture).task)
    assert len(cola) == 32 and cola.text_b is None and cola.labels.tolist()[:2] == [0, 1]
    mrpc = read_tsv(glue_fixture / "MRPC" / "dev.tsv", cfg_for("mrpc", glue_fixture).task)
    assert mrpc.text_b[3] == "other 3" and mrpc.labels.tolist()[:2] == [0, 1]


def test_stsb_is_regression(glue_fixture):
    frame = read_tsv(glue_fixture / "STS-B" / "train.tsv", cfg_for("stsb", glue_fixture).task)
    assert frame.labels.dtype == np.float32 and frame.labels[1] == pytest.approx(4.5)


def test_mnli_evaluates_matched_and_mismatched(glue_fixture):
    task = loaded_task(cfg_for("mnli", glue_fixture))
    assert [m.name for m in task.metrics] == ["accuracy_m", "accuracy_mm"] and task.headline == "accuracy_mm"

    class Constant:  # predicts class 0 for every example
        def __init__(self, inputs):
            self.logits = torch.nn.functional.one_hot(torch.zeros(len(inputs["input_ids"]), dtype=torch.long), 3)

    metrics = task.evaluate(Constant)
    labels = [i % 3 for i in range(32)]  # the fixture's dev labels
    assert metrics == pytest.approx({"accuracy_m": labels.count(0) / 32, "accuracy_mm": labels.count(0) / 32})


def test_batches_are_dynamically_padded(glue_fixture):
    task = loaded_task(cfg_for("rte", glue_fixture, "trainer.batch_size=8"))
    batch = next(iter(task.train_batches(1)))
    assert batch["inputs"]["input_ids"].shape[0] == 8 and batch["targets"]["labels"].shape == (8,)
    assert "labels" not in batch["inputs"]  # the model never sees the labels: the task computes the loss
    assert batch["inputs"]["input_ids"].shape[1] < 128  # padded to the batch's longest, not to max_seq_len


def test_train_subset_is_fixed_across_seeds(glue_fixture):
    first = loaded_task(cfg_for("rte", glue_fixture, "task.train_samples=10", "seed=1"))
    second = loaded_task(cfg_for("rte", glue_fixture, "task.train_samples=10", "seed=2"))
    assert len(first.splits["train"]) == 10
    assert first.splits["train"].lines == second.splits["train"].lines


def test_missing_folder_is_one_line_error(tmp_path):
    with pytest.raises(DataError, match=r"data.glue_dir=.* does not exist.*GLUE_DIR") as err:
        split(cfg_for("rte", tmp_path / "nope"), "train", "train")
    assert "\n" not in str(err.value)


def test_missing_file_names_it(glue_fixture):
    with pytest.raises(DataError, match=r"QQP/train.tsv is missing"):
        split(cfg_for("qqp", glue_fixture), "train", "train")


def test_unreachable_hub_says_what_to_provide(monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataError, match=r"hub \(nyu-mll/glue\) is unreachable.*data.glue_dir=DIR"):
        split(cfg_for("rte", None), "train", "train")


def rewrite(path: Path, edit) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    path.write_bytes(edit(lines) if callable(edit) else edit)


RTE_HEADER = "index\tsentence1\tsentence2\tlabel"


@pytest.mark.parametrize("task,content,needle", [
    ("rte", lambda ls: "\n".join([ls[0], ls[1], "5\tone\ttab\tinside\tentailment"]).encode(),
     r"RTE/train.tsv:3: 5 fields, header has 4"),
    ("rte", lambda ls: "\n".join(line + "\t" for line in ls[:3]).encode(),
     r"RTE/train.tsv:1: the header has an empty column name"),
    ("rte", lambda ls: "\n".join([ls[0], ls[1], "7\tno label here\tsecond"]).encode(),
     r"RTE/train.tsv:3: 3 fields, header has 4"),
    ("rte", b"", r"RTE/train.tsv is empty"),
    ("rte", (RTE_HEADER + "\n").encode(), r"RTE/train.tsv has a header but no examples"),
    ("stsb", lambda ls: "\n".join([ls[0], ls[1].rsplit("\t", 1)[0] + "\tfive"]).encode(),
     r"STS-B/train.tsv:2: score 'five' is not a number in \[0, 5\]"),
    ("stsb", lambda ls: "\n".join([ls[0], ls[1].rsplit("\t", 1)[0] + "\t7.5"]).encode(),
     r"STS-B/train.tsv:2: score '7.5' is not a number in \[0, 5\]"),
    ("rte", (RTE_HEADER + "\n0\tcaf\xe9\tb\tentailment\n").encode("latin-1"),
     r"RTE/train.tsv:2: byte 0xe9 is not UTF-8"),
    ("cola", lambda ls: "\n".join([ls[0], "src\tpositive\t\tsome sentence"]).encode(),
     r"CoLA/train.tsv:2: label 'positive' is not a class id in 0..1"),
    ("rte", lambda ls: "\n".join([ls[0], ls[1].rsplit("\t", 1)[0] + "\tmaybe"]).encode(),
     r"RTE/train.tsv:2: label 'maybe' is not one of \['entailment', 'not_entailment'\]"),
])
def test_malformed_files_are_one_line_with_file_and_line(glue_fixture, task, content, needle):
    cfg = cfg_for(task, glue_fixture)
    rewrite(glue_fixture / cfg.task.folder / "train.tsv", content)
    with pytest.raises(DataError, match=needle) as err:
        split(cfg, "train", "train")
    assert "\n" not in str(err.value)


def test_a_binary_dev_file_with_label_3_is_refused(glue_fixture):
    """SST-2-style numeric labels are checked against the task's classes in every split, dev included."""
    cfg = cfg_for("wnli", glue_fixture)
    folder = glue_fixture / "WNLI"
    folder.mkdir()
    (folder / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\t1\n")
    (folder / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\t1\n1\tc\td\t3\n")
    task = build_task(cfg.task, cfg.data)
    with pytest.raises(DataError, match=r"WNLI/dev.tsv:3: label '3' is not a class id in 0..1"):
        task.read()


def test_mrpc_columns_are_found_by_header_name(glue_fixture):
    """Reordered columns under their header read the same sentences and labels (by position they would train on
    the ID columns)."""
    path = glue_fixture / "MRPC" / "train.tsv"
    before = read_tsv(path, cfg_for("mrpc", glue_fixture).task)
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8-sig").splitlines()]
    order = [3, 1, 4, 2, 0]
    path.write_text("\n".join("\t".join(row[i] for i in order) for row in rows) + "\n", encoding="utf-8")
    after = read_tsv(path, cfg_for("mrpc", glue_fixture).task)
    assert after.text_a == before.text_a and after.text_b == before.text_b
    assert after.labels.tolist() == before.labels.tolist()
