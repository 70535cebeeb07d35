"""Circuits made by the engine for four classes of the synthetic world's model, for the atlas tests.

The world model is the tiny one of the world tests (a resnet18 at 32 px trained for a few steps, seconds);
the engine runs for real with small settings on the training images (the same images for every class,
so classes can share neurons). Each group is then labeled with its ground-truth part (the world's part
masks under its exemplars, ``world.score_circuit``): labels that mean something, without training a CLIP.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from neurflow.core.circuit import Circuit, Label

CLASSES = [0, 1, 2, 3]
#: down to layer2: the lower layers hold the features classes share (measured on this model: at Jaccard 0.5,
#: layer2.1 has concepts of all four classes; layer4 groups are class-specific)
LAYERS = ["fc", "layer4.1", "layer3.1", "layer2.1", "layer2.0"]


@dataclass
class EngineCircuits:
    paths: list[Path]  # one circuit.json per class
    images: Path  # the engine's data root (for mosaics)
    circuits: list[Circuit]
    model_spec: dict  # the ``model`` section of a job spec for the network the circuits explain


def _label_with_parts(circuit: Circuit, world_root: Path, images: Path) -> Circuit:
    from neurflow.world import score_circuit

    scores = {g["id"]: g for g in score_circuit(circuit, world_root, images)["groups"]}
    for _, _, group in circuit.iter_groups():
        part = (scores.get(group.id) or {}).get("patch_majority_part") or (scores.get(group.id) or {}).get("majority_part")
        if part:
            group.labels = [Label(text=str(part), score=1.0, source="ground-truth")]
    return circuit


@pytest.fixture(scope="session")
def engine_circuits(tmp_path_factory) -> EngineCircuits:
    import torch

    from neurflow.core.circuit import ModelInfo
    from neurflow.core.engine import NeurFlow
    from neurflow.core.images import ImageSet, Preprocess
    from neurflow.world.spec import WorldConfig
    from neurflow.world.train import TrainConfig, ensure_world_model

    root = tmp_path_factory.mktemp("atlas-engine")
    world = WorldConfig(seed=3, image_size=(40, 36), splits={"train": 3, "heldout": 1})
    train = TrainConfig(input_size=32, batch_size=24, epochs=100, max_steps=8, lr=2e-3, hflip=False)
    model = ensure_world_model(root / "cache", world, train, progress=False, threads=1)
    net = model.load_model().eval()
    spec = model.model_spec()
    info = ModelInfo(arch=spec["arch"], weights_sha256=model.weights_sha256, num_classes=spec["num_classes"],
                     input_size=spec["input_size"], mean=spec["mean"], std=spec["std"])
    images = model.images("train")
    data = ImageSet.from_folder(images, Preprocess(spec["input_size"], spec["mean"], spec["std"]))
    engine = NeurFlow(LAYERS, tau=4, top_n=8, ig_steps=4, select="all", n_groups=2, granularities=(1.0, 0.5))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        logits = engine.predict_logits(net, data)
        circuits, paths = [], []
        for k in CLASSES:
            torch.manual_seed(0)
            c = engine.fit(net, data, target_class=k, model_info=info, target_name=model.class_names[k],
                           logits=logits).circuit_
            c = _label_with_parts(c, model.world_root, images)
            path = root / f"class-{k}" / "circuit.json"
            path.parent.mkdir(parents=True)
            path.write_text(c.to_json())
            circuits.append(Circuit.from_json(path.read_bytes()))
            paths.append(path)
    finally:
        torch.set_num_threads(threads)
    return EngineCircuits(paths=paths, images=images, circuits=circuits, model_spec=spec)
