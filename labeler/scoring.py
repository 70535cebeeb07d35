"""How a group's patches are turned into ranked concept labels.

Inputs are L2-normalised CLIP embeddings: the group's patches ``G`` (n, d), a reference pool ``R``
(m, d) of patches from the same run, and the vocabulary's concept embeddings ``T`` (c, d).

**Contrastive score (the default).** Each patch ``x`` votes for concepts with CLIP's own zero-shot
distribution ``p(d | x) = softmax_d(s * cos(x, t_d))``, ``s`` the model's logit scale. The group's
concept distribution is the mixture over its patches, ``P_G(d) = mean_{x in G} p(d | x)`` (a mixture,
not a product, so a few off-topic patches cannot veto the shared concept); the run's is the same
mixture over the reference pool, ``P_R(d)``. The score is a smoothed pointwise mutual information

    score(d) = log(P_G(d) + eps) - lambda * log(P_R(d) + eps),   eps = 1 / |vocabulary|

* ``log P_G`` rewards concepts the group's patches show; ``- log P_R`` removes what every patch of
  the run shows (the spirit of CLIP-Dissect's soft-WPMI, applied to patches instead of images);
* ``eps`` (the mass of the uniform distribution) keeps concepts that CLIP never predicts anywhere
  from winning on a ratio of two tiny numbers: a concept must reach a visible share of the group's
  votes before its rarity in the run counts;
* ``lambda`` (``LabelerConfig.contrast``, default 1) trades the two terms; ``lambda = 0`` is plain
  zero-shot voting.

**Confidence of the top label** (``Group.confidence``): the *patch agreement*, the estimated
probability that a further top patch of the group, labeled on its own, gets the group's top label.
Each patch used for labeling is scored alone (the same score with the group reduced to that patch);
with ``k`` of ``n`` patches agreeing, the confidence is the posterior mean under a uniform prior,
``(k + 1) / (n + 2)``. It is high for a group whose patches all show one concept, near the share of
the majority for a mixed group, and low when the group's label only wins on average. It is a
probability of something observable, so it can be checked: ``neurflow evaluate`` reports its
ROC-AUC against label correctness and its expected calibration error.

**Baseline** (``score="mean_cosine"``): the concept whose text embedding has the highest mean cosine
similarity with the group's patches.
"""

from __future__ import annotations

import numpy as np


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def concept_votes(patches: np.ndarray, concepts: np.ndarray, logit_scale: float) -> np.ndarray:
    """Per-patch zero-shot distribution over concepts, shape (n, c)."""
    return softmax(logit_scale * (patches @ concepts.T), axis=1)


def mixture(patches: np.ndarray, concepts: np.ndarray, logit_scale: float) -> np.ndarray:
    """Mean of the per-patch concept distributions, shape (c,)."""
    if len(patches) == 0:
        return np.full(len(concepts), 1.0 / len(concepts))
    return concept_votes(patches, concepts, logit_scale).mean(axis=0)


def contrastive_scores(
    group: np.ndarray,
    reference_mixture: np.ndarray,
    concepts: np.ndarray,
    logit_scale: float,
    contrast: float = 1.0,
) -> np.ndarray:
    """Smoothed PMI of each concept between the group and the run, shape (c,), in nats."""
    eps = 1.0 / len(concepts)
    p_group = mixture(group, concepts, logit_scale)
    return np.log(p_group + eps) - contrast * np.log(reference_mixture + eps)


def mean_cosine_scores(group: np.ndarray, concepts: np.ndarray) -> np.ndarray:
    """The baseline: mean cosine similarity of the group's patches with each concept, shape (c,)."""
    return (group @ concepts.T).mean(axis=0)


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(scores))
    idx = np.argpartition(-scores, k - 1)[:k]
    return idx[np.argsort(-scores[idx], kind="stable")]


def per_patch_contrastive(
    patches: np.ndarray, reference_mixture: np.ndarray, concepts: np.ndarray, logit_scale: float, contrast: float = 1.0
) -> np.ndarray:
    """The contrastive score of every concept for every patch alone, shape (n, c)."""
    eps = 1.0 / len(concepts)
    return np.log(concept_votes(patches, concepts, logit_scale) + eps) - contrast * np.log(reference_mixture + eps)


def patch_agreement(per_patch_scores: np.ndarray, top: int) -> float:
    """(k + 1) / (n + 2), k = patches whose own best concept is ``top`` (see module docstring)."""
    n = len(per_patch_scores)
    k = int((per_patch_scores.argmax(axis=1) == top).sum()) if n else 0
    return (k + 1) / (n + 2)
