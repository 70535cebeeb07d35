"""The contrastive score on constructed embeddings with known answers."""

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
from neurflow.labeler.scoring import (  # noqa: E402
    CLOSE_MARGIN, DOUBT_CAP, MAX_CONFIDENCE, UNCERTAIN_BELOW, ConfidenceParts, calibrated_confidence, calibrated_probability,
    confidence_parts, doubtful, exemplar_mixture, mosaic_scores, split_ratio,
)


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


def test_confidence_says_when_patches_disagree_with_the_mosaic_or_labels_are_close():
    concepts, exemplars, patches, _ = _class_part_world(np.random.default_rng(1))
    agreeing = np.concatenate([exemplars, exemplars[:1].repeat(30, axis=0)])
    clean = confidence_parts(exemplars, agreeing, concepts, 10.0, top=0)
    drifting = confidence_parts(exemplars, patches, concepts, 10.0, top=0)
    assert clean.exemplars == drifting.exemplars == (5 + 1) / (5 + 2)
    assert drifting.patches < 0.3 < 0.9 < clean.patches
    assert np.isclose(drifting.margin, clean.margin)  # the margin is the mosaic's own (exemplar weight 1): patches enter via agreement
    assert calibrated_confidence(drifting) < UNCERTAIN_BELOW <= calibrated_confidence(clean)  # always shown as uncertain
    # Two concepts equally present in every exemplar: the margin is near zero, the confidence drops.
    tied = _unit(np.tile([1.0, 0.0, 1.0, 0.0], (5, 1)))
    parts = confidence_parts(tied, tied, concepts, 10.0, top=0)
    assert parts.margin < 0.01
    assert calibrated_confidence(parts) < UNCERTAIN_BELOW


def test_calibrated_confidence_is_a_monotone_probability():
    low = calibrated_confidence(ConfidenceParts(0.2, 0.6, 0.2))
    high = calibrated_confidence(ConfidenceParts(0.9, 0.9, 0.8))
    assert 0.0 < low < high < 1.0
    base = [0.6, 0.6, 0.3, 0.0, 0.0]
    for field, direction in enumerate((1, 1, 1, -1, -1)):  # agreement and margin raise it, a second part lowers it
        moved = list(base)
        moved[field] += 0.2 if field < 3 else 0.3  # splits stay below SPLIT_AT: the cap is tested on its own
        delta = calibrated_probability(ConfidenceParts(*moved)) - calibrated_probability(ConfidenceParts(*base))
        assert direction * delta >= 0
    assert calibrated_probability(ConfidenceParts(0.8, 0.6, 0.3)) > calibrated_probability(ConfidenceParts(*base))
    # A clean mosaic is very likely right, but never shown as certain.
    clean = ConfidenceParts(6 / 7, 0.99, 1.0)
    assert calibrated_probability(clean) > MAX_CONFIDENCE == calibrated_confidence(clean)


def test_calibration_needs_one_coefficient_per_feature():
    with pytest.raises(ValueError, match="needs 5 coefficients"):
        calibrated_probability(ConfidenceParts(0.5, 0.5, 0.5), (-4.0, 4.0, 2.0, 4.0))


def test_split_ratio_counts_the_strongest_other_concept():
    assert split_ratio(np.array([0, 0, 0, 1, 2]), top=0) == 1 / 3
    assert split_ratio(np.array([0, 0, 0, 1, 1]), top=0) == 2 / 3
    assert split_ratio(np.array([0, 0, 0]), top=0) == 0.0
    assert split_ratio(np.array([1, 1, 2]), top=0) == 1.0  # nothing picks the label: all split


def test_a_mosaic_of_two_parts_is_doubtful_even_when_its_majority_is_clear():
    """Three exemplars of concept 0, two of concept 1: the label is the majority's, and uncertain."""
    concepts = np.eye(4)
    three_two = _unit(np.array([[1.0, 0.05, 0, 0]] * 3 + [[0.05, 1.0, 0, 0]] * 2))
    parts = confidence_parts(three_two, three_two, concepts, 20.0, top=0)
    assert parts.exemplar_split == parts.patch_split == 2 / 3 and parts.margin > CLOSE_MARGIN
    assert doubtful(parts) and calibrated_confidence(parts) <= DOUBT_CAP < UNCERTAIN_BELOW
    # One stray exemplar out of five is not a second part.
    four_one = _unit(np.array([[1.0, 0.05, 0, 0]] * 4 + [[0.05, 1.0, 0, 0]]))
    parts = confidence_parts(four_one, four_one, concepts, 20.0, top=0)
    assert parts.exemplar_split == 0.25 and not doubtful(parts)
    assert calibrated_confidence(parts) > UNCERTAIN_BELOW
