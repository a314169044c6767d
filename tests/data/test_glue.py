"""GLUE loading: the classic TSV layout (quoting off), label spaces, splits, and one-line errors."""

from pathlib import Path

import numpy as np
import pytest

from qgoft_bench.config import compose_config
from qgoft_bench.data import load_task
from qgoft_bench.data.glue import load_split, read_tsv
from qgoft_bench.errors import DataError

# (task, train rows, dev rows, number of labels) as the shared README and the official GLUE counts say
REAL_COUNTS = [("cola", 8551, 1043, 2), ("sst2", 67349, 872, 2), ("mrpc", 3668, 408, 2), ("stsb", 5749, 1500, 1),
               ("rte", 2490, 277, 2), ("wnli", 635, 71, 2)]


def cfg_for(task: str, glue_dir: Path | None, *extra: str):
    overrides = [f"task=glue/{task}", "model=tiny_bert"] + list(extra)
    if glue_dir is not None:
        overrides.append(f"data.glue_dir={glue_dir}")
    return compose_config(overrides)


@pytest.mark.parametrize("task,n_train,n_dev,num_labels", REAL_COUNTS)
def test_real_files_parse_with_official_counts(shared_glue, task, n_train, n_dev, num_labels):
    cfg = cfg_for(task, shared_glue)
    train, dev = load_split(cfg, "train", "train"), load_split(cfg, "dev", "validation")
    assert (len(train), len(dev)) == (n_train, n_dev)
    assert cfg.task.num_labels == num_labels
    if num_labels == 1:
        assert train.label.between(0, 5).all()
    else:
        assert set(train.label) == set(range(num_labels))
    assert train.text_a.str.len().min() > 0


def test_real_label_distributions(shared_glue):
    """The label maps give the distributions the shared README lists (RTE entailment=0, CoLA 1=acceptable)."""
    rte = load_split(cfg_for("rte", shared_glue), "train", "train")
    assert np.bincount(rte.label).tolist() == [1249, 1241]
    cola = load_split(cfg_for("cola", shared_glue), "train", "train")
    assert np.bincount(cola.label).tolist() == [2528, 6023]
    mrpc = load_split(cfg_for("mrpc", shared_glue), "dev", "validation")
    assert np.bincount(mrpc.label).tolist() == [129, 279]
    qnli = load_split(cfg_for("qnli", shared_glue), "dev", "validation")
    assert len(qnli) == 5463 and np.bincount(qnli.label).tolist() == [2702, 2761]


def test_quotes_do_not_merge_rows(glue_fixture):
    cfg = cfg_for("rte", glue_fixture)
    frame = read_tsv(glue_fixture / "RTE" / "train.tsv", cfg.task)
    assert len(frame) == 64
    assert frame.text_a[0].startswith('"') and frame.text_a[0].endswith('"quote')


def test_headerless_cola_and_bom_mrpc(glue_fixture):
    cola = read_tsv(glue_fixture / "CoLA" / "dev.tsv", cfg_for("cola", glue_fixture).task)
    assert len(cola) == 32 and "text_b" not in cola and cola.label.tolist()[:2] == [0, 1]
    mrpc = read_tsv(glue_fixture / "MRPC" / "dev.tsv", cfg_for("mrpc", glue_fixture).task)
    assert mrpc.text_b[3] == "other 3" and mrpc.label.tolist()[:2] == [0, 1]


def test_stsb_is_regression(glue_fixture):
    frame = read_tsv(glue_fixture / "STS-B" / "train.tsv", cfg_for("stsb", glue_fixture).task)
    assert frame.label.dtype == np.float32 and frame.label[1] == pytest.approx(4.5)


def test_mnli_evaluates_matched_and_mismatched(glue_fixture):
    cfg = cfg_for("mnli", glue_fixture)
    data = load_task(cfg, bundle=None)
    assert set(data.evals) == {"m", "mm"}
    logits = np.eye(3)[[0, 1, 2, 0]]
    assert data.compute_metrics("mm", logits, np.array([0, 1, 2, 1])) == {"accuracy_mm": 0.75}


def test_batches_are_dynamically_padded(glue_fixture):
    data = load_task(cfg_for("rte", glue_fixture, "trainer.batch_size=8"), bundle=None)
    batch = next(iter(data.train))
    assert batch["input_ids"].shape[0] == 8 and batch["labels"].shape == (8,)
    assert batch["input_ids"].shape[1] < 128  # padded to the batch's longest, not to max_seq_len


def test_train_subset_is_fixed_across_seeds(glue_fixture):
    first = load_task(cfg_for("rte", glue_fixture, "task.train_samples=10", "seed=1"), bundle=None)
    second = load_task(cfg_for("rte", glue_fixture, "task.train_samples=10", "seed=2"), bundle=None)
    assert len(first.train.dataset) == 10
    assert first.train.dataset["input_ids"] == second.train.dataset["input_ids"]


def test_missing_folder_is_one_line_error(tmp_path):
    with pytest.raises(DataError, match=r"data.glue_dir=.* does not exist.*GLUE_DIR") as err:
        load_split(cfg_for("rte", tmp_path / "nope"), "train", "train")
    assert "\n" not in str(err.value)


def test_missing_file_names_it(glue_fixture):
    with pytest.raises(DataError, match=r"QQP/train.tsv is missing"):
        load_split(cfg_for("qqp", glue_fixture), "train", "train")


def test_unreachable_hub_says_what_to_provide(monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataError, match=r"hub \(nyu-mll/glue\) is unreachable.*data.glue_dir=DIR"):
        load_split(cfg_for("rte", None), "train", "train")
