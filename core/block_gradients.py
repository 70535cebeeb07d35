"""Two exact shortcuts for the gradients that Integrated Gradients takes through a block.

Both replace work on zeros or repeated work by the same numbers (up to float summation order) and
are switched on for the plain convolutions of a module by :func:`fast_block_gradients`; whatever
they do not apply to keeps PyTorch's own backward.

**One-channel input gradients.** Each IG backward differentiates one upper neuron per sample, so the
gradient entering the block's last convolutions is non-zero in one output channel per sample (it
passes the final batch norm, residual sum and ReLU unchanged in channel). A dense transposed
convolution spends ``C_in * C_out * k * k`` multiply-adds per position on it, ``C_out - 1`` of every
``C_out`` on zeros. With one channel ``c`` the input gradient is that channel's filter spread over
the map: rows are grouped by channel and each group goes through a single-channel transposed
convolution. Gradients with several non-zero channels per sample take the dense path.

**Interpolation through the first convolutions.** IG evaluates the block at ``alpha_k * z`` for every
quadrature node and needs ``sum_k w_k * grad(alpha_k * z)``. A convolution reading the block input
is linear in it, ``conv(alpha_k z) = alpha_k conv_nobias(z) + b``, so it runs once on the P patches
instead of on the P * steps interpolated rows, and its input gradient is one transposed convolution
of the weighted sum over the steps, ``W^T (sum_k w_k g_k)``, instead of one per step. The
interpolated rows are made by :func:`interpolate`, whose backward is that weighted sum; the patched
convolutions recognise its output while an :func:`interpolation` scope is open, and only as long as
no in-place op has modified it (its ``_version`` counter is unchanged); the interpolated rows are
fresh tensors, never views, so such in-place ops are allowed.

Parameters receive no gradient while the shortcuts are on: the engine differentiates activations only.
The switch patches module instances (their ``forward``); a second, nested or concurrent switch on the
same modules leaves them to the first, and a convolution that runs unpatched computes the same
numbers the slow way, so overlapping fits stay correct.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class _Interpolate(torch.autograd.Function):
    """``z`` (P, ...) -> step-major rows ``alpha_k * z`` (S*P, ...); backward: ``sum_k w_k g_k``, i.e.
    the IG quadrature of the gradient w.r.t. the interpolated input (not the chain rule's alpha_k)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, alphas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weights)
        return _scaled_rows(alphas, z)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (weights,) = ctx.saved_tensors
        return _quadrature(weights, g), None, None


def _scaled_rows(alphas: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``alpha_k * base`` stacked step-major, written into a fresh tensor: a custom Function's output
    that is a view cannot be modified in place (``ReLU(inplace=True)`` right after the lower layer)."""
    out = base.new_empty((len(alphas) * len(base), *base.shape[1:]))
    torch.mul(alphas.view((-1,) + (1,) * base.dim()), base.unsqueeze(0), out=out.view(len(alphas), *base.shape))
    return out


def _quadrature(weights: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``sum_k w_k g_k`` over the step-major rows of ``g``: one contraction, no step-sized temporaries."""
    steps = len(weights)
    return torch.tensordot(weights, g.reshape(steps, -1), dims=1).view(g.shape[0] // steps, *g.shape[1:])


def interpolate(z: torch.Tensor, alphas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The IG path points of ``z`` (a leaf that requires grad), step-major; the gradient that reaches
    ``z`` through them is already the weighted sum over the steps."""
    return _Interpolate.apply(z, alphas, weights)


@dataclass
class _Interpolation:
    rows: torch.Tensor  # the output of interpolate()
    version: int  # rows._version when the scope opened: an in-place op since then changed rows
    z: torch.Tensor
    alphas: torch.Tensor
    weights: torch.Tensor


_local = threading.local()


@contextmanager
def interpolation(rows: torch.Tensor, z: torch.Tensor, alphas: torch.Tensor, weights: torch.Tensor) -> Iterator[None]:
    """While open, patched convolutions that read ``rows`` compute from ``z`` instead (see above)."""
    previous = getattr(_local, "current", None)
    _local.current = _Interpolation(rows, rows._version, z, alphas, weights)
    try:
        yield
    finally:
        _local.current = previous


# -- one-channel input gradients ------------------------------------------------------------------
def _output_padding(conv: nn.Conv2d, in_shape: torch.Size, out_hw: tuple[int, int]) -> tuple[int, int]:
    k = conv.weight.shape[2:]
    return tuple(int(in_shape[2 + d] - ((out_hw[d] - 1) * conv.stride[d] - 2 * conv.padding[d]
                                        + conv.dilation[d] * (k[d] - 1) + 1)) for d in range(2))


def _one_channel_input_grad(g: torch.Tensor, nonzero: torch.Tensor, conv: nn.Conv2d,
                            in_shape: torch.Size) -> torch.Tensor:
    """Input gradient of ``conv`` for ``g`` (R, C_out, H, W) whose row r is zero outside at most one
    channel (``nonzero``: (R, C_out) bool)."""
    weight = conv.weight.detach()
    output_padding = _output_padding(conv, in_shape, tuple(g.shape[2:]))

    def spread(rows_g: torch.Tensor, c: int) -> torch.Tensor:
        return F.conv_transpose2d(rows_g, weight[c:c + 1], None, conv.stride, conv.padding, output_padding, 1,
                                  conv.dilation)

    live, channel = nonzero.nonzero(as_tuple=True)
    if len(live) == 0:
        return g.new_zeros(in_shape)
    channels = torch.unique(channel).tolist()
    if len(channels) == 1 and len(live) == len(g):
        c = channels[0]
        return spread(g[:, c:c + 1], c)
    grad = g.new_zeros(in_shape)
    for c in channels:
        rows = live[channel == c]
        grad[rows] = spread(g[rows, c:c + 1], c)
    return grad


def _dense_input_grad(conv: nn.Conv2d, in_shape: torch.Size, g: torch.Tensor) -> torch.Tensor:
    # under autocast the incoming gradient may be bf16/fp16 while the weight stays float32
    weight = conv.weight.detach().to(g.dtype)
    return torch.nn.grad.conv2d_input(in_shape, weight, g, conv.stride, conv.padding, conv.dilation, conv.groups)


class _InputGradConv2d(torch.autograd.Function):
    """``conv(x)`` whose backward computes only the input gradient, one-channel when it can."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        ctx.conv = conv
        ctx.in_shape = x.shape
        return conv._conv_forward(x, conv.weight, conv.bias)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        nonzero = g.reshape(g.shape[0], g.shape[1], -1).any(2)  # (R, C_out)
        if int(nonzero.sum(1).max()) <= 1:
            return _one_channel_input_grad(g, nonzero, ctx.conv, ctx.in_shape), None
        return _dense_input_grad(ctx.conv, ctx.in_shape, g), None


class _InterpolatedConv2d(torch.autograd.Function):
    """``conv(interpolate(z))`` computed from ``z``: one convolution of the P patches, scaled per step."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, conv: nn.Conv2d, alphas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ctx.conv = conv
        ctx.z_shape = z.shape
        ctx.save_for_backward(weights)
        out = _scaled_rows(alphas, conv._conv_forward(z, conv.weight, None))
        if conv.bias is not None:
            out += conv.bias.detach().view(1, -1, 1, 1)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (weights,) = ctx.saved_tensors
        return _dense_input_grad(ctx.conv, ctx.z_shape, _quadrature(weights, g)), None, None, None


def _patched_forward(conv: nn.Conv2d):
    def forward(x: torch.Tensor) -> torch.Tensor:
        current = getattr(_local, "current", None)
        # rows modified in place (a ReLU(inplace=True) between the lower layer and this convolution)
        # are no longer alpha_k * z: then the convolution must read them as they are
        if current is not None and x is current.rows and x._version == current.version:
            return _InterpolatedConv2d.apply(current.z, conv, current.alphas, current.weights)
        return _InputGradConv2d.apply(x, conv)

    return forward


def _eligible(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.groups == 1 and m.padding_mode == "zeros"
            and not isinstance(m.padding, str))


@contextmanager
def fast_block_gradients(root: nn.Module) -> Iterator[int]:
    """Within the ``with`` block, plain ``nn.Conv2d`` layers of ``root`` use both shortcuts.
    Yields the number of convolutions switched."""
    switched = []
    for m in root.modules():
        if _eligible(m) and "forward" not in m.__dict__:
            m.forward = _patched_forward(m)
            switched.append(m)
    try:
        yield len(switched)
    finally:
        for m in switched:
            del m.forward
