"""Folding batch norms into convolutions (``fold_batch_norm``): the folded copy computes what the
model computes, leaves the model and the fitted layers' outputs alone, and a fit with it finds the
circuit a fit without it finds."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from neurflow.core.batch_norm_folding import foldable_pairs, folded_copy
from neurflow.core.layer_access import LayerAccess

from .test_map_cache import assert_same_circuit, fit


@pytest.fixture(scope="module")
def resnet_with_stats() -> nn.Module:
    """resnet18 whose batch norms are not the identity (trained-like running statistics)."""
    torch.manual_seed(3)
    model = torchvision.models.resnet18(num_classes=3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_folded_copy_computes_the_same_and_leaves_the_model_alone(resnet_with_stats):
    before = {k: v.clone() for k, v in resnet_with_stats.state_dict().items()}
    pairs = foldable_pairs(resnet_with_stats)
    convs = [n for n, m in resnet_with_stats.named_modules() if isinstance(m, nn.Conv2d)]
    assert sorted(c for c, _ in pairs) == sorted(convs)  # every resnet conv feeds one batch norm
    folded = folded_copy(resnet_with_stats)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), resnet_with_stats(x), rtol=1e-4, atol=1e-4)
    after = resnet_with_stats.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in resnet_with_stats.modules()) == len(pairs)


def test_fitted_layers_keep_their_outputs(resnet_with_stats):
    keep = ["layer2.0.conv1", "layer3.0.bn2", "layer1.1"]
    pairs = dict(foldable_pairs(resnet_with_stats, keep))
    assert "layer2.0.conv1" not in pairs and "layer3.0.conv2" not in pairs
    assert "layer1.1.conv1" in pairs  # inside a fitted block: the block's output does not change
    folded = folded_copy(resnet_with_stats, keep)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        original = LayerAccess(resnet_with_stats, keep).readouts(x)
        copied = LayerAccess(folded, keep).readouts(x)
    for name in keep:
        torch.testing.assert_close(copied[name], original[name], rtol=1e-4, atol=1e-5)


class TwoReaders(nn.Module):
    """conv1's output goes to its batch norm and to the residual sum: folding it would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x):
        h = self.conv1(x)
        return self.bn2(self.conv2(self.bn1(h))) + h


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = -x
        return self.bn(self.conv(x))


def test_what_is_not_folded():
    assert foldable_pairs(TwoReaders().eval()) == [("conv2", "bn2")]
    assert foldable_pairs(Untraceable().eval()) == []
    assert folded_copy(Untraceable().eval()) is None


def test_fit_with_folding_equals_fit_without(resnet_with_stats):
    torch.manual_seed(1)
    images = torch.randn(6, 3, 32, 32)
    layers = ["fc", "layer4.1", "layer4.0", "layer3.1"]
    assert_same_circuit(fit(resnet_with_stats, images, layers, fold_batch_norm=True),
                        fit(resnet_with_stats, images, layers, fold_batch_norm=False))
