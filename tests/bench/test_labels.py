"""The label bench's own arithmetic: the logistic calibration fit and the per-world summary."""

import numpy as np

from bench.labels import _summary, fit_logistic


def test_logistic_fit_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4000, 3))
    beta = np.array([-2.0, 3.0, 1.0, -1.5])
    p = 1 / (1 + np.exp(-(beta[0] + x @ beta[1:])))
    y = (rng.uniform(size=len(p)) < p).astype(float)
    assert np.allclose(fit_logistic(x, y, l2=1e-6), beta, atol=0.35)


def test_summary_counts_mixed_groups_and_compares_with_the_baseline():
    rows = [
        {"top1": True, "top5": True, "mixed": False, "confidence": 0.9, "retrieval_auc": 0.8},
        {"top1": True, "top5": True, "mixed": True, "confidence": 0.6, "retrieval_auc": 0.6},
        {"top1": False, "top5": True, "mixed": True, "confidence": 0.2},
        {"mixed": True, "confidence": 0.5},  # no reference: counted as a group only
    ]
    baseline = [dict(r) for r in rows]
    baseline[1]["top1"] = False
    s = _summary(rows, baseline)
    assert (s["groups"], s["with_reference"], s["mixed"]) == (4, 3, 2)
    assert s["top1"] == 2 / 3 and s["top1_mixed"] == 0.5 and s["top5"] == 1.0
    assert s["baseline_top1"] == 1 / 3 and s["baseline_top1_mixed"] == 0.0
    assert s["confidence_auc"] == 1.0  # both right labels are more confident than the wrong one
    assert s["retrieval_auc"] == 0.7
