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


def test_embedding_cache_round_trips_without_pickles(tmp_path):
    from types import SimpleNamespace

    from bench.labels import GroupData, WorldData, _load, _save
    from neurflow.world.suite import SUITE

    rng = np.random.default_rng(1)
    entry = SimpleNamespace(model=SimpleNamespace(directory=tmp_path), bundle=tmp_path / "world-clip-abc",
                            circuits={0: None, 5: None}, world=SUITE["shapes2"])
    assert _load(entry) is None
    groups = [GroupData("shapes2", f"c0/l1g{i}", rng.normal(size=(5, 4)), rng.normal(size=(9, 4)), rng.normal(size=(2, 4)),
                        ref, mixed, rng.uniform(size=3), rng.normal(size=(7, 4)))
              for i, (ref, mixed) in enumerate([("lime arrow", False), (None, True)])]
    world = WorldData("shapes2", "held-out", "resnet", rng.normal(size=(3, 4)), ["a", "b", "c"], 42.0, groups, 0.99, 0.9)
    _save(world, entry)
    back = _load(entry)
    assert (back.names, back.logit_scale, back.role, back.arch) == (["a", "b", "c"], 42.0, "held-out", "resnet")
    for a, b in zip(world.groups, back.groups):
        assert (a.gid, a.reference, a.mixed) == (b.gid, b.reference, b.mixed)
        for key in ("exemplars", "patches", "held", "ref_mixture", "negatives"):
            assert np.array_equal(getattr(a, key), getattr(b, key))
