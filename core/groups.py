"""Neuron groups of a layer, the weighted edges between groups, and circuit tracing."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .circuit import Circuit, Exemplar, Group, GroupEdge, Layer, Member
from .clustering import ward_silhouette


def group_id(layer_index: int, k: int) -> str:
    return f"l{layer_index}g{k}"


def build_groups(layer: Layer, layer_index: int, n_groups: int | None, max_groups: int,
                 n_exemplars: int) -> list[Group]:
    """Ward over all concept vectors of the layer (neuron order, then concept id)."""
    members = [(n.id, c.id) for n in layer.neurons for c in n.concepts]
    if not members:
        return []
    concept = {(n.id, c.id): c for n in layer.neurons for c in n.concepts}
    points = np.array([concept[m].vector for m in members], dtype=np.float64)
    labels = ward_silhouette(points, max_k=max_groups, n_clusters=n_groups)
    groups = []
    for k in range(int(labels.max()) + 1):
        rows = np.nonzero(labels == k)[0]
        centroid = points[rows].mean(axis=0)
        dist = np.linalg.norm(points[rows] - centroid, axis=1)
        ordered = [members[rows[r]] for r in np.argsort(dist, kind="stable")]
        exemplars: list[Exemplar] = []
        seen = set()
        for key in ordered:
            for ex in concept[key].exemplars:
                tag = (ex.image, tuple(ex.box))
                if tag not in seen and len(exemplars) < n_exemplars:
                    seen.add(tag)
                    exemplars.append(ex)
        groups.append(Group(id=group_id(layer_index, k), members=[Member(n, c) for n, c in ordered],
                            exemplars=exemplars))
    return groups


def group_edges(upper: Layer, lower: Layer) -> list[GroupEdge]:
    """W(G, G') = sum over member concepts (i, k) of G, over their lower neurons j, of
    w_{i,k,j} * (number of member concepts of j in G'); the reference's sum formula."""
    lower_count: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for g in lower.groups:
        for m in g.members:
            lower_count[m.neuron][g.id] += 1
    concept = {(n.id, c.id): c for n in upper.neurons for c in n.concepts}
    edges = []
    for g in upper.groups:
        weights: dict[str, float] = defaultdict(float)
        for m in g.members:
            for edge in concept[(m.neuron, m.concept)].edges:
                for gid, count in lower_count.get(edge.neuron, {}).items():
                    weights[gid] += edge.weight * count
        order = {lg.id: i for i, lg in enumerate(lower.groups)}
        for gid in sorted(weights, key=order.get):
            edges.append(GroupEdge(source=g.id, target=gid, weight=float(weights[gid])))
    return edges


def trace(circuit: Circuit, start: str, top_k: int = 2) -> list[list[str]]:
    """Groups reached from ``start`` going down, keeping each group's ``top_k`` strongest lower groups
    (signed weight, descending). Returns one list of group ids per layer, from the start layer down."""
    layer_index, _ = circuit.group(start)
    by_source: dict[str, list[GroupEdge]] = defaultdict(list)
    for e in circuit.group_edges:
        by_source[e.source].append(e)
    levels = [[start]]
    for _ in range(layer_index + 1, len(circuit.layers)):
        nxt: list[str] = []
        for gid in levels[-1]:
            best = sorted(by_source.get(gid, []), key=lambda e: -e.weight)[:top_k]
            nxt.extend(e.target for e in best if e.target not in nxt)
        if not nxt:
            break
        levels.append(nxt)
    return levels
