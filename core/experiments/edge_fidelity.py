"""Fidelity of interaction weights (the paper's correlation protocol) and sum vs mean over subsets.

For an upper neuron and its top-N patches: the importance of each lower channel (by each attribution
method), random subsets of lower channels of several sizes, and the neuron's top-N overlap after
zeroing each subset. A faithful importance predicts the damage: the Pearson correlation between a
subset's summed importance and its overlap should be strongly negative. Pooling subsets of mixed
sizes, the sum of importances should predict better than their mean: the justification for summing
edge weights into group-to-group weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import pearsonr

from .patch_pool import PatchPool, random_subsets
from .results import CorrelationRow, SumMeanRow


def pearson(a: Sequence[float], b: Sequence[float]) -> float | None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(pearsonr(a, b)[0])


def edge_fidelity(pool: PatchPool, class_index: int, neuron: int, importance: dict[str, np.ndarray],
                  sizes: Sequence[int], n_subsets: int, rng: np.random.Generator,
                  sum_mean_method: str = "integrated_gradients", progress=None) -> tuple[list[CorrelationRow], SumMeanRow | None]:
    subsets = {size: random_subsets(rng, pool.n_lower, size, n_subsets) for size in sizes}
    everything = [s for size in sizes for s in subsets[size]]
    done = [0]

    def tick(_k: int, _n: int) -> None:
        done[0] += 1
        if progress:
            progress(done[0], len(everything))

    overlaps = {size: pool.overlaps(neuron, subsets[size], tick) for size in sizes}
    rows = []
    for method, imp in importance.items():
        for size in sizes:
            sums = [imp[s].sum() for s in subsets[size]]
            rows.append(CorrelationRow(upper=pool.upper, lower=pool.lower, class_index=class_index, neuron=neuron,
                                       method=method, subset_size=size, n_subsets=len(subsets[size]),
                                       pearson=pearson(sums, overlaps[size])))
    sum_mean = None
    imp = importance.get(sum_mean_method)
    if imp is not None and len(sizes) > 1:
        ov = np.concatenate([overlaps[size] for size in sizes])
        sum_mean = SumMeanRow(upper=pool.upper, lower=pool.lower, class_index=class_index, neuron=neuron,
                              n_subsets=len(everything),
                              pearson_sum=pearson([imp[s].sum() for s in everything], ov),
                              pearson_mean=pearson([imp[s].mean() for s in everything], ov))
    return rows, sum_mean
