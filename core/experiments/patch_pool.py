"""A class's patches seen through one layer pair: the lower layer's full maps, cached once, and the
top-N overlap of an upper neuron after zeroing sets of lower channels.

Every experiment that masks lower neurons asks the same question many times ("which N patches does
upper neuron i prefer once these lower channels are zero?"), so the lower maps of every patch are
computed once and only the block between the two layers is re-run per masked set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..layer_access import LayerAccess, readout, zero_channels
from ..patches import PatchIndex, make_patches


class PatchPool:
    def __init__(self, access: LayerAccess, pixels: torch.Tensor, index: PatchIndex, lower: str, upper: str,
                 top_n: int, batch_size: int = 128):
        self.access, self.pixels, self.index = access, pixels, index
        self.lower, self.upper = lower, upper
        self.block = access.block(lower, upper)
        self.batch_size = batch_size
        self.top_n = min(top_n, len(index))
        chunks = []
        with torch.no_grad():
            for start in range(0, len(index), batch_size):
                chunks.append(access.full_output(self._patches(start), lower).float())
        self.maps = torch.cat(chunks)  # (D, *lower shape)
        self.upper_acts = self._upper(None)  # (D, C_upper), through the same block as the masked passes

    def _patches(self, start: int) -> torch.Tensor:
        which = np.arange(start, min(start + self.batch_size, len(self.index)))
        return make_patches(self.pixels, self.index, which)

    def _upper(self, masked: Sequence[int] | None, neuron: int | None = None) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for start in range(0, len(self.index), self.batch_size):
                z = self.maps[start:start + self.batch_size]
                if masked is not None and len(masked):
                    z = zero_channels(z, list(masked))
                x = self._patches(start) if self.block.needs_input else None
                acts = readout(self.block(z, x), self.access.token_reduce).float()
                out.append(acts if neuron is None else acts[:, neuron])
        return torch.cat(out)

    @property
    def n_lower(self) -> int:
        shape = self.maps.shape[1:]
        return int(shape[-1] if len(shape) == 2 else shape[0])

    def top(self, neuron: int) -> np.ndarray:
        """The neuron's top-N patches, by decreasing activation."""
        return torch.topk(self.upper_acts[:, neuron], self.top_n, sorted=True).indices.cpu().numpy()

    def overlap(self, neuron: int, masked: Sequence[int]) -> float:
        before = set(self.top(neuron).tolist())
        after = torch.topk(self._upper(masked, neuron), self.top_n).indices.tolist()
        return len(before & set(after)) / self.top_n

    def overlaps(self, neuron: int, subsets: Sequence[Sequence[int]], progress=None) -> np.ndarray:
        out = np.empty(len(subsets))
        for k, subset in enumerate(subsets):
            out[k] = self.overlap(neuron, subset)
            if progress:
                progress(k + 1, len(subsets))
        return out

    def top_maps(self, neuron: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The lower maps of the neuron's top-N patches (and their pixels when the block needs them)."""
        rows = self.top(neuron)
        x = make_patches(self.pixels, self.index, rows) if self.block.needs_input else None
        return self.maps[torch.as_tensor(rows, device=self.maps.device)], x


def random_subsets(rng: np.random.Generator, n_channels: int, size: int, count: int) -> list[list[int]]:
    """``count`` random channel sets of ``size`` (size 1: distinct single channels, at most all of them)."""
    if size == 1:
        return [[int(c)] for c in rng.permutation(n_channels)[:count]]
    size = min(size, n_channels)
    return [sorted(rng.choice(n_channels, size=size, replace=False).tolist()) for _ in range(count)]
