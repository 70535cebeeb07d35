"""Circuits written by hand, with overlaps chosen so every atlas number can be worked out on paper.

Model: three layers, "fc" (the class neuron), "mid" and "low". Four classes:

=========  ===========================================  ===========================================
class      mid groups (neurons: top label)              low groups (neurons: top label)
=========  ===========================================  ===========================================
0 cat      l1g0 {1,2,3,4}: "fur"; l1g1 {10,11}: "eye"    l2g0 {20,21,22}: "stripes"; l2g1 {30}: "dots"
1 dog      l1g0 {1,2,3}: "Fur"; l1g1 {12,13}: "eye"      l2g0 {20,21,22,23}: "stripes"; l2g1 {31}: "dots"
2 car      l1g0 {5,6}: "wheel"; l1g1 {10,11,12}: "lamp"  l2g0 {40,41}: "metal"
3 bus      l1g0 {5,6,7}: "wheel"; l1g1 {50}: "fur"       l2g0 {40,41,42}: "metal"; l2g1 {20,21}: "stripes"
=========  ===========================================  ===========================================

At jaccard 0.5, mid: {1,2,3,4}~{1,2,3} (3/4) -> concept "fur" of classes 0, 1; {5,6}~{5,6,7} (2/3) ->
"wheel" of 2, 3; {10,11}~{10,11,12} (2/3) -> "eye"/"lamp" of 0, 2 ({12,13} joins nothing: 1/4 with
{10,11,12}, 0 with {10,11}). Low: {20,21,22}, {20,21,22,23}, {20,21} (3/4, 2/3, 2/4: mean 0.64) ->
"stripes" of 0, 1, 3; {40,41}~{40,41,42} -> "metal" of 2, 3.
"""

from __future__ import annotations

from neurflow.core.circuit import (SCHEMA_VERSION, Circuit, Concept, Group, GroupEdge, Label, Layer, Member, ModelInfo,
                                   Neuron, Target)
from neurflow.core.params import EngineParams

MODEL = ModelInfo(arch="handmade", weights_sha256="ab" * 32, num_classes=4, input_size=32, mean=[0.5] * 3,
                  std=[0.25] * 3)
NAMES = ["cat", "dog", "car", "bus"]

# class -> layer -> [(neurons, labels)]
GROUPS: dict[int, dict[str, list[tuple[list[int], list[str]]]]] = {
    0: {"mid": [([1, 2, 3, 4], ["fur", "hair"]), ([10, 11], ["eye"])],
        "low": [([20, 21, 22], ["stripes"]), ([30], ["dots"])]},
    1: {"mid": [([1, 2, 3], ["Fur"]), ([12, 13], ["eye", "fur"])],
        "low": [([20, 21, 22, 23], ["stripes"]), ([31], ["dots"])]},
    2: {"mid": [([5, 6], ["wheel"]), ([10, 11, 12], ["lamp"])],
        "low": [([40, 41], ["metal"])]},
    3: {"mid": [([5, 6, 7], ["wheel", "tyre"]), ([50], ["fur"])],
        "low": [([40, 41, 42], ["metal"]), ([20, 21], ["stripes"])]},
}

# class -> [(source, target, weight)]; fc's group l0g0 links to every mid group with weight 1
EDGES: dict[int, list[tuple[str, str, float]]] = {
    0: [("l1g0", "l2g0", 2.0), ("l1g0", "l2g1", 1.0), ("l1g1", "l2g0", 0.5)],
    1: [("l1g0", "l2g0", 4.0), ("l1g1", "l2g1", 1.0)],
    2: [("l1g0", "l2g0", 3.0), ("l1g1", "l2g0", -1.0)],
    3: [("l1g0", "l2g0", 1.0), ("l1g0", "l2g1", 0.5)],
}

#: importance of a neuron in a circuit: 1.0 for neuron 1 (the most important), 0.5 for the others
IMPORTANT = 1


def _layer(name: str, index: int, groups: list[tuple[list[int], list[str]]]) -> Layer:
    neurons = sorted({n for ns, _ in groups for n in ns})
    layer_neurons = [Neuron(id=n, importance=1.0 if n == IMPORTANT else 0.5,
                            concepts=[Concept(id=0, activation=1.0, size=1, exemplars=[], patches=[], edges=[],
                                              vector=[])]) for n in neurons]
    out = [Group(id=f"l{index}g{k}", members=[Member(neuron=n, concept=0) for n in ns], exemplars=[],
                 labels=[Label(text=t, score=1.0 - 0.1 * r, source="user") for r, t in enumerate(labels)],
                 confidence=0.9)
           for k, (ns, labels) in enumerate(groups)]
    return Layer(name=name, shape=[64, 4, 4], neurons=layer_neurons, groups=out)


def circuit(k: int, model: ModelInfo = MODEL) -> Circuit:
    groups = GROUPS[k]
    fc = Layer(name="fc", shape=[4], neurons=[Neuron(id=k, importance=1.0, concepts=[])],
               groups=[Group(id="l0g0", members=[Member(neuron=k, concept=0)], exemplars=[])])
    edges = [GroupEdge(source="l0g0", target=f"l1g{i}", weight=1.0) for i in range(len(groups["mid"]))]
    edges += [GroupEdge(source=s, target=t, weight=w) for s, t, w in EDGES[k]]
    return Circuit(schema=SCHEMA_VERSION, model=model, target=Target(class_index=k, name=NAMES[k]), params=EngineParams(layers=["fc", "mid", "low"]),
                   images=[], layers=[fc, _layer("mid", 1, groups["mid"]), _layer("low", 2, groups["low"])],
                   group_edges=edges, timings={})


def circuits() -> list[Circuit]:
    return [circuit(k) for k in GROUPS]
