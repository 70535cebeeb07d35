"""The block-gradient shortcuts give autograd's numbers, fall back when they must, and clean up."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurflow.core.integrated_gradients import multi_target_ig
from neurflow.core.layer_access import LayerAccess
from neurflow.core.block_gradients import fast_block_gradients, interpolate, interpolation


def _input_grad(conv: nn.Module, x: torch.Tensor, grad_out: torch.Tensor, sparse: bool) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    if sparse:
        with fast_block_gradients(conv):
            y = conv(x)
    else:
        y = conv(x)
    (g,) = torch.autograd.grad(y, x, grad_out)
    return g


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, stride=2, padding=1),  # odd input: needs output padding to get the size back
    dict(kernel_size=1, stride=2),
    dict(kernel_size=5, padding=3, dilation=2),
    dict(kernel_size=(3, 1), stride=(2, 1), padding=(1, 0), bias=False),
])
def test_one_channel_gradient_equals_autograd(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 9, **kwargs)
    x = torch.randn(7, 6, 11, 10)
    with torch.no_grad():
        shape = conv(x).shape
    grad_out = torch.zeros(shape)
    channels = [0, 3, 3, 8, 5, 0, 2]
    for r, c in enumerate(channels):
        if r != 4:  # row 4 has no target at all: its gradient must be zero
            grad_out[r, c] = torch.randn(shape[2:])
    dense = _input_grad(conv, x, grad_out, sparse=False)
    sparse = _input_grad(conv, x, grad_out, sparse=True)
    assert sparse.shape == x.shape
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-6)
    assert sparse[4].abs().max() == 0


def test_several_channels_per_row_take_the_dense_path():
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 5, 3, padding=1)
    x = torch.randn(3, 4, 8, 8)
    grad_out = torch.randn(3, 5, 8, 8)
    torch.testing.assert_close(_input_grad(conv, x, grad_out, True), _input_grad(conv, x, grad_out, False))


def test_context_restores_the_modules_and_gives_parameters_no_gradient():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    depthwise = nn.Conv2d(4, 4, 3, groups=4)
    model = nn.Sequential(conv, depthwise)
    with fast_block_gradients(model) as switched:
        assert switched == 1  # grouped convolutions keep PyTorch's own backward
        assert "forward" in conv.__dict__ and "forward" not in depthwise.__dict__
        y = conv(torch.randn(1, 2, 5, 5, requires_grad=True))
        y.sum().backward()
        assert conv.weight.grad is None
    assert "forward" not in conv.__dict__
    y = conv(torch.randn(1, 2, 5, 5))
    y.sum().backward()
    assert conv.weight.grad is not None


@pytest.mark.parametrize("lower,upper", [
    ("layer2", "layer3"),  # the block input feeds conv1 and the projection shortcut: both interpolated
    ("layer3.0", "layer3.1"),  # the block input feeds conv1 and the identity shortcut
    ("layer4", "fc"),  # no convolution at all
])
def test_ig_on_resnet_blocks_is_unchanged(tiny_resnet, lower, upper):
    access = LayerAccess(tiny_resnet, [upper, lower])
    torch.manual_seed(2)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        z = access.full_output(x, lower)
    block = access.block(lower, upper)
    targets = [[0, 2, 1], [2], [1, 0]]
    plain = multi_target_ig(block, z, targets, steps=8)
    with fast_block_gradients(tiny_resnet) as switched:
        fast = multi_target_ig(block, z, targets, steps=8)
    assert switched > 0
    for p_rows, f_rows in zip(plain, fast):
        assert len(p_rows) == len(f_rows)
        for a, b in zip(p_rows, f_rows):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bias", [False, True])
def test_interpolated_convolution_equals_the_convolution_of_every_step(bias):
    torch.manual_seed(3)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=bias)
    z = torch.randn(2, 4, 9, 9)
    alphas = torch.tensor([0.1, 0.5, 0.9])
    weights = torch.tensor([0.2, 0.5, 0.3])
    head = torch.randn(6, 5, 5)

    def run(fast: bool):
        leaf = z.clone().requires_grad_(True)
        rows = interpolate(leaf, alphas, weights)
        if fast:
            with fast_block_gradients(conv), interpolation(rows, leaf, alphas, weights):
                out = conv(rows)
        else:
            out = conv(rows)
        (grad,) = torch.autograd.grad((torch.relu(out) * head).sum(), leaf)
        return out.detach(), grad

    (out_plain, grad_plain), (out_fast, grad_fast) = run(False), run(True)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_fast, grad_plain, rtol=1e-5, atol=1e-6)
    # and the plain path is the IG quadrature: sum_k w_k * grad at alpha_k * z
    expected = torch.zeros_like(z)
    for a, w in zip(alphas, weights):
        point = (a * z).requires_grad_(True)
        (g,) = torch.autograd.grad((torch.relu(conv(point)) * head).sum(), point)
        expected += w * g
    torch.testing.assert_close(grad_plain, expected, rtol=1e-5, atol=1e-6)
