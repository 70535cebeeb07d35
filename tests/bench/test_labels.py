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
    bundle = tmp_path / "world-clip-abc"
    entry = SimpleNamespace(model=SimpleNamespace(directory=tmp_path), circuits={0: None, 5: None}, world=SUITE["shapes2"])
    assert _load(entry, bundle, "resnet") is None
    groups = [GroupData("shapes2", f"c0/l1g{i}", rng.normal(size=(5, 4)), rng.normal(size=(9, 4)), rng.normal(size=(2, 4)),
                        ref, mixed, rng.uniform(size=3), rng.normal(size=(7, 4)), rng.uniform(size=9) if mixed else None)
              for i, (ref, mixed) in enumerate([("lime arrow", False), (None, True)])]
    world = WorldData("shapes2", "held-out", "resnet", rng.normal(size=(3, 4)), ["a", "b", "c"], 42.0, groups, 0.99, 0.9)
    _save(world, entry, bundle)
    assert _load(entry, tmp_path / "world-clip-other", "resnet") is None  # each CLIP its own embeddings
    back = _load(entry, bundle, "resnet")
    assert (back.names, back.logit_scale, back.role, back.arch) == (["a", "b", "c"], 42.0, "held-out", "resnet")
    for a, b in zip(world.groups, back.groups):
        assert (a.gid, a.reference, a.mixed) == (b.gid, b.reference, b.mixed)
        for key in ("exemplars", "patches", "held", "ref_mixture", "negatives", "weights"):
            assert (getattr(a, key) is None and getattr(b, key) is None) or np.array_equal(getattr(a, key), getattr(b, key))


def test_logistic_fit_drops_a_feature_whose_sign_is_wrong():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (3000, 2))
    beta = np.array([-1.0, 4.0, -2.0])  # the data say the second feature lowers the probability
    y = (rng.uniform(size=len(x)) < 1 / (1 + np.exp(-(beta[0] + x @ beta[1:])))).astype(float)
    free = fit_logistic(x, y, l2=1e-6)
    assert free[2] < -1.0
    constrained = fit_logistic(x, y, l2=1e-6, signs=(1, 1))
    assert constrained[2] == 0.0 and constrained[1] > 2.0


def _world_of_parts(rng):
    from bench.labels import GroupData, WorldData

    def group(gid, part, mixed=False, n=12):
        shift = part or 0
        return GroupData("w", gid, rng.normal(size=(5, 4)) + shift, rng.normal(size=(n, 4)) + shift, rng.normal(size=(3, 4)),
                         None if part is None else f"part {part}", mixed, rng.uniform(size=3), rng.normal(size=(7, 4)))

    groups = [group("a", 1), group("b", 2), group("c", 2, n=30), group("impure", 1, mixed=True), group("none", None)]
    return WorldData("w", "dev", "vit", rng.normal(size=(3, 4)), ["part 1", "part 2", "z"], 10.0, groups, 1.0, 1.0), groups


def test_constructed_mixed_groups_merge_pure_groups_of_different_parts():
    from bench.mixed import BY_CERTAINTY, KINDS, constructed_mixed
    from neurflow.labeler.scoring import concept_votes

    world, groups = _world_of_parts(np.random.default_rng(3))
    mixed = constructed_mixed(world)
    by_source = {}
    for m in mixed:
        by_source.setdefault(m.gid.split("+")[0], []).append(m)
    assert set(by_source) == {"a", "b", "c"}  # impure groups and groups without a reference are not merged
    originals = {g.gid: g for g in groups}
    for source, made in by_source.items():
        a = originals[source]
        assert len(made) == len(KINDS)
        for m in made:
            kind = m.gid.split(" ", 1)[1]
            n_a = KINDS[kind][0]
            b = originals[m.gid.split("+")[1].split(" ")[0]]
            assert b.reference != a.reference and m.reference == a.reference and m.mixed
            if kind in BY_CERTAINTY:  # A's least sure exemplars beside B's surest
                def sure(g, rows):
                    return concept_votes(rows, world.concepts, world.logit_scale)[:, world.names.index(g.reference)]
                assert sure(a, m.exemplars[:n_a]).max() <= np.sort(sure(a, a.exemplars))[n_a - 1] + 1e-12
                assert sure(b, m.exemplars[n_a:]).min() >= np.sort(sure(b, b.exemplars))[n_a] - 1e-12
                continue
            assert np.array_equal(m.exemplars[:n_a], a.exemplars[:n_a]) and np.array_equal(m.exemplars[n_a:], b.exemplars[:5 - n_a])
            assert np.array_equal(m.patches[:5], m.exemplars) and len(m.patches) == min(64, 5 + len(a.patches) + len(b.patches) - 10)
            assert len(m.held) == len(a.held) + len(b.held)


def test_interleave_takes_rounds_then_the_rest():
    from bench.mixed import interleave

    a = np.arange(3)[:, None] * np.ones((1, 2))
    b = 10 + np.arange(5)[:, None] * np.ones((1, 2))
    assert interleave(a, b, 1, 2)[:, 0].tolist() == [0, 10, 11, 1, 12, 13, 2, 14]
    assert interleave(a[:0], b, 1, 1)[:, 0].tolist() == [10, 11, 12, 13, 14]


def _synthetic_world(name, role, rng, scramble=False):
    """Four concepts; groups of each part (exemplars and patches near the part's text embedding), the
    last four so noisy that some are named wrongly (so that the combination has errors to learn from)."""
    from bench.labels import GroupData, WorldData
    from neurflow.labeler.scoring import mixture

    concepts = np.eye(4, 8)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    names = ["part a", "part b", "part c", "part d"]
    ref_mixture = mixture(unit(np.repeat(concepts[:2], 40, axis=0) + 0.3 * rng.normal(size=(80, 8))), concepts, 20.0)
    groups = []
    for i in range(12):
        part, noise = i % 4, (0.4 if i < 8 else 1.5)
        exemplars = unit(concepts[part] + noise * rng.normal(size=(5, 8)))
        patches = np.concatenate([exemplars, unit(concepts[part] + noise * rng.normal(size=(20, 8)))])
        reference = names[(part + 1) % 4] if scramble else names[part]
        groups.append(GroupData(name, f"c0/l{i}g0", exemplars, patches, unit(concepts[part] + 0.5 * rng.normal(size=(4, 8))),
                                reference, False, ref_mixture, unit(rng.normal(size=(30, 8))), rng.uniform(0.2, 1.0, 25)))
    prompts = np.stack([concepts, unit(concepts + 0.3 * rng.normal(size=concepts.shape))])
    return WorldData(name, role, "vit", concepts, names, 20.0, groups, 1.0, 1.0, prompts)


def test_label_section_chooses_and_calibrates_on_dev_worlds_only(monkeypatch, capsys):
    """What the held-out world holds changes what is reported, never what is chosen or fitted."""
    import bench.labels as labels
    from types import SimpleNamespace

    def run(scramble_heldout):
        worlds = {"standard": _synthetic_world("standard", "dev", np.random.default_rng(5)),
                  "shapes2": _synthetic_world("shapes2", "held-out", np.random.default_rng(6), scramble=scramble_heldout)}
        monkeypatch.setattr(labels, "_collect", lambda name, log, *clip: worlds[name])
        return labels.run_section(SimpleNamespace(label_worlds=["standard", "shapes2"], label_json=None))

    honest, scrambled = run(False), run(True)
    out = capsys.readouterr().out
    assert "constructed mixed groups" in out and "pooled per role" in out and "reliability" in out
    assert honest["fitted_combination"] is not None  # the noisy dev groups give it errors to learn from
    assert honest["fitted_combination"]["fitted_on"]["worlds"] == ["standard"]
    assert honest["chosen"] == scrambled["chosen"] and honest["fitted_combination"] == scrambled["fitted_combination"]
    unit = {(u["world"], u["clips"]): u for u in honest["units"]}[("shapes2", "own")]["sets"]["engine"]
    bad = {(u["world"], u["clips"]): u for u in scrambled["units"]}[("shapes2", "own")]["sets"]["engine"]
    assert unit["labeler"]["top1"] >= 0.75 and bad["labeler"]["top1"] <= 0.25
    assert bad["baseline"]["top1"] <= 0.25  # the baseline is scrambled alike
    for key in ("top1_confident", "coverage", "confidence_auc", "ece", "baseline_top1"):
        assert key in unit["labeler"]


def test_caption_rows_score_caption_labels_against_the_mosaic_part():
    """Caption labels are scored like CLIP top-1: only the reference part counts; a missing caption
    and a label outside the vocabulary are wrong."""
    from bench.labels import caption_rows

    w = _synthetic_world("uneven", "held-out", np.random.default_rng(7))
    right = {g.gid: g.reference for g in w.groups}
    assert caption_rows(w, right)["top1"] == 1.0 and caption_rows(w, right)["in_vocabulary"] == 1.0
    half = dict(right)
    for g in w.groups[:4]:
        half[g.gid] = None if g.gid.startswith("c0/l0") else "a caption word"
    row = caption_rows(w, half)
    assert row["top1"] == 8 / 12 and row["captioned"] == len(w.groups) - 1 and row["in_vocabulary"] == 8 / 12
    assert row["baseline_top1"] == caption_rows(w, {})["baseline_top1"] and caption_rows(w, {})["top1"] == 0.0


def test_coverage_at_a_precision_takes_the_most_confident_labels_first():
    from bench.labels import _coverage_at

    conf = [0.9, 0.8, 0.7, 0.6, 0.5]
    assert _coverage_at(conf, [True, True, False, True, False], 0.95) == 0.4  # the first two
    assert _coverage_at(conf, [True, True, True, True, False], 0.95) == 0.8
    assert _coverage_at(conf, [False] * 5, 0.95) == 0.0 and _coverage_at([], [], 0.95) is None
