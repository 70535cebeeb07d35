"""Small models built in code, so the engine tests need no downloaded weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn


class Planted(nn.Module):
    """A network whose wiring is known.

    ``low`` (6 channels) copies colour channels: 0 = R, 1 = G, 2 = B, 3 = 1-R, 4 = 1-G, 5 = 1-B
    (inputs in [0, 1]). Upper channel i of ``up`` reads only from the lower set ``PLANTED[i]``.
    The classifier reads class 0 from up channels {0, 1} and class 1 from up channel 2.
    """

    PLANTED = {0: [0, 1], 1: [2, 3], 2: [4, 5]}

    def __init__(self):
        super().__init__()
        self.low = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU())
        self.up = nn.Sequential(nn.Conv2d(6, 3, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            w = torch.zeros(6, 3, 1, 1)
            b = torch.zeros(6)
            for c in range(3):
                w[c, c] = 1.0
                w[c + 3, c] = -1.0
                b[c + 3] = 1.0
            self.low[0].weight.copy_(w)
            self.low[0].bias.copy_(b)
            wu = torch.zeros(3, 6, 1, 1)
            for i, lows in self.PLANTED.items():
                for j, c in enumerate(lows):
                    wu[i, c] = 1.0 + 0.5 * j  # unequal weights give a strict ranking inside P_i
            self.up[0].weight.copy_(wu)
            self.up[0].bias.zero_()
            self.fc.weight.copy_(torch.tensor([[1.0, 0.8, 0.0], [0.0, 0.0, 1.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.up(self.low(x))), 1))


@pytest.fixture
def planted() -> Planted:
    return Planted().eval()


@pytest.fixture
def colour_images() -> torch.Tensor:
    """Uniform-colour and two-colour 16x16 images in [0, 1] with a little texture."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(12):
        img = rng.uniform(0.0, 0.3, size=(3, 16, 16))
        img[k % 3] += rng.uniform(0.5, 0.7)
        img[:, :8, :8] = rng.uniform(0, 1, size=(3, 1, 1))
        out.append(img)
    return torch.tensor(np.clip(np.stack(out), 0, 1), dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=3).eval()


@pytest.fixture(scope="session")
def random_images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(6, 3, 32, 32)


@pytest.fixture(scope="session")
def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                hidden_dim=16, mlp_dim=32, num_classes=3).eval()
