"""Hand-built circuits over a generated world, for labeler tests and benchmarks that must not depend
on the engine.

Each class gets one neuron per planted part; the neuron's only concept holds square patches around
that part in the class's images (random margins, like NeurFlow's multi-granularity crops), so the
right label of its group is known: the part's name. One extra "background" group holds patches
without any part (no reference label). A second, lower layer repeats the part groups so that group
edges (upper -> lower) exist for the multi-level captioning prompt.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

from neurflow.core.circuit import (
    SCHEMA_VERSION, Circuit, Concept, Exemplar, Group, GroupEdge, ImageRef, Layer, Member, ModelInfo, Neuron, Target,
)
from neurflow.core.params import EngineParams
from neurflow.world.ground_truth import World


def _part_boxes(world: World, rel: str) -> dict[str, tuple[int, int, int, int]]:
    mask = world.mask(rel)
    out = {}
    for pid in np.unique(mask):
        if pid:
            ys, xs = np.nonzero(mask == pid)
            out[world.part_names[int(pid)]] = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return out


def _square_around(box, scale, w, h, rng):
    x0, y0, x1, y1 = box
    side = min(int(round(max(x1 - x0, y1 - y0) * scale)), w, h)
    cx, cy = (x0 + x1) / 2 + rng.uniform(-2, 2), (y0 + y1) / 2 + rng.uniform(-2, 2)
    bx = int(round(min(max(cx - side / 2, 0), w - side)))
    by = int(round(min(max(cy - side / 2, 0), h - side)))
    return [bx, by, bx + side, by + side]


def _background_box(world: World, rel: str, side: int, w: int, h: int, rng) -> list[int] | None:
    mask = world.mask(rel)
    for _ in range(50):
        x, y = rng.randint(0, w - side), rng.randint(0, h - side)
        if not mask[y : y + side, x : x + side].any():
            return [x, y, x + side, y + side]
    return None


def world_circuit(
    world_root: str | Path, class_index: int, n_images: int = 12, split: str = "train", seed: int = 0, crop_scale: float = 1.0
) -> tuple[Circuit, dict[str, str | None]]:
    """A two-layer circuit for one class of the world (image paths relative to ``images/<split>``)
    and the part each group was built around (None for the background groups).

    Patches are squares of 1.2-1.6x (upper layer) and 1.0-1.3x (lower layer) the part's box side,
    times ``crop_scale``: larger scales give looser, background-heavy patches (a stress test)."""
    world = World.load(world_root)
    rng = random.Random(seed * 100 + class_index)
    cls = world.classes[class_index]
    rels = [p for p in world.images(split) if p.split("/")[1] == cls.name][:n_images]
    images, boxes_of = [], []
    for i, rel in enumerate(rels):
        path = world.images_dir / rel
        with Image.open(path) as im:
            w, h = im.size
        images.append(ImageRef(id=i, path=rel.split("/", 1)[1], width=w, height=h))
        boxes_of.append(_part_boxes(world, rel))

    def part_patches(part: str, scales) -> list[Exemplar]:
        out = []
        for i, rel in enumerate(rels):
            if part in boxes_of[i]:
                for s in scales:
                    box = _square_around(boxes_of[i][part], s * crop_scale, images[i].width, images[i].height, rng)
                    out.append(Exemplar(image=i, box=box, activation=round(10.0 - 0.1 * len(out), 3), granularity=0.5))
        return out

    layers = []
    edges = []
    expected: dict[str, str | None] = {}
    for li, (layer_name, scales) in enumerate((("layer4", (1.2, 1.6)), ("layer3", (1.0, 1.3)))):
        neurons, groups = [], []
        for k, part in enumerate(cls.parts):
            patches = part_patches(part, scales)
            concept = Concept(id=0, activation=5.0, size=len(patches), exemplars=patches[:5], patches=patches, edges=[], vector=[0.0])
            neurons.append(Neuron(id=10 * k + li, importance=1.0, concepts=[concept]))
            groups.append(Group(id=f"l{li + 1}g{k}", members=[Member(neuron=10 * k + li, concept=0)], exemplars=patches[:5]))
            expected[f"l{li + 1}g{k}"] = part
        # a background neuron: patches with no part in them
        bg = [b for i, rel in enumerate(rels) if (b := _background_box(world, rel, 12, images[i].width, images[i].height, rng))]
        bg_ex = [Exemplar(image=i % len(rels), box=b, activation=1.0) for i, b in enumerate(bg)]
        if len(bg_ex) >= 3:
            c = Concept(id=0, activation=1.0, size=len(bg_ex), exemplars=bg_ex[:5], patches=bg_ex, edges=[], vector=[0.0])
            neurons.append(Neuron(id=99 + li, importance=0.5, concepts=[c]))
            groups.append(Group(id=f"l{li + 1}g{len(cls.parts)}", members=[Member(neuron=99 + li, concept=0)], exemplars=bg_ex[:5]))
            expected[f"l{li + 1}g{len(cls.parts)}"] = None
        layers.append(Layer(name=layer_name, shape=[64, 4, 4], neurons=neurons, groups=groups))
    for k in range(len(cls.parts)):
        edges.append(GroupEdge(source=f"l1g{k}", target=f"l2g{k}", weight=0.8))
        edges.append(GroupEdge(source=f"l1g{k}", target=f"l2g{(k + 1) % len(cls.parts)}", weight=0.3))
    target = Target(class_index=class_index, name=cls.name)
    layers.insert(0, Layer(name="fc", shape=[8], neurons=[Neuron(id=class_index, importance=1.0, concepts=[])], groups=[]))
    model = ModelInfo(arch="torchvision:resnet18", weights_sha256=None, num_classes=8, input_size=64, mean=[0.5] * 3, std=[0.25] * 3)
    circuit = Circuit(
        schema=SCHEMA_VERSION, model=model, target=target, params=EngineParams(layers=[lay.name for lay in layers]),
        images=images, layers=layers, group_edges=edges, timings={},
    )
    return circuit, expected
