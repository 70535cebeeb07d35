"""How a group's patches are turned into ranked concept labels.

Inputs are L2-normalised CLIP embeddings: the group's patches ``G`` (n, d), a reference pool ``R``
(m, d) of patches from the same run, and the vocabulary's concept embeddings ``T`` (c, d).

**Contrastive score (selectable; the default is the mosaic score below).** Each patch ``x`` votes for concepts with CLIP's own zero-shot
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

**Confidence of the top label** (``Group.confidence``) under the contrastive and mean-cosine scores
(the mosaic score's is the fitted combination of :mod:`labeler.evidence`): the *patch agreement*, the estimated
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


# -- the mosaic score: what the display exemplars show, supported by the group's other patches ------
#
# Measured on held-out worlds (docs/label-quality.md), the contrastive score over all top patches lost
# to the plain mean cosine of the five display exemplars: the reference term penalises exactly the
# parts a class is made of (they fill every patch of the run), and a group's many top patches drift
# from what its mosaic shows. The mosaic score therefore votes with the exemplars first:
#
#     P(d) = w * P_E(d) + (1 - w) * P_G(d)          (zero-shot votes, see ``exemplar_mixture``, ``mixture``)
#     score(d) = log(P(d) + eps) - lambda * log(P_R(d) + eps)
#
# with ``P_E`` over the exemplars (each exemplar's best concept counted once, see
# ``MOSAIC_EXEMPLAR_VOTES``), ``P_G`` over all labeling patches and ``P_R`` over the run's
# reference pool. ``w``, ``lambda`` and the votes below were chosen on the dev worlds of the label suite
# (``python -m bench.run labels``) and only reported on its held-out worlds.

#: Weight of the exemplars' votes in the mixture (the rest: all the group's labeling patches).
MOSAIC_EXEMPLAR_WEIGHT = 1.0
#: Weight of the run's reference pool in the mosaic score (the contrastive score uses 1).
MOSAIC_CONTRAST = 0.0
#: How the exemplars vote in ``P_E``. ``"hard"``: each exemplar's own best concept counts once (the
#: mosaic's majority, what a reader of the mosaic sees); ties between concepts with as many votes are
#: broken by the normalised geometric mean of the exemplars' distributions, whose order is the mean
#: cosine baseline's. ``"soft"``: the mean of their distributions, where two confident exemplars
#: outvote three hesitant ones.
MOSAIC_EXEMPLAR_VOTES = "hard"
EXEMPLAR_VOTES = ("hard", "soft")


def exemplar_mixture(exemplars: np.ndarray, concepts: np.ndarray, logit_scale: float,
                     votes: str = MOSAIC_EXEMPLAR_VOTES) -> np.ndarray:
    """``P_E``, shape (c,): the exemplars' votes, counted ``votes`` (see ``MOSAIC_EXEMPLAR_VOTES``)."""
    return vote_mixture(logit_scale * (exemplars @ concepts.T), votes)


def vote_mixture(logits: np.ndarray, votes: str = MOSAIC_EXEMPLAR_VOTES) -> np.ndarray:
    """``P_E`` from the exemplars' zero-shot logits (k, c) (``s * cos``, or several CLIPs' summed).

    Hard votes are ``(1 - b) * counts / n + b * G`` with ``b = 0.5 / (n + 1)`` and ``G`` the geometric
    pooling ``G(d) ~ prod_x p(d | x) ** (1 / n) = softmax_d(mean_x logit(x, d))``. One vote is worth
    ``(1 - b) / n > b``, more than ``G`` can move, so ``G`` decides only between concepts with the same
    number of votes (a rule, not a fit). ``G`` rather than the arithmetic mixture: an exemplar that CLIP
    reads wrongly splits the majority's votes, and the arithmetic mean then hands the tie to the
    minority whenever CLIP is surer of the minority's part; the geometric one asks which concept all
    exemplars support."""
    if votes not in EXEMPLAR_VOTES:
        raise ValueError(f"exemplar votes must be one of {EXEMPLAR_VOTES}, got {votes!r}")
    n, c = logits.shape
    if n == 0:
        return np.full(c, 1.0 / c)
    if votes == "soft":
        return softmax(logits, axis=1).mean(axis=0)
    counts = np.bincount(logits.argmax(axis=1), minlength=c)  # an exemplar's best concept: argmax of its softmax
    tie_break = 0.5 / (n + 1)
    return (1 - tie_break) * counts / n + tie_break * softmax(logits.mean(axis=0))


def mosaic_mixture(exemplars: np.ndarray, patches: np.ndarray, concepts: np.ndarray, logit_scale: float,
                   exemplar_weight: float = MOSAIC_EXEMPLAR_WEIGHT, votes: str = MOSAIC_EXEMPLAR_VOTES) -> np.ndarray:
    """``w * P_E + (1 - w) * P_G``, shape (c,); the exemplars alone when there are no other patches."""
    p_exemplars = exemplar_mixture(exemplars, concepts, logit_scale, votes)
    if len(patches) == 0:
        return p_exemplars
    return exemplar_weight * p_exemplars + (1 - exemplar_weight) * mixture(patches, concepts, logit_scale)


def mosaic_scores(exemplars: np.ndarray, patches: np.ndarray, reference_mixture: np.ndarray, concepts: np.ndarray,
                  logit_scale: float, exemplar_weight: float = MOSAIC_EXEMPLAR_WEIGHT, contrast: float = MOSAIC_CONTRAST,
                  votes: str = MOSAIC_EXEMPLAR_VOTES) -> np.ndarray:
    """The mosaic score of every concept, shape (c,), in nats (see the comment above)."""
    eps = 1.0 / len(concepts)
    p = mosaic_mixture(exemplars, patches, concepts, logit_scale, exemplar_weight, votes)
    return np.log(p + eps) - contrast * np.log(reference_mixture + eps)


def split_ratio(best: np.ndarray, top: int) -> float:
    """Votes of the most frequent other concept over the top label's votes, at most 1."""
    counts = np.bincount(best, minlength=top + 1)
    k_top = int(counts[top])
    counts[top] = 0
    runner_up = int(counts.max()) if len(counts) else 0
    if k_top == 0:
        return 1.0 if runner_up else 0.0
    return min(runner_up / k_top, 1.0)


def confidence_method(score: str) -> str:
    """How ``Group.confidence`` is computed under the single-CLIP scores kept for comparison
    (the mosaic score's is the fitted combination of :mod:`labeler.evidence`)."""
    return "patch agreement: (k+1)/(n+2), k of the n labeling patches whose own best label is labels[0]"
