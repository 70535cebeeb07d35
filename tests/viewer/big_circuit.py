"""A synthetic circuit of real size for the viewer tests: many groups per layer, an ungrouped
IG-input layer at the bottom, some labels confident, some uncertain (between two candidates)."""

from __future__ import annotations

import msgspec

from neurflow.core.circuit import (SCHEMA_VERSION, Circuit, Group, GroupEdge, Label, Layer, Member, ModelInfo, Neuron,
                                   Target)
from neurflow.core.params import EngineParams


def big_circuit(groups_per_layer: tuple[int, ...] = (1, 40, 25), ungrouped_neurons: int = 30) -> Circuit:
    layers, edges = [], []
    for i, n in enumerate(groups_per_layer):
        groups = []
        for k in range(n):
            labels = [Label(f"part {k % 7}", 0.5, "clip"), Label("other", 0.1, "clip")]
            unsure = k % 3 == 0  # every third group is uncertain
            groups.append(Group(id=f"l{i}g{k}", members=[Member(k, 0)], exemplars=[], labels=labels,
                                confidence=0.2 if unsure else 0.9, status="uncertain" if unsure else "labeled",
                                candidates=labels if unsure else []))
        layers.append(Layer(name=f"stage{len(groups_per_layer) - i}.block", shape=[64, 4, 4],
                            neurons=[Neuron(id=k, importance=1.0, concepts=[]) for k in range(max(n, 1))],
                            groups=groups))
        if i:
            upper = layers[i - 1].groups
            edges += [GroupEdge(upper[k % len(upper)].id, g.id, 0.1 + (k % 5) / 5) for k, g in enumerate(groups)]
    layers.append(Layer(name="ig_input", shape=[32, 8, 8],
                        neurons=[Neuron(id=k, importance=0.5, concepts=[]) for k in range(ungrouped_neurons)],
                        groups=[]))
    return Circuit(schema=SCHEMA_VERSION,
                   model=ModelInfo(arch="torchvision:resnet18", weights_sha256=None, num_classes=10, input_size=64,
                                   mean=[0.5] * 3, std=[0.25] * 3),
                   target=Target(class_index=0, name="thing"), params=EngineParams(layers=[lay.name for lay in layers]), images=[], layers=layers,
                   group_edges=edges, timings={})


def write_big_circuit(path) -> Circuit:
    circuit = big_circuit()
    path.write_bytes(msgspec.json.encode(circuit))
    return circuit
