"""Micro-bench of the exact IG shortcuts (``core/block_gradients.py``) on the world model.

    python -m bench.block_gradients

For blocks of the demo resnet18 and 1 or 4 target neurons per patch, times one IG chunk (8 patches x
50 steps) with plain autograd and with ``fast_block_gradients``, and checks that both give the same
attributions (max relative difference, same top-16 channels per pair).
"""

from __future__ import annotations

import os
import time

import torch

CASES = [("layer2.0", "layer2.1"), ("layer2.1", "layer3.0"), ("layer3.1", "layer4.0")]


def _time(fn, repeats: int = 2):
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    return (time.perf_counter() - start) / repeats, result


def main() -> None:
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    from neurflow.core.block_gradients import fast_block_gradients
    from neurflow.core.integrated_gradients import multi_target_ig
    from neurflow.core.layer_access import LayerAccess
    from neurflow.world.train import ensure_world_model

    model = ensure_world_model(progress=False).load_model().eval()
    access = LayerAccess(model, ["fc", "layer4.1", "layer4.0", "layer3.1", "layer3.0", "layer2.1", "layer2.0"])
    x = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    print("| block | neurons per patch | plain autograd | shortcuts | speed-up | max rel. diff | same top-16 |")
    print("|---|---|---|---|---|---|---|")
    for lower, upper in CASES:
        block = access.block(lower, upper)
        with torch.no_grad():
            z = access.full_output(x, lower)
        for k in (1, 4):
            targets = [list(range(p, p + k)) for p in range(len(z))]
            plain_s, plain = _time(lambda: multi_target_ig(block, z, targets, 50))

            def fast():
                with fast_block_gradients(model):
                    return multi_target_ig(block, z, targets, 50)

            fast_s, quick = _time(fast)
            a = torch.stack([torch.stack(r) for r in plain])
            b = torch.stack([torch.stack(r) for r in quick])
            rel = float((a - b).abs().max() / a.abs().max())
            top = lambda t: set(t.abs().argsort(descending=True)[:16].tolist())  # noqa: E731
            same = all(top(a[p, j]) == top(b[p, j]) for p in range(len(z)) for j in range(k))
            print(f"| {lower} -> {upper} | {k} | {plain_s:.3f} s | {fast_s:.3f} s | {plain_s / fast_s:.2f}x "
                  f"| {rel:.1e} | {'yes' if same else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
