"""Shapes of layer outputs in the canonical layout, without torch (the service's web process reads them)."""

from __future__ import annotations

from collections.abc import Sequence


def num_channels(out_shape: Sequence[int]) -> int:
    """Channel count from one sample's output shape ([C,H,W], [T,C] or [C])."""
    return int(out_shape[-1] if len(out_shape) == 2 else out_shape[0])
