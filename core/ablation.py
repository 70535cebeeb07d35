"""Zeroing whole channels of named layers during a forward pass (the method's notion of masking)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .layer_access import native_channels, zero_native


@contextmanager
def ablate(model: nn.Module, channels: Mapping[str, Sequence[int]], keep: bool = False) -> Iterator[None]:
    """Within the block, the listed channels of each named layer output are zero in every forward
    pass (``keep=True``: every channel *except* the listed ones is zero, i.e. "retain")."""
    modules = dict(model.named_modules())
    handles = []
    for name, chans in channels.items():
        chans = list(chans)

        # zero_native: channels-last outputs (Swin) are zeroed along their channel dim, as probed
        def hook(m, _i, out, chans=chans):
            if keep:
                total = native_channels(m, out)
                drop = sorted(set(range(total)) - set(chans))
                return zero_native(m, out, drop) if drop else out
            return zero_native(m, out, chans) if chans else out

        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def batched_logits(model: nn.Module, pixels: torch.Tensor, batch: int = 128) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(pixels[s:s + batch]).float() for s in range(0, len(pixels), batch)])
