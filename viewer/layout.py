"""Where each group of a circuit is drawn: one band per layer (output at the top), groups spread
evenly along their band, edges with a width proportional to |weight|. The HTML viewer's SVG and the
static PNG (``neurflow.viewer.circuit_png``) both draw this layout, so they always agree.

A layer with more groups than fit on one line wraps onto several lines of its band, so a circuit of
a hundred groups per layer stays about as wide as one of a dozen; a layer without groups (the lowest,
IG-input layer keeps core neurons but is never grouped) gets a thin band with a note instead of an
empty row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from neurflow.core.circuit import Circuit

NODE_R = 18.0
LINE_H = 120.0  # one line of groups
EMPTY_H = 44.0  # the band of a layer without groups
COL_W = 150.0
MAX_PER_LINE = 10  # wider layers wrap onto more lines of their band
LEFT = 130.0  # room for the layer names
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


@dataclass(frozen=True)
class Band:
    """The part of the drawing that belongs to one layer."""

    layer: str
    top: float
    bottom: float
    label_y: float  # where the layer's name is written
    n_groups: int
    n_neurons: int


@dataclass
class Layout:
    width: float
    height: float
    rows: list[tuple[str, float]]  # (layer name, y of its name) for every layer, top to bottom
    bands: list[Band] = field(default_factory=list)
    nodes: dict[str, NodePos] = field(default_factory=dict)  # in circuit.iter_groups() order
    edges: list[EdgePos] = field(default_factory=list)  # only edges whose two ends are drawn


def edge_width(weight: float, top: float) -> float:
    return MIN_EDGE_W + (MAX_EDGE_W - MIN_EDGE_W) * abs(weight) / top if top > 0 else MIN_EDGE_W


def layout_circuit(circuit: Circuit, max_per_line: int = MAX_PER_LINE) -> Layout:
    per_line = min(max([len(layer.groups) for layer in circuit.layers] + [1]), max_per_line)
    width = LEFT + per_line * COL_W + 20
    out = Layout(width=width, height=0.0, rows=[])
    y = TOP - LINE_H / 2 + NODE_R  # the first line's nodes sit at TOP, as they always did
    for i, layer in enumerate(circuit.layers):
        n = len(layer.groups)
        lines = math.ceil(n / per_line)
        top = y
        if n == 0:
            y += EMPTY_H
            label_y = top + EMPTY_H / 2
        else:
            for line in range(lines):
                on_line = layer.groups[line * per_line:(line + 1) * per_line]
                cy = y + LINE_H / 2 - NODE_R
                for k, group in enumerate(on_line):
                    # centre each line under the widest one
                    x = LEFT + (per_line - len(on_line)) * COL_W / 2 + (k + 0.5) * COL_W
                    out.nodes[group.id] = NodePos(group.id, i, layer.name, x, cy)
                y += LINE_H
            label_y = top + LINE_H / 2 - NODE_R
        out.rows.append((layer.name, label_y))
        out.bands.append(Band(layer.name, top, y, label_y, n, len(layer.neurons)))
    out.height = y + 24
    drawn = [e for e in circuit.group_edges if e.source in out.nodes and e.target in out.nodes]
    top_weight = max([abs(e.weight) for e in drawn] + [0.0])
    out.edges = [EdgePos(e.source, e.target, e.weight, edge_width(e.weight, top_weight)) for e in drawn]
    return out
