"""The metrics the papers report, computed with scikit-learn and SciPy. Values are fractions (correlations in
[-1, 1]); tables print them times 100."""

from collections.abc import Callable

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def _mean(*names: str) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda preds, labels: float(np.mean([METRICS[n](preds, labels) for n in names]))


# name -> f(predictions, labels); classification predictions are class ids, regression predictions are scores
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda p, y: float(accuracy_score(y, p)),
    "f1": lambda p, y: float(f1_score(y, p)),  # binary F1 of the positive class (MRPC, QQP)
    "macro_f1": lambda p, y: float(f1_score(y, p, average="macro")),  # CB
    "matthews": lambda p, y: float(matthews_corrcoef(y, p)),
    "pearson": lambda p, y: float(pearsonr(p, y)[0]),
    "spearman": lambda p, y: float(spearmanr(p, y)[0]),
}
METRICS["accuracy_f1_mean"] = _mean("accuracy", "f1")
METRICS["pearson_spearman_mean"] = _mean("pearson", "spearman")
METRICS["accuracy_macro_f1_mean"] = _mean("accuracy", "macro_f1")


def compute(names: list[str], logits: np.ndarray, labels: np.ndarray, suffix: str = "") -> dict[str, float]:
    """Each metric in ``names`` on model outputs: argmax of (N, C) logits, or (N,) / (N, 1) regression scores."""
    logits = np.asarray(logits)
    regression = logits.ndim == 1 or logits.shape[-1] == 1
    preds = logits.reshape(-1) if regression else logits.argmax(-1)
    return {f"{name}{suffix}": METRICS[name](preds, np.asarray(labels)) for name in names}
