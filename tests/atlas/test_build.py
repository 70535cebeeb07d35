"""The atlas of hand-made circuits (tests/atlas/handmade.py): every number worked out on paper."""

from __future__ import annotations

import random

import msgspec
import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage

from neurflow.atlas import SCHEMA_VERSION, Atlas, AtlasInput, AtlasSettings, build_atlas
from neurflow.atlas.concepts import cluster_sets, jaccard
from neurflow.atlas.document import json_schema

from .handmade import MODEL, circuit, circuits


def atlas_of(settings: AtlasSettings | None = None) -> Atlas:
    return build_atlas([AtlasInput(c, f"c{c.target.class_index}") for c in circuits()], settings)


def summary(layer):
    return [(c.id, c.label, c.classes, [(g.class_index, g.group) for g in c.groups], c.core) for c in layer.concepts]


def test_shared_concepts_per_layer():
    atlas = atlas_of()
    assert atlas.schema == SCHEMA_VERSION and [layer.name for layer in atlas.layers] == ["fc", "mid", "low"]
    fc, mid, low = atlas.layers
    assert fc.concepts == [] and fc.n_groups == 4  # one class neuron each: nothing shared
    assert summary(mid) == [
        ("1c0", "fur", [0, 1], [(0, "l1g0"), (1, "l1g0")], [1, 2, 3, 4]),
        ("1c1", "eye", [0, 2], [(0, "l1g1"), (2, "l1g1")], [10, 11, 12]),  # eye/lamp tie: alphabetical
        ("1c2", "wheel", [2, 3], [(2, "l1g0"), (3, "l1g0")], [5, 6, 7]),
    ]
    assert [(x.text, x.count) for x in mid.concepts[1].labels] == [("eye", 1), ("lamp", 1)]
    assert mid.concepts[0].cohesion == 0.75 and mid.concepts[2].cohesion == round(2 / 3, 6)
    # stripes: three classes, mean Jaccard (3/4 + 2/3 + 2/4) / 3
    assert summary(low) == [
        ("2c0", "stripes", [0, 1, 3], [(0, "l2g0"), (1, "l2g0"), (3, "l2g1")], [20, 21, 22]),
        ("2c1", "metal", [2, 3], [(2, "l2g0"), (3, "l2g0")], [40, 41, 42]),
    ]
    assert low.concepts[0].cohesion == round((3 / 4 + 2 / 3 + 2 / 4) / 3, 6)
    assert (mid.n_groups, mid.n_grouped, low.n_groups, low.n_grouped) == (8, 6, 7, 5)
    dog = atlas.klass(1)
    assert [(g.id, g.layer, g.concept) for g in dog.groups] == [
        ("l0g0", "fc", None), ("l1g0", "mid", "1c0"), ("l1g1", "mid", None), ("l2g0", "low", "2c0"), ("l2g1", "low", None)]


def test_recurring_labels_and_shared_neurons():
    atlas = atlas_of()
    mid, low = atlas.layers[1], atlas.layers[2]
    # "Fur" and "fur" are one label; the bus's fur group shares no neuron with the others
    assert [(r.text, r.classes, r.concepts) for r in mid.labels] == [
        ("fur", [0, 1, 3], ["1c0"]), ("eye", [0, 1], ["1c1"]), ("wheel", [2, 3], ["1c2"])]
    assert [(r.text, r.classes, r.concepts) for r in low.labels] == [
        ("stripes", [0, 1, 3], ["2c0"]), ("dots", [0, 1], []), ("metal", [2, 3], ["2c1"])]
    assert [(n.neuron, n.classes, n.importance, n.concepts) for n in low.neurons] == [
        (20, [0, 1, 3], [0.5] * 3, ["2c0"]), (21, [0, 1, 3], [0.5] * 3, ["2c0"]), (22, [0, 1], [0.5] * 2, ["2c0"]),
        (40, [2, 3], [0.5] * 2, ["2c1"]), (41, [2, 3], [0.5] * 2, ["2c1"])]
    assert mid.neurons[0].neuron == 1 and mid.neurons[0].importance == [1.0, 1.0]  # the most important first
    assert sorted(n.neuron for n in mid.neurons) == [1, 2, 3, 5, 6, 10, 11, 12]
    few = atlas_of(AtlasSettings(max_neurons=3))
    assert len(few.layers[1].neurons) == 3 and few.layers[1].neurons_omitted == 5


def test_matrix_cells():
    cells = {(c.class_index, c.concept): c for c in atlas_of().matrix}
    assert sorted(cells) == [(0, "1c0"), (0, "1c1"), (0, "2c0"), (1, "1c0"), (1, "2c0"), (2, "1c1"), (2, "1c2"),
                             (2, "2c1"), (3, "1c2"), (3, "2c0"), (3, "2c1")]
    # strength: Jaccard of the class's group with the concept's core neurons
    assert cells[(1, "1c0")].strength == 0.75 and cells[(0, "1c0")].strength == 1.0
    assert cells[(3, "2c0")].strength == round(2 / 3, 6) and cells[(3, "2c0")].groups == ["l2g1"]
    # importance: mean member importance over the layer's most important neuron: (1 + .5 + .5 + .5) / 4
    assert cells[(0, "1c0")].importance == 0.625


def test_shared_subcircuits():
    atlas = atlas_of()
    pairs = [(s.a, s.b, s.score, s.layers, s.depth, [(x.upper, x.lower, x.groups_a, x.groups_b, x.strength) for x in s.links],
              s.shared_concepts) for s in atlas.subcircuits]
    # cat & dog: fur -> stripes in both (each the circuit's strongest mid edge); car & bus: wheel -> metal.
    # cat's eye -> stripes (0.25) has no partner: the car's lamp -> metal edge is negative; the bus links
    # wheel -> stripes, which no other class does.
    assert pairs == [
        (0, 1, 1.0, ["mid", "low"], 2, [("1c0", "2c0", ["l1g0", "l2g0"], ["l1g0", "l2g0"], 1.0)], ["1c0", "2c0"]),
        (2, 3, 1.0, ["mid", "low"], 2, [("1c2", "2c1", ["l1g0", "l2g0"], ["l1g0", "l2g0"], 1.0)], ["1c2", "2c1"]),
    ]
    one = atlas_of(AtlasSettings(max_pairs=1))
    assert len(one.subcircuits) == 1 and one.subcircuits_omitted == 1


def test_thresholds_change_what_is_shared():
    strict = atlas_of(AtlasSettings(jaccard=0.75))
    assert [c.label for c in strict.layers[1].concepts] == ["fur"]  # 3/4 stays, 2/3 goes
    assert [c.label for c in strict.layers[2].concepts] == ["stripes"]  # {20,21,22} ~ {20,21,22,23}
    assert strict.layers[2].concepts[0].classes == [0, 1]
    three = atlas_of(AtlasSettings(min_classes=3))
    assert [c.id for c in three.concepts()] == ["2c0"] and three.subcircuits == []
    assert [r.text for r in three.layers[1].labels] == ["fur"]


def test_average_linkage_does_not_chain():
    # A~B and B~C at 0.6, A~C at 1/3: connected, but C's mean distance to {A, B} is above the cut
    sets = [[1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6]]
    assert cluster_sets(sets, 0.5) == [[0, 1], [2]]
    assert cluster_sets(sets, 0.3) == [[0, 1, 2]]
    assert cluster_sets([[1], [2], []], 0.5) == [[0], [1], [2]]


def test_components_then_linkage_equals_linkage_on_everything():
    # Exact ties (two pairs at the same Jaccard) may merge in either order, so only layers without ties near
    # the cut compare.
    rng = random.Random(4)
    compared = 0
    for trial in range(300):
        sets = [rng.sample(range(40), rng.randint(2, 12)) for _ in range(rng.randint(3, 30))]
        threshold = rng.choice([0.2, 0.3, 0.4, 0.5])
        n = len(sets)
        distances = np.asarray([1 - jaccard(sets[i], sets[j]) for i in range(n) for j in range(i + 1, n)])
        tree = linkage(distances, method="average")
        cut = 1 - threshold
        close = np.concatenate([distances[distances <= cut + 0.05], tree[:, 2][tree[:, 2] <= cut + 0.05]])
        if len(np.unique(np.round(close, 9))) < len(close):
            continue
        labels = fcluster(tree, t=cut + 1e-9, criterion="distance")
        expected = {}
        for i, label in enumerate(labels):
            expected.setdefault(label, []).append(i)
        assert cluster_sets(sets, threshold) == sorted(expected.values()), (trial, sets, threshold)
        compared += 1
    assert compared >= 20


def test_json_round_trip_and_schema():
    atlas = atlas_of()
    again = Atlas.from_json(atlas.to_json())
    assert again == atlas
    with pytest.raises(ValueError, match="unsupported atlas schema 'neurflow.circuit/3'"):
        Atlas.from_json(circuit(0).to_json())
    with pytest.raises(ValueError, match="not valid JSON"):
        Atlas.from_json("{")
    broken = msgspec.json.decode(atlas.to_json())
    broken["layers"][0]["concepts"] = "many"
    with pytest.raises(ValueError, match=r"invalid atlas document: .*layers\[0\].concepts"):
        Atlas.from_json(msgspec.json.encode(broken))
    schema = json_schema()
    assert schema["$id"].endswith("neurflow.atlas-1.json") and "Atlas" in schema["$defs"]


def test_refuses_mixed_models_repeated_classes_and_nothing():
    other = msgspec.structs.replace(MODEL, weights_sha256="cd" * 32)
    with pytest.raises(ValueError, match=r"one model; circuit x \(class 2\) differs .*weights_sha256"):
        build_atlas([AtlasInput(circuit(0), "a"), AtlasInput(circuit(2, other), "x")])
    with pytest.raises(ValueError, match=r"class 1 appears twice \(circuits a and b\)"):
        build_atlas([AtlasInput(circuit(1), "a"), AtlasInput(circuit(1), "b")])
    with pytest.raises(ValueError, match="at least one circuit"):
        build_atlas([])
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"jaccard": 0}, AtlasSettings)


def test_unlabeled_and_partial_layers_are_reported():
    bare = circuit(3)
    for _, _, g in bare.iter_groups():
        g.labels = []
    bare.layers = bare.layers[:2]  # no "low" layer
    atlas = build_atlas([AtlasInput(circuit(2), "car"), AtlasInput(bare, "bus")])
    assert any("has no layer low" in w for w in atlas.warnings)
    wheel = atlas.layers[1].concepts[0]
    assert wheel.classes == [2, 3] and wheel.label == "wheel"  # found by neurons, labeled by the labeled class
    assert atlas.layers[2].concepts == []
