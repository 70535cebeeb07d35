"""The contrastive and mosaic scores on constructed embeddings with known answers."""

import numpy as np
import pytest

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


# -- the mosaic score and its confidence ------------------------------------------------------------
from neurflow.labeler.scoring import exemplar_mixture, mosaic_scores, split_ratio  # noqa: E402


def _class_part_world(rng):
    """Concept 0 is a part of the class: it fills the run's patches and this group's five exemplars;
    the group's other top patches drift towards concept 2. Concepts 1 and 3 are elsewhere."""
    def patches(weights, n):
        return _unit(np.asarray(weights) + 0.05 * rng.standard_normal((n, 4)))
    exemplars = patches([1.0, 0.0, 0.2, 0.0], 5)
    drift = patches([0.6, 0.0, 1.0, 0.0], 30)
    reference = np.concatenate([patches([1.0, 0.0, 0.0, 0.0], 60), patches([0.0, 1.0, 0.0, 0.3], 20)])
    return np.eye(4), exemplars, np.concatenate([exemplars, drift]), reference


def test_mosaic_score_names_what_the_exemplars_show():
    concepts, exemplars, patches, reference = _class_part_world(np.random.default_rng(0))
    ref = mixture(reference, concepts, 10.0)
    # The former default misses it twice over: the run is full of concept 0, and most top patches drift.
    assert contrastive_scores(patches, ref, concepts, 10.0).argmax() != 0
    assert mosaic_scores(exemplars, patches, ref, concepts, 10.0, exemplar_weight=0.7, contrast=0.0).argmax() == 0
    # With the exemplars' weight at zero it is zero-shot voting over all patches, which drifts too.
    assert mosaic_scores(exemplars, patches, ref, concepts, 10.0, exemplar_weight=0.0, contrast=0.0).argmax() == 2


def test_hard_votes_follow_the_mosaic_majority_when_the_minority_is_surer():
    """Three exemplars lean to concept 0 without conviction, two show concept 1 clearly: a reader of
    the mosaic sees concept 0 three times. Soft votes (mean distributions) let the two sure ones win."""
    concepts = np.eye(4)
    exemplars = _unit(np.array([[1.0, 0.8, 0, 0]] * 3 + [[0.0, 1.0, 0, 0]] * 2))
    ref = np.full(4, 0.25)
    soft = mosaic_scores(exemplars, exemplars, ref, concepts, 10.0, votes="soft")
    hard = mosaic_scores(exemplars, exemplars, ref, concepts, 10.0, votes="hard")
    assert soft.argmax() == 1 and hard.argmax() == 0
    # It is still a distribution, and one vote outweighs all that the soft term can move: a 3-2 count
    # keeps its order even when the soft mixture is at its most lopsided the other way.
    p = exemplar_mixture(exemplars, concepts, 10.0, "hard")
    assert np.isclose(p.sum(), 1.0) and p[0] - p[1] > 0
    tie_break = 0.5 / (len(exemplars) + 1)
    assert (1 - tie_break) / len(exemplars) > tie_break


def test_hard_votes_break_ties_like_the_mean_cosine_baseline_and_refuse_unknown_kinds():
    concepts = np.eye(4)
    # Three exemplars of concept 0, one of them read as concept 3; two sure exemplars of concept 2. The
    # votes tie 2-2: concept 0 is what every exemplar supports a little, concept 2 what two support surely.
    exemplars = _unit(np.array([[1.0, 0.8, 0, 0]] * 2 + [[0.8, 0, 0, 1.0]] + [[0, 0, 1.0, 0]] * 2))
    assert mixture(exemplars, concepts, 10.0).argmax() == 2  # the arithmetic mean follows the sure two
    p = exemplar_mixture(exemplars, concepts, 10.0, "hard")
    assert p.argmax() == 0 == mean_cosine_scores(exemplars, concepts).argmax()
    assert np.isclose(p.sum(), 1.0) and p[0] > p[2] > p[3] > p[1]  # the lone vote for 3 stays below the tie
    with pytest.raises(ValueError, match="exemplar votes must be one of"):
        exemplar_mixture(exemplars, concepts, 10.0, "majority")


def test_split_ratio_counts_the_strongest_other_concept():
    assert split_ratio(np.array([0, 0, 0, 1, 2]), top=0) == 1 / 3
    assert split_ratio(np.array([0, 0, 0, 1, 1]), top=0) == 2 / 3
    assert split_ratio(np.array([0, 0, 0]), top=0) == 0.0
    assert split_ratio(np.array([1, 1, 2]), top=0) == 1.0  # nothing picks the label: all split
