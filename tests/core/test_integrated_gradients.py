"""Our Integrated Gradients against captum and against closed forms."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn

from neurflow.core.integrated_gradients import gauss_legendre, integrated_gradients, multi_target_ig
from neurflow.core.layer_access import LayerAccess, channel_mean, readout


def captum_ig(block, z, target, steps=50, token_reduce="mean"):
    ig = IntegratedGradients(lambda t: readout(block(t), token_reduce))
    return ig.attribute(z, baselines=torch.zeros_like(z), target=target, n_steps=steps, method="gausslegendre")


def live_target(block, z, token_reduce="mean"):
    with torch.no_grad():
        return int(readout(block(z), token_reduce).mean(0).argmax())


@pytest.mark.parametrize("lower,upper", [("layer3.1", "layer4.0"), ("layer4.1", "fc"), ("layer2.0", "layer3.1")])
def test_matches_captum_on_resnet_blocks(tiny_resnet, random_images, lower, upper):
    access = LayerAccess(tiny_resnet, [upper, lower])
    z = access.full_output(random_images, lower)
    block = access.block(lower, upper)
    assert block.kind == "fx"
    target = live_target(block, z)
    ours = integrated_gradients(block, z, target, steps=50)
    ref = captum_ig(block, z, target)
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-7)


def test_multi_target_equals_one_call_per_target(tiny_resnet, random_images):
    access = LayerAccess(tiny_resnet, ["layer4.0", "layer3.1"])
    z = access.full_output(random_images, "layer3.1")
    block = access.block("layer3.1", "layer4.0")
    targets = [[5, 9, 3], [9], [], [3, 5], [7], [5, 9, 3, 7]]
    result = multi_target_ig(block, z, targets, steps=20)
    for t in {t for ts in targets for t in ts}:
        ref = channel_mean(captum_ig(block, z, t, steps=20))
        for p, ts in enumerate(targets):
            if t in ts:
                torch.testing.assert_close(result[p][ts.index(t)], ref[p], rtol=1e-4, atol=1e-8)
    assert result[2] == []


def test_hook_block_equals_fx_block(tiny_resnet, random_images):
    access = LayerAccess(tiny_resnet, ["layer4.0", "layer3.1"])
    z = access.full_output(random_images, "layer3.1")
    fx = access.block("layer3.1", "layer4.0")
    hook = access._hook_block("layer3.1", "layer4.0")
    assert hook.needs_input and not fx.needs_input
    target = live_target(fx, z)
    a = integrated_gradients(fx, z, target, steps=10)
    b = integrated_gradients(hook, z, target, steps=10, x=random_images)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_vit_tokens_match_captum(tiny_vit):
    x = torch.randn(3, 3, 32, 32)
    lower, upper = "encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"
    for token_reduce in ("mean", "cls"):
        access = LayerAccess(tiny_vit, [upper, lower], token_reduce=token_reduce)
        z = access.full_output(x, lower)
        assert z.dim() == 3  # (B, tokens, channels)
        block = access.block(lower, upper)
        ours = integrated_gradients(block, z, 4, steps=16, token_reduce=token_reduce)
        ref = captum_ig(block, z, 4, steps=16, token_reduce=token_reduce)
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-7)


def test_linear_1x1_block_closed_form():
    """For F_i = mean_hw(W z + b), IG_c = z_c * W_ic / (H W), so the channel score is
    W_ic * mean_hw(z_c) / (H W)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 4, 1)
    model = nn.Sequential(nn.Identity(), conv).eval()
    access = LayerAccess(model, ["1", "0"])
    z = torch.randn(3, 5, 6, 7)
    scores = multi_target_ig(access.block("0", "1"), z, [[2]] * 3, steps=4)
    expected = conv.weight[2, :, 0, 0] * z.mean(dim=(2, 3)) / (6 * 7)
    torch.testing.assert_close(torch.stack([s[0] for s in scores]), expected.detach(), rtol=1e-5, atol=1e-7)


def test_completeness_with_relu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Identity(), nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 1))).eval()
    access = LayerAccess(model, ["1", "0"])
    z = torch.randn(4, 4, 5, 5)
    block = access.block("0", "1")
    attr = integrated_gradients(block, z, 1, steps=50)
    with torch.no_grad():
        gap = readout(block(z))[:, 1] - readout(block(torch.zeros_like(z)))[:, 1]
    torch.testing.assert_close(attr.sum(dim=(1, 2, 3)), gap, rtol=2e-2, atol=2e-3)


def test_gauss_legendre_integrates_polynomials_exactly():
    alphas, weights = gauss_legendre(5)
    assert weights.sum().item() == pytest.approx(1.0)
    assert (weights * alphas**7).sum().item() == pytest.approx(1 / 8)  # exact up to degree 2*5-1
