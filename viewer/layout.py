"""Where each group of a circuit is drawn: one row per layer (output at the top), groups spread
evenly along their row, edges with a width proportional to |weight|. The HTML viewer's SVG and the
static PNG (``labeler.circuit_png``) both draw this layout, so they always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from neurflow.core.circuit import Circuit

NODE_R = 18.0
ROW_H = 120.0
COL_W = 150.0
LEFT = 120.0  # room for the layer names
TOP = 36.0
MIN_EDGE_W = 0.6
MAX_EDGE_W = 7.0


@dataclass(frozen=True)
class NodePos:
    id: str
    layer_index: int
    layer: str
    x: float
    y: float


@dataclass(frozen=True)
class EdgePos:
    source: str
    target: str
    weight: float
    width: float  # stroke width, MIN_EDGE_W .. MAX_EDGE_W, proportional to |weight|


@dataclass
class Layout:
    width: float
    height: float
    rows: list[tuple[str, float]]  # (layer name, y) for every layer, top to bottom
    nodes: dict[str, NodePos] = field(default_factory=dict)  # in circuit.iter_groups() order
    edges: list[EdgePos] = field(default_factory=list)  # only edges whose two ends are drawn


def edge_width(weight: float, top: float) -> float:
    return MIN_EDGE_W + (MAX_EDGE_W - MIN_EDGE_W) * abs(weight) / top if top > 0 else MIN_EDGE_W


def layout_circuit(circuit: Circuit) -> Layout:
    widest = max([len(layer.groups) for layer in circuit.layers] + [1])
    width = LEFT + widest * COL_W + 20
    height = TOP + max(len(circuit.layers) - 1, 0) * ROW_H + 60
    out = Layout(width=width, height=height, rows=[])
    for i, layer in enumerate(circuit.layers):
        y = TOP + i * ROW_H
        out.rows.append((layer.name, y))
        n = len(layer.groups)
        for k, group in enumerate(layer.groups):
            # centre each row under the widest one
            x = LEFT + (widest - n) * COL_W / 2 + (k + 0.5) * COL_W
            out.nodes[group.id] = NodePos(group.id, i, layer.name, x, y)
    drawn = [e for e in circuit.group_edges if e.source in out.nodes and e.target in out.nodes]
    top = max([abs(e.weight) for e in drawn] + [0.0])
    out.edges = [EdgePos(e.source, e.target, e.weight, edge_width(e.weight, top)) for e in drawn]
    return out
