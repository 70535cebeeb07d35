"""Clustering groups of one layer into shared concepts by their member-neuron sets.

Two groups are alike by the Jaccard index of their neuron sets. Clusters are cut from average-linkage
hierarchical clustering at distance ``1 - threshold``: every cluster's mean pairwise Jaccard is at least
the threshold, and two groups with no neuron in common never join.

Average linkage on all groups of a layer needs the full distance matrix (1000 classes x 10 groups is
10^4 groups, 5 x 10^7 pairs). It is not needed: two groups whose Jaccard is below the threshold are
farther apart than the cut, so clusters from different connected components of the graph "Jaccard at
least the threshold" are always farther apart than the cut too (their mean distance is above it) and
never merge. The layer is therefore split into those components first (sparse, from neuron overlap)
and average linkage runs inside each component only; the result is the same as on the whole layer (up
to the order in which exactly tied pairs merge).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.sparse.csgraph import connected_components

#: floating slack on the cut, so that a Jaccard exactly at the threshold (2/4 at 0.5) is "at least"
_SLACK = 1e-9


def jaccard(a: Sequence[int] | set[int], b: Sequence[int] | set[int]) -> float:
    a, b = set(a), set(b)
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def _incidence(sets: Sequence[Sequence[int]]) -> sparse.csr_matrix:
    rows = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
    cols = np.fromiter((n for s in sets for n in s), dtype=np.int64, count=int(sum(len(s) for s in sets)))
    width = int(cols.max()) + 1 if cols.size else 1
    return sparse.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(len(sets), width))


def similar_pairs(sets: Sequence[Sequence[int]], threshold: float) -> sparse.coo_matrix:
    """The pairs (i, j), i != j, whose Jaccard is at least ``threshold``, with that Jaccard as value.
    ``sets`` must hold distinct neurons each."""
    m = _incidence(sets)
    sizes = np.asarray(m.sum(axis=1)).ravel()
    inter = (m @ m.T).tocoo()  # nonzero only where two groups share a neuron
    keep = inter.row != inter.col
    rows, cols, shared = inter.row[keep], inter.col[keep], inter.data[keep]
    values = shared / (sizes[rows] + sizes[cols] - shared)
    near = values >= threshold - _SLACK
    return sparse.coo_matrix((values[near], (rows[near], cols[near])), shape=(len(sets), len(sets)))


def cluster_sets(sets: Sequence[Sequence[int]], threshold: float) -> list[list[int]]:
    """Clusters of ``sets`` (indices, ascending; clusters ordered by their first index), singletons included."""
    if not sets:
        return []
    sets = [sorted(set(s)) for s in sets]
    pairs = similar_pairs(sets, threshold)
    n_parts, part = connected_components(pairs, directed=False)
    members: list[list[int]] = [[] for _ in range(n_parts)]
    for index, p in enumerate(part):
        members[p].append(index)
    clusters: list[list[int]] = []
    for component in members:
        if len(component) <= 2:  # two linked groups are one cluster; one is its own
            clusters.append(component)
            continue
        sub = [set(sets[i]) for i in component]
        k = len(sub)
        distances = [1.0 - jaccard(sub[i], sub[j]) for i in range(k) for j in range(i + 1, k)]
        cut = fcluster(linkage(np.asarray(distances), method="average"), t=1.0 - threshold + _SLACK,
                       criterion="distance")
        by_label: dict[int, list[int]] = {}
        for index, label in zip(component, cut):
            by_label.setdefault(int(label), []).append(index)
        clusters.extend(by_label.values())
    return sorted(clusters, key=lambda c: c[0])


def cohesion(sets: Sequence[Sequence[int]]) -> float:
    """Mean pairwise Jaccard of the sets (1.0 for a single set)."""
    k = len(sets)
    if k < 2:
        return 1.0
    values = [jaccard(sets[i], sets[j]) for i in range(k) for j in range(i + 1, k)]
    return float(sum(values) / len(values))


def core_neurons(sets: Sequence[Sequence[int]]) -> list[int]:
    """Neurons in at least half of the sets."""
    counts: dict[int, int] = {}
    for s in sets:
        for n in set(s):
            counts[n] = counts.get(n, 0) + 1
    need = len(sets) / 2
    return sorted(n for n, c in counts.items() if c >= need)
