"""Each metric against an independent formula (numpy), and the means the papers report."""

import numpy as np
import pytest

from qgoft_bench.tasks.metrics import compute

rng = np.random.default_rng(0)
LABELS = rng.integers(0, 2, 200)
PREDS = np.where(rng.random(200) < 0.8, LABELS, 1 - LABELS)
LOGITS = np.eye(2)[PREDS] + rng.normal(0, 0.01, (200, 2))


def matthews_reference(p, y):
    tp, tn = np.sum((p == 1) & (y == 1)), np.sum((p == 0) & (y == 0))
    fp, fn = np.sum((p == 1) & (y == 0)), np.sum((p == 0) & (y == 1))
    return (tp * tn - fp * fn) / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))


def f1_reference(p, y):
    tp, fp, fn = np.sum((p == 1) & (y == 1)), np.sum((p == 1) & (y == 0)), np.sum((p == 0) & (y == 1))
    return 2 * tp / (2 * tp + fp + fn)


def ranks(x):
    return np.argsort(np.argsort(x)).astype(float)  # no ties in continuous random data


def test_classification_metrics_from_logits():
    got = compute(["accuracy", "f1", "matthews", "accuracy_f1_mean"], LOGITS, LABELS)
    acc, f1 = np.mean(PREDS == LABELS), f1_reference(PREDS, LABELS)
    assert got["accuracy"] == pytest.approx(acc)
    assert got["f1"] == pytest.approx(f1)
    assert got["matthews"] == pytest.approx(matthews_reference(PREDS, LABELS))
    assert got["accuracy_f1_mean"] == pytest.approx((acc + f1) / 2)


def test_regression_metrics_from_one_output():
    y = rng.uniform(0, 5, 300)
    scores = (y + rng.normal(0, 1.0, 300))[:, None]  # (N, 1) like a regression head
    got = compute(["pearson", "spearman", "pearson_spearman_mean"], scores, y)
    pearson = np.corrcoef(scores[:, 0], y)[0, 1]
    spearman = np.corrcoef(ranks(scores[:, 0]), ranks(y))[0, 1]
    assert got["pearson"] == pytest.approx(pearson)
    assert got["spearman"] == pytest.approx(spearman)
    assert got["pearson_spearman_mean"] == pytest.approx((pearson + spearman) / 2)


def test_macro_f1_mean_for_three_classes():
    y = np.array([0, 1, 2, 2, 1, 0, 2])
    p = np.array([0, 2, 2, 2, 1, 0, 1])
    f1s = []
    for c in range(3):
        tp, fp, fn = np.sum((p == c) & (y == c)), np.sum((p == c) & (y != c)), np.sum((p != c) & (y == c))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    got = compute(["accuracy_macro_f1_mean"], np.eye(3)[p], y)
    assert got["accuracy_macro_f1_mean"] == pytest.approx((np.mean(p == y) + np.mean(f1s)) / 2)


def test_split_suffix():
    assert set(compute(["accuracy"], LOGITS, LABELS, suffix="_mm")) == {"accuracy_mm"}


def test_a_model_that_predicts_one_class():
    """The degenerate runs a real grid has (RoAd on RTE): one class for every example. Matthews is 0 (sklearn's and
    GLUE's convention), F1 of a never-predicted positive class 0, accuracy the majority share; a constant regression
    output has no correlation: NaN (null in the record), which the best-epoch choice passes over."""
    got = compute(["accuracy", "f1", "matthews", "macro_f1"], np.tile([1.0, 0.0], (200, 1)), LABELS)
    assert got["accuracy"] == pytest.approx(np.mean(LABELS == 0))
    assert got["f1"] == 0.0 and got["matthews"] == 0.0
    assert got["macro_f1"] == pytest.approx(f1_reference(1 - np.zeros(200), 1 - LABELS) / 2)  # class 0's F1, halved
    got = compute(["pearson", "spearman", "pearson_spearman_mean"], np.full((50, 1), 2.5), rng.uniform(0, 5, 50))
    assert all(np.isnan(v) for v in got.values())
