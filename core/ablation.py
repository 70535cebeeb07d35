"""Zeroing whole channels of named layers during a forward pass (the method's notion of masking)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .model_output import OutputSelector, class_scores
from .layer_access import did_you_mean, has_layout, native_channels, probe_layers, zero_native


@contextmanager
def ablate(model: nn.Module, channels: Mapping[str, Sequence[int]], keep: bool = False) -> Iterator[None]:
    """Within the block, the listed channels of each named layer output are zero in every forward
    pass (``keep=True``: every channel *except* the listed ones is zero, i.e. "retain").

    Channels are zeroed along the channel axis the layer's probe measured (a channels-last Swin stage
    along its last dim). A layer no probe has measured yet is probed on the first forward pass's input,
    so a freshly loaded model is read the way a fit reads it; a layer that cannot be read is refused."""
    modules = dict(model.named_modules())
    for name in channels:
        if not name or name not in modules:
            raise ValueError(did_you_mean(name, [n for n in modules if n]))
    unknown = {name for name in channels if not has_layout(modules[name])}
    probing = []  # non-empty while the probe's own forward passes run: no zeroing then

    def measure(_m, args):
        if unknown and not probing and args and isinstance(args[0], torch.Tensor):
            probing.append(True)
            try:
                for name, p in probe_layers(model, args[0], sorted(unknown)).items():
                    if p.problem:
                        raise ValueError(f"layer {name!r} cannot be ablated: {p.problem}")
            finally:
                probing.clear()
            unknown.clear()

    handles = [model.register_forward_pre_hook(measure)] if unknown else []
    for name, chans in channels.items():
        chans = list(chans)

        def hook(m, _i, out, chans=chans):
            if probing:
                return out
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


def batched_logits(model: nn.Module, pixels: torch.Tensor, batch: int = 128, output: OutputSelector = None) -> torch.Tensor:
    """The class scores (``output`` picks them among the model's outputs) of every image, in batches."""
    with torch.no_grad():
        return torch.cat([class_scores(model(pixels[s:s + batch]), output).float() for s in range(0, len(pixels), batch)])
