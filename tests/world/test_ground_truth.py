"""Parts in boxes and the purity score of a circuit, on hand-built circuits with known answers."""

from __future__ import annotations

import pytest

from neurflow.core.circuit import (SCHEMA_VERSION, Circuit, Concept, Exemplar, Group, ImageRef, Layer, Member, ModelInfo,
                          Neuron, Target)
from neurflow.core.params import EngineParams
from neurflow.world.ground_truth import MIN_PART_FRACTION, World, purity, score_circuit
from neurflow.world.scene import render_scene
from neurflow.world.spec import CLASSES

BACKGROUND_BOX = [0, 0, 4, 4]  # inside the left margin, which never holds a part


def _boxes(config, cls_index: int, n: int) -> dict[str, list[int]]:
    return {p.part: p.box for p in render_scene(config, CLASSES[cls_index], "train", n).placements}


def _ex(image: int, box: list[int]) -> Exemplar:
    return Exemplar(image=image, box=list(box), activation=1.0)


def _concept(cid: int, patches: list[Exemplar]) -> Concept:
    return Concept(id=cid, activation=1.0, size=len(patches), exemplars=patches[:2], patches=patches, edges=[], vector=[])


def _circuit(config, prefix: str = "") -> Circuit:
    """Images 0-2: class 0 (red circle, orange ring, striped patch); 3-5: class 1 (red circle, ...)."""
    images, boxes = [], []
    for cls_index in (0, 1):
        for n in range(3):
            images.append(ImageRef(id=len(images), path=f"{prefix}{CLASSES[cls_index].name}/{n:04d}.png", width=80, height=72))
            boxes.append(_boxes(config, cls_index, n))
    red = [_ex(i, boxes[i]["red circle"]) for i in (0, 1, 3, 4)]
    ring = [_ex(i, boxes[i]["orange ring"]) for i in (0, 2)]
    stripes = _ex(1, boxes[1]["striped patch"])
    background = [_ex(i, BACKGROUND_BOX) for i in (2, 5)]
    upper = Layer(
        name="layer4", shape=[512, 2, 2],
        neurons=[Neuron(id=5, importance=0.9, concepts=[_concept(0, red + ring[:1])]),
                 Neuron(id=6, importance=0.5, concepts=[_concept(0, ring)])],
        groups=[Group(id="l1g0", members=[Member(5, 0)], exemplars=red),
                Group(id="l1g1", members=[Member(5, 0), Member(6, 0)], exemplars=red[:3] + ring[:1])],
    )
    lower = Layer(
        name="layer3", shape=[256, 4, 4],
        neurons=[Neuron(id=1, importance=0.3, concepts=[_concept(0, background + [stripes])])],
        groups=[Group(id="l2g0", members=[Member(1, 0)], exemplars=background + [stripes]),
                Group(id="l2g1", members=[], exemplars=background)],
    )
    top = Layer(name="fc", shape=[8], neurons=[Neuron(id=0, importance=1.0, concepts=[])], groups=[])
    return Circuit(
        schema=SCHEMA_VERSION,
        model=ModelInfo(arch="torchvision:resnet18", weights_sha256=None, num_classes=8, input_size=64,
                        mean=[0.5] * 3, std=[0.25] * 3),
        target=Target(class_index=0), params=EngineParams(layers=["fc", upper.name, lower.name]), images=images,
        layers=[top, upper, lower], group_edges=[], timings={},
    )


def test_score_circuit_known_answers(tiny_world):
    root, config = tiny_world
    score = score_circuit(_circuit(config), root, images_root=root / "images" / "train")
    groups = {g["id"]: g for g in score["groups"]}
    assert groups["l1g0"]["majority_part"] == "red circle" and groups["l1g0"]["purity"] == 1.0
    assert groups["l1g1"]["majority_part"] == "red circle" and groups["l1g1"]["purity"] == 0.75
    assert groups["l1g1"]["counts"] == {"red circle": 3, "orange ring": 1}
    assert groups["l2g0"]["majority_part"] == "striped patch"
    assert groups["l2g0"]["purity"] == pytest.approx(1 / 3)
    assert groups["l2g0"]["counts"] == {"striped patch": 1, "background": 2}
    assert groups["l2g1"]["majority_part"] is None and groups["l2g1"]["purity"] == 0.0
    # all patches of the member concepts: 4 red circles + 1 ring, then + 2 rings
    assert groups["l1g0"]["patch_purity"] == pytest.approx(4 / 5) and groups["l1g0"]["n_patches"] == 5
    assert groups["l1g1"]["patch_purity"] == pytest.approx(4 / 7)
    assert groups["l2g1"]["patch_purity"] is None and groups["l2g1"]["n_patches"] == 0

    layers = score["layers"]
    assert [(lay["name"], lay["n_groups"]) for lay in layers] == [("fc", 0), ("layer4", 2), ("layer3", 2)]
    assert layers[0]["mean_purity"] is None
    assert layers[1]["mean_purity"] == pytest.approx(0.875)
    assert layers[2]["mean_purity"] == pytest.approx(1 / 6)
    assert score["mean_purity"] == pytest.approx((1 + 0.75 + 1 / 3 + 0) / 4)
    assert score["n_groups"] == 4 and score["min_fraction"] == MIN_PART_FRACTION


def test_score_circuit_reads_a_document_and_resolves_split_paths(tiny_world, tmp_path):
    root, config = tiny_world
    path = tmp_path / "circuit.json"
    path.write_text(_circuit(config, prefix="train/").to_json())
    # paths relative to root/images: given explicitly, or found without images_root
    for images_root in (root / "images", None):
        score = score_circuit(path, root, images_root=images_root)
        assert score["layers"][1]["mean_purity"] == pytest.approx(0.875)


def test_bare_paths_are_ambiguous_between_splits(tiny_world):
    root, config = tiny_world
    with pytest.raises(ValueError, match="several splits"):
        score_circuit(_circuit(config), root)
    with pytest.raises(ValueError, match="not inside world images"):
        score_circuit(_circuit(config), root, images_root=root.parent)


def test_purity_ties_and_empty_sets():
    assert purity(["b", "a"], ["a", "b"]).majority_part == "a"
    assert purity(["a", "b"], ["b", "a"]).majority_part == "b"
    assert purity(["b", "a", None, "b"], ["a", "b"]).purity == 0.5
    empty = purity([])
    assert (empty.majority_part, empty.purity, empty.n) == (None, 0.0, 0)


def test_part_fractions_and_thresholds(tiny_world):
    root, config = tiny_world
    world = World.load(root)
    rel = f"train/{CLASSES[4].name}/0000.png"
    whole = world.part_fractions(rel, [0, 0, 80, 72])
    assert set(CLASSES[4].parts) <= set(whole)
    assert list(whole.values()) == sorted(whole.values(), reverse=True)
    assert 0 < sum(whole.values()) < 0.5 and max(whole.values()) < 0.12
    assert world.dominant_part(rel, [0, 0, 80, 72]) is None  # a whole image is not one part
    assert world.dominant_part(rel, [0, 0, 80, 72], min_fraction=0.0) == next(iter(whole))
    assert world.part_fractions(rel, [-20, -20, 200, 200]) == whole  # clipped to the image
    assert world.part_fractions(rel, [90, 0, 100, 10]) == {} and world.dominant_part(rel, [90, 0, 100, 10]) is None
    assert world.part_fractions(rel, BACKGROUND_BOX) == {}
    # a box covering the right half of a part holds about half of its pixels
    p = render_scene(config, CLASSES[4], "train", 0).placements[0]
    x0, y0, x1, y1 = p.box
    mid = round(p.cx)
    full_px = world.part_fractions(rel, p.box)[p.part] * (x1 - x0) * (y1 - y0)
    half_px = world.part_fractions(rel, [mid, y0, x1, y1])[p.part] * (x1 - mid) * (y1 - y0)
    assert 0.3 * full_px < half_px < 0.7 * full_px


def test_unknown_images_are_reported(tiny_world):
    root, _ = tiny_world
    world = World.load(root)
    with pytest.raises(FileNotFoundError, match="no mask"):
        world.mask("train/nope/0000.png")
    with pytest.raises(ValueError, match="relative"):
        world.mask("../world.json")
    with pytest.raises(FileNotFoundError, match="world.json"):
        World.load(root / "images")
