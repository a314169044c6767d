"""The metrics the papers report, computed with scikit-learn and SciPy, and SQuAD v1.1's exact match and token F1
(their official definitions). Values are fractions (correlations in [-1, 1]); tables print them times 100."""

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

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


# SQuAD v1.1 (Rajpurkar et al. 2016): the official evaluate-v1.1.py's answer normalisation, exact match and token F1
ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, remove ASCII punctuation (``string.punctuation``), remove the articles a/an/the, squeeze
    whitespace: the official SQuAD v1.1 normalisation, in its order."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    """F1 of the normalised tokens (whitespace split) of ``prediction`` against one gold answer, counting repeated
    tokens as often as both share them; 0 when they share none (also when both normalise to nothing, as v1.1)."""
    predicted, true = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(predicted) & Counter(true)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(true)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """``exact_match`` and ``f1``: per question the best score over its gold answers, averaged over questions
    (fractions; the official script prints them times 100). ``golds[i]`` holds question i's gold answers (at least
    one)."""
    pairs = list(zip(predictions, golds, strict=True))
    exact = [max(float(normalize_answer(p) == normalize_answer(g)) for g in gs) for p, gs in pairs]
    f1 = [max(token_f1(p, g) for g in gs) for p, gs in pairs]
    return {"exact_match": sum(exact) / len(exact), "f1": sum(f1) / len(f1)}
