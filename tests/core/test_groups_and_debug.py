"""Group edges, tracing and the debug score on hand-built circuits with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from neurflow.core.circuit import SCHEMA_VERSION, Circuit, Concept, Edge, Group, Layer, Member, ModelInfo, Neuron, Target
from neurflow.core.params import EngineParams
from neurflow.core.clustering import ward_silhouette
from neurflow.core.debug import debug_image, log_barrier_scores
from neurflow.core.edge_weights import l1_normalise, reference_rescale
from neurflow.core.groups import group_edges, trace


def concept(cid, edges=(), activation=1.0, vector=(0.0,)):
    return Concept(id=cid, activation=activation, size=1, exemplars=[], patches=[],
                   edges=[Edge(j, w) for j, w in edges], vector=list(vector))


def test_reference_rescale_quirk_numbers():
    ref = reference_rescale([2e-4, -1e-4, 5e-5])
    assert ref[0] == pytest.approx(0.5713, abs=1e-4)
    assert ref[1] == pytest.approx(-1.750e-4, rel=1e-3)
    assert ref[2] == pytest.approx(8.749e-5, rel=1e-3)
    fixed = l1_normalise([2e-4, -1e-4, 5e-5])
    np.testing.assert_allclose(fixed, [4 / 7, -2 / 7, 1 / 7])
    assert np.abs(fixed).sum() == pytest.approx(1.0, abs=1e-12)


def test_group_edge_sum_formula_counts_duplicates_and_drops_unassigned():
    upper = Layer(name="u", shape=[2], neurons=[
        Neuron(id=0, importance=1, concepts=[concept(0, [(10, 0.5), (11, -0.2), (12, 0.3)]), concept(1, [(10, 0.1)])]),
    ], groups=[Group(id="l0g0", members=[Member(0, 0)], exemplars=[]),
               Group(id="l0g1", members=[Member(0, 1)], exemplars=[])])
    lower = Layer(name="d", shape=[16], neurons=[
        Neuron(id=10, importance=1, concepts=[concept(0), concept(1)]),
        Neuron(id=11, importance=1, concepts=[concept(0)]),
    ], groups=[Group(id="l1g0", members=[Member(10, 0), Member(10, 1)], exemplars=[]),  # neuron 10 twice
               Group(id="l1g1", members=[Member(11, 0)], exemplars=[])])
    # neuron 12 has no member concept below: its 0.3 is dropped
    edges = {(e.source, e.target): e.weight for e in group_edges(upper, lower)}
    assert edges == {("l0g0", "l1g0"): pytest.approx(1.0), ("l0g0", "l1g1"): pytest.approx(-0.2),
                     ("l0g1", "l1g0"): pytest.approx(0.2)}


def small_circuit(groups_by_layer, edges):
    layers = [Layer(name=f"L{i}", shape=[4], neurons=[], groups=[Group(id=g, members=[], exemplars=[]) for g in gs])
              for i, gs in enumerate(groups_by_layer)]
    from neurflow.core.circuit import GroupEdge

    return Circuit(schema=SCHEMA_VERSION, model=ModelInfo("x", None, 2, 8, [0.0] * 3, [1.0] * 3),
                   target=Target(0), params=EngineParams(layers=[lay.name for lay in layers]), images=[], layers=layers,
                   group_edges=[GroupEdge(s, t, w) for s, t, w in edges], timings={})


def test_trace_keeps_top_k_lower_groups_per_group():
    c = small_circuit([["a"], ["b1", "b2", "b3"], ["c1", "c2", "c3"]],
                      [("a", "b1", 0.1), ("a", "b2", 0.9), ("a", "b3", 0.5),
                       ("b2", "c1", 0.2), ("b2", "c3", 0.7), ("b3", "c2", -0.1), ("b3", "c1", 0.4)])
    # b2 keeps c3, c1; b3 keeps c1 (0.4) and c2 (-0.1): the union, in order of discovery
    assert trace(c, "a", top_k=2) == [["a"], ["b2", "b3"], ["c3", "c1", "c2"]]
    assert trace(c, "a", top_k=1) == [["a"], ["b2"], ["c3"]]


def test_log_barrier_penalises_non_positive_and_does_not_cap():
    group = Group(id="g", members=[Member(0, 0), Member(1, 0)], exemplars=[])
    reference = {(0, 0): 2.0, (1, 0): 4.0}
    acts = np.array([[2.0, 4.0], [-1.0, 4.0], [8.0, 4.0]])
    b = log_barrier_scores(acts, group, reference)
    assert b[0] == pytest.approx(math.log(1 + 1e-6), abs=1e-5)  # both at their reference level
    assert b[1] == pytest.approx((math.log(1e-6) + math.log(1.0)) / 2, abs=1e-5)  # the barrier
    assert math.exp(b[2]) == pytest.approx(2.0, rel=1e-4)  # ratio 4 on one neuron: not capped at 1


def test_ward_silhouette_finds_planted_clusters_and_respects_given_count():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(0, 0.1, (10, 3)), rng.normal(5, 0.1, (7, 3)), rng.normal(-5, 0.1, (5, 3))])
    labels = ward_silhouette(points, max_k=10)
    assert labels.tolist() == [0] * 10 + [1] * 7 + [2] * 5
    assert len(set(ward_silhouette(points, max_k=10, n_clusters=2))) == 2


def test_debug_image_finds_the_planted_group(planted):
    """A red image fires the group of the up-neuron reading R; ablating it lowers the class logit."""
    rng = np.random.default_rng(0)
    images = []
    for k in range(12):
        img = np.zeros((3, 16, 16))
        img[k % 3] = rng.uniform(0.6, 1.0)
        images.append(img)
    from neurflow.core.engine import NeurFlow

    x = torch.tensor(np.stack(images), dtype=torch.float32)
    circuit = NeurFlow(["fc", "up", "low"], tau=2, top_n=8, granularities=(1.0, 0.5), select="all",
                       ig_steps=8, n_groups=2).fit(planted, x, 0, mean=[0.0] * 3, std=[1.0] * 3).circuit_
    assert circuit.model.normalisation == "recorded" and circuit.model.std == [1.0] * 3
    red = Image.new("RGB", (20, 16), (230, 0, 0))
    result = debug_image(planted, circuit, red, layer="up", threshold=0.5)
    assert result.layer == "up" and result.target == 0
    top = result.groups[0]
    members = {m.neuron for m in circuit.group(top.id)[1].members}
    assert 0 in members  # up neuron 0 reads the red channel
    assert top.fires and top.crops and all(c.box[2] <= 20 and c.box[3] <= 16 for c in top.crops)
    assert top.logit_change < 0
    with pytest.raises(ValueError, match="has no neuron groups"):
        debug_image(planted, circuit, red, layer="low")
