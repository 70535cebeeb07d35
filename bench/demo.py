"""The bench's model and images: the synthetic world's trained resnet18 at 64 px and the first N
training images of one class (in sorted path order).

``--model random`` (or a missing world module) falls back to an untrained resnet18 with 8 classes and
seeded random inputs; it exercises the same code paths, but its circuits are not meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

#: The layers of the full bench: six fitted layers, ``layer2.0`` is only the IG input space.
LAYERS = ["fc", "layer4.1", "layer4.0", "layer3.1", "layer3.0", "layer2.1", "layer2.0"]
QUICK_LAYERS = LAYERS[:4]
#: The real-size bench (``--model resnet50``): the paper's ResNet-50 layers, one bottleneck per step;
#: five fitted layers, ``layer3.4`` is only the IG input space.
REAL_LAYERS = ["fc", "layer4.2", "layer4.1", "layer4.0", "layer3.5", "layer3.4"]


@dataclass
class Demo:
    model: torch.nn.Module
    pixels: torch.Tensor  # (N, 3, S, S), normalised model inputs
    target_class: int
    info: dict[str, Any]


#: The world model must name the classes of images it never saw (a quality target, checked here
#: rather than in the tests: training it takes minutes).
WORLD_MODEL_ACCURACY = 0.95


def ensure_model(kind: str = "world") -> None:
    """Build the cached world model once (in the parent, before the timed child processes), and say
    whether it meets its accuracy target."""
    if kind == "world":
        from neurflow.world.train import ensure_world_model

        wm = ensure_world_model(progress=False)
        ok = wm.heldout_accuracy >= WORLD_MODEL_ACCURACY
        print(f"world model {wm.directory.name}: held-out accuracy {wm.heldout_accuracy:.3f} "
              f"(target >= {WORLD_MODEL_ACCURACY}) -> {'PASS' if ok else 'FAIL'}", flush=True)


def load_demo(n_images: int, target_class: int = 0, kind: str = "world") -> Demo:
    if kind == "resnet50":
        return _resnet50(n_images, target_class)
    if kind == "random":
        torch.manual_seed(0)
        import torchvision

        model = torchvision.models.resnet18(num_classes=8).eval()
        pixels = torch.randn(n_images, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        return Demo(model, pixels, target_class, {"model": "random resnet18 (8 classes)", "input_size": 64,
                                                  "images": f"{n_images} random N(0,1) tensors"})
    from neurflow.core.images import Preprocess, list_images, open_rgb
    from neurflow.world.train import ensure_world_model

    wm = ensure_world_model(progress=False)
    meta = wm.meta
    class_name = wm.class_names[target_class]
    folder = wm.images("train") / class_name
    files = list_images(folder)[:n_images]
    if len(files) < n_images:
        raise ValueError(f"only {len(files)} images in {folder}, {n_images} requested")
    pre = Preprocess(meta["input_size"], meta["mean"], meta["std"])
    pixels = torch.stack([pre(open_rgb(f)) for f in files])
    model = wm.load_model()
    with torch.no_grad():
        preds = model(pixels).argmax(1)
    info = {
        "model": f"world resnet18 ({wm.directory.name}, heldout accuracy {wm.heldout_accuracy})",
        "weights_sha256": wm.weights_sha256,
        "input_size": meta["input_size"],
        "images": f"first {n_images} train images of {class_name}",
        "predicted_as_target": int((preds == target_class).sum()),
    }
    return Demo(model, pixels, target_class, info)


def _resnet50(n_images: int, target_class: int) -> Demo:
    """torchvision's ResNet-50 at 224 px with seeded random weights and smooth random images (noise
    upsampled from 28 px, so that patches differ the way crops of photographs do, not pixel by pixel).
    The circuits mean nothing; the sizes, and so the times, are those of a real model."""
    import torch.nn.functional as F
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    noise = torch.randn(n_images, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    pixels = F.interpolate(noise, size=224, mode="bilinear", align_corners=False)
    return Demo(model, pixels, target_class, {"model": "random resnet50 (torchvision, 1000 classes)", "input_size": 224,
                                              "images": f"{n_images} smooth random 224 px images"})


__all__ = ["Demo", "LAYERS", "QUICK_LAYERS", "REAL_LAYERS", "ensure_model", "load_demo"]
