"""Cheaper input gradients when each sample differentiates one upper neuron.

Integrated Gradients of a single upper neuron per sample sends, into the block's last convolutions,
a gradient that is non-zero in one output channel per sample: the neuron's channel passes through
the final batch norm, residual sum and ReLU unchanged in channel. A dense transposed convolution
spends ``C_in * C_out * k * k`` multiply-adds per position on it, ``C_out - 1`` of every ``C_out``
on zeros. With one channel ``c`` per sample the input gradient is that channel's filter ``W[c]``
spread over the map: an outer product and a ``fold``, ``C_in * k * k`` per position. In a ResNet
block that removes the second convolution and the shortcut's projection from the backward pass,
about two thirds of its cost, and gives the same numbers up to float summation order (the skipped
terms are exact zeros).

:func:`one_channel_backward` switches this on for the plain convolutions of a module for the
duration of a ``with`` block. Gradients that are not one-channel (the convolutions further down the
block, or several targets per sample) take the dense path, so results never depend on it.
Parameters receive no gradient while it is on: the engine only differentiates activations.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

def _one_channel_input_grad(g: torch.Tensor, nonzero: torch.Tensor, conv: nn.Conv2d,
                            in_shape: torch.Size) -> torch.Tensor:
    """Input gradient of ``conv`` for ``g`` (R, C_out, H, W) whose row r is zero outside at most one
    channel (``nonzero``: (R, C_out) bool). Rows sharing a channel go through one single-channel
    transposed convolution."""
    weight = conv.weight.detach()
    h, w = g.shape[2:]
    output_padding = tuple(
        int(in_shape[2 + d] - ((size - 1) * conv.stride[d] - 2 * conv.padding[d]
                               + conv.dilation[d] * (weight.shape[2 + d] - 1) + 1))
        for d, size in enumerate((h, w)))

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


class _InputGradConv2d(torch.autograd.Function):
    """``conv(x)`` whose backward computes only the input gradient, sparse when it can."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        ctx.conv = conv
        ctx.in_shape = x.shape
        return conv._conv_forward(x, conv.weight, conv.bias)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        conv: nn.Conv2d = ctx.conv
        nonzero = g.reshape(g.shape[0], g.shape[1], -1).any(2)  # (R, C_out)
        if int(nonzero.sum(1).max()) <= 1:
            return _one_channel_input_grad(g, nonzero, conv, ctx.in_shape), None
        grad = torch.nn.grad.conv2d_input(ctx.in_shape, conv.weight.detach(), g, conv.stride, conv.padding,
                                          conv.dilation, conv.groups)
        return grad, None


def _eligible(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.groups == 1 and m.padding_mode == "zeros"
            and not isinstance(m.padding, str))


@contextmanager
def one_channel_backward(root: nn.Module) -> Iterator[int]:
    """Within the block, plain ``nn.Conv2d`` layers of ``root`` use the sparse input gradient.
    Yields the number of convolutions switched."""
    switched = []
    for m in root.modules():
        if _eligible(m) and "forward" not in m.__dict__:
            m.forward = (lambda conv: (lambda x: _InputGradConv2d.apply(x, conv)))(m)
            switched.append(m)
    try:
        yield len(switched)
    finally:
        for m in switched:
            del m.forward
