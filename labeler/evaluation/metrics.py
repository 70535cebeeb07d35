"""Metrics of label quality, on plain arrays, with no CLIP or circuit in sight (so they can be tested
on constructed cases with known answers).

Ranking metrics take ``labels`` (1 = positive) and ``scores`` (higher = more positive):
:func:`roc_auc` (ties count one half, the Mann-Whitney statistic) and :func:`average_precision`
(AUPRC as the mean precision at each positive's rank, the step-wise area scikit-learn reports).

Activation faithfulness follows NeuronEval (Oikarinen et al., "Evaluating Neuron Explanations: A
Unified Framework with Sanity Checks", 2025): compare a concept's presence over many inputs with the
unit's activation on them. A metric is only trusted if it passes both sanity checks: dropping half
of the concept's positives (*missing labels*) and adding as many random positives (*extra labels*)
must each lower it. Recall fails the missing-labels check and precision the extra-labels one, which is why they are
reported only as diagnostics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties averaged."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def roc_auc(labels, scores) -> float | None:
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    r = _ranks(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(labels, scores) -> float | None:
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.sum() == 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    y_sorted = y[order]
    s_sorted = s[order]
    # Tied scores form one threshold (as in scikit-learn): precision is measured after the whole tie.
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[distinct]
    fp = (distinct + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    previous = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - previous) * precision))


def pearson(a, b) -> float | None:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _confusion(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    tp = int(np.sum(pred & truth))
    return tp, int(np.sum(pred & ~truth)), int(np.sum(~pred & truth))


def f1(pred, truth) -> float | None:
    tp, fp, fn = _confusion(np.asarray(pred, bool), np.asarray(truth, bool))
    return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else None


def iou(pred, truth) -> float | None:
    tp, fp, fn = _confusion(np.asarray(pred, bool), np.asarray(truth, bool))
    return tp / (tp + fp + fn) if (tp + fp + fn) else None


def precision(pred, truth) -> float | None:
    tp, fp, _ = _confusion(np.asarray(pred, bool), np.asarray(truth, bool))
    return tp / (tp + fp) if (tp + fp) else None


def recall(pred, truth) -> float | None:
    tp, _, fn = _confusion(np.asarray(pred, bool), np.asarray(truth, bool))
    return tp / (tp + fn) if (tp + fn) else None


def binarize_activation(activation, top_fraction: float = 0.2) -> np.ndarray:
    """The unit is 'on' for its top ``top_fraction`` of inputs (and never where it is not positive)."""
    a = np.asarray(activation, dtype=np.float64)
    if len(a) == 0:
        return np.zeros(0, dtype=bool)
    threshold = np.quantile(a, 1.0 - top_fraction)
    return (a >= threshold) & (a > 0) if np.any(a > 0) else a > threshold


#: metric name -> f(activation, concept presence) -> value. Presence is boolean per input.
def faithfulness_metrics(top_fraction: float = 0.2) -> dict[str, Callable[[np.ndarray, np.ndarray], float | None]]:
    def on(a):
        return binarize_activation(a, top_fraction)

    return {
        "pearson": lambda a, c: pearson(a, c.astype(np.float64)),
        "auprc": lambda a, c: average_precision(c, a),
        "f1": lambda a, c: f1(on(a), c),
        "iou": lambda a, c: iou(on(a), c),
        # diagnostics: each fails one sanity check by construction
        "recall": lambda a, c: recall(on(a), c),
        "precision": lambda a, c: precision(on(a), c),
    }


TRUSTED = ("pearson", "auprc", "f1", "iou")


def drop_half_positives(presence: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = presence.copy()
    pos = np.flatnonzero(out)
    out[rng.choice(pos, size=len(pos) // 2, replace=False)] = False
    return out


def add_random_positives(presence: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = presence.copy()
    neg = np.flatnonzero(~out)
    out[rng.choice(neg, size=min(len(neg), int(out.sum())), replace=False)] = True
    return out


def sanity_checks(
    activation, presence, metrics: dict[str, Callable] | None = None, seed: int = 0, repeats: int = 5
) -> dict[str, dict[str, float | bool | None]]:
    """Per metric: its value, its mean after each perturbation, and whether it dropped under both."""
    a = np.asarray(activation, dtype=np.float64)
    c = np.asarray(presence, dtype=bool)
    metrics = metrics or faithfulness_metrics()
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float | bool | None]] = {}
    usable = 2 <= c.sum() <= len(c) // 2
    drops = [drop_half_positives(c, rng) for _ in range(repeats)] if usable else []
    adds = [add_random_positives(c, rng) for _ in range(repeats)] if usable else []
    for name, fn in metrics.items():
        value = fn(a, c)
        if not usable or value is None:
            out[name] = {"value": value, "missing_labels": None, "extra_labels": None, "passes": None}
            continue
        dropped = [v for v in (fn(a, d) for d in drops) if v is not None]
        added = [v for v in (fn(a, x) for x in adds) if v is not None]
        d_mean = float(np.mean(dropped)) if dropped else None
        x_mean = float(np.mean(added)) if added else None
        passes = d_mean is not None and x_mean is not None and value > d_mean and value > x_mean
        out[name] = {"value": value, "missing_labels": d_mean, "extra_labels": x_mean, "passes": bool(passes)}
    return out


def expected_calibration_error(confidence, correct, bins: int = 5) -> float | None:
    p = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if len(p) == 0:
        return None
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.sum() / len(p) * abs(p[sel].mean() - y[sel].mean())
    return float(total)
