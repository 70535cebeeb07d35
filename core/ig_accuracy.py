"""How accurate a shortcut IG ranking is, measured from the fit's own numbers (no exact run needed).

Two errors separate the fast preset from the exact method, and each has an estimate that costs
next to nothing:

* **Quadrature** (few Gauss-Legendre steps). IG is complete: a pair's attributions over every
  position and channel sum to ``F(z) - F(0)``. :func:`completeness_residual` is how far a chunk's
  sums are from that, relative to ``|F(z) - F(0)|``; ``F(z)`` is the readout the fit already has and
  ``F(0)`` one forward of a zero map. The engine doubles a stage's steps until the residual is below
  ``ig_tolerance``.
* **Sampling** (IG on a concept-stratified sample of a neuron's top patches). The ranking is a
  stratified mean, whose standard error per channel follows from the spread of the sampled rows in
  each concept (:func:`stratified_mean_and_error`). :func:`uncertain_channels` counts the channels
  within ``z`` standard errors of a neuron's top-tau boundary; :func:`to_resample` picks the neurons
  that get IG on the rest of their top patches, until the swaps the others may still make keep the
  layer's core set at :data:`TARGET_JACCARD` (a layer of one neuron, the class, must be exact).
"""

from __future__ import annotations

import numpy as np

#: Most Gauss-Legendre steps the ladder of :func:`next_steps` reaches (the exact preset's 50 rounded up
#: to the ladder): a stage whose residual stays above the tolerance there keeps this many.
MAX_ADAPTIVE_STEPS = 64
#: The fidelity the adaptive sampling aims at: the per-layer Jaccard of core-neuron sets against exact.
TARGET_JACCARD = 0.95


def completeness_residual(attr_sums: np.ndarray, delta: np.ndarray) -> tuple[float, float]:
    """``(sum |attr_sums - delta|, sum |delta|)`` over a chunk's pairs: the two sums whose ratio is the
    relative residual (kept apart so that chunks add up to a stage's)."""
    return float(np.abs(attr_sums - delta).sum()), float(np.abs(delta).sum())


def relative(error: float, scale: float) -> float:
    """``error / scale``; 0 when both vanish (a pair with no output change has nothing to attribute)."""
    return error / scale if scale > 0 else (0.0 if error == 0 else float("inf"))


def next_steps(steps: int) -> int | None:
    """The next rung of the step ladder (doubling), or None at the top."""
    return min(2 * steps, MAX_ADAPTIVE_STEPS) if steps < MAX_ADAPTIVE_STEPS else None


def stratified_mean_and_error(values: np.ndarray, labels: np.ndarray, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over all rows of a per-row quantity and its standard error, from the sampled rows only.

    ``values``: (len(sample), C), the quantity on the sampled rows; ``labels``: the concept of every
    row (all top patches); ``sample``: which rows were sampled. Stratified by concept, with the
    finite-population correction (a fully sampled concept adds no error); a concept sampled once
    borrows the pooled within-concept variance."""
    strata = np.unique(labels)
    drawn = labels[sample]
    n_all = len(labels)
    mean = np.zeros(values.shape[1])
    var = np.zeros(values.shape[1])
    pooled_num = np.zeros(values.shape[1])
    pooled_dof = 0
    per_stratum = []
    for k in strata:
        rows = values[drawn == k]
        size, n = int((labels == k).sum()), len(rows)
        weight = size / n_all
        mean += weight * rows.mean(axis=0)
        if n > 1:
            ss = ((rows - rows.mean(axis=0)) ** 2).sum(axis=0)
            pooled_num += ss
            pooled_dof += n - 1
            per_stratum.append((weight, size, n, ss / (n - 1)))
        else:
            per_stratum.append((weight, size, n, None))
    pooled = pooled_num / pooled_dof if pooled_dof else values.var(axis=0, ddof=1 if len(values) > 1 else 0)
    for weight, size, n, s2 in per_stratum:
        s2 = pooled if s2 is None else s2
        var += weight ** 2 * (1 - n / size) * s2 / n
    return mean, np.sqrt(var)


def uncertain_channels(score: np.ndarray, error: np.ndarray, tau: int, z: float) -> int:
    """How many channels' intervals ``score +- z * error`` reach across the midpoint between the tau-th
    and (tau+1)-th scores: the channels that could be on the other side of the top-tau boundary."""
    if tau >= len(score):
        return 0
    ordered = np.sort(score)[::-1]
    threshold = 0.5 * (ordered[tau - 1] + ordered[tau])
    return int(np.sum(np.abs(score - threshold) < z * error))


def to_resample(uncertain: dict[int, int], union: int, jaccard: float = TARGET_JACCARD) -> list[int]:
    """The neurons that get IG on every top patch: the most uncertain first, until the swaps the others
    may still make (half their uncertain channels, rounded up) keep the layer's core set (``union``
    channels) at ``jaccard`` or above: ``k`` swaps give ``(union - k) / (union + k)``."""
    allowed = (1 - jaccard) / (1 + jaccard) * union
    order = sorted((i for i in uncertain if uncertain[i]), key=lambda i: (-uncertain[i], i))
    left = sum(-(-uncertain[i] // 2) for i in order)
    chosen = []
    for i in order:
        if left <= allowed:
            break
        chosen.append(i)
        left -= -(-uncertain[i] // 2)
    return chosen
