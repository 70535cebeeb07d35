"""Ward clustering with a silhouette-chosen number of clusters, from one linkage tree.

Cutting a single ward tree at every k gives the same partitions as refitting agglomerative ward
clustering for each k, at the cost of one fit. The cut undoes the last k - 1 merges, as scikit-learn's
``AgglomerativeClustering(n_clusters=k)`` (the reference's) does: exactly k clusters even when merge
heights tie (a height threshold, scipy's ``fcluster(..., "maxclust")``, can return fewer then). Cluster ids are canonical: numbered in
the order in which their first point appears, so results do not depend on library label choices.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import pdist, squareform
from sklearn.metrics import silhouette_score

#: Below this best silhouette a point set is treated as one cluster when a single cluster is allowed
#: (Kaufman & Rousseeuw: < 0.25 means "no substantial structure").
SINGLE_CLUSTER_SILHOUETTE = 0.25


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    mapping: dict[int, int] = {}
    for label in labels:
        mapping.setdefault(int(label), len(mapping))
    return np.array([mapping[int(label)] for label in labels], dtype=np.int64)


def cut(tree: np.ndarray, k: int) -> np.ndarray:
    """Labels of the k clusters left after the first n - k merges of a linkage ``tree``."""
    n = len(tree) + 1
    k = max(1, min(k, n))
    parent = list(range(2 * n - 1))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for step in range(n - k):
        a, b = int(tree[step, 0]), int(tree[step, 1])
        parent[root(a)] = parent[root(b)] = n + step
    return canonical_labels(np.array([root(i) for i in range(n)]))


def ward_silhouette(points: np.ndarray, max_k: int, n_clusters: int | None = None,
                    allow_single: bool = False) -> np.ndarray:
    """Canonical cluster labels of ``points`` (n, d).

    ``n_clusters`` given: cut the tree there (capped at n). Otherwise choose k in 2..min(n-1, max_k)
    with the highest silhouette (first maximum wins); with ``allow_single``, k = 1 when that best
    silhouette is below :data:`SINGLE_CLUSTER_SILHOUETTE` or no k can be scored.
    """
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    tree = linkage(points, method="ward")
    if n_clusters is not None:
        return cut(tree, n_clusters)
    hi = min(n - 1, max_k)
    if hi < 2:
        # Two points (or a cap below 2): silhouette cannot score any k.
        return np.zeros(n, dtype=np.int64) if allow_single else cut(tree, 2)
    distances = squareform(pdist(points))
    best_k, best_score, best_labels = None, -np.inf, None
    for k in range(2, hi + 1):
        labels = cut(tree, k)
        score = silhouette_score(distances, labels, metric="precomputed")
        if score > best_score:  # strict: ties keep the smaller k
            best_k, best_score, best_labels = k, score, labels
    if best_labels is None or (allow_single and best_score < SINGLE_CLUSTER_SILHOUETTE):
        return np.zeros(n, dtype=np.int64)
    return canonical_labels(best_labels)
