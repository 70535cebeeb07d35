"""Evaluation metrics on constructed cases with known answers, including the sanity checks."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from neurflow.labeler.evaluation import metrics as M


def test_ranking_metrics_known_values():
    assert M.roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.3, 0.1]) == 1.0
    assert M.roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert M.roc_auc([1, 0], [0.5, 0.5]) == 0.5  # a tie counts one half
    assert M.average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    assert M.roc_auc([1, 1], [0.3, 0.2]) is None and M.average_precision([0, 0], [1, 2]) is None


@pytest.mark.parametrize("seed", range(5))
def test_ranking_metrics_agree_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(200) < 0.3
    s = y * 0.7 + rng.random(200)
    s[:20] = np.round(s[:20], 1)  # some ties
    assert M.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert M.average_precision(y, s) == pytest.approx(average_precision_score(y, s))


def test_overlap_metrics():
    pred = np.array([1, 1, 0, 0, 1], bool)
    truth = np.array([1, 0, 0, 1, 1], bool)
    assert M.f1(pred, truth) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert M.iou(pred, truth) == pytest.approx(2 / 4)
    assert M.precision(pred, truth) == pytest.approx(2 / 3) and M.recall(pred, truth) == pytest.approx(2 / 3)
    assert M.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0) and M.pearson([1, 1], [0, 1]) is None


def test_binarized_activation_takes_the_top_fraction():
    a = np.arange(10, dtype=float)
    assert M.binarize_activation(a, 0.2).tolist() == [False] * 8 + [True] * 2


def _faithful_unit(seed=0, n=400, share=0.15):
    rng = np.random.default_rng(seed)
    presence = rng.random(n) < share
    activation = presence * 1.0 + 0.3 * rng.standard_normal(n)
    return activation, presence


def test_trusted_metrics_pass_both_sanity_checks_on_a_faithful_explanation():
    activation, presence = _faithful_unit()
    checks = M.sanity_checks(activation, presence)
    for name in M.TRUSTED:
        c = checks[name]
        assert c["passes"], (name, c)
        assert c["value"] > c["missing_labels"] and c["value"] > c["extra_labels"]


def test_recall_and_precision_each_fail_one_sanity_check():
    """The checks are not vacuous: recall ignores missing labels, precision ignores extra ones."""
    activation, presence = _faithful_unit(seed=1)
    checks = M.sanity_checks(activation, presence)
    assert checks["recall"]["passes"] is False
    assert checks["recall"]["missing_labels"] >= checks["recall"]["value"] - 0.05  # dropping positives does not hurt recall
    assert checks["precision"]["passes"] is False
    assert checks["precision"]["extra_labels"] >= checks["precision"]["value"]  # random positives do not hurt precision


def test_perturbations_change_exactly_what_they_say():
    rng = np.random.default_rng(0)
    presence = np.zeros(100, bool)
    presence[:20] = True
    dropped = M.drop_half_positives(presence, rng)
    assert dropped.sum() == 10 and not (dropped & ~presence).any()
    added = M.add_random_positives(presence, rng)
    assert added.sum() == 40 and added[:20].all()


def test_sanity_checks_are_undecided_without_enough_positives():
    checks = M.sanity_checks(np.arange(10.0), np.array([1] + [0] * 9, bool))
    assert all(c["passes"] is None for c in checks.values())


def test_expected_calibration_error():
    assert M.expected_calibration_error([0.9, 0.9, 0.1, 0.1], [1, 1, 0, 0]) == pytest.approx(0.1)
    assert M.expected_calibration_error([0.9, 0.9], [0, 0]) == pytest.approx(0.9)
