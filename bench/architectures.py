"""Seconds per fitted layer at 224 px for the families of docs/architectures.md (random weights,
real widths, fast preset): ``python -m bench.architectures [family ...] > out.jsonl``.

One family at a time, each in this process after the previous one finished; one JSON line each.
Setting: 4 random images, granularities (1, 0.5, 0.25) (236 patches), top_n 50, tau 4, the
first three candidates of the suggested list (``layer_catalog.deep_layers``: the classifier and the
last stage's last two blocks, or the two highest stages where the last has one block; two fitted
layers, the third is the IG input space only).
"""

from __future__ import annotations

import json
import sys
import time

import torch

FAMILIES = {
    "resnet-basic": "torchvision:resnet18", "resnet-bottleneck": "torchvision:resnet50",
    "vgg": "torchvision:vgg16", "mobilenet-v2": "torchvision:mobilenet_v2",
    "mobilenet-v3": "torchvision:mobilenet_v3_large", "efficientnet": "torchvision:efficientnet_b0",
    "densenet": "torchvision:densenet121", "convnext": "torchvision:convnext_tiny", "swin": "torchvision:swin_t",
    "regnet": "torchvision:regnet_y_400mf", "torchvision-vit": "torchvision:vit_b_16",
    "timm-vit": "timm:vit_small_patch16_224", "timm-deit": "timm:deit_small_patch16_224",
}


def measure(family: str, size: int = 224) -> dict:
    from neurflow.core.engine import NeurFlow
    from neurflow.core.layer_catalog import deep_layers, probe_model
    from neurflow.core.model_intake import load_model

    torch.manual_seed(0)
    model = load_model(FAMILIES[family], None, 1000)
    layers = deep_layers(model, probe_model(model, size))
    x = torch.randn(4, 3, size, size)
    engine = NeurFlow(layers[:3], tau=4, top_n=50, select="all", preset="fast", n_groups=2)
    start = time.perf_counter()
    circuit = engine.fit(model, x, 0).circuit_
    total = time.perf_counter() - start
    fitted = {k.split(":", 1)[1]: v for k, v in circuit.timings.items() if k.startswith("layer:")}
    return {"family": family, "arch": FAMILIES[family], "suggested": layers, "fitted": list(fitted),
            "seconds_per_fitted_layer": round(sum(fitted.values()) / len(fitted), 1),
            "activations_s": circuit.timings.get("activations"), "total_s": round(total, 1),
            "threads": torch.get_num_threads()}


if __name__ == "__main__":
    for family in sys.argv[1:] or list(FAMILIES):
        print(json.dumps(measure(family)), flush=True)
