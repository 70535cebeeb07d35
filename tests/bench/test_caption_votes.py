"""The caption bench's own arithmetic: the recalibration folded into a combination."""

import numpy as np
import pytest

from bench.caption_votes import platt_folded
from neurflow.labeler.evidence import FEATURES, Combination


def test_platt_scaling_folds_into_the_coefficients_and_keeps_every_order():
    rng = np.random.default_rng(0)
    combination = Combination(tuple(rng.normal(size=len(FEATURES) + 1)), FEATURES, {"worlds": ["standard"]})
    folded = platt_folded(combination, 0.75, 1.5, labels=10)
    values = [dict(zip(FEATURES, rng.uniform(size=len(FEATURES)))) for _ in range(20)]
    for v in values:
        p = combination.probability(v)
        z = np.log(p / (1 - p))
        assert folded.probability(v) == pytest.approx(1 / (1 + np.exp(-(0.75 * z + 1.5))))
    assert (
        np.argsort([combination.probability(v) for v in values]).tolist()
        == np.argsort([folded.probability(v) for v in values]).tolist()
    )
    assert folded.fitted_on == {"worlds": ["standard"], "recalibrated": {"scale": 0.75, "shift": 1.5, "labels": 10}}
