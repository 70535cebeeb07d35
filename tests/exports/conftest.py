"""A small labeled circuit on disk, shared by the export tests.

The engine runs for real (a randomly initialised resnet18 on 12 generated two-colour images); the
labels are then written by hand, because these tests check how labels travel into each tool's format,
not how CLIP finds them (``tests/labeler/test_labeling.py`` does that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neurflow.core.circuit import (Caption, Circuit, ClipProvenance, ClipSettings, Label, Labeling, LabelingSettings,
                                   VocabularyProvenance)

VOCABULARY = ["red disc", "green stripes", "blue ring", "yellow square", "white dots", "black grid"]


@dataclass
class LabeledFixture:
    circuit_path: Path
    images: Path  # data root of the circuit's image paths
    circuit: Circuit


def _images(root: Path) -> None:
    rng = np.random.default_rng(7)
    colours = [(220, 40, 40), (40, 200, 60), (50, 70, 220)]
    for k in range(12):
        img = np.zeros((40, 48, 3), np.uint8) + np.array(colours[k % 3], np.uint8)
        y, x = rng.integers(0, 20), rng.integers(0, 28)
        img[y:y + 18, x:x + 18] = rng.integers(0, 255, 3)
        folder = root / f"class{k % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"img{k:02d}.png")


def _label(circuit: Circuit) -> Circuit:
    for n, (_, _, group) in enumerate(circuit.iter_groups()):
        texts = [VOCABULARY[(n + j) % len(VOCABULARY)] for j in range(3)]
        group.labels = [Label(text=t, score=round(2.0 - 0.5 * j, 3), source="clip") for j, t in enumerate(texts)]
        group.confidence = round(0.9 - 0.05 * n, 3)
        if n == 0:
            group.caption = Caption(text="a red disc on a plain background", model="tiny-vlm", prompt_id="group_caption",
                                    prompt_version="v1")
    circuit.labeling = Labeling(
        settings=LabelingSettings(clip=ClipSettings(model="ViT-B-32", pretrained="laion2b_s34b_b79k"),
                                  vocabulary=VOCABULARY, top_k=3),
        clip=ClipProvenance(model="ViT-B-32", pretrained="laion2b_s34b_b79k", model_config=None, weights_sha256=None,
                            embed_dim=512),
        vocabulary=VocabularyProvenance(name="test-vocab", size=len(VOCABULARY), sha256_16="0" * 16),
        templates=["a photo of {}."], confidence_method="written by hand", reference_patches=0, holdout={})
    return circuit


@pytest.fixture(scope="session")
def labeled(tmp_path_factory) -> LabeledFixture:
    import torch
    import torchvision

    from neurflow.core.engine import NeurFlow
    from neurflow.core.images import ImageSet, Preprocess

    root = tmp_path_factory.mktemp("labeled")
    images = root / "images"
    _images(images)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    data = ImageSet.from_folder(images, Preprocess(32, [0.5] * 3, [0.25] * 3))
    engine = NeurFlow(["fc", "layer4.1", "layer4.0", "layer3.1"], tau=4, top_n=8, ig_steps=4, select="all", n_groups=2,
                      granularities=(1.0, 0.5))
    circuit = _label(engine.fit(model, data, target_class=0, target_name="red things").circuit_)
    path = root / "circuit.json"
    path.write_text(circuit.to_json())
    return LabeledFixture(circuit_path=path, images=images, circuit=Circuit.from_json(path.read_bytes()))
