"""The contrastive score on constructed embeddings with known answers."""

import numpy as np

from neurflow.labeler.scoring import (
    contrastive_scores, mean_cosine_scores, mixture, patch_agreement, per_patch_contrastive, top_indices,
)


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _world(rng):
    """Concepts: 0 = 'background' (in every patch of the run), 1 = 'stripes' (this group), 2, 3 = others."""
    concepts = np.eye(4)
    def patches(weights, n):
        return _unit(np.asarray(weights) + 0.05 * rng.standard_normal((n, 4)))
    group = patches([1.0, 0.8, 0.0, 0.0], 20)  # mostly background, some stripes: a loose crop
    reference = np.concatenate([patches([1.0, 0.0, 0.7, 0.0], 40), patches([1.0, 0.0, 0.0, 0.7], 40), patches([1.0, 0.8, 0, 0], 5)])
    return concepts, group, reference


def test_contrastive_score_discounts_what_every_patch_shows():
    concepts, group, reference = _world(np.random.default_rng(0))
    assert mean_cosine_scores(group, concepts).argmax() == 0  # the baseline names the background
    scores = contrastive_scores(group, mixture(reference, concepts, 10.0), concepts, 10.0)
    assert scores.argmax() == 1  # the contrastive score names what is specific to the group
    # without the reference term it is plain zero-shot voting, which also names the background
    assert contrastive_scores(group, mixture(reference, concepts, 10.0), concepts, 10.0, contrast=0.0).argmax() == 0


def test_smoothing_keeps_rare_noise_concepts_from_winning():
    concepts = np.eye(3)
    group = _unit(np.tile([1.0, 0.02, 0.0], (10, 1)))
    reference = _unit(np.tile([0.2, 0.0, 1.0], (30, 1)))  # concept 1 never shows anywhere
    scores = contrastive_scores(group, mixture(reference, concepts, 20.0), concepts, 20.0)
    assert scores.argmax() == 0


def test_top_indices_sorted_best_first():
    scores = np.array([0.1, 3.0, -1.0, 2.0, 2.5])
    assert top_indices(scores, 3).tolist() == [1, 4, 3]
    assert top_indices(scores, 10).tolist() == [1, 4, 3, 0, 2]


def test_patch_agreement_is_the_laplace_share_of_agreeing_patches():
    per_patch = np.array([[0, 1], [0, 1], [1, 0], [0, 1]], dtype=float)  # 3 of 4 patches pick concept 1
    assert patch_agreement(per_patch, 1) == (3 + 1) / (4 + 2)
    assert patch_agreement(per_patch, 0) == (1 + 1) / (4 + 2)
    assert patch_agreement(np.zeros((0, 2)), 0) == 0.5


def test_per_patch_scores_match_the_group_score_for_one_patch():
    concepts, group, reference = _world(np.random.default_rng(1))
    ref = mixture(reference, concepts, 10.0)
    single = contrastive_scores(group[:1], ref, concepts, 10.0)
    assert np.allclose(per_patch_contrastive(group[:1], ref, concepts, 10.0)[0], single)
