"""Architecture names: ``torchvision:<name>`` (or a bare torchvision name) and ``timm:<name>``.

Its own module because both model intake and published weights read these names, and published
weights are loaded by model intake.
"""

from __future__ import annotations


def split_arch(arch: str) -> tuple[str, str]:
    """``"torchvision:resnet18"`` -> ("torchvision", "resnet18"); a bare name means torchvision."""
    family, _, name = arch.partition(":")
    if not name:
        family, name = "torchvision", family
    if family not in ("torchvision", "timm"):
        raise ValueError(f"unknown architecture family {family!r} in {arch!r}; use 'torchvision:<name>' or 'timm:<name>'")
    return family, name
