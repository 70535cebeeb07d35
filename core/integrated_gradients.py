"""Integrated Gradients of upper-layer neurons with respect to a lower layer's activations.

For a lower map ``z`` and an upper neuron ``i`` (its readout ``F_i``), with a zero baseline,
``IG(z) = z * sum_k w_k * dF_i/dz (alpha_k z)``, where ``(alpha_k, w_k)`` are the Gauss-Legendre
nodes and weights mapped to [0, 1] (captum's ``gausslegendre`` method). NeurFlow scores a lower
channel by the mean of its attribution map over positions: a signed (patches, C_lower) matrix.

:func:`multi_target_ig` serves many (patch, neuron) pairs at once. Each patch is pushed through the
block once for all its interpolation steps, whatever the number of upper neurons that need it; then
one backward pass per "slot" (the k-th neuron of every patch in the chunk) gives every row its own
target, because samples in a batch do not interact in an eval-mode network.

:func:`ig_to_tolerance` is the adaptive preset's step ladder for one chunk: the fit and the layer
budget's calibration both climb it, so that the calibration times the steps a fit will reach.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .block_gradients import interpolate, interpolation
from .ig_accuracy import completeness_residual, next_steps, relative
from .layer_access import Block, channel_mean, check_eval_mode, readout


def gauss_legendre(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights on [0, 1] (float64), in captum's order."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return torch.tensor(0.5 * (nodes + 1), dtype=torch.float64), torch.tensor(0.5 * weights, dtype=torch.float64)


def multi_target_ig(
    block: Block,
    z: torch.Tensor,
    targets: Sequence[Sequence[int]],
    steps: int = 50,
    token_reduce: str = "mean",
    x: torch.Tensor | None = None,
    reduce: bool = True,
) -> list[list[torch.Tensor]]:
    """IG for every patch of ``z`` (P lower maps) and each of its upper neurons ``targets[p]``.

    Returns ``out[p][k]``: the attribution of patch p for neuron ``targets[p][k]``, reduced to
    per-channel means (C_lower,) when ``reduce`` else the full map. ``x`` (the patches' pixels) is
    needed only by blocks that re-run the model (``block.needs_input``). The model must be in eval
    mode: rows of a batch are treated as independent inputs.
    """
    check_eval_mode(block.source)
    alphas, weights = gauss_legendre(steps)
    alphas = alphas.to(dtype=z.dtype, device=z.device)
    weights = weights.to(dtype=z.dtype, device=z.device)
    n_rows = len(z)
    out: list[list[torch.Tensor]] = [[] for _ in range(n_rows)]
    n_slots = max((len(t) for t in targets), default=0)
    if n_slots == 0:
        return out
    # Step-major rows (every patch at alpha_0, then alpha_1, ...), as captum expands its inputs; the
    # gradient that reaches z_leaf through them is already the quadrature sum over the steps.
    z_leaf = z.detach().requires_grad_(True)
    xin = x.repeat(steps, *([1] * (x.dim() - 1))) if block.needs_input else None
    with torch.enable_grad():
        rows_in = interpolate(z_leaf, alphas, weights)
        with interpolation(rows_in, z_leaf, alphas, weights):
            upper = readout(block(rows_in, xin), token_reduce)
        for k in range(n_slots):
            live = [r for r in range(n_rows) if k < len(targets[r])]
            rows = torch.tensor(live, device=z.device)
            cols = torch.tensor([targets[r][k] for r in live], device=z.device)
            grad_out = torch.zeros_like(upper)
            grad_out.view(steps, n_rows, -1)[:, rows, cols] = 1.0
            (summed,) = torch.autograd.grad(upper, z_leaf, grad_outputs=grad_out, retain_graph=k + 1 < n_slots)
            attr = (z * summed)[rows]
            attr = channel_mean(attr) if reduce else attr
            for pos, r in enumerate(live):
                out[r].append(attr[pos].detach())
    return out


def ig_to_tolerance(block: Block, z: torch.Tensor, targets: Sequence[Sequence[int]], steps: int, tolerance: float,
                    delta: np.ndarray, token_reduce: str = "mean", x: torch.Tensor | None = None,
                    ) -> tuple[list[list[torch.Tensor]], int, float, float]:
    """:func:`multi_target_ig` of a chunk at ``steps``, doubled along the ladder (:func:`next_steps`) until the
    chunk's relative completeness residual is at most ``tolerance`` (or the ladder's top).

    ``delta``: ``F(z) - F(0)`` of every (row, target) pair, rows first: what each pair's attributions must
    sum to. Returns the attributions, the steps they used and the residual's two sums ``(error, scale)``."""
    if not any(targets):
        raise ValueError("a chunk without targets has nothing to attribute")
    live = next(r for r, t in enumerate(targets) if t)
    while True:
        result = multi_target_ig(block, z, targets, steps, token_reduce, x=x)
        # result holds per-channel means over positions: times the positions, a pair's sum
        positions = z[0].numel() // len(result[live][0])
        sums = np.array([float(v.double().sum()) * positions for rows in result for v in rows])
        error, scale = completeness_residual(sums, delta)
        higher = next_steps(steps)
        if relative(error, scale) <= tolerance or higher is None:
            return result, steps, error, scale
        steps = higher


def integrated_gradients(block: Block, z: torch.Tensor, target: int, steps: int = 50,
                         token_reduce: str = "mean", x: torch.Tensor | None = None) -> torch.Tensor:
    """IG attribution maps (same shape as ``z``) of one upper neuron for every sample of ``z``."""
    rows = multi_target_ig(block, z, [[target]] * len(z), steps, token_reduce, x=x, reduce=False)
    return torch.stack([r[0] for r in rows])
