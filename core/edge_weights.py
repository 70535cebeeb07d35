"""Normalising a concept's raw edge scores (signed mean IG) over its lower core neurons."""

from __future__ import annotations

import numpy as np

EPS = 1e-7


def l1_normalise(scores: np.ndarray) -> np.ndarray:
    """w_j = s_j / sum |s|: the absolute weights sum to exactly 1 (all zero if every score is 0).

    No epsilon in the denominator: raw IG scores are often ~1e-4, where an epsilon would bias the sum.
    """
    scores = np.asarray(scores, dtype=np.float64)
    total = np.abs(scores).sum()
    return scores / total if total > 0 else np.zeros_like(scores)


def reference_rescale(scores: np.ndarray) -> np.ndarray:
    """The reference implementation's in-place rescale, kept for number-for-number comparisons.

    Entries are overwritten while iterating in importance order, so entry j is divided by
    ``sum_{j'<j} |w_j'| + sum_{j'>=j} |s_j'| + eps``: the first entry gets roughly its L1 share,
    the others stay near raw scale and the weights do not sum to 1 (see docs, "rescale quirk").
    """
    w = np.array(scores, dtype=np.float64)
    for j in range(len(w)):
        w[j] = w[j] / (np.abs(w).sum() + EPS)
    return w
