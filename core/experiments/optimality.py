"""Optimality of a neuron's core set: does zeroing it change the neuron's top-N patches more than
zeroing the same number of lower channels chosen by another criterion, or at random?

NeurFlow selects the core set as a tractable surrogate of "the lower neurons whose removal most
changes the upper neuron's concept"; this measures that objective directly (the reference's
Minimization experiment, with the metrics fixed: the random sets are compared with the core set's
own overlap, and the criteria are ranked by importance rather than taken in set order).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .patch_pool import PatchPool, random_subsets
from .results import OptimalityRow


def optimality(pool: PatchPool, class_index: int, neuron: int, core: Sequence[int], importance: dict[str, np.ndarray],
               n_random: int, rng: np.random.Generator) -> OptimalityRow:
    k = len(core)
    core_overlap = pool.overlap(neuron, core)
    criteria = {m: pool.overlap(neuron, np.argsort(-imp, kind="stable")[:k].tolist()) for m, imp in importance.items()}
    rand = pool.overlaps(neuron, random_subsets(rng, pool.n_lower, k, n_random))
    diff = rand - core_overlap
    better = diff[diff < 0]
    return OptimalityRow(upper=pool.upper, lower=pool.lower, class_index=class_index, neuron=neuron, set_size=k,
                         core_overlap=core_overlap, criteria=criteria, random_overlap=float(rand.mean()),
                         total=float(diff.mean()), negative=float(better.mean()) if len(better) else 0.0,
                         core_better_fraction=float((diff > 0).mean()))
